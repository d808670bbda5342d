"""Reads and writes safetensors files with numpy alone: memory-mapped reads, one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`) and the raw
row-major bytes. Reading through `np.memmap` touches only the bytes of the tensors asked for,
so importing a model never holds more than one tensor in host memory; bfloat16 comes from
`ml_dtypes` (a JAX dependency), which the `safetensors` package's numpy reader lacks.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable

import ml_dtypes
import numpy as np
from etils import epath

from gptjax.errors import DataError
from gptjax.paths import PathLike, as_path, file_size, is_remote

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
            size = file_size(self.path)
        except (OSError, ValueError, struct.error) as error:
            raise DataError(f"{self.path} is not a readable safetensors file: {error}") from None
        if not isinstance(header, dict):
            raise DataError(
                f"{self.path} is not a safetensors file: its header is a JSON "
                f"{type(header).__name__}, not an object of tensor name -> entry"
            )
        self.metadata = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict):
            raise DataError(f"{self.path}: __metadata__ is not an object of text -> text")
        self.offset = 8 + length
        self.entries = header
        for name, entry in header.items():
            _check_entry(self.path, name, entry)
        _check_layout(self.path, header, size - self.offset)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only memory-mapped array (no copy until it is used)."""
        entry = self.entries[name]
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        begin, end = entry["data_offsets"]  # checked against the dtype, shape and file
        if begin == end:
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


def _check_entry(path: epath.Path, name: str, entry: object) -> None:
    """One header entry: a known dtype, a shape of sizes, offsets spanning its bytes."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: tensor {name}'s header entry is not an object")
    if entry.get("dtype") not in DTYPES:
        raise DataError(
            f"{path}: tensor {name} has dtype {entry.get('dtype')!r}, which gptjax "
            f"does not read (supported: {', '.join(DTYPES)})"
        )
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(_is_size(n) for n in shape)):
        raise DataError(f"{path}: tensor {name} has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_size, offsets))):
        raise DataError(
            f"{path}: tensor {name} has data_offsets {offsets!r}, not [begin, end] in bytes"
        )
    nbytes = math.prod(shape) * DTYPES[entry["dtype"]].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise DataError(
            f"{path}: tensor {name} has data_offsets {offsets} ({offsets[1] - offsets[0]} "
            f"bytes), but {entry['dtype']} {tuple(shape)} takes {nbytes}"
        )


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_layout(path: epath.Path, entries: dict, data_bytes: int) -> None:
    """The tensors' bytes tile the data exactly, as the `safetensors` library demands: sorted
    by offset, each starts where the previous ends (no tensor reads another's bytes, no
    gap), and the last ends at the end of the file (a shorter file is truncated)."""
    end, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda item: item[1]["data_offsets"]):
        begin = entry["data_offsets"][0]
        if begin != end:
            what = (
                f"overlaps tensor {previous}"
                if begin < end
                else f"leaves a gap of {begin - end} bytes after {previous or 'the header'}"
            )
            raise DataError(
                f"{path}: tensor {name} starts at byte {begin}, which {what}; the file is "
                "damaged (the safetensors library refuses it too)"
            )
        end, previous = entry["data_offsets"][1], name
    if end != data_bytes:
        state = "truncated" if data_bytes < end else "longer than its header says"
        raise DataError(
            f"{path}: the header lists {end:,} bytes of tensors but the file holds {data_bytes:,}: "
            f"{state}"
        )


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
