"""Derive DPO preference pairs from instruction data: the true answer beats a wrong one.

    .venv/bin/python tools/make_preferences.py '../shared/corpora/sft/*.jsonl.xz' \\
        --out runs/shared_preferences.jsonl [--kinds other_answer,shuffled]

Reads conversations as SFT does (`{"messages": [...]}` or `{"prompt", "response"}` JSONL,
.xz allowed) and writes one `{"messages", "chosen", "rejected", "kind"}` line per
conversation and kind: the chosen answer is its true last answer, the rejected one another
question's answer (`other_answer`, the default: the hard kind, which teaches) or the true
answer's words shuffled (`shuffled`: easy, an SFT model already prefers the true answer) — the
same construction as the built-in preference set (`gptjax.data.preferences`). Train on the
output with `--config.data.preferences=runs/shared_preferences.jsonl` (configs/tiny_dpo.py);
the train/held-out split is the same hash split SFT uses, so held-out questions stay held out,
and the DPO evaluation reports its figures per kind.
"""

import argparse
import json
import sys
from pathlib import Path

from gptjax.data.conversations import read_conversations
from gptjax.data.preferences import preferences_from_conversations
from gptjax.errors import GptjaxError
from gptjax.pair_kinds import DEFAULT_KINDS, PAIR_KINDS, check_kinds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("conversations", nargs="+", help="JSONL files or globs (.xz allowed)")
    parser.add_argument("--out", required=True, help="the preference JSONL to write")
    parser.add_argument(
        "--kinds",
        default=",".join(DEFAULT_KINDS),
        help=f"kinds of rejected answer, comma-separated, one pair of each per conversation: "
        f"{', '.join(PAIR_KINDS)} (default: {','.join(DEFAULT_KINDS)})",
    )
    args = parser.parse_args(argv)
    note = lambda line: print(line, file=sys.stderr)  # noqa: E731
    try:
        kinds = check_kinds([k.strip() for k in args.kinds.split(",") if k.strip()], "--kinds")
        conversations = read_conversations(args.conversations, log=note)
        pairs = preferences_from_conversations(conversations, "input", kinds, log=note)
    except GptjaxError as error:
        print(f"make_preferences: error: {error}", file=sys.stderr)
        return error.exit_code
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for pair in pairs:
            record = {key: pair[key] for key in ("messages", "chosen", "rejected", "kind")}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{len(pairs):,} preference pairs from {len(conversations):,} conversations -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
