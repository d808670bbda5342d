"""LayerNorm and RMSNorm over the last axis with a closed-form backward (a `jax.custom_vjp`).

Autodiff of the norm keeps the centred input and the normalised input as residuals and
writes each as a full [B, L, D] tensor in the forward pass, then runs its backward as a chain
of elementwise and reduction passes, each reading and writing [B, L, D]. Written by hand, the
forward keeps only per-row statistics (mean and 1/std, [B, L, 1]) beside its input, and the
backward is two row reductions and one elementwise pass:

    x̂ = (x - μ)·r,   r = 1/sqrt(mean((x - μ)²) + ε)       (μ = 0 for RMSNorm)
    g = dy·scale
    dx = r·(g - mean(g) - x̂·mean(g·x̂))                    (no mean(g) term for RMSNorm)
    dscale = Σ dy·x̂,  dbias = Σ dy                         (sums over every row)

The forward is the same arithmetic as `gptjax.model.Norm`'s; gradients agree to float32
rounding. Inputs are float32 (the model normalises in float32 whatever its compute dtype).
"""

from __future__ import annotations

import functools

import jax

Array = jax.Array
BACKWARDS = ("autodiff", "closed_form")  # model.norm_backward: autodiff's or this module's


def normalize(x: Array, scale: Array, bias: Array | None, eps: float) -> Array:
    """LayerNorm (bias given) or RMSNorm (bias None) of x's last axis, closed-form backward."""
    if bias is None:
        return _rms_norm(x, scale, eps)
    return _layer_norm(x, scale, bias, eps)


def _statistics(x: Array, eps: float) -> tuple[Array, Array]:
    """(mean, 1/std) of each row, [..., 1], in two passes as `gptjax.model.Norm` computes them."""
    mean = x.mean(-1, keepdims=True)
    return mean, _rstd(x - mean, eps)


def _rstd(centred_x: Array, eps: float) -> Array:
    return jax.lax.rsqrt((centred_x * centred_x).mean(-1, keepdims=True) + eps)


def _input_gradient(g: Array, x_hat: Array, rstd: Array, centred: bool) -> Array:
    projection = x_hat * (g * x_hat).mean(-1, keepdims=True)
    if centred:
        return rstd * (g - g.mean(-1, keepdims=True) - projection)
    return rstd * (g - projection)


def _row_sum(x: Array) -> Array:
    return x.reshape(-1, x.shape[-1]).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, eps):
    mean, rstd = _statistics(x, eps)
    return (x - mean) * rstd * scale + bias


def _layer_norm_fwd(x, scale, bias, eps):
    mean, rstd = _statistics(x, eps)
    return (x - mean) * rstd * scale + bias, (x, mean, rstd, scale)


def _layer_norm_bwd(eps, residuals, dy):
    # The barrier keeps XLA from reusing the forward's x̂ (it would then write x̂ as a full
    # [B, L, D] tensor in the forward and keep it alive): recomputed here, it fuses into dx.
    x, mean, rstd, scale = jax.lax.optimization_barrier(residuals)
    x_hat = (x - mean) * rstd
    dx = _input_gradient(dy * scale, x_hat, rstd, centred=True)
    return dx, _row_sum(dy * x_hat), _row_sum(dy)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x, scale, eps):
    rstd = _rstd(x, eps)
    return x * rstd * scale


def _rms_norm_fwd(x, scale, eps):
    rstd = _rstd(x, eps)
    return x * rstd * scale, (x, rstd, scale)


def _rms_norm_bwd(eps, residuals, dy):
    x, rstd, scale = jax.lax.optimization_barrier(residuals)  # as in _layer_norm_bwd
    x_hat = x * rstd
    dx = _input_gradient(dy * scale, x_hat, rstd, centred=False)
    return dx, _row_sum(dy * x_hat)


_rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)
