"""gptjax's LoRA settings as peft's: the `peft.LoraConfig` keyword arguments that adapt the
model `gptjax export-hf` writes the way `finetune.lora_rank/alpha/targets` adapt gptjax's.

Llama-style exports have one module per gptjax projection (`q` -> `self_attn.q_proj`, ...):
the same rank, alpha and targets, adapter for adapter. GPT-2 exports fuse q, k and v into one
`attn.c_attn` (a Conv1D [D, 3D]): peft can adapt it only as a whole, with one A [D, r'] shared
by q, k and v, where gptjax has an A and B per projection. No peft setting computes gptjax's
adapters exactly there, so c_attn gets the rank r' that trains as many parameters as gptjax's
q/k/v adapters (r' = r * sum over the targeted q/k/v of (D + out) / (D + 3D): 1.5 r for all
three, r for two) and alpha' = alpha * r' / r, so both scale their update by alpha / r. The
other GPT-2 targets map one to one: `o` -> `attn.c_proj`, `up` -> `mlp.c_fc`, `down` ->
`mlp.c_proj`.
"""

from __future__ import annotations

from gptjax.hf.config import family_of
from gptjax.lora import TARGETS, LoraConfig, projection_sizes
from gptjax.model import ModelConfig

GPT2_MODULES = {"o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"}
GPT2_FUSED = "attn.c_attn"
FUSED_PARTS = ("q", "k", "v")


def peft_lora_kwargs(lora: LoraConfig, model_config: ModelConfig) -> dict:
    """Keyword arguments of `peft.LoraConfig` for gptjax's `lora` on `model_config`'s export:
    no dropout, no bias, peft's default init (kaiming-uniform A, zero B), as gptjax."""
    common = {
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": True,
        "task_type": "CAUSAL_LM",
    }
    if family_of(model_config) == "llama":
        return common | {"target_modules": [TARGETS[t][2] for t in lora.targets]}
    sizes = projection_sizes(model_config)
    modules = [GPT2_MODULES[t] for t in lora.targets if t in GPT2_MODULES]
    fused = [t for t in lora.targets if t in FUSED_PARTS]
    kwargs = common | {"fan_in_fan_out": True}  # GPT-2's Conv1D stores [in, out]
    if fused:
        gptjax_params = sum(sum(sizes[t]) for t in fused)  # per rank unit
        d_in = model_config.embed_dim
        d_out = sum(sizes[t][1] for t in FUSED_PARTS)
        fused_rank = max(1, round(lora.rank * gptjax_params / (d_in + d_out)))
        modules.insert(0, GPT2_FUSED)
        if fused_rank != lora.rank:
            kwargs["rank_pattern"] = {GPT2_FUSED: fused_rank}
            kwargs["alpha_pattern"] = {GPT2_FUSED: lora.alpha * fused_rank / lora.rank}
    return kwargs | {"target_modules": modules}


def peft_trainable_count(kwargs: dict, model_config: ModelConfig) -> int:
    """The adapter parameters peft trains under `kwargs` (trl_side.py checks it on the model)."""
    sizes = projection_sizes(model_config)
    D = model_config.embed_dim
    per_module = {TARGETS[t][2]: sizes[t] for t in TARGETS} | {
        module: sizes[t] for t, module in GPT2_MODULES.items()
    }
    per_module[GPT2_FUSED] = (D, sum(sizes[t][1] for t in FUSED_PARTS))
    ranks = kwargs.get("rank_pattern", {})
    total = sum(ranks.get(m, kwargs["r"]) * sum(per_module[m]) for m in kwargs["target_modules"])
    return model_config.num_layers * total


def describe(kwargs: dict) -> str:
    """One line for the log and the table: peft's modules with their rank and alpha."""
    ranks, alphas = kwargs.get("rank_pattern", {}), kwargs.get("alpha_pattern", {})
    return ", ".join(
        f"{m} (r {ranks.get(m, kwargs['r'])}, alpha {alphas.get(m, kwargs['lora_alpha']):g})"
        for m in kwargs["target_modules"]
    )
