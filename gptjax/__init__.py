"""gptjax: train GPT-style chat models in JAX (pretrain, SFT, DPO) and sample from them.

Public names only. The model and generation names are imported on first use (PEP 562), so
`import gptjax.data.prepare` in a tokenizing worker process does not pay for jax and flax.
"""

import importlib

from gptjax.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GptjaxError,
    NonFiniteError,
    Preempted,
)

# Public name -> the module that defines it, imported when the name is first used.
_LAZY = {
    "generate": "gptjax.generation",
    "generate_stream": "gptjax.generation",
    "KVCache": "gptjax.model",
    "ModelConfig": "gptjax.model",
    "Transformer": "gptjax.model",
    "count_params": "gptjax.model",
    "flops_per_token": "gptjax.model",
    "load": "gptjax.inference.api",
    "TrainedModel": "gptjax.inference.api",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'gptjax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(__all__)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "GptjaxError",
    "KVCache",
    "ModelConfig",
    "NonFiniteError",
    "Preempted",
    "TrainedModel",
    "Transformer",
    "count_params",
    "flops_per_token",
    "generate",
    "generate_stream",
    "load",
]
__version__ = "0.1.0"
