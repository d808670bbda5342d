"""Logit transforms against repetition, as Hugging Face's `repetition_penalty` and
`no_repeat_ngram_size` define them, in fixed shapes for the jitted decode step.

Both read the row's whole sequence so far (prompt and generated tokens) from `history_BS`:
slot s holds the token at position s, and only the first `length_B` slots are real (the rest
are prompt padding or slots not generated yet, whatever they hold). They run on the raw
logits, before temperature, top-k and top-p, as in HF's `generate`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _present_BV(history_BS: jax.Array, length_B: jax.Array, vocab: int) -> jax.Array:
    """Whether each vocabulary id occurs in the row's first `length` tokens (bool [B, V])."""
    batch, slots = history_BS.shape
    real_BS = jnp.arange(slots)[None, :] < length_B[:, None]
    rows_BS = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, slots))
    return jnp.zeros((batch, vocab), bool).at[rows_BS, history_BS].max(real_BS)


def penalize_repeats(
    logits_BV: jax.Array, history_BS: jax.Array, length_B: jax.Array, penalty: float
) -> jax.Array:
    """CTRL's repetition penalty: the logit of every token already in the sequence is divided
    by `penalty` where positive and multiplied by it where negative (> 1 discourages)."""
    seen_BV = _present_BV(history_BS, length_B, logits_BV.shape[-1])
    logits_BV = logits_BV.astype(jnp.float32)
    penalized_BV = jnp.where(logits_BV > 0, logits_BV / penalty, logits_BV * penalty)
    return jnp.where(seen_BV, penalized_BV, logits_BV)


def ban_repeated_ngrams(
    logits_BV: jax.Array, history_BS: jax.Array, length_B: jax.Array, n: int
) -> jax.Array:
    """-inf for every token that would complete an n-gram already in the row's sequence.

    The row's last n-1 tokens are compared with the first n-1 tokens of every window of n
    slots (static slices, so one fused compare over [B, S]); a window that matches and lies
    wholly inside the sequence bans its n-th token. n = 1 bans every token seen.
    """
    batch, slots = history_BS.shape
    windows = slots - n + 1
    if windows <= 0:
        return logits_BV
    rows_B1 = jnp.arange(batch)[:, None]
    match_BW = jnp.ones((batch, windows), bool)
    for k in range(n - 1):
        # The row's k-th token of its last n-1, at position length - (n - 1) + k.
        suffix_B1 = history_BS[rows_B1, jnp.maximum(length_B - (n - 1) + k, 0)[:, None]]
        match_BW &= history_BS[:, k : k + windows] == suffix_B1
    # Window j spans positions j .. j+n-1, all of which must be real tokens: j <= length - n.
    match_BW &= jnp.arange(windows)[None, :] <= (length_B - n)[:, None]
    completes_BW = history_BS[:, n - 1 : n - 1 + windows]
    rows_BW = jnp.broadcast_to(rows_B1, (batch, windows))
    banned_BV = jnp.zeros(logits_BV.shape, bool).at[rows_BW, completes_BW].max(match_BW)
    return jnp.where(banned_BV, -jnp.inf, logits_BV.astype(jnp.float32))
