"""The chunked output head + cross-entropy (gptjax.chunked_head) equals the plain path in loss,
accuracy and every gradient, for each objective, on a sharded 8-device mesh; and its compiled
step really holds far fewer bytes than the one that forms the whole [B, L, V] logits."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core import spmd as flax_spmd

from gptjax import sharding
from gptjax.chunked_head import token_nll
from gptjax.dpo import dpo_objective
from gptjax.errors import ConfigError
from gptjax.model import ModelConfig, Transformer
from gptjax.steps import gradient_sums, model_graphdef
from tests.test_dpo import PAIRS, _pair_row
from tests.test_train_step import make_batch

GPT2 = ModelConfig.gpt2(
    vocab_size=128, num_layers=1, num_heads=4, embed_dim=32, mlp_dim=64, max_seq_len=32
)  # tied embeddings, biases
LLAMA = ModelConfig.llama(
    vocab_size=128, num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=32, mlp_dim=64,
    max_seq_len=32,
)  # fmt: skip  # untied head, no biases


def _plain_nll(x_BLD, head_DV, targets_BL):
    logits = jnp.einsum("BLD,DV->BLV", x_BLD, head_DV)
    target = jnp.take_along_axis(logits, targets_BL[..., None], -1)[..., 0]
    correct = (jnp.argmax(logits, -1) == targets_BL).astype(jnp.float32)
    return jax.nn.logsumexp(logits, -1) - target, correct


def test_token_nll_and_its_gradients_equal_the_plain_head():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 12, 16)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 50, (3, 12)), jnp.int32)
    weights = jnp.asarray(rng.uniform(size=(3, 12)) * (rng.uniform(size=(3, 12)) > 0.3))

    def weighted(fn, x, head):
        nll, correct = fn(x, head, targets)
        return jnp.sum(nll * weights), correct

    plain = jax.value_and_grad(functools.partial(weighted, _plain_nll), (0, 1), has_aux=True)
    for chunk_len in (1, 4, 12):
        chunked_nll = lambda x, h, t, c=chunk_len: token_nll(x, h, t, c)
        chunked = jax.value_and_grad(functools.partial(weighted, chunked_nll), (0, 1), has_aux=True)
        (loss_c, correct_c), grads_c = chunked(x, head)
        (loss_p, correct_p), grads_p = plain(x, head)
        assert float(loss_c) == pytest.approx(float(loss_p), rel=1e-6)
        np.testing.assert_array_equal(correct_c, correct_p)
        for a, b in zip(grads_c, grads_p, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_chunk_that_does_not_divide_the_sequence_is_a_config_error():
    x, head = jnp.zeros((1, 10, 4)), jnp.zeros((4, 8))
    with pytest.raises(ConfigError, match="head_chunk_len=4 must be positive and divide"):
        token_nll(x, head, jnp.zeros((1, 10), jnp.int32), 4)
    with pytest.raises(ConfigError, match="head_chunk_len must be >= 0"):
        dataclasses.replace(GPT2, head_chunk_len=-1)


def _lm_batch():
    batch = make_batch(rows=8, length=16)
    # SFT-style answer masks: prompts (and padding) carry weight 0, unequal per row.
    for row in range(8):
        batch["weights"][row, : 2 + row] = 0.0
    return batch


def _dpo_batch():
    rows = [_pair_row(*PAIRS[i % 2], pad_to=16) for i in range(8)]
    batch = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    batch["weights"] = batch["weights"].astype(np.float32)
    return batch


def _sums_and_grads(model, objective, batch, mesh_shape, reference_scale=None):
    """(loss sum, sums, grads) of the plain and the chunked path, jitted on the mesh."""
    params = nnx.state(Transformer(model, rngs=nnx.Rngs(0)))
    mesh = sharding.make_mesh(mesh_shape)
    rules = sharding.DEFAULT_RULES
    results = []
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        placed = jax.device_put(params, sharding.state_shardings(params, mesh, rules))
        reference = None
        if reference_scale is not None:
            reference = jax.tree.map(lambda p: p * reference_scale, placed)
        global_batch = sharding.global_batch_from_local(batch, mesh)
        for chunk_len in (0, 4):
            graphdef = model_graphdef(dataclasses.replace(model, head_chunk_len=chunk_len))
            fn = jax.jit(lambda p, b, r, g=graphdef: gradient_sums(g, p, b, None, 1, objective, r))
            results.append(jax.device_get(fn(placed, global_batch, reference)))
    return results


def _assert_equal(plain, chunked):
    (loss_p, sums_p, grads_p), (loss_c, sums_c, grads_c) = plain, chunked
    assert float(loss_c) == pytest.approx(float(loss_p), rel=1e-5)
    assert sums_c.keys() == sums_p.keys()
    for name in sums_p:
        assert float(sums_c[name]) == pytest.approx(float(sums_p[name]), rel=1e-5, abs=1e-6), name
    # One absolute tolerance for all: some gradients are zero up to rounding (a key bias
    # cannot change a softmax), and their noise differs between the paths.
    scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(grads_p))
    paths = jax.tree_util.tree_leaves_with_path(grads_p)
    for (path, a), b in zip(paths, jax.tree.leaves(grads_c), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * scale, err_msg=str(path))
    head = grads_p["embed_VD"] if "head_DV" not in grads_p else grads_p["head_DV"]
    assert float(np.max(np.abs(head[...]))) > 1e-3 * scale  # the head's gradient is compared


@pytest.mark.parametrize(
    "model,mesh_shape",
    [
        # ~13 s each on 2 cores: CI's full run compiles both; the fast tier checks the chunked
        # head's loss and gradients without a model (test_token_nll_and_its_gradients_...).
        pytest.param(GPT2, dict(data=2, fsdp=2, tensor=2), marks=pytest.mark.slow),
        pytest.param(LLAMA, dict(data=1, fsdp=4, tensor=2), marks=pytest.mark.slow),
    ],
    ids=["gpt2-tied-2x2x2", "llama-untied-1x4x2"],
)
def test_next_token_loss_and_every_gradient_equal_the_plain_path(model, mesh_shape):
    from gptjax.steps import lm_objective

    plain, chunked = _sums_and_grads(model, lm_objective, _lm_batch(), mesh_shape)
    assert plain[1]["weight"] == 8 * 16 - sum(2 + row for row in range(8))
    _assert_equal(plain, chunked)


@pytest.mark.slow
def test_dpo_loss_and_every_gradient_equal_the_plain_path():
    """DPO's per-answer log-prob sums go through the chunked head too, policy and reference."""
    objective = functools.partial(dpo_objective, beta=0.3, label_smoothing=0.05)
    plain, chunked = _sums_and_grads(
        LLAMA, objective, _dpo_batch(), dict(data=2, fsdp=2, tensor=2), reference_scale=1.01
    )
    assert plain[1]["weight"] == 8
    _assert_equal(plain, chunked)


def _temp_bytes(chunk_len: int) -> int:
    """XLA's temporary bytes for the loss gradient of a small model with a 32k vocabulary."""
    model = ModelConfig.gpt2(
        vocab_size=32768, num_layers=1, num_heads=2, embed_dim=64, mlp_dim=128,
        max_seq_len=128, head_chunk_len=chunk_len,
    )  # fmt: skip
    from gptjax.steps import lm_objective

    graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(model, rngs=nnx.Rngs(0))))
    batch = {
        name: jax.ShapeDtypeStruct((4, 128), jnp.float32 if name == "weights" else jnp.int32)
        for name in ("inputs", "targets", "segment_ids", "positions", "weights")
    }
    grad = jax.jit(jax.grad(lambda p, b: lm_objective(graphdef, p, b, None)[0]))
    analysis = grad.lower(params, batch).compile().memory_analysis()
    return analysis.temp_size_in_bytes


def test_the_chunked_step_never_holds_the_whole_logits():
    """4 x 128 tokens x 32,768 vocab: the logits alone are 64 MiB in float32. The plain step's
    temporaries hold them and their gradient; the chunked one's (16 positions: 8 MiB of logits
    per chunk) stay within a few chunks plus the [D, V] head gradient's accumulator (8 MiB)."""
    logits_bytes = 4 * 128 * 32768 * 4
    chunk_bytes, head_bytes = logits_bytes // 8, 64 * 32768 * 4
    plain, chunked = _temp_bytes(0), _temp_bytes(16)
    assert plain >= 2 * logits_bytes
    assert chunked < 3 * chunk_bytes + 2 * head_bytes
    assert chunked < plain / 3
