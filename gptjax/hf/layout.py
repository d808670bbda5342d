"""Where each Hugging Face GPT-2 / Llama tensor lives in gptjax's parameter tree, both ways.

A `Layout` pairs Hugging Face tensor names (`{i}` stands for the layer number) with gptjax
leaf paths (`blocks/attn/q_DHK`; leaves under `blocks/` carry a leading `layers` axis and are
converted one layer at a time). The conversions are reshapes, transposes, slices and concats
only, so import followed by export reproduces every tensor bit for bit.

Hugging Face layouts: GPT-2's `Conv1D` stores weights [in, out], with q, k and v fused in
`c_attn` ([D, 3D]); Llama's `nn.Linear` stores [out, in] (`q_proj` is [H·K, D]). Both put a
head's K dims contiguous in the projection output, and gptjax's rotary uses Llama's
rotate-half pairing, so no permutation of head dims is needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from gptjax.model import ModelConfig

Convert = Callable[..., np.ndarray]


@dataclasses.dataclass(frozen=True)
class Layout:
    family: str  # "gpt2" or "llama"
    hf_shapes: dict[str, tuple[int, ...]]  # every Hugging Face tensor the model must have
    # gptjax leaf path -> (Hugging Face names it is built from, per-layer conversion)
    to_gptjax: dict[str, tuple[tuple[str, ...], Convert]]
    # Hugging Face name -> (gptjax leaf paths it is built from, per-layer conversion)
    to_hf: dict[str, tuple[tuple[str, ...], Convert]]
    ignored: tuple[str, ...] = ()  # names that hold buffers, not weights ({i} allowed)

    def names(self, num_layers: int) -> list[str]:
        """Every Hugging Face tensor name, layers expanded."""
        return [n for t in self.hf_shapes for n in expand(t, num_layers)]


def expand(template: str, num_layers: int) -> list[str]:
    return [template.format(i=i) for i in range(num_layers)] if "{i}" in template else [template]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _transpose(x: np.ndarray) -> np.ndarray:
    return x.T


def gpt2_layout(cfg: ModelConfig, prefix: str = "transformer.") -> Layout:
    """GPT2LMHeadModel; `prefix` is "" for checkpoints saved from GPT2Model (the hub's gpt2)."""
    D, H, K, F = cfg.embed_dim, cfg.num_heads, cfg.dims_per_head, cfg.mlp_dim
    V, P, h = cfg.vocab_size, cfg.max_seq_len, f"{prefix}h.{{i}}."
    shapes = {
        f"{prefix}wte.weight": (V, D),
        f"{prefix}wpe.weight": (P, D),
        f"{prefix}ln_f.weight": (D,),
        f"{prefix}ln_f.bias": (D,),
        f"{h}ln_1.weight": (D,),
        f"{h}ln_1.bias": (D,),
        f"{h}ln_2.weight": (D,),
        f"{h}ln_2.bias": (D,),
        f"{h}attn.c_attn.weight": (D, 3 * D),
        f"{h}attn.c_attn.bias": (3 * D,),
        f"{h}attn.c_proj.weight": (D, D),
        f"{h}attn.c_proj.bias": (D,),
        f"{h}mlp.c_fc.weight": (D, F),
        f"{h}mlp.c_fc.bias": (F,),
        f"{h}mlp.c_proj.weight": (F, D),
        f"{h}mlp.c_proj.bias": (D,),
    }
    direct = {  # same array on both sides
        "embed_VD": f"{prefix}wte.weight",
        "pos_embed_PD": f"{prefix}wpe.weight",
        "final_norm/scale": f"{prefix}ln_f.weight",
        "final_norm/bias": f"{prefix}ln_f.bias",
        "blocks/attn_norm/scale": f"{h}ln_1.weight",
        "blocks/attn_norm/bias": f"{h}ln_1.bias",
        "blocks/mlp_norm/scale": f"{h}ln_2.weight",
        "blocks/mlp_norm/bias": f"{h}ln_2.bias",
        "blocks/attn/o_bias_D": f"{h}attn.c_proj.bias",
        "blocks/mlp/up_DF": f"{h}mlp.c_fc.weight",
        "blocks/mlp/up_bias_F": f"{h}mlp.c_fc.bias",
        "blocks/mlp/down_FD": f"{h}mlp.c_proj.weight",
        "blocks/mlp/down_bias_D": f"{h}mlp.c_proj.bias",
    }
    to_gptjax = {path: ((name,), _identity) for path, name in direct.items()}
    to_hf = {name: ((path,), _identity) for path, name in direct.items()}
    qkv = ("blocks/attn/q_DHK", "blocks/attn/k_DGK", "blocks/attn/v_DGK")
    qkv_bias = ("blocks/attn/q_bias_HK", "blocks/attn/k_bias_GK", "blocks/attn/v_bias_GK")
    for part, (weight, bias) in enumerate(zip(qkv, qkv_bias, strict=True)):
        cols = slice(part * D, (part + 1) * D)
        to_gptjax[weight] = (
            (f"{h}attn.c_attn.weight",),
            lambda w, c=cols: w[:, c].reshape(D, H, K),
        )
        to_gptjax[bias] = ((f"{h}attn.c_attn.bias",), lambda b, c=cols: b[c].reshape(H, K))
    to_gptjax["blocks/attn/o_HKD"] = ((f"{h}attn.c_proj.weight",), lambda w: w.reshape(H, K, D))
    to_hf[f"{h}attn.c_attn.weight"] = (
        qkv,
        lambda q, k, v: np.concatenate([x.reshape(D, D) for x in (q, k, v)], axis=1),
    )
    to_hf[f"{h}attn.c_attn.bias"] = (
        qkv_bias,
        lambda q, k, v: np.concatenate([x.reshape(D) for x in (q, k, v)]),
    )
    to_hf[f"{h}attn.c_proj.weight"] = (("blocks/attn/o_HKD",), lambda o: o.reshape(D, D))
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, D)
        to_gptjax["head_DV"] = (("lm_head.weight",), _transpose)
        to_hf["lm_head.weight"] = (("head_DV",), _transpose)
    # The causal-mask buffers older transformers versions saved with the weights; a tied
    # model's lm_head.weight, when saved, is the embedding again (transformers ignores it too).
    ignored = (f"{h}attn.bias", f"{h}attn.masked_bias", "lm_head.weight")
    return Layout("gpt2", shapes, to_gptjax, to_hf, ignored)


def llama_layout(cfg: ModelConfig) -> Layout:
    """LlamaForCausalLM: q/k/v/o, gate/up/down projections without biases, RMSNorm scales."""
    D, H, G, K, F = (cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.dims_per_head, cfg.mlp_dim)
    V, m = cfg.vocab_size, "model.layers.{i}."
    shapes = {
        "model.embed_tokens.weight": (V, D),
        "model.norm.weight": (D,),
        f"{m}input_layernorm.weight": (D,),
        f"{m}post_attention_layernorm.weight": (D,),
        f"{m}self_attn.q_proj.weight": (H * K, D),
        f"{m}self_attn.k_proj.weight": (G * K, D),
        f"{m}self_attn.v_proj.weight": (G * K, D),
        f"{m}self_attn.o_proj.weight": (D, H * K),
        f"{m}mlp.gate_proj.weight": (F, D),
        f"{m}mlp.up_proj.weight": (F, D),
        f"{m}mlp.down_proj.weight": (D, F),
    }
    direct = {
        "embed_VD": "model.embed_tokens.weight",
        "final_norm/scale": "model.norm.weight",
        "blocks/attn_norm/scale": f"{m}input_layernorm.weight",
        "blocks/mlp_norm/scale": f"{m}post_attention_layernorm.weight",
    }
    transposed = {
        "blocks/mlp/gate_DF": f"{m}mlp.gate_proj.weight",
        "blocks/mlp/up_DF": f"{m}mlp.up_proj.weight",
        "blocks/mlp/down_FD": f"{m}mlp.down_proj.weight",
    }
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, D)
        transposed["head_DV"] = "lm_head.weight"
    to_gptjax = {path: ((name,), _identity) for path, name in direct.items()}
    to_gptjax |= {path: ((name,), _transpose) for path, name in transposed.items()}
    to_hf = {name: ((path,), _identity) for path, name in direct.items()}
    to_hf |= {name: ((path,), _transpose) for path, name in transposed.items()}
    heads = {"q_DHK": ("q_proj", H), "k_DGK": ("k_proj", G), "v_DGK": ("v_proj", G)}
    for leaf, (proj, n) in heads.items():
        name, path = f"{m}self_attn.{proj}.weight", f"blocks/attn/{leaf}"
        to_gptjax[path] = ((name,), lambda w, n=n: w.T.reshape(D, n, K))
        to_hf[name] = ((path,), lambda x, n=n: x.reshape(D, n * K).T)
    o_name = f"{m}self_attn.o_proj.weight"
    to_gptjax["blocks/attn/o_HKD"] = ((o_name,), lambda w: w.T.reshape(H, K, D))
    to_hf[o_name] = (("blocks/attn/o_HKD",), lambda o: o.reshape(H * K, D).T)
    # Rotary frequencies some versions saved as buffers; gptjax computes them from rope_theta.
    ignored = (f"{m}self_attn.rotary_emb.inv_freq", "lm_head.weight")
    return Layout("llama", shapes, to_gptjax, to_hf, ignored)
