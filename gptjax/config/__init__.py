"""Config files (`configs/*.py`, shipped in the package too: `--config tiny` names one),
`--config.a.b=value` overrides, and the typed schema they are checked against before anything
is compiled.

`files`: load a file, apply overrides (the ConfigDict users see, print and checkpoint).
`sections`: one typed, frozen dataclass per section, each checking its own fields.
`checks`: `validate`, and the one function for what relates two sections.
"""

from gptjax.config.checks import check_across_sections, lora_from, validate, validate_static
from gptjax.config.files import apply_overrides, load_config_file, load_config_with_origins
from gptjax.config.sections import (
    CheckpointConfig,
    DataConfig,
    DpoConfig,
    MeshConfig,
    OptimConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    model_config,
    run_config,
)

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DpoConfig",
    "MeshConfig",
    "OptimConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "check_across_sections",
    "load_config_file",
    "load_config_with_origins",
    "lora_from",
    "model_config",
    "run_config",
    "validate",
    "validate_static",
]
