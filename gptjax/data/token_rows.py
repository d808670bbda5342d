"""Pretraining rows: a token stream cut into rows of L+1 tokens and packed into model inputs.

The stream (an in-memory array, or memory-mapped shards written by `gptjax prepare`, see
gptjax.data.shards) holds documents as `<s> ids </s>`. Row r is stream[r*L : r*L+L+1]:
consecutive rows share one token, so every token is a target exactly once.

Packing (`packing=True`): `segment_ids` step up and `positions` restart at each `<s>`, so
attention stays inside a document. Plain concatenate-and-chunk (`packing=False`): one
segment per row, positions 0..L-1, attention crosses document boundaries (GPT-2, nanoGPT).
Either way a target that is the next document's `<s>`, or padding, has weight 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from gptjax.data.prepare import documents_to_stream
from gptjax.data.rows import FIELDS, Rows
from gptjax.data.shards import ShardedTokens
from gptjax.errors import ConfigError
from gptjax.tokenizer import Tokenizer


def encode_documents(docs: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """The token stream: `[bos] + ids + [eos]` for each document, concatenated (int32)."""
    encoded = tokenizer.encode_batch(docs)
    return documents_to_stream(encoded, tokenizer.bos_id, tokenizer.eos_id, np.int32)


def pack_rows(
    rows: np.ndarray, bos_id: int, pad_id: int, packing: bool = True
) -> dict[str, np.ndarray]:
    """Model inputs for `[n, L+1]` token rows: each field `[n, L]`, row by row.

    segment_ids start at 1 and step up at every input `bos` (a bos at position 0 stays 1);
    positions restart at 0 at each bos; weights are 0 where the target is bos (the next
    document's start is unpredictable) or pad. Without `packing`: one segment, positions 0..L-1.
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2:
        raise ConfigError(f"pack_rows needs [n, L+1] rows with L >= 1, got shape {rows.shape}")
    # astype copies: each field is its own C-contiguous array, not a view into `rows`.
    inputs, targets = rows[:, :-1].astype(np.int32), rows[:, 1:].astype(np.int32)
    is_bos = inputs == bos_id
    if not packing:
        is_bos[:] = False
    segment_ids = np.cumsum(is_bos, axis=1, dtype=np.int32)
    segment_ids += ~is_bos[:, :1]  # a row that opens mid-document is segment 1 too
    # positions: the distance back to the start of the segment. Every bos and every row's first
    # position start one; on the flattened batch, the start in effect at each position is the
    # running sum of the gaps between consecutive starts. (np.maximum.accumulate over the start
    # indices says the same but costs 3x as much, and packing runs once per batch.)
    num_rows, length = inputs.shape
    is_start = is_bos.copy()
    is_start[:, 0] = True
    starts = np.flatnonzero(is_start).astype(np.int32)  # starts[0] == 0
    gaps = np.zeros(num_rows * length, np.int32)
    gaps[starts[1:]] = np.diff(starts)
    positions = np.arange(num_rows * length, dtype=np.int32)
    positions -= np.cumsum(gaps, dtype=np.int32)
    positions = positions.reshape(num_rows, length)
    weights = ((targets != bos_id) & (targets != pad_id)).astype(np.float32)
    return {
        "inputs": inputs,
        "targets": targets,
        "segment_ids": segment_ids,
        "positions": positions,
        "weights": weights,
    }


class TokenRows(Rows):
    """A token stream as rows of `seq_len` positions, packed as the module docstring says."""

    def __init__(
        self,
        tokens: np.ndarray | ShardedTokens,
        *,
        seq_len: int,
        bos_id: int,
        pad_id: int,
        packing: bool = True,
    ) -> None:
        if seq_len <= 0:
            raise ConfigError(f"seq_len={seq_len} must be positive")
        if not isinstance(tokens, ShardedTokens):
            tokens = np.asarray(tokens)
            if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
                raise ConfigError(f"token stream must be a 1-D integer array, got {tokens.dtype}")
            tokens = ShardedTokens.from_array(tokens)
        if (tokens.size - 1) // seq_len < 1:
            raise ConfigError(
                f"token stream of {tokens.size} tokens is shorter than one row of "
                f"seq_len+1={seq_len + 1}; use more text or a shorter seq_len"
            )
        self.tokens, self.bos_id, self.pad_id, self.packing = tokens, bos_id, pad_id, packing
        self._seq_len = seq_len

    @property
    def num_rows(self) -> int:
        return (self.tokens.size - 1) // self._seq_len

    @property
    def seq_len(self) -> int:
        return self._seq_len

    @property
    def fields(self) -> dict[str, np.dtype]:
        return {k: np.dtype(np.float32 if k == "weights" else np.int32) for k in FIELDS}

    @property
    def size(self) -> int:
        """Tokens in the stream."""
        return self.tokens.size

    def take(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        rows = self.tokens.rows(ids, self._seq_len)
        return pack_rows(rows, self.bos_id, self.pad_id, self.packing)

    def padding(self, count: int) -> dict[str, np.ndarray]:
        rows = np.full((count, self._seq_len + 1), self.pad_id, np.int32)
        return pack_rows(rows, self.bos_id, self.pad_id, self.packing)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for array in self.tokens.arrays:
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
