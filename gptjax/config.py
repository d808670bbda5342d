"""Config files, `--config.a.b=value` overrides, and validation before anything is compiled.

A config is a Python file with `get_config() -> ml_collections.ConfigDict` (configs are code).
Every check here raises `ConfigError` with the field's dotted name and the fix.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from gptjax.errors import ConfigError
from gptjax.model import ModelConfig
from gptjax.sharding import (
    MESH_AXES,
    check_tensor_within_host,
    data_parallel_size,
    resolve_mesh_shape,
)

SECTIONS = ("model", "mesh", "data", "train", "optim", "checkpoint", "sample", "dpo")
TOP_LEVEL = ("seed", "sharding_rules", "phase", "init_from")
PHASES = ("pretrain", "sft", "dpo")
DATA_SOURCES = ("builtin", "prepared", "conversations", "preferences")
# The fields validate() and the trainer read; a config file lacking one is refused by name
# (the model section is checked against ModelConfig's own fields).
REQUIRED_FIELDS = {
    "data": (
        "source prepared_dir conversations preferences packing verify_shards vocab_size "
        "tokenizer_type tokenizer seq_len validation_fraction"
    ).split(),
    "train": (
        "steps global_batch_size grad_accum_steps log_every eval_every eval_batches "
        "eval_batch_size max_bad_steps"
    ).split(),
    "optim": "peak_lr end_lr_fraction warmup_steps b1 b2 eps weight_decay clip_norm".split(),
    "checkpoint": (
        "save_every save_every_minutes keep_last keep_every async_save resume_step"
    ).split(),
    "sample": "prompts max_new_tokens temperature top_k".split(),
    "dpo": "beta label_smoothing loss reference".split(),
}
_POSITIVE_INTS = (
    "train.steps train.global_batch_size train.grad_accum_steps train.log_every "
    "train.eval_every train.eval_batches train.eval_batch_size train.max_bad_steps "
    "data.seq_len data.vocab_size"
).split()
# Real-valued fields: an int is accepted (1 means 1.0); a string, bool, NaN or inf is not.
_REAL_FIELDS = (
    "data.validation_fraction optim.peak_lr optim.end_lr_fraction optim.b1 optim.b2 "
    "optim.eps optim.weight_decay optim.clip_norm sample.temperature"
).split()


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"gptjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a config is user code: report where it broke, in one line
        raise ConfigError(f"config file {path} failed to load: {error!r}") from error
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config() function")
    try:
        config = module.get_config()
    except Exception as error:  # e.g. ConfigDict's TypeError when a field changes type
        raise ConfigError(f"config file {path} failed to load: {error!r}") from error
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return config


def _a(type_name: str) -> str:
    return f"{'an' if type_name[0] in 'aeiou' else 'a'} {type_name}"


def _parse_value(text: str, current, field: str):
    """Parses an override string into the type the field already has (nothing silently cast)."""
    if isinstance(current, str):
        return text
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{field}={text}: expected true or false")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ConfigError(
            f"--config.{field}={text}: expected {_a(type(current).__name__)} value"
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(
            f"--config.{field}={text}: expected {_a(type(current).__name__)}, "
            f"got {_a(type(value).__name__)}"
        )
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies `a.b=value` strings in place; an unknown field is an error, never a new field."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--config.{item}: expected --config.FIELD=VALUE")
        field, text = item.split("=", 1)
        *parents, leaf = field.split(".")
        node = config
        for depth, name in enumerate(parents):
            if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
                raise ConfigError(f"unknown config field {'.'.join(parents[: depth + 1])}")
            node = node[name]
        if leaf not in node:
            known = ", ".join(sorted(node.keys()))
            raise ConfigError(f"unknown config field {field} (known here: {known})")
        with node.unlocked():
            node[leaf] = _parse_value(text, node[leaf], field)


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The frozen ModelConfig from the `model` section (field names match one to one).

    Types are checked here, before ModelConfig's own range checks compare them: an override of
    a None-valued field (num_kv_heads, head_dim) arrives as whatever the text parsed to.
    """
    known = {f.name: f for f in dataclasses.fields(ModelConfig)}
    fields = config.model.to_dict()
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ConfigError(f"unknown config field model.{unknown[0]}")
    missing = [n for n, f in known.items() if f.default is dataclasses.MISSING and n not in fields]
    _require(not missing, f"config is missing field model.{missing[0] if missing else ''}")
    for name in ("num_kv_heads", "head_dim"):
        value = fields.get(name)
        _require(
            value is None or (_is_int(value) and value > 0),
            f"model.{name} must be a positive integer or None, got {value!r}",
        )
    for name in ("norm_eps", "rope_theta", "init_std", "dropout_rate"):
        value = fields.get(name, known[name].default)
        positive = name != "dropout_rate"  # dropout's range is ModelConfig's check
        _require(
            _is_real(value) and (value > 0 or not positive),
            f"model.{name} must be a {'positive ' if positive else ''}number, got {value!r}",
        )
    for name in ("use_bias", "tie_embeddings", "scan_layers"):
        value = fields.get(name, known[name].default)
        _require(isinstance(value, bool), f"model.{name} must be true or false, got {value!r}")
    return ModelConfig(**fields)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_fields(config: ml_collections.ConfigDict) -> None:
    """Every section and field present, and each number of the type its checks compare."""
    missing = [s for s in SECTIONS if s not in config]
    _require(not missing, f"config is missing section(s) {missing}")
    unknown = sorted(set(config.keys()) - set(SECTIONS) - set(TOP_LEVEL))
    _require(not unknown, f"unknown config field {unknown[0] if unknown else ''}")
    for section, names in REQUIRED_FIELDS.items():
        for name in names:
            _require(name in config[section], f"config is missing field {section}.{name}")
    _require("seed" in config, "config is missing field seed")
    _require(
        _is_int(config.seed) and config.seed >= 0,
        f"seed must be a non-negative integer, got {config.seed!r}",
    )
    for dotted in _REAL_FIELDS:
        section, name = dotted.split(".")
        value = config[section][name]
        _require(_is_real(value), f"{dotted} must be a finite number, got {value!r}")
    for dotted in ("optim.warmup_steps", "sample.max_new_tokens", "sample.top_k"):
        section, name = dotted.split(".")
        value = config[section][name]
        _require(_is_int(value), f"{dotted} must be an integer, got {value!r}")


def _check_rules(config: ml_collections.ConfigDict) -> None:
    """Each rule maps a logical axis to mesh axes that exist (a typo would silently replicate)."""
    _require(
        "sharding_rules" in config,
        "config is missing field sharding_rules (use gptjax.sharding.DEFAULT_RULES)",
    )
    for rule in config.sharding_rules:
        _require(
            isinstance(rule, tuple | list) and len(rule) == 2,
            f"sharding_rules: {rule!r} is not a (logical_axis, mesh_axes) pair",
        )
        name, target = rule
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        bad = [axis for axis in axes if axis not in MESH_AXES]
        _require(
            not bad,
            f"sharding_rules: logical axis {name!r} maps to {bad[0] if bad else ''!r}, "
            f"which is not a mesh axis {MESH_AXES}",
        )


def _check_data_source(data: ml_collections.ConfigDict) -> None:
    _require(
        data.source in DATA_SOURCES,
        f'data.source must be "builtin", "prepared" (shards from `gptjax prepare`), '
        f'"conversations" (chat data for SFT) or "preferences" (pairs for DPO), '
        f"got {data.source!r}",
    )
    for name in ("prepared_dir", "conversations", "preferences"):
        value = data[name]
        _require(isinstance(value, str), f"data.{name} must be a string, got {value!r}")
    _require(
        data.source != "prepared" or bool(data.prepared_dir),
        'data.source="prepared" needs data.prepared_dir: the --out directory of `gptjax prepare`',
    )
    _require(
        data.source != "conversations" or bool(data.conversations.strip()),
        'data.source="conversations" needs data.conversations: "builtin" or JSONL files/globs, '
        "comma-separated",
    )
    _require(
        data.source != "preferences" or bool(data.preferences.strip()),
        'data.source="preferences" needs data.preferences: "builtin" or JSONL files/globs, '
        "comma-separated",
    )
    for name in ("packing", "verify_shards"):
        value = data[name]
        _require(isinstance(value, bool), f"data.{name} must be true or false, got {value!r}")


def _positive_int(config, dotted: str) -> None:
    section, name = dotted.split(".")
    value = config[section][name]
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{dotted} must be a positive integer, got {value!r}",
    )


def validate_static(config: ml_collections.ConfigDict) -> ModelConfig:
    """The checks that need no device (run before the JAX runtime starts)."""
    _check_fields(config)
    return model_config(config)


def validate(
    config: ml_collections.ConfigDict,
    device_count: int,
    process_count: int = 1,
    local_device_count: int | None = None,
) -> dict:
    """Checks every field that can be checked without compiling; returns derived values.

    `process_count` and `local_device_count` (devices per process) are the real runtime's:
    the global batch must split over the processes, and `mesh.tensor` must stay within one.
    """
    model = validate_static(config)
    mesh_shape = resolve_mesh_shape(config.mesh.to_dict(), device_count)
    local = device_count // process_count if local_device_count is None else local_device_count
    check_tensor_within_host(mesh_shape["tensor"], local, process_count)
    _check_rules(config)
    for field in _POSITIVE_INTS:
        _positive_int(config, field)
    train, optim, data = config.train, config.optim, config.data
    _require(
        data.seq_len <= model.max_seq_len,
        f"data.seq_len={data.seq_len} exceeds model.max_seq_len={model.max_seq_len}",
    )
    if model.attention == "splash":
        _require(
            data.seq_len % 128 == 0,
            f"model.attention='splash' needs data.seq_len to be a multiple of 128 (its kernel "
            f"block), got {data.seq_len}",
        )
        _require(
            config.phase != "dpo",
            "model.attention='splash' cannot express DPO's shared-prompt mask; use 'xla' or "
            "'dot_product' for phase=dpo",
        )
    _require(
        data.vocab_size <= model.vocab_size,
        f"data.vocab_size={data.vocab_size} (tokenizer) exceeds model.vocab_size="
        f"{model.vocab_size}; raise model.vocab_size (a multiple of 128 is fastest)",
    )
    # Before the mesh's own split: with several processes this is the rule a user meets first.
    _require(
        train.global_batch_size % process_count == 0,
        f"train.global_batch_size={train.global_batch_size} is not divisible by the "
        f"{process_count} processes (each reads an equal slice of every batch); use a multiple "
        f"of {process_count}",
    )
    shards = data_parallel_size(mesh_shape)
    micro = train.global_batch_size // train.grad_accum_steps
    _require(
        train.global_batch_size % train.grad_accum_steps == 0,
        f"train.global_batch_size={train.global_batch_size} is not divisible by "
        f"train.grad_accum_steps={train.grad_accum_steps}",
    )
    _require(
        micro % shards == 0,
        f"train.global_batch_size={train.global_batch_size} / grad_accum_steps="
        f"{train.grad_accum_steps} = {micro} rows per micro-batch cannot be split over "
        f"the mesh's data x fsdp = {shards} devices; use a multiple of "
        f"{shards * train.grad_accum_steps}",
    )
    _require(
        train.eval_batch_size % shards == 0,
        f"train.eval_batch_size={train.eval_batch_size} must be a multiple of the "
        f"mesh's data x fsdp = {shards}",
    )
    _require(optim.peak_lr > 0 and math.isfinite(optim.peak_lr), "optim.peak_lr must be > 0")
    _require(0 <= optim.end_lr_fraction <= 1, "optim.end_lr_fraction must be in [0, 1]")
    _require(
        0 <= optim.warmup_steps <= train.steps,
        f"optim.warmup_steps={optim.warmup_steps} must be in [0, train.steps={train.steps}]",
    )
    _require(0 <= optim.b1 < 1 and 0 <= optim.b2 < 1, "optim.b1 and optim.b2 must be in [0, 1)")
    _require(optim.weight_decay >= 0, "optim.weight_decay must be >= 0")
    # eps = 0 turns a zero gradient (an embedding row no token uses) into 0/0 = NaN.
    _require(optim.eps > 0, f"optim.eps must be > 0, got {optim.eps}")
    _require(optim.clip_norm > 0, "optim.clip_norm must be > 0")
    _require(
        0 < data.validation_fraction < 1,
        f"data.validation_fraction must be in (0, 1), got {data.validation_fraction}",
    )
    _check_data_source(data)
    _require(
        data.tokenizer_type in ("bpe", "unigram", "char"),
        f"data.tokenizer_type must be bpe, unigram or char, got {data.tokenizer_type!r}",
    )
    _require(config.sample.temperature >= 0, "sample.temperature must be >= 0")
    _require(config.sample.max_new_tokens >= 0, "sample.max_new_tokens must be >= 0")
    _require(
        0 <= config.sample.top_k <= model.vocab_size,
        f"sample.top_k={config.sample.top_k} must be in [0, model.vocab_size="
        f"{model.vocab_size}] (0 = no top-k filter)",
    )
    _check_checkpoint(config)
    _check_dpo(config)
    return {"model": model, "mesh_shape": mesh_shape, "micro_batch": micro}


def _check_checkpoint(config: ml_collections.ConfigDict) -> None:
    ckpt = config.checkpoint
    _require(
        config.get("phase") in PHASES, f"phase must be one of {PHASES}, got {config.get('phase')!r}"
    )
    _require(
        isinstance(config.get("init_from"), str), "init_from must be a path string ('' = none)"
    )
    for name in ("save_every", "keep_last"):
        value = ckpt[name]
        _require(
            _is_int(value) and value > 0,
            f"checkpoint.{name} must be a positive integer, got {value!r}",
        )
    _require(
        _is_int(ckpt.keep_every) and ckpt.keep_every >= 0,
        f"checkpoint.keep_every must be >= 0 (0 = keep only the latest), got {ckpt.keep_every!r}",
    )
    _require(
        _is_real(ckpt.save_every_minutes) and ckpt.save_every_minutes >= 0,
        f"checkpoint.save_every_minutes must be >= 0 (0 = off), got {ckpt.save_every_minutes!r}",
    )
    _require(isinstance(ckpt.async_save, bool), "checkpoint.async_save must be true or false")
    _require(
        _is_int(ckpt.resume_step) and ckpt.resume_step >= -1,
        f"checkpoint.resume_step must be -1 (latest) or a step, got {ckpt.resume_step!r}",
    )


def _check_dpo(config: ml_collections.ConfigDict) -> None:
    from gptjax.dpo import LOSS_TYPES, REFERENCE_MODES

    dpo, dpo_phase = config.dpo, config.phase == "dpo"
    _require(
        dpo_phase == (config.data.source == "preferences"),
        f'phase="dpo" trains on data.source="preferences" and only it does; got phase '
        f"{config.phase!r} with data.source={config.data.source!r}",
    )
    _require(
        _is_real(dpo.beta) and dpo.beta > 0, f"dpo.beta must be a number > 0, got {dpo.beta!r}"
    )
    _require(
        _is_real(dpo.label_smoothing) and 0 <= dpo.label_smoothing < 0.5,
        f"dpo.label_smoothing must be in [0, 0.5), got {dpo.label_smoothing!r}",
    )
    _require(dpo.loss in LOSS_TYPES, f"dpo.loss must be one of {LOSS_TYPES}, got {dpo.loss!r}")
    _require(
        dpo.reference in REFERENCE_MODES,
        f"dpo.reference must be one of {REFERENCE_MODES}, got {dpo.reference!r}",
    )
