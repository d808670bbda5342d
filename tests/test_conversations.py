"""SFT data: reading conversations, the built-in instruction set, the split, packing, batches."""

import json
import lzma

import numpy as np
import pytest

from gptjax.data import corpus, pipeline, rows
from gptjax.data.conversations import (
    FIELDS,
    _first_sentence,
    builtin_conversations,
    pack_conversations,
    read_conversations,
    role_order_problem,
    split_conversations,
)
from gptjax.errors import ConfigError, DataError
from gptjax.tokenizer import Tokenizer, train_tokenizer

# Fixed by the tokenizer contract (gptjax.tokenizer), written out: <pad> <s> and the chat ids.
PAD, BOS, USER, ASSISTANT, END = 0, 2, 5, 6, 7


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    docs = corpus.builtin_documents()[::8]
    return train_tokenizer(docs, tmp_path_factory.mktemp("tok"), vocab_size=400)


@pytest.fixture(scope="module")
def builtin() -> list[list[dict]]:
    return builtin_conversations()


def _qa(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _write(path, lines: list) -> str:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    if str(path).endswith(".xz"):
        with lzma.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


# --- reading -----------------------------------------------------------------------------


def test_read_both_formats_xz_and_globs(tmp_path):
    multi = [
        {"role": "system", "content": "Be terse."},
        *_qa("hi", "hello"),
        *_qa("and?", "bye"),
    ]
    _write(
        tmp_path / "a.jsonl",
        [
            {"source": "faq", "prompt": "Why?", "response": "Because."},
            "",
            {"messages": multi, "id": 7},
            {"prompt": "Q", "response": "A", "system": "S"},
        ],
    )
    _write(tmp_path / "b.jsonl.xz", [{"source": "x", "prompt": "compressed?", "response": "yes"}])
    got = read_conversations([str(tmp_path / "*.jsonl*")])
    assert got == [
        _qa("Why?", "Because."),
        multi,
        [{"role": "system", "content": "S"}, *_qa("Q", "A")],
        _qa("compressed?", "yes"),
    ]
    assert read_conversations([str(tmp_path / "b.jsonl.xz")]) == [_qa("compressed?", "yes")]


@pytest.mark.parametrize(
    "bad,match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object, not list"),
        ({"text": "pretraining line"}, "expected"),
        ({"prompt": "only a prompt"}, "expected"),
        ({"prompt": 3, "response": "x"}, "message 0 content is int"),
        ({"prompt": "x", "response": None}, "message 1 content is NoneType"),
        ({"messages": "hi"}, "non-empty list"),
        ({"messages": [{"role": "human", "content": "x"}]}, "role 'human'"),
        ({"messages": _qa("a", "b"), "prompt": "c", "response": "d"}, "both"),
    ],
)
def test_read_names_file_and_line_of_a_bad_line(tmp_path, bad, match):
    path = _write(tmp_path / "chat.jsonl", [{"prompt": "ok", "response": "fine"}, "", bad])
    with pytest.raises(DataError, match=match) as e:
        read_conversations([path])
    assert str(e.value).startswith(f"{path}:3: ") and "\n" not in str(e.value)


def test_read_notes_conversations_whose_turns_do_not_alternate(tmp_path):
    assistant_first = [{"role": "assistant", "content": "Hi, ask me."}, *_qa("x?", "y")]
    two_questions = [{"role": "system", "content": "S"}, *_qa("a", "b"), *_qa("c", "d")]
    two_questions.insert(2, {"role": "user", "content": "and e?"})
    lines = [{"messages": _qa("fine", "yes")}, {"messages": two_questions}]
    path = _write(tmp_path / "chat.jsonl", [*lines, {"messages": assistant_first}])
    notes = []
    got = read_conversations([path], log=notes.append)
    assert got[1] == two_questions and got[2] == assistant_first  # kept as given
    assert notes == [
        f"note: 2 of 3 conversations do not alternate user and assistant turns (first: "
        f"{path}:2: message 2 is 'user' after 'user'); they are trained as given"
    ]
    assert read_conversations([path], log=notes.append)[2:] == [assistant_first]
    ordered = [{"role": "system", "content": "S"}, *_qa("a", "b"), *_qa("c", "d")]
    read_conversations([_write(tmp_path / "ordered.jsonl", [{"messages": ordered}])], notes.append)
    assert len(notes) == 2  # nothing to note about an ordered file


def test_role_order_problem_names_the_first_out_of_place_message():
    assert role_order_problem(_qa("a", "b") + _qa("c", "d")) is None
    assert role_order_problem([{"role": "system", "content": "S"}, *_qa("a", "b")]) is None
    assert role_order_problem(_qa("a", "b")[:1]) is None  # no answer yet: in order
    first = [{"role": "assistant", "content": "Hello"}, *_qa("a", "b")]
    assert role_order_problem(first) == "message 0 is 'assistant', before any user turn"
    twice = [*_qa("a", "b"), {"role": "assistant", "content": "more"}]
    assert role_order_problem(twice) == "message 2 is 'assistant' after 'assistant'"


def test_read_missing_files(tmp_path):
    with pytest.raises(DataError, match="no file matches"):
        read_conversations([str(tmp_path / "*.jsonl")])
    with pytest.raises(DataError, match="not found"):
        read_conversations([str(tmp_path / "missing.jsonl")])
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no conversations"):
        read_conversations([str(tmp_path / "empty.jsonl")])
    (tmp_path / "bad.jsonl.xz").write_bytes(b"not xz data")
    with pytest.raises(DataError, match="bad.jsonl.xz"):
        read_conversations([str(tmp_path / "bad.jsonl.xz")])
    with pytest.raises(ConfigError):
        read_conversations([])


# --- built-in instruction set and split --------------------------------------------------


@pytest.mark.parametrize(
    "doc,sentence",
    [
        ("Return the sum.  Ignores\n  None.", "Return the sum."),
        ("Return the\n    sum of x.\n\nDetails. More.", "Return the sum of x."),
        ("Wrap text, e.g. a paragraph. Then more.", "Wrap text, e.g. a paragraph."),
        ("Summary without a period\n\nDetails here.", None),
        ("Version 3.11 notes", None),
    ],
)
def test_first_sentence(doc, sentence):
    assert _first_sentence(doc) == sentence


def test_builtin_conversations(builtin):
    assert 2000 < len(builtin) < 20000, len(builtin)
    questions = [c[0]["content"] for c in builtin]
    assert len(set(questions)) == len(questions)
    answers = dict(zip(questions, (c[1]["content"] for c in builtin), strict=True))
    assert answers["What does `json.dumps` do?"] == "Serialize ``obj`` to a JSON formatted ``str``."
    assert answers["What does `textwrap.dedent` do?"] == (
        "Remove any common leading whitespace from every line in `text`."
    )
    assert not any("._" in q or "`_" in q for q in questions)
    for conversation in builtin:
        assert [m["role"] for m in conversation] == ["user", "assistant"]
        answer = conversation[1]["content"]
        assert 20 <= len(answer) <= 200 and answer[0].isalpha() and answer.endswith(".")
        assert "  " not in answer and "\n" not in answer
    assert builtin_conversations() == builtin


def test_split_is_disjoint_stable_and_by_question(builtin):
    train, valid = split_conversations(builtin, 0.05)
    assert len(train) + len(valid) == len(builtin)
    assert 0.02 < len(valid) / len(builtin) < 0.08
    asked = {c[0]["content"] for c in train}
    assert asked.isdisjoint(c[0]["content"] for c in valid)
    train2, valid2 = split_conversations(builtin[::-1], 0.05)
    assert valid2 == valid[::-1] and train2 == train[::-1]
    # The same question with another answer or a system prompt lands on the same side.
    q = valid[0][0]["content"]
    variants = [_qa(q, "other"), [{"role": "system", "content": "S"}, *_qa(q, "x")]]
    assert split_conversations(variants, 0.05) == ([], variants)
    assert split_conversations(builtin, 0.0)[1] == []
    with pytest.raises(ConfigError, match="validation_fraction"):
        split_conversations(builtin, 1.0)


# --- packing -----------------------------------------------------------------------------


def _example(tok, q: str, a: str) -> tuple[list[int], list[int]]:
    """(ids, mask) of a one-turn conversation, written out from the template's definition."""
    u, r = tok.encode(q), tok.encode(a)
    return [BOS, USER, *u, END, ASSISTANT, *r, END], [0, 0] + [0] * len(u) + [0, 0] + [1] * (
        len(r) + 1
    )


def test_pack_layout_by_hand(tok):
    texts = [("Hi", "ok"), ("a", "b"), ("What is 2+2?", "4"), ("Hi", "yes")]
    examples = [_example(tok, q, a) for q, a in texts]
    n = [len(ids) - 1 for ids, _ in examples]  # positions each example takes
    seq_len = n[0] + n[1] + n[3] + 1
    assert n[3] + 1 < n[2] <= seq_len  # example 2 does not fit after 0 and 1; example 3 does
    # First fit: 0 and 1 fill row 0, 2 opens row 1, 3 goes back to row 0 (next-fit would not).
    layout = [(0, 0, 1), (0, n[0], 2), (1, 0, 1), (0, n[0] + n[1], 3)]  # (row, start, segment)
    packed = pack_conversations([_qa(q, a) for q, a in texts], tok, seq_len)
    assert (packed.num_rows, packed.seq_len, packed.size) == (2, seq_len, 2 * seq_len)
    expected = {k: np.zeros((2, seq_len), np.int32) for k in FIELDS}
    expected["inputs"][:] = expected["targets"][:] = PAD
    for (ids, mask), (row, start, segment) in zip(examples, layout, strict=True):
        span = slice(start, start + len(ids) - 1)
        expected["inputs"][row, span] = ids[:-1]
        expected["targets"][row, span] = ids[1:]
        expected["weights"][row, span] = mask[1:]
        expected["segment_ids"][row, span] = segment
        expected["positions"][row, span] = range(len(ids) - 1)
    for k in FIELDS:
        np.testing.assert_array_equal(getattr(packed, k), expected[k], err_msg=k)
    assert packed.weights.dtype == np.float32 and packed.inputs.dtype == np.int32
    # Each row ends in padding: segment 0, pad ids, no weight.
    assert packed.segment_ids[0, -1] == 0 and packed.inputs[0, -1] == PAD
    assert (packed.segment_ids[1, n[2] :] == 0).all()
    assert (packed.weights[packed.segment_ids == 0] == 0).all()
    assert packed.trained_tokens == sum(sum(m[1:]) for _, m in examples)
    assert (packed.num_examples, packed.num_truncated, packed.num_without_targets) == (4, 0, 0)
    with pytest.raises(ValueError):
        packed.inputs[0, 0] = 1  # read-only: rows are shared by every batch


def test_pack_truncates_and_counts_examples_without_answers(tok):
    long_answer = _qa("Hi", "a long answer " * 8)
    ids, mask = _example(tok, "Hi", "a long answer " * 8)
    seq_len = len(tok.encode("Hi")) + 8  # cuts inside the answer
    question_only = [{"role": "user", "content": "Hi"}]  # short: not truncated
    long_question = _qa("question " * 20, "never seen")
    packed = pack_conversations([long_answer, question_only, long_question], tok, seq_len)
    assert packed.num_rows == 1
    assert (packed.num_examples, packed.num_truncated, packed.num_without_targets) == (3, 2, 2)
    # The first seq_len+1 tokens are kept: the question and the start of the answer.
    assert packed.inputs[0].tolist() == ids[:seq_len]
    assert packed.targets[0].tolist() == ids[1 : seq_len + 1]
    assert packed.weights[0].tolist() == mask[1 : seq_len + 1]
    assert packed.weights[0].sum() == seq_len - len(tok.encode("Hi")) - 3
    line = packed.describe()
    assert "3 conversations in 1 rows" in line and "2 truncated" in line
    assert "2 without answer tokens" in line and f"{packed.trained_tokens:,} answer tokens" in line
    with pytest.raises(DataError, match="none of the 2 conversations"):
        pack_conversations([question_only, long_question], tok, seq_len)
    with pytest.raises(DataError, match="no conversations"):
        pack_conversations([], tok, seq_len)
    with pytest.raises(ConfigError, match="seq_len"):
        pack_conversations([long_answer], tok, 0)


# --- pipeline ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(tok, builtin):
    return pack_conversations(builtin[:300], tok, 64)


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b) == list(FIELDS)
    for k in FIELDS:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_fields_match_the_pipeline(packed):
    assert FIELDS == rows.FIELDS
    assert list(packed.fields) == list(FIELDS)


@pytest.mark.parametrize("global_batch", [8, 512])  # 512 > num_rows: rows repeat
def test_packed_dataset_matches_numpy_and_resumes(packed, global_batch):
    assert packed.num_rows < 512
    kw = dict(global_batch=global_batch, seed=3)
    from_zero = list(pipeline.train_dataset(packed, **kw).take(4).as_numpy_iterator())
    for step in range(4):
        _same(from_zero[step], pipeline.batch_for_step(packed, step, **kw))
    resumed = next(pipeline.train_dataset(packed, start_step=3, **kw).as_numpy_iterator())
    _same(resumed, from_zero[3])
    assert from_zero[0]["inputs"].shape == (global_batch, packed.seq_len)
    other = pipeline.batch_for_step(packed, 0, global_batch=global_batch, seed=4)
    assert not np.array_equal(other["inputs"], from_zero[0]["inputs"])


def test_packed_processes_split_the_global_batch(packed):
    kw = dict(global_batch=8, seed=1)
    for step in (0, 5):
        whole = pipeline.batch_for_step(packed, step, **kw)
        parts = [
            next(
                pipeline.train_dataset(
                    packed, start_step=step, process_index=i, process_count=2, **kw
                ).as_numpy_iterator()
            )
            for i in range(2)
        ]
        assert parts[0]["inputs"].shape == (4, packed.seq_len)
        _same({k: np.concatenate([p[k] for p in parts]) for k in FIELDS}, whole)


def test_packed_rows_once_per_epoch(packed):
    r = packed.num_rows
    seen = np.concatenate(
        [pipeline.batch_for_step(packed, s, global_batch=r, seed=0)["inputs"] for s in range(2)]
    )
    for epoch in (seen[:r], seen[r:]):
        assert sorted(map(bytes, epoch)) == sorted(map(bytes, packed.inputs))


def test_packed_eval_batches(packed):
    batches = pipeline.eval_batches(packed, batch_size=16)
    assert len(batches) == -(-packed.num_rows // 16)
    _same(batches[0], {k: v[:16] for k, v in packed.arrays.items()})
    last, tail = batches[-1], packed.num_rows % 16 or 16
    np.testing.assert_array_equal(last["inputs"][:tail], packed.inputs[-tail:])
    assert (last["inputs"][tail:] == PAD).all() and (last["targets"][tail:] == PAD).all()
    assert (last["weights"][tail:] == 0).all() and (last["segment_ids"][tail:] == 0).all()
    assert sum(b["weights"].sum() for b in batches) == packed.trained_tokens
    assert len(pipeline.eval_batches(packed, batch_size=16, max_batches=2)) == 2


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(global_batch=0), "positive"),
        (dict(global_batch=6, process_count=4), "divisible"),
        (dict(process_index=2, process_count=2), "process_index"),
        (dict(start_step=-1), "start_step"),
    ],
)
def test_packed_dataset_refuses_bad_arguments(packed, change, match):
    with pytest.raises(ConfigError, match=match):
        pipeline.train_dataset(packed, **(dict(global_batch=8, seed=0) | change))
