"""The dry run's per-device memory estimate against the peak measured in real train steps.

Usage:  python tools/bench_memory.py --config configs/gpt2_124m.py --remat none full \
            --batch 8 [--steps 2] [--json] [--config.FIELD=VALUE ...]

On one CPU device, for each (remat, batch) case: the plan `gptjax train --dry-run` prints
(analytic formula and XLA's compiled plan), then a subprocess that compiles the same step,
records its resident memory (RSS) as the baseline, builds the real train state, runs `--steps`
real steps on random tokens and reports the peak RSS above that baseline (ru_maxrss, and the
highest of RSS samples taken every 10 ms). A case whose estimate does not fit in this machine's
available memory is reported as skipped rather than run into the OOM killer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

_GB = 2**30  # GiB, as gptjax train --dry-run prints


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _config(path: str, overrides: list[str], remat: str, batch: int):
    from gptjax.config import apply_overrides, load_config_file

    config = load_config_file(path)
    case = [
        f"model.remat={remat}",
        f"train.global_batch_size={batch}",
        f"train.eval_batch_size={batch}",
        "train.grad_accum_steps=1",
        "mesh.data=1",
        "mesh.fsdp=1",
        "mesh.tensor=1",
    ]
    apply_overrides(config, case + overrides)
    return config


def measure(path: str, overrides: list[str], remat: str, batch: int, steps: int) -> dict:
    """Runs in the child process: real steps, peak RSS above the post-compile baseline."""
    import jax
    from flax.core import spmd as flax_spmd

    from gptjax import sharding
    from gptjax.config import validate
    from gptjax.train import memory_plan

    config = _config(path, overrides, remat, batch)
    model = validate(config, jax.device_count())["model"]
    mesh = sharding.make_mesh(config.mesh.to_dict())
    rules = tuple(config.sharding_rules)
    create, target, shardings, jitted, _ = memory_plan.train_step_parts(config, model, mesh)
    batch_spec = memory_plan.abstract_batch(mesh, batch, config.data.seq_len)
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        compiled = jitted.lower(target, batch_spec).compile()
        baseline = _rss()  # after compiling: the compiler's own memory is not the step's
        peak, done = [baseline], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        state = jax.jit(create, out_shardings=shardings)()
        data = memory_plan.real_batch(config, mesh)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, data)
            jax.block_until_ready((state, metrics))
        seconds = (time.perf_counter() - start) / steps
        done.set()
        sampler.join()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "baseline_bytes": baseline,
        "peak_sampled_bytes": peak[0] - baseline,
        "peak_maxrss_bytes": max_rss - baseline,
        "loss": float(metrics["loss"]),
        "step_sec": seconds,
    }


def _case(args, overrides, remat: str, batch: int) -> dict:
    from gptjax.train import memory_plan

    plan = memory_plan.plan_memory(_config(args.config, overrides, remat, batch), 1)
    row = {
        "remat": remat,
        "batch": batch,
        "seq_len": plan.seq_len,
        "analytic_bytes": plan.analytic_total,
        "xla_plan_bytes": plan.compiled["peak"],
        "xla": plan.compiled,
    }
    needed, available = max(row["analytic_bytes"], row["xla_plan_bytes"]), _available()
    if needed > 0.85 * available:
        row["skipped"] = (
            f"needs ~{needed / _GB:.1f} GiB, {available / _GB:.1f} GiB available on this machine"
        )
        return row
    child = [sys.executable, __file__, "--config", args.config, "--measure", f"{remat}:{batch}"]
    child += ["--steps", str(args.steps)] + [f"--config.{o}" for o in overrides]
    result = subprocess.run(child, capture_output=True, text=True, env=os.environ)
    if result.returncode != 0:
        row["skipped"] = (
            f"measurement failed (exit {result.returncode}): "
            + (result.stderr.strip().splitlines() or ["no output"])[-1][:200]
        )
        return row
    row |= json.loads(result.stdout.strip().splitlines()[-1])
    row["measured_bytes"] = row["peak_maxrss_bytes"]
    row["analytic_ratio"] = row["analytic_bytes"] / row["measured_bytes"]
    row["xla_ratio"] = row["xla_plan_bytes"] / row["measured_bytes"]
    return row


def _table(rows: list[dict]) -> str:
    lines = [
        "| remat | batch × seq | analytic estimate | XLA plan | measured peak | "
        "analytic / measured | XLA / measured | step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        case = f"| {r['remat']} | {r['batch']} × {r['seq_len']} |"
        estimates = f" {r['analytic_bytes'] / _GB:.2f} GiB | {r['xla_plan_bytes'] / _GB:.2f} GiB |"
        if "skipped" in r:
            lines.append(f"{case}{estimates} skipped: {r['skipped']} | | | |")
            continue
        lines.append(
            f"{case}{estimates} {r['measured_bytes'] / _GB:.2f} GiB | {r['analytic_ratio']:.2f} | "
            f"{r['xla_ratio']:.2f} | {r['step_sec']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config file, e.g. configs/gpt2_124m.py")
    parser.add_argument(
        "--remat", nargs="+", default=["none", "full"], choices=("none", "full", "dots")
    )
    parser.add_argument("--batch", nargs="+", type=int, default=[8], help="global batch rows")
    parser.add_argument("--steps", type=int, default=2, help="real train steps measured (2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # REMAT:BATCH, the child's job
    args, rest = parser.parse_known_args()
    bad = [a for a in rest if not a.startswith("--config.") or "=" not in a]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides are --config.F=V)")
    overrides = [a.removeprefix("--config.") for a in rest]

    from gptjax.train.memory_plan import simulate_host_devices

    simulate_host_devices(1)  # one CPU device, before JAX starts its backend
    if args.measure:
        remat, batch = args.measure.split(":")
        print(json.dumps(measure(args.config, overrides, remat, int(batch), args.steps)))
        return 0
    rows = [_case(args, overrides, r, b) for b in args.batch for r in args.remat]
    if args.json:
        print(json.dumps({"config": args.config, "overrides": overrides, "cases": rows}))
    else:
        print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
