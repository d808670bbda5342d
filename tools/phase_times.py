"""Where a training process's seconds go: run it, stamp every output line, split at markers.

    python tools/phase_times.py --preset gptjax-dpo --log dpo.log -- \\
        python -m gptjax.cli train --config configs/tiny_dpo.py ...   (compare_trl's command)
    python tools/phase_times.py --preset trl-dpo --log trl.log -- python tools/trl_side.py dpo SPEC

Each line the command prints (stdout and stderr; a progress bar's \\r updates count as
lines) is written to --log with the seconds since launch. A phase runs from one marker's
first line to the next marker's (the regexes of --preset, or --mark NAME=REGEX in order);
the first phase starts at launch, the last ends at exit. Prints one JSON object: the phases'
seconds, their marker times and the whole process's wall time. The command's exit code is
this tool's.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

# (phase that ENDS at the marker, regex). Phases are named for what runs before the marker.
PRESETS = {
    "gptjax-dpo": [
        ("imports, runtime, data read and packed", r"^dpo train: "),
        ("tokenizer and validation-set checks", r"^starting from the parameters"),
        ("restore policy and reference", r"^sharding: "),
        ("TensorFlow import (tf.data), eval batches, peak FLOP/s", r"^model: "),
        ("input pipeline start, compile the train step", r"^compiled the train step"),
        ("step-0 evaluation (eval step compile)", r"^step 0: validation"),
        ("train steps", r"^train: 100%"),
        ("final evaluation", r"^held-out DPO loss"),
        ("final save, wait for commit, exit", None),
    ],
    # tools/trl_side.py: the model's load bar, datasets' map bars, the Trainer's bar, the save.
    "trl-dpo": [
        ("imports", r"^Loading weights:"),
        ("model load, chat template applied", r"^Tokenizing train dataset:"),
        ("tokenize, reference model load", r"^\s*0%\|.*\| 0/\d+ \["),
        ("train steps", r"^\s*100%\|.*\| (\d+)/\1 \["),
        ("save, exit", None),
    ],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="markers of a known command")
    p.add_argument("--mark", action="append", default=[], help="NAME=REGEX, in order")
    p.add_argument("--log", required=True, help="the stamped output")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        p.error("give the command after --")
    if bool(args.preset) == bool(args.mark):
        p.error("give --preset or --mark NAME=REGEX (in order), not both")
    marks = list(PRESETS[args.preset]) if args.preset else []
    for item in args.mark:
        name, sep, regex = item.partition("=")
        if not sep:
            p.error(f"--mark {item!r}: expected NAME=REGEX")
        marks.append((name, regex))
    if marks[-1][1] is not None:
        marks.append(("to exit", None))
    args.marks = marks
    return args


def stamped_lines(command: list[str], log_path: str):
    """Runs `command`, yielding (seconds since launch, line) and writing them to the log."""
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pending = b""
        while chunk := process.stdout.read1(65536):
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            now = time.monotonic() - started
            for raw in lines:
                if raw.strip():
                    line = raw.decode(errors="replace")
                    log.write(f"{now:9.2f} {line}\n")
                    yield now, line
        code = process.wait()
        yield time.monotonic() - started, code


def phases(marks, stamped) -> tuple[dict, dict, float, int]:
    """({phase: seconds}, {marker: first time}, wall seconds, exit code)."""
    hits: dict[str, float] = {}
    for now, line in stamped:
        if isinstance(line, int):
            wall, code = now, line
            break
        for name, regex in marks:
            if regex and name not in hits and re.search(regex, line):
                hits[name] = now
    seconds, previous = {}, 0.0
    for name, regex in marks:
        end = wall if regex is None else hits.get(name)
        if end is None:  # marker never printed: its phase merges into the next
            continue
        seconds[name] = round(end - previous, 2)
        previous = end
    return seconds, {k: round(v, 2) for k, v in hits.items()}, round(wall, 2), code


def main(argv=None) -> int:
    args = parse_args(argv)
    seconds, hits, wall, code = phases(args.marks, stamped_lines(args.command, args.log))
    missing = [name for name, regex in args.marks if regex and name not in hits]
    print(json.dumps({"wall_seconds": wall, "phases": seconds, "missing_markers": missing}))
    return code


if __name__ == "__main__":
    sys.exit(main())
