"""Reads back what an offline Weights & Biases run logged, from its `run-ID.wandb` file.

wandb 0.31 keeps no Python reader of its own: the file is a LevelDB log (32 KiB blocks of
chunks with a 7-byte header: crc32, length, type) after a 7-byte file header (":W&B", magic
0xBEE1, version 0), each record one of wandb's own protobuf `Record` messages.
"""

import json
import struct
from pathlib import Path

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    found, pending, offset = [], b"", _HEADER
    while offset + _HEADER <= len(data):
        left = _BLOCK - offset % _BLOCK
        if left < _HEADER:  # a block's tail too short for a chunk header is zero padding
            offset += left
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + _HEADER])
        if kind == 0:  # zero padding to the end of the block
            offset += left
            continue
        chunk = data[offset + _HEADER : offset + _HEADER + length]
        offset += _HEADER + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
    return found


def offline_runs(wandb_dir: Path) -> list[Path]:
    """The .wandb files of every offline run under WANDB_DIR, oldest first."""
    return sorted((wandb_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def run_id(path: Path) -> str:
    (run,) = [r.run for r in records(path) if r.WhichOneof("record_type") == "run"]
    return run.run_id


def config(path: Path) -> dict:
    """The run's config as logged ({key: value}, W&B's own `_wandb` key left out)."""
    values = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            for item in record.run.config.update:
                values[item.key] = json.loads(item.value_json)
    values.pop("_wandb", None)
    return values


def history(path: Path) -> list[dict]:
    """Every logged row, W&B's own keys (`_step`, `_runtime`, `_timestamp`) left out."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            rows.append({k: v for k, v in row.items() if not k.startswith("_")})
    return rows
