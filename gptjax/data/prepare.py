"""`gptjax prepare`: tokenize sources once, on all cores, into token shards plus a manifest.

Documents stream from the sources (gptjax.data.sources) in a fixed order, are grouped into
batches of about a megabyte of text, and are encoded by worker processes; results are
written back in submission order, so the shards are byte-identical whatever the number of
workers. At most `2 * workers + 2` batches are in flight: memory stays flat for a corpus of
any size. The output format is described in gptjax.data.shards.

TensorFlow is not imported here (workers start fast); only a tfds source imports it.
Workers are started with "spawn", so a script that calls `prepare(..., workers>1)` needs the
usual `if __name__ == "__main__":` guard (the `gptjax prepare` command has it).
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import sentencepiece as spm
from etils import epath

from gptjax.data.shards import (
    FORMAT,
    MANIFEST,
    SPLITS,
    TOKENIZER_DIR,
    ShardWriter,
    token_dtype,
    write_manifest,
)
from gptjax.data.sources import Source, SourceStats, mixture
from gptjax.errors import ConfigError, DataError
from gptjax.metrics import ProgressBar
from gptjax.paths import PathLike, as_path
from gptjax.tokenizer import Tokenizer, train_tokenizer

# 128M tokens: 256 MB shards at uint16, few enough files for a large corpus, small enough
# to re-copy one after damage.
DEFAULT_SHARD_TOKENS = 1 << 27
_BATCH_BYTES = 1 << 20  # text per task sent to a worker

_worker_sp: spm.SentencePieceProcessor | None = None


def documents_to_stream(ids: list[list[int]], bos: int, eos: int, dtype) -> np.ndarray:
    """`[bos] + ids + [eos]` for each document, concatenated, as one array of `dtype`."""
    lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
    out = np.empty(int(lengths.sum()) + 2 * len(ids), dtype)
    starts = np.cumsum(lengths + 2) - (lengths + 2)
    ends = starts + lengths + 1
    body = np.ones(out.size, bool)
    body[starts] = body[ends] = False
    out[starts], out[ends] = bos, eos
    out[body] = np.fromiter(itertools.chain.from_iterable(ids), dtype, count=int(lengths.sum()))
    return out


def _init_worker(model_bytes: bytes) -> None:
    global _worker_sp
    _worker_sp = spm.SentencePieceProcessor(model_proto=model_bytes)


def _encode(texts: list[str], dtype: str) -> np.ndarray:
    sp = _worker_sp
    # One thread per worker: sentencepiece would otherwise start a thread per core in each.
    ids = sp.encode(texts, out_type=int, num_threads=1)
    return documents_to_stream(ids, sp.bos_id(), sp.eos_id(), dtype)


class _Encoder:
    """Encodes batches in order: in this process (workers=1) or in a bounded process pool."""

    def __init__(self, tokenizer: Tokenizer, workers: int, dtype: np.dtype) -> None:
        self.dtype, self.pending = dtype.str, collections.deque()
        self.limit = 2 * workers + 2
        self.pool = None
        if workers > 1:
            # spawn, not fork: a tfds source may have started TensorFlow's threads.
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(tokenizer.model_bytes,),
            )
        else:
            _init_worker(tokenizer.model_bytes)

    def submit(self, texts: list[str], tag) -> Iterator[tuple[np.ndarray, object]]:
        """Queues a batch; yields the (tokens, tag) of batches that must be written first."""
        if self.pool is None:
            yield _encode(texts, self.dtype), tag
            return
        self.pending.append((self.pool.submit(_encode, texts, self.dtype), tag))
        while len(self.pending) >= self.limit:
            future, done_tag = self.pending.popleft()
            yield future.result(), done_tag

    def drain(self) -> Iterator[tuple[np.ndarray, object]]:
        while self.pending:
            future, tag = self.pending.popleft()
            yield future.result(), tag

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _batches(documents: Iterator[tuple[int, bool, str]]):
    """(source index, split, texts, text bytes): batches of one source and split each.

    Each split keeps its own batch, so the few validation documents do not cut the training
    batches short; documents keep their order within each split.
    """
    pending: dict[tuple[int, str], list] = {}  # key -> [texts, utf-8 bytes]
    for index, is_valid, text in documents:
        key = (index, SPLITS[1] if is_valid else SPLITS[0])
        if pending and key[0] != next(iter(pending))[0]:  # a new source: flush the last one's
            yield from ((*k, texts, size) for k, (texts, size) in pending.items())
            pending = {}
        batch = pending.setdefault(key, [[], 0])
        batch[0].append(text)
        batch[1] += len(text.encode("utf-8"))
        if batch[1] >= _BATCH_BYTES:
            yield *key, *batch
            del pending[key]
    yield from ((*k, texts, size) for k, (texts, size) in pending.items())


def _check_fraction(validation_fraction: float) -> None:
    if not 0 < validation_fraction < 1:
        raise ConfigError(
            f"--validation-fraction={validation_fraction} must be in (0, 1), e.g. 0.05"
        )


def train_tokenizer_on(
    sources: list[Source],
    out_dir: PathLike,
    *,
    vocab_size: int,
    model_type: str = "bpe",
    validation_fraction: float = 0.05,
) -> Tokenizer:
    """A tokenizer trained on the training side of `sources` (validation documents unseen)."""
    _check_fraction(validation_fraction)
    stats = [SourceStats() for _ in sources]
    docs = (t for _, valid, t in mixture(sources, validation_fraction, stats) if not valid)
    return train_tokenizer(docs, out_dir, vocab_size=vocab_size, model_type=model_type)


def check_out_dir(out_dir: PathLike) -> epath.Path:
    """`out_dir`, created; ConfigError if it already holds a prepared dataset."""
    out = as_path(out_dir, "--out")
    if (out / MANIFEST).exists():
        raise ConfigError(
            f"--out {out} already holds a prepared dataset ({MANIFEST}); choose a new "
            "directory or delete that one"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare(
    sources: list[Source],
    out_dir: PathLike,
    tokenizer: Tokenizer,
    *,
    validation_fraction: float = 0.05,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    log=print,
    progress: bool = True,
) -> dict:
    """Writes `out_dir` (shards, tokenizer/, manifest.json), returns the manifest."""
    _check_fraction(validation_fraction)
    if shard_tokens < 1:
        raise ConfigError(f"--shard-tokens={shard_tokens} must be positive")
    workers = workers or os.cpu_count() or 1
    out = check_out_dir(out_dir)
    tokenizer.save(out / TOKENIZER_DIR)
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {split: ShardWriter(out, split, dtype, shard_tokens) for split in SPLITS}
    stats = [SourceStats() for _ in sources]
    counts = [collections.Counter() for _ in sources]
    bar = ProgressBar(None, desc="prepare", unit="B", unit_scale=True, enabled=progress)
    encoder, start = _Encoder(tokenizer, workers, dtype), time.perf_counter()

    def write(results) -> None:
        for tokens, (i, split, docs, nbytes) in results:
            writers[split].write(tokens)
            counts[i].update(
                {f"{split}_documents": docs, f"{split}_tokens": tokens.size, "bytes": nbytes}
            )
            bar.update(sum(c["bytes"] for c in counts))

    try:
        for index, split, texts, nbytes in _batches(mixture(sources, validation_fraction, stats)):
            write(encoder.submit(texts, (index, split, len(texts), nbytes)))
        write(encoder.drain())
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        encoder.close()
        bar.close()
    seconds = time.perf_counter() - start
    manifest = _manifest(sources, stats, counts, writers, tokenizer, dtype, validation_fraction)
    manifest["text_bytes"] = sum(c["bytes"] for c in counts)
    manifest["seconds"] = round(seconds, 3)
    write_manifest(out, manifest)
    _report(manifest, out, seconds, log)
    return manifest


def _manifest(sources, stats, counts, writers, tokenizer, dtype, validation_fraction) -> dict:
    splits = {}
    for split, writer in writers.items():
        shards = writer.close()
        docs = sum(c[f"{split}_documents"] for c in counts)
        if not docs:
            raise DataError(
                f"no document landed in the {split} split of {', '.join(s.spec for s in sources)}"
                + (
                    "; raise --validation-fraction or add documents"
                    if split == "valid"
                    else "; the sources hold no text"
                )
            )
        splits[split] = {"documents": docs, "tokens": writer.tokens, "shards": shards}
    return {
        "format": FORMAT,
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
        "dtype": dtype.str,
        "validation_fraction": validation_fraction,
        "sources": [
            {
                "spec": source.spec,
                "weight": source.weight,
                "errors": source.errors,
                "documents_read": stat.documents,
                "replaced_invalid_utf8": stat.replaced,
                "skipped_empty_documents": stat.skipped_empty,
                "text_bytes": count["bytes"],
                **{f"{s}_{k}": count[f"{s}_{k}"] for s in SPLITS for k in ("documents", "tokens")},
            }
            for source, stat, count in zip(sources, stats, counts, strict=True)
        ],
        "splits": splits,
    }


def _report(manifest: dict, out: epath.Path, seconds: float, log) -> None:
    train, valid = manifest["splits"]["train"], manifest["splits"]["valid"]
    mb = manifest["text_bytes"] / 1e6
    log(
        f"prepared {mb:,.1f} MB of text in {seconds:.1f}s ({mb / max(seconds, 1e-9):.2f} MB/s): "
        f"train {train['documents']:,} documents / {train['tokens']:,} tokens in "
        f"{len(train['shards'])} shard(s), validation {valid['documents']:,} / "
        f"{valid['tokens']:,}; manifest {out / MANIFEST}"
    )
    for source in manifest["sources"]:
        if source["replaced_invalid_utf8"] or source["skipped_empty_documents"]:
            log(
                f"{source['spec']}: {source['replaced_invalid_utf8']} invalid UTF-8 sequences "
                f"decoded as U+FFFD, {source['skipped_empty_documents']} whitespace-only "
                "documents skipped"
            )
