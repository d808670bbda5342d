"""The sets `gptjax eval` scores: text, conversations and preference pairs, read once.

Text specs: `builtin` (the built-in corpus's hash-split validation documents), `prepared:DIR`
(the valid split `gptjax prepare` held out in DIR, scored as its very tokens when the model has
DIR's tokenizer, else decoded and re-encoded) or any `gptjax prepare` source spec (read whole).
Conversations and preference pairs: `builtin` or JSONL files, of which only the held-out side
of the hash split training uses is kept unless `split` is False.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from gptjax.errors import DataError
from gptjax.inference.heldout import (
    RunSplit,
    Verdict,
    manifest_sha256,
    questions_verdict,
    text_verdict,
)
from gptjax.tokenizer import Tokenizer

PREPARED_PREFIX = "prepared:"


def _log(line: str) -> None:
    print(line, file=sys.stderr)


@dataclasses.dataclass
class TextSet:
    """One --text spec's documents; a prepared valid split keeps its tokens as well."""

    spec: str
    documents: list[str] | None  # None until decoded (a prepared split)
    count: int  # documents
    tokens: np.ndarray | None = None  # a prepared valid split's stream, [bos] doc [eos] ...
    tokenizer: Tokenizer | None = None  # the tokenizer of `tokens`
    prepared_sha256: str = ""

    def texts(self) -> list[str]:
        if self.documents is None:  # decoded on first need: a large split costs a while
            self.documents = _decode_stream(self.tokens, self.tokenizer)
        return self.documents

    def stream_for(self, tokenizer: Tokenizer) -> np.ndarray:
        """The set as `tokenizer`'s token stream: its own tokens when they are that
        tokenizer's, else its documents encoded."""
        from gptjax.data.token_rows import encode_documents

        if self.tokens is not None and self.tokenizer.sha256 == tokenizer.sha256:
            return self.tokens
        return encode_documents(self.texts(), tokenizer)

    def verdict(self, split: RunSplit) -> Verdict:
        if self.prepared_sha256:
            return text_verdict(split, [], self.prepared_sha256)
        return text_verdict(split, self.texts())


def _decode_stream(tokens: np.ndarray, tokenizer: Tokenizer) -> list[str]:
    """The documents of a `[bos] ids [eos]` stream."""
    starts = np.flatnonzero(tokens == tokenizer.bos_id)
    ends = np.append(starts[1:], tokens.size)
    documents = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        body = tokens[start + 1 : end]
        if body.size and body[-1] == tokenizer.eos_id:
            body = body[:-1]
        documents.append(tokenizer.decode(body.tolist()))
    return documents


def _prepared_text(spec: str) -> TextSet:
    from gptjax.data.shards import open_prepared

    directory = spec[len(PREPARED_PREFIX) :]
    if not directory:
        raise DataError(f"--text {spec!r}: name the directory, e.g. prepared:data/char")
    prepared = open_prepared(directory)
    valid = prepared.manifest["splits"]["valid"]
    return TextSet(
        spec,
        None,
        int(valid["documents"]),
        tokens=prepared.valid.read(0, prepared.valid.size),
        tokenizer=prepared.tokenizer,
        prepared_sha256=manifest_sha256(prepared.manifest),
    )


def text_sets(specs: list[str], fraction: float) -> list[TextSet]:
    from gptjax.data.corpus import builtin_documents, split_documents
    from gptjax.data.sources import SourceStats, parse_sources

    sets = []
    for spec in specs:
        if spec == "builtin":
            documents = split_documents(builtin_documents(), fraction)[1]
        elif spec.startswith(PREPARED_PREFIX):
            sets.append(_prepared_text(spec))
            continue
        else:
            documents = [d for s in parse_sources([spec]) for d in s.documents(SourceStats())]
        if not documents:
            raise DataError(f"--text {spec}: no documents")
        sets.append(TextSet(spec, documents, len(documents)))
    return sets


def conversation_set(specs: list[str], fraction: float, split: bool) -> list[list[dict]]:
    """The held-out side of each set, by the same hash split the SFT phase trains with (files
    are taken whole when `split` is False: a set that was never trained on)."""
    from gptjax.data.conversations import (
        builtin_conversations,
        read_conversations,
        split_conversations,
    )

    files = [spec for spec in specs if spec != "builtin"]
    conversations: list[list[dict]] = []
    if "builtin" in specs:
        conversations += split_conversations(builtin_conversations(), fraction)[1]
    if files:
        from_files = read_conversations(files, log=_log)
        conversations += split_conversations(from_files, fraction)[1] if split else from_files
    return conversations


def preference_set(specs: list[str], fraction: float, split: bool) -> list[dict]:
    """Pairs as `conversation_set` takes conversations (the DPO phase splits them the same
    way), each with its "kind" when the file tags it."""
    from gptjax.data.preferences import builtin_preferences, split_preferences
    from gptjax.inference.preference_eval import read_tagged_preferences
    from gptjax.pair_kinds import PAIR_KINDS

    files = [spec for spec in specs if spec != "builtin"]
    pairs: list[dict] = []
    if "builtin" in specs:  # every kind, as the DPO phase's own held-out pairs
        pairs += split_preferences(builtin_preferences(PAIR_KINDS), fraction)[1]
    if files:
        from_files = read_tagged_preferences(files)
        pairs += split_preferences(from_files, fraction)[1] if split else from_files
    return pairs


def conversations_verdict(split: RunSplit, conversations: list[list[dict]]) -> Verdict:
    from gptjax.data.conversations import question_key

    return questions_verdict(split, [question_key(c) for c in conversations], "conversations")


def pairs_verdict(split: RunSplit, pairs: list[dict]) -> Verdict:
    from gptjax.data.conversations import question_key

    return questions_verdict(split, [question_key(p["messages"]) for p in pairs], "pairs")
