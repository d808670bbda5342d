"""Whether an evaluation set is held out from the run that trained a checkpoint.

A set is called held out only when it is provably part of the validation split of the
checkpoint's own run: that run's data is rebuilt from the data config its metadata records
(the built-in corpus, the conversations or the preference pairs, split by the recorded
`data.validation_fraction` and packed with the checkpoint's tokenizer) and its training side
must hash to the recorded `data_sha256`, which proves the rebuilt split is the one trained
with; a prepared directory is proven by its manifest's hash (the manifest holds every shard's
sha256). Conversations and preference pairs are split by their first user message (the same
hash for SFT and DPO), so a question is held out when it is one of the run's held-out
questions. Anything else (other files, another fraction, data that changed since, a run of
another phase) is reported as not known to be held out, with the reason.

This speaks of the checkpoint's own run only: an SFT model was also shaped by its pretraining,
whose data this does not check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

from gptjax.errors import GptjaxError
from gptjax.tokenizer import Tokenizer

# Fewer held-out examples than this make accuracies and BLEU too coarse to compare models by.
SMALL_SET = 50


@dataclasses.dataclass(frozen=True)
class RunSplit:
    """What a checkpoint's run held out, rebuilt and checked; `unknown` says why not when the
    run's data could not be rebuilt (or did not match its recorded hash)."""

    what: str  # the run's validation set in words
    documents: frozenset[str] = frozenset()  # held-out text documents (source builtin)
    prepared_sha256: str = ""  # the prepared manifest's hash (source prepared)
    questions: frozenset[str] = frozenset()  # held-out first user messages (sft/dpo data)
    unknown: str = ""


@dataclasses.dataclass(frozen=True)
class Verdict:
    held_out: bool
    note: str  # one phrase: why it is, or why it is not known to be


def manifest_sha256(manifest: dict) -> str:
    """How a training run identifies prepared data (gptjax.train.loop's data hash)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _specs(text: str) -> tuple[bool, list[str]]:
    """ "builtin,a.jsonl, b/*.jsonl" -> (True, ["a.jsonl", "b/*.jsonl"]), as training reads it."""
    specs = [spec.strip() for spec in text.split(",") if spec.strip()]
    return "builtin" in specs, [spec for spec in specs if spec != "builtin"]


def _builtin_text(data: dict, tokenizer: Tokenizer) -> tuple[str, RunSplit]:
    from gptjax.data.corpus import builtin_documents, split_documents
    from gptjax.data.token_rows import TokenRows, encode_documents

    fraction = data["validation_fraction"]
    train, valid = split_documents(builtin_documents(), fraction)
    rows = TokenRows(
        encode_documents(train, tokenizer),
        seq_len=data["seq_len"],
        bos_id=tokenizer.bos_id,
        pad_id=tokenizer.pad_id,
    )
    what = f"the built-in corpus's validation documents, hash split at fraction {fraction}"
    return rows.sha256(), RunSplit(what, documents=frozenset(valid))


def _questions(data: dict, tokenizer: Tokenizer, kind: str) -> tuple[str, RunSplit]:
    from gptjax.data.conversations import (
        builtin_conversations,
        pack_conversations,
        question_key,
        read_conversations,
        split_conversations,
    )
    from gptjax.data.preferences import (
        pack_preferences,
        read_preferences,
        split_builtin_preferences,
        split_preferences,
    )

    builtin, files = _specs(data[kind])
    fraction = data["validation_fraction"]
    if kind == "conversations":
        items = builtin_conversations() if builtin else []
        items += read_conversations(files, log=lambda line: None) if files else []
        train, valid = split_conversations(items, fraction)
        packed = pack_conversations(train, tokenizer, data["seq_len"])
        questions = frozenset(question_key(c) for c in valid)
    else:
        # As the DPO run read them: built-in training pairs of its data.preference_kinds
        # (before pair kinds: half of them shuffled, which no longer rebuilds: not known).
        kinds = [k.strip() for k in data.get("preference_kinds", "other_answer").split(",")]
        train, valid = split_builtin_preferences(kinds, fraction) if builtin else ([], [])
        if files:
            file_train, file_valid = split_preferences(read_preferences(files), fraction)
            train, valid = train + file_train, valid + file_valid
        packed = pack_preferences(train, tokenizer, data["seq_len"])
        questions = frozenset(question_key(p["messages"]) for p in valid)
    what = f"the held-out questions of data.{kind}={data[kind]!r}, fraction {fraction}"
    return packed.sha256(), RunSplit(what, questions=questions)


def run_split(metadata: dict, tokenizer: Tokenizer) -> RunSplit:
    """The validation split of the run that wrote a checkpoint (its `metadata`), rebuilt with
    the checkpoint's `tokenizer` and checked against the recorded data hash."""
    recorded = metadata.get("data_sha256")
    data = metadata.get("config", {}).get("data", {})
    source = data.get("source")
    if not recorded or not source:
        return RunSplit("", unknown="the checkpoint records no data hash")
    if source == "prepared":
        return RunSplit(f"the valid split of {data.get('prepared_dir')}", prepared_sha256=recorded)
    try:
        if source == "builtin":
            digest, split = _builtin_text(data, tokenizer)
        else:
            digest, split = _questions(data, tokenizer, source)
    except GptjaxError as error:  # e.g. the run's files are not where it read them
        return RunSplit("", unknown=f"its data.{source} cannot be rebuilt here ({error})")
    if digest != recorded:
        return RunSplit(
            "",
            unknown=f"its recorded data hash does not match its data.{source} as rebuilt here "
            "(the files or the split changed since)",
        )
    return split


def _not_known(why: str) -> Verdict:
    return Verdict(False, f"not known to be held out: {why}")


def text_verdict(split: RunSplit, documents: Sequence[str], prepared_sha256: str = "") -> Verdict:
    """Whether these documents (or the valid split of a prepared directory whose manifest
    hashes to `prepared_sha256`) are held out from the run."""
    if split.unknown:
        return _not_known(split.unknown)
    if split.prepared_sha256:
        if prepared_sha256 == split.prepared_sha256:
            return Verdict(True, f"held out by its run ({split.what})")
        return _not_known(f"its run trained on prepared data, and this is not {split.what}")
    if prepared_sha256:
        return _not_known(f"its run held out {split.what}, not this prepared split")
    if not split.documents:
        return _not_known(f"its run held out {split.what}, not text documents")
    outside = sum(doc not in split.documents for doc in documents)
    if outside or not documents:
        return _not_known(f"{outside:,} of {len(documents):,} documents are not in {split.what}")
    return Verdict(True, f"held out by its run ({split.what})")


def questions_verdict(split: RunSplit, questions: Sequence[str], noun: str) -> Verdict:
    """Whether every one of these first user messages (of conversations or pairs, `noun`) is
    one the run held out."""
    if split.unknown:
        return _not_known(split.unknown)
    if not split.questions:
        return _not_known(f"its run held out {split.what}, not {noun}")
    outside = sum(q not in split.questions for q in questions)
    if outside or not questions:
        return _not_known(
            f"{outside:,} of {len(questions):,} {noun} ask a question outside {split.what}"
        )
    return Verdict(True, f"held out by its run ({split.what})")


def small_set_warning(count: int, noun: str) -> str | None:
    """One line when a held-out set is too small for its accuracies and BLEU to mean much."""
    if count >= SMALL_SET:
        return None
    return (
        f"warning: only {count} held-out {noun}: accuracies, BLEU and exact match over so few "
        f"move in steps of {1 / max(count, 1):.2f} and mean little (aim for {SMALL_SET} or more)"
    )
