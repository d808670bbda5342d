"""Checkpoints: self-describing, verified, asynchronous (Orbax), restorable onto any mesh.

`Checkpointer` (manager.py) saves and restores a run's checkpoints; `integrity.py` is what
makes every item of one verifiable. Here: what a run's config is checked against.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform

from gptjax.checkpoint.integrity import fingerprints
from gptjax.checkpoint.manager import (
    CHECKPOINT_DIR,
    ITEMS,
    SET_ASIDE_DIR,
    STEP_FLAG,
    Checkpointer,
    CheckpointInfo,
    checkpoint_dir,
)
from gptjax.errors import ConfigError
from gptjax.paths import as_path

__all__ = [
    "CHECKPOINT_DIR",
    "ITEMS",
    "RUNTIME_FIELDS",
    "SET_ASIDE_DIR",
    "STEP_FLAG",
    "CheckpointInfo",
    "Checkpointer",
    "check_architecture",
    "checkpoint_dir",
    "fingerprints",
    "package_versions",
    "resolve_init_from",
]

# Fields that change how a model runs, not what it is: they may differ on restore.
RUNTIME_FIELDS = (
    "dtype",
    "remat",
    "scan_layers",
    "dropout_rate",
    "attention",
    "head_chunk_len",
    "projection_backward",
    "norm_backward",
)
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "gptjax")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_architecture(saved: dict, model_config) -> None:
    """Refuses a checkpoint whose model differs from the config in any architectural field."""
    current = dataclasses.asdict(model_config)
    diffs = [
        f"model.{key}: checkpoint {saved.get(key)!r}, config {value!r}"
        for key, value in current.items()
        if key not in RUNTIME_FIELDS and saved.get(key) != value
    ]
    if diffs:
        raise ConfigError("checkpoint architecture differs from the config: " + "; ".join(diffs))


def resolve_init_from(path: str):
    """`init_from` names a workdir (latest step) or a step directory WORKDIR/checkpoints/N."""
    candidate = as_path(path, "init_from")
    if candidate.name.isdigit() and candidate.parent.name == CHECKPOINT_DIR:
        return candidate.parent.parent, int(candidate.name)
    if not checkpoint_dir(candidate).is_dir():
        raise ConfigError(
            f"init_from={path!r}: no {CHECKPOINT_DIR}/ directory there; give a workdir or "
            f"WORKDIR/{CHECKPOINT_DIR}/STEP"
        )
    return candidate, None
