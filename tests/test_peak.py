"""The CPU peak behind MFU: quick for training logs, robust (many readings) for benchmarks."""

import types

import jax
import pytest

from gptjax.train import peak
from gptjax.train.peak import PeakReadings, matmul_readings, peak_flops


def test_the_robust_peak_is_the_fastest_reading_and_reports_the_spread():
    readings = PeakReadings([150e9, 121e9, 209e9, 186e9, 190e9])
    assert readings.peak == 209e9
    assert readings.stats() == {"readings": 5, "min": 121e9, "median": 186e9, "max": 209e9}
    assert "max of 5" in readings.describe() and "121/186/209 GFLOP/s" in readings.describe()


def test_each_session_of_readings_adds_to_the_last():
    readings = PeakReadings(size=64).measure(repeats=3).measure(repeats=2)
    assert len(readings.readings) == 5 and all(r > 0 for r in readings.readings)
    assert readings.peak == max(readings.readings)


def test_matmul_readings_count_two_flops_per_multiply_add(monkeypatch):
    ticks = iter([0.0, 0.5, 1.0, 3.0])  # two products timed: 0.5 s and 2 s
    # A clock of its own for the module (patching time.perf_counter itself would reach jax).
    monkeypatch.setattr(peak, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert matmul_readings(size=8, repeats=2) == [2 * 8**3 / 0.5, 2 * 8**3 / 2.0]


def test_the_training_logs_quick_peak_says_it_is_the_quick_one():
    flops, source = peak_flops(jax.devices("cpu")[0], "float32")
    assert flops > 0 and source.startswith("quick: best of 5")


@pytest.mark.parametrize("dtype, flops", [("bfloat16", 989e12), ("float32", 67e12)])
def test_accelerators_use_the_datasheet(dtype, flops):
    class H200:
        platform, device_kind = "gpu", "NVIDIA H200"

    assert peak_flops(H200(), dtype) == (flops, f"datasheet H200 {dtype}")
