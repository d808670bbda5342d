"""Summarise a run's metrics.jsonl: median tokens/s and MFU, compile time, final losses.

Usage:  python tools/summarize_run.py runs/demo [--skip-first 1] [--json]

Medians over the logged windows (each window averages `train.log_every` steps); the first
window(s) can be skipped because they include warm-up after compilation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from gptjax.errors import GptjaxError
from gptjax.metrics import read_metrics


def summarize(workdir: str, skip_first: int = 1) -> dict:
    records = read_metrics(f"{workdir}/metrics.jsonl")
    train = [r for r in records if "tokens_per_sec" in r][skip_first:]
    evals = [r for r in records if "eval/loss" in r]
    compiles = [r["compile_sec"] for r in records if "compile_sec" in r]
    if not train:
        raise GptjaxError(f"{workdir}/metrics.jsonl has no training windows to summarise")
    median = lambda key: statistics.median(r[key] for r in train)
    return {
        "windows": len(train),
        "tokens_per_sec_median": median("tokens_per_sec"),
        "tokens_per_sec_min": min(r["tokens_per_sec"] for r in train),
        "tokens_per_sec_max": max(r["tokens_per_sec"] for r in train),
        "mfu_median": median("mfu"),
        "input_wait_fraction_median": median("input_wait_fraction"),
        "compile_sec": compiles[-1] if compiles else None,
        "final_train_loss": train[-1]["loss"],
        "final_eval_loss": evals[-1]["eval/loss"] if evals else None,
        # Runs from before the loss was also counted per byte have none.
        "final_eval_bits_per_byte": evals[-1].get("eval/bits_per_byte") if evals else None,
        "final_step": train[-1]["step"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="a gptjax workdir holding metrics.jsonl")
    parser.add_argument("--skip-first", type=int, default=1, help="windows to skip (warm-up)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args()
    try:
        summary = summarize(args.workdir, args.skip_first)
    except GptjaxError as error:
        print(f"summarize_run: error: {error}", file=sys.stderr)
        return error.exit_code
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:28s} {value:.4g}" if isinstance(value, float) else f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
