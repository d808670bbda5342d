"""Config files and `--config.a.b=value` overrides.

A config is a Python file with `get_config() -> ml_collections.ConfigDict` (configs are code).
The ConfigDict is what users edit, override, print (`--print-config`) and what checkpoints and
the multi-host config hash serialise; gptjax.config.sections reads it into typed sections.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from gptjax.builtin_configs import resolve_config_path
from gptjax.errors import ConfigError

# While config files load (one may load another, its base), each level collects the
# (flattened fields, fields set on purpose) of the files loaded inside it.
_loading: list[list[tuple[dict, dict]]] = []


def _flat(config: ml_collections.ConfigDict) -> dict:
    flat = {}
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            flat |= {f"{name}.{k}": v for k, v in _flat(value).items()}
        else:
            flat[name] = value
    return flat


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """The ConfigDict of a config file's `get_config()`."""
    return load_config_with_origins(path)[0]


def load_config_with_origins(
    path: str | Path, overrides: Sequence[str] = ()
) -> tuple[ml_collections.ConfigDict, dict[str, str]]:
    """The config of `path` with `overrides` applied, and the fields set on purpose: {dotted
    field: who set it}, e.g. {"model.num_layers": "--config.model.num_layers=2"}.

    On purpose: a command-line override, or a field a config file changes from the config
    file it loads (configs/gpt2_124m.py's model, not the configs/tiny.py values that
    configs/tiny_sft.py inherits). A file that loads no other (configs/tiny.py) states
    defaults only. What a finetune may take from its `init_from` checkpoint instead
    (gptjax.train.architecture) is decided by this.
    """
    _loading.append([])
    try:
        config = _load(resolve_config_path(path))
    finally:
        bases = _loading.pop()
    on_purpose: dict[str, str] = {}
    if bases:  # the file loaded another: what it changed from that base it meant
        base, base_on_purpose = bases[0]
        on_purpose |= base_on_purpose
        on_purpose |= {k: str(path) for k, v in _flat(config).items() if base.get(k, v) != v}
        on_purpose |= {k: str(path) for k in _flat(config).keys() - base.keys()}
    if _loading:  # loaded by another file: it compares itself against this result
        _loading[-1].append((_flat(config), on_purpose))
    apply_overrides(config, overrides)
    for item in overrides:
        on_purpose[item.split("=", 1)[0]] = f"--config.{item}"
    return config, on_purpose


def _load(path: Path) -> ml_collections.ConfigDict:
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
