"""Quiet output by default: one line per event, gptjax's own lines only, never glued to the
progress bar; `--verbose` lets the libraries' logging through."""

import io
import os
import pty
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from small_run import SMALL_MODEL, SMALL_VOCAB, subprocess_env

from gptjax.cli import _parser
from gptjax.metrics import ProgressBar

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "checkpoint_v0_1"
BAR = re.compile(r"^(train|generate|bench|prepare): +\d+%\|[^|]*\| *\d+/\d+ \[[^\]]*\]\s*$")
# gptjax's own stderr lines besides progress bars: notes, warnings, errors, and the line
# `sample`/`chat`/`eval` print about the checkpoint they loaded.
OWN_STDERR = re.compile(r"^(note: |warning: |gptjax: |loaded \S+ step \d+ \()")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def rendered_lines(text: str) -> list[str]:
    """What a terminal shows: each "\\r" returns to the start of the line, and what follows
    overwrites it character by character (trailing spaces dropped)."""
    lines = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        column = 0
        for char in raw:
            if char == "\r":
                column = 0
                continue
            if column < len(cells):
                cells[column] = char
            else:
                cells.append(char)
            column += 1
        lines.append("".join(cells).rstrip())
    return [line for line in lines if line]


@pytest.mark.parametrize("stream", [io.StringIO, _Terminal], ids=["log file", "terminal"])
def test_lines_logged_through_the_bar_get_lines_of_their_own(stream, monkeypatch):
    out = stream()
    monkeypatch.setattr(sys, "stdout", out)  # the log line and the bar share one stream
    bar = ProgressBar(40, file=out, log_interval_s=0)
    log = bar.log_through(print)
    bar.update(20, loss=2.5)
    log("step 20: validation loss 2.400")
    bar.update(40, loss=2.0)
    log("step 40: validation loss 2.300")
    bar.close()
    lines = rendered_lines(out.getvalue())
    assert "step 20: validation loss 2.400" in lines
    assert "step 40: validation loss 2.300" in lines
    for line in lines:
        assert BAR.match(line) or line.startswith("step "), line
    assert BAR.match(lines[-1]) and "40/40" in lines[-1]


def test_a_log_line_without_the_bar_takes_no_blank_line(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    bar = ProgressBar(10, file=out, log_interval_s=0)
    log = bar.log_through(print)
    log("first")
    log("second")
    bar.close()
    text = out.getvalue()
    assert "\n\n" not in text and "first\nsecond\n" in text


@pytest.mark.parametrize(
    "argv",
    [["--verbose", "plot", "w"], ["plot", "w", "--verbose"], ["tokenizer", "decode",
     "--tokenizer", "t", "--verbose", "2"]],
)  # fmt: skip
def test_verbose_is_taken_before_or_after_the_verb(argv):
    assert _parser().parse_args(argv).verbose is True
    quiet = [a for a in argv if a != "--verbose"]
    assert _parser().parse_args(quiet).verbose is False


def test_quiet_mode_ignores_other_packages_warnings_and_keeps_gptjax_ones():
    from gptjax.cli.quiet import quiet_library_noise

    hook = sys.unraisablehook
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_library_noise()
            warnings.warn_explicit("from a library", UserWarning, "lib.py", 1, module="jax.x")
            warnings.warn_explicit("from gptjax", UserWarning, "g.py", 1, module="gptjax.data")
    finally:
        sys.unraisablehook = hook
    assert [str(w.message) for w in caught] == ["from gptjax"]


def _run_in_terminal(argv: list[str], env: dict, tee: Path) -> tuple[int, str]:
    """Runs `python -m gptjax.cli ARGV` with stdout and stderr on one pseudo-terminal (a user's
    screen); everything gptjax prints through Python's sys.stdout is also copied to `tee`,
    so the test knows which screen lines are gptjax's own stdout."""
    import fcntl
    import termios

    program = (
        "import sys\n"
        "from gptjax.cli import main\n"
        f"copy = open({str(tee)!r}, 'w')\n"
        "class Tee:\n"
        "    def __init__(self, s): self.s = s\n"
        "    def write(self, t): copy.write(t); copy.flush(); return self.s.write(t)\n"
        "    def __getattr__(self, name): return getattr(self.s, name)\n"
        "sys.stdout = Tee(sys.stdout)\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-c", program, *argv],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=600), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_train_and_sample_print_only_gptjax_lines_never_glued_to_the_bar(tmp_path):
    workdir, tee = tmp_path / "run", tmp_path / "stdout.txt"
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell (conftest sets it)
    code, screen = _run_in_terminal(
        ["train", "--config", "configs/tiny.py", "--workdir", str(workdir), *SMALL_MODEL,
         *SMALL_VOCAB, "--config.train.steps=12", "--config.optim.warmup_steps=2",
         "--config.train.log_every=2", "--config.train.eval_every=6",
         "--config.train.eval_batches=2", "--config.sample.max_new_tokens=0"],
        env, tee,
    )  # fmt: skip
    assert code == 0, screen[-3000:]
    own_stdout = set(rendered_lines(tee.read_text()))
    lines = rendered_lines(screen)
    assert any(BAR.match(line) for line in lines)
    validation = [line for line in lines if "validation loss" in line]
    assert [line.split(":")[0] for line in validation[:2]] == ["step 6", "step 12"]
    for line in lines:
        # A line that is a bar and a log line at once fails all three.
        assert BAR.match(line) or OWN_STDERR.match(line) or line in own_stdout, line

    sampled = subprocess.run(
        [sys.executable, "-m", "gptjax.cli", "sample", str(workdir), "--prompt", "The json",
         "--max-new-tokens", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert "The json" in sampled.stdout
    for line in sampled.stderr.splitlines():
        assert BAR.match(line) or OWN_STDERR.match(line), line


@pytest.mark.slow
def test_verbose_lets_the_libraries_logging_through():
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    command = [sys.executable, "-m", "gptjax.cli", "checkpoints", str(FIXTURE)]
    quiet = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    loud = subprocess.run(
        [*command, "--verbose"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stdout == loud.stdout and "step        2" in quiet.stdout
    assert quiet.stderr == ""
    # Orbax logs through absl (Python); XLA's C++ runtime through its own logging.
    assert re.search(r"^I absl \w+\.py:\d+\] ", loud.stderr, re.M), loud.stderr[:2000]
    assert "CheckpointManager" in loud.stderr
