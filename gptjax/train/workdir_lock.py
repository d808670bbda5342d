"""One run per workdir: an exclusive lock held from start-up to exit by `gptjax train`/`bench`.

Two runs writing one workdir corrupt it (one's checkpoint temporaries vanish under the other,
metrics.jsonl gets every step twice), so the second one to start is refused with exit 2,
naming the run that holds the workdir (host, pid, start time).

- Local (or NFS) workdir: `fcntl.flock` on WORKDIR/run.lock. The kernel drops the lock when the
  holding process dies, however it dies (kill -9 included), so a killed run never blocks its
  restart. The file is never deleted (deleting a flock'ed file lets two runs lock two inodes).
- gs:// workdir: a bucket has no flock, so the lock is the object WORKDIR/run.lock, created
  with the precondition if-generation-match=0 (exactly one creator wins) and rewritten every
  HEARTBEAT_SECONDS with if-generation-match on its own generation. A run killed with -9 leaves
  the object behind: a restart takes it over (again under a generation precondition, so only
  one restart can) once its heartbeat is STALE_SECONDS old, or at once when the holder was on
  this host and its pid is gone. A holder paused longer than STALE_SECONDS can lose the lock
  to a restart; it then prints a warning (it cannot be stopped from a heartbeat thread).

Multi-process runs: every process writes the workdir (Orbax writes each host's array shards),
so on a local workdir each process locks its own file (run.lock for process 0, run.lock.I for
process I; with one shared NFS workdir they all live side by side, with a workdir per host each
host locks its own). A bucket is shared by every host, so process 0 alone holds its lock. A
refusal on any process stops all of them (`multihost.on_every_process`).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
import socket
import sys
import threading
import time

import jax
from etils import epath

from gptjax.checkpoint.manager import CHECKPOINT_DIR
from gptjax.errors import ConfigError
from gptjax.paths import as_path, is_remote
from gptjax.train import multihost

LOCK_FILE = "run.lock"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 300.0  # five missed heartbeats: the bucket lock's holder is taken for dead


def writable_workdir(value, what: str = "--workdir") -> epath.Path:
    """`value` as a workdir to write: created if missing; ConfigError (exit 2) when it names a
    file or cannot be created. (Writing into it is tried when the lock is taken.)"""
    path = as_path(value, what)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a directory; give a directory to write")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{what} {path} cannot be created: {error.strerror or error}; give a writable directory"
        ) from None
    return path


def owner_record(command: str) -> dict:
    """Who holds the lock, as the refusal of a second run names it."""
    return {
        "command": command,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "process": jax.process_index(),
        "heartbeat": time.time(),
    }


def describe_owner(text: str) -> str:
    try:
        owner = json.loads(text)
        return (
            f"gptjax {owner['command']} started {owner['started']} on host {owner['host']} "
            f"(pid {owner['pid']}, process {owner['process']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another run (it has not recorded itself yet)"


def _refusal(path, owner_text: str, extra: str = "") -> ConfigError:
    return ConfigError(
        f"workdir {path.parent} is in use by {describe_owner(owner_text)}{extra} (lock {path}); "
        "wait for that run to end or stop it, or give another --workdir"
    )


class LocalLock:
    """flock on a local (or NFS) file; released by the kernel when the process dies."""

    def __init__(self, path: epath.Path, command: str):
        self.path, self.command, self._fd = path, command, None

    def acquire(self) -> None:
        try:
            # O_CLOEXEC (Python's default): a child process must not inherit, and keep, the lock.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ConfigError(
                f"workdir {self.path.parent} is not writable ({error.strerror or error}); give a "
                "directory this user can write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise _refusal(self.path, owner) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner_record(self.command)).encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


class BucketLock:
    """A gs:// lock object: created if absent (generation 0), refreshed by a heartbeat."""

    def __init__(self, url: str, command: str):
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        bucket, _, name = url.removeprefix("gs://").partition("/")
        self.url, self.command = url, command
        try:
            client = storage.Client()
        except DefaultCredentialsError as error:
            raise ConfigError(
                f"{url}: no Cloud Storage credentials ({str(error).splitlines()[0]}); on a TPU "
                "VM its service account is used, elsewhere run `gcloud auth application-default "
                "login`"
            ) from None
        self._blob = client.bucket(bucket).blob(name)
        self._record = owner_record(command)
        self._generation, self._stop = None, threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        from google.api_core import exceptions

        try:
            self._write(if_generation_match=0)
        except exceptions.PreconditionFailed:
            self._take_over_if_stale()
        except exceptions.GoogleAPICallError as error:
            raise ConfigError(
                f"workdir {self.url.rsplit('/', 1)[0]} is not writable: {error.message}"
            ) from None
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="run.lock")
        self._thread.start()

    def _write(self, if_generation_match: int) -> None:
        self._record["heartbeat"] = time.time()
        self._blob.upload_from_string(
            json.dumps(self._record), if_generation_match=if_generation_match
        )
        self._generation = self._blob.generation

    def _take_over_if_stale(self) -> None:
        from google.api_core import exceptions

        try:
            text = self._blob.download_as_text()
            generation = self._blob.generation
        except exceptions.NotFound:  # released in between: take it as new (0: if still absent)
            text, generation = "", 0
        age, why = _staleness(text) if generation else (0.0, "it was released")
        if why is None:
            raise _refusal(
                epath.Path(self.url),
                text,
                f", last heartbeat {age:.0f} s ago (taken over after {STALE_SECONDS:.0f} s)",
            )
        try:
            self._write(if_generation_match=generation)  # one restart wins the take-over
        except exceptions.PreconditionFailed:
            raise _refusal(epath.Path(self.url), self._blob.download_as_text()) from None
        if generation:
            print(f"gptjax: took over the lock {self.url} ({why})", file=sys.stderr)

    def _heartbeat(self) -> None:
        from google.api_core import exceptions

        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._write(if_generation_match=self._generation)
            except exceptions.PreconditionFailed:
                print(
                    f"gptjax: warning: lost the lock {self.url} to another run (this one "
                    f"missed heartbeats for {STALE_SECONDS:.0f} s); stop one of them",
                    file=sys.stderr,
                )
                return
            except exceptions.GoogleAPICallError:
                continue  # a transient error: the next beat tries again

    def release(self) -> None:
        from google.api_core import exceptions

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._generation is not None:
            with contextlib.suppress(exceptions.NotFound, exceptions.PreconditionFailed):
                self._blob.delete(if_generation_match=self._generation)
            self._generation = None


def _staleness(text: str) -> tuple[float, str | None]:
    """(seconds since the holder's heartbeat, why it is stale or None when it is not)."""
    try:
        owner = json.loads(text)
        age = time.time() - float(owner["heartbeat"])
        host, pid = owner["host"], int(owner["pid"])
    except (ValueError, KeyError, TypeError):
        return math.inf, "its record is unreadable"
    if age > STALE_SECONDS:
        return age, f"its heartbeat is {age:.0f} s old"
    if host == socket.gethostname() and not _pid_alive(pid):
        return age, f"its pid {pid} on this host has exited"
    return age, None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def lock_for(workdir: epath.Path, command: str) -> LocalLock | BucketLock | None:
    """This process's lock on `workdir` (None: a bucket on a process other than 0)."""
    if is_remote(workdir):
        return BucketLock(str(workdir / LOCK_FILE), command) if multihost.is_primary() else None
    index = jax.process_index()
    name = LOCK_FILE if index == 0 else f"{LOCK_FILE}.{index}"
    return LocalLock(workdir / name, command)


@contextlib.contextmanager
def hold_workdir(workdir: epath.Path, command: str):
    """Holds `workdir` for the block on every process that writes it; exit 2 on every process
    when any of them finds it held by another run."""
    lock = lock_for(workdir, command)
    acquire = lock.acquire if lock is not None else lambda: None
    try:
        multihost.on_every_process(acquire, "taking the workdir lock")
        yield
    finally:
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def fresh_workdir(value):
    """Removes the workdir again when the block fails before any checkpoint committed in it,
    if the block created it (its topmost directory that did not exist); a workdir that existed
    is left as it was. A failed start then leaves nothing half-made to confuse the next one."""
    try:
        path = as_path(value, "--workdir")
    except ConfigError:
        yield  # the block reports the bad path
        return
    created = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        created = candidate
    try:
        yield
    except BaseException:
        checkpoints = path / CHECKPOINT_DIR
        committed = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
        if created is not None and created.exists() and not committed:
            try:
                created.rmtree()
            except OSError:  # best effort: the error that stopped the run is what matters
                pass
        raise
