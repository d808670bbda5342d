"""`gptjax train` as a user runs it: the console script, metrics.jsonl, plot, samples, abort."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from small_run import SMALL_MODEL, SMALL_VOCAB, subprocess_env, tensorboard_scalars

from gptjax.errors import NonFiniteError
from gptjax.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
GPTJAX = [sys.executable, "-m", "gptjax.cli"]
SHORT = [
    *SMALL_MODEL,
    *SMALL_VOCAB,
    "--config.train.steps=40",
    "--config.optim.warmup_steps=5",
    "--config.train.log_every=5",
    "--config.train.eval_every=20",
    "--config.train.eval_batches=4",
    "--config.sample.max_new_tokens=8",
]


def gptjax(*args, env=None):
    return subprocess.run(
        [*GPTJAX, *args], cwd=ROOT, capture_output=True, text=True, env=env or subprocess_env()
    )


@pytest.mark.slow
def test_short_training_run_writes_decreasing_metrics_and_samples(tmp_path):
    workdir = tmp_path / "run"
    result = gptjax(
        "train", "--config", "configs/tiny.py", "--workdir", str(workdir), *SHORT,
        "--config.train.eval_at_start=true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(workdir / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in train] == list(range(5, 41, 5))
    assert train[-1]["loss"] < train[0]["loss"] - 1.0
    assert [r["step"] for r in evals] == [0, 20, 40]  # step 0: train.eval_at_start
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    keys = ("lr", "grad_norm", "tokens_per_sec", "mfu", "accuracy", "perplexity")
    for key in (*keys, "bits_per_byte", "nats_per_char"):
        assert all(key in r for r in train), key
    for record in evals:
        # The built-in corpus is mostly ASCII: about as many bytes as characters, several per
        # BPE token, so both figures sit well below the loss per token.
        assert 0 < record["eval/bits_per_byte"] < record["eval/loss"] / math.log(2)
        assert 0 < record["eval/nats_per_char"] < record["eval/loss"]
    scalars = tensorboard_scalars(workdir / "tensorboard")
    assert scalars[("eval/bits_per_byte", 40)] == pytest.approx(evals[-1]["eval/bits_per_byte"])
    assert scalars[("bits_per_byte", 40)] == pytest.approx(train[-1]["bits_per_byte"])
    assert "step 0: validation loss" in result.stdout and "bits/byte" in result.stdout
    assert "validation set: " in result.stdout and "built-in corpus" in result.stdout
    assert (workdir / "tokenizer" / "tokenizer.model").is_file()
    assert "validation loss" in result.stdout and "unigram entropy" in result.stdout
    assert result.stdout.count("\n---\n") >= 2  # the configured prompts were sampled

    plotted = gptjax("plot", str(workdir))
    assert plotted.returncode == 0, plotted.stderr
    assert (workdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_override_is_refused_before_anything_runs(tmp_path):
    result = gptjax(
        "train",
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.train.global_batch_size=13",  # 2 simulated devices cannot split 13 rows
    )
    assert result.returncode == 2
    assert "train.global_batch_size" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_consecutive_non_finite_steps_abort_with_exit_70():
    from gptjax.train.step_log import StepLog

    class Stub:  # the loop's collaborators, reduced to what record() touches
        def write(self, *args, **kwargs): ...
        def update(self, *args, **kwargs): ...

    class Run:
        model_flops_per_token = 1.0

        class config:  # noqa: N801 - mimics a ConfigDict
            class train:  # noqa: N801
                global_batch_size, log_every, max_bad_steps = 8, 100, 3

            class data:  # noqa: N801
                seq_len = 16

    log_lines = []
    step_log = StepLog(Run, Stub(), Stub(), 1.0, log_lines.append)
    bad = {"finite": False, "loss": float("nan"), "bad_steps": 0}
    step_log.record(0, bad | {"bad_steps": 1}, 0.0)
    step_log.record(1, bad | {"bad_steps": 2}, 0.0)
    with pytest.raises(NonFiniteError) as error:
        step_log.record(2, bad | {"bad_steps": 3}, 0.0)
    assert error.value.exit_code == 70
    assert len(log_lines) == 3 and "skipped" in log_lines[0]


@pytest.mark.slow
def test_demo_config_learns_well_below_the_unigram_entropy(tmp_path):
    """`make demo`'s run: validation loss must end clearly below the corpus' unigram entropy."""
    workdir = tmp_path / "demo"
    result = gptjax(
        "train", "--config", "configs/tiny.py", "--workdir", str(workdir),
        env=subprocess_env(optimized=True),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    final_eval = [r for r in read_metrics(workdir / "metrics.jsonl") if "eval/loss" in r][-1]
    line = next(x for x in result.stdout.splitlines() if "unigram entropy" in x)
    entropy = float(line.split("unigram entropy")[1].split()[0])
    assert final_eval["eval/loss"] < entropy - 1.0, json.dumps(final_eval)
