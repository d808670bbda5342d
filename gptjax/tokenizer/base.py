"""The interface every gptjax tokenizer has, and the ids and file names they share.

Two kinds implement it: `SentencePieceTokenizer` (trained by gptjax) and `HFTokenizer` (an
imported Hugging Face model's own). `gptjax.tokenizer.load_tokenizer` returns either.
"""

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Sequence

from etils import epath

from gptjax.paths import PathLike, as_path

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD_PIECE, UNK_PIECE, BOS_PIECE, EOS_PIECE = "<pad>", "<unk>", "<s>", "</s>"
# Reserved now, used by the chat template later: each is always one token, never split.
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
MODEL_TYPES = ("bpe", "unigram", "char")
MODEL_FILE, META_FILE = "tokenizer.model", "tokenizer.json"
# Pieces every model holds before learning any: 4 specials, the chat symbols, 256 bytes.
RESERVED_PIECES = 4 + len(CHAT_TOKENS) + 256


class Tokenizer:
    """Text <-> ids, plus the bytes it was loaded from (stored in checkpoints, fingerprinted)."""

    def __init__(self, model_bytes: bytes) -> None:
        self.model_bytes = bytes(model_bytes)
        self.sha256 = hashlib.sha256(self.model_bytes).hexdigest()

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int | None

    def token_id(self, piece: str) -> int:
        """The id of `piece` (e.g. "<|user|>"); DataError if the model has no such piece."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without bos/eos."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def pieces(self, text: str) -> list[str]:
        """The pieces `encode` maps `text` to (shown by `gptjax tokenizer encode --pieces`)."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes each id stands for in encoded text, by id; b"" for pad, bos, eos
        and unk (see `gptjax.tokenizer.text_lengths`, which counts bits per byte with it)."""
        raise NotImplementedError

    def metadata(self, model_type: str | None) -> dict:
        """What tokenizer.json records beside the model bytes (vocab size, sha256, special ids)."""
        raise NotImplementedError

    def save(self, out_dir: PathLike, *, model_type: str | None = None) -> epath.Path:
        """Writes tokenizer.model (the bytes) and tokenizer.json (metadata); returns the dir."""
        out = as_path(out_dir, "tokenizer directory")
        out.mkdir(parents=True, exist_ok=True)
        meta = json.dumps(self.metadata(model_type), indent=2)
        # Write-then-rename so a crash never leaves a half-written model next to valid metadata.
        # The temporary name is this process's own: two writers sharing one name rename each
        # other's file away (multi-host runs write once, from process 0; this is the backstop).
        for name, data in ((MODEL_FILE, self.model_bytes), (META_FILE, meta.encode("utf-8"))):
            tmp = out / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            tmp.write_bytes(data)
            tmp.replace(out / name)
        return out
