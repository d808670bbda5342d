"""gptjax.projection: the "smaller_copy" backward gives the einsum's values and gradients, and
orders each weight gradient's product so that XLA copies less."""

import collections
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax import ModelConfig, Transformer
from gptjax.projection import dense

# (spec, x shape, w shape): every projection layout the model uses, both orders of the product.
SPECS = [
    ("BLD,DF->BLF", (2, 8, 4), (4, 16)),  # wide output (MLP up): dW = x^T·dy directly
    ("BLF,FD->BLD", (2, 8, 16), (16, 4)),  # wide input (MLP down): (dy^T·x)^T
    ("BLD,DHK->BLHK", (2, 8, 6), (6, 3, 2)),  # q/k/v: several out dims
    ("BLHK,HKD->BLD", (2, 8, 3, 2), (3, 2, 6)),  # attention output: several in dims
]


def _value_and_grads(spec, backward, x, w, g):
    def loss(x, w):
        return jnp.sum(dense(spec, x, w, backward) * g)

    return jax.value_and_grad(loss, argnums=(0, 1))(x, w)


@pytest.mark.parametrize("spec, x_shape, w_shape", SPECS, ids=[s[0] for s in SPECS])
def test_smaller_copy_equals_the_einsum(spec, x_shape, w_shape):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
    y = jnp.einsum(spec, x, w)
    g = jax.random.normal(kg, y.shape)
    np.testing.assert_allclose(dense(spec, x, w, "smaller_copy"), y, rtol=1e-6)
    plain_loss, plain_grads = _value_and_grads(spec, "autodiff", x, w, g)
    loss, grads = _value_and_grads(spec, "smaller_copy", x, w, g)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for got, want in zip(grads, plain_grads, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _transposes_in_backward(spec, x_shape, w_shape):
    x, w = jnp.ones(x_shape), jnp.ones(w_shape)
    jaxpr = jax.make_jaxpr(jax.grad(lambda w: dense(spec, x, w, "smaller_copy").sum()))(w)
    return [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "transpose"]


def test_the_order_follows_the_sizes():
    """MLP up's dW is x^T·dy in the weight's layout (no transpose); down's is formed as dy^T·x
    and transposed: copying its [B·L, F] input would cost more than the small [F, D] result."""
    assert _transposes_in_backward("BLD,DF->BLF", (2, 8, 4), (4, 16)) == []
    assert len(_transposes_in_backward("BLF,FD->BLD", (2, 8, 16), (16, 4))) == 1


def test_a_spec_that_is_not_a_projection_is_refused():
    with pytest.raises(ValueError, match="not a projection"):
        dense("BLD,FD->BLF", jnp.ones((1, 2, 3)), jnp.ones((4, 3)), "smaller_copy")


SMALL = dict(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_seq_len=16)


def _loss_and_grads(config):
    graphdef, state = nnx.split(Transformer(config, rngs=nnx.Rngs(0)))
    x = jax.random.randint(jax.random.key(1), (2, 16), 0, 64, jnp.int32)

    def loss(s):
        return jnp.mean(jax.nn.log_softmax(nnx.merge(graphdef, s)(x)) ** 2)

    return jax.jit(jax.value_and_grad(loss))(state)


# Multi-second compiles: the slow tier. The fast sibling is tests/test_norms.py's whole-model
# test with both backward options (GPT-2) and tests/test_train_step.py's sharded-mesh one.
@pytest.mark.slow
@pytest.mark.parametrize(
    "family, runtime",
    [("gpt2", dict(remat="dots", num_layers=1)), ("llama", dict(num_kv_heads=2, num_layers=1))],
    ids=["gpt2-remat-dots", "llama-gqa"],
)
def test_model_gradients_equal_the_autodiff_path(family, runtime):
    """The whole model (tied head, GQA, untied Llama head, remat) with the ordered backward."""
    make = getattr(ModelConfig, family)
    plain_loss, plain_grads = _loss_and_grads(make(**(SMALL | runtime)))
    loss, grads = _loss_and_grads(make(**(SMALL | runtime), projection_backward="smaller_copy"))
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def _copied_bytes(backward: str) -> dict[str, int]:
    """Bytes by shape that the compiled weight gradients of an MLP up projection [D, F] and a
    tied output head [V, D] write transposed, as a copy or from the fusion that computes them
    (tools/hlo_copies.py's census)."""
    path = Path(__file__).resolve().parent.parent / "tools" / "hlo_copies.py"
    spec = importlib.util.spec_from_file_location("hlo_copies", path)
    hlo_copies = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hlo_copies)

    def loss(weights, x):
        up_DF, embed_VD = weights
        h = dense("BLD,DF->BLF", x, up_DF, backward)
        logits = dense("BLD,DV->BLV", x, embed_VD.T, backward)
        return jnp.sum(h * h) + jnp.sum(jax.nn.logsumexp(logits, axis=-1))

    weights = (jnp.ones((32, 256)), jnp.ones((2048, 32)))
    x = jnp.ones((4, 64, 32))  # B·L = 256 rows of D = 32
    hlo = jax.jit(jax.grad(loss)).lower(weights, x).compile().as_text()
    copied = collections.Counter()
    for row in hlo_copies.copies(hlo):
        copied[row["shape"]] += row["bytes"]
    return copied


def test_the_compiled_gradient_copies_the_small_operand():
    """What the option is for: XLA:CPU copies a matmul operand into its canonical layout. With
    "autodiff" the weight gradients copy the wide ones, dh [F, B·L] and the logits gradient
    [V, B·L]; "smaller_copy" copies x [D, B·L] instead."""
    plain, ordered = _copied_bytes("autodiff"), _copied_bytes("smaller_copy")
    wide = ("f32[256,256]", "f32[2048,256]")  # [F, B·L] and [V, B·L]
    assert all(plain[shape] > 0 for shape in wide), plain
    assert all(ordered[shape] == 0 for shape in wide), ordered
    assert sum(ordered.values()) < sum(plain.values()) / 4
