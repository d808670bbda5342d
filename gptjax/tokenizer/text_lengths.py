"""How much text each token id stands for: UTF-8 bytes and characters, per vocabulary entry.

Losses in nats per token cannot be compared across tokenizers (a char model predicts ~4x
as many tokens as a BPE one for the same text). Bits per byte of the original UTF-8 text can:
the jitted step sums `bytes[targets]` of the scored targets next to their cross-entropy, and
the loss divided by those bytes is exact, batch by batch.

Each id's bytes come from the tokenizer (`Tokenizer.token_bytes`): a sentencepiece piece with
`▁` as one space byte, a byte-fallback `<0xNN>` piece as that one byte, a byte-level BPE
piece through GPT-2's byte alphabet, bos/eos/pad/unk as nothing. Characters are the bytes
that start one (not UTF-8 continuation bytes), so a character split over byte pieces counts
once. The chat markers (`<|user|>`, ...) are one id each whatever the context: inside the
chat template they are structure (0 bytes); typed in plain text, encode() still maps them to
that id, and there they stand for their literal text. `markers_are_text` says which.

A tokenizer that adds a space before every encoded text (sentencepiece's `add_dummy_prefix`,
as Llama-2's does) spells one byte more than the text holds per document; `prefix_bytes`
records it (measured on a probe), and the step takes it off the first token of each document.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gptjax.errors import DataError
from gptjax.tokenizer.base import CHAT_TOKENS, Tokenizer

_PROBE = "a"  # one byte of text; what its encoding spells beyond it is the added prefix


@dataclasses.dataclass(frozen=True)
class TextLengths:
    """Per-id UTF-8 bytes and characters of a vocabulary (int32 [vocab]), and the prefix."""

    bytes: np.ndarray
    chars: np.ndarray
    prefix_bytes: int  # a space the tokenizer adds before each encoded text: 0 or 1
    bos_id: int  # a document's first token is the target after it

    def count(self, ids) -> tuple[int, int]:
        """(bytes, chars) the ids spell, as a document encoded on its own (prefix removed)."""
        ids = np.asarray(ids, np.int64)
        spelled = int(self.bytes[ids].sum())
        prefix = self.prefix_bytes if ids.size and self.bytes[ids[0]] else 0
        return spelled - prefix, int(self.chars[ids].sum()) - prefix


def _chars_in(data: bytes) -> int:
    """Characters a UTF-8 byte string starts: every byte that is not a continuation byte."""
    return sum((b & 0xC0) != 0x80 for b in data)


def text_lengths(tokenizer: Tokenizer, *, markers_are_text: bool) -> TextLengths:
    """The table for `tokenizer`; `markers_are_text` for plain text (pretraining, `eval
    --text`), not for chat-template rows (SFT, `eval --conversations`)."""
    spelled = tokenizer.token_bytes()
    if not markers_are_text:
        for piece in CHAT_TOKENS:
            try:
                spelled[tokenizer.token_id(piece)] = b""
            except DataError:  # an imported vocabulary without chat markers
                continue
    lengths = np.array([len(b) for b in spelled], np.int32)
    chars = np.array([_chars_in(b) for b in spelled], np.int32)
    prefix = int(lengths[tokenizer.encode(_PROBE)].sum()) - len(_PROBE.encode())
    if prefix not in (0, 1):
        raise DataError(
            f"tokenizer {tokenizer.sha256[:12]}… spells {_PROBE!r} in {prefix + 1} bytes; "
            "its pieces cannot be counted as bytes of the text (bits per byte)"
        )
    return TextLengths(lengths, chars, prefix, tokenizer.bos_id)
