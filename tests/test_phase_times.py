"""tools/phase_times.py: a command's wall time split at the lines it prints."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Prints a line, then 'one' after 0.3 s and a bar-style '\r' update 'two' 0.5 s later, and exits 3.
SCRIPT = (
    "import sys, time\n"
    "print('zero', flush=True); time.sleep(0.3)\n"
    "print('one', flush=True); time.sleep(0.5)\n"
    "sys.stderr.write('bar 50%\\rtwo\\r'); sys.stderr.flush(); time.sleep(0.2)\n"
    "sys.exit(3)\n"
)


def _phase_times(tmp_path, *marks: str) -> tuple[subprocess.CompletedProcess, dict]:
    command = [
        sys.executable, str(ROOT / "tools/phase_times.py"), *marks,
        "--log", str(tmp_path / "stamped.log"), "--", sys.executable, "-c", SCRIPT,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return result, json.loads(result.stdout)


def test_phases_end_at_their_markers_and_the_exit_code_passes_through(tmp_path):
    result, report = _phase_times(tmp_path, "--mark", "start=^one", "--mark", "work=^two")
    assert result.returncode == 3
    phases = report["phases"]
    assert list(phases) == ["start", "work", "to exit"]
    assert 0.3 <= phases["start"] and 0.5 <= phases["work"] and 0.2 <= phases["to exit"]
    assert sum(phases.values()) == pytest.approx(report["wall_seconds"], abs=0.05)  # rounding
    assert report["missing_markers"] == []
    stamped = (tmp_path / "stamped.log").read_text().splitlines()
    assert [line.split(maxsplit=1)[1] for line in stamped] == ["zero", "one", "bar 50%", "two"]


def test_a_marker_never_printed_is_named_and_its_time_goes_to_the_next_phase(tmp_path):
    _, report = _phase_times(tmp_path, "--mark", "never=^absent", "--mark", "start=^one")
    assert report["missing_markers"] == ["never"]
    assert list(report["phases"]) == ["start", "to exit"]
    assert report["phases"]["start"] >= 0.3
