"""DPO data: preference pairs read, derived, split and packed into fixed rows.

A pair is a prompt conversation ending with a user turn and two answers to it, one preferred:
{"messages": [...], "chosen": str, "rejected": str, "where": "file.jsonl:LINE"}.

Layout: each pair is ONE segment holding the prompt once and both answers as two branches,
so the prompt costs its tokens once and both answers are scored under the same context.
With prompt = `render(messages, add_generation_prompt=True)` (p ids, ending `<|assistant|>`)
and each answer's ids = its content ids + `<|end|>` (exactly what SFT trains on):
- branch 0, the shared prompt: inputs prompt[:-1], targets prompt[1:], positions 0..p-2,
  weight 0;
- branch 1, chosen: inputs [prompt[-1]] + chosen[:-1], targets chosen, positions from p-1,
  weight 1;
- branch 2, rejected: the same with rejected, positions again from p-1, weight 1,
laid out in that order, (p-1) + len(chosen) + len(rejected) positions in all. The model lets
a token attend to an earlier token of its segment iff that token is in branch 0 or in its
own branch, so the rejected answer never sees the chosen one; the loss sums target
log-probs per (segment, branch).

Policies, all reported by `PackedPreferences.describe()`:
- no truncation: cutting one answer short would bias the comparison, so a pair longer than
  a row is left out and counted, with where it came from;
- order: first-fit in input order, as for SFT (gptjax.data.conversations); segment ids
  1, 2, ... within a row; the tail of a row is padding: segment 0, branch 0, pad inputs
  and targets, position 0, weight 0.
"""

import dataclasses
import json
import random
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from gptjax.chat_template import check_messages, render
from gptjax.data.conversations import (
    _first_fit,
    builtin_conversations,
    json_object,
    question_key,
    read_jsonl_records,
)
from gptjax.data.corpus import hash_units
from gptjax.data.row_fit import overflow_warning
from gptjax.data.rows import ArrayRows
from gptjax.errors import ConfigError, DataError
from gptjax.pair_kinds import DEFAULT_KINDS, PAIR_KINDS, UNTAGGED, check_kinds
from gptjax.tokenizer import Tokenizer

# The batch fields: the SFT fields (gptjax.data.rows.FIELDS) plus branch_ids.
PREFERENCE_FIELDS = ("inputs", "targets", "segment_ids", "positions", "branch_ids", "weights")
# How many left-out pairs describe() names; the rest are only counted.
_NAMED_TOO_LONG = 3


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _checked(
    messages: object, chosen: object, rejected: object, where: str, kind: object = None
) -> dict:
    """The pair as a dict, or DataError naming `where` (the rules read_preferences states)."""
    if kind is not None and not (isinstance(kind, str) and kind.strip()):
        raise DataError(f"{where}: kind must be a non-empty string, got {json.dumps(kind)}")
    messages = check_messages(messages, where)
    if messages[-1]["role"] != "user":
        raise DataError(
            f"{where}: the prompt conversation ends with a {messages[-1]['role']} turn; "
            "it must end with the user turn that chosen and rejected answer"
        )
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(text, str):
            raise DataError(f"{where}: {name} is {type(text).__name__}, not text")
        if not text.strip():
            raise DataError(f"{where}: {name} is empty; a pair needs two answers")
    if _normalised(chosen) == _normalised(rejected):
        raise DataError(f"{where}: chosen and rejected are the same text; nothing to prefer")
    pair = {"messages": messages, "chosen": chosen, "rejected": rejected, "where": where}
    if kind is not None:
        pair["kind"] = kind.strip()
    return pair


def _pair(line: str, where: str) -> dict:
    record = json_object(line, where)
    missing = [k for k in ("chosen", "rejected") if k not in record]
    if missing:
        raise DataError(f"{where}: no {' or '.join(missing)} field; found keys {sorted(record)}")
    if "messages" in record:
        if "prompt" in record:
            raise DataError(f"{where}: has both messages and prompt; keep one format")
        messages = record["messages"]
    elif "prompt" in record:
        for key in ("prompt", "system"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise DataError(f"{where}: {key} is {type(record[key]).__name__}, not text")
        messages = [{"role": "user", "content": record["prompt"]}]
        if record.get("system") is not None:
            messages.insert(0, {"role": "system", "content": record["system"]})
    else:
        raise DataError(
            f"{where}: expected a prompt or a messages list next to chosen and rejected, "
            f"found keys {sorted(record)}"
        )
    return _checked(messages, record["chosen"], record["rejected"], where, record.get("kind"))


def read_preferences(paths: Sequence[str]) -> list[dict]:
    """Preference pairs from JSONL files (paths or globs; .xz/.gz read as such), in order.

    Each non-blank line is {"prompt", "chosen", "rejected"} with an optional "system", or
    {"messages": [... ending with a user turn], "chosen", "rejected"}, each with an optional
    "kind" (a name for the sort of wrong answer rejected is, e.g. "other_answer", by which
    the DPO evaluation reports its figures); other keys are ignored. A bad line is a
    DataError naming file:line: invalid JSON, a missing or non-text field, a prompt not
    ending with a user turn, an empty answer, chosen equal to rejected up to whitespace, or
    a kind that is not a non-empty string.
    """
    return read_jsonl_records(paths, _pair, "preferences", "preference pairs")


def builtin_preferences(kinds: Sequence[str] = DEFAULT_KINDS, log=None) -> list[dict]:
    """`preferences_from_conversations` of `builtin_conversations()`; "where" is
    "builtin:INDEX" into that list."""
    return preferences_from_conversations(builtin_conversations(), "builtin", kinds, log)


def preferences_from_conversations(
    conversations: Sequence[list[dict]],
    name: str,
    kinds: Sequence[str] = DEFAULT_KINDS,
    log=None,
) -> list[dict]:
    """Pairs where each conversation's true last answer beats a wrong one: one pair of each
    kind in `kinds` per conversation, tagged with it ("kind").

    `other_answer`: another question's answer (the next question in hash order whose
    answer differs). `shuffled`: the true answer's words in an order seeded by the question
    (rotated by one word if the shuffle drew the same order); an answer that no order changes
    (one word, one repeated word) has no such pair,
    and how many are left out so is said in one note through `log`.
    Deterministic; "where" is "NAME:INDEX" into `conversations`, whose last message must
    be the assistant's.
    """
    kinds = check_kinds(kinds, "kinds")
    for i, messages in enumerate(conversations):
        if len(messages) < 2 or (messages[-2]["role"], messages[-1]["role"]) != (
            "user",
            "assistant",
        ):
            raise DataError(f"{name}:{i}: a conversation must end with a user and an answer")
    questions = [question_key(c) for c in conversations]
    answers = [c[-1]["content"] for c in conversations]
    order = sorted(range(len(questions)), key=lambda i: hash_units(questions[i]))
    after = {i: order[(k + 1) % len(order)] for k, i in enumerate(order)}

    def other_answer(i: int) -> str:
        j = after[i]
        while j != i:
            if _normalised(answers[j]) != _normalised(answers[i]):
                return answers[j]
            j = after[j]
        raise DataError(f"every {name} answer is the same text; no wrong answer to pick")

    def shuffled(i: int) -> str | None:
        words = answers[i].split()
        random.Random(f"builtin_preferences:{questions[i]}").shuffle(words)
        if words == answers[i].split():  # the shuffle drew the same order: rotate by one
            words = words[1:] + words[:1]  # the same order again only if all words are equal
        text = " ".join(words)
        return None if text == _normalised(answers[i]) else text

    wrong = {"other_answer": other_answer, "shuffled": shuffled}
    pairs, unshuffled = [], 0
    for i, answer in enumerate(answers):
        for kind in kinds:
            rejected = wrong[kind](i)
            if rejected is None:
                unshuffled += 1
                continue
            pairs.append(_checked(conversations[i][:-1], answer, rejected, f"{name}:{i}", kind))
    if unshuffled and log is not None:
        log(
            f"note: {unshuffled:,} {name} answers read the same shuffled (one word, or one "
            "repeated word): they have no shuffled pair"
        )
    return pairs


def split_builtin_preferences(
    kinds: Sequence[str], validation_fraction: float, log=None
) -> tuple[list[dict], list[dict]]:
    """(train, held-out) built-in pairs as a DPO run reads them: training pairs of `kinds`
    only, held-out pairs of every kind (PAIR_KINDS) whatever the training mix, so each
    evaluation shows the easy and the hard comparison side by side."""
    train, valid = split_preferences(builtin_preferences(PAIR_KINDS, log), validation_fraction)
    return [pair for pair in train if pair["kind"] in kinds], valid


def split_preferences(
    pairs: Sequence[dict], validation_fraction: float
) -> tuple[list[dict], list[dict]]:
    """(train, validation) by the hash `split_conversations` uses: the first user message.

    So a question held out of SFT is held out of DPO too. Independent of list order.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction={validation_fraction} must be in [0, 1), e.g. 0.05")
    train, validation = [], []
    for pair in pairs:
        held_out = hash_units(question_key(pair["messages"]))[0] < validation_fraction
        (validation if held_out else train).append(pair)
    return train, validation


@dataclasses.dataclass(frozen=True, eq=False)
class PackedPreferences(ArrayRows):
    """DPO rows ready for the pipeline, and what packing did to get them.

    The arrays are [num_rows, seq_len], read-only: inputs, targets, segment_ids, positions,
    branch_ids (int32: 0 prompt, 1 chosen, 2 rejected) and weights (float32, 1 on answer
    tokens, `<|end|>` included).
    """

    inputs: np.ndarray
    targets: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    branch_ids: np.ndarray
    weights: np.ndarray
    pad_id: int
    num_pairs: int  # pairs given, including those left out
    too_long: list[str]  # where of each pair longer than a row, left out
    # row positions each given pair needs (prompt once, both answers), in input order
    lengths: tuple[int, ...] = ()
    # With kinds (names), one more field: pair_kinds [num_rows, seq_len] int32, column s-1
    # holding the 1-based index into kinds of segment s's pair (0: no pair), read by the DPO
    # evaluation to report its figures per kind (gptjax.dpo).
    kinds: tuple[str, ...] = ()
    pair_kinds: np.ndarray | None = None

    FIELD_NAMES: ClassVar[tuple[str, ...]] = PREFERENCE_FIELDS

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: getattr(self, k) for k in PREFERENCE_FIELDS}
        if self.kinds:
            arrays["pair_kinds"] = self.pair_kinds
        return arrays

    def overflow_warning(self, what: str) -> str | None:
        """A warning line when over 10% of the pairs were left out for length, naming the
        data.seq_len that fits 95% of them."""
        return overflow_warning(what, self.lengths, self.seq_len, "left out")

    @property
    def num_packed(self) -> int:
        """Pairs in the rows (one segment each)."""
        return self.num_pairs - len(self.too_long)

    def describe(self) -> str:
        """One log line with every count."""
        left_out = f"{len(self.too_long):,} too long for a row, left out"
        if self.too_long:
            named = ", ".join(self.too_long[:_NAMED_TOO_LONG])
            more = ", ..." if len(self.too_long) > _NAMED_TOO_LONG else ""
            left_out += f" (first: {named}{more})"
        return (
            f"{self.num_pairs:,} pairs in {self.num_rows:,} rows of {self.seq_len} tokens "
            f"({self.filled:.0%} filled); {left_out}; {self.trained_tokens:,} response tokens"
        )


def _encode(pair: dict, tokenizer: Tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) ids; each answer as the chat template renders it."""
    prompt = render(tokenizer, pair["messages"], add_generation_prompt=True)[0]
    answers = []
    for text in (pair["chosen"], pair["rejected"]):
        # The full rendering starts with the prompt (chat_template's prefix property), so
        # the rest is the answer's content ids and `<|end|>`, byte-for-byte what SFT saw.
        reply = {"role": "assistant", "content": text}
        answers.append(render(tokenizer, [*pair["messages"], reply])[0][len(prompt) :])
    return prompt, answers[0], answers[1]


def pack_preferences(
    pairs: Sequence[dict],
    tokenizer: Tokenizer,
    seq_len: int,
    kinds: Sequence[str] = (),
    *,
    encode=None,
) -> PackedPreferences:
    """Lay out every pair as one two-branch segment and pack them into rows of seq_len.

    The layout, the too-long policy and the order follow the module docstring. With `kinds`
    (every pair's "kind" among them; UNTAGGED for a pair without one) the rows also carry
    each pair's kind (`PackedPreferences.pair_kinds`). `encode(pair, tokenizer) -> (prompt,
    chosen, rejected)` ids in another format than the chat template's (`gptjax eval
    --template raw`).
    """
    encode = encode or _encode
    if seq_len <= 0:
        raise ConfigError(f"seq_len={seq_len} must be positive")
    if not pairs:
        raise DataError("no preference pairs to pack; the DPO data set is empty")
    kind_ids = {kind: k + 1 for k, kind in enumerate(kinds)}
    examples, too_long, lengths, example_kinds = [], [], [], []
    for index, pair in enumerate(pairs):
        where = pair.get("where") or f"pair {index}"
        kind = pair.get("kind")
        pair = _checked(pair.get("messages"), pair.get("chosen"), pair.get("rejected"), where, kind)
        prompt, chosen, rejected = encode(pair, tokenizer)
        length = len(prompt) - 1 + len(chosen) + len(rejected)
        lengths.append(length)
        if length > seq_len:
            too_long.append(where)
        else:
            examples.append((prompt, chosen, rejected))
            if kinds:
                example_kinds.append(kind_ids[pair.get("kind", UNTAGGED)])
    longest = max(lengths)
    if not examples:
        raise DataError(
            f"none of the {len(pairs):,} preference pairs fits a row of seq_len={seq_len} "
            f"tokens (the longest needs {longest:,}); raise seq_len or shorten the pairs"
        )
    places = _first_fit([len(p) - 1 + len(c) + len(r) for p, c, r in examples], seq_len)
    num_rows = max(row for row, _ in places) + 1
    rows = {k: np.zeros((num_rows, seq_len), np.int32) for k in PREFERENCE_FIELDS[:5]}
    rows["inputs"][:] = rows["targets"][:] = tokenizer.pad_id
    rows["weights"] = np.zeros((num_rows, seq_len), np.float32)
    pair_kinds = np.zeros((num_rows, seq_len), np.int32) if kinds else None
    segments = np.zeros(num_rows, np.int32)
    for index, ((prompt, chosen, rejected), (row, offset)) in enumerate(
        zip(examples, places, strict=True)
    ):
        segments[row] += 1
        if kinds:
            pair_kinds[row, segments[row] - 1] = example_kinds[index]
        p = len(prompt)
        branches = (  # (inputs, targets, first position) of branches 0, 1, 2
            (prompt[:-1], prompt[1:], 0),
            ([prompt[-1], *chosen[:-1]], chosen, p - 1),
            ([prompt[-1], *rejected[:-1]], rejected, p - 1),
        )
        for branch, (inputs, targets, first) in enumerate(branches):
            span = slice(offset, offset + len(targets))
            rows["inputs"][row, span] = inputs
            rows["targets"][row, span] = targets
            rows["segment_ids"][row, span] = segments[row]
            rows["positions"][row, span] = np.arange(first, first + len(targets))
            rows["branch_ids"][row, span] = branch
            rows["weights"][row, span] = float(branch > 0)
            offset += len(targets)
    for array in [*rows.values(), *([pair_kinds] if kinds else [])]:
        array.setflags(write=False)
    return PackedPreferences(
        **rows,
        pad_id=tokenizer.pad_id,
        num_pairs=len(pairs),
        too_long=too_long,
        lengths=tuple(lengths),
        kinds=tuple(kinds),
        pair_kinds=pair_kinds,
    )


def kinds_of(pairs: Sequence[dict]) -> tuple[str, ...]:
    """The kinds of `pairs` in sorted order (UNTAGGED for pairs without one), or () when
    none is tagged: what `pack_preferences` reports the evaluation by."""
    if not any("kind" in pair for pair in pairs):
        return ()
    return tuple(sorted({pair.get("kind", UNTAGGED) for pair in pairs}))
