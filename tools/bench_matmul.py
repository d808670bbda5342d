"""XLA's float32 matmuls against PyTorch's on this CPU, at the train step's own shapes.

Run:    python tools/bench_matmul.py                       (nanogpt_cpu's shapes, all cores)
        python tools/bench_matmul.py --shapes 2048x384x1536 4096x4096x4096

Each shape M x K x N is timed as a plain product ([M,K] @ [K,N]) and with the left operand
stored transposed ([K,M], contracted over its first axis: how a weight gradient x^T @ dy
reads its activations). Best of --repeats after a warm-up, in GFLOP/s. If these agree, a gap
in whole-step throughput lies outside the matmuls (see tools/profile_step.py).
Needs torch (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# B·L = 2048 rows of width 384, MLP 1536, vocabulary 8192: the GEMMs of configs/nanogpt_cpu.py.
# Forward and input-gradient products contract over the width (K = 384, 1536 or 8192); the
# weight gradients contract over the 2048 rows (K = 2048), reading activations transposed.
DEFAULT_SHAPES = [
    "2048x384x1536",
    "2048x1536x384",
    "2048x384x8192",
    "2048x8192x384",
    "384x2048x1536",
    "1536x2048x384",
    "384x2048x8192",
]


def best_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _cases(a, b) -> list:
    """The four timed calls for operands a [M,K] and b [K,N]: XLA plain / lhs-transposed,
    PyTorch plain / lhs-transposed."""
    import jax
    import numpy as np
    import torch

    a_t = np.ascontiguousarray(a.T)
    ja, jb, ja_t = jax.numpy.asarray(a), jax.numpy.asarray(b), jax.numpy.asarray(a_t)
    ta, tb, ta_t = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(a_t)
    plain = jax.jit(lambda x, y: x @ y)
    lhs_t = jax.jit(lambda x, y: jax.lax.dot_general(x, y, (((0,), (0,)), ((), ()))))
    return [
        lambda: plain(ja, jb).block_until_ready(),
        lambda: lhs_t(ja_t, jb).block_until_ready(),
        lambda: ta @ tb,
        lambda: ta_t.T @ tb,
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="MxKxN ...")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    print("| M x K x N | XLA | XLA, lhs transposed | PyTorch | PyTorch, lhs transposed |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        m, k, n = (int(v) for v in shape.split("x"))
        cases = _cases(rng.random((m, k), np.float32), rng.random((k, n), np.float32))
        gflops = [2 * m * k * n / best_seconds(run, args.repeats) / 1e9 for run in cases]
        print(f"| {shape} | " + " | ".join(f"{g:.0f}" for g in gflops) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
