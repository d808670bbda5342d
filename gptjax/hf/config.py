"""Hugging Face `config.json` <-> `ModelConfig` for GPT-2 and Llama, refusing what gptjax lacks.

Anything the model would compute differently (another activation, a rope scaling scheme,
biases Llama does not have) is an error naming the setting, never an approximation.
"""

from __future__ import annotations

import json

from gptjax.errors import ConfigError
from gptjax.model import ModelConfig
from gptjax.paths import PathLike, as_path

ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
# Tanh-approximated GELU under its Hugging Face names (model.py computes exactly this).
_GPT2_GELU = ("gelu_new", "gelu_pytorch_tanh")


def read_config(model_dir: PathLike) -> dict:
    path = as_path(model_dir, "model directory") / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: give a Hugging Face model directory (config.json + weights), "
            "e.g. one saved by save_pretrained or `huggingface-cli download gpt2 --local-dir DIR`"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path} holds a JSON {type(config).__name__}, not the object of settings a "
            "Hugging Face config.json is"
        )
    return config


def _require(hf: dict, key: str, where: str):
    if not isinstance(hf.get(key), int | float) or isinstance(hf.get(key), bool):
        raise ConfigError(f"{where}: `{key}` is missing or not a number")
    return hf[key]


def _float(hf: dict, key: str, default: float, where: str) -> float:
    """An optional number (float() would take "1e-5" text, or raise a traceback on "x")."""
    value = hf.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: `{key}` is {value!r}, not a number")
    return float(value)


def _object(hf: dict, key: str, where: str) -> dict:
    """An optional nested object (rope settings): {} when absent or null."""
    value = hf.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: `{key}` is {value!r}, not an object")
    return value


def _unsupported(where: str, setting: str, value, supported: str) -> ConfigError:
    return ConfigError(
        f"{where}: {setting}={value!r} is not implemented by gptjax (supported: {supported})"
    )


def _rope_theta(hf: dict, where: str) -> float:
    """The rotary base; refuses any rope scaling (linear, dynamic, yarn, llama3, ...).

    transformers 5 writes `rope_parameters`; earlier versions `rope_theta` + `rope_scaling`.
    """
    params = _object(hf, "rope_parameters", where)
    scaling = _object(hf, "rope_scaling", where)
    for setting, source in (("rope_parameters", params), ("rope_scaling", scaling)):
        kind = source.get("rope_type", source.get("type", "default"))
        if kind != "default":
            raise _unsupported(where, f"{setting}.rope_type", kind, "'default' (no scaling)")
    factor = hf.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))
    if factor != 1.0:
        raise _unsupported(where, "partial_rotary_factor", factor, "1.0")
    if "rope_theta" in params:
        return _float(params, "rope_theta", 10_000.0, f"{where}: rope_parameters")
    return _float(hf, "rope_theta", 10_000.0, where)


def _gpt2(hf: dict, where: str) -> ModelConfig:
    D = _require(hf, "n_embd", where)
    act = hf.get("activation_function", "gelu_new")
    if act not in _GPT2_GELU:
        raise _unsupported(where, "activation_function", act, " or ".join(_GPT2_GELU))
    checks = {
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
    }
    for key, wanted in checks.items():
        if hf.get(key, wanted) != wanted:
            raise _unsupported(where, key, hf[key], repr(wanted))
    return ModelConfig.gpt2(
        vocab_size=_require(hf, "vocab_size", where),
        num_layers=_require(hf, "n_layer", where),
        num_heads=_require(hf, "n_head", where),
        embed_dim=D,
        mlp_dim=hf.get("n_inner") or 4 * D,
        max_seq_len=_require(hf, "n_positions", where),
        norm_eps=_float(hf, "layer_norm_epsilon", 1e-5, where),
        tie_embeddings=hf.get("tie_word_embeddings", True),
        init_std=_float(hf, "initializer_range", 0.02, where),
    )


def _llama(hf: dict, where: str) -> ModelConfig:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise _unsupported(where, "hidden_act", act, "'silu' (SwiGLU)")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key, False):
            raise _unsupported(where, key, hf[key], "false")
    D, H = _require(hf, "hidden_size", where), _require(hf, "num_attention_heads", where)
    return ModelConfig.llama(
        vocab_size=_require(hf, "vocab_size", where),
        num_layers=_require(hf, "num_hidden_layers", where),
        num_heads=H,
        # Explicit, as configs/llama_1b.py spells them, so `init_from` matches such a config.
        num_kv_heads=hf.get("num_key_value_heads") or H,
        head_dim=hf.get("head_dim") or D // H,
        embed_dim=D,
        mlp_dim=_require(hf, "intermediate_size", where),
        max_seq_len=_require(hf, "max_position_embeddings", where),
        norm_eps=_float(hf, "rms_norm_eps", 1e-6, where),
        rope_theta=_rope_theta(hf, where),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        init_std=_float(hf, "initializer_range", 0.02, where),
    )


def model_config_from_hf(hf: dict, where: str = "config.json") -> tuple[str, ModelConfig]:
    """(family, ModelConfig) of a Hugging Face config; ConfigError (exit 2) when unsupported."""
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in ARCHITECTURES:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not supported; gptjax imports "
            + ", ".join(f"{t!r} ({a})" for t, a in ARCHITECTURES.items())
        )
    architectures = hf.get("architectures") or [ARCHITECTURES[model_type]]
    if ARCHITECTURES[model_type] not in architectures:
        raise ConfigError(
            f"{where}: architectures {architectures} are not supported; gptjax imports "
            f"{ARCHITECTURES[model_type]} for model_type {model_type!r}"
        )
    build = _gpt2 if model_type == "gpt2" else _llama
    try:
        return model_type, build(hf, where)
    except ConfigError as error:
        if str(error).startswith(where):
            raise
        raise ConfigError(f"{where}: {error}") from None  # a ModelConfig check, e.g. heads


def family_of(cfg: ModelConfig) -> str:
    """ "gpt2" or "llama": the Hugging Face class that computes exactly what this model does."""
    gpt2 = {"position": "learned", "norm": "layernorm", "activation": "gelu", "use_bias": True}
    llama = {"position": "rope", "norm": "rmsnorm", "activation": "swiglu", "use_bias": False}
    for family, fields in (("gpt2", gpt2), ("llama", llama)):
        if all(getattr(cfg, key) == value for key, value in fields.items()):
            if family == "gpt2" and (cfg.kv_heads, cfg.dims_per_head) != (
                cfg.num_heads,
                cfg.embed_dim // cfg.num_heads,
            ):
                raise ConfigError(
                    "GPT-2 has no grouped-query attention or separate head_dim: set "
                    "model.num_kv_heads and model.head_dim to None to export it"
                )
            return family
    mine = {key: getattr(cfg, key) for key in gpt2}
    raise ConfigError(
        f"the model ({mine}) is neither GPT-2 {gpt2} nor Llama {llama} shaped, so no Hugging "
        "Face class computes it"
    )


def hf_config(cfg: ModelConfig, family: str, special: dict, dtype: str) -> dict:
    """config.json for `transformers` (the pre-5 spelling, which transformers 5 also reads)."""
    common = {
        "architectures": [ARCHITECTURES[family]],
        "model_type": family,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "bos_token_id": special["bos"],
        "eos_token_id": special["eos"],
        "torch_dtype": dtype,
    }
    if family == "gpt2":
        return common | {
            "n_embd": cfg.embed_dim,
            "n_layer": cfg.num_layers,
            "n_head": cfg.num_heads,
            "n_inner": cfg.mlp_dim,
            "n_positions": cfg.max_seq_len,
            "n_ctx": cfg.max_seq_len,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": cfg.norm_eps,
            "resid_pdrop": cfg.dropout_rate,
            "embd_pdrop": cfg.dropout_rate,
            "attn_pdrop": cfg.dropout_rate,
            "scale_attn_weights": True,
        }
    return common | {
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.mlp_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.dims_per_head,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": cfg.dropout_rate,
    }
