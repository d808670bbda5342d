"""Process start-up: the JAX distributed runtime, which also carries preemption notices.

gptjax stops for preemption through JAX's own preemption sync manager (read by Orbax's
`reached_preemption`), not a Python SIGTERM handler: on a multi-host slice the coordination
service tells every process about the notice and they agree on one step to save at, which a
per-process signal handler cannot do. That manager only exists once `jax.distributed` is
initialised, so a single-process run initialises a one-process runtime on 127.0.0.1. (A
Python SIGTERM handler installed afterwards would silently replace JAX's notifier, so gptjax
installs none.)
"""

from __future__ import annotations

import socket

import jax


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def initialize_runtime(log=print) -> bool:
    """Initialises jax.distributed for one local process; True if preemption notices work.

    Must run before anything touches a JAX device. When the backend is already up (gptjax
    used as a library inside a notebook or a test) it returns False and the run simply has
    no preemption handling: SIGTERM then ends the process as usual.
    """
    if jax.distributed.is_initialized():
        return True
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{_free_port()}", num_processes=1, process_id=0
        )
    except RuntimeError as error:
        log(f"preemption handling off: {str(error).splitlines()[0]}")
        return False
    return True
