"""gptjax and a PyTorch reference side by side as sequence length and vocabulary grow.

Run:    python tools/bench_sweep.py --config configs/nanogpt_cpu.py \
            --md docs/scaling_cpu.md --plot docs/scaling_cpu.png
        python tools/bench_sweep.py --config configs/nanogpt_cpu.py --seq 256 1024 --vocab \
            --config.model.num_layers=2          (extra --config.* overrides apply to every point)
Needs the `bench` extra (torch, transformers, matplotlib).

Each point is measured by tools/bench_point.py in a fresh process per side, gptjax first and
then the reference, point after point (so a change of load on a shared host spreads over both
sides). Sequence points keep the tokens per step fixed (batch = --tokens / seq; the learned
position table grows with seq); vocabulary points use the config's sequence length and batch.
Figures per point and side: tokens/s (median of the timed steps) and the resident memory the
run took above its import baseline (see bench_point.py); for gptjax also XLA's compiled plan
of the step, per device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
MIB = 2**20


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a GPT-2-family config file")
    parser.add_argument("--seq", type=int, nargs="*", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--vocab", type=int, nargs="*", default=[8192, 32768, 131072])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step, seq points")
    parser.add_argument("--reference", default="nanogpt", choices=("nanogpt", "transformers"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per point and side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per point and side")
    parser.add_argument("--json", metavar="PATH", help="write every point's reports")
    parser.add_argument("--md", metavar="PATH", help="write the tables as markdown")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot (matplotlib)")
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    return parser.parse_args(rest), overrides


def measure(args, side: str, overrides: list[str]) -> dict:
    command = [sys.executable, str(TOOLS / "bench_point.py"), side, "--config", args.config]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += [f"--config.{o}" for o in overrides]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    if result.returncode != 0:
        sys.exit(f"bench_sweep: {side} {' '.join(overrides)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def points(args) -> list[tuple[str, int, list[str]]]:
    """(axis, value, overrides) of every point, the sequence sweep first."""
    out = []
    for seq in args.seq:
        if args.tokens % seq:
            sys.exit(f"bench_sweep: --tokens {args.tokens} is not a multiple of seq {seq}")
        batch = [f"train.global_batch_size={args.tokens // seq}"]
        out.append(("sequence", seq, [f"data.seq_len={seq}", f"model.max_seq_len={seq}", *batch]))
    for vocab in args.vocab:
        out.append(("vocabulary", vocab, [f"model.vocab_size={vocab}", f"data.vocab_size={vocab}"]))
    return out


def above_baseline(report: dict) -> float:
    return (report["peak_rss_bytes"] - report["baseline_rss_bytes"]) / MIB


def table(axis: str, rows: list[dict], reference: str) -> str:
    lines = [
        f"| {axis} | batch | gptjax tokens/s | {reference} tokens/s | gptjax / {reference} | "
        f"gptjax RSS MiB | {reference} RSS MiB | gptjax XLA plan MiB/device |",
        "|---" * 8 + "|",
    ]
    for row in rows:
        ours, theirs = row["gptjax"], row[reference]
        plan = ours["xla_plan_bytes_per_device"]
        lines.append(
            f"| {row['value']:,} | {row['batch']} | {ours['tokens_per_sec']:,.0f} | "
            f"{theirs['tokens_per_sec']:,.0f} | "
            f"{ours['tokens_per_sec'] / theirs['tokens_per_sec']:.2f} | "
            f"{above_baseline(ours):,.0f} | {above_baseline(theirs):,.0f} | "
            f"{'–' if plan is None else f'{plan / MIB:,.0f}'} |"
        )
    return "\n".join(lines)


def describe(args, overrides: list[str]) -> str:
    """The shape every point shares, for the plot's title."""
    from gptjax.config import apply_overrides, load_config_file

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    m = config.model
    return (
        f"{m.num_layers} layers, width {m.embed_dim}, {m.num_heads} heads, float32; sequence "
        f"points {args.tokens} tokens/step, vocab {m.vocab_size}; vocabulary points seq "
        f"{config.data.seq_len} x batch {config.train.global_batch_size}"
    )


def plot(path: str, results: list[dict], reference: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    axes_names = [a for a in ("sequence", "vocabulary") if any(r["axis"] == a for r in results)]
    figure, axes = plt.subplots(2, len(axes_names), figsize=(5 * len(axes_names), 7), squeeze=False)
    for column, axis in enumerate(axes_names):
        rows = [r for r in results if r["axis"] == axis]
        xs = [r["value"] for r in rows]
        speed, memory = axes[0][column], axes[1][column]
        for side, style in (("gptjax", "o-"), (reference, "s-")):
            speed.plot(xs, [r[side]["tokens_per_sec"] for r in rows], style, label=side)
            memory.plot(xs, [above_baseline(r[side]) for r in rows], style, label=f"{side} RSS")
        plans = [r["gptjax"]["xla_plan_bytes_per_device"] for r in rows]
        if all(p is not None for p in plans):
            memory.plot(xs, [p / MIB for p in plans], "o--", label="gptjax XLA plan / device")
        for ax, label in ((speed, "tokens/s"), (memory, "MiB above import baseline")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:,}" for x in xs])
            ax.set_xlabel(axis)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        memory.set_yscale("log")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from gptjax.metrics import ProgressBar

    todo = points(args)
    results = []
    with ProgressBar(len(todo), desc="sweep", unit="point") as bar:
        for index, (axis, value, point) in enumerate(todo):
            row = {"axis": axis, "value": value}
            for side in ("gptjax", args.reference):
                row[side] = measure(args, side, overrides + point)
            row["batch"] = row["gptjax"]["batch"]
            results.append(row)
            bar.update(index + 1)
    markdown = "\n\n".join(
        table(axis, [r for r in results if r["axis"] == axis], args.reference)
        for axis in ("sequence", "vocabulary")
        if any(r["axis"] == axis for r in results)
    )
    print(markdown)
    if args.md:
        Path(args.md).write_text(markdown + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(args.plot, results, args.reference, describe(args, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
