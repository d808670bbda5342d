"""Vocabulary checks and statistics that hold for any tokenizer."""

import numpy as np

from gptjax.errors import DataError


def check_vocab(tokenizer_vocab: int, model_vocab: int) -> None:
    """Refuse a model whose embedding table is smaller than the tokenizer's vocabulary.

    A larger model vocab is fine (padded up, e.g. to a multiple of 128 for speed); a smaller
    one would silently clamp out-of-range ids in the embedding lookup.
    """
    if model_vocab < tokenizer_vocab:
        raise DataError(
            f"model vocab_size={model_vocab} is smaller than the tokenizer's {tokenizer_vocab} "
            f"pieces; set the model's vocab_size to at least {tokenizer_vocab} (e.g. "
            f"{-(-tokenizer_vocab // 128) * 128}, the next multiple of 128) or use a tokenizer "
            "with fewer pieces"
        )


def unigram_entropy(token_ids: np.ndarray) -> float:
    """Entropy of the token frequency distribution, nats per token.

    The loss a model reaches by predicting token frequencies alone, ignoring context: a
    validation loss near it means the model has learned nothing beyond unigram statistics.
    """
    ids = np.asarray(token_ids).ravel()
    if ids.size == 0:
        raise DataError("unigram_entropy needs at least one token; the stream is empty")
    _, counts = np.unique(ids, return_counts=True)
    return unigram_entropy_from_counts(counts)


def unigram_entropy_from_counts(counts: np.ndarray) -> float:
    """`unigram_entropy` of a stream given how often each id occurs in it (zeros allowed)."""
    counts = np.asarray(counts)
    counts = counts[counts > 0]
    if counts.size == 0:
        raise DataError("unigram_entropy needs at least one token; the stream is empty")
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())
