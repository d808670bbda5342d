"""gptjax.norms: the closed-form backward gives autodiff's values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax import ModelConfig, Transformer
from gptjax.model import Norm


def _norm(kind: str, backward: str) -> Norm:
    config = ModelConfig.gpt2(
        vocab_size=8, num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32, max_seq_len=8,
        norm=kind, norm_backward=backward,
    )  # fmt: skip
    norm = Norm(config, rngs=nnx.Rngs(0))
    keys = jax.random.split(jax.random.key(1), 2)
    norm.scale[...] = 1.0 + 0.1 * jax.random.normal(keys[0], (16,))
    if norm.bias is not None:
        norm.bias[...] = 0.1 * jax.random.normal(keys[1], (16,))
    return norm


def _value_and_grads(norm: Norm, x, g):
    graphdef, state = nnx.split(norm)

    def loss(state, x):
        return jnp.sum(nnx.merge(graphdef, state)(x) * g)

    return jax.value_and_grad(loss, argnums=(0, 1))(state, x)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_closed_form_equals_autodiff(kind):
    kx, kg = jax.random.split(jax.random.key(2))
    # An offset and spread per row, so the mean and variance terms of the gradient both matter.
    x = 3.0 + 2.0 * jax.random.normal(kx, (2, 8, 16))
    g = jax.random.normal(kg, x.shape)
    plain_loss, (plain_state, plain_dx) = _value_and_grads(_norm(kind, "autodiff"), x, g)
    loss, (state, dx) = _value_and_grads(_norm(kind, "closed_form"), x, g)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    np.testing.assert_allclose(dx, plain_dx, rtol=1e-4, atol=1e-5)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(plain_state), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(jax.tree.leaves(state)) == (2 if kind == "layernorm" else 1)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_bfloat16_inputs_come_back_in_bfloat16(kind):
    x = jnp.ones((1, 2, 16), jnp.bfloat16) + jnp.arange(16, dtype=jnp.bfloat16)
    y = _norm(kind, "closed_form")(x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        y.astype(jnp.float32), _norm(kind, "autodiff")(x).astype(jnp.float32), rtol=1e-2
    )


def test_model_with_both_backward_options_equals_the_plain_model():
    """Closed-form norms and ordered projections together: the plain model's loss and grads."""
    small = dict(vocab_size=64, num_layers=1, num_heads=4, embed_dim=32, mlp_dim=64, max_seq_len=16)
    x = jax.random.randint(jax.random.key(1), (2, 16), 0, 64, jnp.int32)

    def loss_and_grads(config):
        graphdef, state = nnx.split(Transformer(config, rngs=nnx.Rngs(0)))
        loss = lambda s: jnp.mean(jax.nn.log_softmax(nnx.merge(graphdef, s)(x)) ** 2)
        return jax.jit(jax.value_and_grad(loss))(state)

    plain_loss, plain_grads = loss_and_grads(ModelConfig.gpt2(**small))
    fast = dict(norm_backward="closed_form", projection_backward="smaller_copy")
    loss, grads = loss_and_grads(ModelConfig.gpt2(**small, **fast))
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
