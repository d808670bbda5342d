"""Where training metrics go: a JSONL file, TensorBoard event files and a terminal progress bar."""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TextIO

from etils import epath
from tqdm import tqdm

from gptjax.errors import DataError
from gptjax.paths import PathLike, as_path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

# JSON has no NaN/Infinity, and `null` would hide *which* non-finite value it was (0/0 vs
# overflow tell different stories), so they are written as these strings, which
# read_metrics turns back into floats.
_NONFINITE_TO_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_JSON_TO_NONFINITE = {v: float(k) for k, v in _NONFINITE_TO_JSON.items()}
_RESERVED = ("step", "time")


def _to_json_value(key: str, value: Any) -> int | float | str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    try:
        number = float(value)  # also accepts numpy and 0-d jax arrays
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}") from None
    return number if math.isfinite(number) else _NONFINITE_TO_JSON[repr(number)]


class MetricsSink(Protocol):
    """Another place every record goes (Weights & Biases: gptjax.train.wandb_run)."""

    def write(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self, exit_code: int = 0) -> None: ...


class MetricsWriter:
    """Appends metrics to `workdir/metrics.jsonl` and `workdir/tensorboard/`, and hands each
    record to `sinks`.

    With `enabled=False` (non-primary processes of a multi-host run) every method is a no-op.
    """

    def __init__(
        self, workdir: PathLike, *, enabled: bool = True, sinks: Sequence[MetricsSink] = ()
    ) -> None:
        self.workdir = as_path(workdir, "workdir")
        self.enabled = enabled
        self._jsonl: TextIO | None = None
        self._tb_writer: Any = None
        self._sinks = list(sinks) if enabled else []
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / METRICS_FILE
        _drop_partial_last_line(path)
        # epath opens a bucket file as a context manager; the stack closes either kind.
        self._files = contextlib.ExitStack()
        self._jsonl = self._files.enter_context(path.open("a", encoding="utf-8"))

    def write(self, step: int, metrics: Mapping[str, float], *, prefix: str = "") -> None:
        """Append one record `{"step", "time", **{prefix + key: value}}` and flush it."""
        if not self.enabled or self._jsonl is None:
            return
        scalars = {prefix + key: _to_json_value(prefix + key, v) for key, v in metrics.items()}
        clash = [k for k in scalars if k in _RESERVED]
        if clash:
            raise ValueError(f"metric names {clash} are reserved in {METRICS_FILE}")
        record = {"step": int(step), "time": time.time(), **scalars}
        # One write call per line keeps a kill from interleaving halves of two records.
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()  # in a bucket, flush uploads the file: visible while the run goes
        self._write_tensorboard(int(step), scalars)
        numbers = {
            k: _JSON_TO_NONFINITE[v] if isinstance(v, str) else v for k, v in scalars.items()
        }
        for sink in self._sinks:
            sink.write(int(step), numbers)

    def _write_tensorboard(self, step: int, scalars: Mapping[str, int | float | str]) -> None:
        from tensorflow.core.framework import summary_pb2

        from gptjax.tf_cpu import tf  # lazy: importing TF costs seconds

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )

        if self._tb_writer is None:
            self._tb_writer = tf.summary.create_file_writer(str(self.workdir / TENSORBOARD_DIR))
        with self._tb_writer.as_default():
            for key, value in scalars.items():
                number = _JSON_TO_NONFINITE[value] if isinstance(value, str) else value
                # tf.summary.scalar lives in the `tensorboard` package, which tensorflow-cpu
                # 2.21 does not install; core tf.summary.write with the scalar plugin's
                # metadata writes the same event that TensorBoard shows as a scalar.
                tf.summary.write(key, tf.constant(number, tf.float32), step, metadata=metadata)
        self._tb_writer.flush()

    def close(self, exit_code: int = 0) -> None:
        """Flush and close every output (`exit_code`: how the run ended, for the sinks); safe
        to call twice."""
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.close(exit_code)
        if self._jsonl is not None:
            self._files.close()
            self._jsonl = None
        if self._tb_writer is not None:
            self._tb_writer.close()
            self._tb_writer = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_last_line(path: epath.Path) -> None:
    """Cut off a line left half-written by a killed run before appending to the file.

    Otherwise the resumed run's first record would be glued onto the fragment, turning a
    tolerated truncated tail into a corrupt middle line that makes the file unreadable.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except ValueError:
        path.write_bytes(data[:start])  # a bucket object cannot be truncated: rewrite it
    else:  # the record was whole, only its newline was lost
        path.write_bytes(data + b"\n")


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """Read a metrics.jsonl back into a list of records, in file order.

    A half-written last line (the run was killed mid-write) is dropped; any other line that
    is not a JSON object raises DataError naming the file and line.
    """
    path = as_path(path, "metrics file")
    if not path.is_file():
        raise DataError(f"metrics file {path} does not exist; was the run started in this workdir?")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # no newline after it, so the write never finished
                break
            raise DataError(f"{path} line {number} is not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or "step" not in record:
            raise DataError(f"{path} line {number} is not a metrics record with a 'step'")
        for key, value in record.items():
            if isinstance(value, str) and value in _JSON_TO_NONFINITE:
                record[key] = _JSON_TO_NONFINITE[value]
        records.append(record)
    return records


def _format_field(value: Any) -> str:
    if isinstance(value, numbers.Integral) or not isinstance(value, numbers.Real):
        return str(value)
    magnitude = abs(value)
    if not math.isfinite(value) or magnitude == 0:
        return str(float(value))
    if magnitude >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}" if magnitude >= 1e-3 else f"{value:.2g}"  # lr 3e-05, loss 2.313


class _NewlineStream(io.TextIOBase):
    """Turns tqdm's carriage returns into newlines, for logs that only split on "\\n".

    A carriage return at the start of a line (the first bar, or one after `end_line`) adds
    no blank line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.at_line_start = True

    def write(self, s: str) -> int:
        out = []
        for char in s:
            if char == "\r":
                if not self.at_line_start:
                    out.append("\n")
                self.at_line_start = True
            else:
                out.append(char)
                self.at_line_start = char == "\n"
        self._stream.write("".join(out))
        return len(s)

    def end_line(self) -> None:
        """Ends the bar's line, so what is printed next starts a line of its own."""
        if not self.at_line_start:
            self._stream.write("\n")
            self.at_line_start = True
        self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()


class ProgressBar:
    """A tqdm bar over training steps; `update` takes the absolute step, tqdm gives the ETA.

    Writes to stderr (or `file`). When that is not a terminal (CI logs), it prints one line
    every `log_interval_s` seconds instead of redrawing in place.
    """

    def __init__(
        self,
        total_steps: int | None,
        initial_step: int = 0,
        *,
        enabled: bool = True,
        desc: str = "train",
        file: TextIO | None = None,
        log_interval_s: float = 30.0,
        unit: str = "step",
        unit_scale: bool = False,
    ) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None
        if not enabled:
            return
        stream = file if file is not None else sys.stderr
        is_tty = hasattr(stream, "isatty") and stream.isatty()
        self._lines = None if is_tty else _NewlineStream(stream)
        self._bar = tqdm(
            total=total_steps,
            initial=initial_step,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            file=stream if is_tty else self._lines,
            dynamic_ncols=is_tty,
            ncols=None if is_tty else 120,
            mininterval=0.1 if is_tty else log_interval_s,
            # tqdm's default learns how many updates to skip between clock checks from past
            # speed, so the bar goes quiet when steps slow down (eval, checkpoints); one clock
            # read per step is nothing next to a train step.
            miniters=1,
            smoothing=0.1,
        )

    @property
    def step(self) -> int:
        return int(self._bar.n) if self._bar is not None else 0

    def update(self, step: int, **fields: float) -> None:
        """Move the bar to `step` and show `fields` (e.g. loss=2.31, lr=3e-4) after it."""
        if self._bar is None:
            return
        if fields:
            postfix = " ".join(f"{k}={_format_field(v)}" for k, v in fields.items())
            self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    def log_through(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """`log`, printing each line on a line of its own while the bar is drawn: the bar
        is cleared first and redrawn after (on a terminal), or its line ended (in a log).

        Without this a line printed to stdout lands after the bar's text on stderr, glued to
        it, on a terminal and in a log that captures both streams alike."""

        def write(line: str) -> None:
            if self._bar is None:
                log(line)
                return
            if self._lines is None:
                self._bar.clear()
            else:
                self._lines.end_line()
            sys.stdout.flush()
            log(line)
            sys.stdout.flush()
            if self._lines is None:
                self._bar.refresh()

        return write

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
