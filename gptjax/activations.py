"""GPT-2's tanh GELU with a closed-form backward (a `jax.custom_vjp`).

Autodiff of `jax.nn.gelu(a, approximate=True)` keeps tanh(u) as a residual: the forward writes
it as a full [B, L, F] tensor beside the pre-activation a, and the backward reads both. Written
by hand, the backward keeps only a and recomputes tanh(u) in the same elementwise pass that
forms the input gradient:

    gelu(a) = a·Φ,   Φ = (1 + tanh(u)) / 2,   u = c·(a + 0.044715·a³),   c = sqrt(2/π)
    d gelu / da = Φ + a·(1 - tanh(u)²)/2 · c·(1 + 3·0.044715·a²)

The forward is `jax.nn.gelu` itself; the gradient agrees to float32 rounding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array
BACKWARDS = ("autodiff", "closed_form")  # model.gelu_backward: autodiff's or this module's
_CUBIC = 0.044715


@jax.custom_vjp
def gelu_tanh(a: Array) -> Array:
    """`jax.nn.gelu(a, approximate=True)` with the closed-form backward above."""
    return jax.nn.gelu(a, approximate=True)


def _gelu_fwd(a):
    return jax.nn.gelu(a, approximate=True), a


def _gelu_bwd(a, dy):
    # The barrier keeps XLA from reusing the forward's tanh (which it would then write out
    # and keep alive): recomputed here, it fuses into this one pass.
    a = jax.lax.optimization_barrier(a)
    c = math.sqrt(2 / math.pi)
    t = jnp.tanh(c * (a + _CUBIC * a**3))  # as jax.nn.gelu writes it: the same rounding
    slope = 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * c * (1 + 3 * _CUBIC * a * a)
    return (dy * slope,)


gelu_tanh.defvjp(_gelu_fwd, _gelu_bwd)
