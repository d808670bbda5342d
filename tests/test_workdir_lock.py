"""One run per workdir, and workdirs that cannot be one: refused with exit 2 and one line."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from small_run import subprocess_env, train_command
from test_resume import start, wait_for_step

from gptjax import cli
from gptjax.errors import ConfigError
from gptjax.metrics import read_metrics
from gptjax.train.workdir_lock import LOCK_FILE, LocalLock, hold_workdir, writable_workdir

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")


def _one_line_error(capsys, *args: str) -> tuple[int, str]:
    """(exit code, the one stderr line) of `gptjax ARGS` run in this process."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptjax: error: "), err
    assert "Traceback" not in err and out == ""
    return code, lines[0]


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    holder = LocalLock(tmp_path / LOCK_FILE, "train")
    holder.acquire()
    try:
        with pytest.raises(ConfigError) as error:
            LocalLock(tmp_path / LOCK_FILE, "train").acquire()
        assert error.value.exit_code == 2
        message = str(error.value)
        assert f"pid {os.getpid()}" in message and os.uname().nodename in message
        assert "gptjax train started" in message and "UTC" in message
    finally:
        holder.release()
    LocalLock(tmp_path / LOCK_FILE, "train").acquire()  # released: free again


def test_hold_workdir_releases_the_lock_when_the_block_ends_even_on_an_error(tmp_path):
    with pytest.raises(RuntimeError), hold_workdir(tmp_path, "train"):
        raise RuntimeError("the run failed")
    with hold_workdir(tmp_path, "bench"):
        assert "bench" in (tmp_path / LOCK_FILE).read_text()


def test_a_lock_held_by_a_process_killed_with_9_does_not_block(tmp_path):
    """The kernel drops a flock with its process, however the process ends."""
    path = tmp_path / LOCK_FILE
    owner = {"command": "train", "host": "h", "pid": 1, "started": "s", "process": 0}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         f"os.write(fd, {json.dumps(owner).encode()!r})\n"
         "print('locked', flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="in use by gptjax train started s on host h"):
            LocalLock(path, "train").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = LocalLock(path, "train")
    lock.acquire()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_writable_workdir_creates_a_missing_directory(tmp_path):
    assert writable_workdir(tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda tmp: tmp / "file", "is a file, not a directory"),
        (lambda tmp: tmp / "file" / "run", "cannot be created: Not a directory"),
        (lambda tmp: Path("/proc/gptjax-no-such-run"), "cannot be created"),
    ],
    ids=["a file", "under a file", "unwritable"],
)
@pytest.mark.parametrize("verb", ["train", "bench"])
def test_train_and_bench_refuse_a_bad_workdir_with_one_line(tmp_path, capsys, make, message, verb):
    (tmp_path / "file").write_text("not a workdir")
    workdir = str(make(tmp_path))
    extra = ["--data", "config"] if verb == "bench" else []
    code, line = _one_line_error(capsys, verb, "--config", TINY, "--workdir", workdir, *extra)
    assert code == 2
    assert f"--workdir {workdir} {message}" in line


def test_an_existing_directory_that_cannot_be_written_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"workdir /proc is not writable") as error:
        with hold_workdir(writable_workdir("/proc"), "train"):
            pass
    assert error.value.exit_code == 2


@pytest.mark.parametrize(
    "args",
    [["sample", "{f}", "--prompt", "hi"], ["chat", "{f}"], ["eval", "{f}"], ["checkpoints", "{f}"]],
    ids=lambda args: args[0],
)
def test_readers_given_a_file_for_a_workdir_exit_2_with_one_line(tmp_path, capsys, args):
    path = tmp_path / "metrics.jsonl"
    path.write_text("{}\n")
    code, line = _one_line_error(capsys, *(a.format(f=path) for a in args))
    assert code == 2
    assert f"{path} is a file, not a directory" in line


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "{w}", "--prompt", "hi"],
        ["chat", "{w}"],
        ["eval", "{w}"],
        ["export-hf", "{w}", "--out", "{out}"],
        ["checkpoints", "{w}"],
        ["checkpoints", "{w}", "--verify"],
        ["sample", "{w}/checkpoints/5", "--prompt", "hi"],
    ],
    ids=lambda args: " ".join(args).replace("{w}", "WORKDIR").replace(" --out {out}", ""),
)
def test_readers_given_a_missing_workdir_exit_2_with_one_line(tmp_path, capsys, args):
    """A mistyped workdir is a usage slip (2), not checkpoint damage (74)."""
    workdir = tmp_path / "no-such-run"
    out = tmp_path / "hf-out"
    code, line = _one_line_error(capsys, *(a.format(w=workdir, out=out) for a in args))
    assert code == 2
    assert f"workdir {workdir} does not exist" in line


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "{w}", "--prompt", "hi"],
        ["sample", "{w}/checkpoints/5", "--prompt", "hi"],
        ["checkpoints", "{w}"],
    ],
)
def test_readers_given_an_existing_workdir_without_checkpoints_still_exit_74(
    tmp_path, capsys, args
):
    code, line = _one_line_error(capsys, *(a.format(w=tmp_path) for a in args))
    assert code == 74
    assert "has no checkpoints/ directory" in line


@pytest.mark.slow
def test_a_second_train_on_a_running_workdir_exits_2_naming_the_first(tmp_path):
    workdir = tmp_path / "run"
    first = start(workdir, steps=40)
    try:
        wait_for_step(workdir, 1, first)
        second = subprocess.run(
            train_command(workdir, 40), cwd=ROOT, capture_output=True, text=True,
            env=subprocess_env(), timeout=300,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr[-3000:]
        assert "in use by gptjax train started" in lines[0]
        assert f"(pid {first.pid}, process 0)" in lines[0]
        _, stderr = first.communicate(timeout=600)
        assert first.returncode == 0, stderr[-3000:]
    finally:
        first.kill()
    steps = [r["step"] for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 41))  # each step once, from the first run alone


@pytest.mark.slow
def test_a_train_killed_with_9_does_not_block_its_restart(tmp_path):
    workdir = tmp_path / "run"
    killed = start(workdir, steps=24)
    wait_for_step(workdir, 2, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert (workdir / LOCK_FILE).is_file()  # left behind, and yet:
    restarted = subprocess.run(
        train_command(workdir, 24), cwd=ROOT, capture_output=True, text=True,
        env=subprocess_env(), timeout=600,
    )  # fmt: skip
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "in use" not in restarted.stderr
