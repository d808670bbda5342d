"""Attention alone (forward + backward), `xla` against `chunked` at several chunk sizes.

Run:    python tools/bench_attention.py --lengths 256 1024 2048 --chunks 32 64 128

For each sequence length L: batch 2048 / L rows (the tokens of a configs/nanogpt_cpu.py
step), 6 heads of 64 (its shape), one document per row, float32, one device. Each
variant's value-and-gradient is compiled once; then the variants take turns call by call for
--reps rounds, and the median of each is printed with its ratio to `xla` (above 1: faster).
This isolates what `model.attention="chunked"` changes; tools/ab_step.py measures the step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--reps", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--tokens", type=int, default=2048, help="B x L per call")
    return parser.parse_args(argv)


def variants(chunks: list[int]):
    """(name, function of q, k, v) for xla and each chunk size."""
    import jax.numpy as jnp

    from gptjax.attention import attention_mask, causal_chunks, grouped_attention

    def xla(q, k, v):
        mask = attention_mask(jnp.ones(q.shape[:2], jnp.int32))
        return grouped_attention(q, k, v, mask)

    def chunked(size):
        def run(q, k, v):
            mask = attention_mask(jnp.ones(q.shape[:2], jnp.int32))
            return causal_chunks(q, k, v, mask, size)

        return run

    return [("xla", xla)] + [(f"chunked {size}", chunked(size)) for size in chunks]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import jax

    print("| L | batch | variant | ms (median) | xla / variant |")
    print("|---|---|---|---|---|")
    for length in args.lengths:
        batch = max(1, args.tokens // length)
        keys = jax.random.split(jax.random.key(0), 3)
        q, k, v = (jax.random.normal(key, (batch, length, 6, 64)) for key in keys)
        compiled = {}
        for name, fn in variants(args.chunks):
            loss = lambda q, k, v, fn=fn: fn(q, k, v).sum()
            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            jax.block_until_ready(step(q, k, v))  # compile
            compiled[name] = step
        times = {name: [] for name in compiled}
        for _ in range(args.reps):
            for name, step in compiled.items():
                start = time.perf_counter()
                jax.block_until_ready(step(q, k, v))
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["xla"])
        for name, values in times.items():
            ms = statistics.median(values)
            print(f"| {length} | {batch} | {name} | {1e3 * ms:,.1f} | {base / ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
