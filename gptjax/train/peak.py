"""Peak FLOP/s of the devices, the denominator of MFU.

Accelerators: the vendor's dense peak per chip for the compute dtype. CPU has no meaningful
datasheet figure (it depends on cores, AVX width and clocks), so it is measured: a float32
matmul timed in this process, i.e. the practical peak XLA:CPU reaches on this host.

Two CPU modes. The quick one (training logs, one reading of ~0.5 s at startup) is the best of
5 matmuls. The robust one (benchmarks) takes many readings before and after the timed steps
and keeps them all: MFU is taken against their maximum, and the spread is printed, because on
a shared host one short reading can come out 40% low and move the MFU by as much.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time

import jax
import jax.numpy as jnp

# Dense peak per chip, FLOP/s, by (substring of device_kind, dtype). Public datasheets.
_ACCELERATOR_PEAKS = {
    ("TPU v4", "bfloat16"): 275e12,
    ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5e", "bfloat16"): 197e12,
    ("TPU v5p", "bfloat16"): 459e12,
    ("TPU v5", "bfloat16"): 459e12,
    ("TPU v6 lite", "bfloat16"): 918e12,
    ("TPU v6e", "bfloat16"): 918e12,
    ("H100", "bfloat16"): 989e12,
    ("H200", "bfloat16"): 989e12,
    ("A100", "bfloat16"): 312e12,
    ("H100", "float32"): 67e12,  # without TF32 tensor cores
    ("H200", "float32"): 67e12,
    ("A100", "float32"): 19.5e12,
}

# 2048^3 x 2 = 17 GFLOP per product: ~0.1 s on 2 cores, long enough to be compute bound and
# to dwarf the dispatch overhead, short enough to repeat many times.
MATMUL_SIZE = 2048
QUICK_REPEATS = 5
ROBUST_REPEATS = 20  # per session; a benchmark measures one session before and one after


def matmul_readings(size: int = MATMUL_SIZE, repeats: int = ROBUST_REPEATS) -> list[float]:
    """FLOP/s of `repeats` jitted float32 [size x size] matmuls on the first CPU device."""
    device = jax.devices("cpu")[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()  # compile and warm the caches, untimed
    readings = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        readings.append(2 * size**3 / (time.perf_counter() - start))
    return readings


@dataclasses.dataclass
class PeakReadings:
    """Matmul readings of the CPU peak collected over a benchmark; MFU uses the maximum."""

    readings: list[float] = dataclasses.field(default_factory=list)
    size: int = MATMUL_SIZE

    def measure(self, repeats: int = ROBUST_REPEATS) -> PeakReadings:
        """Adds one session of readings (call it before and after the timed work)."""
        self.readings += matmul_readings(self.size, repeats)
        return self

    @property
    def peak(self) -> float:
        # The maximum, not the median: other processes on a shared host only ever slow a
        # reading down, so the fastest one is the closest to what the cores can do.
        return max(self.readings)

    def stats(self) -> dict:
        return {
            "readings": len(self.readings),
            "min": min(self.readings),
            "median": statistics.median(self.readings),
            "max": max(self.readings),
        }

    def describe(self) -> str:
        s = self.stats()
        return (
            f"robust: max of {s['readings']} float32 {self.size}² matmuls before and after the "
            f"timed steps; min/median/max {s['min'] / 1e9:.0f}/{s['median'] / 1e9:.0f}/"
            f"{s['max'] / 1e9:.0f} GFLOP/s"
        )


@functools.cache
def measured_cpu_peak(size: int = MATMUL_SIZE, repeats: int = QUICK_REPEATS) -> float:
    """The quick peak: best of `repeats` matmuls, measured once per process (training logs)."""
    return max(matmul_readings(size, repeats))


def peak_flops(device: jax.Device, dtype: str) -> tuple[float, str]:
    """(FLOP/s, how it was obtained) for the whole host on CPU, per chip on accelerators.

    On CPU all simulated devices share the same cores, so the host figure is the budget for
    all of them together.
    """
    if device.platform == "cpu":
        return measured_cpu_peak(), (
            f"quick: best of {QUICK_REPEATS} float32 {MATMUL_SIZE}² matmuls in this process"
        )
    kind = device.device_kind
    for (name, table_dtype), flops in _ACCELERATOR_PEAKS.items():
        if name in kind and table_dtype == dtype:
            return flops, f"datasheet {name} {dtype}"
    return float("nan"), f"no peak known for {kind!r} {dtype}"


def total_peak_flops(devices, dtype: str) -> tuple[float, str]:
    """Peak of the whole mesh: one host figure on CPU, chips x per-chip peak elsewhere."""
    flops, source = peak_flops(devices[0], dtype)
    if devices[0].platform == "cpu":
        return flops, source
    return flops * len(devices), source
