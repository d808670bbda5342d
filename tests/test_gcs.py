"""gs:// paths as a TPU user gives them, against a local Cloud Storage (tools/gcs_emulator.py).

Nothing of gptjax is replaced: Orbax's TensorStore, the Python storage client and TF's own GCS
file system (epath, TensorBoard, tf.data) all talk HTTP to fake-gcs-server.
"""

import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from small_run import subprocess_env, train_command

from gptjax.errors import ConfigError, DataError
from gptjax.metrics import MetricsWriter, read_metrics
from gptjax.paths import as_path, local_copy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from gcs_emulator import emulator_env  # noqa: E402  (tools/ is not a package)

BUCKET = "gptjax-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The emulator for this module (TF's GCS client reads its settings once a process, so
    one emulator serves every test here); the environment is restored after the module, so
    no later test runs with its proxy settings."""
    with emulator_env(tmp_path_factory.mktemp("gcs")) as emulator:
        emulator.create_bucket(BUCKET)
        yield emulator


def object_bytes(gcs, url: str) -> bytes:
    """An object's bytes as the emulator holds them (not through gptjax's path type)."""
    bucket, name = url.removeprefix("gs://").split("/", 1)
    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{gcs.http_url}/storage/v1/b/{bucket}/o/{quoted}?alt=media") as r:
        return r.read()


@pytest.mark.parametrize("url", ["s3://bucket/run", "hdfs://x/y", "file:///tmp/x"])
def test_a_scheme_other_than_gs_is_a_config_error_not_a_local_folder(url):
    with pytest.raises(ConfigError, match="scheme is not supported"):
        as_path(url, "--workdir")


def test_gs_without_a_bucket_is_a_config_error():
    with pytest.raises(ConfigError, match="names no bucket"):
        as_path("gs:///run", "--workdir")


def test_train_refuses_an_unsupported_scheme_with_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gptjax.cli", "train", "--config", "configs/tiny.py",
         "--workdir", "s3://bucket/run"],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "s3:// scheme is not supported" in result.stderr
    assert not (ROOT / "s3:").exists()


def test_metrics_are_in_the_bucket_after_every_line_and_a_torn_line_is_dropped(gcs):
    workdir = f"gs://{BUCKET}/metrics-run"
    writer = MetricsWriter(workdir)
    writer.write(1, {"loss": 2.5})
    assert json.loads(object_bytes(gcs, f"{workdir}/metrics.jsonl"))["loss"] == 2.5
    writer.write(2, {"loss": 2.0})
    lines = object_bytes(gcs, f"{workdir}/metrics.jsonl").splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert any(name.startswith("metrics-run/tensorboard/") for name in gcs.object_names(BUCKET))
    writer.close()

    path = as_path(workdir) / "metrics.jsonl"
    path.write_bytes(path.read_bytes() + b'{"step": 3, "lo')  # a run killed mid-write
    with MetricsWriter(workdir) as resumed:
        resumed.write(3, {"loss": 1.5})
    assert [r["loss"] for r in read_metrics(path)] == [2.5, 2.0, 1.5]


def test_a_bucket_file_is_copied_once_to_the_local_cache(gcs, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTJAX_CACHE_DIR", str(tmp_path / "cache"))
    remote = as_path(f"gs://{BUCKET}/cache-test/train-00000.bin")
    data = np.arange(1000, dtype=np.uint16).tobytes()
    remote.write_bytes(data)
    copy = local_copy(remote, "abc123", len(data))
    assert copy.read_bytes() == data and str(copy).startswith(str(tmp_path))
    remote.write_bytes(b"changed")  # same key: the copy is reused, not fetched again
    assert local_copy(remote, "abc123", len(data)).read_bytes() == data


def test_safetensors_offsets_and_file_names_are_checked_in_a_bucket(gcs):
    from gptjax.data.shards import FORMAT, read_manifest
    from gptjax.hf.safetensors_io import SafetensorsFile, write_safetensors

    url = f"gs://{BUCKET}/checks/model.safetensors"
    write_safetensors(url, [("a", np.arange(4, dtype=np.float32))], {})
    assert SafetensorsFile(url).read("a").tolist() == [0, 1, 2, 3]
    as_path(url).write_bytes(object_bytes(gcs, url)[:-4])
    with pytest.raises(DataError, match="lists 16 bytes of tensors but the file holds 12"):
        SafetensorsFile(url)
    shard = {"file": "../other/train-00000.bin", "tokens": 1, "sha256": "0" * 64}
    manifest = {"format": FORMAT, "splits": {"train": {"shards": [shard]}, "valid": {"shards": []}}}
    as_path(f"gs://{BUCKET}/checks/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=f"leaves its folder gs://{BUCKET}/checks;"):
        read_manifest(f"gs://{BUCKET}/checks")


def test_sources_and_conversations_read_from_a_bucket_with_recursive_globs(gcs):
    import gzip

    from gptjax.data.conversations import read_conversations
    from gptjax.data.files import expand_files
    from gptjax.data.sources import SourceStats, parse_sources

    raw = as_path(f"gs://{BUCKET}/raw")
    (raw / "a").mkdir(parents=True, exist_ok=True)
    (raw / "a" / "one.txt").write_text("first document")
    (raw / "b" / "c").mkdir(parents=True, exist_ok=True)
    (raw / "b" / "c" / "two.txt.gz").write_bytes(gzip.compress(b"second document"))
    (raw / "b" / "notes.md").write_text("not matched")
    (raw / ".hidden.txt").write_text("glob skips hidden names")

    found = expand_files(f"gs://{BUCKET}/raw/**/*.txt*", "--source")
    assert [str(p) for p in found] == [f"{raw}/a/one.txt", f"{raw}/b/c/two.txt.gz"]
    (source,) = parse_sources([f"text:gs://{BUCKET}/raw/**/*.txt*"])
    assert list(source.documents(SourceStats())) == ["first document", "second document"]
    with pytest.raises(DataError, match="no file matches"):
        expand_files(f"gs://{BUCKET}/raw/**/*.json", "--source")

    chat = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello there"},
        ]
    }
    (raw / "chats.jsonl").write_text(json.dumps(chat) + "\n")
    assert read_conversations([f"gs://{BUCKET}/raw/chats.jsonl"]) == [chat["messages"]]


def _prepare(out: str, tmp_path: Path) -> subprocess.CompletedProcess:
    text = tmp_path / "corpus"
    text.mkdir(exist_ok=True)
    for i in range(40):
        (text / f"doc{i}.txt").write_text(f"Document {i} says the number {i * 7} twice. " * 20)
    return subprocess.run(
        [sys.executable, "-m", "gptjax.cli", "prepare", "--source", f"text:{text}/*.txt",
         "--vocab-size", "300", "--validation-fraction", "0.1", "--out", out],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=600,
    )  # fmt: skip


def test_a_prepare_that_fails_in_a_bucket_leaves_nothing_there(gcs, tmp_path):
    from gptjax.data.prepare import prepare
    from gptjax.data.sources import parse_sources
    from gptjax.tokenizer import train_tokenizer

    text = tmp_path / "corpus"
    text.mkdir()
    docs = [f"Document {i} says the number {i * 7} twice. " * 20 for i in range(40)]
    for i, doc in enumerate(docs):
        (text / f"doc{i:02d}.txt").write_text(doc)
    (text / "zz.txt").write_bytes(b"caf\xe9")  # read last, after shards were written
    tokenizer = train_tokenizer(docs, tmp_path / "tok", vocab_size=300)
    out = f"gs://{BUCKET}/data/failed"
    sources = parse_sources([f"text:{text}/*.txt"])
    with pytest.raises(DataError, match="zz.txt: byte 3"):
        prepare(sources, out, tokenizer, shard_tokens=500, workers=1, progress=False)
    assert gcs.object_names(BUCKET, "data/failed") == []


@pytest.mark.slow
def test_prepare_into_a_bucket_then_train_from_it(gcs, tmp_path, monkeypatch):
    out = f"gs://{BUCKET}/data/prepared"
    prepared = _prepare(out, tmp_path)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    names = gcs.object_names(BUCKET, "data/prepared/")
    assert "data/prepared/manifest.json" in names
    assert any(name.endswith(".bin") for name in names)

    workdir = f"gs://{BUCKET}/runs/from-prepared"
    trained = subprocess.run(
        train_command(workdir, 4, "--config.data.source=prepared",
                       f"--config.data.prepared_dir={out}", "--config.data.vocab_size=300",
                       "--config.model.vocab_size=320"),
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=subprocess_env() | {"GPTJAX_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert list((tmp_path / "cache" / "files").glob("*.bin"))  # shards read from local copies
    assert "fetch shards" in trained.stderr  # the download shows a byte progress bar
    assert gcs.object_names(BUCKET, "runs/from-prepared/checkpoints/4/")


STEPS = 16
SAMPLING = ["--config.sample.max_new_tokens=4"]  # samples.jsonl at the final evaluation


def _losses(workdir: str) -> dict[int, float]:
    records = read_metrics(as_path(workdir) / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _wait_for_step(workdir: str, step: int, process, timeout=300) -> None:
    """Polls metrics.jsonl in the bucket: it must show progress while the run is going."""
    deadline = time.monotonic() + timeout
    path = as_path(workdir) / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            if any(r["step"] >= step and "loss" in r for r in read_metrics(path)):
                return
        except Exception:  # not there yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"step {step} never showed in {path}")


def _cli(*args: str, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gptjax.cli", *args],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
def test_train_sigterm_resume_sample_export_import_all_in_a_bucket(gcs, tmp_path):
    local = tmp_path / "local"
    reference = subprocess.run(
        train_command(local, STEPS, *SAMPLING),
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=900,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = f"gs://{BUCKET}/runs/tiny"
    started = time.monotonic()
    process = subprocess.Popen(
        train_command(workdir, STEPS, *SAMPLING), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )  # fmt: skip
    _wait_for_step(workdir, 5, process)  # metrics.jsonl is in the bucket while it runs
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 75, stderr[-3000:]
    stopped_at = int(stderr.split("preempted: checkpoint ")[1].split()[0])
    assert stopped_at < STEPS
    assert f"runs/tiny/checkpoints/{stopped_at}/" in "\n".join(gcs.object_names(BUCKET, "runs/"))
    assert not Path(ROOT, "gs:").exists()

    resumed = _cli(*train_command(workdir, STEPS, *SAMPLING)[3:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {stopped_at}" in resumed.stdout
    assert _losses(workdir) == _losses(str(local))  # bitwise, as on local disk
    print(f"gs:// train+resume took {time.monotonic() - started:.1f}s")

    names = gcs.object_names(BUCKET, "runs/tiny/")
    assert {"runs/tiny/samples.jsonl", "runs/tiny/tokenizer/tokenizer.model"} <= set(names)
    assert any(name.startswith("runs/tiny/tensorboard/") for name in names)
    listing = _cli("checkpoints", workdir)
    assert listing.returncode == 0 and f"{STEPS}" in listing.stdout, listing.stderr[-3000:]
    plotted = _cli("plot", workdir)
    assert plotted.returncode == 0, plotted.stderr[-3000:]
    assert object_bytes(gcs, f"{workdir}/curves.png").startswith(b"\x89PNG")
    scored = _cli("eval", workdir, "--max-batches", "2", "--max-generate", "2")
    assert scored.returncode == 0, scored.stderr[-3000:]

    prompt = ["--prompt", "The", "--temperature", "0", "--max-new-tokens", "8"]
    from_bucket = _cli("sample", workdir, *prompt)
    from_disk = _cli("sample", str(local), *prompt)
    assert from_bucket.returncode == 0, from_bucket.stderr[-3000:]
    assert from_bucket.stdout == from_disk.stdout

    exported = _cli("export-hf", workdir, "--out", f"gs://{BUCKET}/hf/tiny")
    assert exported.returncode == 0, exported.stderr[-3000:]
    names = gcs.object_names(BUCKET, "hf/tiny/")
    assert {"hf/tiny/config.json", "hf/tiny/model.safetensors"} <= set(names)

    imported = _cli("import-hf", f"gs://{BUCKET}/hf/tiny", "--workdir", f"gs://{BUCKET}/hf-back")
    assert imported.returncode == 0, imported.stderr[-3000:]
    back = _cli("sample", f"gs://{BUCKET}/hf-back", *prompt)
    assert back.returncode == 0, back.stderr[-3000:]
    assert back.stdout == from_disk.stdout


def test_a_bucket_workdir_is_held_by_one_run_and_a_dead_holder_is_taken_over(
    gcs, monkeypatch, capsys
):
    from gptjax.train import workdir_lock

    url = f"gs://{BUCKET}/locked/{workdir_lock.LOCK_FILE}"
    monkeypatch.setattr(workdir_lock, "HEARTBEAT_SECONDS", 0.05)
    holder = workdir_lock.BucketLock(url, "train")
    holder.acquire()  # created under ifGenerationMatch=0
    first = holder._generation
    with pytest.raises(ConfigError, match=r"in use by gptjax train started .* last heartbeat"):
        workdir_lock.BucketLock(url, "train").acquire()
    time.sleep(0.5)
    assert holder._generation != first  # the heartbeat rewrote it under its own generation
    holder.release()
    assert f"locked/{workdir_lock.LOCK_FILE}" not in gcs.object_names(BUCKET)

    # A holder killed with -9 on another host leaves its object: taken over once stale.
    dead = {"command": "train", "host": "gone", "pid": 1, "started": "s", "process": 0}
    for age, taken in ((10.0, False), (workdir_lock.STALE_SECONDS + 1, True)):
        gcs_object = workdir_lock.BucketLock(url, "train")._blob
        gcs_object.upload_from_string(json.dumps(dead | {"heartbeat": time.time() - age}))
        restart = workdir_lock.BucketLock(url, "train")
        if not taken:
            with pytest.raises(ConfigError, match="on host gone"):
                restart.acquire()
            continue
        restart.acquire()
        assert "took over the lock" in capsys.readouterr().err
        restart.release()
