"""How a train step's cost grows with sequence length and depth: a table of `gptjax bench` runs.

Run:    python tools/bench_scaling.py --config configs/nanogpt_cpu.py
        python tools/bench_scaling.py --config configs/nanogpt_cpu.py --seq 256 512 --layers 6

Each point is one `gptjax bench` in its own process (synthetic tokens), so memory and
compiled code do not carry over. Sequence points keep the tokens per step fixed (batch =
--tokens / seq), so "ms per 1k tokens" isolates what length costs: attention grows as L per
token, the rest stays flat. Layer points use the config's own sequence length and batch.
Extra --config.* overrides apply to every point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="config file")
    parser.add_argument("--seq", type=int, nargs="*", default=[256, 512, 1024, 2048])
    parser.add_argument("--layers", type=int, nargs="*", default=[6, 12, 24])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step, seq points")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per point")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per point")
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    args = parser.parse_args(rest)
    return args, overrides


def bench_point(args, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "gptjax.cli", "bench", "--config", args.config]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--json", "-"]
    result = subprocess.run(
        command + [f"--config.{o}" for o in overrides],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if result.returncode != 0:
        sys.exit(f"bench_scaling: {' '.join(overrides)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout[result.stdout.index("{") :])


def row(label: str, report: dict) -> str:
    tokens = report["config"]["global_batch_size"] * report["config"]["seq_len"]
    step = report["step_sec"]["median"]
    return (
        f"| {label} | {report['config']['global_batch_size']} | {step * 1e3:,.0f} | "
        f"{1e6 * step / tokens:.1f} | {report['tokens_per_sec']:,.0f} | "
        f"{report['flops_per_token'] / 1e6:.1f} | {100 * report['mfu']:.1f}% |"
    )


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    header = (
        "| {} | batch | step ms | ms per 1k tokens | tokens/s | MFLOP/token | MFU |\n"
        "|---|---|---|---|---|---|---|"
    )
    print(header.format("sequence"))
    for seq in args.seq:
        if args.tokens % seq:
            sys.exit(f"bench_scaling: --tokens {args.tokens} is not a multiple of seq {seq}")
        point = [
            f"data.seq_len={seq}",
            f"model.max_seq_len={seq}",
            f"train.global_batch_size={args.tokens // seq}",
        ]
        print(row(str(seq), bench_point(args, overrides + point)), flush=True)
    print("\n" + header.format("layers"))
    for layers in args.layers:
        point = [f"model.num_layers={layers}"]
        print(row(str(layers), bench_point(args, overrides + point)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
