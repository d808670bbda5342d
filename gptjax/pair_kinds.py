"""The kinds of preference pair: which sort of wrong answer a pair's rejected answer is.

Pairs carry their kind in a "kind" field (gptjax.data.preferences, tools/make_preferences.py),
and the DPO evaluation reports its figures per kind, so an easy kind cannot hide that a hard
one is not learned. No dependencies: the config schema checks `data.preference_kinds` here.
"""

from __future__ import annotations

from collections.abc import Sequence

from gptjax.errors import ConfigError

# Kinds of wrong answer that derived pairs reject (each pair's "kind"), hardest first.
# other_answer: another question's true answer, fluent and on topic for some name, so only
# knowing which answer belongs to which question tells them apart. shuffled: the true answer's
# own words in a shuffled order, which fluency alone tells apart: an SFT model already prefers
# the true answer almost always, so these pairs teach little and inflate reward accuracy.
PAIR_KINDS = ("other_answer", "shuffled")
DEFAULT_KINDS = ("other_answer",)
# The kind reported for pairs without one, next to tagged pairs.
UNTAGGED = "untagged"


def check_kinds(kinds: Sequence[str], what: str) -> tuple[str, ...]:
    """`kinds` as a tuple of known pair kinds (PAIR_KINDS), or ConfigError naming `what`."""
    kinds = tuple(kinds)
    unknown = [kind for kind in kinds if kind not in PAIR_KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(
            f"{what}={','.join(kinds)!r}: give one or more of {', '.join(PAIR_KINDS)}, "
            "comma-separated, each once"
        )
    return kinds
