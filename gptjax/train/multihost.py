"""What the processes of a multi-host run agree on at start-up, and who speaks for them.

Every process runs the same program on its own slice of each batch, so they must run the same
config: at start-up they exchange a sha256 of the resolved config, the gptjax version and the
workdir, and any difference ends every process with exit 2, naming the fields. Process 0
prepares the data first (a tokenizer trained into a shared workdir is written once); then all
compare their tokenizer and data hashes (exit 65 on a difference).

Process 0 speaks: it writes the log lines, metrics.jsonl, TensorBoard and the progress bar.
The others print only their start-up line (so each host shows it joined) and their errors.
"""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np
from jax.experimental import multihost_utils

from gptjax.checkpoint import package_versions
from gptjax.data.shard_verify import Processes
from gptjax.errors import ConfigError, DataError, GptjaxError


def is_primary() -> bool:
    return jax.process_index() == 0


def primary_log(log):
    """`log` on process 0, silence elsewhere (the same lines would repeat once per host)."""
    return log if is_primary() else (lambda *args, **kwargs: None)


def _gather_texts(text: str) -> list[str]:
    """Every process's `text`, in process order; one small collective when they all agree."""
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    digests = multihost_utils.process_allgather(digest)
    if (digests == digests[0]).all():
        return [text] * jax.process_count()
    data = np.frombuffer(text.encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.int32(data.size))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [bytes(row[:n]).decode() for row, n in zip(rows, lengths, strict=True)]


def _flatten(tree, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat |= _flatten(value, f"{prefix}{key}.")
        return flat
    return {prefix[:-1]: json.dumps(tree)}


def run_identity(config, workdir) -> str:
    """What every process must share: the resolved config, the gptjax version, the workdir."""
    identity = json.loads(config.to_json_best_effort(sort_keys=True))
    identity["gptjax version"] = package_versions()["gptjax"]
    identity["workdir"] = str(workdir)
    return json.dumps(identity, sort_keys=True)


def check_same_config(config, workdir) -> None:
    """ConfigError (exit 2) on every process when any process runs another config/version."""
    if jax.process_count() == 1:
        return
    texts = _gather_texts(run_identity(config, workdir))
    reference = _flatten(json.loads(texts[0]))
    for index, text in enumerate(texts[1:], start=1):
        other = _flatten(json.loads(text))
        keys = reference.keys() | other.keys()
        fields = sorted(k for k in keys if reference.get(k) != other.get(k))
        if fields:
            shown = "; ".join(
                f"{name}: process 0 {reference.get(name, 'unset')}, process {index} "
                f"{other.get(name, 'unset')}"
                for name in fields[:3]
            )
            more = f" (and {len(fields) - 3} more)" if len(fields) > 3 else ""
            raise ConfigError(
                f"the processes were started with different configs: {shown}{more}; start every "
                "process with the same command, config file and gptjax version"
            )


def sync(name: str) -> None:
    """Waits until every process got here (no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"gptjax: {name}")


def primary_only(fn, what: str):
    """`fn()` on process 0 alone (a file the others then read); every process returns once it
    is done. Returns `fn()`'s result on process 0, None elsewhere.

    If process 0 fails, every process stops with its exit code (the others would otherwise
    wait for it in the next collective).
    """
    if jax.process_count() == 1:
        return fn()
    return _agree_on_failure(fn, is_primary(), what)


def on_every_process(fn, what: str):
    """`fn()` on every process at once; if any fails, every process stops (the failed one with
    its own error, the others naming it) instead of waiting for it in the next collective."""
    if jax.process_count() == 1:
        return fn()
    return _agree_on_failure(fn, True, what)


def _agree_on_failure(fn, runs_here: bool, what: str):
    result, failed, raised = None, 0, None
    if runs_here:
        try:
            result = fn()
        except GptjaxError as error:
            failed, raised = error.exit_code, error
        except Exception as error:  # still tell the others, then fail as usual
            failed, raised = 1, error
    codes = multihost_utils.process_allgather(np.int32(failed))  # one small collective
    if raised is not None:
        raise raised
    for index, code in enumerate(codes.tolist()):
        if code:
            error = GptjaxError(
                f"process {index} failed while {what} (exit {code}); its error says why"
            )
            error.exit_code = code
            raise error
    return result


def primary_first(fn, what: str):
    """`fn()` on process 0, then on the others, so they read what process 0 wrote."""
    result = primary_only(fn, what)
    return result if is_primary() else fn()


def primary_value(value: int) -> int:
    """Process 0's `value` on every process: one decision where clocks or file views differ."""
    if jax.process_count() == 1:
        return int(value)
    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))  # steps fit in int32


def check_same_data(tokenizer_sha256: str, data_sha256: str) -> None:
    """DataError (exit 65) on every process when any process reads other tokens."""
    if jax.process_count() == 1:
        return
    mine = f"tokenizer {tokenizer_sha256[:12]}, training tokens {data_sha256[:12]}"
    texts = _gather_texts(mine)
    for index, text in enumerate(texts[1:], start=1):
        if text != texts[0]:
            raise DataError(
                f"process {index} reads different data than process 0 ({text} vs {texts[0]}); "
                "give every host the same data.tokenizer / data.prepared_dir, or one shared "
                "workdir"
            )


def processes() -> Processes:
    """This process's place and the gather collective, for data checks split across hosts."""
    if jax.process_count() == 1:
        return Processes()
    return Processes(jax.process_index(), jax.process_count(), _gather_texts)
