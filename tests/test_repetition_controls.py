"""Repetition penalty and no-repeat n-grams: each transform equals a numpy reference and
Hugging Face's own logits processor, greedy decoding with them equals a naive loop of full
forwards through the reference, and generated sequences never repeat a banned n-gram."""

import jax.numpy as jnp
import numpy as np
import pytest
from test_generation import CONTEXT, PROMPTS, full_forward, split_model

from gptjax import ConfigError
from gptjax.generation import generate, generate_stream
from gptjax.repetition_controls import ban_repeated_ngrams, penalize_repeats

VOCAB = 12


def reference_penalty(logits, sequence, penalty):
    """CTRL/HF: a token in the sequence has its logit divided by penalty if > 0, else times."""
    out = np.array(logits, np.float32)
    for token in set(sequence):
        out[token] = out[token] / penalty if out[token] > 0 else out[token] * penalty
    return out


def reference_ngram_ban(logits, sequence, n):
    """HF's rule: a token that completes an n-gram already in the sequence gets -inf."""
    out = np.array(logits, np.float32)
    if len(sequence) < n:
        return out
    suffix = tuple(sequence[len(sequence) - n + 1 :])
    for start in range(len(sequence) - n + 1):
        if tuple(sequence[start : start + n - 1]) == suffix:
            out[sequence[start + n - 1]] = -np.inf
    return out


def random_rows(seed, batch=6, slots=20):
    """Short-vocabulary histories (so n-grams recur), lengths from 0 to all slots, and logits
    of both signs; the slots past each length hold junk that must be ignored."""
    rng = np.random.default_rng(seed)
    history = rng.integers(0, 2, (batch, slots)).astype(np.int32)
    history[:, ::5] = rng.integers(0, VOCAB, (batch, (slots + 4) // 5))
    lengths = np.array([0, 1, 2, 7, 13, slots][:batch], np.int32)
    logits = rng.normal(0, 2, (batch, VOCAB)).astype(np.float32)
    return logits, history, lengths


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_the_reference_and_hugging_face(penalty):
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    hf = RepetitionPenaltyLogitsProcessor(penalty)
    for seed in range(3):
        logits, history, lengths = random_rows(seed)
        got = np.asarray(penalize_repeats(jnp.asarray(logits), history, lengths, penalty))
        for row, length in enumerate(lengths):
            sequence = history[row, :length].tolist()
            want = reference_penalty(logits[row], sequence, penalty)
            np.testing.assert_allclose(got[row], want, rtol=1e-6)
            if length:  # HF's processor needs at least one token
                ids = torch.tensor([sequence])
                hf_out = hf(ids, torch.tensor(logits[row : row + 1]))[0].numpy()
                np.testing.assert_allclose(got[row], hf_out, rtol=1e-6)
        assert not np.array_equal(got, logits)  # the test rows do hold repeats


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_ban_equals_the_reference_and_hugging_face(n):
    import torch
    from transformers import NoRepeatNGramLogitsProcessor

    hf = NoRepeatNGramLogitsProcessor(n)
    banned_somewhere = False
    for seed in range(3):
        logits, history, lengths = random_rows(seed)
        got = np.asarray(ban_repeated_ngrams(jnp.asarray(logits), history, lengths, n))
        for row, length in enumerate(lengths):
            sequence = history[row, :length].tolist()
            want = reference_ngram_ban(logits[row], sequence, n)
            np.testing.assert_array_equal(got[row], want)
            banned_somewhere |= bool(np.isinf(want).any())
            if length:
                ids = torch.tensor([sequence])
                hf_out = hf(ids, torch.tensor(logits[row : row + 1]))[0].numpy()
                np.testing.assert_array_equal(got[row], hf_out)
    assert banned_somewhere


def naive_greedy_with(graphdef, params, prompts, max_new_tokens, penalty, n):
    """argmax of full forwards, each logit row passed through the numpy references."""
    sequences = [list(p) for p in prompts]
    for _ in range(max_new_tokens):
        padded = np.zeros((len(prompts), CONTEXT), np.int32)
        for row, sequence in enumerate(sequences):
            padded[row, : len(sequence)] = sequence
        logits = np.asarray(full_forward(graphdef)(params, padded))
        for row, sequence in enumerate(sequences):
            scores = reference_penalty(logits[row, len(sequence) - 1], sequence, penalty)
            scores = reference_ngram_ban(scores, sequence, n) if n else scores
            sequence.append(int(np.argmax(scores)))
    return [s[len(p) :] for s, p in zip(sequences, prompts, strict=True)]


@pytest.mark.parametrize("penalty, n", [(1.5, 0), (1.3, 2)])
def test_greedy_with_repetition_controls_equals_a_naive_loop(penalty, n):
    """The decode loop's history (prompt, padding, one token written per step) is what the
    transforms see: greedy ids equal full forwards through the references, and differ from
    plain greedy."""
    graphdef, params = split_model("llama")
    settings = dict(max_new_tokens=12, repetition_penalty=penalty, no_repeat_ngram_size=n)
    got = generate(graphdef, params, PROMPTS, **settings)
    assert got == naive_greedy_with(graphdef, params, PROMPTS, 12, penalty, n)
    assert got != generate(graphdef, params, PROMPTS, max_new_tokens=12)


def ngrams(sequence, n):
    return [tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)]


@pytest.mark.parametrize("temperature, n", [(0.0, 3), (1.0, 2)])
def test_generated_sequences_never_repeat_an_ngram(temperature, n):
    graphdef, params = split_model("gpt2")
    # Prompts that already repeat themselves: the model's continuation tends to go on.
    prompts = [[5, 9, 5, 9, 5], [7, 1, 8, 7, 1], [11], [3, 3, 3]]
    if temperature == 0.0:
        plain = generate(graphdef, params, prompts, max_new_tokens=16)
        sequences = [p + o for p, o in zip(prompts, plain, strict=True)]
        assert any(len(set(ngrams(s, n))) < len(ngrams(s, n)) for s in sequences)
    outs = generate(
        graphdef,
        params,
        prompts,
        max_new_tokens=16,
        temperature=temperature,
        top_k=20,
        no_repeat_ngram_size=n,
    )
    for prompt, out in zip(prompts, outs, strict=True):
        assert len(out) == 16
        # A prompt may repeat itself; no n-gram that ends in a new token is seen twice.
        sequence = prompt + out
        grams = ngrams(sequence, n)
        for i in range(max(0, len(prompt) - n + 1), len(grams)):
            assert grams[i] not in grams[:i], (n, sequence)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(repetition_penalty=0.0), "repetition_penalty must be a number > 0"),
        (dict(repetition_penalty=-1.2), "repetition_penalty"),
        (dict(repetition_penalty=float("nan")), "repetition_penalty"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an integer >= 0"),
        (dict(no_repeat_ngram_size=2.5), "no_repeat_ngram_size"),
    ],
)
def test_bad_repetition_settings_raise_one_clear_config_error(kwargs, message):
    graphdef, params = split_model("gpt2")
    with pytest.raises(ConfigError, match=message):
        generate_stream(graphdef, params, [[1, 2]], max_new_tokens=4, **kwargs)
