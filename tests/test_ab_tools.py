"""tools/ab_step.py and tools/bench_attention.py at toy size: they run and print their figures."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.small_run import SMALL_MODEL, SMALL_VOCAB, subprocess_env

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / f"tools/{name}.py"), *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=subprocess_env(), cwd=ROOT, timeout=600
    )


@pytest.mark.slow
def test_ab_step_prints_both_ratios_per_round():
    result = _tool(
        "ab_step", "--config", "configs/tiny.py", *SMALL_MODEL, *SMALL_VOCAB,
        "--b", "model.attention=chunked", "--rounds", "2", "--steps", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"\| [12] \|", line)]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        a_ms, b_ms, ratio = (float(c.replace(",", "")) for c in cells[1:4])
        # The ms are printed rounded to whole ms; the ratio from the unrounded times.
        assert ratio == pytest.approx(a_ms / b_ms, rel=0.6 / min(a_ms, b_ms) + 0.002)
    assert "median ratio A/B, wall time" in result.stdout
    assert "median ratio A/B, CPU time" in result.stdout


@pytest.mark.slow
def test_bench_attention_prints_a_row_per_variant_and_length():
    result = _tool(
        "bench_attention", "--lengths", "32", "64", "--chunks", "16", "--reps", "1",
        "--tokens", "128",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[3].strip() for row in rows] == ["xla", "chunked 16"] * 2


@pytest.mark.slow
def test_hlo_copies_prints_a_row_per_phase_and_fewer_copies_with_the_ordered_backward():
    def backward_copy_mib(setting: str) -> float:
        result = _tool(
            "hlo_copies", "--config", "configs/tiny.py", *SMALL_MODEL, *SMALL_VOCAB,
            f"--config.model.projection_backward={setting}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        rows = {
            line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in result.stdout.splitlines()
            if re.match(r"\| (forward|backward|update) \|", line)
        }
        assert set(rows) == {"forward", "backward", "update"}
        return float(rows["backward"])

    assert backward_copy_mib("smaller_copy") < backward_copy_mib("autodiff")
