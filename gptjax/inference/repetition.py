"""How often generated answers loop: the degenerate repetition greedy decoding falls into.

An answer counts as repetitive when some n-gram of its tokens (3 by default) occurs `times`
times or more (3 by default), overlapping occurrences included: "a b c a b c a b c" repeats
"a b c" three times. Counted on token ids, so it does not depend on how the text detokenizes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gptjax.errors import ConfigError

NGRAM = 3
TIMES = 3


def repeats_ngram(tokens: Sequence[int], *, n: int = NGRAM, times: int = TIMES) -> bool:
    """Whether some n-gram of `tokens` occurs at least `times` times."""
    if n < 1 or times < 2:
        raise ConfigError(f"repeats_ngram: n={n} must be >= 1 and times={times} >= 2")
    tokens = list(tokens)
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return any(count >= times for count in counts.values())


def repetition_rate(
    answers: Sequence[Sequence[int]], *, n: int = NGRAM, times: int = TIMES
) -> float:
    """Share (0-1) of answers with some n-gram repeated `times` times or more (0 for none)."""
    if not answers:
        return 0.0
    return sum(repeats_ngram(a, n=n, times=times) for a in answers) / len(answers)
