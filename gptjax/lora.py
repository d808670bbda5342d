"""LoRA: low-rank adapters on the attention and MLP projections of a frozen base model.

A target projection W (d_in -> d_out) computes x·W + (alpha/r)·(x·A)·B, with A [d_in, r]
drawn like peft's default (kaiming-uniform: U(±1/sqrt(d_in))) and B [r, d_out] zeros, so the
adapted model is exactly the base until B moves. A carries W's input axis names and B its
output axis names (plus the unsharded `lora_rank`), so the adapters are split over the mesh
like the matrices they adapt.

Adapters are `LoraParam`s (an `nnx.Param` subclass): `split_adapters` separates them from the
base by type, so only they are differentiated, held in the optimizer state and checkpointed;
the base is a frozen input of the step. `merge_into_base` folds them into the weights
(W + scale·A·B) for inference and export.

This module sits below `gptjax.model` (which builds the adapters) and imports nothing of it.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.errors import ConfigError

# gptjax's projection names, with the parameter each adapts and peft's Llama module name.
TARGETS = {
    "q": ("attn", "q_DHK", "self_attn.q_proj"),
    "k": ("attn", "k_DGK", "self_attn.k_proj"),
    "v": ("attn", "v_DGK", "self_attn.v_proj"),
    "o": ("attn", "o_HKD", "self_attn.o_proj"),
    "gate": ("mlp", "gate_DF", "mlp.gate_proj"),
    "up": ("mlp", "up_DF", "mlp.up_proj"),
    "down": ("mlp", "down_FD", "mlp.down_proj"),
}
# How many leading axes of each weight are its input (the rest are its output).
INPUT_AXES = {"q": 1, "k": 1, "v": 1, "o": 2, "gate": 1, "up": 1, "down": 1}
ALL = "all"  # every projection the model has (peft's "all-linear" without the output head)


class LoraParam(nnx.Param):
    """An adapter matrix: trained while the `nnx.Param`s of the base stay frozen."""


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int  # r
    alpha: float  # the update is scaled by alpha / r (peft's lora_alpha)
    targets: tuple[str, ...]  # keys of TARGETS

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"finetune.lora_rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise ConfigError(f"finetune.lora_alpha must be positive, got {self.alpha}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ConfigError(
                f"finetune.lora_targets: {unknown[0] if unknown else 'none'!r} is not a "
                f"projection; choose from {', '.join(TARGETS)} or {ALL!r}"
            )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def parse_targets(text: str, has_gate: bool) -> tuple[str, ...]:
    """`"q,v"` -> ("q", "v"); `"all"` -> every projection of the model (gate only with SwiGLU).

    A gate named for a model without one (GPT-2's GELU MLP) is a ConfigError, not skipped.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if names == (ALL,):
        return tuple(t for t in TARGETS if has_gate or t != "gate")
    if "gate" in names and not has_gate:
        raise ConfigError(
            'finetune.lora_targets names "gate", but this model\'s MLP has no gate '
            '(model.activation="gelu"); drop it'
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"finetune.lora_targets={text!r} names a projection twice")
    return names


def adapter_pair(rngs: nnx.Rngs, weight_shape, weight_names, num_inputs: int, rank: int):
    """(A, B) for a weight of `weight_shape`: A over its input axes, B over its output axes."""
    in_shape, out_shape = weight_shape[:num_inputs], weight_shape[num_inputs:]
    in_names, out_names = weight_names[:num_inputs], weight_names[num_inputs:]
    bound = 1.0 / math.sqrt(math.prod(in_shape))  # kaiming_uniform(a=sqrt(5)), as peft
    a = jax.random.uniform(
        rngs.params(), (*in_shape, rank), jnp.float32, minval=-bound, maxval=bound
    )
    b = jnp.zeros((rank, *out_shape), jnp.float32)
    return (
        LoraParam(a, out_sharding=(*in_names, "lora_rank"), eager_sharding=False),
        LoraParam(b, out_sharding=("lora_rank", *out_names), eager_sharding=False),
    )


def low_rank(x: jax.Array, a: jax.Array, b: jax.Array, num_inputs: int, scale: float):
    """scale·(x·A)·B: x's last `num_inputs` axes contract with A, the rank with B."""
    dt = x.dtype
    h = jnp.tensordot(x, a.astype(dt), axes=num_inputs)
    return jnp.tensordot(h, b.astype(dt), axes=1) * jnp.asarray(scale, dt)


def delta(a_N: jax.Array, b_N: jax.Array, scale: float) -> jax.Array:
    """scale·A·B of stacked adapters (A [N, in..., r], B [N, r, out...]): [N, in..., out...]."""
    n, r = a_N.shape[0], a_N.shape[-1]
    d = jnp.einsum("Nir,Nro->Nio", a_N.reshape(n, -1, r), b_N.reshape(n, r, -1))
    return (scale * d).reshape(n, *a_N.shape[1:-1], *b_N.shape[2:])


def adapter_names(target: str) -> tuple[str, str]:
    """The attribute names of a target's A and B next to its weight (`q_lora_a`, `q_lora_b`)."""
    return f"{target}_lora_a", f"{target}_lora_b"


def split_adapters(state: nnx.State) -> tuple[nnx.State, nnx.State]:
    """(adapters, base) of a LoRA model's parameters, by type."""
    return nnx.filter_state(state, LoraParam, nnx.Param)


def join(adapters: nnx.State, base: nnx.State) -> nnx.State:
    """The whole parameter tree a LoRA model merges with its graphdef."""
    return nnx.merge_state(base, adapters)


def adapters_off(adapters: nnx.State, base: nnx.State) -> nnx.State:
    """The parameters of the base model alone (B = 0), built from the base without a copy of
    it: DPO's frozen reference when the policy is base + adapters."""
    return join(jax.tree.map(jnp.zeros_like, adapters), base)


def merge_into_base(base: nnx.State, adapters: nnx.State, config: LoraConfig) -> nnx.State:
    """Plain model parameters: each target weight W + scale·A·B (the adapters folded in)."""
    merged = jax.tree.map(lambda x: x, base)  # new Variables; the base is left as it was
    for target in config.targets:
        module, weight, _ = TARGETS[target]
        name_a, name_b = adapter_names(target)
        layer = adapters["blocks"][module]
        variable = merged["blocks"][module][weight]
        update = delta(layer[name_a][...], layer[name_b][...], config.scale)
        merged["blocks"][module][weight] = variable.replace(variable[...] + update)
    return merged


def projection_sizes(model_config) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) of each target projection, per layer: a rank-r adapter on one holds
    r * (inputs + outputs) parameters."""
    D, F = model_config.embed_dim, model_config.mlp_dim
    H, G, K = model_config.num_heads, model_config.kv_heads, model_config.dims_per_head
    return {
        "q": (D, H * K),
        "k": (D, G * K),
        "v": (D, G * K),
        "o": (H * K, D),
        "gate": (D, F),
        "up": (D, F),
        "down": (F, D),
    }


def count(config: LoraConfig, model_config) -> int:
    """Adapter parameters of `model_config` under `config` (tests check it against a build)."""
    sizes = projection_sizes(model_config)
    return model_config.num_layers * config.rank * sum(sum(sizes[t]) for t in config.targets)
