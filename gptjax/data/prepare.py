"""`gptjax prepare`: tokenize sources once, on all cores, into token shards plus a manifest.

Documents stream from the sources (gptjax.data.sources) in a fixed order, are grouped into
batches of about a megabyte of text, and are encoded by worker processes; results are
written back in submission order, so the shards are byte-identical whatever the number of
workers. At most `2 * workers + 2` batches are in flight: memory stays flat for a corpus of
any size. The output format is described in gptjax.data.shards.

Before a tokenizer is trained or a token written, the split is surveyed (gptjax.data.splits):
one that cannot work stops there. On any failure `--out` is left as it was (absent, or an
empty directory): what was written is removed, in a bucket too.

TensorFlow is not imported here (workers start fast); only a tfds source imports it.
Workers are started with "spawn", so a script that calls `prepare(..., workers>1)` needs the
usual `if __name__ == "__main__":` guard (the `gptjax prepare` command has it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
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
from gptjax.data.splits import DEFAULT_SPLIT, HashSplit, Split, survey
from gptjax.errors import ConfigError, DataError
from gptjax.metrics import ProgressBar
from gptjax.paths import PathLike, as_path, is_remote
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


@dataclasses.dataclass
class _Batch:
    texts: list[str] = dataclasses.field(default_factory=list)
    bytes: int = 0  # UTF-8 bytes of the texts
    chars: int = 0  # their characters


def _batches(documents: Iterator[tuple[int, bool, str]]) -> Iterator[tuple[int, str, _Batch]]:
    """(source index, split, batch): batches of one source and split each.

    Each split keeps its own batch, so the few validation documents do not cut the training
    batches short; documents keep their order within each split.
    """
    pending: dict[tuple[int, str], _Batch] = {}
    for index, is_valid, text in documents:
        key = (index, SPLITS[1] if is_valid else SPLITS[0])
        if pending and key[0] != next(iter(pending))[0]:  # a new source: flush the last one's
            yield from ((*k, batch) for k, batch in pending.items())
            pending = {}
        batch = pending.setdefault(key, _Batch())
        batch.texts.append(text)
        batch.bytes += len(text.encode("utf-8"))
        batch.chars += len(text)
        if batch.bytes >= _BATCH_BYTES:
            yield *key, batch
            del pending[key]
    yield from ((*k, batch) for k, batch in pending.items())


@dataclasses.dataclass(frozen=True)
class NewTokenizer:
    """A tokenizer for `prepare` to train on the training side of its sources."""

    vocab_size: int
    model_type: str = "bpe"


def train_tokenizer_on(
    sources: list[Source],
    out_dir: PathLike,
    *,
    vocab_size: int,
    model_type: str = "bpe",
    split: Split = DEFAULT_SPLIT,
) -> Tokenizer:
    """A tokenizer trained on the training side of `sources` (validation text unseen).

    A tail split must have been through `splits.survey` (it sets where to cut).
    """
    stats = [SourceStats() for _ in sources]
    docs = (t for _, valid, t in mixture(sources, split, stats) if not valid)
    return train_tokenizer(docs, out_dir, vocab_size=vocab_size, model_type=model_type)


def check_out_dir(out_dir: PathLike) -> epath.Path:
    """`out_dir` as a path; ConfigError unless it is absent or an empty directory."""
    out = as_path(out_dir, "--out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a new directory for the prepared data")
    if (out / MANIFEST).exists():
        raise ConfigError(
            f"--out {out} already holds a prepared dataset ({MANIFEST}); choose a new "
            "directory or delete that one"
        )
    held = sorted(child.name for child in out.iterdir()) if out.exists() else []
    if held:
        raise ConfigError(
            f"--out {out} is not empty (holds {', '.join(held[:3])}"
            f"{', ...' if len(held) > 3 else ''}); name a new or empty directory (files left "
            "by a prepare that was killed can be deleted)"
        )
    return out


@contextlib.contextmanager
def _removed_on_failure(out: epath.Path) -> Iterator[None]:
    """Runs the body with `out` created; on any failure removes what it wrote, leaving `out`
    as it was (absent or empty). The manifest is written last, so until then nothing here is
    taken for a dataset."""
    existed = out.exists()
    created = out  # the outermost folder this creates (a bucket has no folders to create)
    while not is_remote(out) and not created.parent.exists():
        created = created.parent
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if not existed:
            created.rmtree(missing_ok=True)
        else:
            for child in out.iterdir():
                child.rmtree() if child.is_dir() else child.unlink()
        raise


def prepare(
    sources: list[Source],
    out_dir: PathLike,
    tokenizer: Tokenizer | NewTokenizer,
    *,
    split: Split = DEFAULT_SPLIT,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    log=print,
    progress: bool = True,
) -> dict:
    """Writes `out_dir` (shards, tokenizer/, manifest.json), returns the manifest.

    `tokenizer` is an existing one or a `NewTokenizer` to train (on the training text only).
    With a `SourceSplit`, `sources` ends with the validation sources.
    """
    if shard_tokens < 1:
        raise ConfigError(
            f"--shard-tokens={shard_tokens} must be at least 1 (leave it out for the default, "
            "2**27)"
        )
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers={workers} must be at least 1 (leave it out for all cores)")
    workers = workers or os.cpu_count() or 1
    out = check_out_dir(out_dir)
    split = survey(sources, split)
    with _removed_on_failure(out):
        if isinstance(tokenizer, NewTokenizer):
            log(f"training a {tokenizer.model_type} tokenizer of {tokenizer.vocab_size} pieces ...")
            tokenizer = train_tokenizer_on(
                sources,
                out / TOKENIZER_DIR,
                vocab_size=tokenizer.vocab_size,
                model_type=tokenizer.model_type,
                split=split,
            )
        else:
            tokenizer.save(out / TOKENIZER_DIR)
        return _tokenize(sources, out, tokenizer, split, workers, shard_tokens, log, progress)


def _tokenize(sources, out, tokenizer, split, workers, shard_tokens, log, progress) -> dict:
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {name: ShardWriter(out, name, dtype, shard_tokens) for name in SPLITS}
    stats = [SourceStats() for _ in sources]
    counts = [collections.Counter() for _ in sources]
    bar = ProgressBar(None, desc="prepare", unit="B", unit_scale=True, enabled=progress)
    encoder, start = _Encoder(tokenizer, workers, dtype), time.perf_counter()

    def write(results) -> None:
        for tokens, (i, name, batch) in results:
            writers[name].write(tokens)
            counts[i].update(
                {
                    f"{name}_documents": len(batch.texts),
                    f"{name}_tokens": tokens.size,
                    f"{name}_text_bytes": batch.bytes,
                    f"{name}_text_chars": batch.chars,
                    "bytes": batch.bytes,
                }
            )
            bar.update(sum(c["bytes"] for c in counts))

    try:
        for index, name, batch in _batches(mixture(sources, split, stats)):
            write(encoder.submit(batch.texts, (index, name, batch)))
        write(encoder.drain())
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        encoder.close()
        bar.close()
    seconds = time.perf_counter() - start
    manifest = _manifest(sources, stats, counts, writers, tokenizer, dtype, split)
    manifest["text_bytes"] = sum(c["bytes"] for c in counts)
    manifest["seconds"] = round(seconds, 3)
    write_manifest(out, manifest)
    _report(manifest, out, seconds, log)
    return manifest


_SPLIT_COUNTS = ("documents", "tokens", "text_bytes", "text_chars")


def _manifest(sources, stats, counts, writers, tokenizer, dtype, split: Split) -> dict:
    splits = {}
    for name, writer in writers.items():
        shards = writer.close()
        docs = sum(c[f"{name}_documents"] for c in counts)
        if not docs:  # the survey catches this before tokenizing; a backstop
            raise DataError(
                f"no document landed in the {name} split of {', '.join(s.spec for s in sources)}"
            )
        splits[name] = {
            "documents": docs,
            "tokens": writer.tokens,
            # The text the split's tokens encode (UTF-8 of the decoded text; a weight of 2
            # counts it twice): what bits per byte and per character are measured against.
            "text_bytes": sum(c[f"{name}_text_bytes"] for c in counts),
            "text_chars": sum(c[f"{name}_text_chars"] for c in counts),
            "shards": shards,
        }
    first_valid = getattr(split, "first_valid", len(sources))
    return {
        "format": FORMAT,
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
        "dtype": dtype.str,
        **({"validation_fraction": split.fraction} if isinstance(split, HashSplit) else {}),
        "validation": split.describe(),
        "sources": [
            {
                "spec": source.spec,
                "role": "valid" if index >= first_valid else "train",
                "weight": source.weight,
                "errors": source.errors,
                "documents_read": stat.documents,
                "replaced_invalid_utf8": stat.replaced,
                "skipped_empty_documents": stat.skipped_empty,
                "text_bytes": count["bytes"],
                **{f"{s}_{k}": count[f"{s}_{k}"] for s in SPLITS for k in _SPLIT_COUNTS},
            }
            for index, (source, stat, count) in enumerate(zip(sources, stats, counts, strict=True))
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
