"""Process start-up: the JAX distributed runtime, which also carries preemption notices.

gptjax stops for preemption through JAX's own preemption sync manager (read by Orbax's
`reached_preemption`), not a Python SIGTERM handler: on a multi-host slice the coordination
service tells every process about the notice and they agree on one step to save at, which a
per-process signal handler cannot do. That manager only exists once `jax.distributed` is
initialised, so a single-process run initialises a one-process runtime on 127.0.0.1. (A
Python SIGTERM handler installed afterwards would silently replace JAX's notifier, so gptjax
installs none.)

Which processes form the run: `--num_processes N --process_id I --coordinator_address
HOST:PORT` (CPU/GPU clusters, or to override); with none of them, a multi-host Cloud TPU slice
is detected through JAX's own cluster detection (the TPU VM metadata), and anything else is one
process. Start-up never hangs: a coordinator that is unreachable, or peers that do not all join
within `--initialization_timeout` seconds, end the process with one line and exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time

import jax

from gptjax.errors import ConfigError
from gptjax.train.tpu_hosts import several_tpu_workers

DEFAULT_INIT_TIMEOUT = 300  # seconds for every process to join (TPU hosts boot unevenly)
# JAX aborts the process (SIGABRT, no Python exception) once its own connect deadline passes;
# it gets this much longer than ours, so our one-line error always comes first.
_JAX_GRACE_SECONDS = 60
_FLAGS = "--coordinator_address, --num_processes and --process_id"


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How this process finds its peers; all None = auto-detect (TPU slice) or one process."""

    coordinator_address: str | None = None  # HOST:PORT of process 0's coordination service
    num_processes: int | None = None
    process_id: int | None = None
    initialization_timeout: int = DEFAULT_INIT_TIMEOUT  # seconds

    def check(self) -> None:
        """Refuses incomplete or impossible flags (ConfigError, exit 2)."""
        given = self.coordinator_address, self.num_processes, self.process_id
        if any(v is not None for v in given) and self.num_processes is None:
            raise ConfigError(f"give --num_processes together with {_FLAGS}")
        if self.num_processes is not None and self.num_processes < 1:
            raise ConfigError(f"--num_processes must be >= 1, got {self.num_processes}")
        if (self.num_processes or 1) > 1 and None in given:
            raise ConfigError(f"a multi-process run needs all of {_FLAGS}")
        if self.process_id is not None and not 0 <= self.process_id < self.num_processes:
            raise ConfigError(
                f"--process_id must be in [0, {self.num_processes}) for --num_processes="
                f"{self.num_processes}, got {self.process_id}"
            )
        if self.coordinator_address is not None:
            _split_address(self.coordinator_address)
        if self.initialization_timeout <= 0:
            raise ConfigError(
                f"--initialization_timeout must be > 0 seconds, got {self.initialization_timeout}"
            )


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--coordinator_address must be HOST:PORT (e.g. 10.0.0.2:8476), got {address!r}"
        )
    return host.strip("[]"), int(port)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def initialize_runtime(log=print, cluster: ClusterSpec | None = None) -> bool:
    """Initialises jax.distributed (one or many processes); True if preemption notices work.

    Must run before anything touches a JAX device. When the backend is already up (gptjax
    used as a library inside a notebook or a test) a one-process run returns False and simply
    has no preemption handling: SIGTERM then ends the process as usual.
    """
    if jax.distributed.is_initialized():
        return True
    cluster = cluster or ClusterSpec()
    cluster.check()
    if cluster.num_processes is None:
        cluster = _detect_tpu_slice(cluster.initialization_timeout) or cluster
    several = (cluster.num_processes or 1) > 1
    # Cross-process collectives on CPU (tests, CPU clusters; TPU/GPU use their own fabric).
    # One process needs none: its CPU devices reduce in memory. Gloo there would only add a
    # TCP loopback per collective and print its "[Gloo] Rank 0 is connected..." lines on
    # stdout (C++, unconditionally), once per compiled step.
    jax.config.update("jax_cpu_collectives_implementation", "gloo" if several else None)
    if several:
        _connect(cluster)
        return True
    address = cluster.coordinator_address or f"127.0.0.1:{_free_port()}"
    try:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=1,
            process_id=0,
            cluster_detection_method="deactivate",
        )
    except RuntimeError as error:
        log(f"preemption handling off: {str(error).splitlines()[0]}")
        return False
    return True


def _detect_tpu_slice(timeout: int) -> ClusterSpec | None:
    """The slice's hosts from the Cloud TPU VM metadata (JAX's own detection), if multi-host.

    Only TPU VMs are detected: elsewhere (SLURM, MPI, Kubernetes) a lone `gptjax train` would
    otherwise wait for peers it never asked for; those clusters pass the flags.
    """
    try:
        from jax._src.clusters import cloud_tpu_cluster as tpu

        environments = (tpu.GkeTpuCluster, tpu.GceTpuCluster)
    except (ImportError, AttributeError) as error:  # a JAX that moved its private detection
        _refuse_undetected_slice(f"{type(error).__name__}: {error}")
        return None
    for env in environments:
        try:
            if not env.is_env_present():
                continue
            count = env.get_process_count()
            if count == 1:
                return None
            port = os.environ.get("JAX_COORDINATOR_PORT")
            address = env.get_coordinator_address(timeout, port)
            process_id = env.get_process_id()
        except Exception as error:  # metadata server, DNS: report it, never guess
            raise ConfigError(
                f"this is a Cloud TPU VM but its slice's hosts could not be read ({error}); "
                f"pass {_FLAGS} (or --num_processes 1 for one host)"
            ) from None
        return ClusterSpec(address, count, process_id, timeout)
    return None


def _refuse_undetected_slice(cause: str) -> None:
    """ConfigError (exit 2) when JAX's detection is missing on one host of a multi-host slice.

    Without it each host would start its own one-process run: N copies of the model trained on
    N times the same batches, each writing the same workdir. One host alone passes.
    """
    fix = f"pass {_FLAGS} on every worker (--num_processes 1 on a single host)"
    try:
        evidence = several_tpu_workers()
    except OSError as error:
        raise ConfigError(
            f"this is a TPU VM, JAX's cluster detection could not be imported ({cause}) and the "
            f"metadata server did not answer ({error}), so its slice's hosts are unknown; {fix}"
        ) from None
    if evidence:
        raise ConfigError(
            f"this host is one of several TPU workers ({evidence}) but JAX's cluster detection "
            f"could not be imported ({cause}); {fix}"
        )


def _connect(cluster: ClusterSpec) -> None:
    """jax.distributed.initialize for process `process_id` of many, within the timeout."""
    address, count, index = cluster.coordinator_address, cluster.num_processes, cluster.process_id
    timeout = cluster.initialization_timeout
    deadline = time.monotonic() + timeout
    where = f"(this is process {index} of {count})"
    if index != 0:
        _wait_for_coordinator(address, deadline, index, count, timeout)
    message = (
        f"not all {count} processes joined the coordinator at {address} within {timeout} s "
        f"{where}; start the same command on every host with --process_id 0..{count - 1}, "
        "check the address and that the port is open, or raise --initialization_timeout"
    )
    watchdog = _Watchdog(deadline - time.monotonic(), message)
    try:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=count,
            process_id=index,
            cluster_detection_method="deactivate",
            initialization_timeout=timeout + _JAX_GRACE_SECONDS,
        )
    finally:
        watchdog.cancel()


def _wait_for_coordinator(address: str, deadline: float, index: int, count: int, timeout: int):
    """Polls HOST:PORT until it accepts a TCP connection; ConfigError at the deadline."""
    host, port = _split_address(address)
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"cannot reach the coordinator at {address} within {timeout} s (this is "
                    f"process {index} of {count}: {error.strerror or error}); is process 0 "
                    "running there? check --coordinator_address, the port and the firewall, or "
                    "raise --initialization_timeout"
                ) from None
        time.sleep(0.5)


class _Watchdog:
    """Ends the process with `message` (exit 2) if not cancelled within `seconds`.

    jax.distributed.initialize blocks in C++ until every process has joined and, past its own
    deadline, aborts the process with a stack trace; a timer thread is the only way to give a
    one-line error in time (the C++ call releases the GIL, so the thread runs).
    """

    def __init__(self, seconds: float, message: str):
        self._lock, self._done = threading.Lock(), False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire, args=(message,))
        self._timer.daemon = True
        self._timer.start()

    def _fire(self, message: str) -> None:
        with self._lock:
            if self._done:
                return
            print(f"gptjax: error: {message}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(ConfigError.exit_code)

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def describe_runtime() -> str:
    """One line: this process's place in the run and its devices (every process prints it)."""
    return (
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} local of {jax.device_count()} {jax.default_backend()} devices"
    )
