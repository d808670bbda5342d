"""The pure train step on a real 8-device mesh: compile everywhere, overfit, golden values,
gradient accumulation, the non-finite gate, and that large matrices are really split."""

import dataclasses
import functools
import itertools

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from flax.core import spmd as flax_spmd

from gptjax import ModelConfig, Transformer, sharding
from gptjax.optim import make_optimizer
from gptjax.steps import (
    gradient_sums,
    jit_train_step,
    make_train_step,
    model_graphdef,
    new_train_state,
)

MODEL = ModelConfig.gpt2(
    vocab_size=128, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_seq_len=16
)
# Every factorisation of 8 devices; the fast tier compiles one that uses all three axes' code
# paths (data with fsdp and tensor), CI's full run compiles all ten.
FAST_MESHES = ((2, 2, 2),)
MESHES = [
    pytest.param(
        dict(zip(("data", "fsdp", "tensor"), shape, strict=True)),
        marks=() if shape in FAST_MESHES else pytest.mark.slow,
    )
    for shape in itertools.product((1, 2, 4, 8), repeat=3)
    if np.prod(shape) == 8
]


def _unannotated_leaves(state) -> list[str]:
    """Paths of parameters with no logical axis names, or names for the wrong rank."""
    missing = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    ):
        if not isinstance(leaf, nnx.Variable):
            continue
        names = leaf.get_metadata().get("out_sharding")
        if names is None or len(names) != leaf.get_value().ndim:
            missing.append(jax.tree_util.keystr(path))
    return missing


def optim_config(**overrides):
    fields = dict(
        peak_lr=1e-2,
        end_lr_fraction=0.1,
        warmup_steps=0,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        clip_norm=1.0,
    )
    return ml_collections.ConfigDict(fields | overrides)


def setup(
    mesh_shape,
    model=MODEL,
    steps=100,
    grad_accum_steps=1,
    initial=None,
    devices=None,
    shard_optimizer=False,
    **optim,
):
    """(jitted step, sharded state, mesh) exactly as gptjax.train.loop builds them.

    `initial`: a host copy of a state to place on this mesh instead of running the sharded
    init again (the init compiles in seconds; tests that only care about the step skip it).
    """
    mesh = sharding.make_mesh(mesh_shape, devices)
    rules = sharding.DEFAULT_RULES
    tx, schedule = make_optimizer(optim_config(**optim), steps)
    create = functools.partial(new_train_state, model, tx, 0)

    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        if initial is None:
            state, shardings = sharding.sharded_init(
                create, mesh, rules, shard_optimizer=shard_optimizer
            )
        else:
            _, shardings = sharding.plan_state(create, mesh, rules, shard_optimizer=shard_optimizer)
            state = jax.device_put(initial, shardings)
    step = make_train_step(
        model_graphdef(model),
        tx,
        schedule,
        seed=0,
        grad_accum_steps=grad_accum_steps,
        use_dropout=False,
    )
    return jit_train_step(step, shardings, mesh), state, mesh


def make_batch(rows=8, length=16, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(4, 128, (rows, length + 1)).astype(np.int32)
    return {
        "inputs": inputs[:, :-1],
        "targets": inputs[:, 1:],
        "segment_ids": np.ones((rows, length), np.int32),
        "positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
        "weights": np.ones((rows, length), np.float32),
    }


def run_steps(step_fn, state, mesh, batches):
    metrics = []
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(sharding.DEFAULT_RULES):
        for batch in batches:
            state, m = step_fn(state, sharding.global_batch_from_local(batch, mesh))
            metrics.append(jax.device_get(m))
    return state, metrics


@pytest.fixture(scope="module")
def data_parallel_run():
    """Initial state (host copy) and the first two losses on a pure data-parallel mesh."""
    step_fn, state, mesh = setup(dict(data=8, fsdp=1, tensor=1))
    initial = jax.device_get(state)
    _, metrics = run_steps(step_fn, state, mesh, [make_batch(), make_batch(seed=1)])
    return initial, [float(m["loss"]) for m in metrics]


@pytest.mark.parametrize("mesh_shape", MESHES, ids=lambda m: "x".join(map(str, m.values())))
def test_train_step_compiles_and_agrees_on_every_mesh(mesh_shape, data_parallel_run):
    """Each factorisation of 8 devices compiles and gives the data-parallel run's losses."""
    initial, reference = data_parallel_run
    step_fn, state, mesh = setup(mesh_shape, initial=initial)
    _, metrics = run_steps(step_fn, state, mesh, [make_batch(), make_batch(seed=1)])
    assert [float(m["loss"]) for m in metrics] == pytest.approx(reference, rel=1e-5)


def test_optimizer_state_split_over_data_trains_the_same(data_parallel_run):
    """ZeRO-1 (`train.shard_optimizer`): each of the 8 replicas holds 1/8 of AdamW's moments
    and updates only those, and the losses are the replicated optimizer's."""
    initial, losses = data_parallel_run
    step_fn, state, mesh = setup(
        dict(data=8, fsdp=1, tensor=1), initial=initial, shard_optimizer=True
    )
    mu = state.opt_state[1][0].mu["blocks"]["mlp"]["up_DF"].get_value()
    assert mu.addressable_shards[0].data.size == mu.size // 8
    assert state.params["blocks"]["mlp"]["up_DF"].get_value().sharding.is_fully_replicated
    state, metrics = run_steps(step_fn, state, mesh, [make_batch(), make_batch(seed=1)])
    np.testing.assert_allclose([float(m["loss"]) for m in metrics], losses, rtol=1e-6)
    assert state.opt_state[1][0].mu["blocks"]["mlp"]["up_DF"].get_value().sharding == mu.sharding


def test_chunked_attention_trains_as_the_xla_path(data_parallel_run, monkeypatch):
    """model.attention="chunked" with 4 chunks of 4 rows: the xla path's losses, two steps."""
    monkeypatch.setattr("gptjax.attention.CAUSAL_CHUNK", 4)
    initial, losses = data_parallel_run
    model = dataclasses.replace(MODEL, attention="chunked")
    step_fn, state, mesh = setup(dict(data=8, fsdp=1, tensor=1), model=model, initial=initial)
    _, metrics = run_steps(step_fn, state, mesh, [make_batch(), make_batch(seed=1)])
    np.testing.assert_allclose([float(m["loss"]) for m in metrics], losses, rtol=1e-6)


def test_hand_written_backwards_train_as_autodiff_on_a_sharded_mesh(data_parallel_run):
    """The ordered projections and closed-form norms (CPU speed options) with the weights
    split over fsdp x tensor: the data-parallel autodiff run's losses, two steps."""
    initial, losses = data_parallel_run
    model = dataclasses.replace(
        MODEL,
        projection_backward="smaller_copy",
        norm_backward="closed_form",
    )
    step_fn, state, mesh = setup(dict(data=2, fsdp=2, tensor=2), model=model, initial=initial)
    _, metrics = run_steps(step_fn, state, mesh, [make_batch(), make_batch(seed=1)])
    np.testing.assert_allclose([float(m["loss"]) for m in metrics], losses, rtol=1e-5)


def test_large_matrices_are_split_on_a_2x2x2_mesh():
    _, state, _ = setup(dict(data=2, fsdp=2, tensor=2))
    assert _unannotated_leaves(state.params) == []
    params = state.params
    for name, array in [
        ("embed_VD", params["embed_VD"][...]),
        ("up_DF", params["blocks"]["mlp"]["up_DF"][...]),
        ("q_DHK", params["blocks"]["attn"]["q_DHK"][...]),
    ]:
        shard = array.addressable_shards[0].data
        assert shard.size * 4 == array.size, f"{name} is not split over fsdp x tensor"
    # Optimizer moments follow their parameters; scalars are replicated but still sharded.
    mu = state.opt_state[1][0].mu["blocks"]["mlp"]["up_DF"][...]
    assert mu.sharding == params["blocks"]["mlp"]["up_DF"][...].sharding
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf.sharding, jax.sharding.NamedSharding)


@pytest.mark.slow
def test_overfitting_one_batch_drives_the_loss_near_zero():
    step_fn, state, mesh = setup(dict(data=2, fsdp=2, tensor=2), steps=150, weight_decay=0.0)
    batch = make_batch()
    _, metrics = run_steps(step_fn, state, mesh, [batch] * 150)
    assert metrics[0]["loss"] > 4.0
    assert metrics[-1]["loss"] < 0.05
    assert metrics[-1]["accuracy"] > 0.99


# One step of MODEL at seed 0 on make_batch(): recorded on jax 0.10.2 / CPU. A change here
# means the model, the init, the loss or the optimizer changed behaviour.
GOLDEN = {"loss": 4.860840, "grad_norm": 1.239192}
GOLDEN_SECOND_LOSS = 4.626224


def test_one_step_metrics_equal_the_golden_values():
    step_fn, state, mesh = setup(dict(data=4, fsdp=2, tensor=1))
    _, metrics = run_steps(step_fn, state, mesh, [make_batch(), make_batch()])
    for key, value in GOLDEN.items():
        assert float(metrics[0][key]) == pytest.approx(value, rel=1e-4), key
    assert float(metrics[1]["loss"]) == pytest.approx(GOLDEN_SECOND_LOSS, rel=1e-4)


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch():
    """k micro-batches give the big batch's loss and gradient (sums divided once)."""
    batch = make_batch(rows=16)
    batch["weights"][3, 5:] = 0.0  # unequal token counts per micro-batch: sums, not means
    graphdef, params = nnx.split(Transformer(MODEL, rngs=nnx.Rngs(0)))
    mesh = sharding.make_mesh(dict(data=4, fsdp=1, tensor=2))
    results = {}
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(sharding.DEFAULT_RULES):
        global_batch = sharding.global_batch_from_local(batch, mesh)
        for k in (1, 4):
            fn = jax.jit(lambda p, b, k=k: gradient_sums(graphdef, p, b, None, k))
            results[k] = jax.device_get(fn(params, global_batch))
    (ce_1, sums_1, grads_1), (ce_4, sums_4, grads_4) = results[1], results[4]
    assert sums_4["weight"] == sums_1["weight"] == 16 * 16 - 11
    assert sums_4["accuracy"] == sums_1["accuracy"]
    assert ce_4 == pytest.approx(ce_1, rel=1e-6)
    for a, b in zip(jax.tree.leaves(grads_4), jax.tree.leaves(grads_1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_nan_batch_is_skipped_not_applied():
    step_fn, state, mesh = setup(dict(data=8, fsdp=1, tensor=1))
    before = jax.tree.map(np.asarray, state.params)
    bad = make_batch()
    bad["weights"][0, 0] = np.nan
    state, metrics = run_steps(step_fn, state, mesh, [bad, bad])
    assert [bool(m["finite"]) for m in metrics] == [False, False]
    assert int(state.step) == 2 and int(state.skipped_steps) == 2 and int(state.bad_steps) == 2
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)
    state, metrics = run_steps(step_fn, state, mesh, [make_batch()])
    assert bool(metrics[0]["finite"]) and int(state.bad_steps) == 0
    # The skipped steps did not advance the schedule: the first applied update used lr(0).
    assert float(metrics[0]["lr"]) == pytest.approx(1e-2)
