"""The first-hour TPU smoke run: attention kernels, dtypes, memory plan, preemption + resume.

Usage:  python tools/tpu_smoke.py [--config CONFIG] [--out DIR] [--steps N] [--dry-run]
            [--platform tpu|cpu] [--config.FIELD=VALUE ...]
(tools/tpu/smoke.sh wraps it on a TPU VM; docs/tpu.md "First hour on a TPU").

Runs, each in its own process (a TPU is held by one process at a time, and the device's peak
memory counter only grows within one):
  1. tools/tpu_smoke_measure.py for {bfloat16, float32} x {xla, splash}: the dry-run memory
     plan, warm-up + timed train steps (tokens/s, MFU, peak memory) with every loss and
     gradient norm, and for splash the kernel against the xla reference;
  2. `gptjax train` three times: uninterrupted; started again in a fresh workdir and sent
     SIGTERM (it must commit a checkpoint and exit 75); then the same command, which must
     resume and end bitwise identical (every logged loss, the final evaluation, and the
     fingerprint of every parameter and optimizer leaf in the final checkpoint).
Then the checks (tools/tpu_smoke_checks.py) and one JSON file, OUT/result.json (rewritten
after every stage, so an interrupted hour keeps what it measured), plus OUT/summary.txt.

Exit codes: 0 every check passed · 1 a check failed or a stage crashed (see the JSON) ·
2 usage or config error (before anything runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tpu_smoke_checks import run_checks, summary_lines  # noqa: E402
from tpu_smoke_measure import finite_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MEASURE = Path(__file__).resolve().with_name("tpu_smoke_measure.py")
VARIANTS = [(d, a) for d in ("bfloat16", "float32") for a in ("xla", "splash")]
SCHEMA = "gptjax-tpu-smoke/1"
# A resume run shorter than this could end before the SIGTERM lands (steps of a small model
# take milliseconds); a quarter of it is where the signal is sent.
MIN_RESUME_STEPS = 24
# Fields the smoke sets in its runs (measure_command, train_command): not the user's to override.
SMOKE_SETS = {
    "model.dtype", "model.attention", "optim.warmup_steps", "train.steps", "train.log_every",
    "train.eval_every", "train.eval_batches", "checkpoint.save_every",
    "checkpoint.save_every_minutes", "sample.max_new_tokens",
}  # fmt: skip
RESUME_RUNS = ("uninterrupted", "interrupted", "resumed")


def parse_args(argv: list[str]):
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="tools/tpu_smoke.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--config",
        default=str(ROOT / "configs" / "tpu_v4_8.py"),
        help="config file (default configs/tpu_v4_8.py)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path.home() / "gptjax-smoke",
        help="directory for result.json, summary.txt, logs and run workdirs",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    parser.add_argument(
        "--platform",
        choices=("tpu", "cpu"),
        default="tpu",
        help="JAX_PLATFORMS of every run; cpu runs splash in interpret mode",
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per run (1800)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    args = parser.parse_args(rest)  # fmt: skip
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"--steps and --warmup must be >= 1, got {args.steps} and {args.warmup}")
    args.config = str(Path(args.config).resolve())
    return args, overrides


def resume_steps(steps: int) -> int:
    return max(MIN_RESUME_STEPS, steps)


def measure_command(args, overrides, dtype: str, attention: str, json_path: Path) -> list[str]:
    return [
        sys.executable, str(MEASURE), "--config", args.config, "--platform", args.platform,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", str(json_path),
        *(f"--config.{o}" for o in overrides), f"--config.model.dtype={dtype}",
        f"--config.model.attention={attention}",
        # A short warmup so the timed steps move the parameters: with the configs' thousands
        # of warmup steps the learning rate is ~0 and every variant's losses would agree.
        f"--config.optim.warmup_steps={args.warmup}",
    ]  # fmt: skip


def train_command(args, overrides, workdir: Path) -> list[str]:
    steps = resume_steps(args.steps)
    return [
        sys.executable, "-m", "gptjax.cli", "train", "--config", args.config,
        "--workdir", str(workdir), *(f"--config.{o}" for o in overrides),
        f"--config.train.steps={steps}", f"--config.optim.warmup_steps={steps // 4}",
        "--config.train.log_every=1", f"--config.train.eval_every={steps}",
        "--config.train.eval_batches=2", f"--config.checkpoint.save_every={steps // 4}",
        # Saves by wall time would land at different steps in the two runs.
        "--config.checkpoint.save_every_minutes=0", "--config.sample.max_new_tokens=0",
    ]  # fmt: skip


def child_env(platform: str) -> dict[str, str]:
    # Set, not defaulted: on a VM whose TPU is busy or missing JAX would otherwise fall back
    # to CPU and the smoke would time the wrong device.
    return os.environ | {"JAX_PLATFORMS": platform, "TF_CPP_MIN_LOG_LEVEL": "2"}


def show(command: list[str], platform: str, note: str = "") -> None:
    print(f"+ JAX_PLATFORMS={platform} {shlex.join(command)}" + (f"   # {note}" if note else ""))


def validate_up_front(args, overrides) -> None:
    """Config errors (exit 2) before anything runs, for every variant the smoke will run."""
    from gptjax.config import apply_overrides, load_config_file, validate_static
    from gptjax.errors import ConfigError

    for override in overrides:
        field = override.split("=", 1)[0]
        if field in SMOKE_SETS:  # it would be silently replaced in every run
            raise ConfigError(f"--config.{field}: the smoke sets it itself in its runs; drop it")
    for dtype, attention in VARIANTS:
        config = load_config_file(args.config)
        apply_overrides(
            config, [*overrides, f"model.dtype={dtype}", f"model.attention={attention}"]
        )
        validate_static(config)


def run_logged(command, platform, log: Path, timeout: int) -> int:
    show(command, platform)
    with log.open("w") as out:
        try:
            return subprocess.run(command, cwd=ROOT, env=child_env(platform), stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return 124


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][-400:] if lines else ""


def measure_variants(args, overrides, result, save) -> None:
    for dtype, attention in VARIANTS:
        name = f"{dtype}_{attention}"
        json_path, log = args.out / "runs" / f"{name}.json", args.out / "logs" / f"{name}.log"
        json_path.unlink(missing_ok=True)
        start = time.monotonic()
        code = run_logged(measure_command(args, overrides, dtype, attention, json_path),
                          args.platform, log, args.timeout)  # fmt: skip
        run = json.loads(json_path.read_text()) if json_path.is_file() else {"status": "failed"}
        if code and "error" not in run:
            run["error"] = "timed out" if code == 124 else last_line(log)
        run.update(dtype=dtype, attention=attention, exit_code=code, log=str(log),
                   wall_sec=time.monotonic() - start)  # fmt: skip
        result["runs"][name] = run
        save()


def metrics_steps(workdir: Path) -> int:
    """The highest step with a loss in workdir/metrics.jsonl (0 when none yet)."""
    from gptjax.metrics import read_metrics  # drops the line being written right now

    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return max((r["step"] for r in read_metrics(path) if "loss" in r), default=0)


def interrupt_at(command, platform, workdir: Path, step: int, log: Path, timeout: int) -> dict:
    """Starts `command`, sends SIGTERM once metrics.jsonl shows `step`; its exit code."""
    show(command, platform, f"SIGTERM once metrics.jsonl shows step {step}; must exit 75")
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=child_env(platform), stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        deadline, signalled_at = time.monotonic() + timeout, None
        while process.poll() is None and time.monotonic() < deadline:
            if signalled_at is None and metrics_steps(workdir) >= step:
                process.send_signal(signal.SIGTERM)
                signalled_at = metrics_steps(workdir)
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
        return {"exit_code": process.wait(), "signalled_at_step": signalled_at}


def resume_stage(args, overrides, result, save) -> None:
    """Uninterrupted run vs SIGTERM + resume in another workdir; the raw facts for the check."""
    base = args.out / "resume"
    full, split = base / "uninterrupted", base / "interrupted"
    for path in (full, split):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    logs = {name: args.out / "logs" / f"resume_{name}.log" for name in RESUME_RUNS}
    stage = result["resume"] = {"steps": resume_steps(args.steps)}
    stage["uninterrupted_exit_code"] = run_logged(
        train_command(args, overrides, full), args.platform, logs["uninterrupted"], args.timeout
    )
    save()
    stage["interrupted"] = interrupt_at(
        train_command(args, overrides, split), args.platform, split,
        resume_steps(args.steps) // 4, logs["interrupted"], args.timeout,
    )  # fmt: skip
    save()
    stage["resumed_exit_code"] = run_logged(
        train_command(args, overrides, split), args.platform, logs["resumed"], args.timeout
    )
    text = logs["resumed"].read_text(errors="replace")
    resumed = (
        text.split("resuming from step ")[1].split()[0] if "resuming from step " in text else None
    )
    stage["resumed_from_step"] = int(resumed) if resumed else None
    stage["workdirs"] = {"uninterrupted": str(full), "interrupted": str(split)}
    stage["logs"] = {name: str(path) for name, path in logs.items()}
    for name in ("uninterrupted", "resumed"):
        if stage[f"{name}_exit_code"]:
            stage[f"{name}_error"] = last_line(logs[name])
    save()


def host_info() -> dict:
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None  # fmt: skip
    names = ("jax", "jaxlib", "libtpu", "flax", "optax", "orbax-checkpoint")
    return {"hostname": socket.gethostname(), "python": sys.version.split()[0],
            "gptjax_commit": commit, "versions": {n: version(n) for n in names}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from gptjax.errors import GptjaxError

    try:
        args, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
        if not Path(args.config).is_file():
            raise FileNotFoundError(f"--config {args.config}: no such file")
        validate_up_front(args, overrides)
    except (GptjaxError, FileNotFoundError) as error:
        print(f"tpu_smoke: error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"dry run: would write {args.out / 'result.json'}; nothing below runs")
        for dtype, attention in VARIANTS:
            path = args.out / "runs" / f"{dtype}_{attention}.json"
            show(measure_command(args, overrides, dtype, attention, path), args.platform)
        split = args.out / "resume" / "interrupted"
        show(train_command(args, overrides, args.out / "resume" / "uninterrupted"), args.platform)
        show(
            train_command(args, overrides, split),
            args.platform,
            f"SIGTERM once metrics.jsonl shows step {resume_steps(args.steps) // 4}; must exit 75",
        )
        show(train_command(args, overrides, split), args.platform, "must resume and exit 0")
        return 0
    for sub in ("runs", "logs", "resume"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    result_path = args.out / "result.json"
    result = {
        "schema": SCHEMA, "finished": False, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [sys.argv[0], *(sys.argv[1:] if argv is None else argv)],
        "config": {"path": args.config, "overrides": overrides, "steps": args.steps,
                   "warmup": args.warmup, "platform": args.platform},
        "host": host_info(), "runs": {},
    }  # fmt: skip
    start = time.monotonic()

    def save() -> None:
        result["wall_sec"] = time.monotonic() - start
        result_path.write_text(json.dumps(finite_json(result), indent=1, allow_nan=False) + "\n")

    measure_variants(args, overrides, result, save)
    resume_stage(args, overrides, result, save)
    result["checks"], result["verdict"] = run_checks(result)
    result["passed"] = all(c["passed"] is not False for c in result["checks"].values())
    result["finished"] = True
    save()
    lines = summary_lines(result)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"result: {result_path}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
