"""A training run's shard check: once per dataset, split across hosts, recorded for restarts.

Hashing every shard at every start on every host re-reads the whole corpus P times per restart
(minutes on a big corpus, through a shared filesystem). Instead:

- the first start hashes each shard once: with P processes that see the same files (equal
  manifest, sizes and modification times), process p hashes shards p, p+P, ...; processes
  that see other files (each host its own copy) hash their whole copy. Every process learns
  every problem, so all stop with the same line (exit 65);
- a sound result is recorded in WORKDIR/data/shards-verified-KEY.json, KEY a hash of the
  manifest, the directory and each shard's size and modification time. A restart that finds
  its key recorded does not re-read the shards: replacing, rewriting or truncating a shard, or
  preparing the directory again, changes the key and the next start hashes again. (Damage
  that changes neither size nor mtime, such as a failing disk, is caught by deleting the
  record.) The size of every shard is still checked at each start (`open_prepared`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable

from etils import epath

from gptjax.data.shards import Prepared, check_manifest_ids, verify_shards
from gptjax.errors import DataError
from gptjax.paths import absolute, as_path


def _alone(text: str) -> list[str]:
    return [text]


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place in the run; `gather` returns every process's text, in order (a
    collective: every process calls it at the same point)."""

    index: int = 0
    count: int = 1
    gather: Callable[[str], list[str]] = _alone


def files_key(prepared: Prepared) -> str:
    """Names exactly these files as this process sees them (no byte of them is read)."""
    digest = hashlib.sha256(json.dumps(prepared.manifest, sort_keys=True).encode())
    digest.update(str(absolute(prepared.directory)).encode())
    for shard in prepared.files:
        stat = shard.path.stat()  # epath's, for a local or a bucket file
        digest.update(f"\0{shard.entry['file']}\0{stat.length}\0{stat.mtime}".encode())
    return digest.hexdigest()


def record_path(workdir, key: str) -> epath.Path:
    return as_path(workdir) / "data" / f"shards-verified-{key[:16]}.json"


def _recorded(path: epath.Path, key: str) -> dict | None:
    if not path.exists():  # (TF's GCS file system raises its own NotFoundError, not OSError)
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none yet, or unreadable: verify again
    return record if isinstance(record, dict) and record.get("key") == key else None


def _write_record(path: epath.Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def verify_once(
    prepared: Prepared,
    workdir: epath.Path,
    *,
    verify: bool = True,
    log=print,
    processes: Processes = Processes(),
) -> None:
    """DataError (exit 65) on every process when a shard any process checked is unsound."""
    if not verify:
        check_manifest_ids(prepared)
        log(f"data.verify_shards=False: sha256 of the shards in {prepared.directory} not checked")
        return
    key = files_key(prepared)
    shared = len(set(processes.gather(key))) == 1
    path = record_path(workdir, key)
    record = _recorded(path, key)
    if record is not None:
        todo = ()
    elif shared:
        todo = prepared.files[processes.index :: processes.count]
    else:
        todo = prepared.files
    start = time.perf_counter()
    problem = verify_shards(todo, prepared.tokenizer.vocab_size)
    problems = processes.gather(problem)  # every process takes part, even with nothing to do
    for index, text in enumerate(problems):
        if text:
            raise DataError(text if processes.count == 1 else f"{text} (process {index})")
    if record is not None:
        log(
            f"shards of {prepared.directory} verified at {record['verified_at']} and unchanged "
            f"since (sizes and mtimes as in {path}): not re-hashed"
        )
        return
    seconds, total = time.perf_counter() - start, sum(s.tokens.nbytes for s in prepared.files)
    if processes.index == 0 or not shared:  # shared files: one record, from process 0
        _write_record(
            path,
            {
                "key": key,
                "prepared_dir": str(prepared.directory),
                "shards": len(prepared.files),
                "bytes": total,
                "verified_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "processes": processes.count if shared else 1,
            },
        )
    split = f", split across {processes.count} processes" if shared and processes.count > 1 else ""
    log(
        f"verified sha256 and token ids of {len(prepared.files)} shards ({total / 1e9:.2f} GB) "
        f"in {prepared.directory} in {seconds:.1f}s{split}; recorded in {path}, so a restart "
        "with unchanged shards does not re-read them (delete it to force)"
    )
