"""Plain vs chunked output head (`model.head_chunk_len`): train-step speed, interleaved.

Builds the config's train step twice in one process, once with the whole [B, L, V] logits
(head_chunk_len=0) and once chunked, then times them in alternating rounds so that both
see the same machine load; prints each round and the medians. Peak memory cannot be told
apart within one process: measure it with one `gptjax bench` per variant (docs/benchmarks.md,
"Chunked output head").

    python tools/bench_head.py --config configs/nanogpt_cpu.py --chunk-len 64 --rounds 5
    python tools/bench_head.py --config configs/nanogpt_cpu.py --chunk-len 64 \
        --config.model.vocab_size=50304
"""

from __future__ import annotations

import argparse
import statistics
import sys

from gptjax.config import apply_overrides, load_config_file
from gptjax.metrics import ProgressBar
from gptjax.train.bench import build_bench


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config file, e.g. configs/nanogpt_cpu.py")
    parser.add_argument("--chunk-len", type=int, required=True, help="model.head_chunk_len")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    return args, [o.removeprefix("--config.") for o in overrides]


def main(argv=None) -> int:
    args, overrides = _parse(sys.argv[1:] if argv is None else argv)
    benches = {}
    for chunk_len in (0, args.chunk_len):
        config = load_config_file(args.config)
        apply_overrides(config, [*overrides, f"model.head_chunk_len={chunk_len}"])
        bench = build_bench(config, log=lambda line: print(line, file=sys.stderr))
        bench.time_steps(args.warmup)
        benches[chunk_len] = bench
    names = {0: "plain", args.chunk_len: f"chunked({args.chunk_len})"}
    tokens = {c: b.tokens_per_step for c, b in benches.items()}
    rates = {c: [] for c in benches}
    with ProgressBar(args.rounds, desc="rounds", unit="round") as bar:
        for round_index in range(args.rounds):
            for chunk_len, bench in benches.items():
                step_sec = statistics.median(t for _, t in bench.time_steps(args.steps))
                rates[chunk_len].append(tokens[chunk_len] / step_sec)
            bar.update(round_index + 1, plain=rates[0][-1], chunked=rates[args.chunk_len][-1])
    for round_index in range(args.rounds):
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{names[c]} {rates[c][round_index]:,.0f} tokens/s" for c in benches)
        )
    plain, chunked = (statistics.median(rates[c]) for c in benches)
    ratios = [c / p for p, c in zip(*rates.values(), strict=True)]
    print(
        f"median tokens/s: plain {plain:,.0f}, chunked({args.chunk_len}) {chunked:,.0f}; "
        f"chunked/plain per round: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
