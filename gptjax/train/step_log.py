"""The host side of the train loop's metrics: averages between log lines, throughput, MFU,
input wait, and the non-finite gate (a skipped step is reported; too many in a row abort).

`run` is the loop's `Run` (its config, objective and model FLOPs per token are read).
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
        self._reset()

    def _reset(self):
        self.start, self.values, self.wait = time.perf_counter(), [], 0.0

    def record(self, step: int, metrics: dict, input_wait: float) -> None:
        """Called with step N's metrics once step N+1 is queued (this blocks on step N)."""
        metrics = jax.device_get(metrics)
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
        """The last window's metrics, with throughput and MFU as medians over all windows: one
        window's timing can be skewed (its steps may have run during the previous window's
        wait when dispatch is synchronous, as on CPU), the median of many is not."""
        if not self.windows:
            return {}
        tokens_per_sec, mfu = np.median(np.array(self.windows), axis=0).tolist()
        return self.last | {"tokens_per_sec": tokens_per_sec, "mfu": mfu}

    def flush(self, step: int) -> None:
        if not self.values:
            return
        elapsed = time.perf_counter() - self.start
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
        self._reset()
