"""gptjax against PyTorch on the same GPT-2 training step, timed alternately in one process.

Run:    python tools/bench_torch.py --config configs/nanogpt_cpu.py
        python tools/bench_torch.py --config configs/nanogpt_cpu.py --reference both
        python tools/bench_torch.py --config configs/nanogpt_cpu.py --config.model.vocab_size=65
Needs the `bench` extra (pip install -e '.[bench]': torch's CPU build and transformers).

References (tools/torch_reference.py), each the config's GPT-2 shape in float32 eager mode,
trained by AdamW (fused=False) with global-norm clipping on random tokens of the same batch
shape, the loss at every one of the L positions as gptjax's:
  nanogpt       (default) a plain PyTorch GPT written like nanoGPT's (tools/torch_gpt.py):
                nn.Linear, fused causal scaled_dot_product_attention. The fastest eager
                baseline a user would write.
  transformers  transformers.GPT2LMHeadModel (its default SDPA attention).
  both          the two, each in the rounds.

Each round times --steps gptjax steps, then --steps of each reference (after --warmup untimed
steps of each); a ratio of a round is the reference's median step time over gptjax's. The
sides take turns so that the machine's load drifts over all alike. By default gptjax runs one
simulated host device per core with a data-parallel mesh (--cpu-devices), and PyTorch uses
one thread per core. MFU is against the robust CPU peak (gptjax.train.peak.PeakReadings):
the fastest of many float32 matmuls timed before and after the rounds; their spread is
printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_gpt, torch_reference


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="--config.SECTION.FIELD=VALUE overrides the config, as for `gptjax train`.",
    )
    parser.add_argument("--config", required=True, help="a GPT-2-family config file")
    parser.add_argument(
        "--reference",
        choices=("nanogpt", "transformers", "both"),
        default="nanogpt",
        help="the PyTorch side (default nanogpt: the plain nanoGPT-style model)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=os.cpu_count(),
        help="simulated host devices for gptjax (default: one per core)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    parser.add_argument("--json", metavar="PATH", help="also write the rounds as JSON")
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    args = parser.parse_args(rest)
    return args, overrides


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from gptjax.train.memory_plan import simulate_host_devices

    simulate_host_devices(args.cpu_devices)  # before JAX starts its backend (one per core)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from torch_gpt import check_gpt2_family
    from torch_reference import REFERENCES, TorchTrainer

    from gptjax.config import apply_overrides, load_config_file, model_config
    from gptjax.train.bench import build_bench
    from gptjax.train.peak import PeakReadings

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    shape = model_config(config)
    try:
        check_gpt2_family(shape)
    except ValueError as error:
        sys.exit(f"bench_torch: {error}")
    names = REFERENCES if args.reference == "both" else (args.reference,)
    bench = build_bench(config, data="synthetic", log=lambda _: None)
    references = {name: TorchTrainer(name, config, shape, args.threads) for name in names}
    cpu_peak = PeakReadings().measure()  # before the rounds; again after them
    bench.time_steps(args.warmup)
    for reference in references.values():
        reference.time_steps(args.warmup)
    tokens = bench.tokens_per_step
    print(
        f"{shape.num_layers} layers, width {shape.embed_dim}, seq {config.data.seq_len}, "
        f"batch {config.train.global_batch_size}, vocab {shape.vocab_size}; gptjax mesh "
        f"{dict(bench.mesh.shape)}, torch {args.threads} threads"
    )
    columns = [f"{n} tokens/s" for n in names] + [f"gptjax / {n}" for n in names]
    print("| round | gptjax tokens/s | " + " | ".join(columns) + " |")
    print("|---" * (2 + len(columns)) + "|")
    rounds = []
    for index in range(args.rounds):
        ours = statistics.median(wait + step for wait, step in bench.time_steps(args.steps))
        row = {"gptjax_step_sec": ours}
        for name, reference in references.items():
            theirs = statistics.median(reference.time_steps(args.steps))
            row[f"{name}_step_sec"] = theirs
            row[f"ratio_{name}"] = theirs / ours  # > 1: gptjax is faster
        rounds.append(row)
        speeds = [f"{tokens / row[f'{n}_step_sec']:,.0f}" for n in names]
        ratios = [f"{row[f'ratio_{n}']:.2f}" for n in names]
        print(f"| {index + 1} | {tokens / ours:,.0f} | " + " | ".join(speeds + ratios) + " |")
    cpu_peak.measure()
    summary = {
        "reference": list(names),
        "tokens_per_step": tokens,
        "flops_per_token": bench.flops_per_token,
        "cpu_peak_flops_per_sec": cpu_peak.peak,
        "cpu_peak_readings": cpu_peak.stats(),
    }
    for side in ("gptjax", *names):
        step = statistics.median(r[f"{side}_step_sec"] for r in rounds)
        summary[f"{side}_tokens_per_sec"] = tokens / step
        summary[f"{side}_mfu"] = tokens / step * bench.flops_per_token / cpu_peak.peak
    for name in names:
        summary[f"ratio_{name}_median"] = statistics.median(r[f"ratio_{name}"] for r in rounds)
    medians = ", ".join(f"gptjax / {n} {summary[f'ratio_{n}_median']:.2f}" for n in names)
    mfus = ", ".join(f"{side} {100 * summary[f'{side}_mfu']:.1f}%" for side in ("gptjax", *names))
    print(f"median ratio: {medians}")
    print(f"MFU: {mfus} of {cpu_peak.peak / 1e9:.0f} GFLOP/s ({cpu_peak.describe()})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rounds": rounds, **summary}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
