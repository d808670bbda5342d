"""BLEU equals sacrebleu's default corpus BLEU; exact match normalises whitespace only."""

import random

import pytest
import sacrebleu

from gptjax.errors import ConfigError
from gptjax.inference.bleu import corpus_bleu, exact_match, tokenize_13a

WORDS = 'the cat sat on a mat . dog ran fast , 3.5 - 10-20 json.dumps ( ) " & ? !'.split()


def _sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


def test_tokenizer_matches_sacrebleu_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    theirs = Tokenizer13a()
    for text in ["Hello, world.", "It costs 3.50-4.00 dollars (approx.)", "a&amp;b &lt;c&gt;", ""]:
        assert tokenize_13a(text) == theirs(text).split()


@pytest.mark.parametrize("seed", range(6))
def test_corpus_bleu_equals_sacrebleu(seed):
    rng = random.Random(seed)
    refs = [_sentence(rng, rng.randint(1, 15)) for _ in range(20)]
    # Hypotheses: partly copied, partly random, some shorter (brevity penalty), some empty.
    hyps = []
    for ref in refs:
        words = ref.split()
        kind = rng.random()
        if kind < 0.3:
            hyps.append(ref)
        elif kind < 0.6:
            hyps.append(" ".join(words[: max(1, len(words) // 2)]))
        elif kind < 0.9:
            hyps.append(_sentence(rng, rng.randint(1, 12)))
        else:
            hyps.append("")
    expected = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert corpus_bleu(hyps, refs) == pytest.approx(expected, abs=1e-9)


def test_bleu_edge_cases_match_sacrebleu():
    cases = [
        (["the cat"], ["the cat sat on the mat"]),  # no 3- or 4-grams at all
        (["dog"], ["cat"]),  # nothing matches
        (["the cat sat on the mat"], ["the cat sat on the mat"]),  # perfect
    ]
    for hyps, refs in cases:
        expected = sacrebleu.corpus_bleu(hyps, [refs]).score
        assert corpus_bleu(hyps, refs) == pytest.approx(expected, abs=1e-9)
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(
        100.0
    )


def test_exact_match_and_length_mismatch():
    assert exact_match(["a  b ", "c"], ["a b", "d"]) == 0.5
    assert exact_match(["A"], ["a"]) == 0.0  # case-sensitive, like BLEU
    with pytest.raises(ConfigError):
        corpus_bleu(["a"], [])
    with pytest.raises(ConfigError):
        exact_match(["a"], ["a", "b"])
