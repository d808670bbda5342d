"""A Hugging Face tokenizer behind gptjax's `Tokenizer` interface (imported models keep theirs).

The backend is a `tokenizer.json` read by the `tokenizers` library, or a sentencepiece
`tokenizer.model`. Its serialized form (`model_bytes`, stored in checkpoints and written as
WORKDIR/tokenizer/tokenizer.model) is a JSON bundle: the backend's own file, the special ids
and any tokens gptjax appended, so `tokenizer_from_bytes` restores it exactly.

Reading a Hugging Face model directory into a bundle: `gptjax.hf.tokenizer`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from gptjax.errors import DataError
from gptjax.tokenizer.base import CHAT_TOKENS, Tokenizer
from gptjax.tokenizer.sentencepiece_model import sentencepiece_token_bytes

FORMAT = "gptjax-hf-tokenizer/1"
HF_JSON, HF_SPM = "tokenizer.json", "tokenizer.model"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-F]{2})>$")


def is_bundle(model_bytes: bytes) -> bool:
    """True for an HF bundle (JSON); sentencepiece protos never start with `{`."""
    return bytes(model_bytes[:1]) == b"{"


def _byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE spells every byte this way)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b], extra = chr(256 + extra), extra + 1
    return table


def _mentions_byte_level(node) -> bool:
    if isinstance(node, dict):
        return node.get("type") == "ByteLevel" or any(map(_mentions_byte_level, node.values()))
    if isinstance(node, list):
        return any(map(_mentions_byte_level, node))
    return False


class TokenizersBackend:
    def __init__(self, text: str):
        try:
            from tokenizers import Tokenizer as RustTokenizer
        except ImportError:
            raise DataError(
                "this tokenizer is a Hugging Face tokenizer.json, which needs the `tokenizers` "
                "package: pip install 'gptjax[hf]'"
            ) from None
        self.text = text
        self.tk = RustTokenizer.from_str(text)
        spec = json.loads(text)
        self.byte_level = _mentions_byte_level([spec.get("pre_tokenizer"), spec.get("decoder")])

    @property
    def size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, piece: str) -> int | None:
        found = self.tk.token_to_id(piece)
        match = _BYTE_PIECE.match(piece)
        if found is None and match and self.byte_level:
            # `<0xNN>` names a single byte, as in sentencepiece byte-fallback models.
            found = self.tk.token_to_id(_byte_level_alphabet()[int(match.group(1), 16)])
        return found

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

    def pieces(self, text: str) -> list[str]:
        return self.tk.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: list[int]) -> str:
        return self.tk.decode(ids, skip_special_tokens=False)

    def token_bytes(self) -> list[bytes]:
        """Byte-level BPE spells each byte as one character of GPT-2's alphabet; other models
        (Llama's tokenizer.json) use `▁` for a space and `<0xNN>` byte-fallback pieces. An
        added token is its own text."""
        to_byte = {c: b for b, c in _byte_level_alphabet().items()}
        added = {i: token.content for i, token in self.tk.get_added_tokens_decoder().items()}
        out = []
        for i in range(self.size):
            piece = self.tk.id_to_token(i) or ""
            match = _BYTE_PIECE.match(piece)
            if i in added:
                out.append(added[i].encode("utf-8"))
            elif self.byte_level:
                out.append(bytes(to_byte[c] for c in piece))
            elif match:
                out.append(bytes([int(match.group(1), 16)]))
            else:
                out.append(piece.replace("\u2581", " ").encode("utf-8"))
        return out

    def with_tokens(self, pieces: Sequence[str]) -> TokenizersBackend:
        from tokenizers import AddedToken

        tk = type(self.tk).from_str(self.text)
        tk.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in pieces])
        return TokenizersBackend(tk.to_str())


class SentencePieceBackend:
    def __init__(self, proto: bytes):
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=proto)
        except RuntimeError:
            raise DataError("the sentencepiece tokenizer.model is corrupt") from None
        self.proto = proto

    @property
    def size(self) -> int:
        return self.sp.get_piece_size()

    def token_to_id(self, piece: str) -> int | None:
        found = self.sp.piece_to_id(piece)
        return found if self.sp.id_to_piece(found) == piece else None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def token_bytes(self) -> list[bytes]:
        return sentencepiece_token_bytes(self.sp)


class HFTokenizer(Tokenizer):
    """An imported model's tokenizer; same interface and ids as the model was trained with."""

    def __init__(self, bundle: dict, model_bytes: bytes, backend) -> None:
        super().__init__(model_bytes)
        self.bundle, self.backend = bundle, backend
        self.special = bundle["special"]
        # Tokens gptjax appended to a sentencepiece backend (a tokenizer.json holds its own).
        self.added = {piece: int(i) for piece, i in bundle.get("added", {}).items()}
        pattern = "|".join(re.escape(p) for p in sorted(self.added, key=len, reverse=True))
        self._added_re = re.compile(f"({pattern})") if self.added else None

    @classmethod
    def from_bundle(cls, bundle: dict) -> HFTokenizer:
        """Serializes `bundle` canonically (same content, same bytes, same sha256) and loads it."""
        text = json.dumps(bundle, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return cls.parse(text.encode("utf-8"), name="<imported>")

    @classmethod
    def parse(cls, model_bytes: bytes, *, name: str = "<bytes>") -> HFTokenizer:
        try:
            bundle = json.loads(bytes(model_bytes).decode("utf-8"))
            if bundle.get("format") != FORMAT:
                raise ValueError(f"format {bundle.get('format')!r}")
            special = bundle["special"]
            ids = [special[k] for k in ("bos", "eos", "pad")]
            if not all(isinstance(i, int) and i >= 0 for i in ids):
                raise ValueError(f"special ids {special}")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DataError(
                f"tokenizer {name} is not a valid gptjax Hugging Face tokenizer bundle ({error}); "
                "re-import the model with gptjax import-hf"
            ) from None
        if bundle.get("backend") == "tokenizers":
            backend = TokenizersBackend(bundle["model"])
        else:
            backend = SentencePieceBackend(base64.b64decode(bundle["model"]))
        return cls(bundle, bytes(model_bytes), backend)

    def metadata(self, model_type: str | None) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "model_type": f"huggingface-{self.bundle['backend']}",
            "sha256": self.sha256,
            "special_ids": dict(self.special),
            "chat_tokens": {p: self._find(p) for p in CHAT_TOKENS},
        }

    @property
    def vocab_size(self) -> int:
        return self.backend.size + len(self.added)

    @property
    def pad_id(self) -> int:
        return self.special["pad"]

    @property
    def bos_id(self) -> int:
        return self.special["bos"]

    @property
    def eos_id(self) -> int:
        return self.special["eos"]

    @property
    def unk_id(self) -> int | None:
        return self.special.get("unk")

    def _find(self, piece: str) -> int | None:
        return self.added[piece] if piece in self.added else self.backend.token_to_id(piece)

    def token_id(self, piece: str) -> int:
        found = self._find(piece)
        if found is None:
            raise DataError(f"tokenizer {self.sha256[:12]}… has no piece {piece!r}")
        return found

    def _split(self, text: str) -> list[str]:
        return self._added_re.split(text) if self._added_re else [text]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not self.added:
            return self.backend.encode_batch(texts)
        out = []
        for text in texts:
            parts = self._split(text)  # odd indices are appended tokens
            ids = []
            for i, part in enumerate(parts):
                if i % 2:
                    ids.append(self.added[part])
                elif part:
                    ids.extend(self.backend.encode_batch([part])[0])
            out.append(ids)
        return out

    def pieces(self, text: str) -> list[str]:
        out = []
        for i, part in enumerate(self._split(text)):
            out.extend([part] if i % 2 else self.backend.pieces(part) if part else [])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; pad/bos/eos and ids beyond the vocabulary decode to nothing."""
        skip = {self.pad_id, self.bos_id, self.eos_id}
        by_id = {i: piece for piece, i in self.added.items()}
        out, run = [], []
        for i in (int(i) for i in ids):
            if i in skip or not 0 <= i < self.vocab_size:
                continue
            if i in by_id:
                out.append(self.backend.decode(run) + by_id[i])
                run = []
            else:
                run.append(i)
        return "".join(out) + self.backend.decode(run)

    def token_bytes(self) -> list[bytes]:
        appended = sorted(self.added.items(), key=lambda item: item[1])
        out = self.backend.token_bytes() + [piece.encode("utf-8") for piece, _ in appended]
        for special in (self.pad_id, self.bos_id, self.eos_id, self.unk_id):
            if special is not None and 0 <= special < len(out):
                out[special] = b""  # document boundaries and padding spell no text
        return out

    def hf_files(self) -> dict[str, bytes]:
        """The backend's file and the Hugging Face config files it was imported with."""
        files = {name: text.encode("utf-8") for name, text in self.bundle["files"].items()}
        if self.bundle["backend"] == "tokenizers":
            files[HF_JSON] = self.bundle["model"].encode("utf-8")
        else:
            files[HF_SPM] = base64.b64decode(self.bundle["model"])
        return files
