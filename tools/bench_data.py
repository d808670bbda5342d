"""Data benchmarks: prepare throughput, pipeline tokens/s from shards, time to first batch.

Run:    .venv/bin/python tools/bench_data.py --corpus ../shared/corpora/pretrain \
            --workdir /tmp/bench_data
Prints a markdown table (the figures docs/benchmarks.md records) and writes results.json.

1. A BPE tokenizer of --vocab-size pieces (gpt2_124m's 32768) is trained on the corpus,
   once, reused from the workdir on later runs (its time is reported, not part of 2).
2. `gptjax prepare` on the corpus (*.txt.xz read as such, documents split on "\\n\\n\\n")
   with --workers processes: MB of text per second, decompression included.
3. Training input as the trainer reads it (`train_dataset(TokenRows(...)).as_numpy_iterator()`):
   gpt2_124m rows (seq 1024) from the memory-mapped shards, packed, for a host holding the
   whole 512-row global batch and for one of 8 hosts (64 rows).
4. Time to the first batch when a run resumes at step 0, 1,000 and 1,000,000.
5. What gpt2_124m consumes per TPU host at a given MFU (datasheet peaks), for comparison.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptjax.config import load_config_file, model_config  # noqa: E402
from gptjax.data.prepare import prepare, train_tokenizer_on  # noqa: E402
from gptjax.data.shards import load_prepared  # noqa: E402
from gptjax.data.sources import parse_sources  # noqa: E402
from gptjax.data.token_rows import TokenRows  # noqa: E402
from gptjax.model import flops_per_token  # noqa: E402
from gptjax.tokenizer import Tokenizer, load_tokenizer  # noqa: E402

# (host, chips per host, bf16 peak per chip) from gptjax/train/peak.py's datasheet table.
TPU_HOSTS = (("v4-8", 4, 275e12), ("v5e-8", 8, 197e12), ("v5p-8", 4, 459e12), ("v6e-8", 8, 918e12))


def _tokenizer(sources, workdir: Path, vocab_size: int) -> tuple[Tokenizer, float | None]:
    path = workdir / f"tokenizer-{vocab_size}"
    if (path / "tokenizer.model").is_file():
        return load_tokenizer(path), None
    start = time.perf_counter()
    tokenizer = train_tokenizer_on(sources, path, vocab_size=vocab_size)
    return tokenizer, time.perf_counter() - start


def _prepare(sources, workdir: Path, tokenizer: Tokenizer, workers: int) -> dict:
    out = workdir / "prepared"
    shutil.rmtree(out, ignore_errors=True)
    manifest = prepare(sources, out, tokenizer, workers=workers)
    return {
        "prepare_mb": manifest["text_bytes"] / 1e6,
        "prepare_sec": manifest["seconds"],
        "prepare_mb_per_sec": manifest["text_bytes"] / 1e6 / manifest["seconds"],
        "train_tokens": manifest["splits"]["train"]["tokens"],
        "documents": sum(manifest["splits"][s]["documents"] for s in ("train", "valid")),
    }


def _pipeline(tokens, tok, *, seq_len: int, global_batch: int, hosts: int, batches: int):
    """Tokens/s of one host's batches, after a warm-up of 3 batches."""
    from gptjax.data.pipeline import train_dataset

    dataset = train_dataset(
        TokenRows(tokens, seq_len=seq_len, bos_id=tok.bos_id, pad_id=tok.pad_id),
        global_batch=global_batch,
        seed=0,
        process_index=hosts - 1,
        process_count=hosts,
    )
    iterator = dataset.as_numpy_iterator()
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    seconds = time.perf_counter() - start
    return batches * batch["inputs"].size / seconds


def _first_batch_sec(tokens, tok, step: int, *, seq_len: int, global_batch: int) -> float:
    from gptjax.data.pipeline import train_dataset

    start = time.perf_counter()
    dataset = train_dataset(
        TokenRows(tokens, seq_len=seq_len, bos_id=tok.bos_id, pad_id=tok.pad_id),
        global_batch=global_batch,
        seed=0,
        start_step=step,
    )
    next(dataset.as_numpy_iterator())
    return time.perf_counter() - start


def _consumers(mfu: float) -> dict[str, float]:
    config = load_config_file(ROOT / "configs" / "gpt2_124m.py")
    flops = flops_per_token(model_config(config), config.data.seq_len)
    return {host: chips * peak * mfu / flops for host, chips, peak in TPU_HOSTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="folder of *.txt.xz documents")
    parser.add_argument("--workdir", required=True, help="scratch folder (tokenizer, shards)")
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30, help="batches timed per pipeline run")
    parser.add_argument("--mfu", type=float, default=0.5, help="MFU assumed for consumers")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sources = parse_sources([f"text:{args.corpus}/*.txt.xz,sep=\\n\\n\\n"])
    tok, tokenizer_sec = _tokenizer(sources, workdir, args.vocab_size)
    results = {"tokenizer_train_sec": tokenizer_sec}
    results.update(_prepare(sources, workdir, tok, args.workers))
    start = time.perf_counter()
    data = load_prepared(workdir / "prepared")
    results["load_verify_sec"] = time.perf_counter() - start
    shape = dict(seq_len=1024, global_batch=512)
    for hosts in (1, 8):
        results[f"tokens_per_sec_{hosts}_hosts"] = statistics.median(
            _pipeline(data.train, tok, **shape, hosts=hosts, batches=args.batches) for _ in range(3)
        )
    for step in (0, 1000, 1_000_000):
        results[f"first_batch_sec_step_{step}"] = statistics.median(
            _first_batch_sec(data.train, tok, step, **shape) for _ in range(5)
        )
    results["consumer_tokens_per_sec"] = _consumers(args.mfu)
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    _print_table(results, args)


def _print_table(r: dict, args) -> None:
    rows = [
        ("tokenizer training (BPE)", f"{r['tokenizer_train_sec'] or 0:.0f} s (0 = reused)"),
        (
            f"`prepare`, {args.workers} workers",
            f"{r['prepare_mb_per_sec']:.2f} MB/s ({r['prepare_mb']:.1f} MB, {r['documents']:,} "
            f"documents, {r['train_tokens']:,} train tokens, {r['prepare_sec']:.1f} s)",
        ),
        ("load + verify shards (sha256, id range)", f"{r['load_verify_sec']:.2f} s"),
        ("pipeline, 1 host × 512 rows × 1024", f"{r['tokens_per_sec_1_hosts'] / 1e6:.1f} M tok/s"),
        ("pipeline, 1 of 8 hosts × 64 rows", f"{r['tokens_per_sec_8_hosts'] / 1e6:.1f} M tok/s"),
    ]
    rows += [
        (f"first batch, resuming at step {s:,}", f"{r[f'first_batch_sec_step_{s}']:.3f} s")
        for s in (0, 1000, 1_000_000)
    ]
    rows += [
        (f"gpt2_124m consumes on a {host} host at {args.mfu:.0%} MFU", f"{tps / 1e6:.2f} M tok/s")
        for host, tps in r["consumer_tokens_per_sec"].items()
    ]
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
