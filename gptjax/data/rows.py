"""Rows: what the input pipeline batches, whatever the data (token stream, SFT, DPO).

A `Rows` is `num_rows` rows of `seq_len` positions; row i is one value of every field (the
model inputs, `[seq_len]` each). `take(ids)` gives the rows at some indices as
`{field: [len(ids), seq_len]}`, `padding(n)` gives n rows that carry no loss (weight 0), to
fill up the last evaluation batch. The pipeline (gptjax.data.pipeline) picks which rows a
step reads and never looks inside them, so every kind of data is batched, resumed and split
over processes by one code path.

Kinds: `TokenRows` (gptjax.data.token_rows: a token stream cut into rows and packed there),
and rows held in memory as arrays (`ArrayRows`: packed conversations, preference pairs,
pairs with precomputed reference log-probabilities).

No TensorFlow here: data modules import this without starting TF.
"""

from __future__ import annotations

import abc
import hashlib
from typing import ClassVar

import numpy as np

# The fields of a language-model batch, in order. Preference rows add branch_ids, pairs with
# a precomputed reference add its log-probabilities.
FIELDS = ("inputs", "targets", "segment_ids", "positions", "weights")
# Padding rows hold the pad id in these fields; every other field is 0 (segment 0, weight 0).
_TOKEN_FIELDS = ("inputs", "targets")


class Rows(abc.ABC):
    """Fixed-length rows of named fields, read by index (see the module docstring)."""

    @property
    @abc.abstractmethod
    def num_rows(self) -> int: ...

    @property
    @abc.abstractmethod
    def seq_len(self) -> int: ...

    @property
    @abc.abstractmethod
    def fields(self) -> dict[str, np.dtype]:
        """The batch fields in batch order, each with its dtype."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Tokens the rows are made of (what a log line counts as training tokens)."""

    @abc.abstractmethod
    def take(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `ids` (any order, repeats allowed) as `{field: [len(ids), seq_len]}`."""

    @abc.abstractmethod
    def padding(self, count: int) -> dict[str, np.ndarray]:
        """`count` rows with weight 0 everywhere, shaped and typed like `take`'s."""

    @abc.abstractmethod
    def sha256(self) -> str:
        """Hex digest of the rows' content. Reads all of it: meant for data held in memory
        (a prepared corpus is identified by its manifest instead)."""


class ArrayRows(Rows):
    """Rows held in memory as `[num_rows, seq_len]` arrays, `arrays` (by default the
    attributes the class's FIELD_NAMES name); padding has segment id 0 and weight 0."""

    FIELD_NAMES: ClassVar[tuple[str, ...]]
    pad_id: int

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The rows as {field: array}, in batch order."""
        return {k: getattr(self, k) for k in self.FIELD_NAMES}

    @property
    def num_rows(self) -> int:
        return self.arrays["inputs"].shape[0]

    @property
    def seq_len(self) -> int:
        return self.arrays["inputs"].shape[1]

    @property
    def fields(self) -> dict[str, np.dtype]:
        return {k: v.dtype for k, v in self.arrays.items()}

    @property
    def size(self) -> int:
        """Token positions in all rows, padding included."""
        return self.arrays["inputs"].size

    @property
    def trained_tokens(self) -> int:
        return int(self.arrays["weights"].sum())

    @property
    def filled(self) -> float:
        """Fraction of row positions holding a token rather than padding."""
        segment_ids = self.arrays["segment_ids"]
        return np.count_nonzero(segment_ids) / max(segment_ids.size, 1)

    def take(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[ids] for k, v in self.arrays.items()}

    def padding(self, count: int) -> dict[str, np.ndarray]:
        return {
            k: np.full((count, v.shape[1]), self.pad_id if k in _TOKEN_FIELDS else 0, v.dtype)
            for k, v in self.arrays.items()
        }

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for array in self.arrays.values():
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
