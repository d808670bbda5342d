"""A checkpoint written by gptjax before the package was restructured still loads and resumes.

tests/fixtures/checkpoint_v0_1 was written by commit 38869cc (the flat package): configs/tiny.py
with the overrides below, 2 steps on one device. `logits.npy` holds that code's logits for IDS;
the step-3 figures are what that code logged when it resumed the run to step 3.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v0_1"
REPO = Path(__file__).parent.parent
IDS = np.array([[2, 10, 20, 30, 40, 50, 300, 511]], np.int32)
OVERRIDES = {
    "model.num_layers": 1,
    "model.embed_dim": 32,
    "model.mlp_dim": 64,
    "model.num_heads": 2,
    "model.vocab_size": 512,
    "data.vocab_size": 512,
    "model.max_seq_len": 32,
    "data.seq_len": 32,
    "train.global_batch_size": 4,
    "train.log_every": 1,
    "train.eval_every": 2,
    "train.eval_batches": 1,
    "train.eval_batch_size": 4,
    "checkpoint.keep_last": 1,
    "checkpoint.save_every": 2,
    "optim.warmup_steps": 1,
    "sample.max_new_tokens": 4,
    "checkpoint.async_save": "false",
}
STEP_3 = {"loss": 6.198063373565674, "grad_norm": 1.4882938861846924}


@pytest.fixture
def old_run(tmp_path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(FIXTURE, workdir, ignore=shutil.ignore_patterns("logits.npy"))
    return workdir


def test_an_old_checkpoint_loads_with_the_same_logits(old_run):
    import jax
    from flax import nnx

    from gptjax.inference.load import load_model

    loaded = load_model(old_run)
    assert (loaded.step, loaded.phase) == (2, "pretrain")
    with loaded.activated():
        model = nnx.merge(loaded.graphdef, loaded.params)
        logits = np.asarray(jax.jit(lambda m, t: m(t))(model, IDS))
    np.testing.assert_allclose(logits, np.load(FIXTURE / "logits.npy"), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_an_old_run_resumes_to_the_step_the_old_code_logged(old_run):
    flags = [f"--config.{key}={value}" for key, value in OVERRIDES.items()]
    command = [sys.executable, "-m", "gptjax.cli", "train", "--config", "configs/tiny.py"]
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    result = subprocess.run(
        [*command, "--workdir", str(old_run), *flags, "--config.train.steps=3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    step_3 = [r for r in records if r["step"] == 3 and "loss" in r]
    assert len(step_3) == 1
    for key, value in STEP_3.items():
        assert step_3[0][key] == pytest.approx(value, rel=1e-6), key
