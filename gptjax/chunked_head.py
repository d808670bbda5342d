"""A chunked output head and cross-entropy: the [B, L, V] logits never exist at once.

With `model.head_chunk_len = C > 0` the loss reads the final hidden states [B, L, D] and the
head [D, V] and walks the sequence in L/C chunks of C positions (every row of the batch in each
chunk, so a chunk stays split over the data-parallel devices like the batch). Per chunk it
forms the [B, C, V] logits, keeps only what the loss needs per token (log-sum-exp, the target's
logit, whether it is the largest) and drops them. The backward pass (a `jax.custom_vjp`)
recomputes each chunk's logits from the saved log-sum-exp and forms the chunk's gradient
(softmax - one-hot) · g there and then: dx for the chunk and its share of dW, summed into one
[D, V] accumulator. Peak memory for the head drops from ~2·B·L·V·4 bytes to ~2·B·C·V·4, at the
price of one more head matmul (the recomputation) — the technique of Liger's fused linear
cross-entropy and MaxText's vocabulary tiling.

Both objectives use it: next-token cross-entropy (pretrain, SFT: weighted sums) and DPO (per
answer log-probability sums), through `token_nll`, which returns per-token values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gptjax.errors import ConfigError
from gptjax.model import constrain

Array = jax.Array


def _chunks(x_BL: Array, chunk_len: int) -> Array:
    """[B, L, ...] -> [L/C, B, C, ...]: the scan walks the sequence, each step every row."""
    B, L = x_BL.shape[:2]
    x = x_BL.reshape(B, L // chunk_len, chunk_len, *x_BL.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def _unchunk(x_nBC: Array) -> Array:
    """The inverse of `_chunks`."""
    n, B, C = x_nBC.shape[:3]
    return jnp.moveaxis(x_nBC, 0, 1).reshape(B, n * C, *x_nBC.shape[3:])


def _chunk_logits(x_BCD: Array, head_DV: Array) -> Array:
    logits_BCV = jnp.einsum("BLD,DV->BLV", x_BCD, head_DV)
    return constrain(logits_BCV, ("batch", "length", "act_vocab"))


def _forward(x_BLD, head_DV, targets_BL, chunk_len):
    """Per token: log-sum-exp, negative log-likelihood and target-is-top, chunk by chunk."""

    def body(_, xs):
        x_BCD, t_BC = xs
        logits_BCV = _chunk_logits(x_BCD, head_DV)
        lse_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
        target_BC = jnp.take_along_axis(logits_BCV, t_BC[..., None], axis=-1)[..., 0]
        # As gptjax.steps.loss_terms: correct when the target's logit is the largest (ties too).
        correct_BC = (target_BC >= jnp.max(logits_BCV, axis=-1)).astype(jnp.float32)
        return None, (lse_BC, lse_BC - target_BC, correct_BC)

    xs = (_chunks(x_BLD, chunk_len), _chunks(targets_BL, chunk_len))
    _, (lse, nll, correct) = jax.lax.scan(body, None, xs)
    return _unchunk(lse), _unchunk(nll), _unchunk(correct)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _token_nll(x_BLD, head_DV, targets_BL, chunk_len):
    _, nll_BL, correct_BL = _forward(x_BLD, head_DV, targets_BL, chunk_len)
    return nll_BL, correct_BL


def _token_nll_fwd(x_BLD, head_DV, targets_BL, chunk_len):
    lse_BL, nll_BL, correct_BL = _forward(x_BLD, head_DV, targets_BL, chunk_len)
    # Residuals are O(B·L·D + D·V): the inputs and one float per token, never the logits.
    return (nll_BL, correct_BL), (x_BLD, head_DV, targets_BL, lse_BL)


def _token_nll_bwd(chunk_len, residuals, cotangents):
    x_BLD, head_DV, targets_BL, lse_BL = residuals
    g_BL, _ = cotangents  # correct_BL is a count: no gradient flows through it
    vocab = jnp.arange(head_DV.shape[1], dtype=targets_BL.dtype)

    def body(dhead_DV, xs):
        x_BCD, t_BC, lse_BC, g_BC = xs
        logits_BCV = _chunk_logits(x_BCD, head_DV)
        # d nll / d logits = softmax - one_hot(target), scaled by the token's cotangent.
        probs_BCV = jnp.exp(logits_BCV - lse_BC[..., None])
        dlogits_BCV = (probs_BCV - (vocab == t_BC[..., None])) * g_BC[..., None]
        dlogits_BCV = constrain(dlogits_BCV, ("batch", "length", "act_vocab"))
        dx_BCD = jnp.einsum("BLV,DV->BLD", dlogits_BCV, head_DV)
        dhead_DV = dhead_DV + jnp.einsum("BLD,BLV->DV", x_BCD, dlogits_BCV)
        return constrain(dhead_DV, ("embed", "vocab")), dx_BCD

    xs = tuple(_chunks(a, chunk_len) for a in (x_BLD, targets_BL, lse_BL, g_BL))
    init = constrain(jnp.zeros_like(head_DV), ("embed", "vocab"))
    dhead_DV, dx = jax.lax.scan(body, init, xs)
    return _unchunk(dx), dhead_DV, None


_token_nll.defvjp(_token_nll_fwd, _token_nll_bwd)


def token_nll(x_BLD: Array, head_DV: Array, targets_BL: Array, chunk_len: int):
    """(negative log-likelihood of each target, 1.0 where its logit is the largest), both
    [B, L] float32, from hidden states and head weights (cast to float32, as the plain head
    computes its logits), `chunk_len` positions at a time. Differentiable in `x_BLD` and
    `head_DV`."""
    L = x_BLD.shape[1]
    if chunk_len <= 0 or L % chunk_len:
        raise ConfigError(
            f"model.head_chunk_len={chunk_len} must be positive and divide the sequence length {L}"
        )
    x_BLD = x_BLD.astype(jnp.float32)
    return _token_nll(x_BLD, head_DV.astype(jnp.float32), targets_BL, chunk_len)


def model_token_nll(model, batch, dropout_key=None, **model_inputs):
    """`token_nll` of a `gptjax.model.Transformer` on a batch: its hidden states, its head
    (tied or not) and `model.config.head_chunk_len`. `model_inputs`: extra arguments of the
    model (DPO's `branch_ids`)."""
    x_BLD = model.hidden(
        batch["inputs"],
        segment_ids=batch["segment_ids"],
        positions=batch["positions"],
        dropout_key=dropout_key,
        **model_inputs,
    )
    return token_nll(x_BLD, model.head_weights(), batch["targets"], model.config.head_chunk_len)
