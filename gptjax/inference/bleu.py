"""Generation metrics against reference answers: corpus BLEU and exact match.

BLEU is computed the way sacrebleu reports it by default (`sacrebleu.corpus_bleu(hyps,
[refs])`: BLEU-4, the "13a" tokenizer of WMT's mteval-v13a, case-sensitive, brevity penalty,
"exp" smoothing of zero n-gram counts), so a figure from `gptjax eval` can be compared with
published ones; tests check equality with sacrebleu itself. Implemented here to keep sacrebleu
(and its dependencies) out of the runtime install.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from gptjax.errors import ConfigError

MAX_ORDER = 4

# mteval-v13a's tokenization, as sacrebleu's TokenizerRegexp applies it.
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)


def tokenize_13a(line: str) -> list[str]:
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
            line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _ngrams(tokens: list[str], order: int) -> Counter:
    return Counter(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """BLEU (0-100) of hypotheses against one reference each, over the whole corpus."""
    if len(hypotheses) != len(references):
        raise ConfigError(
            f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} references"
        )
    correct, total = [0] * MAX_ORDER, [0] * MAX_ORDER
    hyp_len = ref_len = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = tokenize_13a(hypothesis), tokenize_13a(reference)
        hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
        for n in range(1, MAX_ORDER + 1):
            hyp_counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
            correct[n - 1] += sum((hyp_counts & ref_counts).values())  # clipped matches
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_len == 0:
        return 0.0
    log_precisions, smooth = [], 1.0
    for matches, count in zip(correct, total, strict=True):
        if count == 0:  # hypotheses too short for this order: its precision stays 0
            log_precisions.append(-math.inf)
        elif matches == 0:  # "exp" smoothing: 1 / (2^k * count) for the k-th zero order
            smooth *= 2
            log_precisions.append(math.log(100.0 / (smooth * count)))
        else:
            log_precisions.append(math.log(100.0 * matches / count))
    if -math.inf in log_precisions:
        return 0.0
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(sum(log_precisions) / MAX_ORDER)


def normalize_answer(text: str) -> str:
    """Whitespace-collapsed, stripped text: what exact match compares."""
    return " ".join(text.split())


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Fraction (0-1) of hypotheses equal to their reference after `normalize_answer`."""
    if len(hypotheses) != len(references):
        raise ConfigError(
            f"exact_match: {len(hypotheses)} hypotheses but {len(references)} references"
        )
    if not hypotheses:
        return 0.0
    hits = sum(
        normalize_answer(h) == normalize_answer(r)
        for h, r in zip(hypotheses, references, strict=True)
    )
    return hits / len(hypotheses)
