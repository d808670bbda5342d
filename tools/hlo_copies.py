"""The transposing copies in a config's compiled train step: how many, how big, from which op.

Run:    python tools/hlo_copies.py --config configs/nanogpt_cpu.py --cpu-devices 2
        python tools/hlo_copies.py --config configs/nanogpt_cpu.py --cpu-devices 2 \
            --config.model.projection_backward=smaller_copy

Compiles the train step (as `gptjax bench`, synthetic tokens; nothing runs) and sums, per
phase (forward / backward / update, as `tools/profile_step.py` names them), the bytes written by
instructions of the optimized HLO that only move memory: `copy`/`transpose` instructions, and
fusions made of nothing but transposes, copies, bitcasts and broadcasts ("copy"); fusions that
transpose as they compute ("transpose+", e.g. an add writing its result transposed) are
listed apart. XLA:CPU inserts them to hand each matmul its operands in the canonical
[M, K]·[K, N] layout; PyTorch's BLAS calls read strided operands instead.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys

_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%[\w.\-]+ = (\w+)\[([\d,]*)\]\S* ([\w\-]+)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_BYTES = {"f64": 8, "s64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2}
_MOVES = {"parameter", "transpose", "copy", "bitcast", "reshape", "broadcast", "constant"}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="config file")
    parser.add_argument("--cpu-devices", type=int, default=1, help="simulated host devices")
    parser.add_argument("--top", type=int, default=20, help="largest kinds of copy listed")
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    return parser.parse_args(rest), overrides


def _computations(hlo_text: str) -> dict[str, list[str]]:
    computations, current = {}, None
    for line in hlo_text.splitlines():
        match = _COMPUTATION.match(line)
        if match:
            current = computations.setdefault(match.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            current.append(line)
    return computations


def _opcodes(lines: list[str]) -> set[str]:
    return {m.group(3) for m in map(_INSTRUCTION.match, lines) if m}


def phase_of(op_name: str) -> str:
    if "transpose(jvp" in op_name:
        return "backward"
    return "forward" if "jvp(" in op_name else "update"


def copies(hlo_text: str) -> list[dict]:
    """Each memory-moving instruction outside fusions: kind ("copy" or "transpose+"), bytes
    written, shape, phase and the JAX operation it came from."""
    computations = _computations(hlo_text)
    fused = {c.group(1) for lines in computations.values() for c in map(_CALLS.search, lines) if c}
    found = []
    for name, lines in computations.items():
        if name in fused:
            continue
        for line in lines:
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            dtype, dims, opcode = match.groups()
            kind = "copy" if opcode in ("copy", "transpose") else None
            if opcode == "fusion":
                inside = _opcodes(computations[_CALLS.search(line).group(1)])
                if inside <= _MOVES and inside & {"transpose", "copy"}:
                    kind = "copy"
                elif "transpose" in inside:
                    kind = "transpose+"
            if kind is None:
                continue
            size = math.prod(int(d) for d in dims.split(",") if d) * _BYTES.get(dtype, 1)
            op_name = _OP_NAME.search(line)
            op_name = op_name.group(1) if op_name else ""
            found.append(dict(kind=kind, bytes=size, shape=f"{dtype}[{dims}]", op=op_name))
    for row in found:
        row["phase"] = phase_of(row["op"])
    return found


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from gptjax.train.memory_plan import simulate_host_devices

    simulate_host_devices(args.cpu_devices)  # before JAX starts its backend
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from gptjax.config import apply_overrides, load_config_file
    from gptjax.train.bench import build_bench

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    found = copies(build_bench(config, log=lambda _: None).step.as_text())
    totals = collections.Counter()
    for row in found:
        totals[(row["phase"], row["kind"])] += row["bytes"]
    print("MiB written per device and step by memory-moving instructions:")
    print("| phase | copy | transpose+ |\n|---|---|---|")
    for phase in ("forward", "backward", "update"):
        mib = [totals[(phase, kind)] / 2**20 for kind in ("copy", "transpose+")]
        print(f"| {phase} | {mib[0]:.1f} | {mib[1]:.1f} |")
    groups = collections.Counter()
    for row in found:
        groups[(row["kind"], row["shape"], row["phase"], row["op"][-60:])] += row["bytes"]
    print(f"\nlargest {args.top} (MiB in all, kind, shape, phase, JAX op):")
    for (kind, shape, phase, op), size in groups.most_common(args.top):
        print(f"{size / 2**20:7.1f}  {kind:10s} {shape:20s} {phase:8s} {op}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
