"""Recovering from a damaged checkpoint as a user does it, and what each command says.

The fast tests drive the Checkpointer and `find_start` in-process; the slow ones run
`gptjax` in subprocesses on one tiny trained workdir (made once, copied per case).
"""

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import jax.numpy as jnp
import pytest
from small_run import subprocess_env, train_command
from test_checkpoint_integrity import (
    _edit_json,
    _flip_a_byte_per_value_file,
    _one_base64_character,
)

from gptjax.checkpoint import SET_ASIDE_DIR, Checkpointer
from gptjax.errors import CheckpointError, ConfigError
from gptjax.metrics import read_metrics
from gptjax.steps import TrainState
from gptjax.train.resume import find_start

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8  # checkpoints 4 and 8 (RESUMABLE saves every 4)


def _config(resume_step: int, init_from: str = ""):
    return types.SimpleNamespace(
        checkpoint=types.SimpleNamespace(resume_step=resume_step), init_from=init_from
    )


def _tiny_state(step: int) -> TrainState:
    """A TrainState small enough to save in milliseconds (the Checkpointer takes any)."""
    scalar = jnp.asarray(step, jnp.int32)
    params = {"w": jnp.arange(4, dtype=jnp.float32) * step}
    return TrainState(scalar, params, {"mu": params}, scalar * 0, scalar * 0)


def _save_steps(checkpointer: Checkpointer, steps) -> None:
    for step in steps:
        checkpointer.save(_tiny_state(step), {}, b"tok")
    checkpointer.wait()


@pytest.mark.parametrize("steps", [(), (1, 2)], ids=["empty workdir", "step not committed"])
def test_a_resume_step_that_does_not_exist_is_refused_naming_the_steps(tmp_path, steps):
    with Checkpointer(tmp_path) as checkpointer:
        _save_steps(checkpointer, steps)
        with pytest.raises(ConfigError) as raised:
            find_start(_config(55), tmp_path, checkpointer)
    message = str(raised.value)
    assert "checkpoint.resume_step=55" in message
    assert ("committed: [1, 2]" if steps else "holds no committed checkpoint") in message


def test_a_save_orbax_declines_is_an_error_and_set_aside_makes_room(tmp_path):
    with Checkpointer(tmp_path, keep_last=5) as checkpointer:
        _save_steps(checkpointer, (1, 2, 3))
        # Step 2 again while 3 exists: Orbax returns False; before, this was silence.
        with pytest.raises(CheckpointError, match="checkpoint 2 was not saved.*holds checkpoint 3"):
            checkpointer.save(_tiny_state(2), {}, b"tok")
        moved = checkpointer.set_aside(1)
        checkpointer.reload()
        assert [step for step, _ in moved] == [2, 3] and checkpointer.steps() == [1]
        assert sorted(p.name for p in (tmp_path / SET_ASIDE_DIR).iterdir()) == ["2", "3"]
        _save_steps(checkpointer, (2,))  # the redone step saves again
        assert checkpointer.steps() == [1, 2]
        assert checkpointer.set_aside(1)[0][1].name == "2.1"  # a second recovery keeps both


def _gptjax(*args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "gptjax.cli", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), input=input,
    )  # fmt: skip


def _train(workdir, *extra):
    return subprocess.run(
        train_command(workdir, STEPS, *extra), cwd=ROOT, capture_output=True, text=True,
        env=subprocess_env(),
    )  # fmt: skip


def assert_one_error_line(result, code: int) -> str:
    """The command failed with `code`, and its stderr holds gptjax's one line, last, and no
    traceback (TensorFlow's start-up log lines may come before it)."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("gptjax: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = _train(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
def test_recovery_from_a_damaged_latest_checkpoint_is_real(trained, copy):
    # Every value file, not the largest one's middle byte: that byte may lie outside the
    # values (CI once saw the run pass over such a flip, as test_checkpoint_integrity notes).
    _flip_a_byte_per_value_file(copy / "checkpoints" / "8" / "params")

    refused = _train(copy)
    line = assert_one_error_line(refused, 74)
    assert "checkpoint 8" in line and "damaged" in line and "resume_step=4" in line

    recovered = _train(copy, "--config.checkpoint.resume_step=4")
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    assert "moved the later checkpoints (8) aside" in recovered.stdout
    assert (copy / SET_ASIDE_DIR / "8").is_dir()  # kept, not deleted
    assert _losses(copy) == _losses(trained)  # steps 5..8 redone exactly

    again = _train(copy)  # no resume_step: the redone checkpoint 8 is the latest
    assert again.returncode == 0, again.stderr[-3000:]
    sample = _gptjax("sample", copy, "--prompt", "The", "--max-new-tokens", "4")
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert "step 8" in sample.stderr + sample.stdout


def _damage_tokenizer(workdir):
    _edit_json(workdir / "checkpoints" / "8" / "tokenizer" / "metadata", _one_base64_character)


def _damage_norm_eps(workdir):
    path = workdir / "checkpoints" / "8" / "metadata" / "metadata"
    metadata = json.loads(path.read_text())
    metadata["model"]["norm_eps"] = 0.1
    path.write_text(json.dumps(metadata))


VERBS = {
    "train": lambda w: _train(w, "--config.train.steps=12"),
    "sample": lambda w: _gptjax("sample", w, "--prompt", "The", "--max-new-tokens", "4"),
    "chat": lambda w: _gptjax("chat", w, input="/quit\n"),
    "eval": lambda w: _gptjax("eval", w, "--text", "builtin"),
    "export-hf": lambda w: _gptjax("export-hf", w, "--out", w.parent / "hf"),
    "checkpoints --tree": lambda w: _gptjax("checkpoints", w, "--tree"),
}


@pytest.mark.slow
@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize(
    "damage", [_damage_tokenizer, _damage_norm_eps], ids=["tokenizer", "metadata"]
)
def test_every_command_refuses_a_damaged_item_in_one_line(copy, verb, damage):
    damage(copy)
    line = assert_one_error_line(VERBS[verb](copy), 74)
    item = "tokenizer" if damage is _damage_tokenizer else "metadata"
    assert "checkpoint 8" in line and "damaged" in line and item in line, line
    assert "earlier checkpoint 4" in line
    assert not (copy.parent / "hf" / "tokenizer.json").exists()


@pytest.mark.slow
def test_checkpoints_verify_reads_every_array_and_names_a_damaged_one(copy):
    intact = _gptjax("checkpoints", copy, "--verify")
    assert intact.returncode == 0, intact.stderr[-3000:]
    assert [line.split("·")[0].split() for line in intact.stdout.splitlines()] == [
        ["step", "4"],
        ["step", "8"],
    ]
    assert all("every item verified" in line for line in intact.stdout.splitlines())

    _flip_a_byte_per_value_file(copy / "checkpoints" / "8" / "trainer")  # optimizer state
    damaged = _gptjax("checkpoints", copy, "--verify")
    line = assert_one_error_line(damaged, 74)
    assert "checkpoint 8" in line and "damaged" in line and "trainer" in line, line
    assert "earlier checkpoint 4 with --step 4" in line, line
    assert "step        4 · every item verified" in damaged.stdout
