"""How many examples fit a row whole, and the row length that would fit most of them.

SFT cuts a conversation longer than a row, DPO leaves such a pair out (gptjax.data.
conversations, gptjax.data.preferences). Either way a data set whose examples mostly overflow
`data.seq_len` trains on something else than the user thinks, so packing warns past a share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Warn when more than this share of the examples does not fit a row whole.
WARN_ABOVE = 0.10
# The share of examples the suggested data.seq_len fits whole.
KEEP = 0.95


def length_to_keep(lengths: Sequence[int], share: float = KEEP) -> int:
    """The smallest row length that fits at least `share` of the examples whole."""
    ordered = sorted(lengths)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def overflow_warning(what: str, lengths: Sequence[int], seq_len: int, fate: str) -> str | None:
    """One warning line when more than WARN_ABOVE of `lengths` (row positions each example
    needs) exceed `seq_len`, naming the data.seq_len that fits KEEP of them; else None.
    `fate` says what happens to an example that does not fit ("left out", "truncated")."""
    over = sum(length > seq_len for length in lengths)
    if not lengths or over <= WARN_ABOVE * len(lengths):
        return None
    return (
        f"warning: {over / len(lengths):.0%} of the {what} ({over:,} of {len(lengths):,}) are "
        f"longer than data.seq_len={seq_len} tokens and {fate}; data.seq_len="
        f"{length_to_keep(lengths)} would fit {KEEP:.0%} of them"
    )
