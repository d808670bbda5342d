"""One measured variant of the TPU smoke run (tools/tpu_smoke.py runs this once per variant).

Usage:  python tools/tpu_smoke_measure.py --config CONFIG --json OUT.json --steps N
            [--warmup W] [--platform tpu|cpu] [--config.FIELD=VALUE ...]

In this one process, for the config as overridden (e.g. --config.model.attention=splash):
  1. the memory plan of `gptjax train --dry-run` (the same function, its lines kept);
  2. `gptjax bench`'s compiled train step on a fixed synthetic corpus (below), W + N steps,
     each step's loss and gradient norm kept, the last N timed: tokens/s, MFU, peak memory;
  3. with attention=splash, the kernel against the xla reference on one batch of q, k, v:
     the largest differences of the outputs and of their gradients.
A process per variant, because the device's peak-memory counter only ever grows within a
process, and a TPU is held by one process at a time.

--platform cpu (tests, laptops): splash runs in Pallas interpret mode, a simulation whose
speed means nothing; the JSON says so ("splash_mode").
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

PLATFORMS = ("tpu", "cpu")
# The kernel check's batch: two rows, several documents each, so SegmentIds masking is used.
KERNEL_CHECK_ROWS = 2


def _parse(argv: list[str]):
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--platform", choices=PLATFORMS, default="tpu")
    return parser.parse_args(rest), overrides


def corpus_batches(rows: int, length: int, vocab: int, seed: int, distinct: int = 8):
    """Rows of several documents (segment ids 1, 2, ..., positions restarting), tokens drawn
    from a Zipf-like law over the vocabulary, cycling over `distinct` batches.

    Not uniform random tokens: their loss stays at ln(V) whatever the model does, so losses
    of two variants would agree even with a broken backward. Here the loss falls by nats in
    tens of steps, and a wrong gradient shows as a different curve.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocab + 1) ** 1.1
    weights /= weights.sum()
    made = []
    for _ in range(distinct):
        tokens = rng.choice(vocab, size=(rows, length + 1), p=weights).astype(np.int32)
        segments = np.ones((rows, length), np.int32)
        positions = np.zeros((rows, length), np.int32)
        for row in range(rows):
            cuts = np.sort(rng.choice(np.arange(1, length), size=2, replace=False))
            starts = np.concatenate([[0], cuts])
            for index, start in enumerate(starts):
                segments[row, start:] = index + 1
            for start, end in zip(starts, [*cuts, length], strict=True):
                positions[row, start:end] = np.arange(end - start)
        weights_BL = np.ones((rows, length), np.float32)
        # No target across a document boundary, as the packer writes them.
        weights_BL[:, :-1] *= segments[:, 1:] == segments[:, :-1]
        made.append(
            {
                "inputs": tokens[:, :-1],
                "targets": tokens[:, 1:],
                "weights": weights_BL,
                "segment_ids": segments,
                "positions": positions,
            }
        )
    index = 0
    while True:
        yield made[index % distinct]
        index += 1


def finite_json(value):
    """`value` with NaN and infinities as None: strict JSON (jq, browsers) has no NaN. (MFU is
    NaN where gptjax knows no peak, e.g. float32 on TPU.)"""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def use_splash_interpret() -> None:
    """Makes model.attention='splash' run the kernel in Pallas interpret mode (CPU only)."""
    from gptjax import attention

    kernel = attention._splash

    # attend() looks `_splash` up at call time, so replacing it reaches the model's calls.
    @functools.wraps(kernel)
    def interpreted(q, k, v, segment_ids, branch_ids, interpret):
        return kernel(q, k, v, segment_ids, branch_ids, True)

    attention._splash = interpreted


def kernel_check(model_config, seq_len: int, interpret: bool) -> dict:
    """Splash against xla on one batch: max |difference| of outputs and of d(sum out * w)/dq,k,v."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gptjax.attention import attend

    H, G, K = model_config.num_heads, model_config.kv_heads, model_config.dims_per_head
    dtype = jnp.dtype(model_config.dtype)
    keys = jax.random.split(jax.random.key(0), 4)
    B, L = KERNEL_CHECK_ROWS, seq_len
    q = jax.random.normal(keys[0], (B, L, H, K), dtype)
    k = jax.random.normal(keys[1], (B, L, G, K), dtype)
    v = jax.random.normal(keys[2], (B, L, G, K), dtype)
    w = jax.random.normal(keys[3], (B, L, H, K), jnp.float32)
    ids = jnp.asarray(np.repeat(np.arange(4), -(-L // 4))[:L][None].repeat(B, 0), jnp.int32)

    def loss(impl, q, k, v):
        out = attend(q, k, v, impl=impl, segment_ids_BL=ids, interpret=interpret)
        return jnp.sum(out.astype(jnp.float32) * w), out

    results = {}
    for impl in ("xla", "splash"):
        fn = jax.jit(jax.value_and_grad(functools.partial(loss, impl), (0, 1, 2), has_aux=True))
        (_, out), grads = fn(q, k, v)
        results[impl] = [np.asarray(x, np.float32) for x in (out, *grads)]
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(*results.values(), strict=True)]
    scale = [float(np.max(np.abs(a))) for a in results["xla"]]
    return {
        "shape": {"B": B, "L": L, "H": H, "G": G, "K": K, "dtype": str(dtype)},
        "max_abs_diff": {"out": diffs[0], "dq": diffs[1], "dk": diffs[2], "dv": diffs[3]},
        "max_abs_reference": {"out": scale[0], "dq": scale[1], "dk": scale[2], "dv": scale[3]},
    }


def run_steps(bench, count: int) -> list[dict]:
    """Runs `count` steps; per step its loss, gradient norm and (wait, step) seconds."""
    import jax
    from flax.core import spmd as flax_spmd

    from gptjax import sharding

    records = []
    with jax.set_mesh(bench.mesh), flax_spmd.logical_axis_rules(tuple(bench.config.sharding_rules)):
        for _ in range(count):
            start = time.perf_counter()
            batch = sharding.global_batch_from_local(next(bench.batches), bench.mesh)
            ready = time.perf_counter()
            bench.state, metrics = bench.step(bench.state, batch)
            # Waited for every step: the time is the step's own, and its loss is read now.
            metrics = jax.device_get(metrics)
            done = time.perf_counter()
            records.append(
                {
                    "loss": float(metrics["loss"]),
                    "grad_norm": float(metrics["grad_norm"]),
                    "times": (ready - start, done - ready),
                }
            )
    return records


def measure(args, overrides: list[str]) -> dict:
    import jax

    from gptjax.config import apply_overrides, load_config_file
    from gptjax.errors import ConfigError
    from gptjax.train.bench import build_bench, summarize
    from gptjax.train.memory_report import dry_run

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    backend = jax.default_backend()
    if backend != args.platform:  # JAX_PLATFORMS makes this an error already; say it plainly
        raise ConfigError(f"--platform {args.platform}, but JAX's backend is {backend!r}")
    if jax.process_count() > 1:
        raise ConfigError("the smoke run is for one host; this is one of a multi-host slice")
    interpret = args.platform == "cpu" and config.model.attention == "splash"
    if interpret:
        use_splash_interpret()
    plan_lines: list[str] = []
    plan = dry_run(config, out=plan_lines.append)
    bench = build_bench(config, data="synthetic", log=lambda line: None)
    bench.batches = corpus_batches(
        config.train.global_batch_size, config.data.seq_len, bench.model_config.vocab_size,
        config.seed,
    )  # fmt: skip
    records = run_steps(bench, args.warmup + args.steps)
    report = summarize(bench, [r["times"] for r in records[args.warmup :]])
    result = {
        "status": "ok",
        "platform": backend,
        "splash_mode": ("interpret" if interpret else "kernel")
        if config.model.attention == "splash"
        else None,
        "losses": [r["loss"] for r in records],
        "grad_norms": [r["grad_norm"] for r in records],
        "warmup_steps": args.warmup,
        "bench": report,
        "plan": {
            "analytic_bytes": plan.analytic_total,
            "xla_bytes": plan.compiled["peak"] if plan.compiled else None,
            "device_memory_bytes": _device_memory_limit(),
            "lines": plan_lines,
        },
    }
    if config.model.attention == "splash":
        result["kernel_check"] = kernel_check(bench.model_config, config.data.seq_len, interpret)
    return result


def _device_memory_limit() -> int | None:
    from gptjax.train.memory_plan import device_memory_limit

    return device_memory_limit()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from gptjax.errors import GptjaxError

    args, overrides = _parse(list(sys.argv[1:] if argv is None else argv))
    try:
        result = measure(args, overrides)
        code = 0
    except GptjaxError as error:
        result, code = {"status": "failed", "error": str(error)}, error.exit_code
    except Exception as error:  # a kernel that fails to lower is a finding, not a crash
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}".splitlines()[0]}
        code = 1
    if code:
        print(f"tpu_smoke_measure: error: {result['error']}", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(finite_json(result), indent=1, allow_nan=False) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
