"""A plain PyTorch GPT-2, written the way a nanoGPT user writes one: the eager speed reference.

The shape of gptjax's GPT-2 family (`gptjax.model.ModelConfig.gpt2`): learned positions,
pre-LayerNorm blocks with biases, q/k/v fused in one `nn.Linear`, a GELU MLP (the tanh
approximation, as gptjax's), the output head tied to the token embedding. Attention is
`F.scaled_dot_product_attention(is_causal=True)` (PyTorch's fused kernel). Parameter names
follow GPT-2's (`transformer.h.0.attn.c_attn.weight`), so gptjax weights copy across with
`gptjax.hf.layout.gpt2_layout` (Linear stores [out, in] where GPT-2's Conv1D stores [in, out]).

Initialisation follows gptjax's: normal(0.02) weights, the residual-branch output projections
scaled by 1/sqrt(2N), positions normal(0.01), zero biases, unit LayerNorm scales.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.c_attn = nn.Linear(embed_dim, 3 * embed_dim)
        self.c_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        B, L, D = x_BLD.shape
        q, k, v = self.c_attn(x_BLD).split(D, dim=2)
        # [B, L, D] -> [B, H, L, K]: the layout scaled_dot_product_attention takes.
        q, k, v = (t.view(B, L, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out_BHLK = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(out_BHLK.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    def __init__(self, embed_dim: int, mlp_dim: int):
        super().__init__()
        self.c_fc = nn.Linear(embed_dim, mlp_dim)
        self.c_proj = nn.Linear(mlp_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int, eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim, eps=eps)
        self.attn = CausalSelfAttention(embed_dim, num_heads)
        self.ln_2 = nn.LayerNorm(embed_dim, eps=eps)
        self.mlp = MLP(embed_dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """tokens [B, L] -> float32 logits [B, L, V]."""

    def __init__(self, cfg):
        """`cfg`: a gptjax ModelConfig of the GPT-2 family (see `check_gpt2_family`)."""
        super().__init__()
        D = cfg.embed_dim
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, D),
                wpe=nn.Embedding(cfg.max_seq_len, D),
                h=nn.ModuleList(
                    Block(D, cfg.num_heads, cfg.mlp_dim, cfg.norm_eps)
                    for _ in range(cfg.num_layers)
                ),
                ln_f=nn.LayerNorm(D, eps=cfg.norm_eps),
            )
        )
        self._init_weights(cfg)

    def _init_weights(self, cfg) -> None:
        residual_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                nn.init.ones_(p)
            elif name == "transformer.wpe.weight":
                nn.init.normal_(p, std=0.01)
            elif name.endswith("c_proj.weight"):  # writes into the residual stream
                nn.init.normal_(p, std=residual_std)
            else:
                nn.init.normal_(p, std=cfg.init_std)

    def forward(self, tokens_BL: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        positions = torch.arange(tokens_BL.shape[1], device=tokens_BL.device)
        x = t.wte(tokens_BL) + t.wpe(positions)
        for block in t.h:
            x = block(x)
        return F.linear(t.ln_f(x), t.wte.weight)  # the head is the embedding, tied


def check_gpt2_family(model_config) -> None:
    """Refuses shapes this GPT-2 cannot build (ValueError), rather than compare unlike models."""
    wanted = dict(
        position="learned",
        norm="layernorm",
        activation="gelu",
        use_bias=True,
        tie_embeddings=True,
        dtype="float32",
    )
    for field, value in wanted.items():
        if getattr(model_config, field) != value:
            raise ValueError(f"model.{field} must be {value!r} (the GPT-2 reference)")
    if model_config.kv_heads != model_config.num_heads or model_config.head_dim is not None:
        raise ValueError("grouped kv heads or an explicit head_dim have no GPT-2 twin")


def adamw(model: nn.Module, optim) -> torch.optim.AdamW:
    """AdamW as gptjax configures it: decay on weight matrices only, the `optim` section's
    betas, eps and rate. fused=False: the for-loop implementation a CPU user gets."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=optim.peak_lr, betas=(optim.b1, optim.b2), eps=optim.eps, fused=False
    )


# gptjax's GPT-2 exporter names the four projections like GPT-2's Conv1D ([in, out]).
_LINEAR_WEIGHTS = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)


def load_gptjax_params(model: GPT, cfg, params) -> None:
    """Copies a gptjax GPT-2 parameter tree (`state.params`, stacked layers) into `model`."""
    import jax

    from gptjax.hf.layout import expand, gpt2_layout

    leaves = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        leaves["/".join(str(k) for k in keys if k != "value")] = np.asarray(leaf)
    layout = gpt2_layout(cfg)
    tensors = {}
    for template, (paths, convert) in layout.to_hf.items():
        for layer, name in enumerate(expand(template, cfg.num_layers)):
            stacked = "{i}" in template
            arrays = [leaves[p][layer] if stacked else leaves[p] for p in paths]
            array = np.asarray(convert(*arrays))
            tensors[name] = array.T if name.endswith(_LINEAR_WEIGHTS) else array
    state = model.state_dict()
    if set(tensors) != set(state):
        raise ValueError(f"names differ: {sorted(set(tensors) ^ set(state))[:5]}")
    model.load_state_dict({name: torch.tensor(t) for name, t in tensors.items()})
