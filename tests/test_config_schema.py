"""The config schema is the typed section dataclasses: their fields are what a file must set,
their annotations the types, and validation never changes the ConfigDict that is saved."""

import dataclasses
import math
from pathlib import Path

import pytest

from gptjax.config import (
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    load_config_file,
    run_config,
    validate,
)
from gptjax.errors import ConfigError
from gptjax.model import ModelConfig
from gptjax.schema import check_types

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.py"
TRAIN = dict(
    steps=10,
    global_batch_size=8,
    grad_accum_steps=1,
    log_every=1,
    eval_every=5,
    eval_batches=1,
    eval_batch_size=8,
    max_bad_steps=5,
    eval_at_start=False,
)


def test_tiny_sets_exactly_the_schemas_fields():
    """configs/tiny.py is the commented base: every field of every section, nothing else."""
    config = load_config_file(TINY)
    run = run_config(config)
    assert set(config.keys()) == {f.name for f in dataclasses.fields(run)}
    sections = [
        f.name for f in dataclasses.fields(run) if dataclasses.is_dataclass(getattr(run, f.name))
    ]
    assert len(sections) == 9
    for name in sections:
        fields = {f.name for f in dataclasses.fields(getattr(run, name))}
        assert set(config[name].keys()) == fields, name


def test_validate_returns_the_typed_config_under_the_configdicts_names():
    config = load_config_file(TINY)
    apply_overrides(config, ["train.steps=700", "optim.peak_lr=1"])
    run = validate(config, device_count=8)["run"]
    assert isinstance(run, RunConfig) and isinstance(run.model, ModelConfig)
    assert run.train.steps == config.train.steps == 700
    assert run.optim.peak_lr == 1.0 and run.sample.prompts == config.sample.prompts
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.train.steps = 1


def test_validation_leaves_the_saved_config_byte_identical():
    """Checkpoint metadata and the multi-host hash serialise the ConfigDict itself."""
    config = load_config_file(TINY)
    apply_overrides(config, ["optim.peak_lr=1", "model.num_kv_heads=2"])
    before = (config.to_json_best_effort(), config.to_json_best_effort(sort_keys=True), str(config))
    validate(config, device_count=8)
    after = (config.to_json_best_effort(), config.to_json_best_effort(sort_keys=True), str(config))
    assert after == before
    assert '"peak_lr": 1.0' in after[0] and '"num_kv_heads": 2' in after[0]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", 0, "train.steps must be positive, got 0"),
        ("steps", True, "train.steps must be an integer, got True"),  # a bool is not an int
        ("steps", 10.0, "train.steps must be an integer, got 10.0"),  # nothing silently cast
        ("log_every", "5", "train.log_every must be an integer, got '5'"),
    ],
)
def test_a_section_built_in_code_checks_itself(field, value, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.") + "$"):
        TrainConfig(**(TRAIN | {field: value}))
    assert TrainConfig(**TRAIN).steps == 10


def test_float_fields_take_ints_as_given_and_refuse_nan_and_bools():
    optim = dict(
        peak_lr=1,
        end_lr_fraction=0.1,
        warmup_steps=0,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0,
        clip_norm=1.0,
    )
    assert type(OptimConfig(**optim).peak_lr) is int  # accepted, not converted
    for bad in (math.nan, math.inf, False, "1"):
        with pytest.raises(ConfigError, match="^optim.peak_lr must be a finite number"):
            OptimConfig(**(optim | {"peak_lr": bad}))


def test_annotations_with_none_literal_and_tuple_items():
    @dataclasses.dataclass(frozen=True)
    class Section:
        size: int | None
        kind: str = "a"
        names: tuple[str, ...] = ()

    check_types(Section(None, "a", ["x", "y"]), "s")  # a list is a tuple read back from JSON
    with pytest.raises(ConfigError, match=r"^s\.size must be an integer or None, got 'x'$"):
        check_types(Section("x"), "s")
    with pytest.raises(ConfigError, match=r"^s\.names must be a tuple \(each item a string\)"):
        check_types(Section(1, "a", ("x", 2)), "s")


def test_an_unknown_field_in_a_file_is_refused_naming_it():
    config = load_config_file(TINY)
    with config.unlocked():
        config.train.stepz = 5
    with pytest.raises(ConfigError, match=r"^unknown config field train\.stepz \(known here: "):
        validate(config, device_count=8)


def test_a_misspelt_field_names_the_missing_one_and_the_typo():
    config = load_config_file(TINY)
    with config.unlocked():
        config.optim.warmup = config.optim.warmup_steps
        del config.optim["warmup_steps"]
    with pytest.raises(ConfigError) as info:
        validate(config, device_count=8)
    assert str(info.value) == (
        "config is missing field optim.warmup_steps (optim.warmup is not a field: a typo?)"
    )


def test_a_missing_section_is_refused_naming_it():
    config = load_config_file(TINY)
    with config.unlocked():
        del config["dpo"]
    with pytest.raises(ConfigError, match="^config is missing section dpo "):
        validate(config, device_count=8)


def test_mesh_axes_a_file_leaves_out_are_one():
    config = load_config_file(TINY)
    with config.unlocked():
        del config.mesh["tensor"]
    assert validate(config, device_count=8)["mesh_shape"] == {"data": 8, "fsdp": 1, "tensor": 1}
