"""The TPU smoke run's checks, verdict and human summary, from what tools/tpu_smoke.py measured.

Each check is {"passed": True | False | None, ...figures}; None means not applicable here
(e.g. device memory on CPU, which reports none), never "did not run": a variant that failed
to run fails every check that needs it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# Splash against xla, same dtype, same initial parameters and batches. Every step's loss and
# gradient norm: the first step compares the forward and backward exactly; later steps
# drift apart only by rounding. 2%: bfloat16 rounding over ~15 steps stays well inside.
ATTENTION_RTOL = 0.02
# The kernel's outputs and gradients against xla's, relative to the largest reference value.
# Not tighter in float32: TPU matmuls on float32 take one bfloat16 pass at default precision.
KERNEL_RTOL = 0.02
# bfloat16 against float32 compute (parameters and optimizer stay float32 in both): only
# the losses, which bfloat16's 8-bit mantissa moves by a few tenths of a percent per step.
DTYPE_RTOL = 0.05
# Device peak over the dry run's XLA plan. Above 1.25 the plan under-promises enough to turn
# a "fits" into an out-of-memory; below 0.5 it wastes the memory it tells people to leave.
MEMORY_RATIO = (0.5, 1.25)


def _max_rel(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        return math.inf
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True))


def _ok(run: dict | None) -> bool:
    return bool(run) and run.get("status") == "ok"


def _failed_runs(*runs: tuple[str, dict | None]) -> dict:
    return {"passed": False, "reason": "did not run: " + "; ".join(
        f"{name}: {(run or {}).get('error', 'missing')}" for name, run in runs if not _ok(run)
    )}  # fmt: skip


def attention_check(runs: dict, dtype: str) -> dict:
    xla, splash = runs.get(f"{dtype}_xla"), runs.get(f"{dtype}_splash")
    if not (_ok(xla) and _ok(splash)):
        return _failed_runs((f"{dtype}_xla", xla), (f"{dtype}_splash", splash))
    kernel = splash["kernel_check"]
    kernel_rel = {
        name: diff / max(kernel["max_abs_reference"][name], 1e-12)
        for name, diff in kernel["max_abs_diff"].items()
    }
    loss = _max_rel(xla["losses"], splash["losses"])
    grad = _max_rel(xla["grad_norms"], splash["grad_norms"])
    return {
        "passed": loss <= ATTENTION_RTOL
        and grad <= ATTENTION_RTOL
        and max(kernel_rel.values()) <= KERNEL_RTOL,
        "max_rel_loss_diff": loss,
        "max_rel_grad_norm_diff": grad,
        "kernel_max_rel_diff": kernel_rel,
        "tolerance": {"losses": ATTENTION_RTOL, "kernel": KERNEL_RTOL},
        "speedup": splash["bench"]["tokens_per_sec"] / xla["bench"]["tokens_per_sec"],
        "splash_mode": splash["splash_mode"],
    }


def dtype_check(runs: dict, attention: str) -> dict:
    bf16, f32 = runs.get(f"bfloat16_{attention}"), runs.get(f"float32_{attention}")
    if not (_ok(bf16) and _ok(f32)):
        return _failed_runs((f"bfloat16_{attention}", bf16), (f"float32_{attention}", f32))
    loss = _max_rel(f32["losses"], bf16["losses"])
    return {
        "passed": loss <= DTYPE_RTOL,
        "max_rel_loss_diff": loss,
        "tolerance": DTYPE_RTOL,
        "speedup": bf16["bench"]["tokens_per_sec"] / f32["bench"]["tokens_per_sec"],
    }


def memory_check(run: dict) -> dict:
    if not _ok(run):
        return _failed_runs(("run", run))
    plan, bench = run["plan"]["xla_bytes"], run["bench"]
    measured = bench.get("device_peak_bytes")
    figures = {"plan_xla_bytes": plan, "plan_analytic_bytes": run["plan"]["analytic_bytes"]}
    if measured is None:
        return figures | {
            "passed": None,
            # The process RSS is no stand-in: it holds Python, TF and the compiler too.
            "reason": "no device peak memory on CPU",
            "process_peak_rss_bytes": bench.get("process_peak_rss_bytes"),
        }
    ratio = measured / plan if plan else math.inf
    low, high = MEMORY_RATIO
    return figures | {
        "passed": low <= ratio <= high,
        "device_peak_bytes": measured,
        "measured_over_plan": ratio,
        "tolerance": list(MEMORY_RATIO),
    }


def _checkpoint_fingerprints(workdir: Path, step: int) -> dict | None:
    # The metadata item Orbax's JSON handler wrote; read as a file so this process needs no
    # JAX backend (on a TPU VM it would hold the TPU).
    path = workdir / "checkpoints" / str(step) / "metadata" / "metadata"
    return json.loads(path.read_text())["fingerprints"] if path.is_file() else None


def resume_check(stage: dict | None) -> dict:
    from gptjax.metrics import read_metrics

    if not stage or "workdirs" not in stage:
        return {"passed": False, "reason": "the resume stage did not run"}
    steps = stage["steps"]
    check = {
        "steps": steps,
        "exit_codes": {
            "uninterrupted": stage["uninterrupted_exit_code"],
            "after_sigterm": stage["interrupted"]["exit_code"],
            "resumed": stage["resumed_exit_code"],
        },
        "sigterm_at_step": stage["interrupted"]["signalled_at_step"],
        "resumed_from_step": stage["resumed_from_step"],
    }
    if check["exit_codes"] != {"uninterrupted": 0, "after_sigterm": 75, "resumed": 0}:
        return check | {"passed": False, "reason": "exit codes are not 0, 75 (preempted), 0"}
    runs = {}
    for name, workdir in stage["workdirs"].items():
        records = read_metrics(Path(workdir) / "metrics.jsonl")
        runs[name] = {
            # A step logged twice (re-run after the resume) keeps its last value.
            "losses": {r["step"]: r["loss"] for r in records if "loss" in r},
            "eval": [r["eval/loss"] for r in records if "eval/loss" in r][-1:],
            "fingerprints": _checkpoint_fingerprints(Path(workdir), steps),
        }
    full, split = runs["uninterrupted"], runs["interrupted"]
    differing = [s for s in sorted(full["losses"]) if full["losses"][s] != split["losses"].get(s)]
    prints_full, prints_split = full["fingerprints"], split["fingerprints"]
    leaves_differing = (
        None
        if prints_full is None or prints_split is None
        else sum(
            prints_full[part].get(leaf) != prints_split[part].get(leaf)
            for part in ("params", "trainer")
            for leaf in prints_full[part].keys() | prints_split[part].keys()
        )
    )
    check |= {
        "steps_compared": len(full["losses"]),
        "losses_equal": full["losses"] == split["losses"] and len(full["losses"]) == steps,
        "first_differing_step": differing[0] if differing else None,
        "final_eval_equal": bool(full["eval"]) and full["eval"] == split["eval"],
        "final_checkpoint_leaves_differing": leaves_differing,
    }
    check["passed"] = (
        check["losses_equal"] and check["final_eval_equal"] and leaves_differing == 0
        and check["resumed_from_step"] is not None and 0 < check["resumed_from_step"] < steps
    )  # fmt: skip
    return check


def _choose(check: dict, candidate: str, baseline: str, unknown: str) -> tuple[str, str]:
    """`candidate` if it passed its check and is faster, else `baseline`; and why."""
    if not check["passed"]:
        return baseline, f"{candidate} failed its check: " + check.get("reason", unknown)
    choice = candidate if check["speedup"] > 1 else baseline
    return choice, f"{candidate} runs at {check['speedup']:.2f}x {baseline} and agrees"


def verdict(checks: dict, platform: str) -> dict:
    """What the configs should use, decided by bfloat16 runs (the TPU configs' dtype)."""
    attention, dtype = checks["attention_bfloat16"], checks["dtype_xla"]
    out = {"decided_on": platform}
    out["attention"], out["attention_why"] = _choose(attention, "splash", "xla", "see it")
    out["dtype"], out["dtype_why"] = _choose(dtype, "bfloat16", "float32", "losses differ")
    if platform != "tpu":
        out["note"] = f"measured on {platform}: not a TPU decision"
    return out


def run_checks(result: dict) -> tuple[dict, dict]:
    runs = result["runs"]
    checks = {f"attention_{d}": attention_check(runs, d) for d in ("bfloat16", "float32")}
    checks |= {f"dtype_{a}": dtype_check(runs, a) for a in ("xla", "splash")}
    checks |= {f"memory_{name}": memory_check(run) for name, run in runs.items()}
    checks["resume_bitwise"] = resume_check(result.get("resume"))
    return checks, verdict(checks, result["config"]["platform"])


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def _mib(n) -> str:
    return "?" if n is None else f"{n / 2**20:,.0f} MiB"


def summary_lines(result: dict) -> list[str]:
    """The human summary: one line per variant, one per check, then the verdict."""
    runs, checks = result["runs"], result["checks"]
    devices = next((r["bench"]["config"]["devices"] for r in runs.values() if _ok(r)), "?")
    lines = [
        f"gptjax TPU smoke: {devices} · {result['config']['path']} · "
        f"{result['config']['steps']} timed steps per variant · {result['wall_sec']:.0f}s",
        f"{'variant':<17} {'tokens/s':>12} {'step ms':>9} {'MFU':>6} {'compile s':>9}  "
        "peak memory vs dry-run plan",
    ]
    for name, run in runs.items():
        if not _ok(run):
            lines.append(f"{name:<17} FAILED (exit {run['exit_code']}): {run.get('error', '')}")
            continue
        bench = run["bench"]
        peak = bench.get("device_peak_bytes")
        memory = f"{_mib(peak)} vs {_mib(run['plan']['xla_bytes'])}" if peak else "n/a on CPU"
        step_ms = bench["step_sec"]["median"] * 1e3
        # None where gptjax knows no peak for the chip and dtype (float32 on TPU).
        mfu = "n/a" if bench["mfu"] is None else f"{100 * bench['mfu']:.1f}%"
        lines.append(
            f"{name:<17} {bench['tokens_per_sec']:>12,.0f} {step_ms:>9.1f}"
            f" {mfu:>6} {bench['compile_sec']:>9.1f}  {memory}"
        )
    for name, check in checks.items():
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[check["passed"]]
        figures = {k: v for k, v in check.items() if k not in ("passed", "tolerance")}
        text = ", ".join(f"{k}={_short(v)}" for k, v in figures.items())
        lines.append(f"{mark} {name}: {text}")
    v = result["verdict"]
    note = f"; {v['note']}" if "note" in v else ""
    lines.append(
        f"verdict: attention={v['attention']} ({v['attention_why']}); "
        f"dtype={v['dtype']} ({v['dtype_why']}){note}"
    )
    lines.append("all checks passed" if result["passed"] else "SOME CHECKS FAILED: see above")
    return lines
