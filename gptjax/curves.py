"""Curves of one or several runs: every metric their metrics.jsonl holds, one panel per family,
one line per (run, metric), each run in its own colour (`gptjax plot`).

A family is a set of metrics drawn together (the training loss with the validation loss; DPO's
chosen and rejected rewards with their margin); any metric no family names (one added later, or
a run's own) gets a panel of its own, so nothing logged goes undrawn. In a notebook,
`curves_figure(["runs/a", "runs/b"])` returns the matplotlib Figure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from gptjax.errors import ConfigError, DataError
from gptjax.metrics import METRICS_FILE, read_metrics
from gptjax.paths import PathLike, as_path

EVAL = "eval/"


@dataclasses.dataclass(frozen=True)
class Family:
    title: str
    ylabel: str
    metrics: tuple[str, ...]  # training-step names; each one's eval/ twin is drawn beside it
    log_scale: bool = False


FAMILIES = (
    Family("loss", "nats/token", ("loss",)),
    Family("bits per byte", "bits/byte", ("bits_per_byte",)),
    Family("nats per character", "nats/char", ("nats_per_char",)),
    Family("perplexity", "perplexity", ("perplexity",), log_scale=True),
    Family("token accuracy", "accuracy", ("accuracy",)),
    Family("DPO rewards", "reward (nats)", ("chosen_reward", "rejected_reward", "reward_margin")),
    Family("DPO accuracy", "fraction of pairs", ("reward_accuracy", "likelihood_accuracy")),
    Family("DPO log-probabilities", "logp/token", ("chosen_logp", "rejected_logp")),
    Family("DPO KL to the reference", "nats", ("kl",)),
    Family("learning rate", "lr", ("lr",)),
    Family("gradient norm", "global norm", ("grad_norm",)),
    Family("throughput", "tokens/s", ("tokens_per_sec",)),
    Family("MFU", "fraction of peak", ("mfu",)),
    Family("input wait", "fraction of time", ("input_wait_fraction",)),
    Family("step time", "seconds", ("step_time_sec",)),
    Family("skipped steps", "non-finite steps", ("skipped_steps",)),
    Family("checkpoint blocking", "seconds", ("checkpoint_block_sec",)),
    Family("compile time", "seconds", ("compile_sec",)),
)
_MARKERS = ("o", "s", "^", "D", "v")


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float], int]:
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


def _families_present(runs: dict[str, list[dict]]) -> list[tuple[Family, list[str]]]:
    """Each family that any run logged, with the metrics logged (eval/ twins after theirs),
    then a family of its own for every other metric, in the order runs first logged them."""
    logged: dict[str, None] = {}
    for records in runs.values():
        for record in records:
            logged.update(dict.fromkeys(k for k in record if k not in ("step", "time")))
    panels, claimed = [], set()
    for family in FAMILIES:
        names = [n for m in family.metrics for n in (m, EVAL + m) if n in logged]
        if names:
            panels.append((family, names))
            claimed.update(names)
    for name in logged:
        base = name.removeprefix(EVAL)
        if name in claimed or base in claimed:
            continue
        names = [n for n in (base, EVAL + base) if n in logged]
        panels.append((Family(base.replace("_", " "), base, (base,)), names))
        claimed.update(names)
    return panels


def _labels(workdirs: Sequence[str]) -> list[str]:
    """Each run's legend name: its folder's name, or the whole path when two names clash."""
    names = [w.rstrip("/").rsplit("/", 1)[-1] or w for w in workdirs]
    return names if len(set(names)) == len(names) else list(workdirs)


def curves_figure(workdirs: Sequence[PathLike]):
    """A matplotlib Figure: one panel per metric family the runs logged, one line per (run,
    metric), a legend naming each."""
    # A bare Figure on the Agg canvas, not pyplot: it needs no display (TPU VMs, CI) and
    # leaves the backend of a notebook or script that calls us untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = [as_path(w, "workdir") for w in workdirs]
    labels = _labels([str(p) for p in paths])
    runs = {label: read_metrics(p / METRICS_FILE) for label, p in zip(labels, paths, strict=True)}
    panels = _families_present(runs)
    if not panels:
        raise DataError(f"no metric to draw: {METRICS_FILE} of {', '.join(labels)} is empty")
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(5.5 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax, (family, names) in zip(axes, panels, strict=False):
        _draw_panel(ax, family, names, runs, several=len(runs) > 1)
    for ax in axes[len(panels) :]:  # the grid's unused cells
        ax.set_visible(False)
    fig.suptitle(" vs ".join(labels) if len(labels) > 1 else labels[0])
    return fig


def _draw_panel(ax, family: Family, names: list[str], runs: dict[str, list], several: bool):
    """Several runs: a colour per run, a marker per metric; one run: a colour per metric.
    Either way a validation metric (eval/) is dashed, its training twin solid."""
    nonfinite = 0
    bases = list(dict.fromkeys(name.removeprefix(EVAL) for name in names))
    for run_index, (label, records) in enumerate(runs.items()):
        for name in names:
            steps, values, bad = series(records, name)
            nonfinite += bad
            if not steps:
                continue
            metric_index = bases.index(name.removeprefix(EVAL))
            ax.plot(
                steps,
                values,
                color=f"C{(run_index if several else metric_index) % 10}",
                linestyle="--" if name.startswith(EVAL) else "-",
                marker=_MARKERS[metric_index % len(_MARKERS)] if several else "o",
                markersize=3,
                markevery=max(1, len(steps) // 12),  # a few markers on a long curve
                label=f"{label} {name}" if several else name,
            )
    ax.set_title(family.title)
    ax.set_xlabel("step")
    ax.set_ylabel(family.ylabel)
    ax.grid(alpha=0.3)
    if family.log_scale:
        ax.set_yscale("log")
    elif family.metrics == ("lr",):
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if several or len(names) > 1:
        ax.legend(fontsize="small")
    if nonfinite:
        ax.text(
            0.98, 0.98, f"{nonfinite} non-finite values not drawn", ha="right", va="top",
            transform=ax.transAxes, color="red",
        )  # fmt: skip


def plot_runs(workdirs: Sequence[PathLike], out: PathLike | None = None):
    """Draws `curves_figure(workdirs)` into a PNG and returns its path: `out`, or
    WORKDIR/curves.png for one run (several runs need `out`)."""
    if out is None:
        if len(workdirs) != 1:
            raise ConfigError("give --out PNG to plot several workdirs into one figure")
        out = as_path(workdirs[0], "workdir") / "curves.png"
    fig = curves_figure(workdirs)
    out = as_path(out, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:  # a file object: `out` may be in a bucket
        fig.savefig(f, format="png", dpi=100)
    return out


def plot_run(workdir: PathLike, out: PathLike | None = None):
    """One run's curves into a PNG (WORKDIR/curves.png by default); returns its path."""
    return plot_runs([workdir], out)
