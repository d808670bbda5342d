"""A Hugging Face tokenizer behind gptjax's `Tokenizer` interface (imported models keep theirs).

The backend is a `tokenizer.json` read by the `tokenizers` library, or a sentencepiece
`tokenizer.model`. Its serialized form (`model_bytes`, stored in checkpoints and written as
WORKDIR/tokenizer/tokenizer.model) is a JSON bundle: the backend's own file, the special ids
and any tokens gptjax appended, so `Tokenizer.from_bytes` restores it exactly.

Special-token policy (gptjax needs bos, eos and a pad that is never a training target):
  bos, eos  the model's own (tokenizer_config.json, special_tokens_map.json, then config.json);
            no bos means bos = eos (GPT-2 has one `<|endoftext|>` for both).
  pad       the model's pad token when it has one that differs from eos, else the bos id.
            Hugging Face often pads with eos, but gptjax masks pad targets out of the loss and
            a model must learn to emit eos; bos targets are never trained, so reusing it is free.
  chat      `<|system|> <|user|> <|assistant|> <|end|>` are used when the vocabulary has them;
            `add_chat_tokens=True` appends the missing ones after the last id. That makes the
            tokenizer larger than the Hugging Face vocabulary, so the model's embedding needs
            the rows (`gptjax import-hf --vocab-size`); nothing is ever added silently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from gptjax.errors import DataError
from gptjax.tokenizer import CHAT_TOKENS, META_FILE, MODEL_FILE, Tokenizer

FORMAT = "gptjax-hf-tokenizer/1"
HF_JSON, HF_SPM = "tokenizer.json", "tokenizer.model"
HF_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
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


class _TokenizersBackend:
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

    def with_tokens(self, pieces: Sequence[str]) -> _TokenizersBackend:
        from tokenizers import AddedToken

        tk = type(self.tk).from_str(self.text)
        tk.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in pieces])
        return _TokenizersBackend(tk.to_str())


class _SentencePieceBackend:
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


class HFTokenizer(Tokenizer):
    """An imported model's tokenizer; same interface and ids as the model was trained with."""

    def __init__(self, bundle: dict, model_bytes: bytes, backend) -> None:
        self.bundle, self.backend = bundle, backend
        self.model_bytes = model_bytes
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
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
            backend = _TokenizersBackend(bundle["model"])
        else:
            backend = _SentencePieceBackend(base64.b64decode(bundle["model"]))
        return cls(bundle, bytes(model_bytes), backend)

    def save(self, out_dir: str | Path, *, model_type: str | None = None) -> Path:
        """Writes tokenizer.model (the bundle) and tokenizer.json (gptjax's metadata)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "vocab_size": self.vocab_size,
            "model_type": f"huggingface-{self.bundle['backend']}",
            "sha256": self.sha256,
            "special_ids": dict(self.special),
            "chat_tokens": {p: self._find(p) for p in CHAT_TOKENS},
        }
        for name, data in ((MODEL_FILE, self.model_bytes), (META_FILE, json.dumps(meta, indent=2))):
            tmp = out / f".{name}.tmp"
            tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
            tmp.replace(out / name)
        return out

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

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

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

    def hf_files(self) -> dict[str, bytes]:
        """The backend's file and the Hugging Face config files it was imported with."""
        files = {name: text.encode("utf-8") for name, text in self.bundle["files"].items()}
        if self.bundle["backend"] == "tokenizers":
            files[HF_JSON] = self.bundle["model"].encode("utf-8")
        else:
            files[HF_SPM] = base64.b64decode(self.bundle["model"])
        return files


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not readable JSON: {error}") from None


def _declared(configs: Sequence[dict], key: str) -> str | None:
    """A special token's text as tokenizer_config.json / special_tokens_map.json spell it."""
    for config in configs:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


def _special_ids(backend, configs: Sequence[dict], model_config: dict, where: Path) -> dict:
    def resolve(name: str) -> int | None:
        piece = _declared(configs, f"{name}_token")
        if piece is not None:
            found = backend.token_to_id(piece)
            if found is None:
                raise DataError(f"{where}: {name}_token {piece!r} is not in the vocabulary")
            return found
        value = model_config.get(f"{name}_token_id")
        if isinstance(value, list):  # Llama 3 lists several end tokens; the first is eos
            value = value[0] if value else None
        if value is None and isinstance(backend, _SentencePieceBackend):
            value = getattr(backend.sp, f"{name}_id")()
        return value if isinstance(value, int) and 0 <= value < backend.size else None

    eos = resolve("eos")
    if eos is None:
        raise DataError(
            f"{where}: the tokenizer declares no eos token (tokenizer_config.json eos_token or "
            "config.json eos_token_id); gptjax needs one to end documents and answers"
        )
    bos = resolve("bos")
    bos = eos if bos is None else bos
    pad = resolve("pad")
    pad = bos if pad is None or pad == eos else pad
    return {"bos": bos, "eos": eos, "pad": pad, "unk": resolve("unk")}


def read_hf_tokenizer(
    model_dir: str | Path, model_config: dict, *, add_chat_tokens: bool = False
) -> HFTokenizer:
    """The tokenizer of a Hugging Face model directory: tokenizer.json, else tokenizer.model."""
    model_dir = Path(model_dir)
    present = [name for name in HF_CONFIG_FILES if (model_dir / name).is_file()]
    configs = [_read_json(model_dir / name) for name in present]
    files = {name: (model_dir / name).read_text("utf-8") for name in present}
    if (model_dir / HF_JSON).is_file():
        kind, model = "tokenizers", (model_dir / HF_JSON).read_text("utf-8")
        backend = _TokenizersBackend(model)
    elif (model_dir / HF_SPM).is_file():
        proto = (model_dir / HF_SPM).read_bytes()
        kind, model = "sentencepiece", base64.b64encode(proto).decode("ascii")
        backend = _SentencePieceBackend(proto)
    else:
        raise DataError(
            f"{model_dir} has no tokenizer ({HF_JSON} or {HF_SPM}); copy the model's tokenizer "
            "files next to its config.json"
        )
    added: dict[str, int] = {}
    missing = [p for p in CHAT_TOKENS if backend.token_to_id(p) is None]
    if add_chat_tokens and missing:
        if kind == "tokenizers":
            backend = backend.with_tokens(missing)
            model = backend.text
        else:
            added = {p: backend.size + i for i, p in enumerate(missing)}
    special = _special_ids(backend, configs, model_config, model_dir)
    bundle = {"format": FORMAT, "backend": kind, "model": model, "special": special}
    return HFTokenizer.from_bundle(bundle | {"added": added, "files": files})


def hf_tokenizer_files(tokenizer: Tokenizer, max_seq_len: int) -> dict[str, bytes]:
    """Files for a Hugging Face model directory that hold `tokenizer`.

    An imported tokenizer goes back as it came; a gptjax-trained sentencepiece model goes out
    as tokenizer.model with a tokenizer_config.json naming its special tokens.
    """
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.hf_files()
    sp = tokenizer._sp
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": sp.id_to_piece(tokenizer.bos_id),
        "eos_token": sp.id_to_piece(tokenizer.eos_id),
        "pad_token": sp.id_to_piece(tokenizer.pad_id),
        "unk_token": sp.id_to_piece(sp.unk_id()),
        "additional_special_tokens": [p for p in CHAT_TOKENS if sp.piece_to_id(p) != sp.unk_id()],
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "add_prefix_space": False,
        "model_max_length": max_seq_len,
    }
    return {
        HF_SPM: tokenizer.model_bytes,
        "tokenizer_config.json": json.dumps(config, indent=2).encode("utf-8"),
    }
