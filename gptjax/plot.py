"""Training curves from a run's metrics.jsonl, drawn to a PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gptjax.metrics import METRICS_FILE, read_metrics

# (metric key, panel title, y-axis label)
PANELS = (
    ("loss", "training loss", "loss"),
    ("eval/loss", "validation loss", "loss"),
    ("lr", "learning rate", "lr"),
    ("tokens_per_sec", "throughput", "tokens/s"),
)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float], int]:
    """Steps and finite values of `key`, plus how many non-finite values were left out.

    A resumed run appends again the steps between its checkpoint and the kill; the later
    record of a step wins, so the curve shows the history the final model actually has.
    """
    by_step: dict[int, float] = {}
    for record in records:
        if key in record and record[key] is not None:
            by_step[int(record["step"])] = float(record[key])
    steps, values, nonfinite = [], [], 0
    for step in sorted(by_step):
        if math.isfinite(by_step[step]):
            steps.append(step)
            values.append(by_step[step])
        else:
            nonfinite += 1
    return steps, values, nonfinite


def plot_run(workdir: str | Path, out: str | Path | None = None) -> Path:
    """Draw loss, validation loss, learning rate and tokens/s against step; return the PNG path."""
    # A bare Figure on the Agg canvas, not pyplot: it needs no display (TPU VMs, CI) and
    # leaves the backend of a notebook or script that calls us untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    workdir = Path(workdir)
    records = read_metrics(workdir / METRICS_FILE)
    out = Path(out) if out is not None else workdir / "curves.png"

    fig = Figure(figsize=(11, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for ax, (key, title, ylabel) in zip(axes.flat, PANELS, strict=True):
        steps, values, nonfinite = _series(records, key)
        ax.set_title(title)
        if not steps:
            ax.text(
                0.5,
                0.5,
                f'no "{key}" in {METRICS_FILE}',
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, label=key)
        if key == "loss":
            eval_steps, eval_values, _ = _series(records, "eval/loss")
            if eval_steps:  # overlaid so over-fitting shows as the two curves parting
                ax.plot(eval_steps, eval_values, marker="o", label="eval/loss")
                ax.legend()
        if key == "lr" and max(values) > 0:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if nonfinite:
            ax.text(
                0.98,
                0.98,
                f"{nonfinite} non-finite values not drawn",
                ha="right",
                va="top",
                transform=ax.transAxes,
                color="red",
            )
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(str(workdir))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
