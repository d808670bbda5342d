"""`gptjax tokenizer` and `gptjax prepare` as users run them; bad input exits 65 naming the file."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from small_run import SMALL_MODEL, subprocess_env

from gptjax import cli
from gptjax.data.corpus import builtin_documents
from gptjax.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")
VOCAB = 512


def _main(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, *argv, match: str, code: int = 65) -> str:
    """Runs the CLI in-process; asserts exit `code` and one error line containing `match`.

    (A progress bar line may precede it on stderr; the message itself is one line.)
    """
    exit_code, _, err = _main(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("gptjax: error:")]
    assert exit_code == code and len(errors) == 1, err
    assert match in errors[0] and err.strip().endswith(errors[0]), err
    return errors[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("texts")
    for i, doc in enumerate(builtin_documents()[:120]):
        (folder / f"{i:03d}.txt").write_text(doc)
    return folder


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
    """Prepared through the CLI (in-process), tokenizer trained on the way, several shards."""
    out = tmp_path_factory.mktemp("prepared") / "data"
    argv = ["prepare", "--source", f"text:{corpus}/*.txt", "--out", out]
    code = cli.main([str(a) for a in [*argv, "--vocab-size", VOCAB, "--shard-tokens", 20000]])
    assert code == 0
    return out


def _train_args(workdir, prepared_dir, *extra):
    return [
        "train", "--config", TINY, "--workdir", workdir,
        "--config.data.source=prepared", f"--config.data.prepared_dir={prepared_dir}",
        f"--config.model.vocab_size={VOCAB}", f"--config.data.vocab_size={VOCAB}", *extra,
    ]  # fmt: skip


def test_tokenizer_verbs_train_encode_decode(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    code, stdout, err = _main(
        capsys, "tokenizer", "train", "--source", f"text:{corpus}/*.txt", "--out", out,
        "--vocab-size", VOCAB, "--tokenizer-type", "unigram",
    )  # fmt: skip
    assert code == 0, err
    assert f"{VOCAB} pieces" in stdout and (out / "tokenizer.model").is_file()
    text = "def naïve(x):\n    return x  # ✓"
    code, stdout, _ = _main(capsys, "tokenizer", "encode", "--tokenizer", out, text)
    ids = stdout.split()
    assert code == 0 and all(0 <= int(i) < VOCAB for i in ids)
    code, stdout, _ = _main(capsys, "tokenizer", "decode", "--tokenizer", out, *ids)
    assert code == 0 and stdout == text + "\n"
    code, stdout, _ = _main(capsys, "tokenizer", "encode", "--tokenizer", out, "--pieces", "ab")
    assert code == 0 and "".join(stdout.split()) == "ab"
    _refused(capsys, "tokenizer", "decode", "--tokenizer", out, "5", str(VOCAB), match="outside")
    _refused(capsys, "tokenizer", "encode", "--tokenizer", tmp_path / "none", "x", match="none")


def test_prepare_usage_errors_exit_2(corpus, tmp_path, capsys):
    source = f"text:{corpus}/*.txt"
    code, _, err = _main(capsys, "prepare", "--source", source, "--out", tmp_path / "o")
    assert code == 2 and "--tokenizer DIR" in err
    code, _, err = _main(
        capsys, "prepare", "--source", "csv:x", "--out", tmp_path, "--vocab-size", 9
    )
    assert code == 2 and "unknown kind" in err


@pytest.mark.parametrize(
    "files,spec,match",
    [
        ({}, "text:{d}/missing.txt", "missing.txt not found"),
        ({"empty.txt": b""}, "text:{d}/empty.txt", "empty.txt is empty"),
        ({"a.txt": b"caf\xe9"}, "text:{d}/a.txt", "a.txt: byte 3 is not UTF-8"),
        ({"a.jsonl": b'{"t": 1}\n'}, "jsonl:{d}/a.jsonl", "a.jsonl:1: no field 'text'"),
    ],
)
def test_prepare_refuses_bad_files(prepared, tmp_path, capsys, files, spec, match):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    tok = prepared / "tokenizer"
    argv = ["prepare", "--source", spec.format(d=tmp_path), "--out", tmp_path / "o"]
    _refused(capsys, *argv, "--tokenizer", tok, "--workers", 1, match=match)
    assert not (tmp_path / "o").exists()


def _one_file(tmp_path: Path, chars: int = 60_000) -> Path:
    """One text file, as a user has it: real prose, ASCII, blank lines, no document marks."""
    text = "\n\n".join(builtin_documents()[:60]).encode("ascii", "ignore").decode()[:chars]
    path = tmp_path / "train.txt"
    path.write_text(text)
    return path


def _char_vocab(text: str) -> int:
    """The size of a char tokenizer of `text`: 264 reserved pieces + its characters."""
    return 264 + len(set(text) - {"\n"})


def _split_text(out: Path, split: str) -> str:
    """The text a split's shards hold (a char tokenizer: decoding gives it back exactly)."""
    from gptjax.data.shards import load_prepared

    data = load_prepared(out, log=lambda _: None)
    stream = getattr(data, split)
    return data.tokenizer.decode(stream.read(0, stream.size))


@pytest.mark.parametrize("out_exists", [False, True])
def test_one_file_is_refused_before_tokenizing_with_advice_that_works(tmp_path, capsys, out_exists):
    path, out = _one_file(tmp_path), tmp_path / "out"
    if out_exists:
        out.mkdir()
    argv = ["prepare", "--source", f"text:{path}", "--vocab-size", 300, "--out", out]
    err = _refused(capsys, *argv, "--tokenizer-type", "char", match="1 document(s)")
    assert "docs=chunks:65536" in err and "--validation-tail" in err
    assert "--validation-source" in err and "raise --validation-fraction" not in err
    assert out.exists() == out_exists and not (out_exists and any(out.iterdir()))


def test_a_failure_while_tokenizing_leaves_out_as_it_was(corpus, prepared, tmp_path, capsys):
    texts = Path(shutil.copytree(corpus, tmp_path / "texts"))
    (texts / "zzz.txt").write_bytes(b"caf\xe9")  # read last: after shards were written
    out = tmp_path / "new" / "folders" / "out"
    argv = ["prepare", "--source", f"text:{texts}/*.txt", "--out", out, "--shard-tokens", 2000]
    _refused(capsys, *argv, "--tokenizer", prepared / "tokenizer", match="zzz.txt: byte 3")
    assert not (tmp_path / "new").exists()  # nor the folders made for it


def test_prepare_one_file_with_a_validation_tail(tmp_path, capsys):
    path, out = _one_file(tmp_path), tmp_path / "out"
    text = path.read_text()
    cut = int(len(text) * 0.9)  # nanoGPT's split
    vocab = _char_vocab(text[:cut])  # the tokenizer sees the training text only
    argv = ["prepare", "--source", f"text:{path}", "--validation-tail", 0.1, "--out", out]
    code, stdout, err = _main(
        capsys, *argv, "--tokenizer-type", "char", "--vocab-size", vocab, "--workers", 1
    )
    assert code == 0, err
    assert f"a {vocab}-piece tokenizer" in stdout and "--config.model.vocab_size=384" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"] == {"method": "tail", "fraction": 0.1}
    train, valid = manifest["splits"]["train"], manifest["splits"]["valid"]
    assert (train["text_chars"], valid["text_chars"]) == (cut, len(text) - cut)
    assert train["text_bytes"] + valid["text_bytes"] == path.stat().st_size
    assert _split_text(out, "train") == text[:cut] and _split_text(out, "valid") == text[cut:]


def test_prepare_one_file_cut_into_chunks_with_the_hash_split(tmp_path, capsys):
    path, out = _one_file(tmp_path), tmp_path / "out"
    argv = ["prepare", "--source", f"text:{path},docs=chunks:2000", "--out", out]
    code, _, err = _main(
        capsys, *argv, "--vocab-size", 400, "--validation-fraction", 0.2, "--workers", 1
    )
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    splits = manifest["splits"]
    assert manifest["validation"] == {"method": "hash", "fraction": 0.2}
    assert splits["train"]["documents"] + splits["valid"]["documents"] == 30  # 60,000 / 2,000
    assert splits["train"]["text_chars"] + splits["valid"]["text_chars"] == 60_000


def test_prepare_with_a_validation_source(corpus, tmp_path, capsys):
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("Text the model never trains on.\n\nA second paragraph of it.")
    out = tmp_path / "out"
    argv = ["prepare", "--source", f"text:{corpus}/0[0-4]*.txt", "--out", out]
    code, _, err = _main(
        capsys,
        *argv,
        "--vocab-size",
        512,
        "--workers",
        1,
        "--validation-source",
        f"text:{held_out}",
    )
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"] == {"method": "source", "sources": [f"text:{held_out}"]}
    assert [s["role"] for s in manifest["sources"]] == ["train", "valid"]
    valid = manifest["splits"]["valid"]
    assert valid["documents"] == 1 and valid["text_bytes"] == held_out.stat().st_size
    assert manifest["splits"]["train"]["documents"] == 50  # every --source document trains


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--shard-tokens", 0], "--shard-tokens=0 must be at least 1"),
        (["--workers", -2], "--workers=-2 must be at least 1"),
        (["--workers", 0], "--workers=0 must be at least 1"),
        (["--validation-tail", 0.1, "--validation-fraction", 0.1], "give one of them"),
        (["--validation-tail", 0.1, "--validation-source", "builtin"], "give one of them"),
        (["--validation-tail", 1.5], "--validation-tail=1.5 must be in (0, 1)"),
        (["--validation-source", "builtin,weight=2"], "weight= applies to training text"),
        (["--validation-source", "text:{path},docs=chunks:9"], "which a --source reads too"),
        (["--tokenizer-type", "char", "--validation-tail", 0.1], "cannot be made"),
    ],
)
def test_prepare_flags_that_cannot_work_exit_2_and_leave_no_out(tmp_path, capsys, extra, match):
    path, out = _one_file(tmp_path, chars=3000), tmp_path / "out"
    extra = [str(arg).format(path=path) for arg in extra]
    argv = ["prepare", "--source", f"text:{path}", "--vocab-size", 400, "--out", out, *extra]
    _refused(capsys, *argv, match=match, code=2)
    assert not out.exists()


def test_prepare_refuses_an_out_that_is_a_file_or_not_empty(tmp_path, capsys):
    path = _one_file(tmp_path, chars=3000)
    argv = ["prepare", "--source", f"text:{path}", "--vocab-size", 400, "--out"]
    _refused(capsys, *argv, path, match="is a file", code=2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.bin").write_bytes(b"x")
    _refused(capsys, *argv, tmp_path / "full", match="is not empty (holds old.bin)", code=2)


def _copy(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "copy"))


def _rewrite_shard(directory: Path, name: str, data: bytes) -> None:
    """Replaces a shard and makes the manifest agree with it (hash and size)."""
    (directory / name).write_bytes(data)
    manifest = json.loads((directory / "manifest.json").read_text())
    for shard in manifest["splits"]["train"]["shards"]:
        if shard["file"] == name:
            shard["sha256"] = hashlib.sha256(data).hexdigest()
            shard["tokens"] = len(data) // 2
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_training_refuses_a_damaged_shard(prepared, tmp_path, capsys):
    data = _copy(prepared, tmp_path)
    shard = data / "train-00001.bin"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 1
    shard.write_bytes(bytes(raw))
    _refused(capsys, *_train_args(tmp_path / "w", data), match="train-00001.bin has sha256")
    shard.write_bytes(bytes(raw[:-2]))
    _refused(capsys, *_train_args(tmp_path / "w", data), match="train-00001.bin is 39,998 bytes")
    shard.unlink()
    _refused(capsys, *_train_args(tmp_path / "w", data), match="train-00001.bin listed")


def test_training_refuses_token_ids_beyond_the_vocabulary(prepared, tmp_path, capsys):
    data = _copy(prepared, tmp_path)
    tokens = np.fromfile(data / "train-00000.bin", np.uint16)
    tokens[7] = VOCAB + 88  # as if written by a larger tokenizer; hash and size consistent
    _rewrite_shard(data, "train-00000.bin", tokens.tobytes())
    err = _refused(capsys, *_train_args(tmp_path / "w", data), match=f"token id {VOCAB + 88}")
    assert "at token 7" in err and "train-00000.bin" in err
    # Without hashing, the manifest's largest id still catches it.
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["max_token_id"] = VOCAB + 88
    (data / "manifest.json").write_text(json.dumps(manifest))
    args = _train_args(tmp_path / "w", data, "--config.data.verify_shards=false")
    _refused(capsys, *args, match=f"token id {VOCAB + 88}")


def test_training_refuses_another_tokenizer_or_no_manifest(prepared, corpus, tmp_path, capsys):
    other = tmp_path / "other_tok"
    argv = ["tokenizer", "train", "--source", f"text:{corpus}/00*.txt", "--out", other]
    assert cli.main([str(a) for a in [*argv, "--vocab-size", VOCAB]]) == 0
    args = _train_args(tmp_path / "w", prepared, f"--config.data.tokenizer={other}")
    _refused(capsys, *args, match="is not the one")
    _refused(capsys, *_train_args(tmp_path / "w", tmp_path), match="is not a prepared dataset")
    # overrides apply in order: these replace the 512s set by _train_args
    small = ["--config.model.vocab_size=384", "--config.data.vocab_size=384"]
    _refused(capsys, *_train_args(tmp_path / "w", prepared, *small), match="vocab_size=384 is")


GPTJAX = [sys.executable, "-m", "gptjax.cli"]
SHORT = [
    *SMALL_MODEL,
    "--config.train.steps=40",
    "--config.optim.warmup_steps=5",
    "--config.train.log_every=5",
    "--config.train.eval_every=20",
    "--config.train.eval_batches=4",
    "--config.sample.max_new_tokens=0",
]


def _gptjax(*args):
    return subprocess.run(
        [*GPTJAX, *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=subprocess_env()
    )


@pytest.mark.slow
def test_prepare_a_mixture_with_tfds_then_train_on_it(corpus, local_tfds, tmp_path):
    """Text files + a locally built tfds dataset -> `gptjax prepare` -> `gptjax train`."""
    data_dir, _ = local_tfds
    data = tmp_path / "data"
    prepared = _gptjax(
        "prepare", "--source", f"text:{corpus}/*.txt",
        "--source", f"tfds:gptjax_test_texts,data_dir={data_dir},weight=2",
        "--out", data, "--vocab-size", VOCAB, "--workers", 2,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    manifest = json.loads((data / "manifest.json").read_text())
    tfds_entry = manifest["sources"][1]
    assert tfds_entry["documents_read"] == 30
    assert tfds_entry["train_documents"] == 2 * (30 - tfds_entry["valid_documents"])
    workdir = tmp_path / "run"
    result = _gptjax(*_train_args(workdir, data, *SHORT))
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(workdir / "metrics.jsonl")
    train = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval/loss"] for r in records if "eval/loss" in r]
    assert train[-1] < train[0] - 1.0 and evals[-1] < evals[0]
    assert not (workdir / "tokenizer").exists()  # the prepared dir's tokenizer was used


@pytest.mark.slow
def test_one_file_char_level_with_a_tail_then_train_on_it(tmp_path):
    """Issue 17 end to end: one file, nanoGPT's split, a char tokenizer; training takes the
    prepared tokenizer's size (data.vocab_size stays at the template's 2048, unused)."""
    path, data = _one_file(tmp_path), tmp_path / "data"
    text = path.read_text()
    vocab = _char_vocab(text[: int(len(text) * 0.9)])
    prepared = _gptjax(
        "prepare", "--source", f"text:{path}", "--validation-tail", 0.1,
        "--tokenizer-type", "char", "--vocab-size", vocab, "--out", data, "--workers", 1,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    model_vocab = prepared.stdout.split("--config.model.vocab_size=")[1].split()[0]
    workdir = tmp_path / "run"
    result = _gptjax(
        "train", "--config", TINY, "--workdir", workdir, "--config.data.source=prepared",
        f"--config.data.prepared_dir={data}", f"--config.model.vocab_size={model_vocab}", *SHORT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    evals = [r["eval/loss"] for r in read_metrics(workdir / "metrics.jsonl") if "eval/loss" in r]
    assert evals[-1] < evals[0]
    # `gptjax eval` scores the very split the run held out (the same rows: the same loss) and
    # calls it held out; the whole file, which the run trained on, is not known to be.
    out = tmp_path / "eval.json"
    rows = ["--batch-size", 16, "--max-batches", 4]  # train.eval_batch_size x eval_batches
    held = _gptjax("eval", workdir, "--text", f"prepared:{data}", *rows, "--json", out)
    assert held.returncode == 0, held.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["text_held_out"] and "held out by its run" in held.stdout
    assert result["text_loss"] == pytest.approx(evals[-1], rel=1e-4)
    whole = _gptjax("eval", workdir, "--text", f"text:{path}", *rows, "--json", out)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert not json.loads(out.read_text())[0]["text_held_out"]
    assert "not known to be held out" in whole.stdout
