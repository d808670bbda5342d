"""Where a train step's time goes: XLA's ops profiled, grouped by forward / backward / update.

Run:    python tools/profile_step.py --config configs/nanogpt_cpu.py
        python tools/profile_step.py --config configs/nanogpt_cpu.py --config.model.remat=full

Compiles the config's train step (as `gptjax bench`, synthetic tokens), traces --steps steps
with `jax.profiler`, and attributes every executed XLA op to the JAX operation it came from
(the op_name metadata of the optimized HLO). An op is "forward" when it computes the model
(`jvp(...)`), "backward" when it is the transpose of one (`transpose(jvp(...))`), "update" for
the optimizer and the rest. Kinds: matmul (dot / library matmul fusions), collective
(all-reduce and friends between devices, including the wait for the other devices), copy
(transposes and layout changes), broadcast (buffers filled with a constant), other
(elementwise and reduction fusions, control flow). Times are op durations summed over
threads (and over devices when --cpu-devices > 1), per step.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?(?:metadata=\{([^}]*)\})?$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="--config.SECTION.FIELD=VALUE overrides the config, as for `gptjax train`.",
    )
    parser.add_argument("--config", required=True, help="config file")
    parser.add_argument("--steps", type=int, default=3, help="steps traced (default 3)")
    parser.add_argument("--top", type=int, default=25, help="slowest ops listed (default 25)")
    parser.add_argument(
        "--cpu-devices", type=int, default=1, help="simulated host devices (default 1)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the tables as JSON")
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    args = parser.parse_args(rest)
    return args, overrides


def op_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the op_name of the JAX operation it was lowered from."""
    sources = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            op_name = _OP_NAME.search(line)
            sources[match.group(1)] = op_name.group(1) if op_name else ""
    return sources


def phase_of(op_name: str) -> str:
    if "transpose(jvp" in op_name:
        return "backward"
    if "jvp(" in op_name:
        return "forward"
    return "update"


def kind_of(instruction: str, op_name: str) -> str:
    if instruction.startswith(("all-reduce", "all-gather", "reduce-scatter", "all-to-all")):
        return "collective"
    if "dot_general" in op_name or instruction.startswith(("dot", "ynn_fusion", "onednn")):
        return "matmul"
    if instruction.startswith(("copy", "transpose")):
        return "copy"
    if "broadcast" in instruction:
        return "broadcast"
    return "other"


def trace_durations(trace_dir: Path, known: set[str]) -> collections.Counter:
    """Summed microseconds per HLO instruction over the trace (events that name one)."""
    (trace_file,) = trace_dir.glob("**/*.trace.json.gz")
    events = json.loads(gzip.decompress(trace_file.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    durations = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in known:
            durations[event["name"]] += event["dur"]
    return durations


def profile(bench, steps: int) -> dict:
    import jax

    sources = op_sources(bench.step.as_text())
    bench.time_steps(2)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            times = bench.time_steps(steps)
        durations = trace_durations(Path(trace_dir), set(sources))
    table = collections.defaultdict(float)
    ops = []
    for instruction, micros in durations.items():
        op_name = sources[instruction]
        ms_per_step = micros / 1e3 / steps
        phase, kind = phase_of(op_name), kind_of(instruction, op_name)
        table[(phase, kind)] += ms_per_step
        ops.append((ms_per_step, phase, kind, instruction, op_name))
    ops.sort(reverse=True)
    step_ms = 1e3 * sorted(wait + step for wait, step in times)[len(times) // 2]
    return {"step_ms": step_ms, "table": dict(table), "ops": ops}


def print_report(report: dict, top: int) -> None:
    phases = ("forward", "backward", "update")
    kinds = ("matmul", "collective", "copy", "broadcast", "other")
    print(f"median step {report['step_ms']:.0f} ms (traced); op time summed over threads, ms:")
    print("| | " + " | ".join(kinds) + " | total |")
    print("|---" * (len(kinds) + 2) + "|")
    for phase in phases:
        row = [report["table"].get((phase, kind), 0.0) for kind in kinds]
        print(f"| {phase} | " + " | ".join(f"{v:.0f}" for v in row) + f" | {sum(row):.0f} |")
    print(f"\nslowest {top} ops (ms per step, phase, kind, HLO op, JAX op):")
    for ms, phase, kind, instruction, op_name in report["ops"][:top]:
        short = op_name.replace("jit(train_step)/", "")[-90:]
        print(f"{ms:8.1f}  {phase:8s} {kind:9s} {instruction:28s} {short}")


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from gptjax.train.memory_plan import simulate_host_devices

    simulate_host_devices(args.cpu_devices)  # before JAX starts its backend
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from gptjax.config import apply_overrides, load_config_file
    from gptjax.train.bench import build_bench

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    report = profile(build_bench(config, log=lambda _: None), args.steps)
    print_report(report, args.top)
    if args.json:
        table = [{"phase": p, "kind": k, "ms": v} for (p, k), v in report["table"].items()]
        Path(args.json).write_text(json.dumps({"step_ms": report["step_ms"], "table": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
