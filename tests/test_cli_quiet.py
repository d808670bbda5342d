"""The CLI's library-noise filter, in a fresh interpreter: it once matched nothing because the
"absl" logger was created before absl.logging was imported (records then name absl's file)."""

import subprocess
import sys

SCRIPT = """
from gptjax.cli.quiet import quiet_library_noise
quiet_library_noise()
import orbax.checkpoint as ocp
ocp.CheckpointManager(sys.argv[1], options=ocp.CheckpointManagerOptions(read_only=True))
print("opened")
"""


def test_orbax_warnings_are_dropped_from_the_cli_stderr(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import sys\n" + SCRIPT, str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "opened" in result.stdout, result.stderr
    assert "read only" not in result.stderr and "absl" not in result.stderr, result.stderr


def test_an_abandoned_library_coroutine_is_not_reported_at_exit():
    """A failed Orbax save leaves write coroutines never awaited; Python warns at exit."""
    script = (
        "from gptjax.cli.quiet import quiet_library_noise\n"
        "quiet_library_noise()\n"
        "async def write_fragment(): pass\n"
        "abandoned = write_fragment()\n"
        "del abandoned\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
