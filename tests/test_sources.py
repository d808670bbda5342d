"""Document sources: text files, JSONL, a locally built tfds dataset, mixtures, bad input."""

import gzip
import lzma

import pytest

from gptjax.data.corpus import hash_units
from gptjax.data.sources import SourceStats, mixture, parse_source, parse_sources
from gptjax.data.splits import TailSplit, survey
from gptjax.errors import ConfigError, DataError


def _docs(spec: str) -> list[str]:
    return list(parse_source(spec).documents(SourceStats()))


def test_text_one_document_per_file_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n\nstill second\n")
    (tmp_path / "a.txt").write_text("first file")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("nested")
    assert _docs(f"text:{tmp_path}/*.txt") == ["first file", "second file\n\nstill second\n"]
    assert _docs(f"text:{tmp_path}/**/*.txt")[-1] == "nested"
    assert _docs(f"text:{tmp_path}/a.txt") == ["first file"]


def test_text_blank_lines_and_separator_modes(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("one\nstill one\n\n\n  \ntwo\n\nthree  \n")
    assert _docs(f"text:{path},docs=blank_lines") == ["one\nstill one", "two", "three  "]
    path.write_text("doc a\nline\n\n\ndoc b\n\n\ndoc c\n")
    assert _docs(f"text:{path},sep=\\n\\n\\n") == ["doc a\nline", "doc b", "doc c\n"]


def test_separator_split_streams_across_read_chunks(tmp_path, monkeypatch):
    from gptjax.data import sources

    monkeypatch.setattr(sources, "_READ_CHUNK", 7)  # separators straddle reads
    docs = [f"document number {i} " * (i + 1) for i in range(20)]
    path = tmp_path / "big.txt"
    path.write_text("<SEP>".join(docs))
    assert _docs(f"text:{path},sep=<SEP>") == docs


# Multi-byte characters, CRLF, blank and whitespace-only stretches, no final newline.
AWKWARD_TEXT = "Première ligne\r\n\n\n   \n\t\néèà 日本語 🙂 end\n\n" * 7 + "fin"


@pytest.mark.parametrize("size", [1, 3, 10, 64, 10_000])
def test_chunks_are_contiguous_and_give_the_file_back_exactly(tmp_path, monkeypatch, size):
    from gptjax.data import sources

    monkeypatch.setattr(sources, "_READ_CHUNK", 5)  # reads end inside UTF-8 sequences
    path = tmp_path / "one.txt"
    path.write_text(AWKWARD_TEXT, newline="")
    stats = SourceStats()
    docs = list(parse_source(f"text:{path},docs=chunks:{size}").documents(stats))
    assert "".join(docs) == AWKWARD_TEXT  # blank lines and whitespace-only chunks kept
    assert all(len(doc) == size for doc in docs[:-1]) and 0 < len(docs[-1]) <= size
    assert stats.skipped_empty == 0 and stats.documents == len(docs)


def test_chunks_decode_bad_bytes_as_the_whole_file_would(tmp_path, monkeypatch):
    from gptjax.data import sources

    monkeypatch.setattr(sources, "_READ_CHUNK", 2)
    data = "caf\u00e9 \u2713 ".encode() * 3 + b"\xe2\x82 bad \xff end \xf0\x9f"
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    stats = SourceStats()
    docs = list(parse_source(f"text:{path},docs=chunks:4,errors=replace").documents(stats))
    whole = data.decode("utf-8", errors="replace")
    assert "".join(docs) == whole and stats.replaced == whole.count("\ufffd") == 3
    offset = data.index(b"\xe2\x82")  # 30: where decoding the whole file stops too
    with pytest.raises(DataError, match=f"bad.txt: byte {offset} is not UTF-8"):
        _docs(f"text:{path},docs=chunks:4")


def test_tail_split_holds_out_the_last_characters_exactly(tmp_path):
    (tmp_path / "a.txt").write_text(AWKWARD_TEXT, newline="")
    (tmp_path / "b.txt").write_text("second file, wholly in the tail")
    for spec in (f"text:{tmp_path}/*.txt", f"text:{tmp_path}/*.txt,docs=chunks:7"):
        sources = parse_sources([spec])
        split = survey(sources, TailSplit(0.1))
        out = list(mixture(sources, split, [SourceStats()]))
        train = "".join(t for _, valid, t in out if not valid)
        valid = "".join(t for _, valid, t in out if valid)
        whole = AWKWARD_TEXT + "second file, wholly in the tail"
        assert train + valid == whole and len(train) == int(len(whole) * 0.9), spec
        assert [valid for _, valid, _ in out] == sorted(valid for _, valid, _ in out)


def test_compressed_files_are_read(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wt") as f:
        f.write("from gzip")
    with lzma.open(tmp_path / "b.txt.xz", "wt") as f:
        f.write("from xz\n\nsecond")
    assert _docs(f"text:{tmp_path}/*.txt.*,docs=blank_lines") == ["from gzip", "from xz", "second"]


def test_jsonl_field_and_errors(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "hello", "id": 1}\n\n{"text": "naïve ✓", "id": 2}\n')
    assert _docs(f"jsonl:{path}") == ["hello", "naïve ✓"]
    path.write_text('{"body": "x"}\n')
    assert _docs(f"jsonl:{path},field=body") == ["x"]
    with pytest.raises(DataError, match=r"data.jsonl:1: no field 'text' \(found: body\)"):
        _docs(f"jsonl:{path}")
    path.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"data.jsonl:2: not valid JSON"):
        _docs(f"jsonl:{path}")
    path.write_text('{"text": 5}\n')
    with pytest.raises(DataError, match="is int, not text"):
        _docs(f"jsonl:{path}")


def test_missing_and_empty_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nowhere.txt not found") as error:
        _docs(f"text:{tmp_path}/nowhere.txt")
    assert error.value.exit_code == 65
    with pytest.raises(DataError, match="no file matches"):
        _docs(f"text:{tmp_path}/*.md")
    (tmp_path / "empty.txt").write_bytes(b"")
    for spec in (f"text:{tmp_path}/empty.txt", f"jsonl:{tmp_path}/empty.txt"):
        with pytest.raises(DataError, match="empty.txt is empty"):
            _docs(spec)
    with pytest.raises(DataError, match="is a directory"):
        _docs(f"text:{tmp_path}")


def test_whitespace_documents_are_skipped_and_counted(tmp_path):
    (tmp_path / "a.txt").write_text("real\n")
    (tmp_path / "b.txt").write_text("  \n\t\n")
    stats = SourceStats()
    assert list(parse_source(f"text:{tmp_path}/*.txt").documents(stats)) == ["real\n"]
    assert (stats.documents, stats.skipped_empty) == (1, 1)


def test_non_utf8_is_refused_or_replaced_and_counted(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"good line\n\ncaf" + b"\xe9 au lait\n")
    with pytest.raises(DataError, match=r"latin1.txt: byte 14 is not UTF-8.*errors=replace"):
        _docs(f"text:{path},docs=blank_lines")
    stats = SourceStats()
    docs = list(parse_source(f"text:{path},docs=blank_lines,errors=replace").documents(stats))
    assert docs == ["good line", "caf\ufffd au lait"] and stats.replaced == 1
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"text": "a\\ud800b"}\n')  # a lone surrogate: valid JSON, not text
    with pytest.raises(DataError, match="surrogate"):
        _docs(f"jsonl:{jsonl}")
    assert _docs(f"jsonl:{jsonl},errors=replace") == ["a\ufffdb"]


@pytest.mark.parametrize(
    "spec,match",
    [
        ("csv:x.csv", "unknown kind"),
        ("text:", "needs a target"),
        ("builtin:x", "takes no target"),
        ("text:a.txt,field=x", "bad option"),
        ("text:a.txt,weight=0", "weight"),
        ("text:a.txt,weight=abc", "weight"),
        ("text:a.txt,errors=ignore", "errors"),
        ("text:a.txt,docs=lines", "docs"),
        ("text:a.txt,docs=chunks", "docs=chunks: needs a whole number"),
        ("text:a.txt,docs=chunks:0", "docs=chunks:0 needs a whole number"),
        ("text:a.txt,docs=chunks:1e3", "docs=chunks:1e3 needs a whole number"),
        ("text:a.txt,docs=chunks:\u00b2", "needs a whole number"),  # str.isdigit() says yes
        ("text:a.txt,docs=file:3", "docs=file:3 must be"),
        ("text:a.txt,sep=", "sep"),
    ],
)
def test_bad_source_specs_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_source(spec)


def test_no_sources_is_a_config_error():
    with pytest.raises(ConfigError, match="--source"):
        parse_sources([])


def _corpus(tmp_path, name: str, n: int) -> str:
    folder = tmp_path / name
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:03d}.txt").write_text(f"{name} document {i}: " + "words " * (i % 7 + 1))
    return f"text:{folder}/*.txt"


def test_mixture_weights_repeat_and_subsample_training_documents(tmp_path):
    a, b = _corpus(tmp_path, "a", 200), _corpus(tmp_path, "b", 200)
    sources = parse_sources([f"{a},weight=2.5", f"{b},weight=0.5"])
    stats = [SourceStats(), SourceStats()]
    out = list(mixture(sources, 0.1, stats))
    assert [s.documents for s in stats] == [200, 200]
    valid = [(i, t) for i, v, t in out if v]
    train = [(i, t) for i, v, t in out if not v]
    # Validation: each held-out document once, whatever the weight; never in training.
    assert len(valid) == len(set(valid)) and 5 < len(valid) < 50
    assert not {t for _, t in valid} & {t for _, t in train}
    a_train = [t for i, t in train if i == 0]
    b_train = [t for i, t in train if i == 1]
    a_unique, b_unique = set(a_train), set(b_train)
    # weight 2.5: every document twice, and a third time for about half of them
    assert all(2 <= a_train.count(t) <= 3 for t in a_unique)
    assert 0.35 < sum(a_train.count(t) == 3 for t in a_unique) / len(a_unique) < 0.65
    # weight 0.5: about half of the documents, each once; the kept half is the hash's choice
    assert len(b_train) == len(b_unique) and 0.35 < len(b_unique) / (200 - 20) < 0.65
    assert all(hash_units(t)[1] < 0.5 for t in b_unique)
    # copies lie in separate passes: the first pass holds each document once
    assert a_train[: len(a_unique)] == sorted(a_unique, key=a_train.index)
    assert out == list(mixture(sources, 0.1, [SourceStats(), SourceStats()]))  # deterministic


def test_tfds_source_reads_a_local_dataset(local_tfds):
    data_dir, texts = local_tfds
    spec = f"tfds:gptjax_test_texts,data_dir={data_dir}"
    assert _docs(spec) == texts
    assert _docs(f"{spec},split=validation") == ["held out text"]
    assert _docs(f"{spec},split=train[:3],field=meta/body") == texts[:3]
    with pytest.raises(DataError, match="no split 'test'"):
        _docs(f"{spec},split=test")
    with pytest.raises(DataError, match="no feature 'body'.*found: meta, text"):
        _docs(f"{spec},field=body")
    with pytest.raises(DataError, match="no tfds dataset 'no_such_dataset'"):
        _docs(f"tfds:no_such_dataset,data_dir={data_dir}")
    with pytest.raises(DataError, match="not prepared.*never downloads"):
        _docs(f"tfds:mnist,data_dir={data_dir}")  # registered with tfds, not on disk
