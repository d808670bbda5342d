"""Token shards on disk: the writer `gptjax prepare` uses, the manifest, and the verified reader.

A prepared directory holds `manifest.json`, `tokenizer/` (the tokenizer the shards were
written with) and `{train,valid}-NNNNN.bin`: raw little-endian token ids (uint16 when the
vocabulary fits, else uint32), the documents of a split as `<s> ids </s>` concatenated and
cut into shards of at most `shard_tokens` tokens (a document may straddle two shards). The
manifest records each shard's token count, sha256 and largest id. Readers memory-map the
shards, so a corpus larger than memory trains without being loaded.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from etils import epath

from gptjax.errors import DataError
from gptjax.metrics import ProgressBar
from gptjax.paths import PathLike, as_path, file_size, inside, is_cached, local_copy
from gptjax.tokenizer import Tokenizer, load_tokenizer

FORMAT = "gptjax-prepared-v1"
MANIFEST, TOKENIZER_DIR = "manifest.json", "tokenizer"
SPLITS = ("train", "valid")
_VERIFY_CHUNK = 1 << 24  # tokens hashed and range-checked per read (32-64 MB)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardedTokens:
    """One token stream stored as consecutive arrays (memory-mapped shards or one ndarray)."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = [a for a in arrays if a.size]
        self.offsets = np.cumsum([0] + [a.size for a in self.arrays]).tolist()

    @classmethod
    def from_array(cls, stream: np.ndarray) -> ShardedTokens:
        return cls([np.asarray(stream)])

    @property
    def size(self) -> int:
        """Tokens in the stream (numpy's name, so code that logs `stream.size` works)."""
        return self.offsets[-1]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) as int32, read across shard boundaries."""
        parts, at = [], start
        i = bisect.bisect_right(self.offsets, start) - 1
        while at < stop:
            local = at - self.offsets[i]
            take = min(stop, self.offsets[i + 1]) - at
            parts.append(self.arrays[i][local : local + take])
            at, i = at + take, i + 1
        if len(parts) == 1:
            return parts[0].astype(np.int32)
        return np.concatenate(parts).astype(np.int32)

    def rows(self, row_ids: np.ndarray, seq_len: int) -> np.ndarray:
        """[n, seq_len + 1] int32: row r is tokens [r*seq_len, r*seq_len + seq_len + 1)."""
        row_ids = np.asarray(row_ids, np.int64)
        if len(self.arrays) == 1:  # one vectorised gather
            index = row_ids[:, None] * seq_len + np.arange(seq_len + 1)
            return self.arrays[0][index].astype(np.int32)
        out = np.empty((row_ids.shape[0], seq_len + 1), np.int32)
        for i, r in enumerate(row_ids.tolist()):
            out[i] = self.read(r * seq_len, r * seq_len + seq_len + 1)
        return out


class ShardWriter:
    """Appends tokens to `{split}-NNNNN.bin` files of at most `shard_tokens` tokens each."""

    def __init__(self, out_dir: epath.Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict] = []
        self._file = None

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        # epath opens a bucket file as a context manager; the stack closes either kind.
        self._closer = contextlib.ExitStack()
        self._file = self._closer.enter_context((self.out_dir / f".{name}.tmp").open("wb"))
        self._hash = hashlib.sha256()
        self.shards.append({"file": name, "tokens": 0, "sha256": "", "max_token_id": -1})

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens, self.dtype)
        while tokens.size:
            if self._file is None:
                self._open()
            shard = self.shards[-1]
            piece, tokens = np.split(tokens, [self.shard_tokens - shard["tokens"]])
            data = piece.tobytes()
            self._file.write(data)
            self._hash.update(data)
            shard["tokens"] += piece.size
            shard["max_token_id"] = max(shard["max_token_id"], int(piece.max()))
            if shard["tokens"] == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        self._closer.close()
        self._file = None
        shard = self.shards[-1]
        shard["sha256"] = self._hash.hexdigest()
        (self.out_dir / f".{shard['file']}.tmp").replace(self.out_dir / shard["file"])

    def abort(self) -> None:
        """Deletes the shard being written (finished shards stay; no manifest lists them)."""
        if self._file is not None:
            self._closer.close()
            self._file = None
            (self.out_dir / f".{self.shards[-1]['file']}.tmp").unlink(missing_ok=True)

    def close(self) -> list[dict]:
        """Finishes the last shard; returns the manifest's shard entries."""
        if self._file is not None:
            self._finish()
        return self.shards

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards)


def write_manifest(out_dir: epath.Path, manifest: dict) -> epath.Path:
    """Written last and renamed into place: a directory with a manifest is complete."""
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out_dir / MANIFEST)
    return out_dir / MANIFEST


def read_manifest(prepared_dir: PathLike) -> dict:
    path = as_path(prepared_dir, "prepared directory") / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{path} not found: {prepared_dir} is not a prepared dataset; create it with "
            "`gptjax prepare --source ... --out DIR` (an interrupted prepare leaves no manifest)"
        )
    shard_names = []
    try:
        manifest = json.loads(path.read_text())
        if manifest["format"] != FORMAT:
            raise ValueError(f"format {manifest['format']!r}, expected {FORMAT!r}")
        for split in SPLITS:
            for shard in manifest["splits"][split]["shards"]:
                int(shard["tokens"]), str(shard["sha256"])
                shard_names.append(shard["file"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is corrupt ({e!r}); re-run gptjax prepare") from None
    for name in shard_names:  # joined to the directory later: none may lead out of it
        inside(path.parent, name, str(path))
    return manifest


@dataclasses.dataclass(frozen=True)
class ShardFile:
    path: epath.Path
    tokens: np.ndarray  # memory-mapped
    entry: dict  # its manifest entry: file, tokens, sha256, max_token_id


@dataclasses.dataclass(frozen=True)
class Prepared:
    tokenizer: Tokenizer
    train: ShardedTokens
    valid: ShardedTokens
    manifest: dict
    directory: epath.Path
    files: tuple[ShardFile, ...]  # every shard of both splits, in manifest order


def _tokenizer(prepared_dir: epath.Path, manifest: dict, tokenizer_path: str) -> Tokenizer:
    tokenizer = load_tokenizer(tokenizer_path or prepared_dir / TOKENIZER_DIR)
    expected = manifest["tokenizer"]["sha256"]
    if tokenizer.sha256 != expected:
        raise DataError(
            f"tokenizer {tokenizer_path or prepared_dir / TOKENIZER_DIR} (sha256 "
            f"{tokenizer.sha256[:12]}…) is not the one {prepared_dir} was prepared with "
            f"({expected[:12]}…); set data.tokenizer='' to use {prepared_dir / TOKENIZER_DIR}, "
            "or re-run gptjax prepare with this tokenizer"
        )
    return tokenizer


def _open_shard(path: epath.Path, entry: dict, dtype: np.dtype, progress=None) -> np.ndarray:
    if not path.is_file():
        raise DataError(
            f"shard {path} listed in the manifest is missing; restore it or re-run gptjax prepare"
        )
    expected = entry["tokens"] * dtype.itemsize
    actual = file_size(path)
    if actual != expected:
        state = "truncated" if actual < expected else "longer than the manifest says"
        raise DataError(
            f"shard {path} is {actual:,} bytes but the manifest records {entry['tokens']:,} "
            f"tokens ({expected:,} bytes): {state}; restore it or re-run gptjax prepare"
        )
    if not expected:
        return np.zeros(0, dtype)
    # Rows are read at random offsets: a shard in a bucket is copied to this host's disk once.
    local = local_copy(path, entry["sha256"], expected, progress)
    return np.memmap(local, dtype=dtype, mode="r").view(np.ndarray)


def _verify_shard(path: epath.Path, tokens: np.ndarray, entry: dict, vocab_size: int) -> None:
    """sha256 against the manifest, then every id < vocab_size; DataError naming the file."""
    digest, bad = hashlib.sha256(), None
    for start in range(0, tokens.size, _VERIFY_CHUNK):
        chunk = tokens[start : start + _VERIFY_CHUNK]
        digest.update(chunk)
        if bad is None and chunk.size and int(chunk.max()) >= vocab_size:
            bad = start + int(np.argmax(chunk >= vocab_size))
    if digest.hexdigest() != entry["sha256"]:
        raise DataError(
            f"shard {path} has sha256 {digest.hexdigest()[:12]}… but the manifest records "
            f"{entry['sha256'][:12]}…: the file was modified or damaged; restore it or re-run "
            "gptjax prepare"
        )
    if bad is not None:
        _bad_id(path, int(tokens[bad]), bad, vocab_size)


def _bad_id(path: epath.Path, token: int, index, vocab_size: int) -> None:
    raise DataError(
        f"shard {path} holds token id {token} (at token {index}) but the tokenizer has "
        f"{vocab_size} pieces: the shard was written with another tokenizer; re-run gptjax "
        "prepare with this tokenizer"
    )


def open_prepared(prepared_dir: PathLike, tokenizer_path: str = "") -> Prepared:
    """Tokenizer and memory-mapped splits of a prepared directory; reads no shard.

    Checked: manifest readable, tokenizer hash equal to the manifest's, every shard present at
    its exact size. `verify_shards` (or `check_manifest_ids`) checks the contents.
    """
    prepared_dir = as_path(prepared_dir, "data.prepared_dir")
    manifest = read_manifest(prepared_dir)
    tokenizer = _tokenizer(prepared_dir, manifest, tokenizer_path)
    dtype = np.dtype(manifest["dtype"])
    splits, files = {}, []
    with _fetch_progress(prepared_dir, manifest, dtype) as progress:
        for split in SPLITS:
            arrays = []
            for entry in manifest["splits"][split]["shards"]:
                path = prepared_dir / entry["file"]
                arrays.append(_open_shard(path, entry, dtype, progress))
                files.append(ShardFile(path, arrays[-1], entry))
            splits[split] = ShardedTokens(arrays)
            if splits[split].size < 2:
                raise DataError(
                    f"{prepared_dir} has no {split} tokens; re-run gptjax prepare with more "
                    "text" + (" or a larger --validation-fraction" if split == "valid" else "")
                )
    return Prepared(
        tokenizer, splits["train"], splits["valid"], manifest, prepared_dir, tuple(files)
    )


@contextlib.contextmanager
def _fetch_progress(prepared_dir: epath.Path, manifest: dict, dtype: np.dtype):
    """`progress(bytes)` for the shard downloads: a byte bar when a bucket dataset has shards
    not yet in this host's cache (copying a corpus takes minutes), else silent."""
    missing = 0
    for split in SPLITS:
        for entry in manifest["splits"][split]["shards"]:
            size = entry["tokens"] * dtype.itemsize
            if not is_cached(prepared_dir / entry["file"], entry["sha256"], size):
                missing += size
    bar = ProgressBar(missing, desc="fetch shards", unit="B", unit_scale=True, enabled=missing > 0)
    done = 0

    def progress(size: int) -> None:
        nonlocal done
        done += size
        bar.update(done)

    try:
        yield progress
    finally:
        bar.close()


def check_manifest_ids(prepared: Prepared) -> None:
    """Without hashing: the manifest's largest id of each shard is below the vocabulary."""
    for shard in prepared.files:
        if shard.entry["max_token_id"] >= prepared.tokenizer.vocab_size:
            _bad_id(shard.path, shard.entry["max_token_id"], "?", prepared.tokenizer.vocab_size)


def verify_shards(files: Sequence[ShardFile], vocab_size: int) -> str:
    """Each shard's sha256 against the manifest and every id < vocab_size, on all cores.

    Returns the first problem as a one-line message ("" when all are sound), so processes can
    exchange it; `load_prepared` raises it.
    """

    def check(shard: ShardFile) -> str:
        try:
            _verify_shard(shard.path, shard.tokens, shard.entry, vocab_size)
        except DataError as error:
            return str(error)
        return ""

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # hashlib and numpy drop the GIL
        return next((problem for problem in pool.map(check, files) if problem), "")


def load_prepared(
    prepared_dir: PathLike, tokenizer_path: str = "", *, verify: bool = True, log=print
) -> Prepared:
    """`open_prepared`, then with `verify` every shard's sha256 and ids (reads all shards
    once); without it, the manifest's largest ids. A training run verifies once per dataset
    instead (`gptjax.data.shard_verify`)."""
    prepared = open_prepared(prepared_dir, tokenizer_path)
    if not verify:
        check_manifest_ids(prepared)
        log(f"data.verify_shards=False: sha256 of the shards in {prepared_dir} not checked")
    elif problem := verify_shards(prepared.files, prepared.tokenizer.vocab_size):
        raise DataError(problem)
    return prepared


def token_counts(tokens: ShardedTokens, vocab_size: int) -> np.ndarray:
    """How often each id occurs in the stream (int64 [vocab_size]), read in chunks."""
    counts = np.zeros(vocab_size, np.int64)
    for array in tokens.arrays:
        for start in range(0, array.size, _VERIFY_CHUNK):
            counts += np.bincount(array[start : start + _VERIFY_CHUNK], minlength=vocab_size)
    return counts
