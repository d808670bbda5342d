"""The host side of the train loop's metrics: averages between log lines, throughput, MFU,
input wait, and the non-finite gate (a skipped step is reported; too many in a row abort).

`run` is the loop's `Run` (its config, objective and model FLOPs per token are read).

A window's time runs from the moment the previous window's last step was known finished to
the moment its own last step was, less the checkpoint saves that blocked the loop meanwhile.
Where dispatch returns before the step has run (TPU, GPU) that moment is when fetching its
metrics returns (or when a save waited for it); where dispatch runs the step itself (often on
CPU) the step was already finished before the next one was dispatched, and that earlier moment
is the one taken (`before_dispatch`). Timing from the flush instead counted a step in one
window and its seconds in the previous one: a last window of one step then showed millions of
tokens/s.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np

from gptjax.errors import NonFiniteError
from gptjax.metrics import MetricsWriter, ProgressBar

_BOOKKEEPING = ("loss", "lr", "weight", "finite", "bad_steps")


class StepLog:
    """Host-side metrics between log lines: averages, tokens/s, MFU, input wait, NaN gate."""

    def __init__(self, run, writer: MetricsWriter, bar: ProgressBar, peak: float, log):
        self.run, self.writer, self.bar, self.peak, self.log = run, writer, bar, peak, log
        self.tokens_per_step = run.config.train.global_batch_size * run.config.data.seq_len
        self.windows: list[tuple[float, float]] = []  # (tokens/s, MFU) of every logged window
        self._finished: dict[int, float] = {}  # step -> when it was seen finished, if early
        self._last_finished = None
        self._excluded: list[tuple[float, float]] = []  # (start, end) of checkpoint saves
        self.restart()

    def restart(self) -> None:
        """Starts a window now: before the first step and after an evaluation (compiling and
        evaluating are not training time)."""
        self.start, self.values, self.wait = time.perf_counter(), [], 0.0
        self._last_finished = None

    def exclude(self, start: float, end: float) -> None:
        """Leaves [start, end] (a checkpoint save blocking the loop; its seconds are logged as
        checkpoint_block_sec) out of the window it falls in."""
        self._excluded.append((start, end))

    def finish_before_save(self, *steps) -> None:
        """Waits for the (step, metrics, ...) given (None: none) and notes when each finished,
        so the save that follows (it waits for the state anyway) is timed alone."""
        for entry in steps:
            if entry is not None and entry[0] not in self._finished:
                jax.block_until_ready(entry[1])
                self._finished[entry[0]] = time.perf_counter()

    def before_dispatch(self, pending) -> None:
        """Called just before the next step is dispatched, with the (step, metrics, wait) not
        yet recorded: if that step has already finished, it finished before the next began."""
        if pending is not None and pending[0] not in self._finished and _is_ready(pending[1]):
            self._finished[pending[0]] = time.perf_counter()

    def record(self, step: int, metrics: dict, input_wait: float) -> None:
        """Called with step N's metrics once step N+1 is queued (this blocks on step N)."""
        metrics = jax.device_get(metrics)
        finished = self._finished.pop(step, None)
        self._last_finished = time.perf_counter() if finished is None else finished
        self.values.append(metrics)
        self.wait += input_wait
        if not metrics["finite"]:
            bad, limit = int(metrics["bad_steps"]), self.run.config.train.max_bad_steps
            self.log(
                f"step {step + 1}: non-finite loss or gradient, update skipped ({bad} in a row)"
            )
            if bad >= limit:
                raise NonFiniteError(
                    f"aborting: {bad} consecutive non-finite steps (train.max_bad_steps={limit}); "
                    "lower optim.peak_lr or check the data"
                )
        if (step + 1) % self.run.config.train.log_every == 0:
            self.flush(step + 1)

    def final_summary(self) -> dict:
        """The last window's metrics, with throughput and MFU as medians over all windows (a
        window that holds a checkpoint save's blocking time is slower than the others)."""
        if not self.windows:
            return {}
        tokens_per_sec, mfu = np.median(np.array(self.windows), axis=0).tolist()
        return self.last | {"tokens_per_sec": tokens_per_sec, "mfu": mfu}

    def flush(self, step: int) -> None:
        if not self.values:
            return
        end = self._last_finished
        excluded = sum(max(0.0, min(b, end) - max(a, self.start)) for a, b in self._excluded)
        self._excluded = [(a, b) for a, b in self._excluded if b > end]
        elapsed = end - self.start - excluded
        finite = [m for m in self.values if m["finite"]]
        mean = lambda key: float(np.mean([m[key] for m in finite])) if finite else float("nan")
        tokens_per_sec = len(self.values) * self.tokens_per_step / elapsed
        loss = mean("loss")
        summary = {"loss": loss}
        if self.run.objective.has_perplexity:
            summary["perplexity"] = math.exp(min(loss, 50.0)) if math.isfinite(loss) else math.nan
        # The objective's own metrics (accuracy; DPO's rewards and margins), averaged.
        summary |= {name: mean(name) for name in self.values[0] if name not in _BOOKKEEPING}
        summary |= {
            "lr": float(self.values[-1]["lr"]),
            "tokens_per_sec": tokens_per_sec,
            "mfu": tokens_per_sec * self.run.model_flops_per_token / self.peak,
            "input_wait_fraction": self.wait / elapsed,
            "step_time_sec": elapsed / len(self.values),
            "skipped_steps": sum(not m["finite"] for m in self.values),
        }
        self.writer.write(step, summary)
        self.bar.update(
            step,
            loss=summary["loss"],
            lr=summary["lr"],
            **{"tok/s": summary["tokens_per_sec"], "mfu": summary["mfu"]},
        )
        self.last = summary
        self.windows.append((summary["tokens_per_sec"], summary["mfu"]))
        self.restart()
        self.start = end  # the next window's steps ran from the end of this one's last


def _is_ready(metrics) -> bool:
    """Whether every array of `metrics` is computed (host values always are), without waiting."""
    return all(getattr(leaf, "is_ready", lambda: True)() for leaf in jax.tree.leaves(metrics))
