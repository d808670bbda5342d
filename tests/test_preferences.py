"""DPO data: reading preference pairs, the built-in pairs, the split, packing, batches."""

import json
import lzma

import numpy as np
import pytest

from gptjax.chat_template import end_of_turn_id, role_id
from gptjax.data import corpus, pipeline, rows
from gptjax.data.conversations import builtin_conversations, split_conversations
from gptjax.data.preferences import (
    PREFERENCE_FIELDS,
    builtin_preferences,
    kinds_of,
    pack_preferences,
    preferences_from_conversations,
    read_preferences,
    split_builtin_preferences,
    split_preferences,
)
from gptjax.data.row_fit import length_to_keep, overflow_warning
from gptjax.errors import ConfigError, DataError
from gptjax.pair_kinds import PAIR_KINDS
from gptjax.tokenizer import Tokenizer, train_tokenizer

# Fixed by the tokenizer contract (gptjax.tokenizer), written out: <pad> <s> and the chat ids.
PAD, BOS, SYSTEM, USER, ASSISTANT, END = 0, 2, 4, 5, 6, 7


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    docs = corpus.builtin_documents()[::8]
    tok = train_tokenizer(docs, tmp_path_factory.mktemp("tok"), vocab_size=400)
    roles = [role_id(tok, r) for r in ("system", "user", "assistant")]
    assert (tok.pad_id, tok.bos_id, *roles, end_of_turn_id(tok)) == (PAD, BOS, SYSTEM, USER, 6, END)
    return tok


@pytest.fixture(scope="module")
def builtin() -> list[dict]:
    return builtin_preferences()


def _user(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


def _pair(q: str, chosen: str, rejected: str, where: str = "") -> dict:
    return {"messages": _user(q), "chosen": chosen, "rejected": rejected, "where": where}


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
    chat = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
    ]
    a = _write(
        tmp_path / "a.jsonl",
        [
            {"source": "x", "prompt": "Why?", "chosen": "Because.", "rejected": "No."},
            "",
            {"messages": chat, "chosen": "bye", "rejected": "what", "id": 7},
            {"prompt": "Q", "system": "S", "chosen": "A", "rejected": "B"},
            {"prompt": "Q2", "system": None, "chosen": "A", "rejected": "B", "kind": " hard "},
        ],
    )
    b = _write(tmp_path / "b.jsonl.xz", [{"prompt": "xz?", "chosen": "yes", "rejected": "no"}])
    got = read_preferences([str(tmp_path / "*.jsonl*")])
    assert got == [
        {"messages": _user("Why?"), "chosen": "Because.", "rejected": "No.", "where": f"{a}:1"},
        {"messages": chat, "chosen": "bye", "rejected": "what", "where": f"{a}:3"},
        {
            "messages": [{"role": "system", "content": "S"}, *_user("Q")],
            "chosen": "A",
            "rejected": "B",
            "where": f"{a}:4",
        },
        {"messages": _user("Q2"), "chosen": "A", "rejected": "B", "where": f"{a}:5"}
        | {"kind": "hard"},
        {"messages": _user("xz?"), "chosen": "yes", "rejected": "no", "where": f"{b}:1"},
    ]
    assert read_preferences(b) == got[-1:]


_ENDS_WITH_ANSWER = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize(
    "bad,match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object, not list"),
        ({"prompt": "q", "rejected": "r"}, "no chosen field"),
        ({"prompt": "q"}, "no chosen or rejected field"),
        ({"text": "q", "chosen": "c", "rejected": "r"}, "expected a prompt or a messages"),
        ({"prompt": 3, "chosen": "c", "rejected": "r"}, "prompt is int, not text"),
        ({"prompt": "q", "system": ["s"], "chosen": "c", "rejected": "r"}, "system is list"),
        ({"prompt": "q", "chosen": None, "rejected": "r"}, "chosen is NoneType, not text"),
        ({"prompt": "q", "chosen": "c", "rejected": 1}, "rejected is int, not text"),
        ({"prompt": "q", "chosen": " \n", "rejected": "r"}, "chosen is empty"),
        ({"prompt": "q", "chosen": "c", "rejected": ""}, "rejected is empty"),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, "the same text"),
        ({"prompt": "q", "chosen": "a  b\n", "rejected": " a b"}, "the same text"),
        ({"messages": "hi", "chosen": "c", "rejected": "r"}, "non-empty list"),
        ({"messages": _ENDS_WITH_ANSWER, "chosen": "c", "rejected": "r"}, "assistant turn"),
        ({"messages": [{"role": "bot", "content": "x"}], "chosen": "c", "rejected": "r"}, "bot"),
        ({"messages": _user("q"), "prompt": "q", "chosen": "c", "rejected": "r"}, "both"),
        ({"prompt": "q", "chosen": "c", "rejected": "r", "kind": 3}, "non-empty string, got 3"),
        ({"prompt": "q", "chosen": "c", "rejected": "r", "kind": " "}, 'non-empty string, got " "'),
    ],
)
def test_read_names_file_and_line_of_a_bad_line(tmp_path, bad, match):
    ok = {"prompt": "ok", "chosen": "fine", "rejected": "bad"}
    path = _write(tmp_path / "prefs.jsonl", [ok, "", bad])
    with pytest.raises(DataError, match=match) as e:
        read_preferences([path])
    assert str(e.value).startswith(f"{path}:3: ") and "\n" not in str(e.value)
    assert e.value.exit_code == 65


def test_read_missing_files(tmp_path):
    with pytest.raises(DataError, match="no file matches"):
        read_preferences([str(tmp_path / "*.jsonl")])
    with pytest.raises(DataError, match="not found"):
        read_preferences([str(tmp_path / "missing.jsonl")])
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no preference pairs"):
        read_preferences([str(tmp_path / "empty.jsonl")])
    (tmp_path / "bad.jsonl.xz").write_bytes(b"not xz data")
    with pytest.raises(DataError, match="bad.jsonl.xz"):
        read_preferences([str(tmp_path / "bad.jsonl.xz")])
    with pytest.raises(ConfigError):
        read_preferences([])


# --- built-in pairs and split ------------------------------------------------------------


def test_builtin_preferences(builtin):
    """By default one pair per question, tagged other_answer: another question's true answer."""
    conversations = builtin_conversations()
    assert len(builtin) == len(conversations)
    answers = [c[1]["content"] for c in conversations]
    for i, (pair, conversation) in enumerate(zip(builtin, conversations, strict=True)):
        assert pair["where"] == f"builtin:{i}" and pair["kind"] == "other_answer"
        assert pair["messages"] == conversation[:1] and pair["chosen"] == answers[i]
        assert pair["rejected"] in answers and pair["rejected"].split() != pair["chosen"].split()
    q = "What does `json.dumps` do?"
    dumps = next(p for p in builtin if p["messages"][0]["content"] == q)
    assert dumps["chosen"] == "Serialize ``obj`` to a JSON formatted ``str``."
    assert builtin_preferences() == builtin


def test_builtin_preferences_of_both_kinds_and_unshufflable_answers():
    notes = []
    both = builtin_preferences(PAIR_KINDS, log=notes.append)
    shuffled = [p for p in both if p["kind"] == "shuffled"]
    others = [p for p in both if p["kind"] == "other_answer"]
    assert others == builtin_preferences()  # the same hard pairs, whatever else is asked
    for pair in shuffled:
        assert sorted(pair["rejected"].split()) == sorted(pair["chosen"].split())
        assert pair["rejected"].split() != pair["chosen"].split()
    # Answers that read the same shuffled have no shuffled pair, and the note counts them.
    missing = len(others) - len(shuffled)
    assert notes == [] if missing == 0 else len(notes) == 1 and f"{missing:,} builtin" in notes[0]
    one_word = [[*_user("q1"), {"role": "assistant", "content": "Yes."}]]
    one_word.append([*_user("q2"), {"role": "assistant", "content": "No, never."}])
    notes.clear()
    pairs = preferences_from_conversations(one_word, "x", ("shuffled",), log=notes.append)
    assert (
        [p["where"] for p in pairs] == ["x:1"]
        and len(notes) == 1
        and notes[0].startswith("note: 1 x answers")
    )
    with pytest.raises(ConfigError, match="other_answer, shuffled"):
        preferences_from_conversations(one_word, "x", ("worse",))


def test_split_holds_out_the_questions_sft_holds_out(builtin):
    train, valid = split_preferences(builtin, 0.05)
    assert len(train) + len(valid) == len(builtin) and 0.02 < len(valid) / len(builtin) < 0.08
    sft_valid = split_conversations(builtin_conversations(), 0.05)[1]
    assert [p["messages"][0]["content"] for p in valid] == [c[0]["content"] for c in sft_valid]
    train2, valid2 = split_preferences(builtin[::-1], 0.05)
    assert valid2 == valid[::-1] and train2 == train[::-1]
    # A system prompt or an earlier turn does not move a question: the first user message decides.
    q = valid[0]["messages"][0]["content"]
    system = {"role": "system", "content": "S"}
    variants = [_pair(q, "a", "b"), {**_pair(q, "c", "d"), "messages": [system, *_user(q)]}]
    assert split_preferences(variants, 0.05) == ([], variants)
    assert split_preferences(builtin, 0.0)[1] == []
    with pytest.raises(ConfigError, match="validation_fraction"):
        split_preferences(builtin, 1.0)


# --- packing -----------------------------------------------------------------------------


def test_layout_of_one_pair_by_hand(tok):
    u, c, r = tok.encode("Hi"), tok.encode("ok") + [END], tok.encode("no way") + [END]
    prompt = [BOS, USER, *u, END, ASSISTANT]
    n = len(prompt) - 1 + len(c) + len(r)
    pad = 3
    packed = pack_preferences([_pair("Hi", "ok", "no way", "f:1")], tok, n + pad)
    assert (packed.num_rows, packed.seq_len, packed.size) == (1, n + pad, n + pad)
    p = len(prompt)
    expected = {
        "inputs": prompt[:-1] + [ASSISTANT, *c[:-1]] + [ASSISTANT, *r[:-1]] + [PAD] * pad,
        "targets": prompt[1:] + c + r + [PAD] * pad,
        "segment_ids": [1] * n + [0] * pad,
        "positions": [*range(p - 1), *range(p - 1, p - 1 + len(c))]
        + [*range(p - 1, p - 1 + len(r)), *[0] * pad],
        "branch_ids": [0] * (p - 1) + [1] * len(c) + [2] * len(r) + [0] * pad,
        "weights": [0] * (p - 1) + [1] * (len(c) + len(r)) + [0] * pad,
    }
    assert list(packed.fields) == list(PREFERENCE_FIELDS)
    for k in PREFERENCE_FIELDS:
        assert packed.arrays[k][0].tolist() == expected[k], k
        assert packed.arrays[k].dtype == (np.float32 if k == "weights" else np.int32), k
    assert packed.trained_tokens == len(c) + len(r) == 3 + 7
    assert (packed.num_pairs, packed.num_packed, packed.too_long) == (1, 1, [])
    with pytest.raises(ValueError):
        packed.branch_ids[0, 0] = 1  # read-only: rows are shared by every batch


def test_prompt_of_a_conversation_and_chat_symbols_in_answers(tok):
    s, u1, a1, u2 = (tok.encode(t) for t in ("Be terse.", "Hi", "ok", "a"))
    chat = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "a"},
    ]
    prompt = [BOS, SYSTEM, *s, END, USER, *u1, END, ASSISTANT, *a1, END, USER, *u2, END, ASSISTANT]
    # A literal "<|end|>" in an answer is text (byte pieces), never the token that ends it.
    pair = {"messages": chat, "chosen": "b", "rejected": "x <|end|> y"}
    packed = pack_preferences([pair], tok, 64)
    branches = np.where(packed.segment_ids[0] == 1, packed.branch_ids[0], -1)  # -1: padding
    assert packed.inputs[0][branches == 0].tolist() == prompt[:-1]
    assert packed.targets[0][branches == 1].tolist() == tok.encode("b") + [END]
    rejected = packed.targets[0][branches == 2].tolist()
    assert rejected[-1] == END and END not in rejected[:-1]
    assert tok.decode(rejected[:-1]) == "x <|end|> y"


def _hand_layout(tok, q: str, chosen: str, rejected: str) -> dict[str, list[int]]:
    """One pair's fields, written out from the layout's definition."""
    prompt = [BOS, USER, *tok.encode(q), END, ASSISTANT]
    c, r = tok.encode(chosen) + [END], tok.encode(rejected) + [END]
    p = len(prompt)
    return {
        "inputs": prompt[:-1] + [ASSISTANT, *c[:-1], ASSISTANT, *r[:-1]],
        "targets": prompt[1:] + c + r,
        "positions": [*range(p - 1), *range(p - 1, p - 1 + len(c)), *range(p - 1, p - 1 + len(r))],
        "branch_ids": [0] * (p - 1) + [1] * len(c) + [2] * len(r),
        "weights": [0] * (p - 1) + [1] * (len(c) + len(r)),
    }


def test_pairs_share_rows_first_fit(tok):
    texts = [
        ("Hi", "ok", "no"),
        ("a", "b", "c"),
        ("What is 2+2?", "It is 4.", "It is 5."),
        ("Hi", "yes", "nope"),
    ]
    hand = [_hand_layout(tok, *t) for t in texts]
    n = [len(h["inputs"]) for h in hand]
    seq_len = n[0] + n[1] + n[3] + 1
    assert n[3] + 1 < n[2] <= seq_len  # pair 2 does not fit after 0 and 1; pair 3 does
    # First fit: 0 and 1 fill row 0, 2 opens row 1, 3 goes back to row 0 as segment 3.
    layout = [(0, 0, 1), (0, n[0], 2), (1, 0, 1), (0, n[0] + n[1], 3)]  # (row, start, segment)
    packed = pack_preferences([_pair(*t) for t in texts], tok, seq_len)
    assert packed.num_rows == 2
    expected = {k: np.zeros((2, seq_len), np.int32) for k in PREFERENCE_FIELDS}
    expected["inputs"][:] = expected["targets"][:] = PAD
    for h, (row, start, segment) in zip(hand, layout, strict=True):
        span = slice(start, start + len(h["inputs"]))
        for k, v in h.items():
            expected[k][row, span] = v
        expected["segment_ids"][row, span] = segment
    for k in PREFERENCE_FIELDS:
        np.testing.assert_array_equal(packed.arrays[k], expected[k], err_msg=k)
    assert packed.segment_ids[0, -1] == 0 and packed.weights[0, -1] == 0


def test_too_long_pairs_are_left_out_and_named(tok):
    short = _hand_layout(tok, "Hi", "ok", "no")
    seq_len = len(short["inputs"]) * 2 + 1
    long_answer = "a long answer " * 8
    pairs = [
        _pair("Hi", "ok", "no", "a.jsonl:1"),
        _pair("Hi", long_answer, "no", "a.jsonl:2"),  # never truncated, even by one answer
        _pair("Hi", "ok", "no", "a.jsonl:3"),
        _pair("Hi", "no", long_answer, "a.jsonl:4"),
    ]
    packed = pack_preferences(pairs, tok, seq_len)
    assert packed.num_rows == 1 and packed.too_long == ["a.jsonl:2", "a.jsonl:4"]
    assert (packed.num_pairs, packed.num_packed) == (4, 2)
    assert packed.segment_ids[0].tolist() == [1] * len(short["inputs"]) + [2] * len(
        short["inputs"]
    ) + [0]
    trained = 2 * sum(short["weights"])
    filled = 2 * len(short["inputs"]) / seq_len
    assert packed.describe() == (
        f"4 pairs in 1 rows of {seq_len} tokens ({filled:.0%} filled); 2 too long for a row, "
        f"left out (first: a.jsonl:2, a.jsonl:4); {trained} response tokens"
    )
    many = pack_preferences([pairs[0]] + [pairs[1]] * 4, tok, seq_len).describe()
    assert "4 too long for a row, left out (first: a.jsonl:2, a.jsonl:2, a.jsonl:2, ...)" in many
    assert "0 too long for a row, left out;" in pack_preferences(pairs[:1], tok, 64).describe()
    longest = len(_hand_layout(tok, "Hi", long_answer, "no")["inputs"])
    with pytest.raises(DataError, match=f"none of the 2 .*seq_len={seq_len} .*needs {longest}"):
        pack_preferences([pairs[1], pairs[3]], tok, seq_len)
    with pytest.raises(DataError, match="no preference pairs"):
        pack_preferences([], tok, seq_len)
    with pytest.raises(ConfigError, match="seq_len"):
        pack_preferences(pairs, tok, 0)
    with pytest.raises(DataError, match="^x:9: chosen and rejected are the same"):
        pack_preferences([_pair("Hi", "same", "same", "x:9")], tok, seq_len)


# --- pipeline ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(tok, builtin):
    return pack_preferences(builtin[:120], tok, 512)


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b) == list(PREFERENCE_FIELDS)
    for k in PREFERENCE_FIELDS:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_fields_extend_the_pipeline_fields():
    assert [k for k in PREFERENCE_FIELDS if k != "branch_ids"] == list(rows.FIELDS)


def test_dataset_matches_numpy_and_resumes(packed):
    assert packed.num_rows > 8 and packed.num_packed == 120
    kw = dict(global_batch=8, seed=3)
    from_zero = list(pipeline.train_dataset(packed, **kw).take(3).as_numpy_iterator())
    for step in range(3):
        _same(from_zero[step], pipeline.batch_for_step(packed, step, **kw))
    resumed = pipeline.train_dataset(packed, start_step=2, **kw)
    _same(next(resumed.as_numpy_iterator()), from_zero[2])
    assert from_zero[0]["branch_ids"].shape == (8, packed.seq_len)
    assert set(np.unique(from_zero[0]["branch_ids"])) == {0, 1, 2}
    with pytest.raises(ConfigError, match="packed rows"):
        pipeline.batch_for_step(object(), 0, **kw)


def test_eval_batches_pad_with_weightless_rows(packed):
    batches = pipeline.eval_batches(packed, batch_size=16)
    assert len(batches) == -(-packed.num_rows // 16)
    _same(batches[0], {k: v[:16] for k, v in packed.arrays.items()})
    last, tail = batches[-1], packed.num_rows % 16 or 16
    assert tail < 16, "the test needs a padded last batch"
    np.testing.assert_array_equal(last["branch_ids"][:tail], packed.branch_ids[-tail:])
    assert (last["inputs"][tail:] == PAD).all() and (last["weights"][tail:] == 0).all()
    assert (last["segment_ids"][tail:] == 0).all() and (last["branch_ids"][tail:] == 0).all()
    assert sum(b["weights"].sum() for b in batches) == packed.trained_tokens


def test_tagged_pairs_carry_their_kind_per_segment_and_long_pairs_warn(tok):
    pairs = [
        {**_pair("Why?", "Because.", "No."), "kind": "shuffled"},
        _pair("How?", "Like so.", "Unlike."),
        {**_pair("Who?", "Me.", "You. " * 40), "kind": "other_answer"},  # too long for 32
        {**_pair("When?", "Now.", "Later."), "kind": "other_answer"},
    ]
    kinds = kinds_of(pairs)
    assert kinds == ("other_answer", "shuffled", "untagged") and kinds_of(pairs[1:2]) == ()
    packed = pack_preferences(pairs, tok, 32, kinds)
    segment_kinds = {}
    for row in range(packed.num_rows):
        for s in range(1, packed.segment_ids[row].max() + 1):
            segment_kinds[(row, s)] = packed.pair_kinds[row, s - 1]
        assert not packed.pair_kinds[row, packed.segment_ids[row].max() :].any()
    assert sorted(segment_kinds.values()) == [1, 2, 3]  # the too-long pair is left out
    assert "pair_kinds" in packed.arrays and packed.padding(1)["pair_kinds"].sum() == 0
    assert "pair_kinds" not in pack_preferences(pairs, tok, 32).arrays
    # 1 of 4 pairs (25%) left out: over the 10% share, the warning names the seq_len for 95%.
    warning = packed.overflow_warning("DPO train pairs")
    longest = max(packed.lengths)
    assert warning == (
        "warning: 25% of the DPO train pairs (1 of 4) are longer than data.seq_len=32 tokens "
        f"and left out; data.seq_len={longest} would fit 95% of them"
    )
    assert pack_preferences(pairs, tok, longest).overflow_warning("x") is None


def test_length_to_keep_and_the_warning_share():
    assert length_to_keep(list(range(1, 101))) == 95 and length_to_keep([7]) == 7
    assert overflow_warning("pairs", [10] * 90 + [50] * 10, 20, "left out") is None  # 10%
    assert "11% of the pairs (11 of 100)" in overflow_warning(
        "pairs", [10] * 89 + [50] * 11, 20, "left out"
    )


def test_make_preferences_tags_each_pair_with_its_kind(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "make_preferences.py"
    spec = importlib.util.spec_from_file_location("make_preferences", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    source = _write(
        tmp_path / "chats.jsonl",
        [
            {"prompt": "What is a?", "response": "The first letter of it."},
            {"prompt": "What is b?", "response": "The second letter here."},
            {"prompt": "What is c?", "response": "Yes."},  # one word: no shuffled pair
        ],
    )
    out = tmp_path / "prefs.jsonl"
    assert tool.main([source, "--out", str(out)]) == 0
    default = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in default] == ["other_answer"] * 3
    assert tool.main([source, "--out", str(out), "--kinds", "other_answer,shuffled"]) == 0
    both = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in both] == ["other_answer", "shuffled"] * 2 + ["other_answer"]
    assert "1 input answers read the same shuffled" in capsys.readouterr().err
    assert read_preferences([str(out)])[1]["kind"] == "shuffled"  # what training reads back
    assert tool.main([source, "--out", str(out), "--kinds", "easy"]) == 2


def test_builtin_split_trains_on_its_kinds_and_holds_out_every_kind():
    train, valid = split_builtin_preferences(("other_answer",), 0.05)
    assert {p["kind"] for p in train} == {"other_answer"}
    assert {p["kind"] for p in valid} == set(PAIR_KINDS)
    assert train == split_preferences(builtin_preferences(), 0.05)[0]  # the default pairs
    both_train, both_valid = split_builtin_preferences(PAIR_KINDS, 0.05)
    assert both_valid == valid and len(both_train) > 1.9 * len(train)
