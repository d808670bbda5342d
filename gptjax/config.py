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
from gptjax.sharding import data_parallel_size, resolve_mesh_shape

SECTIONS = ("model", "mesh", "data", "train", "optim", "sample")


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
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return config


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
            f"--config.{field}={text}: expected a {type(current).__name__} value"
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(
            f"--config.{field}={text}: expected a {type(current).__name__}, "
            f"got a {type(value).__name__}"
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
    """The frozen ModelConfig from the `model` section (field names match one to one)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    fields = config.model.to_dict()
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"unknown config field model.{unknown[0]}")
    return ModelConfig(**fields)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(config, dotted: str) -> None:
    section, name = dotted.split(".")
    value = config[section][name]
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{dotted} must be a positive integer, got {value!r}",
    )


def validate(config: ml_collections.ConfigDict, device_count: int, process_count: int = 1) -> dict:
    """Checks every field that can be checked without compiling; returns derived values."""
    missing = [s for s in SECTIONS if s not in config]
    _require(not missing, f"config is missing section(s) {missing}")
    unknown = sorted(set(config.keys()) - set(SECTIONS) - {"seed", "sharding_rules"})
    _require(not unknown, f"unknown config field {unknown[0] if unknown else ''}")
    model = model_config(config)
    mesh_shape = resolve_mesh_shape(config.mesh.to_dict(), device_count)
    for field in ("train.steps", "train.global_batch_size", "train.grad_accum_steps",
                  "train.log_every", "train.eval_every", "train.eval_batches",
                  "train.max_bad_steps", "data.seq_len", "data.vocab_size"):
        _positive_int(config, field)
    train, optim, data = config.train, config.optim, config.data
    _require(
        data.seq_len <= model.max_seq_len,
        f"data.seq_len={data.seq_len} exceeds model.max_seq_len={model.max_seq_len}",
    )
    _require(
        data.vocab_size <= model.vocab_size,
        f"data.vocab_size={data.vocab_size} (tokenizer) exceeds model.vocab_size="
        f"{model.vocab_size}; raise model.vocab_size (a multiple of 128 is fastest)",
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
        f"the mesh's data x fsdp = {shards} devices; use a multiple of {shards * train.grad_accum_steps}",
    )
    _require(
        train.global_batch_size % process_count == 0,
        f"train.global_batch_size={train.global_batch_size} is not divisible by the "
        f"{process_count} processes",
    )
    _require(
        train.eval_batch_size % shards == 0 and train.eval_batch_size > 0,
        f"train.eval_batch_size={train.eval_batch_size} must be a positive multiple of the "
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
    _require(optim.clip_norm > 0, "optim.clip_norm must be > 0")
    _require(
        0 < data.validation_fraction < 1,
        f"data.validation_fraction must be in (0, 1), got {data.validation_fraction}",
    )
    _require(
        data.tokenizer_type in ("bpe", "unigram", "char"),
        f"data.tokenizer_type must be bpe, unigram or char, got {data.tokenizer_type!r}",
    )
    _require(config.sample.temperature >= 0, "sample.temperature must be >= 0")
    _require(config.sample.max_new_tokens >= 0, "sample.max_new_tokens must be >= 0")
    return {"model": model, "mesh_shape": mesh_shape, "micro_batch": micro}
