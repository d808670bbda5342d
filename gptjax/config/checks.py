"""Validation before anything is compiled: each section checks itself, then what relates them.

Every check raises `ConfigError` (exit 2): one line naming the dotted field and the fix.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from gptjax.config.sections import RunConfig, TrainConfig, run_config
from gptjax.lora import LoraConfig, parse_targets
from gptjax.objectives import objective_for
from gptjax.schema import require
from gptjax.sharding import (
    check_slices_over_processes,
    check_tensor_within_host,
    data_parallel_size,
    resolve_mesh_layout,
)

# The step counter (TrainState.step, optax's schedule count) is an int32 on the device.
MAX_STEPS = 2**31 - 1
# The input pipeline numbers rows as int64: step x global_batch_size must stay below this.
MAX_ROW_INDEX = 2**63 - 1


def validate_static(config: ml_collections.ConfigDict) -> RunConfig:
    """The checks that need no device (run before the JAX runtime starts): every field."""
    run = run_config(config)
    check_counters(run.train)
    return run


def check_counters(train: TrainConfig) -> None:
    """Steps the counters can count: past int32 the step counter would wrap (and a run of
    10**20 steps would never end), past int64 the pipeline's row numbers would."""
    require(
        train.steps <= MAX_STEPS,
        f"train.steps={train.steps} exceeds {MAX_STEPS:,}, the largest step the int32 step "
        "counter holds",
    )
    rows = train.steps * train.global_batch_size
    require(
        rows <= MAX_ROW_INDEX,
        f"train.steps x train.global_batch_size = {rows:,} rows exceeds {MAX_ROW_INDEX:,}, "
        "the largest row number of the input pipeline (int64)",
    )


def validate(
    config: ml_collections.ConfigDict,
    device_count: int,
    process_count: int = 1,
    local_device_count: int | None = None,
) -> dict:
    """Checks every field that can be checked without compiling; returns derived values:
    `model` (ModelConfig), `mesh_shape`, `mesh_layout` (with its slices), `micro_batch` (rows),
    `run` (the typed RunConfig) and `lora` (LoraConfig or None).

    `process_count` and `local_device_count` (devices per process) are the real runtime's:
    the global batch must split over the processes, `mesh.tensor` must stay within one, and
    the slices (`mesh.dcn_*`) must be whole processes.
    """
    run = validate_static(config)
    layout = resolve_mesh_layout(dataclasses.asdict(run.mesh), device_count)
    check_slices_over_processes(layout.slices, process_count)
    mesh_shape = layout.shape
    local = device_count // process_count if local_device_count is None else local_device_count
    check_tensor_within_host(mesh_shape["tensor"], local, process_count)
    micro = check_across_sections(run, mesh_shape, process_count)
    return {
        "model": run.model,
        "mesh_shape": mesh_shape,
        "mesh_layout": layout,
        "micro_batch": micro,
        "run": run,
        "lora": lora_from(run),
    }


def check_across_sections(run: RunConfig, mesh_shape: dict[str, int], process_count: int) -> int:
    """What relates two sections (each has checked its own fields): lengths, vocabularies, the
    batch against the mesh and processes, the schedule, the phase. Returns rows per micro-batch.
    """
    model, data, train = run.model, run.data, run.train
    pairs = objective_for(run.phase).trains_on_pairs
    require(
        data.seq_len <= model.max_seq_len,
        f"data.seq_len={data.seq_len} exceeds model.max_seq_len={model.max_seq_len}",
    )
    if model.attention == "splash":
        require(
            data.seq_len % 128 == 0,
            f"model.attention='splash' needs data.seq_len to be a multiple of 128 (its kernel "
            f"block), got {data.seq_len}",
        )
        require(
            not pairs,
            "model.attention='splash' cannot express DPO's shared-prompt mask; use 'xla' or "
            "'dot_product' for phase=dpo",
        )
    # data.vocab_size sizes the tokenizer a run trains for itself; prepared data brings its own
    # tokenizer (and data.tokenizer names one), whose size is checked against the model when
    # it is loaded (gptjax.tokenizer.check_vocab). A run with init_from uses its checkpoint's.
    trains_tokenizer = data.source != "prepared" and not data.tokenizer and not run.init_from
    require(
        not trains_tokenizer or data.vocab_size <= model.vocab_size,
        f"data.vocab_size={data.vocab_size} (tokenizer) exceeds model.vocab_size="
        f"{model.vocab_size}; raise model.vocab_size (a multiple of 128 is fastest)",
    )
    lora_from(run)  # targets the model has, a base to adapt
    micro = _check_batch(train, mesh_shape, process_count)
    require(
        run.optim.warmup_steps <= train.steps,
        f"optim.warmup_steps={run.optim.warmup_steps} must be in [0, train.steps={train.steps}]",
    )
    require(
        run.sample.top_k <= model.vocab_size,
        f"sample.top_k={run.sample.top_k} must be in [0, model.vocab_size={model.vocab_size}] "
        "(0 = no top-k filter)",
    )
    require(
        pairs == (data.source == "preferences"),
        f'phase="dpo" trains on data.source="preferences" and only it does; got phase '
        f"{run.phase!r} with data.source={data.source!r}",
    )
    # Conversations are rendered with the chat template and train the answers only, which is
    # SFT; under phase="pretrain" the checkpoint would be sampled as a text model.
    require(
        not (run.phase == "pretrain" and data.source == "conversations"),
        'phase="pretrain" with data.source="conversations": conversations train a chat model '
        '(answers only, through the chat template); set phase="sft", or pretrain on '
        'data.source="builtin" or "prepared" text',
    )
    return micro


def lora_from(run: RunConfig) -> LoraConfig | None:
    """The run's LoRA settings (None when finetune.lora_rank is 0), checked against its model."""
    section = run.finetune
    if section.lora_rank == 0:
        return None
    require(
        bool(run.init_from),
        f"finetune.lora_rank={section.lora_rank} trains adapters on a frozen base: set "
        "init_from to the workdir to adapt (LoRA over a fresh initialisation would freeze "
        "random weights)",
    )
    has_gate = run.model.activation == "swiglu"
    targets = parse_targets(section.lora_targets, has_gate)
    return LoraConfig(section.lora_rank, float(section.lora_alpha), targets)


def _check_batch(train: TrainConfig, mesh_shape: dict[str, int], process_count: int) -> int:
    """Rows per micro-batch, once the global batch splits over processes, micro-batches and
    the mesh's data-parallel devices."""
    # Before the mesh's own split: with several processes this is the rule a user meets first.
    require(
        train.global_batch_size % process_count == 0,
        f"train.global_batch_size={train.global_batch_size} is not divisible by the "
        f"{process_count} processes (each reads an equal slice of every batch); use a multiple "
        f"of {process_count}",
    )
    require(
        train.global_batch_size % train.grad_accum_steps == 0,
        f"train.global_batch_size={train.global_batch_size} is not divisible by "
        f"train.grad_accum_steps={train.grad_accum_steps}",
    )
    shards = data_parallel_size(mesh_shape)
    micro = train.global_batch_size // train.grad_accum_steps
    require(
        micro % shards == 0,
        f"train.global_batch_size={train.global_batch_size} / grad_accum_steps="
        f"{train.grad_accum_steps} = {micro} rows per micro-batch cannot be split over "
        f"the mesh's data x fsdp = {shards} devices; use a multiple of "
        f"{shards * train.grad_accum_steps}",
    )
    require(
        train.eval_batch_size % shards == 0,
        f"train.eval_batch_size={train.eval_batch_size} must be a multiple of the "
        f"mesh's data x fsdp = {shards}",
    )
    return micro
