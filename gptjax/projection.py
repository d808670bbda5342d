"""Dense projections whose weight gradient's product is ordered for the compiler.

`dense(spec, x, w, backward)` is `jnp.einsum(spec, x, w)` for a spec
"<lead><in>,<in><out>-><lead><out>": a weight stored as [in dims..., out dims...], as every
projection of the model is (q/k/v [D, H, K], o [H, K, D], MLP up [D, F] and down [F, D], the
output head [D, V]). The forward is the same contraction either way; `backward` changes only
how the weight gradient is written for the compiler:

  "autodiff"        the einsum and JAX's transpose rule: dW comes out of dot_general(dy, x) as
                    [out, in] and is transposed, so XLA's canonical matmul form ([M, K]·[K, N])
                    first copies dy into [out, B·L] (for the tied output head that is the
                    [V, B·L] logits gradient, 32 MiB per device on configs/nanogpt_cpu.py).
  "smaller_copy"    per projection, whichever of the two orders makes XLA copy fewer bytes:
                    dot_general(x, dy) gives [in, out] directly after copying x into [in, B·L]
                    (B·L·in elements); dot_general(dy, x) copies dy (B·L·out) and transposes
                    the [out, in] result (in·out). A wide output (MLP up, the head) takes the
                    first, a wide input (MLP down) the second.

The input gradient dot_general(dy, w) contracts the weight's out dims in both modes. The numbers
are the same products summed in another order: equal to float32 rounding.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array
BACKWARDS = ("autodiff", "smaller_copy")
Backward = Literal[BACKWARDS]


def dense(spec: str, x: Array, w: Array, backward: Backward = "autodiff") -> Array:
    """`jnp.einsum(spec, x, w)` for a projection spec "<lead><in>,<in><out>-><lead><out>"
    (e.g. "BLD,DF->BLF"), its weight gradient ordered as `backward` says."""
    if backward == "autodiff":
        return jnp.einsum(spec, x, w)
    if backward == "smaller_copy":
        return _ordered_projection(x, w, _inputs_of(spec))
    raise ValueError(f"unknown projection backward {backward!r}; choose from {BACKWARDS}")


@functools.cache
def _inputs_of(spec: str) -> int:
    """How many trailing dims of x the spec contracts (they must lead w, in the same order)."""
    operands, out = spec.replace(" ", "").split("->")
    x_dims, w_dims = operands.split(",")
    n_in = len(set(x_dims) & set(w_dims))
    lead, inputs, outputs = (
        x_dims[: len(x_dims) - n_in],
        x_dims[len(x_dims) - n_in :],
        w_dims[n_in:],
    )
    if not w_dims.startswith(inputs) or out != lead + outputs:
        raise ValueError(f"{spec!r} is not a projection '<lead><in>,<in><out>-><lead><out>'")
    return n_in


def _forward(x: Array, w: Array, n_in: int) -> Array:
    n_lead = x.ndim - n_in
    contract = (tuple(range(n_lead, x.ndim)), tuple(range(n_in)))
    return jax.lax.dot_general(x, w, (contract, ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _ordered_projection(x: Array, w: Array, n_in: int) -> Array:
    return _forward(x, w, n_in)


def _ordered_fwd(x, w, n_in):
    return _forward(x, w, n_in), (x, w)


def _ordered_bwd(n_in, residuals, dy):
    x, w = residuals
    n_lead, n_out = x.ndim - n_in, w.ndim - n_in
    lead = tuple(range(n_lead))
    # dx: dy's out dims against w's out dims -> [*lead, *in], already x's layout.
    dx = jax.lax.dot_general(
        dy, w, ((tuple(range(n_lead, dy.ndim)), tuple(range(n_in, w.ndim))), ((), ()))
    )
    rows = math.prod(x.shape[:n_lead])
    in_size, out_size = math.prod(w.shape[:n_in]), math.prod(w.shape[n_in:])
    if rows * in_size <= rows * out_size + in_size * out_size:
        dw = jax.lax.dot_general(x, dy, ((lead, lead), ((), ())))  # [*in, *out]
    else:
        dw_t = jax.lax.dot_general(dy, x, ((lead, lead), ((), ())))  # [*out, *in]
        dw = jnp.transpose(dw_t, (*range(n_out, n_out + n_in), *range(n_out)))
    return dx, dw


_ordered_projection.defvjp(_ordered_fwd, _ordered_bwd)
