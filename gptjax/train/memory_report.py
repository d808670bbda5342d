"""`gptjax train --dry-run`: prints the per-device memory plan and warns when it cannot fit;
a real run (`refuse_what_cannot_fit`) is refused instead, before it allocates anything.

Nothing is allocated on a device and nothing is written: the workdir is not even read.
"""

from __future__ import annotations

import os

from gptjax.config import validate_static
from gptjax.errors import ConfigError

GIB = 2**30  # --device-memory counts GiB, as accelerator memory is quoted (16 GB HBM = 16 GiB)


def human(n: int) -> str:
    units = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
    for unit, size in units:
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _spec(spec) -> str:
    return "P(" + ", ".join(repr(axis) if axis is not None else "None" for axis in spec) + ")"


def report_lines(plan) -> list[str]:
    mesh = " ".join(f"{axis}={size}" for axis, size in plan.mesh_shape.items())
    lines = [
        f"dry run: mesh {mesh}{plan.dcn_note} over {plan.device_count} {plan.platform} "
        "device(s) · "
        f"{plan.param_count:,} parameters · {plan.rows_per_device} row(s) x {plan.seq_len} tokens "
        f"per device per micro-batch · remat {plan.remat!r}",
        "per-device memory (analytic):",
        f"  parameters        {human(plan.param_bytes):>12}",
        f"  optimizer state   {human(plan.optimizer_bytes):>12}",
        f"  gradients         {human(plan.gradient_bytes):>12}",
        f"  activations       {human(plan.activations[plan.remat]):>12}   (remat {plan.remat!r})",
        f"  inputs, counters  {human(plan.other_bytes):>12}",
        f"  total             {human(plan.analytic_total):>12}",
        "  activations by remat policy: "
        + " · ".join(f"{p} {human(b)}" for p, b in plan.activations.items()),
    ]
    if plan.full_finetune:
        lines += _lora_lines(plan)
    if plan.compiled:
        c = plan.compiled
        lines.append(
            "XLA's plan (the train step compiled on abstract inputs, per device): "
            f"arguments {human(c['argument'])} · outputs {human(c['output'])} "
            f"({human(c['alias'])} aliased to the donated state) · temporaries "
            f"{human(c['temp'])} · peak {human(c['peak'])}"
        )
    else:
        lines.append(plan.note)
    lines.append("largest parameters (>= 1% of all; bytes per device):")
    rows = [(r.path, str(r.shape), _spec(r.spec), str(r.shard_shape)) for r in plan.large_params]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row, r in zip(rows, plan.large_params, strict=True):
        path, shape, spec, shard = (text.ljust(w) for text, w in zip(row, widths, strict=True))
        lines.append(f"  {path}  {shape}  {spec}  per device {shard}  {human(r.device_bytes):>11}")
    source = "XLA's plan" if plan.compiled else "analytic"
    lines.append(f"estimated per-device total: {human(plan.total)} ({source})")
    return lines


def _lora_lines(plan) -> list[str]:
    """What LoRA saves per device against a full finetune of the same model and batch."""
    full = plan.full_finetune
    full_total = plan.analytic_total - plan.param_bytes - plan.optimizer_bytes
    full_total += full["params"] + full["optimizer"] + full["gradients"] - plan.gradient_bytes
    return [
        f"LoRA: {full['trained']:,} of {plan.param_count:,} parameters trained "
        f"({full['trained'] / plan.param_count:.2%}); a full finetune would hold optimizer state "
        f"{human(full['optimizer'])} (here {human(plan.optimizer_bytes)}) and gradients "
        f"{human(full['gradients'])} (here {human(plan.gradient_bytes)}): total "
        f"{human(full_total)} against {human(plan.analytic_total)} (analytic), "
        f"{human(full_total - plan.analytic_total)} saved per device",
    ]


def fit_lines(plan, limit: int | None, source: str) -> list[str]:
    """The device-memory verdict: one line, plus a WARNING line when the plan does not fit."""
    if limit is None:
        return ["device memory: not reported by this backend; give --device-memory GB to check"]
    lines = [f"device memory: {human(limit)} ({source})"]
    if plan.total <= limit:
        lines[0] += f": fits, {human(limit - plan.total)} to spare"
        return lines
    hints = []
    if plan.remat != "full":
        hints.append("model.remat=full" + (" or dots" if plan.remat == "none" else ""))
    hints.append("more mesh.fsdp (shards parameters and optimizer state)")
    hints.append(
        "a smaller micro-batch (train.grad_accum_steps up or train.global_batch_size down)"
    )
    lines.append(
        f"WARNING: the estimated {human(plan.total)} per device exceeds the {human(limit)} of "
        f"device memory by {human(plan.total - limit)}; try {', '.join(hints)} "
        "(the dry run still exits 0)"
    )
    return lines


def dry_run(
    config,
    devices: int | None = None,
    device_memory_gb: float | None = None,
    compile: bool = True,
    out=print,
):
    """Validates `config`, plans its memory on `devices` devices and prints the report."""
    validate_static(config)  # config errors first, before JAX starts a backend
    if devices is not None and devices < 1:
        raise ConfigError(f"--devices must be a positive integer, got {devices}")
    if device_memory_gb is not None and not device_memory_gb > 0:
        raise ConfigError(
            f"--device-memory must be a positive number of GB, got {device_memory_gb}"
        )
    from gptjax.train import memory_plan

    if devices is not None:
        memory_plan.simulate_host_devices(devices)  # on CPU: that many devices to compile for
    plan = memory_plan.plan_memory(config, devices, compile=compile)
    if device_memory_gb is not None:
        limit, source = int(device_memory_gb * GIB), "--device-memory"
    else:
        limit, source = memory_plan.device_memory_limit(), "reported by the device"
    for line in report_lines(plan) + fit_lines(plan, limit, source):
        out(line)
    return plan


def host_memory() -> tuple[int, str]:
    """(bytes this process may use, where the figure comes from): the machine's physical
    memory, or its cgroup's limit (a container) when that is lower."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < physical:
            return int(text), f"this host's memory (cgroup limit, {limit_file})"
    return physical, "this host's physical memory"


def refuse_what_cannot_fit(config) -> None:
    """ConfigError (exit 2), before anything is allocated or compiled, when the run's state
    cannot fit in the devices' memory (the host's, on CPU).

    Only what must coexist is counted: parameters, optimizer state and gradients (global-norm
    clipping needs every gradient before the first update) and the inputs, from the analytic
    plan (abstract shapes, no compile). Activations are left out, so a run that might fit is
    never refused; `--dry-run` shows the whole estimate.
    """
    import jax

    from gptjax.train import memory_plan

    plan = memory_plan.plan_memory(config, jax.device_count(), compile=False)
    per_device = plan.param_bytes + plan.optimizer_bytes + plan.gradient_bytes + plan.other_bytes
    limit = memory_plan.device_memory_limit()
    if limit is not None:
        needed, what = per_device, f"per device, more than the {human(limit)} each device holds"
    else:  # CPU devices share the host's memory
        devices = jax.local_device_count()
        limit, source = host_memory()
        needed = per_device * devices
        what = f"on this host's {devices} CPU device(s), more than {source} of {human(limit)}"
    if needed <= limit:
        return
    raise ConfigError(
        f"this run cannot fit in memory: {plan.param_count:,} parameters with their optimizer "
        f"state and gradients need {human(needed)} ({needed:,} bytes) {what} ({limit:,} "
        "bytes), before any activation; make the model smaller or shard it over more devices "
        "(mesh.fsdp); `gptjax train --dry-run` prints the whole plan"
    )


def refuse_what_cannot_run(config) -> None:
    """ConfigError (exit 2) for what this runtime's devices decide: the mesh, the batch split
    over processes and devices, and memory; nothing is prepared, allocated or compiled."""
    import jax

    from gptjax.config import validate

    validate(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    refuse_what_cannot_fit(config)
