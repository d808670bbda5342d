"""gptjax.activations: GELU's closed-form backward gives autodiff's gradient."""

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.activations import gelu_tanh


def test_gelu_closed_form_equals_autodiff():
    a = jnp.concatenate([jnp.linspace(-8.0, 8.0, 401), jax.random.normal(jax.random.key(0), (99,))])
    g = jax.random.normal(jax.random.key(1), a.shape)
    np.testing.assert_array_equal(gelu_tanh(a), jax.nn.gelu(a, approximate=True))
    # Gradients are O(1); where 1 + tanh(u) cancels (a < -4) tanh's rounding leaves ~1e-5.
    want = jax.grad(lambda a: jnp.sum(jax.nn.gelu(a, approximate=True) * g))(a)
    got = jax.grad(lambda a: jnp.sum(gelu_tanh(a) * g))(a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-5)
    # Under jit too, where the recomputed tanh could be merged with the forward's.
    got_jit = jax.jit(jax.grad(lambda a: jnp.sum(gelu_tanh(a) * g)))(a)
    np.testing.assert_allclose(got_jit, want, rtol=1e-5, atol=5e-5)
