"""`gptjax prepare`, the token shards and their manifest, training input read from them."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from gptjax.data.corpus import builtin_documents, split_documents
from gptjax.data.pipeline import batch_for_step, train_dataset
from gptjax.data.prepare import documents_to_stream, prepare
from gptjax.data.rows import FIELDS
from gptjax.data.shards import ShardedTokens, load_prepared
from gptjax.data.sources import parse_sources
from gptjax.data.token_rows import TokenRows, encode_documents
from gptjax.errors import ConfigError
from gptjax.tokenizer import load_tokenizer, train_tokenizer

VOCAB = 512


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """80 real documents as text files, one per file."""
    folder = tmp_path_factory.mktemp("corpus")
    for i, doc in enumerate(builtin_documents()[:80]):
        (folder / f"{i:03d}.txt").write_text(doc)
    return folder


@pytest.fixture(scope="module")
def tok_dir(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    docs = [p.read_text() for p in sorted(corpus_dir.glob("*.txt"))]
    train_tokenizer(docs, out, vocab_size=VOCAB)
    return out


@pytest.fixture(scope="module")
def prepared(corpus_dir, tok_dir, tmp_path_factory):
    """The corpus prepared with tiny shards, so rows straddle shard boundaries."""
    out = tmp_path_factory.mktemp("prepared") / "p"
    sources = parse_sources([f"text:{corpus_dir}/*.txt"])
    prepare(sources, out, load_tokenizer(tok_dir), shard_tokens=5000, workers=1, progress=False)
    return out


def test_shards_hold_the_split_documents_and_the_manifest_describes_them(
    prepared, corpus_dir, tok_dir
):
    tok = load_tokenizer(tok_dir)
    docs = [p.read_text() for p in sorted(corpus_dir.glob("*.txt"))]
    train_docs, valid_docs = split_documents(docs, 0.05)
    manifest = json.loads((prepared / "manifest.json").read_text())
    data = load_prepared(prepared)
    for split, split_docs, stream in (
        ("train", train_docs, data.train),
        ("valid", valid_docs, data.valid),
    ):
        expected = encode_documents(split_docs, tok)
        np.testing.assert_array_equal(stream.read(0, stream.size), expected)
        entry = manifest["splits"][split]
        assert entry["documents"] == len(split_docs) and entry["tokens"] == expected.size
        assert entry["text_bytes"] == sum(len(d.encode()) for d in split_docs)
        assert entry["text_chars"] == sum(map(len, split_docs))
        for shard in entry["shards"]:
            raw = (prepared / shard["file"]).read_bytes()
            assert hashlib.sha256(raw).hexdigest() == shard["sha256"]
            assert len(raw) == 2 * shard["tokens"] <= 2 * 5000
    assert len(manifest["splits"]["train"]["shards"]) > 3
    assert manifest["tokenizer"] == {"sha256": tok.sha256, "vocab_size": VOCAB}
    assert manifest["dtype"] == "<u2" and manifest["sources"][0]["documents_read"] == len(docs)
    assert manifest["text_bytes"] == sum(len(d.encode()) for d in docs)
    assert load_tokenizer(prepared / "tokenizer").sha256 == tok.sha256


def test_a_directory_prepared_before_the_split_and_text_counts_still_loads(prepared, tmp_path):
    old = Path(_copy_prepared(prepared, tmp_path, "old"))
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["validation"] == {"method": "hash", "fraction": 0.05}
    assert manifest["validation_fraction"] == 0.05  # still there for readers of the old field
    # What a manifest written before gptjax knew of --validation-tail/--validation-source held.
    del manifest["validation"]
    for split in manifest["splits"].values():
        del split["text_bytes"], split["text_chars"]
    for source in manifest["sources"]:
        for key in ("role", "train_text_bytes", "train_text_chars", "valid_text_bytes"):
            del source[key]
        del source["valid_text_chars"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    data = load_prepared(old, log=lambda _: None)
    assert data.valid.size == manifest["splits"]["valid"]["tokens"]


def test_parallel_workers_write_identical_shards(prepared, corpus_dir, tok_dir, tmp_path):
    sources = parse_sources([f"text:{corpus_dir}/*.txt"])
    out = tmp_path / "parallel"
    prepare(sources, out, load_tokenizer(tok_dir), shard_tokens=5000, workers=2, progress=False)
    for shard in sorted(prepared.glob("*.bin")):
        assert (out / shard.name).read_bytes() == shard.read_bytes(), shard.name
    with pytest.raises(ConfigError, match="already holds a prepared dataset"):
        prepare(sources, out, load_tokenizer(tok_dir), progress=False)


def test_documents_to_stream_by_hand():
    stream = documents_to_stream([[7, 8], [], [9]], bos=2, eos=3, dtype=np.uint16)
    assert stream.dtype == np.uint16 and stream.tolist() == [2, 7, 8, 3, 2, 3, 2, 9, 3]


def test_rows_read_across_shard_boundaries():
    whole = np.random.default_rng(0).integers(0, 1000, 500).astype(np.uint16)
    cuts = [0, 3, 3, 100, 101, 250, 500]  # an empty shard and a one-token shard included
    sharded = ShardedTokens([whole[a:b] for a, b in zip(cuts, cuts[1:], strict=False)])
    assert sharded.size == 500
    ids = np.arange((500 - 1) // 16)
    expected = ShardedTokens.from_array(whole).rows(ids, 16)
    np.testing.assert_array_equal(sharded.rows(ids, 16), expected)
    assert expected.dtype == np.int32
    np.testing.assert_array_equal(sharded.read(2, 260), whole[2:260])


def test_packing_hand_made_documents_loses_and_duplicates_no_token():
    docs = [[10, 11, 12, 13, 14], [20, 21], [30], [40, 41, 42, 43, 44, 45, 46]]
    stream = documents_to_stream(docs, bos=2, eos=3, dtype=np.int32)  # 23 tokens
    seq_len = 4
    rows = (stream.size - 1) // seq_len
    token_rows = TokenRows(stream, seq_len=seq_len, bos_id=2, pad_id=0)
    batch = batch_for_step(token_rows, 0, global_batch=rows, seed=3)  # the epoch, shuffled
    # Put the rows back in stream order by finding where each one starts.
    starts = [
        next(s for s in range(0, rows * seq_len, seq_len) if (stream[s : s + seq_len] == r).all())
        for r in batch["inputs"]
    ]
    assert sorted(starts) == list(range(0, rows * seq_len, seq_len))  # every row exactly once
    order = np.argsort(starts)
    targets = batch["targets"][order]
    np.testing.assert_array_equal(targets.ravel(), stream[1 : rows * seq_len + 1])  # no loss
    for inputs, segments, positions in zip(
        batch["inputs"][order], batch["segment_ids"][order], batch["positions"][order], strict=True
    ):
        is_bos = inputs == 2
        # a new segment exactly where a document starts (<s>), positions counted from there
        assert segments[0] == 1 and (np.diff(segments) == is_bos[1:]).all()
        last_start = np.maximum.accumulate(np.where(is_bos, np.arange(seq_len), 0))
        assert (positions == np.arange(seq_len) - last_start).all()
    # </s> closes every document: it precedes each <s> after the first
    assert (stream[np.flatnonzero(stream == 2)[1:] - 1] == 3).all()
    weights = batch["weights"][order]
    assert (weights[targets == 2] == 0).all() and (weights[targets != 2] == 1).all()


def test_plain_chunking_has_one_segment_per_row():
    stream = documents_to_stream([[5, 6, 7], [8, 9], [10, 11, 12]], 2, 3, np.int32)
    rows = dict(seq_len=6, bos_id=2, pad_id=0)
    plain = TokenRows(stream, **rows, packing=False)
    kw = dict(global_batch=2, seed=0)
    from_tf = next(train_dataset(plain, **kw).as_numpy_iterator())
    from_np = batch_for_step(plain, 0, **kw)
    for key in FIELDS:
        np.testing.assert_array_equal(from_tf[key], from_np[key], err_msg=key)
    assert (from_tf["segment_ids"] == 1).all()
    assert (from_tf["positions"] == np.arange(6)).all()
    packed = batch_for_step(TokenRows(stream, **rows, packing=True), 0, **kw)
    assert packed["segment_ids"].max() > 1
    np.testing.assert_array_equal(packed["inputs"], from_tf["inputs"])  # same rows either way


def test_resume_from_shards_equals_an_uninterrupted_run(prepared):
    data = load_prepared(prepared)
    whole = data.train.read(0, data.train.size)
    sharded = TokenRows(data.train, seq_len=32, bos_id=2, pad_id=0)
    kw = dict(global_batch=8, seed=7)
    from_zero = list(train_dataset(sharded, **kw).take(5).as_numpy_iterator())
    for k in (0, 2, 4):
        resumed = next(train_dataset(sharded, start_step=k, **kw).as_numpy_iterator())
        # the same stream, not sharded
        in_memory = batch_for_step(TokenRows(whole, seq_len=32, bos_id=2, pad_id=0), k, **kw)
        for key in FIELDS:
            np.testing.assert_array_equal(resumed[key], from_zero[k][key], err_msg=key)
            np.testing.assert_array_equal(resumed[key], in_memory[key], err_msg=key)


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_process_slices_are_disjoint_and_cover_an_epoch(process_count):
    seq_len, num_rows, global_batch = 8, 64, 8
    stream = np.arange(num_rows * seq_len + 1, dtype=np.uint16)  # row r starts with r*seq_len
    sharded = ShardedTokens([stream[:100], stream[100:333], stream[333:]])
    rows = dict(seq_len=seq_len, bos_id=9999, pad_id=9998)
    kw = dict(global_batch=global_batch, seed=4)
    steps = num_rows // global_batch
    per_process = []
    for p in range(process_count):
        dataset = train_dataset(
            TokenRows(sharded, **rows), process_index=p, process_count=process_count, **kw
        )
        batches = list(dataset.take(steps).as_numpy_iterator())
        assert batches[0]["inputs"].shape == (global_batch // process_count, seq_len)
        per_process.append([b["inputs"][:, 0] // seq_len for b in batches])
    seen = np.concatenate([rows for process in per_process for rows in process])
    assert sorted(seen.tolist()) == list(range(num_rows))  # each row once across processes
    single = [
        batch_for_step(TokenRows(stream, **rows), s, **kw)["inputs"][:, 0] // seq_len
        for s in range(steps)
    ]
    for step in range(steps):  # the slices, in process order, are the one-process batch
        joined = np.concatenate([per_process[p][step] for p in range(process_count)])
        np.testing.assert_array_equal(joined, single[step])


# --- verified once per dataset: split across processes, recorded for restarts ---------------


class FakeCluster:
    """`count` processes as threads: `gather` meets the others like the real collective."""

    def __init__(self, count: int):
        import threading

        self.count, self.barrier = count, threading.Barrier(count, timeout=60)
        self.slots = [None] * count

    def processes(self, index: int):
        from gptjax.data.shard_verify import Processes

        def gather(text):
            self.slots[index] = text
            self.barrier.wait()
            texts = list(self.slots)
            self.barrier.wait()  # nobody overwrites a slot before all have read it
            return texts

        return Processes(index, self.count, gather)

    def run(self, fn) -> list:
        """fn(index) on every process; each result or the exception it raised."""
        from concurrent.futures import ThreadPoolExecutor

        def call(index):
            try:
                return fn(index)
            except Exception as error:  # returned, so every thread's outcome is seen
                return error

        with ThreadPoolExecutor(self.count) as pool:
            return list(pool.map(call, range(self.count)))


@pytest.fixture
def hashed(monkeypatch):
    """The shard files each process (thread) gave to be hashed, by thread name."""
    import threading

    from gptjax.data import shard_verify

    seen, real = {}, shard_verify.verify_shards

    def spy(files, vocab_size):
        names = seen.setdefault(threading.current_thread().name, [])
        names += [f.path.name for f in files]
        return real(files, vocab_size)

    monkeypatch.setattr(shard_verify, "verify_shards", spy)
    return seen


def _copy_prepared(prepared, tmp_path, name="copy"):
    import shutil

    return shutil.copytree(prepared, tmp_path / name)


def test_shards_are_hashed_on_the_first_start_only_and_changes_are_caught(
    prepared, tmp_path, hashed
):
    from gptjax.data.shard_verify import verify_once
    from gptjax.data.shards import open_prepared
    from gptjax.errors import DataError

    data, workdir, lines = _copy_prepared(prepared, tmp_path), tmp_path / "run", []
    shard_count = len(open_prepared(data).files)
    verify_once(open_prepared(data), workdir, log=lines.append)
    assert sum(map(len, hashed.values())) == shard_count
    assert lines[-1].startswith(f"verified sha256 and token ids of {shard_count} shards")
    assert len(list((workdir / "data").glob("shards-verified-*.json"))) == 1
    hashed.clear()
    verify_once(open_prepared(data), workdir, log=lines.append)  # a restart
    assert not any(hashed.values()) and lines[-1].endswith("not re-hashed")
    shard = data / "train-00001.bin"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 1
    shard.write_bytes(bytes(raw))  # damaged after the record was written
    with pytest.raises(DataError, match="train-00001.bin has sha256"):
        verify_once(open_prepared(data), workdir, log=lines.append)
    shard.write_bytes(bytes(raw[:-2]))  # sizes are checked at every start, record or not
    with pytest.raises(DataError, match="train-00001.bin is .* bytes"):
        open_prepared(data)


def test_processes_reading_one_directory_split_the_hashing_and_all_see_a_problem(
    prepared, tmp_path, hashed
):
    from gptjax.data.shard_verify import verify_once
    from gptjax.data.shards import open_prepared

    data, workdir = _copy_prepared(prepared, tmp_path), tmp_path / "run"
    files = [f.path.name for f in open_prepared(data).files]
    cluster = FakeCluster(2)
    assert cluster.run(
        lambda i: verify_once(open_prepared(data), workdir, processes=cluster.processes(i))
    ) == [None, None]
    assert sorted(sum(hashed.values(), [])) == sorted(files)  # each shard once in all
    assert all(len(names) < len(files) for names in hashed.values())

    shard = data / files[1]  # hashed by process 1
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 1
    shard.write_bytes(bytes(raw))
    outcomes = cluster.run(
        lambda i: verify_once(open_prepared(data), workdir, processes=cluster.processes(i))
    )
    for outcome in outcomes:
        assert f"{files[1]} has sha256" in str(outcome) and str(outcome).endswith("(process 1)")


def test_processes_with_their_own_copies_each_hash_theirs(prepared, tmp_path, hashed):
    from gptjax.data.shard_verify import verify_once
    from gptjax.data.shards import open_prepared

    copies = [_copy_prepared(prepared, tmp_path, f"host{i}") for i in range(2)]
    workdir, cluster = tmp_path / "run", FakeCluster(2)
    shard_count = len(open_prepared(copies[0]).files)
    assert cluster.run(
        lambda i: verify_once(open_prepared(copies[i]), workdir, processes=cluster.processes(i))
    ) == [None, None]
    assert sorted(map(len, hashed.values())) == [shard_count, shard_count]
    assert len(list((workdir / "data").glob("shards-verified-*.json"))) == 2
