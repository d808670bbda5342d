"""Reads and writes safetensors files with numpy alone: memory-mapped reads, one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`) and the raw
row-major bytes. Reading through `np.memmap` touches only the bytes of the tensors asked for,
so importing a model never holds more than one tensor in host memory; bfloat16 comes from
`ml_dtypes` (a JAX dependency), which the `safetensors` package's numpy reader lacks.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable

import ml_dtypes
import numpy as np

from gptjax.errors import DataError
from gptjax.paths import PathLike, as_path, is_remote

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# A header larger than this is not a safetensors file (the library's own limit is 100 MB).
_MAX_HEADER = 100_000_000


class SafetensorsFile:
    """One .safetensors file: its tensor names, shapes and dtypes; `read(name)` maps the bytes."""

    def __init__(self, path: PathLike):
        self.path = as_path(path)
        try:
            with self.path.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > _MAX_HEADER:
                    raise ValueError(f"header length {length}")
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error) as error:
            raise DataError(f"{self.path} is not a readable safetensors file: {error}") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self.offset = 8 + length
        self.entries = header
        for name, entry in header.items():
            if entry.get("dtype") not in DTYPES:
                raise DataError(
                    f"{self.path}: tensor {name} has dtype {entry.get('dtype')!r}, which gptjax "
                    f"does not read (supported: {', '.join(DTYPES)})"
                )

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only memory-mapped array (no copy until it is used)."""
        entry = self.entries[name]
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise DataError(f"{self.path}: tensor {name} has {end - begin} bytes for {shape}")
        if count == 0:
            return np.zeros(shape, dtype)
        try:
            if is_remote(self.path):  # a bucket object: one ranged read, no memory map
                with self.path.open("rb") as f:
                    f.seek(self.offset + begin)
                    array = np.frombuffer(f.read(end - begin), dtype).reshape(shape)
            else:
                array = np.memmap(self.path, dtype, "r", self.offset + begin, shape)
        except (OSError, ValueError) as error:
            raise DataError(
                f"{self.path}: tensor {name} is truncated or unreadable: {error}"
            ) from None
        return array


def _header(tensors: list[tuple[str, np.ndarray]], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, array in tensors:
        header[name] = {
            "dtype": _NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # The data must start 8-byte aligned; the format pads the header with spaces.
    return text + b" " * (-len(text) % 8)


def write_safetensors(
    path: PathLike, tensors: Iterable[tuple[str, np.ndarray]], metadata: dict[str, str]
) -> int:
    """Writes `tensors` (name, array) in the given order to `path`; returns the data bytes.

    Written to a temporary name and renamed, so a crash never leaves a truncated file.
    """
    tensors = [(name, np.ascontiguousarray(array)) for name, array in tensors]
    for name, array in tensors:
        if array.dtype not in _NAMES:
            raise DataError(f"cannot write tensor {name} of dtype {array.dtype} as safetensors")
    header = _header(tensors, metadata)
    path = as_path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for _, array in tensors:
            f.write(array.tobytes())
    tmp.replace(path)
    return sum(array.nbytes for _, array in tensors)
