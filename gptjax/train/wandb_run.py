"""Weights & Biases beside metrics.jsonl and TensorBoard: optional, on when
`train.wandb_project` is set (install with `pip install 'gptjax[wandb]'`).

Only process 0 logs (the metrics writer exists only there). The run's resolved config is the
W&B run's config. The W&B run id is kept in WORKDIR/wandb_run_id, so a resumed or restarted
run continues the same W&B run. Each record is logged with its training step as the field
`step`, which every chart uses as its x axis (`define_metric`): W&B's own step only grows, so
the steps a resumed run logs again (those between its checkpoint and the kill) would be
dropped; with `step` they are drawn, as in metrics.jsonl and TensorBoard.
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping

from etils import epath

from gptjax.errors import ConfigError
from gptjax.paths import is_remote

RUN_ID_FILE = "wandb_run_id"
_INSTALL = "pip install 'gptjax[wandb]'"


def refuse_missing_wandb(config) -> None:
    """ConfigError (exit 2) before anything runs when W&B is asked for and not installed."""
    project = config.train.get("wandb_project", "")
    if not project:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"train.wandb_project={project!r} needs the wandb package, which is not installed: "
            f"{_INSTALL} (or set train.wandb_project='' to log to metrics.jsonl and "
            "TensorBoard only)"
        ) from None


class WandbSink:
    """Receives every metrics record MetricsWriter writes, and ends the W&B run."""

    def __init__(self, run) -> None:
        self._run = run

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        self._run.log({"step": step, **scalars})

    def close(self, exit_code: int = 0) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)  # nonzero: W&B marks the run failed
            self._run = None


def _run_id(workdir: epath.Path) -> tuple[str, bool]:
    """(this workdir's W&B run id, whether an earlier run stored it)."""
    path = workdir / RUN_ID_FILE
    if path.exists():
        stored = path.read_text().strip()
        if stored:
            return stored, True
    alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet
    new = "".join(secrets.choice(alphabet) for _ in range(8))
    path.write_text(new + "\n")
    return new, False


def open_wandb_run(config, workdir: epath.Path, log) -> WandbSink | None:
    """The W&B run of this workdir (started or resumed), or None when train.wandb_project is
    empty. A run W&B cannot start (not logged in, no network) is a ConfigError (exit 2)."""
    train = config.train
    if not train.get("wandb_project", ""):
        return None
    refuse_missing_wandb(config)
    import wandb

    run_id, resumed = _run_id(workdir)
    # wandb writes its local copy under DIR/wandb: WANDB_DIR when set, else the workdir when
    # it is local, else the current directory (wandb's default).
    own_dir = None if is_remote(workdir) or os.environ.get("WANDB_DIR") else str(workdir)
    try:
        run = wandb.init(
            project=train.wandb_project,
            entity=train.get("wandb_entity", "") or None,
            name=train.get("wandb_run_name", "") or None,
            id=run_id,
            resume="allow",
            config=config.to_dict(),
            dir=own_dir,
        )
    except wandb.errors.Error as error:
        raise ConfigError(
            f"Weights & Biases could not start run {run_id} of project {train.wandb_project!r} "
            f"({str(error).splitlines()[0]}); log in with `wandb login`, or set WANDB_MODE="
            "offline (sync later with `wandb sync`), or train.wandb_project=''"
        ) from None
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    # run.dir is the run's files/ folder; `wandb sync` takes the folder above it.
    offline = os.path.dirname(run.dir)
    where = f"offline in {offline} (upload: wandb sync {offline})" if run.offline else run.url
    log(f"wandb: {'continuing' if resumed else 'started'} run {run_id}, {where}")
    return WandbSink(run)
