"""Where a run starts: its own checkpoint, another run's parameters, or fresh (and its tokenizer).

Priority: the workdir's own committed checkpoints (a restarted run resumes itself, even when
`init_from` is set), then `init_from` (parameters only: fresh optimizer and schedule), then
a fresh initialisation.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
from etils import epath

from gptjax.checkpoint import (
    CHECKPOINT_DIR,
    Checkpointer,
    check_architecture,
    package_versions,
    resolve_init_from,
)
from gptjax.checkpoint.manager import RESUME_FLAG
from gptjax.checkpoint.merged import lora_of, lora_record, restore_model_params
from gptjax.errors import ConfigError, DataError
from gptjax.tokenizer import MODEL_FILE, Tokenizer, tokenizer_from_bytes
from gptjax.train import multihost


@dataclasses.dataclass(frozen=True)
class StartPoint:
    kind: str  # "resume", "init_from" or "fresh"
    step: int | None = None
    source: epath.Path | None = None  # the workdir whose checkpoint is read

    def describe(self) -> str:
        if self.kind == "resume":
            return f"resuming from step {self.step} in {self.source}"
        if self.kind == "init_from":
            return f"starting from the parameters of {self.source} step {self.step}"
        return "starting from a fresh initialisation"


def find_start(config, workdir: epath.Path, checkpointer: Checkpointer) -> StartPoint:
    steps, wanted = checkpointer.steps(), config.checkpoint.resume_step
    if wanted != -1 and wanted not in steps:  # never a silent fresh start or another step
        held = f"committed: {steps}" if steps else "it holds no committed checkpoint"
        raise ConfigError(
            f"checkpoint.resume_step={wanted}: no committed checkpoint {wanted} in "
            f"{checkpointer.directory}; {held}"
        )
    if steps:
        return StartPoint("resume", steps[-1] if wanted == -1 else wanted, workdir)
    if config.init_from:
        source, step = resolve_init_from(config.init_from)
        with Checkpointer(source, read_only=True) as source_checkpointer:
            source_steps = source_checkpointer.steps()
        if not source_steps:
            raise DataError(f"init_from={config.init_from!r}: no committed checkpoint there")
        return StartPoint("init_from", step if step is not None else source_steps[-1], source)
    return StartPoint("fresh")


def install_start_tokenizer(start: StartPoint, workdir: epath.Path) -> None:
    """A run started from a checkpoint uses that checkpoint's tokenizer (ids must mean the same).

    Writes it into WORKDIR/tokenizer when the workdir has none yet; `check_tokenizer` refuses a
    mismatch afterwards. Every process reads it (Orbax restores are collective) but only
    process 0 writes: in a shared workdir, several writers renaming the same file race. Process
    0's view of the workdir decides, so all processes take the same collectives.
    """
    if start.kind == "fresh":
        return
    present = (workdir / "tokenizer" / MODEL_FILE).is_file()
    if multihost.primary_value(present):
        return
    with _reader(start) as checkpointer:
        model = checkpointer.tokenizer_bytes(start.step)
    tokenizer = tokenizer_from_bytes(model, name=f"{start.source} step {start.step}")
    multihost.primary_only(lambda: tokenizer.save(workdir / "tokenizer"), "writing the tokenizer")


def check_tokenizer(start: StartPoint, tokenizer: Tokenizer) -> None:
    if start.kind == "fresh":
        return
    with _reader(start) as checkpointer:
        saved = checkpointer.metadata(start.step)["tokenizer_sha256"]
    if saved != tokenizer.sha256:
        raise DataError(
            f"the run's tokenizer ({tokenizer.sha256[:12]}) differs from the one checkpoint "
            f"{start.step} in {start.source} was trained with ({saved[:12]}); remove "
            "data.tokenizer (the checkpoint's own tokenizer is then used)"
        )


def _recovery_flag(start: StartPoint) -> str:
    """The flag that points this start at an earlier checkpoint, named in damage errors."""
    if start.kind == "init_from":
        return f"--config.init_from={start.source}/{CHECKPOINT_DIR}/{{step}}"
    return RESUME_FLAG


def _reader(start: StartPoint) -> Checkpointer:
    """A read-only Checkpointer of the start's workdir, whose errors name the right flag."""
    return Checkpointer(start.source, read_only=True, recovery_flag=_recovery_flag(start))


def restore_start(
    start: StartPoint,
    target,
    create,
    shardings,
    model_config,
    log,
    lora=None,
    keep_params: bool = False,
):
    """(the first state of the run, placed on the mesh of `target` (abstract, with
    shardings); a copy of the init_from weights when `keep_params` and the run starts from
    them, else None).

    With `lora` the state holds adapters: fresh ones over the init_from weights (the frozen
    base, restored by the caller), or the run's own when it resumes. An init_from checkpoint
    of a LoRA run starts a full finetune from its merged weights. `keep_params` serves DPO,
    whose frozen reference is those same weights: copied on the devices, they are not read
    and verified from the checkpoint a second time.
    """
    if start.kind == "fresh":
        return jax.jit(create, out_shardings=shardings)(), None
    with _reader(start) as checkpointer:
        metadata = checkpointer.metadata(start.step)
        check_architecture(metadata["model"], model_config)
        log(start.describe())
        if start.kind == "resume":
            check_same_lora(metadata.get("lora"), lora, start)
            return checkpointer.restore(start.step, target), None
        if lora is not None:  # fresh adapters; the caller restores the frozen base
            return jax.jit(create, out_shardings=shardings)(), None
        params = restore_model_params(
            start.source, start.step, target.params, checkpointer=checkpointer
        )
    kept = None
    if keep_params:  # a real copy: the state's buffers are donated to every train step
        copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings.params)
        kept = copy(params)
    # The restored weights are donated into the state (no copy).
    state_from = jax.jit(
        lambda p: create(params=p),
        in_shardings=(shardings.params,),
        out_shardings=shardings,
        donate_argnums=0,
    )
    return state_from(params), kept


def check_same_lora(recorded: dict | None, lora, start: StartPoint) -> None:
    """A run resumes with the LoRA settings its checkpoint was trained with (or none)."""
    where = f"checkpoint {start.step} in {start.source}"
    if recorded is None and lora is not None:
        raise ConfigError(
            f"{where} holds every weight (trained without LoRA): resume it with "
            "finetune.lora_rank=0, or start the LoRA run in a new workdir"
        )
    if recorded is None:
        return
    saved = lora_of(recorded)
    if lora is None:
        raise ConfigError(
            f"{where} holds LoRA adapters (rank {saved.rank}): resume it with "
            f"finetune.lora_rank={saved.rank}, or start a full finetune in a new workdir"
        )
    if saved != lora:
        raise ConfigError(
            f"{where} was trained with LoRA rank {saved.rank}, alpha {saved.alpha}, targets "
            f"{','.join(saved.targets)}; this config asks for rank {lora.rank}, alpha "
            f"{lora.alpha}, targets {','.join(lora.targets)}: set the checkpoint's values"
        )


def lora_start_record(start: StartPoint, checkpointer: Checkpointer, lora) -> dict:
    """The `lora` metadata of a LoRA run: the init_from checkpoint is the base when the run
    starts; a resumed run keeps the base its checkpoint records."""
    if start.kind == "init_from":
        return lora_record(lora, start.source, start.step)
    return checkpointer.metadata(start.step)["lora"]


def set_aside_newer(start: StartPoint, checkpointer: Checkpointer, log) -> None:
    """A run resumed from an earlier step (`checkpoint.resume_step`) moves the later
    checkpoints to WORKDIR/checkpoints-set-aside/ (kept, not deleted), so the steps it redoes
    are saved and the next start resumes from them, not from the checkpoints it replaced."""
    if start.kind != "resume" or not any(s > start.step for s in checkpointer.steps()):
        return
    moved = multihost.primary_only(
        lambda: checkpointer.set_aside(start.step), "moving the later checkpoints aside"
    )
    checkpointer.reload()  # every process: process 0 moved the directories
    if moved:
        steps = ", ".join(str(step) for step, _ in moved)
        log(
            f"resumed from step {start.step}: moved the later checkpoints ({steps}) aside to "
            f"{moved[0][1].parent}"
        )


def checkpoint_metadata(config, model_config, mesh, tokenizer: Tokenizer, data_hash: str) -> dict:
    """What makes a checkpoint self-describing (fingerprints are added at save time)."""
    return {
        "phase": config.phase,
        "config": json.loads(config.to_json_best_effort()),
        "model": dataclasses.asdict(model_config),
        "mesh": {axis: int(size) for axis, size in mesh.shape.items()},
        "process_count": jax.process_count(),
        "versions": package_versions(),
        "tokenizer_sha256": tokenizer.sha256,
        "data_sha256": data_hash,
    }
