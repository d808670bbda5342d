"""Built-in corpus, tokenizer and the stateless tf.data pipeline."""

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from gptjax.data import corpus
from gptjax.data.pipeline import batch_for_step, eval_batches, train_dataset
from gptjax.data.rows import FIELDS
from gptjax.data.token_rows import TokenRows, encode_documents, pack_rows
from gptjax.errors import ConfigError, DataError
from gptjax.tokenizer import (
    CHAT_TOKENS,
    Tokenizer,
    check_vocab,
    load_tokenizer,
    tokenizer_from_bytes,
    train_tokenizer,
    unigram_entropy,
)

BOS, PAD = 2, 0


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return corpus.builtin_documents()


@pytest.fixture(scope="module")
def tok_dir(docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(docs[::8], out, vocab_size=400)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir) -> Tokenizer:
    return load_tokenizer(tok_dir)


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b) == set(FIELDS)
    for k in FIELDS:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --- built-in corpus ---------------------------------------------------------------------


def test_builtin_corpus_size_and_content(docs):
    total = sum(len(d) for d in docs)
    assert 1_000_000 < total < 5_000_000, total
    assert len(docs) > 200
    assert min(len(d) for d in docs) >= corpus.MIN_DOCUMENT_CHARS
    assert len(set(docs)) == len(docs)
    assert any(d.startswith('The "assert" statement') for d in docs)  # a pydoc topic
    names = dict(corpus.builtin_docstrings())
    assert names["json.dumps"].startswith("Serialize ``obj`` to a JSON formatted ``str``")
    assert "json.encoder.JSONEncoder.encode" in names
    assert not any(n.startswith(("tkinter", "idlelib", "test.", "lib2to3")) for n in names)


def test_builtin_corpus_is_deterministic(docs):
    files = corpus._source_files(corpus._stdlib_dir())
    assert files == sorted(files, key=lambda p: p.as_posix())
    # Parse everything again from scratch: the same text comes out.
    corpus._stdlib_modules.cache_clear()
    corpus._builtin_documents.cache_clear()
    assert corpus.builtin_documents() == docs


def test_split_is_deterministic_disjoint_and_order_independent(docs):
    train, val = corpus.split_documents(docs, 0.1)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(docs)
    assert 0.03 < len(val) / len(docs) < 0.2
    train2, val2 = corpus.split_documents(list(reversed(docs)), 0.1)
    assert set(train2) == set(train) and set(val2) == set(val)
    assert corpus.split_documents(docs[:50], 0.1)[1] == [d for d in docs[:50] if d in set(val)]
    assert corpus.split_documents(docs, 0.0)[1] == []
    with pytest.raises(ConfigError):
        corpus.split_documents(docs, 1.5)


# --- tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["naïve café ✓", "def f(x):\n    return  x\n\n\tdone  ", "  leading\n", "日本語 🙂", ""],
)
def test_tokenizer_round_trips(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_tokenizer_special_ids_and_files(tok, tok_dir):
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3)
    assert [tok.token_id(p) for p in ("<pad>", "<unk>", "<s>", "</s>")] == [0, 1, 2, 3]
    assert [tok.token_id(p) for p in CHAT_TOKENS] == [4, 5, 6, 7]
    assert tok.encode("<|user|>hi")[0] == tok.token_id("<|user|>")
    assert tok.vocab_size == 400
    meta = json.loads((tok_dir / "tokenizer.json").read_text())
    assert meta["sha256"] == tok.sha256 and meta["vocab_size"] == 400
    assert meta["model_type"] == "bpe" and meta["special_ids"]["<s>"] == 2
    same = load_tokenizer(tok_dir / "tokenizer.model")
    assert same.sha256 == tokenizer_from_bytes(tok.model_bytes).sha256 == tok.sha256
    assert tok.encode_batch(["a b", "naïve"]) == [tok.encode("a b"), tok.encode("naïve")]
    with pytest.raises(DataError, match="no piece"):
        tok.token_id("<|nope|>")


def test_tokenizer_training_is_deterministic(docs, tok, tmp_path):
    again = train_tokenizer(docs[::8], tmp_path, vocab_size=400)
    assert again.sha256 == tok.sha256


def test_tokenizer_bad_arguments(docs, tmp_path):
    with pytest.raises(ConfigError, match="model_type"):
        train_tokenizer(docs[:5], tmp_path, vocab_size=400, model_type="wordpiece")
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer(docs[:5], tmp_path, vocab_size=200)
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer(["tiny corpus"], tmp_path, vocab_size=5000)


def test_char_tokenizer_has_one_piece_per_character_or_is_refused(tmp_path):
    text = "abc ab\nca é\n"  # 5 distinct characters besides the newline: a b c space é
    exact = 264 + 5  # 4 specials, 4 chat symbols, 256 bytes, then the characters
    tok = train_tokenizer([text], tmp_path, vocab_size=exact, model_type="char")
    assert tok.vocab_size == exact and len(tok.encode(text)) == len(text)
    # Larger was silently capped, smaller sent the rarest characters to byte fallback.
    with pytest.raises(ConfigError, match=f"vocab_size={exact + 1} cannot be made.* use {exact}$"):
        train_tokenizer([text], tmp_path, vocab_size=exact + 1, model_type="char")
    with pytest.raises(ConfigError, match=f"would encode 1 characters .*'é'.* use {exact}$"):
        train_tokenizer([text], tmp_path, vocab_size=exact - 1, model_type="char")


def test_tokenizer_load_missing_or_corrupt(tok, tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(tmp_path / "nowhere")
    for name, data in (("garbage.model", b"not a model at all"), ("empty.model", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=name):
            load_tokenizer(tmp_path / name)
    # A model that parses but does not match its recorded fingerprint.
    swapped = tmp_path / "swapped"
    tok.save(swapped)
    meta = json.loads((swapped / "tokenizer.json").read_text())
    meta["sha256"] = "0" * 64
    (swapped / "tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="sha256"):
        load_tokenizer(swapped)


def test_tokenizer_saved_by_several_writers_at_once_stays_whole(tok, tmp_path):
    """Hosts of a multi-host run sharing one workdir once each renamed the same temporary file
    away from the others (gptjax writes from process 0 only; the save itself is the backstop)."""
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "shared"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: tok.save(out), range(48)))  # raises if one save failed
    assert load_tokenizer(out).sha256 == tok.sha256
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer.model"]


def test_check_vocab():
    check_vocab(400, 400)
    check_vocab(400, 512)
    with pytest.raises(DataError, match=r"384.*400"):
        check_vocab(400, 384)


def test_unigram_entropy():
    assert unigram_entropy(np.array([5, 6, 7, 8] * 10)) == pytest.approx(math.log(4))
    assert unigram_entropy(np.array([3, 3, 3])) == 0.0
    with pytest.raises(DataError):
        unigram_entropy(np.array([], np.int32))


# --- packing and the pipeline ------------------------------------------------------------


def test_encode_documents(tok):
    texts = ["first doc", "second, naïve", ""]
    stream = encode_documents(texts, tok)
    assert stream.dtype == np.int32
    starts = np.flatnonzero(stream == tok.bos_id)
    assert starts.tolist()[0] == 0 and len(starts) == 3
    pieces = np.split(stream, starts[1:])
    for text, piece in zip(texts, pieces, strict=True):
        assert piece[-1] == tok.eos_id and tok.decode(piece[1:-1]) == text


def _pack_row(row: list[int]) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in pack_rows(np.array([row]), BOS, PAD).items()}


def test_pack_row_by_hand():
    p = _pack_row([7, 8, 2, 9, 10, 3, 2, 11, 0])
    assert p["inputs"].tolist() == [7, 8, 2, 9, 10, 3, 2, 11]
    assert p["targets"].tolist() == [8, 2, 9, 10, 3, 2, 11, 0]
    assert p["segment_ids"].tolist() == [1, 1, 2, 2, 2, 2, 3, 3]
    assert p["positions"].tolist() == [0, 1, 0, 1, 2, 3, 0, 1]
    assert p["weights"].tolist() == [1, 0, 1, 1, 1, 0, 1, 0]
    starts_with_bos = _pack_row([2, 5, 6, 2, 4])
    assert starts_with_bos["segment_ids"].tolist() == [1, 1, 1, 2]
    assert starts_with_bos["positions"].tolist() == [0, 1, 2, 0]


def _stream(n: int = 2001, seed: int = 0) -> np.ndarray:
    # Ids 0..9 so bos and pad are frequent: many segments per row.
    return np.random.default_rng(seed).integers(0, 10, n).astype(np.int32)


def _rows(stream: np.ndarray, seq_len: int, bos_id: int = BOS, pad_id: int = PAD) -> TokenRows:
    return TokenRows(stream, seq_len=seq_len, bos_id=bos_id, pad_id=pad_id)


@pytest.mark.parametrize("n,global_batch", [(2001, 8), (171, 6)])  # (171: 10 rows < 6*2)
def test_dataset_matches_numpy_and_resumes_exactly(n, global_batch):
    rows = _rows(_stream(n), 17)
    kw = dict(global_batch=global_batch, seed=5)
    from_zero = list(train_dataset(rows, **kw).take(6).as_numpy_iterator())
    for k in (0, 3, 5):
        resumed = next(train_dataset(rows, start_step=k, **kw).as_numpy_iterator())
        _same(resumed, from_zero[k])
        _same(resumed, batch_for_step(rows, k, **kw))
    assert from_zero[0]["inputs"].shape == (global_batch, 17)
    other_seed = batch_for_step(rows, 0, **{**kw, "seed": 6})
    assert not np.array_equal(other_seed["inputs"], from_zero[0]["inputs"])


def test_processes_split_the_global_batch():
    rows = _rows(_stream(), 16)
    kw = dict(global_batch=8, seed=1)
    for step in (0, 7):
        whole = batch_for_step(rows, step, **kw)
        parts = [
            next(
                train_dataset(
                    rows, start_step=step, process_index=i, process_count=2, **kw
                ).as_numpy_iterator()
            )
            for i in range(2)
        ]
        assert parts[0]["inputs"].shape == (4, 16)
        _same({k: np.concatenate([p[k] for p in parts]) for k in FIELDS}, whole)


def test_every_row_once_per_epoch():
    seq_len, num_rows = 8, 60
    stream = np.arange(num_rows * seq_len + 1, dtype=np.int32)  # row r starts with r*seq_len
    rows = _rows(stream, seq_len, bos_id=-1, pad_id=-2)
    kw = dict(global_batch=6, seed=2, process_count=3)
    epochs = []
    for epoch in range(2):
        seen = [
            batch_for_step(rows, step, process_index=p, **kw)["inputs"][:, 0] // seq_len
            for step in range(epoch * 10, epoch * 10 + 10)
            for p in range(3)
        ]
        order = np.concatenate(seen)
        assert sorted(order.tolist()) == list(range(num_rows))
        epochs.append(order)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(num_rows))


@pytest.mark.parametrize(
    "packing,golden",
    [
        (True, "f0d8f640c6b4cae22edd738cfc1800e1d6a2bf35676b6919fc9d7e8d315dc773"),
        (False, "71f7b039a1c2e7ee0e696867fc6e8b5588f7001ec580451fab4cbd605e5ddc1b"),
    ],
)
def test_batches_equal_the_golden_bytes(packing, golden):
    # A resumed run must read the very batches an older gptjax would have: the row order and
    # packing are part of the checkpoint contract. Digest recorded from the code before rows.py.
    rows = TokenRows(_stream(), seq_len=16, bos_id=BOS, pad_id=PAD, packing=packing)
    kw = dict(global_batch=8, seed=1, process_count=2)
    digest = hashlib.sha256()
    for step in (0, 7, 1000):
        for p in range(2):
            batch = batch_for_step(rows, step, process_index=p, **kw)
            for k in FIELDS:
                digest.update(batch[k].tobytes())
    assert digest.hexdigest() == golden


def test_eval_batches_pad_the_last_batch():
    seq_len = 4
    stream = _stream(5 * seq_len + 3)  # 5 full rows
    batches = eval_batches(_rows(stream, seq_len), batch_size=2)
    assert len(batches) == 3
    for b in batches:
        assert all(b[k].shape == (2, seq_len) for k in FIELDS)
    np.testing.assert_array_equal(batches[0]["inputs"][0], stream[:seq_len])
    np.testing.assert_array_equal(batches[2]["inputs"][0], stream[4 * seq_len : 5 * seq_len])
    assert (batches[2]["inputs"][1] == PAD).all() and (batches[2]["weights"][1] == 0).all()
    limited = eval_batches(_rows(stream, 4), batch_size=2, max_batches=2)
    assert len(limited) == 2
    with pytest.raises(ConfigError, match="shorter than one row"):
        eval_batches(_rows(stream[:4], 4), batch_size=2)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(seq_len=0), "seq_len"),
        (dict(global_batch=0), "positive"),
        (dict(global_batch=6, process_count=4), "divisible"),
        (dict(process_index=2, process_count=2), "process_index"),
        (dict(seq_len=5000), "shorter than one row"),
    ],
)
def test_pipeline_refuses_bad_arguments(change, match):
    kw = dict(seq_len=16, global_batch=8, seed=0) | change
    with pytest.raises(ConfigError, match=match):
        rows = _rows(_stream(), kw.pop("seq_len"))
        train_dataset(rows, **kw)


def test_end_to_end_builtin(docs, tok):
    train, val = corpus.split_documents(docs[:40], 0.2)
    stream = encode_documents(train, tok)
    check_vocab(tok.vocab_size, 512)
    rows = TokenRows(stream, seq_len=64, bos_id=2, pad_id=0)
    batch = next(train_dataset(rows, global_batch=4, seed=0).as_numpy_iterator())
    assert batch["inputs"].max() < tok.vocab_size
    assert 0 < unigram_entropy(stream) < math.log(tok.vocab_size)


@pytest.mark.slow  # a subprocess that imports TF, ~7 s
def test_a_script_ending_with_live_iterators_exits():
    # Iterators left in module variables are destroyed during interpreter shutdown, while
    # tf.data still packs rows in Python to fill its buffers: without the pipeline's exit
    # handler this hung 6 times out of 6.
    code = (
        "import numpy as np\n"
        "from gptjax.data.pipeline import train_dataset\n"
        "from gptjax.data.token_rows import TokenRows\n"
        "tokens = np.arange(2_000_000, dtype=np.int32) % 50\n"
        "rows = TokenRows(tokens, seq_len=1024, bos_id=2, pad_id=0)\n"
        "its = [train_dataset(rows, global_batch=512, seed=s) for s in range(4)]\n"
        "its = [it.as_numpy_iterator() for it in its]\n"
        "for it in its:\n"
        "    next(it)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_gptjax_does_not_import_tensorflow():
    code = (
        "import sys, gptjax, gptjax.tokenizer, gptjax.data.corpus; "
        "assert 'tensorflow' not in sys.modules, 'TF imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
