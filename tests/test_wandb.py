"""Weights & Biases beside metrics.jsonl: offline runs (WANDB_MODE=offline, no network) read
back from wandb's own files and compared with metrics.jsonl."""

import math
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest
import wandb_history
from small_run import subprocess_env, train_command

from gptjax.errors import ConfigError
from gptjax.metrics import MetricsWriter, read_metrics
from gptjax.train.wandb_run import RUN_ID_FILE, open_wandb_run, refuse_missing_wandb

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """WANDB_DIR in tmp, offline, wandb leaving this process's stdout/stderr alone."""
    wandb_dir = tmp_path / "wandb_dir"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return wandb_dir


def _config(project: str = "gptjax-test") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.train = {"steps": 4, "wandb_project": project, "wandb_entity": "",
                    "wandb_run_name": "r"}  # fmt: skip
    config.model = {"num_layers": 2}
    return config


def _same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and a != a else a == b


def _write_run(workdir: Path, steps, lines: list[str]):
    sink = open_wandb_run(_config(), workdir, lines.append)
    with MetricsWriter(workdir, sinks=[sink]) as writer:
        for step in steps:
            loss = float("nan") if step == 2 else 1.0 / step
            writer.write(step, {"loss": loss, "lr": 1e-3})
            writer.write(step, {"loss": 0.5}, prefix="eval/")


def test_every_record_reaches_wandb_and_a_restart_continues_the_same_run(offline, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    lines: list[str] = []
    _write_run(workdir, [1, 2], lines)
    _write_run(workdir, [2, 3], lines)  # restarted from a checkpoint at step 1
    first, second = wandb_history.offline_runs(offline)
    stored = (workdir / RUN_ID_FILE).read_text().strip()
    assert wandb_history.run_id(first) == wandb_history.run_id(second) == stored
    assert lines[0].startswith(f"wandb: started run {stored}, offline in ")
    assert lines[1].startswith(f"wandb: continuing run {stored}, offline in ")
    assert wandb_history.config(first) == _config().to_dict()

    logged = wandb_history.history(first) + wandb_history.history(second)
    expected = [
        {k: v for k, v in r.items() if k != "time"} for r in read_metrics(workdir / "metrics.jsonl")
    ]
    assert len(logged) == len(expected) == 8
    for row, record in zip(logged, expected, strict=True):
        assert row.keys() == record.keys()
        assert all(_same(row[k], record[k]) for k in record), (row, record)
    assert math.isnan(logged[2]["loss"]) and logged[2]["step"] == 2  # NaN arrives as NaN


def test_no_project_means_no_wandb_run(offline, tmp_path):
    assert open_wandb_run(_config(project=""), tmp_path, print) is None
    assert not (tmp_path / RUN_ID_FILE).exists()
    assert wandb_history.offline_runs(offline) == []


def test_a_missing_wandb_package_is_a_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'gptjax\[wandb\]'"):
        refuse_missing_wandb(_config())
    refuse_missing_wandb(_config(project=""))  # off: wandb is never imported


def test_cli_exits_2_before_anything_runs_without_wandb(tmp_path):
    program = (
        "import sys; sys.modules['wandb'] = None\n"
        "from gptjax.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", program, "train", "--config", "configs/tiny.py",
         "--workdir", str(workdir), "--config.train.wandb_project=demo"],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        "gptjax: error: train.wandb_project='demo' needs the wandb package, which is not "
        "installed: pip install 'gptjax[wandb]' (or set train.wandb_project='' to log to "
        "metrics.jsonl and TensorBoard only)"
    ]
    assert not workdir.exists()


@pytest.mark.slow
def test_a_training_run_and_its_resumption_log_to_one_wandb_run(offline, tmp_path):
    workdir = tmp_path / "run"
    env = subprocess_env() | {"WANDB_MODE": "offline", "WANDB_DIR": str(offline)}
    project = ["--config.train.wandb_project=gptjax-test"]
    for steps in (6, 8):  # the second run resumes from the first one's step-6 checkpoint
        result = subprocess.run(
            train_command(workdir, steps, *project), cwd=ROOT, env=env, capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "wandb: " in result.stdout and result.stderr.count("wandb") == 0
    runs = wandb_history.offline_runs(offline)
    assert len(runs) == 2 and len({wandb_history.run_id(r) for r in runs}) == 1
    config = wandb_history.config(runs[1])
    assert config["train"]["steps"] == 8 and config["model"]["num_layers"] == 2
    logged = wandb_history.history(runs[0]) + wandb_history.history(runs[1])
    expected = read_metrics(workdir / "metrics.jsonl")
    assert len(logged) == len(expected)
    for row, record in zip(logged, expected, strict=True):
        record.pop("time")
        assert row.keys() == record.keys()
        assert all(_same(row[k], record[k]) for k in record), (row, record)
    steps = [r["step"] for r in logged if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
