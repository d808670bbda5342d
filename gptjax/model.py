"""Decoder-only Transformer in Flax NNX: GPT-2 and Llama families from one `ModelConfig`.

Dimension legend, used in tensor names (`x_BLD`) and einsum strings:
  B batch · L query length · M key length · D embed · H query heads · G key/value heads ·
  R query heads per kv head (H = G·R) · K head dim · F mlp hidden · V vocab · N layers ·
  S key/value cache slots (the key axis when decoding from a `KVCache`) · r LoRA rank

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`, `norm`, `position`, `layers`); `gptjax.sharding` maps them onto mesh axes. Parameters
never carry mesh axis names, so `Transformer(ModelConfig(...), rngs=nnx.Rngs(0))` works in a
notebook without a mesh.

Layers are stored stacked (a leading `layers` axis) whether or not they are scanned, so
`scan_layers` and `remat` change how the stack runs, never the parameter tree or checkpoints.

With a `LoraConfig` (`gptjax.lora`) the targeted projections also carry low-rank adapters
(`q_lora_a`, `q_lora_b`, ...), trained while the base stays frozen.

`Transformer.decode` is the inference path: the same weights, keys and values kept in a
`KVCache` so each new token costs one position's compute (see `gptjax.generation`). Training and
evaluation attend with `config.attention`'s kernel (`gptjax.attention`); decoding always uses
the masked einsums, which a query chunk against cache slots needs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx, struct
from flax.core import spmd as flax_spmd

from gptjax.attention import IMPLEMENTATIONS, attend, check_implementation, grouped_attention
from gptjax.errors import ConfigError
from gptjax.lora import INPUT_AXES, TARGETS, LoraConfig, adapter_names, adapter_pair, low_rank
from gptjax.norms import BACKWARDS as NORM_BACKWARDS
from gptjax.norms import normalize
from gptjax.projection import BACKWARDS, dense
from gptjax.schema import check_types
from gptjax.sharding import logical_to_spec

Array = jax.Array

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the decoder. `gpt2()` and `llama()` fill in each family's choices."""

    vocab_size: int
    num_layers: int
    num_heads: int
    embed_dim: int
    mlp_dim: int
    max_seq_len: int
    num_kv_heads: int | None = None  # None: = num_heads (no grouping)
    head_dim: int | None = None  # None: embed_dim // num_heads
    position: Literal["learned", "rope"] = "learned"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    activation: Literal["gelu", "swiglu"] = "gelu"
    use_bias: bool = True  # biases on attention and MLP projections (GPT-2 has them)
    tie_embeddings: bool = True  # output head shares the token embedding table
    norm_eps: float = 1e-5
    rope_theta: float = 10_000.0
    dropout_rate: float = 0.0
    dtype: Literal[tuple(_DTYPES)] = "float32"  # compute dtype; parameters stay float32
    remat: Literal[tuple(_REMAT_POLICIES)] = "none"  # activation rematerialisation per block
    scan_layers: bool = True  # lax.scan over the stacked layers (fast compile) or unrolled
    # training/eval attention kernel (gptjax.attention): xla anywhere, cudnn GPU, splash TPU
    attention: Literal[IMPLEMENTATIONS] = "xla"
    init_std: float = 0.02
    # Positions per chunk of the training loss's output head (gptjax.chunked_head): the
    # [B, L, V] logits are formed chunk by chunk, never at once; 0 = the whole sequence at once.
    head_chunk_len: int = 0
    # How the projections' weight gradients are ordered for the compiler (gptjax.projection):
    # "autodiff" (JAX's transpose rule) or "smaller_copy" (the order XLA copies fewer bytes for).
    projection_backward: Literal[BACKWARDS] = "autodiff"
    # The norms' backward: "autodiff" or "closed_form" (gptjax.norms: fewer [B, L, D] passes).
    norm_backward: Literal[NORM_BACKWARDS] = "autodiff"

    def __post_init__(self):
        check_types(self, "model")  # the annotations: ints, floats, bools, the Literal choices
        sizes = ("vocab_size", "num_layers", "num_heads", "embed_dim", "mlp_dim", "max_seq_len")
        for name in (*sizes, "num_kv_heads", "head_dim", "norm_eps", "rope_theta", "init_std"):
            value = getattr(self, name)
            if value is not None and value <= 0:  # None: num_kv_heads/head_dim derive theirs
                raise ConfigError(f"model.{name} must be positive, got {value!r}")
        if self.head_dim is None and self.embed_dim % self.num_heads:
            raise ConfigError(
                f"model.num_heads={self.num_heads} must divide model.embed_dim={self.embed_dim} "
                "(or set model.head_dim explicitly)"
            )
        if self.num_heads % self.kv_heads:
            raise ConfigError(
                f"model.num_kv_heads={self.kv_heads} must divide model.num_heads={self.num_heads}"
            )
        if self.position == "rope" and self.dims_per_head % 2:
            raise ConfigError(f"rotary positions need an even head_dim, got {self.dims_per_head}")
        check_implementation(self.attention, dtype=self.dtype, head_dim=self.dims_per_head)
        if self.head_chunk_len < 0:
            raise ConfigError(
                f"model.head_chunk_len must be >= 0 (0 = no chunking), got {self.head_chunk_len}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"model.dropout_rate must be in [0, 1), got {self.dropout_rate}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def dims_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.embed_dim // self.num_heads

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]

    @classmethod
    def gpt2(cls, **overrides) -> ModelConfig:
        """GPT-2: learned positions, LayerNorm with bias, GELU MLP, tied embeddings."""
        fields = dict(
            position="learned",
            norm="layernorm",
            activation="gelu",
            use_bias=True,
            tie_embeddings=True,
            norm_eps=1e-5,
        )
        return cls(**(fields | overrides))

    @classmethod
    def llama(cls, **overrides) -> ModelConfig:
        """Llama: rotary positions, RMSNorm, SwiGLU MLP, no biases, untied output head."""
        fields = dict(
            position="rope",
            norm="rmsnorm",
            activation="swiglu",
            use_bias=False,
            tie_embeddings=False,
            norm_eps=1e-5,
        )
        return cls(**(fields | overrides))


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], names: tuple[str, ...], std: float | None):
    """A float32 parameter with logical axis names; std=None means ones, 0.0 means zeros."""
    if std is None:
        value = jnp.ones(shape, jnp.float32)
    elif std == 0.0:
        value = jnp.zeros(shape, jnp.float32)
    else:
        value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
    # eager_sharding=False: placement is gptjax.sharding's job, so no mesh is needed here.
    return nnx.Param(value, out_sharding=names, eager_sharding=False)


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    """Pins an activation's sharding by logical names, when logical rules and a mesh are active.

    Outside training (a notebook, a test without rules) this is the identity.
    """
    rules = flax_spmd.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh is None or mesh.empty:
        return x
    spec = logical_to_spec(names, rules, dict(mesh.shape), x.shape)
    return jax.lax.with_sharding_constraint(x, spec)


class Norm(nnx.Module):
    """LayerNorm (with bias) or RMSNorm, computed in float32 for stability."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.kind, self.eps, self.backward = config.norm, config.norm_eps, config.norm_backward
        self.scale = _param(rngs, (config.embed_dim,), ("norm",), None)
        self.bias = (
            _param(rngs, (config.embed_dim,), ("norm",), 0.0)
            if config.norm == "layernorm"
            else None
        )

    def __call__(self, x_BLD: Array) -> Array:
        x = x_BLD.astype(jnp.float32)
        if self.backward == "closed_form":
            bias = None if self.bias is None else self.bias[...]
            return normalize(x, self.scale[...], bias, self.eps).astype(x_BLD.dtype)
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdims=True)
        x = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.scale[...]
        if self.bias is not None:
            x = x + self.bias[...]
        return x.astype(x_BLD.dtype)


def rotary(x_BLHK: Array, positions_BL: Array, theta: float) -> Array:
    """Rotary position embedding, Hugging Face's half-split layout (rotate_half), in float32."""
    half = x_BLHK.shape[-1] // 2
    inv_freq = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)
    angle_BLK = positions_BL[..., None].astype(jnp.float32) * inv_freq
    cos, sin = jnp.cos(angle_BLK)[:, :, None, :], jnp.sin(angle_BLK)[:, :, None, :]
    x = x_BLHK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BLHK.dtype)


def add_adapters(module: nnx.Module, kind: str, lora: LoraConfig | None, rngs: nnx.Rngs):
    """Gives `module` ("attn" or "mlp") the A and B of each LoRA target it holds."""
    module.lora = lora
    for target in lora.targets if lora is not None else ():
        owner, weight, _ = TARGETS[target]
        if owner != kind:
            continue
        variable = getattr(module, weight)
        names = variable.get_metadata()["out_sharding"]
        a, b = adapter_pair(rngs, variable[...].shape, names, INPUT_AXES[target], lora.rank)
        name_a, name_b = adapter_names(target)
        setattr(module, name_a, a)
        setattr(module, name_b, b)


def with_lora(module: nnx.Module, target: str, x: Array, y: Array) -> Array:
    """y (the base projection of x) plus the target's low-rank update, when it is adapted."""
    lora = module.lora
    if lora is None or target not in lora.targets:
        return y
    name_a, name_b = adapter_names(target)
    a, b = getattr(module, name_a)[...], getattr(module, name_b)[...]
    return y + low_rank(x, a, b, INPUT_AXES[target], lora.scale)


def dropout(x: Array, rate: float, key: Array | None) -> Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


# [N, B, S, G, K]: kv heads split like the query heads (`act_heads`), batch like activations.
_CACHE_AXES = ("layers", "batch", None, "act_heads", None)


class KVCache(struct.PyTreeNode):
    """Keys and values of every layer at every decoded position, in the compute dtype.

    Slot s of row b holds position s of that row (rotary keys are stored rotated). Slots not
    yet written are zeros; `Transformer.decode`'s mask never lets a query see them.
    """

    k_NBSGK: Array
    v_NBSGK: Array

    @classmethod
    def empty(cls, config: ModelConfig, batch: int, length: int) -> KVCache:
        shape = (config.num_layers, batch, length, config.kv_heads, config.dims_per_head)
        zeros = constrain(jnp.zeros(shape, config.compute_dtype), _CACHE_AXES)
        return cls(k_NBSGK=zeros, v_NBSGK=zeros)

    @property
    def length(self) -> int:
        return self.k_NBSGK.shape[2]

    def write(self, layer, positions_BL: Array, k_BLGK: Array, v_BLGK: Array) -> KVCache:
        """Stores a chunk's keys/values at their positions in `layer`.

        A scatter into the whole cache (not a per-layer slice stacked by scan) stays in place
        under jit with the cache donated: a step writes B·L slots, it never copies the cache.
        Positions >= S are dropped, never clamped onto other slots.
        """
        rows_B1 = jnp.arange(k_BLGK.shape[0])[:, None]
        k_NBSGK = self.k_NBSGK.at[layer, rows_B1, positions_BL].set(k_BLGK, mode="drop")
        v_NBSGK = self.v_NBSGK.at[layer, rows_B1, positions_BL].set(v_BLGK, mode="drop")
        return KVCache(constrain(k_NBSGK, _CACHE_AXES), constrain(v_NBSGK, _CACHE_AXES))


class Attention(nnx.Module):
    """Multi-head attention with grouped key/value heads (G <= H) and optional rotary positions."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, lora: LoraConfig | None = None):
        self.config = config
        D, H, G, K = config.embed_dim, config.num_heads, config.kv_heads, config.dims_per_head
        std, out_std = config.init_std, config.init_std / math.sqrt(2 * config.num_layers)
        self.q_DHK = _param(rngs, (D, H, K), ("embed", "heads", "head_dim"), std)
        self.k_DGK = _param(rngs, (D, G, K), ("embed", "kv_heads", "head_dim"), std)
        self.v_DGK = _param(rngs, (D, G, K), ("embed", "kv_heads", "head_dim"), std)
        # GPT-2 scales residual-branch outputs by 1/sqrt(2N) so the stream's variance stays flat.
        self.o_HKD = _param(rngs, (H, K, D), ("heads", "head_dim", "embed"), out_std)
        if config.use_bias:
            self.q_bias_HK = _param(rngs, (H, K), ("heads", "head_dim"), 0.0)
            self.k_bias_GK = _param(rngs, (G, K), ("kv_heads", "head_dim"), 0.0)
            self.v_bias_GK = _param(rngs, (G, K), ("kv_heads", "head_dim"), 0.0)
            self.o_bias_D = _param(rngs, (D,), ("embed",), 0.0)
        add_adapters(self, "attn", lora, rngs)

    def __call__(self, x_BLD: Array, positions_BL: Array, docs, key: Array | None) -> Array:
        """`docs` is (segment_ids_BL or None, branch_ids_BL or None), as `attend` takes them."""
        q_BLHK, k_BMGK, v_BMGK = self._project(x_BLD, positions_BL)
        segment_ids_BL, branch_ids_BL = docs
        out_BLHK = attend(
            q_BLHK,
            k_BMGK,
            v_BMGK,
            impl=self.config.attention,
            segment_ids_BL=segment_ids_BL,
            branch_ids_BL=branch_ids_BL,
        )
        out_BLHK = dropout(out_BLHK, self.config.dropout_rate, key)
        return self._output(out_BLHK)

    def decode(self, x_BLD: Array, positions_BL: Array, cache: KVCache, layer):
        """Writes this chunk's keys/values into the cache, attends to slots <= position.

        Returns (out_BLD, cache). Slots beyond a query's position (a longer row's prompt,
        right padding, not yet written) are masked, so one mask serves a padded prefill and a
        one-token step alike.
        """
        q_BLHK, k_BLGK, v_BLGK = self._project(x_BLD, positions_BL)
        cache = cache.write(layer, positions_BL, k_BLGK, v_BLGK)
        k_BSGK, v_BSGK = cache.k_NBSGK[layer], cache.v_NBSGK[layer]
        visible_BLS = jnp.arange(cache.length) <= positions_BL[:, :, None]
        out_BLHK = grouped_attention(q_BLHK, k_BSGK, v_BSGK, visible_BLS[:, None, None])
        return self._output(out_BLHK), cache

    def _project(self, x_BLD: Array, positions_BL: Array) -> tuple[Array, Array, Array]:
        cfg, dt = self.config, self.config.compute_dtype
        how = cfg.projection_backward
        q_BLHK = dense("BLD,DHK->BLHK", x_BLD, self.q_DHK[...].astype(dt), how)
        k_BMGK = dense("BMD,DGK->BMGK", x_BLD, self.k_DGK[...].astype(dt), how)
        v_BMGK = dense("BMD,DGK->BMGK", x_BLD, self.v_DGK[...].astype(dt), how)
        q_BLHK = with_lora(self, "q", x_BLD, q_BLHK)
        k_BMGK = with_lora(self, "k", x_BLD, k_BMGK)
        v_BMGK = with_lora(self, "v", x_BLD, v_BMGK)
        if cfg.use_bias:
            q_BLHK += self.q_bias_HK[...].astype(dt)
            k_BMGK += self.k_bias_GK[...].astype(dt)
            v_BMGK += self.v_bias_GK[...].astype(dt)
        if cfg.position == "rope":
            q_BLHK = rotary(q_BLHK, positions_BL, cfg.rope_theta)
            k_BMGK = rotary(k_BMGK, positions_BL, cfg.rope_theta)
        q_BLHK = constrain(q_BLHK, ("batch", "length", "act_heads", None))
        return q_BLHK, k_BMGK, v_BMGK

    def _output(self, out_BLHK: Array) -> Array:
        cfg, dt = self.config, self.config.compute_dtype
        out_BLD = dense(
            "BLHK,HKD->BLD", out_BLHK, self.o_HKD[...].astype(dt), cfg.projection_backward
        )
        out_BLD = with_lora(self, "o", out_BLHK, out_BLD)
        if cfg.use_bias:
            out_BLD += self.o_bias_D[...].astype(dt)
        return out_BLD


class MLP(nnx.Module):
    """GELU MLP (GPT-2) or SwiGLU (Llama)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, lora: LoraConfig | None = None):
        self.config = config
        D, F = config.embed_dim, config.mlp_dim
        std, out_std = config.init_std, config.init_std / math.sqrt(2 * config.num_layers)
        self.up_DF = _param(rngs, (D, F), ("embed", "mlp"), std)
        if config.activation == "swiglu":
            self.gate_DF = _param(rngs, (D, F), ("embed", "mlp"), std)
        self.down_FD = _param(rngs, (F, D), ("mlp", "embed"), out_std)
        if config.use_bias:
            self.up_bias_F = _param(rngs, (F,), ("mlp",), 0.0)
            self.down_bias_D = _param(rngs, (D,), ("embed",), 0.0)
        add_adapters(self, "mlp", lora, rngs)

    def __call__(self, x_BLD: Array) -> Array:
        cfg, dt = self.config, self.config.compute_dtype
        how = cfg.projection_backward
        h_BLF = with_lora(
            self, "up", x_BLD, dense("BLD,DF->BLF", x_BLD, self.up_DF[...].astype(dt), how)
        )
        if cfg.use_bias:
            h_BLF += self.up_bias_F[...].astype(dt)
        if cfg.activation == "swiglu":
            gate_BLF = dense("BLD,DF->BLF", x_BLD, self.gate_DF[...].astype(dt), how)
            gate_BLF = with_lora(self, "gate", x_BLD, gate_BLF)
            h_BLF = jax.nn.silu(gate_BLF) * h_BLF
        else:
            h_BLF = jax.nn.gelu(h_BLF, approximate=True)  # GPT-2's tanh approximation
        h_BLF = constrain(h_BLF, ("batch", "length", "act_mlp"))
        out_BLD = dense("BLF,FD->BLD", h_BLF, self.down_FD[...].astype(dt), how)
        out_BLD = with_lora(self, "down", h_BLF, out_BLD)
        if cfg.use_bias:
            out_BLD += self.down_bias_D[...].astype(dt)
        return out_BLD


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, lora: LoraConfig | None = None):
        self.config = config
        self.attn_norm = Norm(config, rngs=rngs)
        self.attn = Attention(config, rngs=rngs, lora=lora)
        self.mlp_norm = Norm(config, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs, lora=lora)

    def __call__(self, x_BLD, positions_BL, docs, key: Array | None):
        attn_key = mlp_key = resid_key = None
        if key is not None:
            attn_key, mlp_key, resid_key = jax.random.split(key, 3)
        rate = self.config.dropout_rate
        h_BLD = self.attn(self.attn_norm(x_BLD), positions_BL, docs, attn_key)
        x_BLD = x_BLD + dropout(h_BLD, rate, resid_key)
        h_BLD = self.mlp(self.mlp_norm(x_BLD))
        x_BLD = x_BLD + dropout(h_BLD, rate, mlp_key)
        return constrain(x_BLD, ("batch", "length", "act_embed"))

    def decode(self, x_BLD, positions_BL, cache: KVCache, layer):
        """The block on a chunk of positions, reading and writing `layer` of the cache."""
        h_BLD, cache = self.attn.decode(self.attn_norm(x_BLD), positions_BL, cache, layer)
        x_BLD = x_BLD + h_BLD
        x_BLD = x_BLD + self.mlp(self.mlp_norm(x_BLD))
        return constrain(x_BLD, ("batch", "length", "act_embed")), cache


class Transformer(nnx.Module):
    """The decoder: tokens [B, L] -> float32 logits [B, L, V].

    `segment_ids` (documents packed in a row) and `positions` (restarting per document) come
    from the batch; without them the row is one document. `branch_ids` lay out preference
    pairs (see `gptjax.attention.attention_mask`). `dropout_key=None` disables dropout.
    `lora` adds low-rank adapters to the projections it targets (see `gptjax.lora`).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, lora: LoraConfig | None = None):
        self.config = config
        V, D = config.vocab_size, config.embed_dim
        self.embed_VD = _param(rngs, (V, D), ("vocab", "embed"), config.init_std)
        if config.position == "learned":
            self.pos_embed_PD = _param(rngs, (config.max_seq_len, D), ("position", "embed"), 0.01)

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs: nnx.Rngs) -> Block:
            return Block(config, rngs=rngs, lora=lora)

        self.blocks = make_blocks(rngs)
        self.final_norm = Norm(config, rngs=rngs)
        if not config.tie_embeddings:
            self.head_DV = _param(rngs, (D, V), ("embed", "vocab"), config.init_std)

    def __call__(
        self,
        tokens_BL: Array,
        *,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        branch_ids: Array | None = None,
        dropout_key: Array | None = None,
    ) -> Array:
        return self.project(
            self.hidden(
                tokens_BL,
                segment_ids=segment_ids,
                positions=positions,
                branch_ids=branch_ids,
                dropout_key=dropout_key,
            )
        )

    def hidden(
        self,
        tokens_BL: Array,
        *,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        branch_ids: Array | None = None,
        dropout_key: Array | None = None,
    ) -> Array:
        """The final-normed float32 states [B, L, D] the output head reads (`project` turns
        them into logits; `gptjax.chunked_head` reads them chunk by chunk)."""
        cfg = self.config
        B, L = tokens_BL.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        x_BLD = self._embed(tokens_BL, positions)
        embed_key = layer_keys = None
        if dropout_key is not None and cfg.dropout_rate > 0:
            embed_key, layers_key = jax.random.split(dropout_key)
            layer_keys = jax.random.split(layers_key, cfg.num_layers)
        x_BLD = dropout(x_BLD, cfg.dropout_rate, embed_key).astype(cfg.compute_dtype)
        x_BLD = constrain(x_BLD, ("batch", "length", "act_embed"))
        # segment_ids None reaches the kernel as "one document per row" (cuDNN's own causal mask).
        x_BLD = self._run_blocks(x_BLD, positions, (segment_ids, branch_ids), layer_keys)
        return self.final_norm(x_BLD).astype(jnp.float32)

    def decode(
        self,
        tokens_BL: Array,
        cache: KVCache,
        start_B: Array,
        *,
        logits_at_B: Array | None = None,
    ) -> tuple[Array, KVCache]:
        """Runs tokens at positions start_B[b] + l against the cache: (float32 logits, cache).

        Prefill is start_B = 0 with the right-padded prompts; a decode step is L = 1 at each
        row's next position. No dropout. `logits_at_B` (a query index per row) computes the
        head only there, returning [B, 1, V]: a prefill needs just each prompt's last position.
        """
        L = tokens_BL.shape[1]
        positions_BL = start_B[:, None].astype(jnp.int32) + jnp.arange(L, dtype=jnp.int32)
        x_BLD = self._embed(tokens_BL, positions_BL).astype(self.config.compute_dtype)
        x_BLD = constrain(x_BLD, ("batch", "length", "act_embed"))
        x_BLD, cache = self._decode_blocks(x_BLD, positions_BL, cache)
        if logits_at_B is not None:
            x_BLD = jnp.take_along_axis(x_BLD, logits_at_B[:, None, None], axis=1)
        return self._logits(x_BLD), cache

    def _embed(self, tokens_BL: Array, positions_BL: Array) -> Array:
        x_BLD = jnp.take(self.embed_VD[...], tokens_BL, axis=0)
        if self.config.position == "learned":
            x_BLD = x_BLD + jnp.take(self.pos_embed_PD[...], positions_BL, axis=0)
        return x_BLD

    def _logits(self, x_BLD: Array) -> Array:
        return self.project(self.final_norm(x_BLD).astype(jnp.float32))

    def head_weights(self) -> Array:
        """The output head [D, V] in float32: the embedding table's transpose when tied."""
        head_DV = self.embed_VD[...].T if self.config.tie_embeddings else self.head_DV[...]
        return head_DV.astype(jnp.float32)

    def project(self, x_BLD: Array) -> Array:
        """Float32 logits [B, L, V] from `hidden`'s states."""
        # Logits in float32 whatever the compute dtype: the loss is sensitive to their rounding.
        logits_BLV = dense(
            "BLD,DV->BLV", x_BLD, self.head_weights(), self.config.projection_backward
        )
        return constrain(logits_BLV, ("batch", "length", "act_vocab"))

    def _run_blocks(self, x_BLD, positions_BL, docs, layer_keys):
        """Applies the N stacked blocks: one lax.scan, or an unrolled loop over the same weights."""
        cfg = self.config
        graphdef, stacked = nnx.split(self.blocks)

        def apply_block(x, layer):
            params, key = layer
            return nnx.merge(graphdef, params)(x, positions_BL, docs, key), None

        policy = _REMAT_POLICIES[cfg.remat]
        if policy is not None:
            # prevent_cse only matters outside scan (XLA could otherwise undo the remat).
            apply_block = jax.checkpoint(
                apply_block, policy=policy, prevent_cse=not cfg.scan_layers
            )
        if cfg.scan_layers:
            x_BLD, _ = jax.lax.scan(apply_block, x_BLD, (stacked, layer_keys))
            return x_BLD
        for i in range(cfg.num_layers):
            layer = jax.tree.map(lambda a, i=i: a[i], (stacked, layer_keys))
            x_BLD, _ = apply_block(x_BLD, layer)
        return x_BLD

    def _decode_blocks(self, x_BLD, positions_BL, cache: KVCache):
        """The stack with the cache in the loop carry (updated in place), scanned or unrolled."""
        graphdef, stacked = nnx.split(self.blocks)

        def apply_block(carry, layer):
            x, cache = carry
            params, index = layer
            return nnx.merge(graphdef, params).decode(x, positions_BL, cache, index), None

        if self.config.scan_layers:
            indices = jnp.arange(self.config.num_layers)
            (x_BLD, cache), _ = jax.lax.scan(apply_block, (x_BLD, cache), (stacked, indices))
            return x_BLD, cache
        for i in range(self.config.num_layers):
            layer = (jax.tree.map(lambda a, i=i: a[i], stacked), i)
            (x_BLD, cache), _ = apply_block((x_BLD, cache), layer)
        return x_BLD, cache


def count_params(config: ModelConfig) -> int:
    """Closed-form parameter count (tests check it against the built model)."""
    D, F, V, N = config.embed_dim, config.mlp_dim, config.vocab_size, config.num_layers
    H, G, K = config.num_heads, config.kv_heads, config.dims_per_head
    norm = D * (2 if config.norm == "layernorm" else 1)
    attn = D * H * K * 2 + D * G * K * 2
    mlp = D * F * (3 if config.activation == "swiglu" else 2)
    if config.use_bias:
        attn += H * K + 2 * G * K + D
        mlp += F + D
    total = V * D + N * (2 * norm + attn + mlp) + norm
    if config.position == "learned":
        total += config.max_seq_len * D
    if not config.tie_embeddings:
        total += D * V
    return total


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, MaxText's causal formula.

    6 x (matmul parameters: every weight matrix, embeddings excluded except an untied or tied
    output projection) for forward + backward, plus causal attention: QK^T and AV each cost
    2·L·K per head per token forward, halved because only the causal half is needed, times 3
    for forward + backward: 6 · N · H · K · L (= 12·N·H·K·L/2).
    """
    D, F, V, N = config.embed_dim, config.mlp_dim, config.vocab_size, config.num_layers
    H, G, K = config.num_heads, config.kv_heads, config.dims_per_head
    per_layer = D * H * K * 2 + D * G * K * 2 + D * F * (3 if config.activation == "swiglu" else 2)
    matmul_params = N * per_layer + D * V
    attention = 6 * N * H * K * seq_len
    return 6.0 * matmul_params + attention
