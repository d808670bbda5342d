"""Every gcloud command docs/tpu.md shows, and every one the tools/tpu scripts print in their
dry runs, uses only flags that the installed Google Cloud CLI's own `--help` lists for it.

Skipped where gcloud is not installed (it is not a Python package); the CI machines have it.
"""

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools" / "tpu"
GCLOUD = shutil.which("gcloud")

pytestmark = [
    pytest.mark.slow,  # one `gcloud ... --help` per command: ~1 s each
    pytest.mark.skipif(GCLOUD is None, reason="the Google Cloud CLI is not installed"),
]

# Dry runs covering every gcloud call the scripts make (single slice, queued, multislice).
DRY_RUNS = [
    ["create.sh", "--name", "gpt", "--type", "v5litepod-16", "--queued", "--spot"],
    ["create.sh", "--name", "gpt", "--type", "v4-8", "--service-account", "sa@p.iam"],
    ["create.sh", "--name", "gpt", "--type", "v5litepod-16", "--queued", "--node-count", "2"],
    ["install.sh", "--name", "gpt", "--type", "v5litepod-16", "--mount-bucket", "bucket"],
    ["install.sh", "--name", "gpt", "--type", "v5litepod-16", "--node-count", "2"],
    ["start.sh", "--name", "gpt", "--type", "v5litepod-16", "--config", "configs/tpu_v5e_16.py",
     "--workdir", "gs://bucket/run"],
    ["start.sh", "--name", "gpt", "--type", "v5litepod-16", "--node-count", "2",
     "--config", "configs/tpu_2x_v5e_16.py", "--workdir", "gs://bucket/run"],
    ["logs.sh", "--name", "gpt", "--type", "v5litepod-16"],
    ["status.sh", "--name", "gpt", "--type", "v5litepod-16", "--queued"],
    ["stop.sh", "--name", "gpt", "--type", "v5litepod-16"],
    ["delete.sh", "--name", "gpt", "--type", "v5litepod-16", "--queued", "--yes"],
    ["restart.sh", "--name", "gpt", "--type", "v5litepod-16", "--queued", "--spot",
     "--config", "configs/tpu_v5e_16.py", "--workdir", "gs://bucket/run"],
]  # fmt: skip


def _gcloud_calls(text: str) -> list[str]:
    """`gcloud ...` up to the end of its shell word list (a pipe, `)`, `;`, `&&` or quote)."""
    text = text.replace("\\\n", " ")
    return [m.group(0).strip() for m in re.finditer(r"gcloud [^|;)&\"'`\n]*", text)]


def _docs_calls() -> list[str]:
    text = (ROOT / "docs" / "tpu.md").read_text()
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", text, re.S)
    return [call for block in blocks for call in _gcloud_calls(block)]


def _dry_run_calls() -> list[str]:
    calls = []
    for args in DRY_RUNS:
        result = subprocess.run(
            [str(TOOLS / args[0]), *args[1:], "--dry-run"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env=os.environ | {"TPU_PROJECT": "my-project"},
        )  # fmt: skip
        assert result.returncode == 0, f"{args}: {result.stderr}"
        lines = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ gcloud ")]
        assert lines, f"{args} printed no gcloud command"
        calls += [call for line in lines for call in _gcloud_calls(line)]
    return calls


@functools.cache
def _help(path: tuple[str, ...]) -> str | None:
    result = subprocess.run(
        [GCLOUD, *path, "--help"], capture_output=True, text=True, timeout=120,
        env=os.environ | {"CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "PAGER": "cat"},
    )  # fmt: skip
    if result.returncode:
        return None
    return re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # the man page's bold and underline


def _command_help(call: str) -> tuple[str, str]:
    """(command, its --help): the longest leading run of words gcloud knows as a command."""
    words = []
    for word in call.split()[1:]:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        words.append(word)
    for end in range(len(words), 0, -1):
        text = _help(tuple(words[:end]))
        if text is not None and "SYNOPSIS" in text:
            return " ".join(words[:end]), text
    raise AssertionError(f"gcloud knows no command in {call!r}")


@pytest.mark.parametrize("source", ["docs/tpu.md", "tools/tpu dry runs"])
def test_every_gcloud_flag_is_in_that_commands_help(source):
    calls = _docs_calls() if source == "docs/tpu.md" else _dry_run_calls()
    assert len(calls) >= 8, calls
    unknown = []
    for call in calls:
        command, text = _command_help(call)
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", call):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                unknown.append(f"gcloud {command}: {flag}")
    assert not unknown, f"flags gcloud does not list: {sorted(set(unknown))}"
