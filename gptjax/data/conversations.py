"""Supervised-finetuning data: chat conversations read, split and packed into fixed rows.

A conversation is a list of {"role", "content"} messages (gptjax.chat_template). Packing
renders each with the chat template and lays it out as one language-model example of
`len(ids) - 1` positions: inputs ids[:-1], targets ids[1:], weights loss_mask[1:], so only
answer tokens (and the `<|end|>` closing each answer) carry loss.

Policies, all reported by `PackedConversations.describe()`:
- truncation: an example longer than seq_len+1 tokens keeps its first seq_len+1, i.e. the
  start of the conversation and as much of the answer as fits;
- examples without a trained token (no assistant turn, or truncation cut the whole answer
  away) are left out of the rows, so they cost no compute, and counted;
- order: first-fit in input order; each example goes to the first row with room for it,
  else opens a new row. Every example is one segment (segment ids 1, 2, ... within its
  row, positions from 0), so attention never crosses examples; the tail of a row is
  padding: segment id 0, pad inputs and targets, weight 0.
"""

import dataclasses
import json
import lzma
import re
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
from etils import epath

from gptjax.chat_template import check_messages, render
from gptjax.data.corpus import builtin_docstrings, hash_units
from gptjax.data.files import expand_files, open_compressed
from gptjax.data.row_fit import overflow_warning
from gptjax.data.rows import FIELDS, ArrayRows
from gptjax.errors import ConfigError, DataError
from gptjax.tokenizer import Tokenizer

# Built-in answers outside this many characters are fragments or whole paragraphs.
MIN_ANSWER_CHARS, MAX_ANSWER_CHARS = 20, 200


def read_jsonl_records(paths: Sequence[str] | str, parse_line, what: str, kind: str) -> list:
    """`parse_line(line, "file:LINE")` of every non-blank line of the JSONL files or globs
    (.xz/.gz read as such), in order. A file without records is a DataError; `what` names
    the files ("conversations"), `kind` their records ("conversations", "preference pairs")."""
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise ConfigError(f"no {what} file given; name at least one .jsonl path or glob")
    records = []
    for pattern in paths:
        for path in expand_files(str(pattern), what):
            before = len(records)
            for number, line in _lines(path):
                records.append(parse_line(line, f"{path}:{number}"))
            if len(records) == before:
                raise DataError(f"{path} holds no {kind}; remove it or add lines")
    return records


def _lines(path: epath.Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line; .xz/.lzma/.gz decompressed."""
    try:
        with open_compressed(path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: not UTF-8 ({e.reason})") from None
                if line.strip():
                    yield number, line
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"cannot read {path} ({e}); the file is damaged or truncated") from None


def json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict; DataError naming `where` (file:line) otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg}); fix or remove that line") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: a line must be a JSON object, not {type(record).__name__}")
    return record


def _conversation(line: str, where: str) -> list[dict]:
    record = json_object(line, where)
    if "messages" in record:
        if "prompt" in record or "response" in record:
            raise DataError(f"{where}: has both messages and prompt/response; keep one format")
        messages = record["messages"]
    elif "prompt" in record and "response" in record:
        messages = [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["response"]},
        ]
        if record.get("system") is not None:
            messages.insert(0, {"role": "system", "content": record["system"]})
    else:
        raise DataError(
            f"{where}: expected a messages list or prompt and response fields, found keys "
            f"{sorted(record)}"
        )
    return check_messages(messages, where)


def read_conversations(paths: Sequence[str], log=print) -> list[list[dict]]:
    """Conversations from JSONL files (paths or globs; .xz/.gz read as such), in order.

    Each non-blank line is {"messages": [{"role", "content"}, ...]} or {"prompt", "response"}
    with an optional "system"; other keys ("source", ...) are ignored. A bad line is a
    DataError naming file:line. Conversations whose turns do not alternate user, assistant,
    ... are kept as given (an assistant's greeting first, a question in two messages: a user
    may mean them) and counted in one note passed to `log`.
    """
    unordered: list[str] = []

    def parse(line: str, where: str) -> list[dict]:
        messages = _conversation(line, where)
        if problem := role_order_problem(messages):
            unordered.append(f"{where}: {problem}")
        return messages

    conversations = read_jsonl_records(paths, parse, "conversations", "conversations")
    if unordered:
        log(
            f"note: {len(unordered):,} of {len(conversations):,} conversations do not "
            f"alternate user and assistant turns (first: {unordered[0]}); they are trained "
            "as given"
        )
    return conversations


def role_order_problem(messages: list[dict]) -> str | None:
    """How `messages` (after an optional system message) break the order user, assistant,
    user, ...; None when they keep it."""
    turns = [m["role"] for m in messages if m["role"] != "system"]
    for i, role in enumerate(turns):
        expected = ("user", "assistant")[i % 2]
        if role != expected:
            number = i + len(messages) - len(turns)  # as the file counts, system included
            if i == 0:
                return f"message {number} is {role!r}, before any user turn"
            return f"message {number} is {role!r} after {turns[i - 1]!r}"
    return None


def _first_sentence(doc: str) -> str | None:
    """The first sentence of the first paragraph, whitespace collapsed; None if it has none.

    A sentence ends at ". " or at a "." ending the paragraph. "e.g. " and "i.e. " never end
    one (cutting there would leave "Return x, e.g." as an answer).
    """
    paragraph = " ".join(re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0].split())
    for match in re.finditer(r"\. |\.$", paragraph):
        if not paragraph[: match.start() + 1].endswith(("e.g.", "i.e.")):
            return paragraph[: match.start() + 1]
    return None


def builtin_conversations() -> list[list[dict]]:
    """Questions "What does `NAME` do?" answered by the first sentence of NAME's docstring.

    Derived from `builtin_docstrings()`: names with a component starting with "_" are skipped,
    answers are kept when MIN_ANSWER_CHARS..MAX_ANSWER_CHARS long and starting with a letter,
    and each question is asked once (its first docstring wins). Deterministic.
    """
    seen: set[str] = set()
    conversations = []
    for name, doc in builtin_docstrings():
        if any(part.startswith("_") for part in name.split(".")):
            continue
        question = f"What does `{name}` do?"
        answer = _first_sentence(doc)
        if question in seen or answer is None:
            continue
        if not (MIN_ANSWER_CHARS <= len(answer) <= MAX_ANSWER_CHARS and answer[0].isalpha()):
            continue
        seen.add(question)
        conversations.append(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        )
    return conversations


def question_key(conversation: list[dict]) -> str:
    """The first user message (the first non-system one if there is no user turn)."""
    for roles in (("user",), ("user", "assistant")):
        for message in conversation:
            if message["role"] in roles:
                return message["content"]
    raise DataError("conversation has only a system message; add a user turn")


def split_conversations(
    conversations: Sequence[list[dict]], validation_fraction: float
) -> tuple[list[list[dict]], list[list[dict]]]:
    """(train, validation), decided by a hash of each conversation's first user message.

    Independent of list order, and the same question always lands on the same side, so a
    validation question is never trained on, even under another system prompt or answer.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction={validation_fraction} must be in [0, 1), e.g. 0.05")
    train, validation = [], []
    for conversation in conversations:
        held_out = hash_units(question_key(conversation))[0] < validation_fraction
        (validation if held_out else train).append(conversation)
    return train, validation


@dataclasses.dataclass(frozen=True, eq=False)
class PackedConversations(ArrayRows):
    """SFT rows ready for the pipeline, and what packing did to get them.

    The arrays are [num_rows, seq_len], read-only: inputs, targets, segment_ids, positions
    (int32) and weights (float32, 1 on answer tokens and the `<|end|>` closing an answer).
    """

    inputs: np.ndarray
    targets: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    weights: np.ndarray
    pad_id: int
    num_examples: int  # conversations given, including those left out
    num_truncated: int  # cut to their first seq_len+1 tokens
    num_without_targets: int  # no trained token (none to begin with, or cut away): left out
    # row positions each conversation needs whole (its rendered length - 1), in input order
    lengths: tuple[int, ...] = ()

    FIELD_NAMES: ClassVar[tuple[str, ...]] = FIELDS

    def overflow_warning(self, what: str) -> str | None:
        """A warning line when over 10% of the conversations were cut to fit a row (or left
        out with no answer token left), naming the data.seq_len that fits 95% whole."""
        return overflow_warning(what, self.lengths, self.seq_len, "truncated to fit")

    def describe(self) -> str:
        """One log line with every count."""
        return (
            f"{self.num_examples:,} conversations in {self.num_rows:,} rows of {self.seq_len} "
            f"tokens ({self.filled:.0%} filled); {self.num_truncated:,} truncated to fit; "
            f"{self.num_without_targets:,} without answer tokens (left out); "
            f"{self.trained_tokens:,} answer tokens"
        )


def _first_fit(lengths: Sequence[int], seq_len: int) -> list[tuple[int, int]]:
    """(row, offset) of each example: the first row with room for it, else a new row."""
    used = np.zeros(max(len(lengths), 1), np.int64)  # tokens taken per row; never > examples
    num_rows = 0
    places = []
    for n in lengths:
        fits = used[:num_rows] <= seq_len - n
        row = int(fits.argmax()) if num_rows and fits.any() else num_rows
        num_rows = max(num_rows, row + 1)
        places.append((row, int(used[row])))
        used[row] += n
    return places


def pack_conversations(
    conversations: Sequence[list[dict]], tokenizer: Tokenizer, seq_len: int, *, render_fn=render
) -> PackedConversations:
    """Render every conversation with the chat template and pack them into rows of seq_len.

    Truncation, examples without targets and the packing order follow the module docstring.
    `render_fn(tokenizer, messages) -> (ids, mask)` is another format's rendering
    (`gptjax.raw_template.render_raw` scores a base model in the text it was trained on).
    """
    if seq_len <= 0:
        raise ConfigError(f"seq_len={seq_len} must be positive")
    if not conversations:
        raise DataError("no conversations to pack; the SFT data set is empty")
    examples, truncated, without, lengths = [], 0, 0, []
    for conversation in conversations:
        ids, mask = render_fn(tokenizer, conversation)
        lengths.append(len(ids) - 1)
        if len(ids) > seq_len + 1:
            ids, mask = ids[: seq_len + 1], mask[: seq_len + 1]
            truncated += 1
        if not any(mask[1:]):
            without += 1
            continue
        examples.append((ids, mask))
    if not examples:
        raise DataError(
            f"none of the {len(conversations):,} conversations has an answer token to train on "
            f"({truncated:,} truncated to seq_len+1={seq_len + 1} tokens); add assistant turns "
            "or raise seq_len"
        )
    places = _first_fit([len(ids) - 1 for ids, _ in examples], seq_len)
    num_rows = max(row for row, _ in places) + 1
    rows = {k: np.zeros((num_rows, seq_len), np.int32) for k in FIELDS[:4]}
    rows["inputs"][:] = rows["targets"][:] = tokenizer.pad_id
    rows["weights"] = np.zeros((num_rows, seq_len), np.float32)
    segments = np.zeros(num_rows, np.int32)
    for (ids, mask), (row, offset) in zip(examples, places, strict=True):
        span = slice(offset, offset + len(ids) - 1)
        segments[row] += 1
        rows["inputs"][row, span] = ids[:-1]
        rows["targets"][row, span] = ids[1:]
        rows["segment_ids"][row, span] = segments[row]
        rows["positions"][row, span] = np.arange(len(ids) - 1)
        rows["weights"][row, span] = mask[1:]
    for array in rows.values():
        array.setflags(write=False)
    return PackedConversations(
        **rows,
        pad_id=tokenizer.pad_id,
        num_examples=len(conversations),
        num_truncated=truncated,
        num_without_targets=without,
        lengths=tuple(lengths),
    )
