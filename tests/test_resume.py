"""Fault tolerance as a user meets it: SIGTERM, kill -9, resume, init_from, a full disk.

Each test drives the real `gptjax train` in subprocesses (8 simulated devices) and compares
metrics.jsonl against an uninterrupted run.
"""

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from small_run import subprocess_env, train_command

from gptjax.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24
FINETUNE_STEPS = 96


def command(workdir, steps=STEPS, *extra):
    return train_command(workdir, steps, *extra)


def run(workdir, *extra, steps=STEPS, **kwargs):
    return subprocess.run(
        command(workdir, steps, *extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        **kwargs,
    )


def start(workdir, *extra, steps=STEPS):
    return subprocess.Popen(
        command(workdir, steps, *extra), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )  # fmt: skip


def wait_for_step(workdir, step, process, timeout=240):
    """Blocks until metrics.jsonl shows a training step >= `step`."""
    deadline = time.monotonic() + timeout
    path = Path(workdir) / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        if path.is_file() and any(r.get("step", 0) >= step and "loss" in r for r in _records(path)):
            return
        time.sleep(0.2)
    raise TimeoutError(f"step {step} not reached")


def _records(path):
    try:
        return read_metrics(path)
    except Exception:  # being written right now
        return []


def losses(workdir) -> dict[int, float]:
    """step -> loss; a step logged twice (re-run after a resume) keeps its last value."""
    return {
        r["step"]: r["loss"] for r in read_metrics(Path(workdir) / "metrics.jsonl") if "loss" in r
    }


def final_eval(workdir) -> float:
    return [r for r in read_metrics(Path(workdir) / "metrics.jsonl") if "eval/loss" in r][-1][
        "eval/loss"
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_sigterm_commits_a_checkpoint_exits_75_and_resume_is_bitwise_identical(
    uninterrupted, tmp_path
):
    workdir = tmp_path / "run"
    process = start(workdir)
    wait_for_step(workdir, 6, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-3000:]
    assert "preempted: checkpoint" in stderr
    stopped_at = int(stderr.split("preempted: checkpoint ")[1].split()[0])
    assert (workdir / "checkpoints" / str(stopped_at)).is_dir()
    assert stopped_at < STEPS

    resumed = run(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {stopped_at}" in resumed.stdout
    assert losses(workdir) == losses(uninterrupted)  # exact float equality, every step
    assert final_eval(workdir) == final_eval(uninterrupted)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_finishes_like_an_undisturbed_run(
    uninterrupted, tmp_path
):
    rng = random.Random(0)
    for attempt in range(3):
        workdir = tmp_path / f"kill{attempt}"
        process = start(workdir, "--config.checkpoint.save_every=2")
        wait_for_step(workdir, rng.randint(3, 12), process)
        time.sleep(rng.random() * 0.5)
        process.kill()
        process.communicate()
        resumed = run(workdir, "--config.checkpoint.save_every=2")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert not list((workdir / "checkpoints").glob("*tmp*"))  # partial saves cleaned
        assert final_eval(workdir) == final_eval(uninterrupted)
        assert losses(workdir)[STEPS] == losses(uninterrupted)[STEPS]


@pytest.mark.slow
def test_init_from_finetune_killed_then_resumed_continues_the_finetune(uninterrupted, tmp_path):
    finetune = tmp_path / "sft"
    extra = ["--config.phase=sft", f"--config.init_from={uninterrupted}"]
    # SIGTERM early, with most of the run left: the preemption notice reaches the loop through
    # JAX's preemption sync, which on a loaded 2-core machine took seconds, while a step of this
    # small model takes 0.1-0.3 s (24 steps with the signal at step 4 once finished first, exit
    # 0). FINETUNE_STEPS leaves it tens of seconds.
    process = start(finetune, *extra, steps=FINETUNE_STEPS)
    wait_for_step(finetune, 4, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-3000:]
    resumed = run(finetune, *extra, steps=FINETUNE_STEPS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stdout and str(finetune) in resumed.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "gptjax.cli", "checkpoints", str(finetune)],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(),
    )  # fmt: skip
    assert listing.returncode == 0 and "sft" in listing.stdout
    assert f"step {FINETUNE_STEPS:>8}" in listing.stdout
    # The finetune began from the pretrained weights, not from scratch.
    assert losses(finetune)[1] < losses(uninterrupted)[1] - 0.5


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_full_disk_during_a_save_exits_74_naming_that_save_and_keeps_the_previous(tmp_path):
    """A full disk is simulated with RLIMIT_FSIZE: a write past it fails with EFBIG, through
    the same path as ENOSPC (Python ignores SIGXFSZ). The limited run's first save (12) fails;
    the error names 12, arrives within a step or two of it, and is stderr's one line."""
    workdir = tmp_path / "run"
    first = run(workdir, steps=8)
    assert first.returncode == 0, first.stderr[-3000:]
    limited = run(workdir, steps=24, preexec_fn=_limit_file_size(64 * 1024))
    assert limited.returncode == 74, limited.stderr[-3000:]
    assert "Traceback" not in limited.stderr, limited.stderr[-3000:]
    lines = [x for x in limited.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("gptjax: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], limited.stderr[-3000:]
    assert "saving checkpoint 12" in errors[0] and "checkpoint 8 is intact" in errors[0]
    assert "disk is full or a file size limit was reached" in errors[0]
    assert len(errors[0]) < 400
    stopped = int(errors[0].split("the run stopped at step ")[1].split()[0].rstrip(";"))
    assert 12 <= stopped < 16  # at once (the failure can come back within step 12), not at 16
    again = run(workdir, steps=16)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from step 8" in again.stdout
    os.sync()
