"""Per-device memory of a training run, planned without allocating an array (`--dry-run`).

Two estimates, both per device:
- analytic: the sharded state's bytes from the abstract state and its shardings (parameters,
  AdamW moments), gradients (float32, sharded like the parameters) and activations from a
  per-layer formula of what the backward keeps under each remat policy (`activation_bytes`);
- XLA's own plan: the real jitted train step lowered and compiled on ShapeDtypeStructs that
  carry their shardings, read through `compiled.memory_analysis()`. Compiling allocates no
  buffer; it needs the mesh's devices to exist (on CPU `simulate_host_devices` makes them).

With LoRA the parameters are the frozen base plus the adapters, while gradients and optimizer
state are the adapters' only; `full_finetune` keeps what a full finetune of the same model
would hold, so the report shows what LoRA saves.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import spmd as flax_spmd
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec

from gptjax import sharding
from gptjax.config import validate
from gptjax.objectives import objective_for
from gptjax.steps import base_params, jit_train_step, state_and_step

REMAT_POLICIES = ("none", "full", "dots")
# Bytes per device past which XLA is not asked for its plan: no device holds an exbibyte, and
# XLA aborts (C++, no exception) on shapes whose byte size overflows int64.
BEYOND_ANY_DEVICE = 2**60
_F32 = 4
_FORCE_DEVICES = "--xla_force_host_platform_device_count"


def simulate_host_devices(count: int) -> None:
    """Makes the CPU platform show `count` devices (XLA_FLAGS), so XLA can plan a mesh larger
    than this machine. Only takes effect before JAX starts its backends: call it first."""
    flags = re.sub(rf"{_FORCE_DEVICES}=\d+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} {_FORCE_DEVICES}={count}".strip()


@dataclasses.dataclass
class ParamRow:
    path: str
    shape: tuple[int, ...]
    spec: PartitionSpec
    shard_shape: tuple[int, ...]
    device_bytes: int


@dataclasses.dataclass
class MemoryPlan:
    """Bytes per device. `compiled` is XLA's memory_analysis (None: not compiled, see `note`)."""

    mesh_shape: dict[str, int]
    device_count: int
    platform: str
    rows_per_device: int  # micro-batch rows each device holds
    seq_len: int
    remat: str  # the config's policy
    param_bytes: int
    optimizer_bytes: int
    gradient_bytes: int
    other_bytes: int  # scalars (step, counters) and one micro-batch of inputs
    activations: dict[str, int]  # remat policy -> analytic activation bytes
    param_count: int
    large_params: list[ParamRow]
    compiled: dict[str, int] | None = None
    # With LoRA: {"params", "optimizer", "gradients", "trained"} of a full finetune instead,
    # and "trained" = the adapters' parameter count.
    full_finetune: dict[str, int] | None = None
    note: str = ""
    dcn_note: str = ""  # the slices, when the mesh spans several (see MeshLayout.dcn_note)

    @property
    def analytic_total(self) -> int:
        state = self.param_bytes + self.optimizer_bytes + self.gradient_bytes + self.other_bytes
        return state + self.activations[self.remat]

    @property
    def total(self) -> int:
        """XLA's peak when compiled (it knows its fusions and buffer reuse), else the formula."""
        return self.compiled["peak"] if self.compiled else self.analytic_total


def activation_bytes(model, rows: int, seq_len: int, tensor: int, remat: str) -> int:
    """What the backward pass keeps alive at its peak, per device, for one micro-batch.

    Sizes per device (b rows of length L; heads, mlp and vocab split over `tensor` when it
    divides them, as the `act_*` sharding rules do; the residual stream is not split):
    X = b·L·D, Q = b·L·H·K, KV = b·L·G·K, FF = b·L·F, S = b·H·L·L (scores), LV = b·L·V;
    c = bytes of the compute dtype, 4 = float32.

    Kept per layer (the residuals of the scanned block, as JAX's autodiff lists them):
      none: norms 2·(2·X·4 + X·c) + q,k,v,out (2·Q + 2·KV)·c + scores S·(4 + c) (exp in f32
            and probabilities in c) + MLP 6·FF·c (GELU's tanh terms, SwiGLU's gate and silu)
            + with c < 4 the extra casts JAX keeps: (2·X + Q + KV)·c and 2·FF·c (3 for SwiGLU)
      dots: block input X·c + q,k,v (Q + 2·KV)·c + attention output X·c + MLP up FF·c
            (and gate for SwiGLU): outputs of matmuls without batch dimensions
      full: block input X·c
    Outside the layers: the final norm 3·X·4 and the mask, b·L·L bools (with remat "none"
    JAX hoists the mask's broadcast to [b, H, L, L] in f32 and bool out of the scan: S·5).
    Peak = N·per-layer + outside + the larger transient of the backward: the head (float32
    logits' exp and their cotangent, 2·LV·4) or, with remat, one layer recomputed (its
    "none" residuals). With `model.head_chunk_len` C (gptjax.chunked_head) the head's
    transient is one chunk's, LV = b·C·V, plus the [D, V] float32 accumulator of its gradient.
    Checked against XLA's temp size in tests/test_memory_plan.py.
    """
    c = jnp.dtype(model.compute_dtype).itemsize
    split = lambda n: n // tensor if n % tensor == 0 else n
    H, G, K = split(model.num_heads), split(model.kv_heads), model.dims_per_head
    X = rows * seq_len * model.embed_dim
    Q, KV = rows * seq_len * H * K, rows * seq_len * G * K
    FF, S = rows * seq_len * split(model.mlp_dim), rows * H * seq_len * seq_len
    head_len = model.head_chunk_len or seq_len  # positions whose logits exist at once
    LV = rows * head_len * split(model.vocab_size)
    head_grad = model.embed_dim * split(model.vocab_size) * _F32 if model.head_chunk_len else 0
    swiglu = model.activation == "swiglu"
    none = 2 * (2 * X * _F32 + X * c) + (2 * Q + 2 * KV) * c + S * (_F32 + c) + 6 * FF * c
    if c < _F32:
        none += (2 * X + Q + KV) * c + (3 if swiglu else 2) * FF * c
    per_layer = {
        "none": none,
        "dots": (2 * X + Q + 2 * KV + (2 if swiglu else 1) * FF) * c,
        "full": X * c,
    }[remat]
    outside = 3 * X * _F32 + (S * 5 if remat == "none" else rows * seq_len * seq_len)
    head = 2 * LV * _F32 + head_grad
    transient = head if remat == "none" else max(head, none)
    return model.num_layers * per_layer + outside + transient


def _device_bytes(leaf) -> int:
    shape = leaf.sharding.shard_shape(leaf.shape)
    return math.prod(shape) * jnp.dtype(leaf.dtype).itemsize


def _tree_bytes(tree) -> int:
    return sum(_device_bytes(leaf) for leaf in jax.tree.leaves(tree))


def _large_params(params, share: float = 0.01, most: int = 12) -> list[ParamRow]:
    """The parameter arrays holding at least `share` of all parameters, largest first."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    total = sum(math.prod(leaf.shape) for _, leaf in leaves)
    rows = [
        ParamRow(
            jax.tree_util.keystr(path, simple=True, separator="."),
            tuple(leaf.shape),
            leaf.sharding.spec,
            tuple(leaf.sharding.shard_shape(leaf.shape)),
            _device_bytes(leaf),
        )
        for path, leaf in leaves
        if math.prod(leaf.shape) >= share * total
    ]
    return sorted(rows, key=lambda r: -math.prod(r.shape))[:most]


def _mesh(mesh_shape: dict[str, int], device_count: int):
    """A real mesh over the first `device_count` devices, else an abstract one (no compile).

    One slice of the whole shape even for a multi-slice config: which devices share a slice
    changes the network a collective crosses, not the bytes each device holds.
    """
    devices = jax.devices()
    if device_count <= len(devices):
        return sharding.make_mesh(mesh_shape, devices[:device_count])
    shape = tuple(mesh_shape[axis] for axis in sharding.MESH_AXES)
    return AbstractMesh(shape, sharding.MESH_AXES, axis_types=(AxisType.Auto,) * len(shape))


def abstract_batch(mesh, rows: int, seq_len: int) -> dict:
    """The train step's batch as ShapeDtypeStructs with the batch sharding (the pipeline's
    fields and dtypes: int32 ids and positions, float32 weights)."""
    spec = NamedSharding(mesh, PartitionSpec(sharding.BATCH_AXES, None))
    dtypes = dict(inputs=jnp.int32, targets=jnp.int32, segment_ids=jnp.int32)
    dtypes |= dict(positions=jnp.int32, weights=jnp.float32)
    return {k: jax.ShapeDtypeStruct((rows, seq_len), v, sharding=spec) for k, v in dtypes.items()}


def train_step_parts(config, model, mesh, lora=None):
    """(create, abstract target state, shardings, jitted step, abstract frozen inputs): what
    training builds, abstract. The frozen inputs are `(base params,)` with LoRA, else ()."""
    rules = tuple(config.sharding_rules)
    create, step = state_and_step(config, model, lora=lora)
    target, shardings = sharding.plan_state(
        create, mesh, rules, shard_optimizer=config.train.shard_optimizer
    )
    frozen, frozen_shardings = (), ()
    if lora is not None:
        base, base_shardings = sharding.plan_state(lambda: base_params(model), mesh, rules)
        frozen, frozen_shardings = (base,), (base_shardings,)
    if isinstance(mesh, AbstractMesh):
        return create, target, shardings, None, frozen
    jitted = jit_train_step(step, shardings, mesh, frozen_shardings)
    return create, target, shardings, jitted, frozen


def compile_plan(config, mesh, target, jitted, frozen: tuple = ()) -> dict[str, int]:
    """XLA's memory_analysis of the train step compiled for `mesh` (per device, bytes).

    peak = arguments + outputs - aliased (the donated state is reused for the new one)
    + temporaries (activations, gradients, optimizer scratch).
    """
    batch = abstract_batch(mesh, config.train.global_batch_size, config.data.seq_len)
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(tuple(config.sharding_rules)):
        analysis = jitted.lower(target, batch, *frozen).compile().memory_analysis()
    fields = ("argument", "output", "alias", "temp")
    result = {name: int(getattr(analysis, f"{name}_size_in_bytes")) for name in fields}
    result["peak"] = result["argument"] + result["output"] - result["alias"] + result["temp"]
    return result


def plan_memory(config, device_count: int | None = None, compile: bool = True) -> MemoryPlan:
    """The per-device memory plan of training `config` on `device_count` devices (default:
    all of this machine's). Validates the config first, as training does."""
    device_count = device_count or jax.device_count()
    derived = validate(config, device_count, 1, device_count)
    model, mesh_shape = derived["model"], derived["mesh_shape"]
    mesh = _mesh(mesh_shape, device_count)
    lora = derived["lora"]
    _, target, _, jitted, frozen = train_step_parts(config, model, mesh, lora)
    rows = derived["micro_batch"] // sharding.data_parallel_size(mesh_shape)
    seq_len, tensor = config.data.seq_len, mesh_shape["tensor"]
    trained_bytes = _tree_bytes(target.params)
    param_bytes = trained_bytes + _tree_bytes(frozen)
    # Gradients are float32 and sharded like the trained parameters; with micro-batches the
    # running sum and the current micro-batch's gradient are both alive.
    gradients_per_byte = 2 if config.train.grad_accum_steps > 1 else 1
    gradient_bytes = trained_bytes * gradients_per_byte
    scalars = _tree_bytes((target.step, target.bad_steps, target.skipped_steps))
    plan = MemoryPlan(
        mesh_shape=mesh_shape,
        device_count=device_count,
        platform=jax.devices()[0].platform,
        rows_per_device=rows,
        seq_len=seq_len,
        remat=model.remat,
        param_bytes=param_bytes,
        optimizer_bytes=_tree_bytes(target.opt_state),
        gradient_bytes=gradient_bytes,
        other_bytes=scalars + rows * seq_len * 20,  # 5 fields of 4 bytes per token
        activations={p: activation_bytes(model, rows, seq_len, tensor, p) for p in REMAT_POLICIES},
        param_count=sum(math.prod(x.shape) for x in jax.tree.leaves((target.params, frozen))),
        large_params=_large_params(frozen[0] if frozen else target.params),
        dcn_note=derived["mesh_layout"].dcn_note(),
    )
    if lora is not None:
        create_full, _ = state_and_step(config, model)  # every parameter trained
        full_target, _ = sharding.plan_state(create_full, mesh, tuple(config.sharding_rules))
        plan.full_finetune = {
            "params": _tree_bytes(full_target.params),
            "optimizer": _tree_bytes(full_target.opt_state),
            "gradients": _tree_bytes(full_target.params) * gradients_per_byte,
            "trained": sum(math.prod(x.shape) for x in jax.tree.leaves(target.params)),
        }
    if objective_for(config.phase).needs_reference:
        plan.note = (
            f"XLA's plan is not compiled for phase={config.phase} (its reference and pair batches)"
        )
    elif jitted is None:
        plan.note = (
            f"XLA's plan needs {device_count} devices and this {plan.platform} backend has "
            f"{jax.device_count()}: analytic estimate only"
        )
    elif not compile:
        plan.note = "XLA's plan not compiled (--no-compile)"
    elif plan.analytic_total > BEYOND_ANY_DEVICE:
        plan.note = (
            "XLA's plan not compiled: the analytic estimate is beyond any device (and shapes "
            "this large overflow XLA's shape arithmetic, which aborts the process)"
        )
    else:
        plan.compiled = compile_plan(config, mesh, target, jitted, frozen)
    return plan


def device_memory_limit() -> int | None:
    """Bytes each device reports it can hold (GPU/TPU `bytes_limit`); None on CPU."""
    # A local device: only this process's own devices report memory (others raise).
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def real_batch(config, mesh, seed: int = 0) -> dict:
    """A random batch of the train step's shape, placed sharded (for measuring, not training)."""
    rows, seq_len = config.train.global_batch_size, config.data.seq_len
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.data.vocab_size, (rows, seq_len + 1), dtype=np.int32)
    local = {
        "inputs": ids[:, :-1],
        "targets": ids[:, 1:],
        "segment_ids": np.ones((rows, seq_len), np.int32),
        "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len)),
        "weights": np.ones((rows, seq_len), np.float32),
    }
    return sharding.global_batch_from_local(local, mesh)
