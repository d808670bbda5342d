"""Sizes no run can have are refused before anything is allocated or compiled: exit 2, one line
with the planned bytes against the available ones; the configs in configs/ are not."""

import subprocess
import sys
from pathlib import Path

import pytest
from small_run import subprocess_env

from gptjax import cli
from gptjax.config import apply_overrides, load_config_file, validate
from gptjax.errors import ConfigError
from gptjax.train import loop, memory_plan
from gptjax.train.memory_report import dry_run, refuse_what_cannot_fit

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")
ABSURD_MODELS = {
    "embed_dim": "--config.model.embed_dim=1073741824",  # 2**30: aborted in C++ before
    "max_seq_len": "--config.model.max_seq_len=1000000000000",  # 10**12: hung before
}


def _train_error(monkeypatch, capsys, workdir, *overrides: str) -> str:
    """The one stderr line of an in-process `gptjax train` (no jax.distributed in pytest)."""
    monkeypatch.setattr(loop, "initialize_runtime", lambda *args: False)
    code = cli.main(["train", "--config", TINY, "--workdir", str(workdir), *overrides])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert out == ""
    return lines[0]


@pytest.mark.parametrize("override", ABSURD_MODELS.values(), ids=ABSURD_MODELS.keys())
def test_a_model_that_cannot_fit_is_refused_with_the_bytes(monkeypatch, capsys, tmp_path, override):
    line = _train_error(monkeypatch, capsys, tmp_path / "run", override)
    assert "this run cannot fit in memory" in line
    assert "bytes) on this host's 8 CPU device(s), more than this host's" in line
    assert not (tmp_path / "run").exists()  # refused before anything: the workdir it made is gone


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--config.train.steps=100000000000000000000"], "train.steps=100000000000000000000"),
        (["--config.train.steps=2147483648"], "the int32 step counter"),
        (
            ["--config.train.steps=2147483647", "--config.train.global_batch_size=8589934592"],
            "the largest row number of the input pipeline",
        ),
    ],
)
def test_steps_the_counters_cannot_count_are_refused(
    monkeypatch, capsys, tmp_path, overrides, message
):
    assert message in _train_error(monkeypatch, capsys, tmp_path / "run", *overrides)


def test_the_largest_int32_step_is_accepted():
    config = load_config_file(TINY)
    apply_overrides(config, ["train.steps=2147483647"])
    validate(config, device_count=8)


@pytest.mark.parametrize("name", ["tiny", "tiny_sft", "tiny_dpo", "nanogpt_cpu", "gpt2_124m"])
def test_the_cpu_configs_are_not_refused_on_this_host(name):
    refuse_what_cannot_fit(load_config_file(ROOT / "configs" / f"{name}.py"))


def test_llama_1b_is_not_refused_on_the_8_chips_of_16_gib_it_names(monkeypatch):
    monkeypatch.setattr(memory_plan, "device_memory_limit", lambda: 16 * 2**30)
    refuse_what_cannot_fit(load_config_file(ROOT / "configs" / "llama_1b.py"))
    monkeypatch.setattr(memory_plan, "device_memory_limit", lambda: 1 * 2**30)
    with pytest.raises(ConfigError, match=r"more than the 1.00 GiB each device holds"):
        refuse_what_cannot_fit(load_config_file(ROOT / "configs" / "llama_1b.py"))


def test_a_dry_run_still_prints_the_plan_of_a_model_too_big_to_run():
    config = load_config_file(TINY)
    apply_overrides(config, [ABSURD_MODELS["embed_dim"].removeprefix("--config.")])
    with pytest.raises(ConfigError):
        refuse_what_cannot_fit(config)
    lines = []
    plan = dry_run(config, out=lines.append)  # XLA's plan skipped: it would abort in C++
    assert "beyond any device" in plan.note
    assert any(line.startswith("per-device memory") for line in lines)


def test_the_real_cli_refuses_without_aborting_or_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gptjax.cli", "train", "--config", TINY,
         "--workdir", str(tmp_path / "run"), ABSURD_MODELS["embed_dim"]],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "this run cannot fit in memory" in lines[0], result.stderr[-3000:]
