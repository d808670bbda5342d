"""A finetune adopts the architecture of the checkpoint it starts from.

With `init_from` set, every architectural `model.*` field (all but RUNTIME_FIELDS: dtype,
remat, scan_layers, dropout_rate, attention, head_chunk_len and the *_backward fields, which
only change how the model runs) is taken from the starting checkpoint's metadata, so
finetuning a non-default base needs no `--config.model.*` repeated on every phase. A field set
on purpose (`gptjax.config.load_config_with_origins`: a command-line override, or a value a
config file changes from the file it loads) that differs from the checkpoint is a ConfigError
naming both values. `data.seq_len` longer than the adopted context follows it the same way.

The starting checkpoint is the run's own latest (or `checkpoint.resume_step`) when it holds
one (a restarted finetune resumes itself), else the `init_from` one.
"""

from __future__ import annotations

import dataclasses

from gptjax.checkpoint import RUNTIME_FIELDS, Checkpointer, checkpoint_dir, resolve_init_from
from gptjax.errors import ConfigError, DataError
from gptjax.model import ModelConfig
from gptjax.paths import as_path

ARCHITECTURE_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name not in RUNTIME_FIELDS
)


def starting_model(config, workdir) -> tuple[dict, str] | None:
    """(the model metadata of the checkpoint a finetune starts from, "WHERE step N"), or None
    when `init_from` is not set."""
    if not config.init_from:
        return None
    own = as_path(workdir, "--workdir") if workdir is not None else None
    if own is not None and checkpoint_dir(own).is_dir():
        with Checkpointer(own, read_only=True) as checkpointer:
            steps = checkpointer.steps()
            if steps:
                wanted = config.checkpoint.resume_step
                step = steps[-1] if wanted == -1 or wanted not in steps else wanted
                return checkpointer.metadata(step)["model"], f"{own} step {step}"
    source, step = resolve_init_from(config.init_from)
    with Checkpointer(source, read_only=True) as checkpointer:
        steps = checkpointer.steps()
        if not steps:
            raise DataError(f"init_from={config.init_from!r}: no committed checkpoint there")
        step = steps[-1] if step is None else step
        return checkpointer.metadata(step)["model"], f"init_from {source} step {step}"


def adopt_architecture(config, saved: dict, where: str, on_purpose: dict[str, str], log) -> None:
    """Sets `config.model`'s architecture to `saved` (a checkpoint's model metadata) in place,
    with one note naming what changed; ConfigError for a field set on purpose to another
    value (see the module docstring)."""
    changed = []
    for name in ARCHITECTURE_FIELDS:
        if name not in saved or config.model.get(name) == saved[name]:
            continue
        field = f"model.{name}"
        if field in on_purpose:
            raise ConfigError(
                f"{field}={config.model.get(name)!r} (set by {on_purpose[field]}) differs from "
                f"{saved[name]!r} in the checkpoint it finetunes ({where}): the architecture "
                "comes from init_from; drop the setting"
            )
        changed.append(f"{field} {config.model.get(name)!r} -> {saved[name]!r}")
        with config.model.unlocked():
            config.model[name] = saved[name]
    context = config.model.max_seq_len
    if config.data.seq_len > context:
        if "data.seq_len" in on_purpose:
            raise ConfigError(
                f"data.seq_len={config.data.seq_len} (set by {on_purpose['data.seq_len']}) "
                f"exceeds model.max_seq_len={context}, the context of the checkpoint it "
                f"finetunes ({where}): the architecture comes from init_from"
            )
        changed.append(f"data.seq_len {config.data.seq_len} -> {context}")
        config.data.seq_len = context
    if changed:
        log(f"note: the architecture comes from {where}: {', '.join(changed)}")
