"""`gptjax checkpoints WORKDIR`: what a run has saved, in words a person can check."""

from __future__ import annotations

from pathlib import Path

import jax

from gptjax.checkpoint import Checkpointer, checkpoint_dir
from gptjax.errors import CheckpointError


def _size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return ""


def _summary(metadata: dict) -> str:
    model, mesh = metadata["model"], metadata["mesh"]
    shape = f"{model['num_layers']}x{model['embed_dim']} {model['position']}/{model['norm']}"
    mesh_text = ",".join(f"{axis}={size}" for axis, size in mesh.items())
    steps = metadata.get("config", {}).get("train", {}).get("steps", "?")
    return (
        f"{metadata['phase']:8s} model {shape} vocab {model['vocab_size']} · mesh {mesh_text} "
        f"· of {steps} steps"
    )


def list_checkpoints(workdir: str | Path) -> list[str]:
    """One line per committed checkpoint: step, size, phase, model and mesh summary."""
    if not checkpoint_dir(workdir).is_dir():
        raise CheckpointError(f"{workdir} has no {checkpoint_dir(workdir).name}/ directory")
    with Checkpointer(workdir, read_only=True) as checkpointer:
        steps = checkpointer.steps()
        if not steps:
            raise CheckpointError(f"{checkpoint_dir(workdir)} holds no committed checkpoint")
        infos = [checkpointer.info(step) for step in steps]
    return [
        f"step {info.step:>8} · {_size(info.size_bytes):>9} · {_summary(info.metadata)}"
        for info in infos
    ]


def checkpoint_tree(workdir: str | Path, step: int | None) -> list[str]:
    """Every array of a checkpoint (the latest if step is None): path, shape, dtype, sharding."""
    with Checkpointer(workdir, read_only=True) as checkpointer:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{checkpoint_dir(workdir)} holds no committed checkpoint")
        metadata = checkpointer.array_metadata(step)
    lines = [f"checkpoint {step} in {checkpoint_dir(workdir)}"]
    for item, tree in metadata.items():
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            name = item + jax.tree_util.keystr(path).replace("['value']", "")
            spec = getattr(leaf.sharding, "partition_spec", None)
            lines.append(f"{name} {tuple(leaf.shape)} {leaf.dtype} {spec}")
    return lines
