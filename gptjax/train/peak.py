"""Peak FLOP/s of the devices, the denominator of MFU.

Accelerators: the vendor's dense peak per chip for the compute dtype. CPU has no meaningful
datasheet figure (it depends on cores, AVX width and clocks), so it is measured: a float32
matmul timed in this process, i.e. the practical peak XLA:CPU reaches on this host.
"""

from __future__ import annotations

import functools
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


@functools.cache
def measured_cpu_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-N FLOP/s of a jitted float32 [size x size] matmul on the first CPU device."""
    device = jax.devices("cpu")[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        times.append(time.perf_counter() - start)
    # The best repeat, not the median: other processes on a shared host only ever slow it down.
    return 2 * size**3 / min(times)


def peak_flops(device: jax.Device, dtype: str) -> tuple[float, str]:
    """(FLOP/s, how it was obtained) for the whole host on CPU, per chip on accelerators.

    On CPU all simulated devices share the same cores, so the host figure is the budget for
    all of them together.
    """
    if device.platform == "cpu":
        return measured_cpu_peak(), "measured float32 matmul on this host"
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
