"""The data files a user names: paths or globs, local or in a bucket, compressed or not.

`text:`/`jsonl:` sources of `gptjax prepare` and the conversation / preference files of SFT
and DPO all name their files this way, so `gs://bucket/raw/**/*.txt` works wherever
`corpus/**/*.txt` does.
"""

from __future__ import annotations

import bz2
import contextlib
import fnmatch
import glob
import gzip
import lzma
import os
from collections.abc import Iterator
from typing import BinaryIO

from etils import epath

from gptjax.errors import DataError
from gptjax.paths import as_path, is_remote

_DECOMPRESS = {
    ".gz": lambda f: gzip.GzipFile(fileobj=f),
    ".xz": lzma.LZMAFile,
    ".lzma": lzma.LZMAFile,
    ".bz2": bz2.BZ2File,
}


def expand_files(pattern: str, what: str) -> list[epath.Path]:
    """The files a path or glob names (`**` spans folders), sorted; DataError if none.

    `what` names them in errors ("--source", "conversations").
    """
    if not glob.has_magic(pattern):
        path = as_path(pattern, what)
        if path.is_dir():
            raise DataError(f"{path} is a directory; name its files, e.g. '{path}/*.txt'")
        if not path.is_file():
            raise DataError(f"{what} file {path} not found; check the path")
        return [path]
    if is_remote(pattern):
        files = _bucket_glob(pattern, what)
    else:
        files = [epath.Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
    if not files:
        raise DataError(
            f"no file matches {pattern!r}; check the {what} path (quote the glob so gptjax, "
            "not the shell, expands it)"
        )
    return sorted(files, key=str)


def _bucket_glob(pattern: str, what: str) -> list[epath.Path]:
    """Python's glob rules over a bucket (TF's GCS glob has no `**`): every object below the
    pattern's fixed prefix, matched segment by segment."""
    parts = pattern.split("/")
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = as_path("/".join(parts[:first_magic]), what)
    if not root.is_dir():
        return []
    wanted = parts[first_magic:]
    return [path for path, segments in _walk(root, ()) if _matches(segments, wanted)]


def _walk(folder: epath.Path, segments: tuple[str, ...]) -> Iterator[tuple[epath.Path, tuple]]:
    for child in folder.iterdir():
        if child.is_dir():
            yield from _walk(child, (*segments, child.name))
        else:
            yield child, (*segments, child.name)


def _matches(segments: tuple[str, ...], wanted: list[str]) -> bool:
    if not wanted:
        return not segments
    if wanted[0] == "**":  # zero or more folders
        return any(_matches(segments[i:], wanted[1:]) for i in range(len(segments) + 1))
    return (
        bool(segments)
        and not segments[0].startswith(".")  # as glob: * skips hidden names
        and fnmatch.fnmatchcase(segments[0], wanted[0])
        and _matches(segments[1:], wanted[1:])
    )


@contextlib.contextmanager
def open_compressed(path: epath.Path) -> Iterator[BinaryIO]:
    """`path` opened for binary reading, .gz/.xz/.lzma/.bz2 decompressed on the fly."""
    try:
        opened = path.open("rb")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    with opened as raw:
        decompress = _DECOMPRESS.get(path.suffix)
        if decompress is None:
            yield raw
        else:
            with decompress(raw) as f:
                yield f
