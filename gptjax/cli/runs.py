"""`gptjax checkpoints` and `gptjax plot`: what a run has saved and how it went.

Checkpoint listing needs JAX and Orbax, imported when the verb runs (`gptjax --help` stays fast).
"""

from __future__ import annotations

from collections.abc import Iterator

from gptjax.curves import plot_run, plot_runs
from gptjax.errors import CheckpointError
from gptjax.paths import PathLike, as_path, refuse_a_missing_workdir

# plot_run lived here before gptjax.curves; code that imports it from here keeps working.
__all__ = ["add_parsers", "plot_run", "plot_runs"]


def add_parsers(verbs) -> None:
    checkpoints = verbs.add_parser(
        "checkpoints", help="list a run's checkpoints, or print one's arrays (--tree)"
    )
    checkpoints.add_argument("workdir", help="a gptjax workdir")
    checkpoints.add_argument(
        "--tree", action="store_true", help="print every array: shape, dtype, sharding"
    )
    checkpoints.add_argument(
        "--verify",
        action="store_true",
        help="read every array of every checkpoint (or of --step) and check it against its "
        "recorded fingerprint; a listing only checks what it can without reading array data",
    )
    checkpoints.add_argument(
        "--step", type=int, help="with --tree or --verify: this step (default: latest / all)"
    )
    checkpoints.set_defaults(run=_checkpoints)
    plot = verbs.add_parser(
        "plot",
        help="draw the curves of one or several runs into a PNG",
        description="Draw every metric the runs logged in metrics.jsonl (loss and validation "
        "loss, lr, tokens/s, MFU, DPO rewards and accuracies, ...), one panel per family, "
        "one colour per run: `gptjax plot runs/a runs/b --out curves.png` overlays two runs.",
    )
    plot.add_argument("workdir", nargs="+", help="workdirs holding metrics.jsonl")
    plot.add_argument(
        "--out", help="output PNG (default WORKDIR/curves.png for one run; needed for several)"
    )
    plot.set_defaults(run=_plot)


def _checkpoints(args) -> None:
    refuse_a_missing_workdir(as_path(args.workdir, "workdir"))
    if args.tree:
        lines = checkpoint_tree(args.workdir, args.step)
    elif args.verify:
        lines = verify_checkpoints(args.workdir, args.step)
    else:
        lines = list_checkpoints(args.workdir)
    for line in lines:  # --verify yields a line per step as it is checked
        print(line, flush=True)


def _plot(args) -> None:
    print(plot_runs(args.workdir, args.out))


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


def list_checkpoints(workdir: PathLike) -> list[str]:
    """One line per committed checkpoint: step, size, phase, model and mesh summary.

    Each checkpoint's metadata, tokenizer and array indexes are verified (no array data is
    read); a damaged one is listed as such, then CheckpointError names it (exit 74).
    """
    from gptjax.checkpoint import STEP_FLAG, Checkpointer, checkpoint_dir

    if not checkpoint_dir(workdir).is_dir():
        raise CheckpointError(f"{workdir} has no {checkpoint_dir(workdir).name}/ directory")
    lines, damaged = [], []
    with Checkpointer(workdir, read_only=True, recovery_flag=STEP_FLAG) as checkpointer:
        steps = checkpointer.steps()
        if not steps:
            raise CheckpointError(f"{checkpoint_dir(workdir)} holds no committed checkpoint")
        for step in steps:
            try:
                checkpointer.verify_items(step)
                info = checkpointer.info(step)
            except CheckpointError as error:
                damaged.append(error)
                lines.append(f"step {step:>8} · DAMAGED")
                continue
            lines.append(
                f"step {info.step:>8} · {_size(info.size_bytes):>9} · {_summary(info.metadata)}"
            )
    if damaged:
        print("\n".join(lines))
        raise damaged[-1]
    return lines


def verify_checkpoints(workdir: PathLike, step: int | None) -> Iterator[str]:
    """Every array of each checkpoint (or of `step`) read and checked against its fingerprint,
    one line per step; the first damaged one is named (CheckpointError, exit 74)."""
    from gptjax.checkpoint import STEP_FLAG, Checkpointer, checkpoint_dir

    with Checkpointer(workdir, read_only=True, recovery_flag=STEP_FLAG) as checkpointer:
        steps = checkpointer.steps() if step is None else [step]
        if not steps:
            raise CheckpointError(f"{checkpoint_dir(workdir)} holds no committed checkpoint")
        for each in steps:
            read = checkpointer.verify_arrays(each)
            yield f"step {each:>8} · every item verified · {_size(read)} of arrays read"


def checkpoint_tree(workdir: PathLike, step: int | None) -> list[str]:
    """Every array of a checkpoint (the latest if step is None): path, shape, dtype, sharding.

    Its items are verified first, like every load (no array data is read)."""
    import jax

    from gptjax.checkpoint import STEP_FLAG, Checkpointer, checkpoint_dir

    with Checkpointer(workdir, read_only=True, recovery_flag=STEP_FLAG) as checkpointer:
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
