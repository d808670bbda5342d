"""Keeps the command line's output to gptjax's own lines, unless `--verbose`.

By default (`quiet_library_noise`) TensorFlow's C++ logging is limited to errors and its
import banners are dropped (`gptjax.tf_cpu`), Orbax's absl records are dropped, and Python
warnings raised outside gptjax are ignored: none of them is something a user acts on, and
gptjax reports every failure they relate to as its own one line. `--verbose`
(`let_library_logging_through`) shows them all, plus the libraries' INFO records.

Why Orbax's copies of a failure are dropped:
Orbax and TensorStore report a failure from their background threads themselves, before
and after the exception reaches gptjax: each failed array write of a full disk logs a
traceback, its sibling writes' unretrieved exceptions are logged by asyncio, and the reads
a failed restore abandoned still complete afterwards and print a traceback each (often after
gptjax's error line, at exit). Every such
failure reaches the user as the CheckpointError line (exit 74), so these copies are dropped.
Only for the CLI: a notebook importing gptjax keeps the libraries' logging as it is.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_ORBAX_PATH = f"{os.sep}orbax{os.sep}"


class _OrbaxLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or _ORBAX_PATH not in record.pathname


class _OrbaxTaskFilter(logging.Filter):
    """asyncio's "... exception was never retrieved" for Orbax's tasks and gathers: the
    sibling writes or reads of one that failed first, whose error gptjax reports once."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _ORBAX_PATH in message or "TensorStore" in message or "OCDBT" in message:
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not (error is not None and _raised_in_orbax(error))


def _raised_in_orbax(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None:
        if _ORBAX_PATH in frame.tb_frame.f_code.co_filename:
            return True
        frame = frame.tb_next
    return False


def _drop_abandoned_reads(unraisable) -> None:
    """A failed restore abandons its other reads: TensorStore completes them by calling into
    the restore's closed asyncio loop, and Orbax's read coroutines are collected with their
    own exception unretrieved; both have nowhere to go but here."""
    error, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    if code is not None and _ORBAX_PATH in code.co_filename:
        return
    sys.__unraisablehook__(unraisable)


def quiet_library_noise() -> None:
    """The CLI's default: only gptjax's own lines (call before TF or Orbax is imported)."""
    # Before TF loads; a value the user exported is respected.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # wandb's banner and hints ("Tracking run with wandb...", "View run at..."); gptjax prints
    # one line naming the W&B run instead (gptjax.train.wandb_run).
    os.environ.setdefault("WANDB_SILENT", "true")
    # Warnings attributed to another package's code are ignored; gptjax's own keep Python's
    # default filters (`module` is the module of the frame a warning is attributed to).
    warnings.filterwarnings("ignore", module=r"(?!gptjax(\.|$))")
    # absl.logging must be imported first: it installs the logger class that names the real
    # caller (Orbax's file) in each record. A plain `logging.getLogger("absl")` made before
    # that import would be an ordinary Logger, whose records all name absl's own file.
    from absl import logging as absl_logging

    absl_logger = absl_logging.get_absl_logger()  # where Orbax writes
    if not any(isinstance(f, _OrbaxLogFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxLogFilter())
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _OrbaxTaskFilter) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_OrbaxTaskFilter())
    sys.unraisablehook = _drop_abandoned_reads
    # A failed save abandons Orbax's other write coroutines; Python warns about each at exit.
    # gptjax itself has no coroutines, so every such warning is a library's abandoned work.
    warnings.filterwarnings(
        "ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning
    )


def let_library_logging_through() -> None:
    """`--verbose`: every library's logging at INFO, TF's C++ logging and banners included."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")  # gptjax.tf_cpu keeps banners at 0
    from absl import logging as absl_logging  # names the calling file in each record

    absl_logging.set_verbosity(absl_logging.INFO)
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname).1s %(name)s %(filename)s:%(lineno)d] %(message)s",
        stream=sys.stderr,
    )
