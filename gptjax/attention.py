"""Self-attention over packed rows, with a choice of kernel: `attend(q, k, v, impl=...)`.

Every implementation computes the same function (the dimension legend is `gptjax.model`'s):
causal attention restricted to the query's own document (`segment_ids`), optionally to the
shared prompt plus the query's own response (`branch_ids`, DPO pairs), with G <= H kv heads.

  xla          plain einsums and a [B, 1, 1, L, M] boolean mask; runs anywhere, the reference
  chunked      the xla path by query chunks of `CAUSAL_CHUNK` rows, each against only the keys
               up to its own last position: the score blocks above the diagonal, all masked,
               are never computed (at L = 256, 5/8 of the L x L scores; at 2048, 33/64).
               Exact: every row's softmax sees the same visible keys. Plain JAX, any backend.
  dot_product  `jax.nn.dot_product_attention` on its XLA path (GQA natively, same mask)
  cudnn        the same call with cuDNN flash attention: GPU only, bfloat16, head_dim <= 256
               and a multiple of 8. Unpacked rows (no ids) use cuDNN's own causal mask; with
               ids the document mask reaches cuDNN as a dense additive bias (exact, but it
               reads a [B, 1, L, L] tensor per layer), because `jax.nn.dot_product_attention`
               has no packed-segment argument.
  splash       JAX's Pallas splash-attention TPU kernel: causal block sparsity plus
               `SegmentIds`; TPU only (`interpret=True` simulates it elsewhere, for tests),
               sequence length a multiple of 128, no `branch_ids`. Under a mesh with logical
               axis rules it runs per shard (`jax.shard_map`) over the batch and kv heads.

KV-cache decoding keeps `grouped_attention` with an explicit mask whatever the choice: its
queries are a chunk at arbitrary positions against S cache slots, which neither fused kernel
takes, and one decode step's attention is too small for a kernel to matter.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax.core import spmd as flax_spmd
from jax.sharding import PartitionSpec

from gptjax.errors import ConfigError
from gptjax.sharding import logical_to_spec

Array = jax.Array

IMPLEMENTATIONS = ("xla", "chunked", "dot_product", "cudnn", "splash")
# Query rows per chunk of "chunked": smaller skips more of the masked half but runs more,
# smaller products. Attention alone on CPU (tools/bench_attention.py): 64 and 128 are 1.5x
# the xla path at L = 256 and 2.3-2.9x at 1024-2048, 32 far less; 64 is the one measured in
# the whole step (docs/benchmarks.md).
CAUSAL_CHUNK = 64
_SPLASH_LANES = 128  # the kernel tiles both sequence axes in blocks of a multiple of 128
_SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides L: fewer, larger tiles run faster


def check_implementation(impl: str, *, dtype: str, head_dim: int) -> None:
    """What can be checked from the model config alone, before anything is compiled."""
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"model.attention must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if impl == "cudnn" and dtype != "bfloat16":
        raise ConfigError(f"model.attention='cudnn' needs model.dtype='bfloat16', got {dtype!r}")
    if impl == "cudnn" and (head_dim % 8 or head_dim > 256):
        raise ConfigError(
            f"model.attention='cudnn' needs a head_dim that is a multiple of 8 and <= 256, "
            f"got {head_dim}"
        )


def attention_mask(segment_ids_BL: Array, branch_ids_BL: Array | None = None) -> Array:
    """Causal mask restricted to the query's own packed document: [B, 1, 1, L, M] booleans.

    With `branch_ids` (preference pairs: a prompt in branch 0 followed by two responses in
    branches 1 and 2 of the same segment), a query also sees only keys of branch 0 or of its
    own branch, so both responses continue the one shared copy of the prompt.
    """
    length = segment_ids_BL.shape[1]
    causal_LM = jnp.arange(length)[:, None] >= jnp.arange(length)[None, :]
    visible_BLM = causal_LM & (segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :])
    if branch_ids_BL is not None:
        key_branch_B1M = branch_ids_BL[:, None, :]
        visible_BLM &= (key_branch_B1M == 0) | (key_branch_B1M == branch_ids_BL[:, :, None])
    return visible_BLM[:, None, None, :, :]


def grouped_attention(q_BLHK: Array, k_BMGK: Array, v_BMGK: Array, mask: Array) -> Array:
    """Softmax attention where each of the G kv heads serves R = H/G query heads.

    `mask` broadcasts against [B, G, R, L, M]; scores and softmax are float32.
    """
    B, L, H, K = q_BLHK.shape
    G = k_BMGK.shape[2]
    q_BLGRK = q_BLHK.reshape(B, L, G, H // G, K)
    scores_BGRLM = jnp.einsum("BLGRK,BMGK->BGRLM", q_BLGRK, k_BMGK).astype(jnp.float32)
    scores_BGRLM = jnp.where(mask, scores_BGRLM / math.sqrt(K), jnp.finfo(jnp.float32).min)
    probs_BGRLM = jax.nn.softmax(scores_BGRLM, axis=-1).astype(v_BMGK.dtype)
    out_BLGRK = jnp.einsum("BGRLM,BMGK->BLGRK", probs_BGRLM, v_BMGK)
    return out_BLGRK.reshape(B, L, H, K)


def causal_chunks(q_BLHK: Array, k_BLGK: Array, v_BLGK: Array, mask, chunk: int) -> Array:
    """`grouped_attention` by query chunks, each against keys [0, chunk end) only.

    Keys past a chunk's last query are masked for all its rows (causality), so leaving them
    out changes no softmax: their weight would be exp(finfo.min - max) = 0 exactly. `mask` is
    the full [B, 1, 1, L, M] one; each chunk reads its own [rows, :end] block of it.
    """
    L = q_BLHK.shape[1]
    outs = []
    for start in range(0, L, chunk):
        end = min(start + chunk, L)
        outs.append(
            grouped_attention(
                q_BLHK[:, start:end],
                k_BLGK[:, :end],
                v_BLGK[:, :end],
                mask[..., start:end, :end],
            )
        )
    return jnp.concatenate(outs, axis=1)


def attend(
    q_BLHK: Array,
    k_BMGK: Array,
    v_BMGK: Array,
    *,
    impl: str = "xla",
    segment_ids_BL: Array | None = None,
    branch_ids_BL: Array | None = None,
    interpret: bool = False,
) -> Array:
    """Causal self-attention (M = L) within documents; `segment_ids_BL=None`: one per row.

    `interpret=True` runs splash's TPU kernel in Pallas interpret mode (slow; for tests off
    TPU). Unsupported combinations raise a one-line ConfigError while tracing.
    """
    if impl == "xla":
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones(q_BLHK.shape[:2], jnp.int32)
        mask = attention_mask(segment_ids_BL, branch_ids_BL)
        return grouped_attention(q_BLHK, k_BMGK, v_BMGK, mask)
    if q_BLHK.shape[1] != k_BMGK.shape[1]:
        raise ValueError(f"model.attention={impl!r} is self-attention only (M = L)")
    if impl == "chunked":
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones(q_BLHK.shape[:2], jnp.int32)
        mask = attention_mask(segment_ids_BL, branch_ids_BL)
        return causal_chunks(q_BLHK, k_BMGK, v_BMGK, mask, CAUSAL_CHUNK)
    if impl in ("dot_product", "cudnn"):
        return _dot_product(q_BLHK, k_BMGK, v_BMGK, segment_ids_BL, branch_ids_BL, impl)
    if impl == "splash":
        return _splash(q_BLHK, k_BMGK, v_BMGK, segment_ids_BL, branch_ids_BL, interpret)
    raise ConfigError(f"model.attention must be one of {IMPLEMENTATIONS}, got {impl!r}")


def _dot_product(q_BLHK, k_BMGK, v_BMGK, segment_ids_BL, branch_ids_BL, impl: str) -> Array:
    if impl == "cudnn":
        _check_cudnn(q_BLHK)
    mask_B1LM = None
    if segment_ids_BL is not None or branch_ids_BL is not None:
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones(q_BLHK.shape[:2], jnp.int32)
        mask_B1LM = attention_mask(segment_ids_BL, branch_ids_BL)[:, :, 0]
    # is_causal repeats what the mask says, but lets cuDNN skip the upper triangle's tiles.
    # "xla", not None: None lets a future JAX pick another kernel behind this name.
    return jax.nn.dot_product_attention(
        q_BLHK,
        k_BMGK,
        v_BMGK,
        mask=mask_B1LM,
        is_causal=True,
        implementation="cudnn" if impl == "cudnn" else "xla",
    )


def _check_cudnn(q_BLHK: Array) -> None:
    backend = jax.default_backend()
    if backend != "gpu":
        raise ConfigError(
            f"model.attention='cudnn' needs a GPU, the backend is {backend!r}; use 'xla' or "
            "'dot_product'"
        )
    if q_BLHK.dtype not in (jnp.bfloat16, jnp.float16):
        raise ConfigError(
            f"model.attention='cudnn' needs model.dtype='bfloat16', got {q_BLHK.dtype.name}"
        )
    if q_BLHK.shape[1] % 2:
        raise ConfigError(
            f"model.attention='cudnn' needs an even sequence length, got {q_BLHK.shape[1]}"
        )


def _splash(q_BLHK, k_BMGK, v_BMGK, segment_ids_BL, branch_ids_BL, interpret: bool) -> Array:
    if branch_ids_BL is not None:
        raise ConfigError(
            "model.attention='splash' cannot express DPO branch_ids (two responses sharing one "
            "prompt); use 'xla' or 'dot_product' for the dpo phase"
        )
    backend = jax.default_backend()
    if backend != "tpu" and not interpret:
        raise ConfigError(
            f"model.attention='splash' is a TPU kernel, the backend is {backend!r}; use 'xla' "
            "or 'dot_product'"
        )
    L = q_BLHK.shape[1]
    if L % _SPLASH_LANES:
        raise ConfigError(
            f"model.attention='splash' needs a sequence length that is a multiple of "
            f"{_SPLASH_LANES} (its kernel block), got {L}"
        )
    if segment_ids_BL is None:
        segment_ids_BL = jnp.ones(q_BLHK.shape[:2], jnp.int32)
    # The kernel takes no scale: scaling q before it equals scaling the scores.
    q_BLHK = q_BLHK * jnp.asarray(1.0 / math.sqrt(q_BLHK.shape[-1]), q_BLHK.dtype)
    run = functools.partial(_splash_local, interpret=interpret)
    segment_ids_BL = segment_ids_BL.astype(jnp.int32)
    rules = flax_spmd.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh is None or mesh.empty:
        return run(q_BLHK, k_BMGK, v_BMGK, segment_ids_BL)
    # A Pallas kernel is opaque to GSPMD (it would gather every operand onto each device), so
    # it runs per shard. Query heads are split exactly as kv heads are: inside a shard the
    # kernel maps query head h to kv head h // R, which holds only if both split alike.
    kv_spec = logical_to_spec(
        ("batch", None, "act_heads", None), rules, dict(mesh.shape), k_BMGK.shape
    )
    spec = PartitionSpec(kv_spec[0], None, kv_spec[2], None)
    return jax.shard_map(
        run,
        in_specs=(spec, spec, spec, PartitionSpec(kv_spec[0], None)),
        out_specs=spec,
        check_vma=False,
    )(q_BLHK, k_BMGK, v_BMGK, segment_ids_BL)


def _splash_local(q_BLHK, k_BLGK, v_BLGK, segment_ids_BL, *, interpret: bool) -> Array:
    """The splash kernel on this device's rows and heads; the kernel itself sees one row."""
    # Imported here: Pallas adds ~0.1 s to `import gptjax` for a kernel most runs never use.
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    L, H = q_BLHK.shape[1], q_BLHK.shape[2]
    block = next(b for b in _SPLASH_BLOCKS if L % b == 0)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    # The causal part is static (tiles above the diagonal are skipped, not masked); documents
    # come in as SegmentIds, which are data.
    mask = splash.MultiHeadMask([splash.CausalMask((L, L))] * H)
    kernel = splash.make_splash_mha(
        mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
    )

    def one_row(q_LHK, k_LGK, v_LGK, segment_ids_L):
        ids = splash.SegmentIds(q=segment_ids_L, kv=segment_ids_L)
        out_HLK = kernel(
            q_LHK.transpose(1, 0, 2), k_LGK.transpose(1, 0, 2), v_LGK.transpose(1, 0, 2), ids
        )
        return out_HLK.transpose(1, 0, 2)

    return jax.vmap(one_row)(q_BLHK, k_BLGK, v_BLGK, segment_ids_BL)
