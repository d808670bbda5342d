"""Decode speed of `gptjax.generate`: prefill latency and KV-cache decode tokens/s.

Run:    python tools/bench_decode.py --config configs/tiny.py
        python tools/bench_decode.py --config configs/gpt2_124m.py --dtype float32 --new-tokens 32

For each batch size, random-initialised parameters (speed does not depend on their values)
decode greedily from random prompts of --prompt-len tokens through the public streaming API:
the time to the first yielded token is the prefill (plus sampling it), the rest is decode.
One untimed run compiles (its wall time is reported as "first call"); the figures are the
median of --repeats runs after it. Prints one markdown table row per batch size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx

from gptjax import Transformer
from gptjax.config import load_config_file, model_config
from gptjax.generation import generate_stream

HEADER = (
    "| config | dtype | batch | prompt | new tokens | first call s | prefill ms "
    "| decode ms/step | decode tokens/s |\n|---|---|---|---|---|---|---|---|---|"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="rows decoded")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), help="override model.dtype (CPU: float32)"
    )
    return parser.parse_args()


def time_one(graphdef, params, prompts, new_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds per later step) of one streamed generation."""
    start = time.perf_counter()
    first = None
    steps = 0
    for _ in generate_stream(graphdef, params, prompts, max_new_tokens=new_tokens):
        steps += 1
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    assert steps == new_tokens, "no stop ids are given, so every step yields"
    return first, (total - first) / max(1, steps - 1)


def main() -> None:
    args = parse_args()
    config = load_config_file(args.config)
    if args.dtype:
        config.model.dtype = args.dtype
    model = model_config(config)
    graphdef, params = nnx.split(Transformer(model, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    print(f"<!-- {jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__} -->")
    print(HEADER)
    for batch in args.batch:
        prompts = rng.integers(0, model.vocab_size, (batch, args.prompt_len)).tolist()
        warm = time.perf_counter()
        time_one(graphdef, params, prompts, args.new_tokens)
        warm = time.perf_counter() - warm
        runs = [time_one(graphdef, params, prompts, args.new_tokens) for _ in range(args.repeats)]
        prefill = statistics.median(r[0] for r in runs)
        per_step = statistics.median(r[1] for r in runs)
        print(
            f"| {args.config} | {model.dtype} | {batch} | {args.prompt_len} | {args.new_tokens} "
            f"| {warm:.1f} | {1e3 * prefill:.1f} | {1e3 * per_step:.2f} "
            f"| {batch / per_step:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
