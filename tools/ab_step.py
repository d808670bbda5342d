"""Two variants of a config's train step, timed alternately in one process: A/B for one lever.

Run:    python tools/ab_step.py --config configs/nanogpt_cpu.py \
            --b model.attention=causal_chunks --rounds 4 --steps 4

Variant A is the config as given (its own --config.* overrides apply to both), variant B adds
the --b overrides (FIELD=VALUE, as --config.FIELD=VALUE would). Both steps are compiled once
(as `gptjax bench`, synthetic tokens); each round times --steps steps of each, A and B taking
turns step by step, and its ratio is A's median step time over B's (above 1: B is faster).
Taking turns lets the load of a shared machine fall on both alike; the median of the rounds'
ratios is the figure, for wall time and for the process's CPU time (less inflated by others).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="--config.SECTION.FIELD=VALUE overrides the config of both variants.",
    )
    parser.add_argument("--config", required=True, help="config file")
    parser.add_argument("--b", nargs="+", default=[], metavar="FIELD=VALUE", help="variant B")
    parser.add_argument("--a", nargs="*", default=[], metavar="FIELD=VALUE", help="variant A")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=os.cpu_count(),
        help="simulated host devices (default: one per core)",
    )
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    return parser.parse_args(rest), overrides


def build_variant(args, overrides: list[str], extra: list[str]):
    from gptjax.config import apply_overrides, load_config_file
    from gptjax.train.bench import build_bench

    config = load_config_file(args.config)
    apply_overrides(config, [*overrides, *extra])
    return build_bench(config, data="synthetic", log=lambda _: None)


def alternate(first, second, steps: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(median wall seconds, median CPU seconds) per step of each, the two taking turns step by
    step (a burst of load from other jobs then falls on both, not on one variant's half of the
    round). CPU seconds are this process's, all threads: the work done, which other jobs on a
    shared machine inflate far less than the wall time."""
    walls, cpus = ([], []), ([], [])
    for _ in range(steps):
        for side, bench in enumerate((first, second)):
            cpu_start = time.process_time()
            ((wait, step),) = bench.time_steps(1)
            cpus[side].append(time.process_time() - cpu_start)
            walls[side].append(wait + step)
    return tuple((statistics.median(walls[s]), statistics.median(cpus[s])) for s in (0, 1))


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from gptjax.train.memory_plan import simulate_host_devices

    simulate_host_devices(args.cpu_devices)  # before JAX starts its backend
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    variants = {"A": build_variant(args, overrides, args.a)}
    variants["B"] = build_variant(args, overrides, args.b)
    for bench in variants.values():
        bench.time_steps(args.warmup)
    print(f"A: {' '.join(args.a) or '(the config)'}   B: {' '.join(args.b)}")
    print("| round | A step ms | B step ms | A / B | A CPU ms | B CPU ms | A / B, CPU |")
    print("|---|---|---|---|---|---|---|")
    ratios, cpu_ratios = [], []
    for index in range(args.rounds):
        (a, a_cpu), (b, b_cpu) = alternate(variants["A"], variants["B"], args.steps)
        ratios.append(a / b)
        cpu_ratios.append(a_cpu / b_cpu)
        print(
            f"| {index + 1} | {1e3 * a:,.0f} | {1e3 * b:,.0f} | {a / b:.3f} | "
            f"{1e3 * a_cpu:,.0f} | {1e3 * b_cpu:,.0f} | {a_cpu / b_cpu:.3f} |",
            flush=True,
        )
    for name, values in (("wall", ratios), ("CPU", cpu_ratios)):
        spread = " ".join(f"{r:.3f}" for r in values)
        print(f"median ratio A/B, {name} time: {statistics.median(values):.3f} ({spread})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
