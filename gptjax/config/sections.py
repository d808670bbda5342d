"""The config schema: one typed, frozen dataclass per section, each checking its own fields.

A section's fields are the names a config file uses (`run.train.steps` reads as
`config.train.steps`), its annotations their types (gptjax.schema checks them), and its
`__post_init__` their ranges. `configs/tiny.py` says what every field means. What relates two
sections (batch against mesh, seq_len against the model) is `gptjax.config.checks`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import ml_collections

from gptjax.dpo import LOSS_TYPES, REFERENCE_MODES
from gptjax.lora import ALL, TARGETS
from gptjax.model import ModelConfig
from gptjax.objectives import PHASES
from gptjax.pair_kinds import DEFAULT_KINDS, check_kinds
from gptjax.schema import check_types, from_mapping, hint, require
from gptjax.sharding import MESH_AXES, check_mesh_request
from gptjax.tokenizer import MODEL_TYPES


def _positive(section, prefix: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(section, name)
        require(value > 0, f"{prefix}.{name} must be positive, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh axis sizes within one slice; one may be -1 (all remaining devices of a
    slice). `dcn_*`: how many slices (multi-slice TPU) that axis spans. See gptjax.sharding."""

    data: int = 1  # an axis a config leaves out is 1, as gptjax.sharding.make_mesh reads it
    fsdp: int = 1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1

    def __post_init__(self):
        check_types(self, "mesh")
        check_mesh_request(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: Literal["builtin", "prepared", "conversations", "preferences"] = hint(
        '"builtin" corpus, "prepared" shards from `gptjax prepare`, "conversations" for SFT '
        'or "preferences" for DPO'
    )
    prepared_dir: str
    conversations: str
    preferences: str
    packing: bool
    verify_shards: bool
    vocab_size: int
    tokenizer_type: Literal[MODEL_TYPES]
    tokenizer: str
    seq_len: int
    validation_fraction: float
    # Configs written before pair kinds existed lack it: the default is the hard kind.
    preference_kinds: str = DEFAULT_KINDS[0]

    def __post_init__(self):
        check_types(self, "data")
        check_kinds(
            [kind.strip() for kind in self.preference_kinds.split(",") if kind.strip()],
            "data.preference_kinds",
        )
        _positive(self, "data", ("vocab_size", "seq_len"))
        require(
            0 < self.validation_fraction < 1,
            f"data.validation_fraction must be in (0, 1), got {self.validation_fraction}",
        )
        require(
            self.source != "prepared" or bool(self.prepared_dir),
            'data.source="prepared" needs data.prepared_dir: the --out directory of '
            "`gptjax prepare`",
        )
        for source in ("conversations", "preferences"):
            require(
                self.source != source or bool(getattr(self, source).strip()),
                f'data.source="{source}" needs data.{source}: "builtin" or JSONL files/globs, '
                "comma-separated",
            )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int
    global_batch_size: int
    grad_accum_steps: int
    log_every: int
    eval_every: int
    eval_batches: int
    eval_batch_size: int
    max_bad_steps: int
    eval_at_start: bool  # also evaluate before the first step (always when init_from is set)
    # Weights & Biases (gptjax.train.wandb_run); a config written before them leaves them out.
    wandb_project: str = ""
    wandb_entity: str = ""
    wandb_run_name: str = ""
    shard_optimizer: bool = False  # ZeRO-1: optimizer state and its update split over `data`

    def __post_init__(self):
        check_types(self, "train")
        flags = ("eval_at_start", "shard_optimizer")
        counts = tuple(
            f.name
            for f in dataclasses.fields(self)
            if f.name not in flags and not f.name.startswith("wandb_")
        )
        _positive(self, "train", counts)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    peak_lr: float
    end_lr_fraction: float
    warmup_steps: int
    b1: float
    b2: float
    eps: float
    weight_decay: float
    clip_norm: float

    def __post_init__(self):
        check_types(self, "optim")
        # eps = 0 turns a zero gradient (an embedding row no token uses) into 0/0 = NaN.
        _positive(self, "optim", ("peak_lr", "eps", "clip_norm"))
        require(
            0 <= self.end_lr_fraction <= 1,
            f"optim.end_lr_fraction must be in [0, 1], got {self.end_lr_fraction}",
        )
        for name in ("b1", "b2"):
            value = getattr(self, name)
            require(0 <= value < 1, f"optim.{name} must be in [0, 1), got {value}")
        require(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        require(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    save_every: int
    save_every_minutes: float
    keep_last: int
    keep_every: int
    async_save: bool
    resume_step: int

    def __post_init__(self):
        check_types(self, "checkpoint")
        _positive(self, "checkpoint", ("save_every", "keep_last"))
        require(
            self.keep_every >= 0,
            f"checkpoint.keep_every must be >= 0 (0 = keep only the latest), "
            f"got {self.keep_every!r}",
        )
        require(
            self.save_every_minutes >= 0,
            f"checkpoint.save_every_minutes must be >= 0 (0 = off), "
            f"got {self.save_every_minutes!r}",
        )
        require(
            self.resume_step >= -1,
            f"checkpoint.resume_step must be -1 (latest) or a step, got {self.resume_step!r}",
        )


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    prompts: tuple[str, ...]
    max_new_tokens: int
    temperature: float
    top_k: int

    def __post_init__(self):
        check_types(self, "sample")
        require(
            self.max_new_tokens >= 0,
            f"sample.max_new_tokens must be >= 0, got {self.max_new_tokens!r}",
        )
        require(
            self.temperature >= 0,
            f"sample.temperature must be >= 0 (0 = greedy), got {self.temperature!r}",
        )
        require(
            self.top_k >= 0, f"sample.top_k must be >= 0 (0 = no top-k filter), got {self.top_k!r}"
        )


@dataclasses.dataclass(frozen=True)
class DpoConfig:
    beta: float
    label_smoothing: float
    loss: Literal[LOSS_TYPES]
    reference: Literal[REFERENCE_MODES]

    def __post_init__(self):
        check_types(self, "dpo")
        _positive(self, "dpo", ("beta",))
        require(
            0 <= self.label_smoothing < 0.5,
            f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}",
        )


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """LoRA (gptjax.lora). Configs and checkpoints written before it lack the section: off."""

    lora_rank: int = 0  # 0 = every parameter trains
    lora_alpha: float = 16.0
    lora_targets: str = ALL

    def __post_init__(self):
        check_types(self, "finetune")
        require(
            self.lora_rank >= 0,
            f"finetune.lora_rank must be >= 1 (0 = LoRA off), got {self.lora_rank!r}",
        )
        require(
            self.lora_alpha > 0, f"finetune.lora_alpha must be positive, got {self.lora_alpha!r}"
        )
        names = [name.strip() for name in self.lora_targets.split(",") if name.strip()]
        known = (*TARGETS, ALL)
        bad = [name for name in names if name not in known] or ([] if names else [""])
        require(
            not bad,
            f"finetune.lora_targets: {bad[0] if bad else ''!r} is not a projection; use "
            f"comma-separated names from {', '.join(TARGETS)}, or {ALL!r}",
        )
        require(
            ALL not in names or names == [ALL],
            f'finetune.lora_targets={self.lora_targets!r}: "{ALL}" stands alone',
        )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole config file, typed: the top-level fields and one dataclass per section."""

    seed: int
    sharding_rules: tuple[tuple, ...]  # (logical axis, mesh axes) pairs; see gptjax.sharding
    phase: Literal[PHASES]  # gptjax.objectives says what each phase minimises
    init_from: str = hint("a workdir or checkpoint path whose parameters start the run; '' = none")
    model: ModelConfig
    mesh: MeshConfig
    data: DataConfig
    train: TrainConfig
    optim: OptimConfig
    checkpoint: CheckpointConfig
    sample: SampleConfig
    dpo: DpoConfig
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)

    def __post_init__(self):
        check_types(self, "")
        require(self.seed >= 0, f"seed must be a non-negative integer, got {self.seed!r}")
        for rule in self.sharding_rules:
            _check_rule(rule)


def _check_rule(rule) -> None:
    """A rule maps a logical axis to mesh axes that exist (a typo would silently replicate)."""
    require(len(rule) == 2, f"sharding_rules: {rule!r} is not a (logical_axis, mesh_axes) pair")
    name, target = rule
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    bad = [axis for axis in axes if axis not in MESH_AXES]
    require(
        not bad,
        f"sharding_rules: logical axis {name!r} maps to {bad[0] if bad else ''!r}, "
        f"which is not a mesh axis {MESH_AXES}",
    )


def run_config(config: ml_collections.ConfigDict) -> RunConfig:
    """The typed view of a config file; the ConfigDict itself is left as it is."""
    return from_mapping(RunConfig, config.to_dict())


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The frozen ModelConfig from the `model` section (field names match one to one)."""
    section = config.get("model")
    require(isinstance(section, ml_collections.ConfigDict), "config is missing section model")
    return from_mapping(ModelConfig, section.to_dict(), "model")
