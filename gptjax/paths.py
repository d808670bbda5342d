"""One path type for every path a user gives: a local path or a `gs://` URL, used alike.

Paths are `etils.epath.Path`: a local path behaves as `pathlib.Path`; `gs://bucket/dir` goes
through TensorFlow's file system (the one `tf.data` and TensorBoard use too), while Orbax
writes checkpoint arrays to it with TensorStore. `pathlib.Path("gs://b/run")` would be the
local directory `gs:/b/run`, so every user-given path enters through `as_path`, which also
refuses schemes gptjax has not been tested with instead of writing a local folder.
"""

from __future__ import annotations

import os

from etils import epath

from gptjax.errors import ConfigError, DataError

SUPPORTED_SCHEMES = ("gs",)

PathLike = str | os.PathLike


def as_path(value: PathLike, what: str = "path") -> epath.Path:
    """`value` as an epath.Path; ConfigError (exit 2) for a scheme other than gs://."""
    text = value if isinstance(value, str) else os.fspath(value)
    scheme, separator, rest = text.partition("://")
    if separator:
        if scheme not in SUPPORTED_SCHEMES:
            raise ConfigError(
                f"{what} {text!r}: the {scheme}:// scheme is not supported; give a local path "
                "or gs://BUCKET/PATH"
            )
        if not rest.split("/")[0]:
            raise ConfigError(f"{what} {text!r} names no bucket; give gs://BUCKET/PATH")
    return epath.Path(text)


def inside(folder: epath.Path, name: object, what: str) -> epath.Path:
    """`folder / name` for a file name read from a file (an index, a manifest); DataError
    (exit 65) for a name that could leave `folder`: not text, empty, absolute, a URL, or
    with a `..` component.

    The check is on the name's text, so it holds for gs:// folders alike, and a symlink
    inside the folder (Hugging Face's cache links snapshots to blobs elsewhere) still works.
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{what}: file name {name!r} is not a file name")
    if name.startswith("/") or "://" in name or ".." in name.split("/"):
        raise DataError(
            f"{what}: file name {name!r} leaves its folder {folder}; only names inside it are read"
        )
    return folder / name


def refuse_a_file(path: epath.Path, what: str = "workdir") -> None:
    """ConfigError (exit 2) when a workdir to read names a file (a usage slip, not a broken
    checkpoint)."""
    if path.is_file():
        raise ConfigError(
            f"{what} {path} is a file, not a directory; give the --workdir a run trained in"
        )


def refuse_a_missing_workdir(path: epath.Path, what: str = "workdir") -> None:
    """ConfigError (exit 2) when a workdir to read does not exist or is a file: a mistyped
    path is a usage slip; a workdir that exists but holds no usable checkpoint stays a
    CheckpointError (exit 74)."""
    refuse_a_file(path, what)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist; give the --workdir a run trained in")


def is_remote(path: PathLike) -> bool:
    """True for a bucket path (no local file name, no memory map, no atomic rename)."""
    return "://" in (path if isinstance(path, str) else os.fspath(path))


def absolute(path: PathLike) -> epath.Path:
    """An absolute path: local paths against the working directory, URLs as they are.

    (`epath.Path("gs://b/x").absolute()` would prepend the working directory.)
    """
    path = as_path(path)
    return path if is_remote(path) else path.absolute()


def cache_dir() -> epath.Path:
    """Where bucket files that must be local (memory-mapped shards) are copied:
    $GPTJAX_CACHE_DIR, else ~/.cache/gptjax."""
    return epath.Path(os.environ.get("GPTJAX_CACHE_DIR") or "~/.cache/gptjax").expanduser()


def is_cached(path: epath.Path, key: str, size: int) -> bool:
    """Whether `local_copy` would return without fetching anything."""
    return not is_remote(path) or _cached(path, key, size) is not None


def _cached(path: epath.Path, key: str, size: int) -> epath.Path | None:
    copy = cache_dir() / "files" / f"{key}{path.suffix}"
    return copy if copy.is_file() and file_size(copy) == size else None


def local_copy(path: epath.Path, key: str, size: int, progress=None) -> epath.Path:
    """`path` itself when local; else a copy on this host's disk, fetched once per `key`.

    `key` names the content (the manifest's sha256 of a shard), so a copy is reused across
    runs and restarts while a changed file gets a new one; the copy is written to a temporary
    name and renamed, so a killed download is never taken for a whole file. `progress(n)` is
    called with each block's bytes.
    """
    if not is_remote(path):
        return path
    if (cached := _cached(path, key, size)) is not None:
        return cached
    copy = cache_dir() / "files" / f"{key}{path.suffix}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
    with path.open("rb") as source, tmp.open("wb") as sink:
        while block := source.read(64 << 20):
            sink.write(block)
            if progress is not None:
                progress(len(block))
    tmp.replace(copy)
    return copy


def file_size(path: epath.Path) -> int:
    return path.stat().length  # epath's StatResult, for local and bucket files alike


def tree_size(path: epath.Path) -> int:
    """Bytes of every file under `path` (epath has no rglob)."""
    if not path.is_dir():
        return file_size(path)
    return sum(tree_size(child) for child in path.iterdir())
