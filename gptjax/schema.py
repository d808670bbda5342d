"""Typed, frozen config sections: a dataclass's fields are the schema, its annotations the types.

A section's `__post_init__` calls `check_types(self, "train")` first and then checks its ranges,
so a section built in a notebook refuses a bad value exactly as a config file does.
`from_mapping` builds a section from a config file's plain dict, refusing an unknown or missing
field by its dotted name. The annotations understood are the ones configs use: int (never a
bool), float (an int is accepted: 1 means 1.0; NaN and inf are not), bool, str, Literal[...],
X | None, tuple[X, ...] (a tuple or a list) and a nested section. Values are kept as given, never
cast. Every error is one `ConfigError` line (exit 2) naming the field.

This module sits below both `gptjax.model` (ModelConfig is a section) and `gptjax.config`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping

from gptjax.errors import ConfigError


def hint(text: str):
    """A required dataclass field whose type error also says `text` (what its values mean)."""
    return dataclasses.field(metadata={"hint": text})


def require(condition: bool, message: str) -> None:
    """The one-line form of a range check: `ConfigError(message)` unless `condition`."""
    if not condition:
        raise ConfigError(message)


def dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@functools.cache
def _annotations(cls: type) -> dict:
    # Evaluated once per class: under `from __future__ import annotations` they are strings.
    return typing.get_type_hints(cls)


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _fits(value, annotation) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return _fits(value, int) or (isinstance(value, float) and math.isfinite(value))
    if annotation is str:
        return isinstance(value, str)
    if origin is typing.Literal:  # by type too: True == 1 must not match a Literal[1]
        return any(type(value) is type(choice) and value == choice for choice in args)
    if _is_union(annotation):
        return any(_fits(value, member) for member in args)
    if annotation is tuple or origin is tuple:
        items = args[0] if args else typing.Any
        return isinstance(value, tuple | list) and (
            items is typing.Any or all(_fits(item, items) for item in value)
        )
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, annotation)
    raise TypeError(f"gptjax.schema cannot check the annotation {annotation!r}")


def _describe(annotation) -> str:
    """The annotation as a person reads it: `a finite number`, `an integer or None`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    names = {type(None): "None", bool: "true or false", int: "an integer", str: "a string"}
    if annotation in names:
        return names[annotation]
    if annotation is float:
        return "a finite number"
    if origin is typing.Literal:
        return f"one of {args}"
    if _is_union(annotation):
        return " or ".join(_describe(member) for member in args)
    if annotation is tuple or origin is tuple:
        return f"a tuple (each item {_describe(args[0])})" if args else "a tuple"
    return f"a {getattr(annotation, '__name__', annotation)} section"


def check_types(section, prefix: str) -> None:
    """Refuses the first field of `section` whose value does not fit its annotation."""
    annotations = _annotations(type(section))
    for field in dataclasses.fields(section):
        value, annotation = getattr(section, field.name), annotations[field.name]
        if not _fits(value, annotation):
            why = field.metadata.get("hint")
            raise ConfigError(
                f"{dotted(prefix, field.name)} must be {_describe(annotation)}, got {value!r}"
                + (f" ({why})" if why else "")
            )


def from_mapping(cls: type, values: Mapping, prefix: str = ""):
    """`cls(**values)`, first refusing a missing or unknown field by its dotted name; a field
    annotated with a section is built from its own mapping the same way."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    annotations = _annotations(cls)
    unknown = sorted(set(values) - set(fields))
    for name, field in fields.items():
        has_default = field.default is not dataclasses.MISSING
        if name in values or has_default or field.default_factory is not dataclasses.MISSING:
            continue
        kind = "section" if dataclasses.is_dataclass(annotations[name]) else "field"
        fix = (
            f"{dotted(prefix, unknown[0])} is not a field: a typo?"
            if unknown
            else "configs/tiny.py sets every field, with its meaning"
        )
        raise ConfigError(f"config is missing {kind} {dotted(prefix, name)} ({fix})")
    if unknown:
        known = ", ".join(fields)
        raise ConfigError(
            f"unknown config field {dotted(prefix, unknown[0])} (known here: {known})"
        )
    built = {}
    for name, value in values.items():
        annotation = annotations[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{dotted(prefix, name)} must be a section of fields "
                    f"(an ml_collections.ConfigDict), got {value!r}"
                )
            value = from_mapping(annotation, value, dotted(prefix, name))
        built[name] = value
    return cls(**built)
