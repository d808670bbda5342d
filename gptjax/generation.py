"""Sampling from a model: prefill once, then one token per step from a KV cache.

Design:
  - Prefill: the prompts, right-padded to one length P, run through `Transformer.decode` at
    positions 0..P-1 in one call. That fills every layer's cache and gives each row its first
    new token from the logits at its own last prompt position (only those are computed).
  - Decode: each step feeds every row's latest token at its own next position (rows advance
    in lockstep but from different starts) and samples the following one.
  - Cache layout: `KVCache` holds k and v as [N layers, B, S slots, G kv heads, K] in the
    compute dtype; slot s of a row is that row's position s. Sharded like the activations:
    batch over (data, fsdp), kv heads over tensor, where they divide. Each layer scatters its
    new slots into the whole cache carried through the layer loop, and the step donates the
    cache, so XLA updates it in place: a step writes B slots per layer and copies nothing.
  - Mask: a query at position p sees slots m <= p. Padding after a short prompt and slots not
    yet written lie beyond p until a decode step overwrites them with real keys, so the same
    mask serves the padded prefill and every step, and nothing is ever erased.
  - Buckets: P rounds up to a power of two (>= 16) and S to a power of two covering the
    longest prompt plus max_new_tokens (both capped at the model's context), so chat turns of
    different lengths re-use the compiled prefill and step. The jitted pair is cached per
    (graphdef, sampling settings); the settings are static, shapes come from the buckets.
  - Repetition: `repetition_penalty` and `no_repeat_ngram_size` (gptjax.repetition_controls, HF's
    semantics) read a [B, S] history of each row's tokens (prompt, then one written per step,
    donated like the cache), so their shapes stay fixed; both off compiles neither.
  - Randomness: step i samples with fold_in(key(seed), i), so a seed reproduces its output.
  - The host reads step i's tokens while step i+1 already runs on the device; stopped rows
    keep decoding (their tokens are dropped) so the batch keeps its compiled shape.

Works with no mesh (single-device params from `nnx.split`) and under a caller's
`jax.set_mesh(mesh)` + logical axis rules with parameters sharded on that mesh.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.errors import ConfigError
from gptjax.model import KVCache, ModelConfig, constrain
from gptjax.repetition_controls import ban_repeated_ngrams, penalize_repeats

_MIN_PROMPT_BUCKET = 16


def sample_next(
    logits_BV: jax.Array, key: jax.Array, temperature: float, top_k: int, top_p: float
) -> jax.Array:
    """One token id per row (int32 [B]).

    temperature 0 is argmax; otherwise logits / temperature, then the top-k filter (0 = off),
    then the nucleus filter (1.0 = off: the smallest set of most probable tokens whose
    probability sums to >= top_p, always at least the top one), then a categorical draw.
    """
    if temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = logits_BV.astype(jnp.float32) / temperature
    if top_k > 0:
        kth_largest_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_largest_B1, -jnp.inf, logits_BV)
    if top_p < 1.0:
        logits_BV = _nucleus(logits_BV, top_p)
    return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def _nucleus(logits_BV: jax.Array, top_p: float) -> jax.Array:
    """Masks every token outside the top-p nucleus to -inf."""
    sorted_BV = -jnp.sort(-logits_BV, axis=-1)  # descending
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    # Probability of the strictly more probable tokens: the i-th is needed while that is < p.
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    kept_B1 = jnp.sum(before_BV < top_p, axis=-1, keepdims=True)  # >= 1: before[0] == 0
    threshold_B1 = jnp.take_along_axis(sorted_BV, kept_B1 - 1, axis=-1)
    return jnp.where(logits_BV < threshold_B1, -jnp.inf, logits_BV)


def generate_stream(
    graphdef,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_ids: Sequence[int] = (),
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> Iterator[list[int | None]]:
    """Yields, once per step, each prompt's new token id (None once its row has stopped).

    A stop id ends its row and is not yielded. The stream ends when every row has stopped or
    `max_new_tokens` were produced. Arguments are checked now, not at the first `next()`.
    `repetition_penalty` (1 = off) divides the positive logits of tokens already in the row
    (prompt included) and multiplies the negative ones; `no_repeat_ngram_size` n (0 = off)
    never lets the row repeat an n-gram it holds. Both act before temperature/top-k/top-p.
    """
    config: ModelConfig = nnx.merge(graphdef, params).config
    _validate(config, prompts, max_new_tokens, temperature, top_k, top_p, stop_ids)
    _validate_repetition(repetition_penalty, no_repeat_ngram_size)
    if temperature == 0.0:
        top_k, top_p = 0, 1.0  # unused by argmax: greedy calls share one compiled pair
    prefill, step = _compiled(
        graphdef,
        float(temperature),
        int(top_k),
        float(top_p),
        float(repetition_penalty),
        int(no_repeat_ngram_size),
    )
    max_new_tokens = int(max_new_tokens)
    lengths = np.array([len(p) for p in prompts], np.int32)
    cache_len = _bucket(int(lengths.max()) + max_new_tokens, config.max_seq_len)
    tokens_BP = np.zeros((len(prompts), _bucket(int(lengths.max()), cache_len)), np.int32)
    for row, prompt in enumerate(prompts):
        tokens_BP[row, : len(prompt)] = prompt
    return _stream(
        params, prefill, step, tokens_BP, lengths, cache_len, max_new_tokens, seed, stop_ids
    )


def generate(
    graphdef,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_ids: Sequence[int] = (),
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> list[list[int]]:
    """Continues each prompt (token ids) by up to `max_new_tokens`; returns only the new ids."""
    outputs: list[list[int]] = [[] for _ in prompts]
    stream = generate_stream(
        graphdef,
        params,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop_ids=stop_ids,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
    )
    for new_ids in stream:
        for row, token in enumerate(new_ids):
            if token is not None:
                outputs[row].append(token)
    return outputs


def _stream(params, prefill, step, tokens_BP, lengths, cache_len, max_new_tokens, seed, stop_ids):
    if max_new_tokens == 0:
        return
    key = jax.random.key(seed)
    lengths_B = jnp.asarray(lengths)
    next_B, cache, history_BS = prefill(params, tokens_BP, lengths_B, key, cache_len=cache_len)
    stops = set(stop_ids)
    done = np.zeros(len(lengths), bool)
    for i in range(max_new_tokens):
        current_B = next_B
        if i + 1 < max_new_tokens:
            # Queued before reading step i's tokens, so the device is busy while the host waits.
            next_B, cache, history_BS = step(
                params, cache, history_BS, current_B, lengths_B, i + 1, key
            )
        new_ids: list[int | None] = []
        for row, token in enumerate(np.asarray(current_B).tolist()):
            if not done[row] and token in stops:
                done[row] = True
            new_ids.append(None if done[row] else token)
        if any(t is not None for t in new_ids):
            yield new_ids
        if done.all():
            return


@functools.lru_cache(maxsize=16)
def _compiled(
    graphdef,
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
    no_repeat_ngram_size: int,
):
    """The jitted (prefill, step) pair for one model and sampling setting."""

    def sample(logits_B1V, history_BS, length_B, key, index):
        logits_BV = logits_B1V[:, 0]
        if repetition_penalty != 1.0:
            logits_BV = penalize_repeats(logits_BV, history_BS, length_B, repetition_penalty)
        if no_repeat_ngram_size > 0:
            logits_BV = ban_repeated_ngrams(logits_BV, history_BS, length_B, no_repeat_ngram_size)
        key = jax.random.fold_in(key, index)
        next_B = sample_next(logits_BV, key, temperature, top_k, top_p)
        # Replicated, so every process of a multi-host mesh can read all rows.
        return constrain(next_B, (None,))

    def prefill(params, tokens_BP, lengths_B, key, cache_len: int):
        model = nnx.merge(graphdef, params)
        batch, prompt_len = tokens_BP.shape
        cache = KVCache.empty(model.config, batch, cache_len)
        start_B = jnp.zeros(batch, jnp.int32)
        logits_B1V, cache = model.decode(tokens_BP, cache, start_B, logits_at_B=lengths_B - 1)
        padding = ((0, 0), (0, cache_len - prompt_len))
        history_BS = jnp.pad(jnp.asarray(tokens_BP, jnp.int32), padding)
        return sample(logits_B1V, history_BS, lengths_B, key, 0), cache, history_BS

    def step(params, cache, history_BS, tokens_B, lengths_B, index, key):
        # Step `index` feeds each row's token number index-1 at position length + index - 1.
        model = nnx.merge(graphdef, params)
        position_B = lengths_B + index - 1
        logits_B1V, cache = model.decode(tokens_B[:, None], cache, position_B)
        history_BS = history_BS.at[jnp.arange(tokens_B.shape[0]), position_B].set(tokens_B)
        return sample(logits_B1V, history_BS, position_B + 1, key, index), cache, history_BS

    return (
        jax.jit(prefill, static_argnames="cache_len"),
        jax.jit(step, donate_argnames=("cache", "history_BS")),
    )


def _bucket(length: int, cap: int) -> int:
    """The next power of two >= length (at least 16), capped at `cap`."""
    return min(cap, max(_MIN_PROMPT_BUCKET, 1 << (length - 1).bit_length()))


def _validate(config, prompts, max_new_tokens, temperature, top_k, top_p, stop_ids) -> None:
    vocab, context = config.vocab_size, config.max_seq_len
    if not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise ConfigError(f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens}")
    if not temperature >= 0:
        raise ConfigError(f"generate: temperature must be >= 0 (0 = greedy), got {temperature}")
    if not isinstance(top_k, numbers.Integral) or not 0 <= top_k <= vocab:
        raise ConfigError(f"generate: top_k must be in [0, {vocab}] (0 = off), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"generate: top_p must be in (0, 1] (1 = off), got {top_p}")
    if len(prompts) == 0:
        raise ConfigError("generate: no prompts given")
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ConfigError(f"generate: prompt {row} is empty; give it at least one token (bos)")
        if len(prompt) + max_new_tokens > context:
            raise ConfigError(
                f"generate: prompt {row} ({len(prompt)} tokens) + max_new_tokens "
                f"({max_new_tokens}) exceeds the model's context of {context} tokens"
            )
        # An out-of-range id would be silently clamped by the embedding lookup.
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ConfigError(f"generate: prompt {row} has token ids outside [0, {vocab})")
    if any(not 0 <= s < vocab for s in stop_ids):
        raise ConfigError(f"generate: stop_ids {list(stop_ids)} must be in [0, {vocab})")


def _validate_repetition(repetition_penalty, no_repeat_ngram_size) -> None:
    if not 0.0 < repetition_penalty < float("inf"):  # also refuses NaN
        raise ConfigError(
            f"generate: repetition_penalty must be a number > 0 (1 = off, > 1 discourages "
            f"repeats), got {repetition_penalty}"
        )
    if not isinstance(no_repeat_ngram_size, numbers.Integral) or no_repeat_ngram_size < 0:
        raise ConfigError(
            f"generate: no_repeat_ngram_size must be an integer >= 0 (0 = off), got "
            f"{no_repeat_ngram_size!r}"
        )
