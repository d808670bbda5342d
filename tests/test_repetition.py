import pytest

from gptjax.errors import ConfigError
from gptjax.inference.repetition import repeats_ngram, repetition_rate


def test_a_trigram_three_times_is_repetition_twice_is_not():
    assert repeats_ngram([1, 2, 3, 1, 2, 3, 1, 2, 3])
    assert not repeats_ngram([1, 2, 3, 1, 2, 3, 4])
    assert not repeats_ngram([1, 2, 3, 4, 5, 6, 7, 8, 9])


def test_overlapping_occurrences_count():
    # One token five times holds the trigram (7, 7, 7) three times, overlapping.
    assert repeats_ngram([7, 7, 7, 7, 7])
    assert not repeats_ngram([7, 7, 7, 7])
    assert not repeats_ngram([])
    assert not repeats_ngram([5, 5])


def test_scattered_repeats_count_too():
    assert repeats_ngram([1, 2, 3, 9, 1, 2, 3, 8, 8, 1, 2, 3])


def test_rate_is_the_share_of_answers():
    answers = [[1, 2, 3] * 3, [4, 5, 6, 7], [8] * 6, [1, 2, 3, 1, 2, 3]]
    assert repetition_rate(answers) == 0.5
    assert repetition_rate([]) == 0.0
    assert repetition_rate(answers, times=2) == 0.75
    assert repetition_rate(answers, n=4, times=2) == 0.5  # the last holds no 4-gram twice


def test_nonsense_settings_are_refused():
    with pytest.raises(ConfigError):
        repeats_ngram([1, 2, 3], n=0)
    with pytest.raises(ConfigError):
        repeats_ngram([1, 2, 3], times=1)
