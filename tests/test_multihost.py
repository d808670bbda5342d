"""Multi-process runs as a user meets them: processes on 127.0.0.1, 4 CPU devices each.

Subprocess tests start real `gptjax train` processes joined through `--coordinator_address`,
`--num_processes` and `--process_id`, and compare them with one process of 8 devices (same
global batch, same mesh shape). The unit tests check the mesh layout and the flag checks.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from small_run import SMALL_MODEL, SMALL_VOCAB

from gptjax.config import apply_overrides, load_config_file, validate
from gptjax.errors import ConfigError
from gptjax.metrics import read_metrics
from gptjax.sharding import MESH_AXES, check_tensor_within_host, process_major_devices
from gptjax.train.runtime import ClusterSpec

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
RUN = [
    *SMALL_MODEL,
    *SMALL_VOCAB,
    "--config.optim.warmup_steps=2",
    "--config.train.log_every=1",
    "--config.train.eval_batches=2",
    "--config.checkpoint.save_every=4",
    "--config.sample.max_new_tokens=0",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return os.environ | {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


def _command(workdir, *extra, steps=STEPS):
    return [
        sys.executable, "-m", "gptjax.cli", "train", "--config", "configs/tiny.py",
        "--workdir", str(workdir), f"--config.train.steps={steps}",
        f"--config.train.eval_every={steps}", *RUN, *extra,
    ]  # fmt: skip


class Group:
    """Processes started together; stdout/stderr go to files (a full pipe would block one)."""

    def __init__(self, logs: Path):
        self.logs, self.processes = logs, []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, command, devices: int):
        index = len(self.processes)
        out = (self.logs / f"{index}.out").open("w")
        err = (self.logs / f"{index}.err").open("w")
        self.processes.append(
            subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, env=_env(devices))
        )
        return self.processes[-1]

    def start_cluster(self, workdir, count=2, *extra, steps=STEPS, per_process=None, timeout=120):
        port = _free_port()
        for index in range(count):
            flags = [
                f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}",
                f"--process_id={index}", f"--initialization_timeout={timeout}",
            ]  # fmt: skip
            own = (per_process or {}).get(index, [])
            self.start(_command(workdir, *extra, *own, *flags, steps=steps), devices=4)

    def wait(self, timeout=400) -> list[int]:
        deadline = time.monotonic() + timeout
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.processes]

    def stdout(self, index: int) -> str:
        return (self.logs / f"{index}.out").read_text()

    def stderr(self, index: int) -> str:
        return (self.logs / f"{index}.err").read_text()

    def error_line(self, index: int) -> str:
        return self.stderr(index).strip().splitlines()[-1]

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def group(tmp_path):
    started = Group(tmp_path / "logs")
    try:
        yield started
    finally:
        started.kill()


def _losses(workdir) -> dict[int, float]:
    """step -> loss; a step logged twice (re-run after a resume) keeps its last value."""
    records = read_metrics(Path(workdir) / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _final_eval(workdir) -> float:
    records = read_metrics(Path(workdir) / "metrics.jsonl")
    return [r for r in records if "eval/loss" in r][-1]["eval/loss"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process with 8 devices, the same global batch and mesh shape."""
    workdir = tmp_path_factory.mktemp("one_process")
    reference = Group(workdir / "logs")
    try:
        reference.start(_command(workdir), devices=8)
        assert reference.wait() == [0], reference.stderr(0)[-3000:]
    finally:
        reference.kill()
    return workdir


@pytest.mark.slow
def test_two_processes_train_like_one_and_hand_their_checkpoint_to_one(one_process, tmp_path):
    workdir = tmp_path / "two"
    first = Group(tmp_path / "logs2")
    try:
        first.start_cluster(workdir)
        codes = first.wait()
    finally:
        first.kill()
    assert codes == [0, 0], first.stderr(0)[-2000:] + first.stderr(1)[-2000:]
    out0, out1 = first.stdout(0), first.stdout(1)
    assert "process 0 of 2: 4 local of 8 cpu devices" in out0
    assert "process 1 of 2: 4 local of 8 cpu devices" in out1
    assert "mesh {'data': 8, 'fsdp': 1, 'tensor': 1}" in out0
    assert "step 8: validation loss" in out0 and "validation loss" not in out1  # 0 speaks
    assert "step/s" in first.stderr(0) and "step/s" not in first.stderr(1)  # progress bar
    reference = _losses(one_process)
    assert sorted(_losses(workdir)) == list(range(1, STEPS + 1))
    assert _losses(workdir) == pytest.approx(reference, rel=1e-5)
    assert _final_eval(workdir) == pytest.approx(_final_eval(one_process), rel=1e-5)

    # One process with 8 devices continues the two processes' checkpoint 4.
    _resume_step_4_on_one_process(workdir, tmp_path / "logs1")
    assert _losses(workdir) == pytest.approx(reference, rel=1e-5)  # steps 5-8 re-logged
    assert _final_eval(workdir) == pytest.approx(_final_eval(one_process), rel=1e-5)


@pytest.mark.slow
def test_two_processes_as_two_slices_train_like_one(one_process, group, tmp_path):
    """mesh.dcn_data=2 over loopback: CPU devices carry no slice_index, so each process is one
    slice of data=4, the mesh is data=8 as the reference's, and the layout (slice-major, then
    process-major) is the two-process one. Losses are asserted to rel 1e-5 (they came out
    bit-identical here), not exactly: the gradient all-reduce across processes (gloo) need not
    sum in the order one process's XLA does, so the last float bits may differ elsewhere."""
    workdir = tmp_path / "slices"
    for cached in ("tokenizer", "data"):  # the reference's tokenizer and token cache
        shutil.copytree(one_process / cached, workdir / cached)
    group.start_cluster(workdir, 2, "--config.mesh.dcn_data=2")
    assert group.wait() == [0, 0], group.stderr(0)[-2000:] + group.stderr(1)[-2000:]
    assert (
        "mesh {'data': 8, 'fsdp': 1, 'tensor': 1} = 2 slices over DCN (data=2) of data=4 "
        "fsdp=1 tensor=1 each"
    ) in group.stdout(0)
    reference = _losses(one_process)
    assert sorted(_losses(workdir)) == list(range(1, STEPS + 1))
    assert _losses(workdir) == pytest.approx(reference, rel=1e-5)
    assert _final_eval(workdir) == pytest.approx(_final_eval(one_process), rel=1e-5)

    # The two slices' checkpoint 4 restores onto one process's one-slice mesh of 8 devices.
    _resume_step_4_on_one_process(workdir, tmp_path / "logs1")
    assert _losses(workdir) == pytest.approx(reference, rel=1e-5)


def _resume_step_4_on_one_process(workdir, logs):
    """Drops the final checkpoint; one process with 8 devices resumes checkpoint 4 to the end."""
    shutil.rmtree(workdir / "checkpoints" / str(STEPS))
    one = Group(logs)
    try:
        one.start(_command(workdir), devices=8)
        codes = one.wait()
    finally:
        one.kill()
    assert codes == [0], one.stderr(0)[-3000:]
    assert "resuming from step 4" in one.stdout(0)


def _wait_for_step(workdir, step, group, timeout=300):
    deadline = time.monotonic() + timeout
    path = Path(workdir) / "metrics.jsonl"
    while time.monotonic() < deadline:
        for index, process in enumerate(group.processes):
            assert process.poll() is None, group.stderr(index)[-3000:]
        try:
            if any(r["step"] >= step and "loss" in r for r in read_metrics(path)):
                return
        except Exception:  # not there yet, or a line being written
            pass
        time.sleep(0.2)
    raise TimeoutError(f"step {step} not reached")


@pytest.mark.slow
def test_sigterm_to_one_process_makes_all_save_the_same_step_and_exit_75(
    one_process, group, tmp_path
):
    workdir, steps = tmp_path / "run", 40
    for cached in ("tokenizer", "data"):  # the reference's tokenizer and token cache: ~15 s less
        shutil.copytree(one_process / cached, workdir / cached)
    group.start_cluster(workdir, steps=steps)
    _wait_for_step(workdir, 2, group)
    group.processes[1].send_signal(signal.SIGTERM)
    assert group.wait(timeout=300) == [75, 75], group.stderr(0)[-2000:] + group.stderr(1)[-2000:]
    committed = []
    for index in (0, 1):
        line = group.error_line(index)
        assert line.startswith("gptjax: error: preempted: checkpoint "), line
        committed.append(int(line.split("preempted: checkpoint ")[1].split()[0]))
    assert committed[0] == committed[1] < steps
    checkpoints = workdir / "checkpoints"
    assert (checkpoints / str(committed[0])).is_dir()
    assert not list(checkpoints.glob("*tmp*"))  # committed, not half-written


@pytest.mark.slow
def test_an_sft_run_on_two_processes_installs_the_tokenizer_once_and_samples(
    one_process, group, tmp_path
):
    """The first start of an SFT run from another run's checkpoint: every process reads the
    checkpoint's tokenizer, process 0 alone writes it (writers sharing the workdir once raced
    on one temporary file); the fixed prompts are sampled at each evaluation."""
    workdir, prompts = tmp_path / "sft", ("What does `json.dumps` do?", "Name a module.")
    group.start_cluster(
        workdir, 2, "--config.phase=sft", f"--config.init_from={one_process}",
        "--config.data.source=conversations", "--config.data.conversations=builtin",
        "--config.train.eval_every=4", f"--config.sample.prompts={prompts!r}",
        "--config.sample.max_new_tokens=6", "--config.sample.temperature=0.0",
        "--config.checkpoint.save_every_minutes=0.001",  # time-based saves: planned by process 0
    )  # fmt: skip
    assert group.wait() == [0, 0], group.stderr(0)[-2000:] + group.stderr(1)[-2000:]
    assert f"starting from the parameters of {one_process} step {STEPS}" in group.stdout(0)
    installed = workdir / "tokenizer"
    assert sorted(p.name for p in installed.iterdir()) == ["tokenizer.json", "tokenizer.model"]
    source = one_process / "tokenizer" / "tokenizer.model"
    assert (installed / "tokenizer.model").read_bytes() == source.read_bytes()
    records = [json.loads(line) for line in (workdir / "samples.jsonl").read_text().splitlines()]
    assert [(r["step"], r["prompt"]) for r in records] == [
        (step, prompt) for step in (4, STEPS) for prompt in prompts
    ]  # written once, by process 0
    assert all(r["sample"].startswith(f"--- {r['prompt']}\n") for r in records), records
    # The log shows a sample without its blank lines; samples.jsonl keeps the exact text.
    shown = "\n".join(line for line in records[0]["sample"].splitlines() if line.strip())
    assert shown in group.stdout(0) and prompts[0] not in group.stdout(1)
    saves = {
        r["step"] for r in read_metrics(workdir / "metrics.jsonl") if "checkpoint_block_sec" in r
    }
    assert saves > {4, STEPS}  # and time-based ones between, at steps all processes agreed on


_FAILS_ON_ONE = """
import sys, jax
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from gptjax.errors import DataError, GptjaxError
from gptjax.train import multihost
run = {"every": multihost.on_every_process, "primary": multihost.primary_only}[sys.argv[3]]
failing = int(sys.argv[4])

def step():
    if jax.process_index() == failing:
        raise DataError(f"damaged on process {failing}")
    return "done"

try:
    print(run(step, "opening the data"))
except GptjaxError as error:
    print(error)
    sys.exit(error.exit_code)
"""


@pytest.mark.parametrize("mode, failing", [("every", 1), ("every", 0), ("primary", 0)])
def test_a_failure_on_one_process_stops_every_process_with_its_exit_code(
    group, tmp_path, mode, failing
):
    """No process is left waiting in the next collective for one that failed."""
    address = f"127.0.0.1:{_free_port()}"
    for index in (0, 1):
        group.start([sys.executable, "-c", _FAILS_ON_ONE, address, str(index), mode,
                     str(failing)], devices=1)  # fmt: skip
    assert group.wait(timeout=120) == [65, 65], group.stderr(0)[-2000:] + group.stderr(1)[-2000:]
    other = 1 - failing
    assert f"damaged on process {failing}" in group.stdout(failing)
    assert f"process {failing} failed while opening the data (exit 65)" in group.stdout(other), (
        group.stdout(other)
    )


def test_processes_started_with_different_configs_are_refused_on_every_process(group, tmp_path):
    group.start_cluster(tmp_path / "run", per_process={1: ["--config.optim.peak_lr=0.001"]})
    assert group.wait(timeout=300) == [2, 2], group.stderr(0)[-2000:] + group.stderr(1)[-2000:]
    for index in (0, 1):
        line = group.error_line(index)
        assert "different configs: optim.peak_lr: process 0 0.003" in line, line
        assert "process 1 0.001" in line


def test_a_workdir_held_on_one_process_stops_every_process_with_exit_2(group, tmp_path):
    """Every process locks the workdir it writes (process 1: run.lock.1); one refusal stops
    all, before any data is prepared."""
    from gptjax.train.workdir_lock import LOCK_FILE, LocalLock

    workdir = tmp_path / "run"
    workdir.mkdir()
    other_run = LocalLock(workdir / f"{LOCK_FILE}.1", "train")
    other_run.acquire()
    try:
        group.start_cluster(workdir)
        assert group.wait(timeout=300) == [2, 2], group.stderr(0)[-2000:] + group.stderr(1)[-2000:]
    finally:
        other_run.release()
    assert "is in use by gptjax train started" in group.error_line(1)
    assert f"(pid {os.getpid()}, process 0)" in group.error_line(1)
    assert "process 1 failed while taking the workdir lock (exit 2)" in group.error_line(0)
    assert sorted(path.name for path in workdir.iterdir()) == [LOCK_FILE, f"{LOCK_FILE}.1"]


@pytest.mark.slow
def test_batch_and_mesh_rules_use_the_real_process_count(group, tmp_path):
    group.start_cluster(tmp_path / "a", 2, "--config.train.global_batch_size=9")
    group.start_cluster(tmp_path / "b", 2, "--config.mesh.tensor=8", "--config.mesh.data=1")
    codes = group.wait(timeout=300)
    assert codes == [2, 2, 2, 2], "\n".join(group.stderr(i)[-1500:] for i in range(4))
    for index in (0, 1):
        assert "global_batch_size=9 is not divisible by the 2 processes" in group.error_line(index)
    for index in (2, 3):
        line = group.error_line(index)
        assert "mesh.tensor=8 must divide the 4 devices of each of the 2 processes" in line, line


@pytest.mark.slow
def test_a_missing_peer_or_coordinator_times_out_with_one_line_and_exit_2(group, tmp_path):
    timeout = 10
    alone = [f"--initialization_timeout={timeout}", "--num_processes=2"]
    port0, port1 = _free_port(), _free_port()
    started = time.monotonic()
    group.start(  # process 0 waits for a process 1 that never comes
        _command(tmp_path / "a", *alone, f"--coordinator_address=127.0.0.1:{port0}",
                 "--process_id=0"), devices=4,
    )  # fmt: skip
    group.start(  # process 1 looks for a process 0 that never started
        _command(tmp_path / "b", *alone, f"--coordinator_address=127.0.0.1:{port1}",
                 "--process_id=1"), devices=4,
    )  # fmt: skip
    assert group.wait(timeout=180) == [2, 2]
    assert time.monotonic() - started < 150  # the timeout, plus start-up on a busy machine
    waited, searched = group.error_line(0), group.error_line(1)
    assert waited.startswith("gptjax: error: not all 2 processes joined the coordinator at ")
    assert f"127.0.0.1:{port0} within {timeout} s (this is process 0 of 2)" in waited
    assert searched.startswith(f"gptjax: error: cannot reach the coordinator at 127.0.0.1:{port1}")
    assert f"within {timeout} s (this is process 1 of 2: " in searched
    for index in (0, 1):
        assert "Check failure" not in group.stderr(index)  # our message, not JAX's abort


# --- unit checks: no subprocess ---------------------------------------------------------


def _fake_devices(processes: int, local: int) -> list:
    """Devices listed interleaved across processes, as a topology order might list them."""
    return [
        SimpleNamespace(id=p * 100 + d, process_index=p, platform="cpu", device_kind="cpu")
        for d in range(local)
        for p in range(processes)
    ]


@pytest.mark.parametrize("tensor", [1, 2, 4])
def test_process_major_layout_keeps_tensor_groups_and_batch_rows_on_one_process(tensor):
    grid = process_major_devices(_fake_devices(4, 4), tensor)
    mesh = grid.reshape(-1, tensor)  # rows: the (data, fsdp) positions, in batch order
    owners = [{d.process_index for d in row} for row in mesh]
    assert all(len(owner) == 1 for owner in owners)  # a tensor group never crosses hosts
    order = [owner.pop() for owner in owners]
    assert order == sorted(order)  # each process holds one contiguous slice of the batch
    assert order.count(0) == 4 // tensor


@pytest.mark.parametrize("tensor, local", [(8, 4), (3, 4)])
def test_a_tensor_axis_that_does_not_fit_within_one_host_is_refused(tensor, local):
    with pytest.raises(ConfigError, match=f"mesh.tensor={tensor} must divide the {local}"):
        check_tensor_within_host(tensor, local, process_count=2)
    check_tensor_within_host(tensor, local, process_count=1)  # one host: the mesh size rules


def test_validate_applies_the_mesh_rule_and_the_batch_rule_per_process():
    config = load_config_file(ROOT / "configs" / "tiny.py")
    apply_overrides(config, ["mesh.data=1", "mesh.tensor=8"])
    with pytest.raises(ConfigError, match="tensor parallelism stays within a host"):
        validate(config, device_count=8, process_count=2, local_device_count=4)
    apply_overrides(config, ["mesh.data=-1", "mesh.tensor=1", "train.global_batch_size=12"])
    with pytest.raises(ConfigError, match="not divisible by the 8 processes"):
        validate(config, device_count=8, process_count=8, local_device_count=1)
    apply_overrides(config, ["mesh.data=4", "mesh.tensor=2"])
    derived = validate(config, device_count=8, process_count=2, local_device_count=4)
    assert derived["mesh_shape"] == dict(zip(MESH_AXES, (4, 1, 2), strict=True))


@pytest.mark.parametrize(
    "spec, message",
    [
        (ClusterSpec(process_id=1), "give --num_processes together"),
        (ClusterSpec(num_processes=2, process_id=0), "needs all of --coordinator_address"),
        (ClusterSpec("h:1", 2, 2), r"--process_id must be in \[0, 2\)"),
        (ClusterSpec("no-port", 2, 0), "must be HOST:PORT"),
        (ClusterSpec("h:1", 2, 0, initialization_timeout=0), "must be > 0 seconds"),
        (ClusterSpec(num_processes=0), "must be >= 1"),
    ],
)
def test_incomplete_or_impossible_process_flags_are_usage_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        spec.check()


def test_complete_flags_and_one_process_are_accepted():
    ClusterSpec("10.0.0.2:8476", 4, 3).check()
    ClusterSpec("[::1]:8476", 2, 0).check()
    ClusterSpec(num_processes=1).check()
    ClusterSpec().check()


def _fake_tpu_slice(monkeypatch, hosts: int, failure: Exception | None = None):
    from jax._src.clusters import cloud_tpu_cluster as tpu

    def count():
        if failure:
            raise failure
        return hosts

    gce = tpu.GceTpuCluster
    monkeypatch.setattr(tpu.GkeTpuCluster, "is_env_present", classmethod(lambda cls: False))
    monkeypatch.setattr(gce, "is_env_present", classmethod(lambda cls: True))
    monkeypatch.setattr(gce, "get_process_count", classmethod(lambda cls: count()))
    monkeypatch.setattr(gce, "get_process_id", classmethod(lambda cls: 2))
    monkeypatch.setattr(
        gce, "get_coordinator_address", classmethod(lambda cls, timeout, port: "10.0.0.2:8476")
    )


def test_a_multi_host_tpu_slice_is_detected_from_its_metadata(monkeypatch):
    from gptjax.train.runtime import _detect_tpu_slice

    assert _detect_tpu_slice(30) is None  # this machine is no TPU VM
    _fake_tpu_slice(monkeypatch, hosts=4)
    assert _detect_tpu_slice(30) == ClusterSpec("10.0.0.2:8476", 4, 2, 30)
    _fake_tpu_slice(monkeypatch, hosts=1)
    assert _detect_tpu_slice(30) is None  # one host: the one-process runtime
    _fake_tpu_slice(monkeypatch, hosts=4, failure=OSError("metadata server unreachable"))
    with pytest.raises(ConfigError, match="metadata server unreachable.*--num_processes 1"):
        _detect_tpu_slice(30)


_TPU_VARS = (
    "TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES", "MEGASCALE_NUM_SLICES",
    "MEGASCALE_COORDINATOR_ADDRESS", "TPU_SKIP_MDS_QUERY",
)  # fmt: skip


def _without_jax_detection(monkeypatch):
    """As on a JAX release that moved its private cluster detection: the import fails."""
    import jax._src.clusters as clusters

    monkeypatch.delattr(clusters, "cloud_tpu_cluster", raising=False)
    monkeypatch.setitem(sys.modules, "jax._src.clusters.cloud_tpu_cluster", None)
    for name in _TPU_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "env, evidence",
    [
        ({"TPU_WORKER_HOSTNAMES": "t-w-0,t-w-1,t-w-2,t-w-3"}, "TPU_WORKER_HOSTNAMES lists 4"),
        ({"TPU_PROCESS_ADDRESSES": "10.0.0.2:8476,10.0.0.3:8476"}, "TPU_PROCESS_ADDRESSES lists"),
        ({"MEGASCALE_NUM_SLICES": "2"}, "MEGASCALE_NUM_SLICES=2"),
    ],
)
def test_a_tpu_worker_without_jax_cluster_detection_refuses_to_run_alone(
    monkeypatch, env, evidence
):
    from gptjax.train.runtime import _detect_tpu_slice

    _without_jax_detection(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        _detect_tpu_slice(30)
    message = str(raised.value)
    assert raised.value.exit_code == 2 and "\n" not in message
    assert f"one of several TPU workers ({evidence}" in message
    assert "cluster detection could not be imported (ModuleNotFoundError" in message
    assert "pass --coordinator_address, --num_processes and --process_id on every worker" in message


def test_without_jax_detection_the_tpu_vm_metadata_decides(monkeypatch):
    from gptjax.train import tpu_hosts
    from gptjax.train.runtime import _detect_tpu_slice

    _without_jax_detection(monkeypatch)
    assert _detect_tpu_slice(30) is None  # no TPU chips here: one process, as before
    monkeypatch.setattr(tpu_hosts, "_tpu_chips_on_pci", lambda: 4)
    workers = {"value": "w-0,w-1"}

    def metadata(key):
        assert key == "worker-network-endpoints"
        if isinstance(workers["value"], Exception):
            raise workers["value"]
        return workers["value"]

    monkeypatch.setattr(tpu_hosts, "_metadata", metadata)
    with pytest.raises(ConfigError, match=r"TPU VM metadata lists 2 workers"):
        _detect_tpu_slice(30)
    workers["value"] = "w-0"
    assert _detect_tpu_slice(30) is None  # a single-host TPU VM runs alone
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w-0")
    workers["value"] = OSError("should not be asked")
    assert _detect_tpu_slice(30) is None  # GKE's host list is authoritative, even of one
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
    workers["value"] = OSError("timed out")
    with pytest.raises(ConfigError, match=r"metadata server did not answer \(timed out\)"):
        _detect_tpu_slice(30)
