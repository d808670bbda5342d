"""gptjax: train GPT-style chat models in JAX (pretrain, SFT, DPO) and sample from them.

Public names only; importing gptjax does no heavy work (TensorFlow is imported by the data
pipeline, not here).
"""

from gptjax.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GptjaxError,
    NonFiniteError,
    Preempted,
)
from gptjax.generate import generate, generate_stream
from gptjax.model import KVCache, ModelConfig, Transformer, count_params, flops_per_token

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "GptjaxError",
    "KVCache",
    "ModelConfig",
    "NonFiniteError",
    "Preempted",
    "Transformer",
    "count_params",
    "flops_per_token",
    "generate",
    "generate_stream",
]
__version__ = "0.1.0"
