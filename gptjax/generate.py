"""Sampling from a trained model: greedy, temperature and top-k.

This first version recomputes the whole (fixed-size, so compiled once) window for every new
token, which is exact and fast enough for the small models trained on CPU; prefill plus a
KV cache is the chat issue's job and will replace `_next_logits` without changing the API.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.errors import ConfigError


def sample_next(logits_BV: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
    """One token per row: argmax when temperature == 0, else top-k filtered sampling."""
    if temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = logits_BV / temperature
    if top_k > 0:
        kth_largest = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_largest, -jnp.inf, logits_BV)
    return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def generate(
    graphdef,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    window: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
    stop_id: int | None = None,
) -> list[list[int]]:
    """Continues each prompt (token ids) by up to `max_new_tokens`; returns only the new ids.

    Prompts may have different lengths; each row decodes at its own position. A row stops at
    `stop_id` (not included in its output).
    """
    lengths = np.array([len(p) for p in prompts])
    if lengths.min() == 0:
        raise ConfigError("generate: every prompt needs at least one token (e.g. the bos id)")
    if lengths.max() + max_new_tokens > window:
        raise ConfigError(
            f"generate: prompt ({lengths.max()} tokens) + max_new_tokens ({max_new_tokens}) "
            f"exceeds the model's window of {window} tokens"
        )
    buffer = np.zeros((len(prompts), window), np.int32)
    for row, prompt in enumerate(prompts):
        buffer[row, : len(prompt)] = prompt

    @jax.jit
    def step(params, tokens_BL, cursor_B, key):
        logits_BLV = nnx.merge(graphdef, params)(tokens_BL)
        last_BV = jnp.take_along_axis(logits_BLV, cursor_B[:, None, None] - 1, axis=1)[:, 0]
        next_B = sample_next(last_BV, key, temperature, top_k)
        return tokens_BL.at[jnp.arange(tokens_BL.shape[0]), cursor_B].set(next_B), next_B

    tokens, cursor = jnp.asarray(buffer), jnp.asarray(lengths, jnp.int32)
    outputs: list[list[int]] = [[] for _ in prompts]
    done = np.zeros(len(prompts), bool)
    base_key = jax.random.key(seed)
    for i in range(max_new_tokens):
        tokens, next_ids = step(params, tokens, cursor, jax.random.fold_in(base_key, i))
        cursor = cursor + 1
        for row, token in enumerate(np.asarray(next_ids)):
            if done[row]:
                continue
            if stop_id is not None and token == stop_id:
                done[row] = True
            else:
                outputs[row].append(int(token))
        if done.all():
            break
    return outputs
