"""`gptjax bench`: a config's train step, compiled once and timed step by step.

The step timed is the one `gptjax train` runs (same model, optimizer, shardings, donation),
fed either by the config's own data pipeline or by synthetic batches of random tokens (no
tokenizer, no corpus: any vocabulary size). Each step is timed from taking its batch to the
step's result being ready; the time spent taking the batch (host pipeline + transfer) is
reported as the input-wait fraction.

Figures match MaxText's logs: model FLOPs per token by the causal formula in
`gptjax.model.flops_per_token`, MFU against `gptjax.train.peak` (a datasheet peak per chip on
TPU/GPU; on CPU the robust peak: the fastest of many matmuls timed in this process before and
after the steps, with the spread of the readings in the report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import resource
import tempfile
import time
from collections.abc import Iterator

import jax
import numpy as np
from etils import epath
from flax.core import spmd as flax_spmd

from gptjax import sharding
from gptjax.config import validate
from gptjax.errors import ConfigError
from gptjax.metrics import ProgressBar
from gptjax.model import count_params, flops_per_token
from gptjax.objectives import objective_for
from gptjax.paths import as_path
from gptjax.steps import base_params, jit_train_step, state_and_step
from gptjax.train.memory_report import refuse_what_cannot_fit
from gptjax.train.peak import PeakReadings, total_peak_flops
from gptjax.train.workdir_lock import hold_workdir, writable_workdir

DATA_KINDS = ("synthetic", "config")


@dataclasses.dataclass
class TrainBench:
    """A compiled train step, its live state and its batches, ready to be timed."""

    config: object
    model_config: object
    mesh: jax.sharding.Mesh
    step: object  # the compiled train step
    state: object
    batches: Iterator[dict]  # this process's numpy batches
    compile_sec: float
    step_memory: dict  # XLA's buffer plan of the compiled step, bytes per device
    frozen: tuple = ()  # with LoRA: (base params,), randomly initialised (speed only)

    @property
    def tokens_per_step(self) -> int:
        return self.config.train.global_batch_size * self.config.data.seq_len

    @property
    def flops_per_token(self) -> float:
        return flops_per_token(self.model_config, self.config.data.seq_len)

    def time_steps(self, count: int) -> list[tuple[float, float]]:
        """Runs `count` steps; (seconds taking the batch, seconds in the step) for each.

        Each step is waited for, so the times are the step's own (the training loop instead
        overlaps the next batch with the running step: its input wait can only be lower).
        """
        times = []
        with jax.set_mesh(self.mesh), flax_spmd.logical_axis_rules(self._rules):
            for _ in range(count):
                start = time.perf_counter()
                batch = sharding.global_batch_from_local(next(self.batches), self.mesh)
                ready = time.perf_counter()
                self.state, metrics = self.step(self.state, batch, *self.frozen)
                jax.block_until_ready(metrics)
                times.append((ready - start, time.perf_counter() - ready))
        return times

    @property
    def _rules(self):
        return tuple(self.config.sharding_rules)


def build_bench(config, *, data: str = "synthetic", workdir: epath.Path | None = None, log=print):
    """Validates `config`, builds its sharded state and compiles its train step.

    data="config" prepares the config's own data (tokenizer, cache) in `workdir`;
    "synthetic" feeds random tokens of the model's vocabulary, packed like pretraining rows.
    """
    if data not in DATA_KINDS:
        raise ConfigError(f"--data must be one of {DATA_KINDS}, got {data!r}")
    objective = objective_for(config.phase)
    if objective.needs_reference:
        raise ConfigError(
            f"bench times the pretrain/sft step; phase={config.phase} needs a reference model"
        )
    derived = validate(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    refuse_what_cannot_fit(config)  # before the state is allocated
    model_config = derived["model"]
    mesh = sharding.make_mesh(config.mesh.to_dict())
    rules = tuple(config.sharding_rules)
    lora = derived["lora"]  # LoRA's step: adapters trained over a frozen base
    create, step_fn = state_and_step(config, model_config, objective.loss, lora)
    frozen, frozen_shardings = (), ()
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        state, shardings = sharding.sharded_init(
            create, mesh, rules, shard_optimizer=config.train.shard_optimizer
        )
        if lora is not None:
            base, base_shardings = sharding.sharded_init(
                lambda: base_params(model_config), mesh, rules
            )
            frozen, frozen_shardings = (base,), (base_shardings,)
    if data == "synthetic":
        batches = synthetic_batches(config, model_config.vocab_size)
    else:
        batches = _config_batches(config, model_config, workdir, log)
    start = time.perf_counter()
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        example = sharding.global_batch_from_local(next(batches), mesh)
        jitted = jit_train_step(step_fn, shardings, mesh, frozen_shardings)
        compiled = jitted.lower(state, example, *frozen).compile()
    compile_sec = time.perf_counter() - start
    return TrainBench(
        config=config,
        model_config=model_config,
        mesh=mesh,
        step=compiled,
        state=state,
        batches=batches,
        compile_sec=compile_sec,
        step_memory=_step_memory(compiled),
        frozen=frozen,
    )


def synthetic_batches(config, vocab_size: int, distinct: int = 4) -> Iterator[dict]:
    """This process's rows of random tokens, one document per row, cycling over `distinct`
    batches made once (so host time per step is only the transfer, as with a prefetched
    pipeline)."""
    rows = config.train.global_batch_size // jax.process_count()
    length = config.data.seq_len
    rng = np.random.default_rng(config.seed + jax.process_index())
    made = []
    for _ in range(distinct):
        tokens = rng.integers(0, vocab_size, (rows, length + 1), dtype=np.int32)
        made.append(
            {
                "inputs": tokens[:, :-1],
                "targets": tokens[:, 1:],
                "weights": np.ones((rows, length), np.float32),
                "segment_ids": np.ones((rows, length), np.int32),
                "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)),
            }
        )
    index = 0
    while True:
        yield made[index % distinct]
        index += 1


def _config_batches(config, model_config, workdir: epath.Path | None, log) -> Iterator[dict]:
    from gptjax.data.run_data import prepare_run_data
    from gptjax.data.shard_verify import verify_once
    from gptjax.train.loop import train_batches

    if workdir is None:
        raise ConfigError("--data config needs --workdir (where the tokenizer and cache go)")
    workdir.mkdir(parents=True, exist_ok=True)
    run_data = prepare_run_data(config.data, model_config.vocab_size, workdir, log)
    if run_data.prepared is not None:
        verify_once(run_data.prepared, workdir, verify=config.data.verify_shards, log=log)
    return train_batches(config, run_data, start_step=0)


def _step_memory(compiled) -> dict:
    """Per-device bytes of the compiled step as XLA planned them (empty when not reported)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    fields = ("argument", "output", "alias", "temp", "generated_code")
    plan = {f"{name}_bytes": int(getattr(analysis, f"{name}_size_in_bytes")) for name in fields}
    # Donated arguments alias the outputs: they are counted once.
    plan["peak_bytes"] = (
        plan["argument_bytes"] + plan["output_bytes"] - plan["alias_bytes"] + plan["temp_bytes"]
    )
    return plan


def measured_peak_memory() -> dict:
    """Peak memory actually used so far: per device on accelerators, the process's RSS on CPU."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return {"device_peak_bytes": int(stats["peak_bytes_in_use"])}
    # ru_maxrss is KiB on Linux.
    return {"process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def summarize(
    bench: TrainBench, times: list[tuple[float, float]], cpu_peak: PeakReadings | None = None
) -> dict:
    """The report: step time (median, min, max), tokens/s, FLOPs, MFU, input wait, memory.

    `cpu_peak`: robust readings of the CPU peak to take MFU against; without them (or off
    CPU) the quick in-process peak or the accelerator's datasheet figure.
    """
    waits = np.array([wait for wait, _ in times])
    totals = waits + np.array([step for _, step in times])
    median = float(np.median(totals))
    if cpu_peak is not None and jax.devices()[0].platform == "cpu":
        peak, peak_source, peak_stats = cpu_peak.peak, cpu_peak.describe(), cpu_peak.stats()
    else:
        peak, peak_source = total_peak_flops(jax.devices(), bench.model_config.dtype)
        peak_stats = None
    tokens_per_sec = bench.tokens_per_step / median
    model_flops = tokens_per_sec * bench.flops_per_token
    return {
        "config": {
            "parameters": count_params(bench.model_config),
            "seq_len": bench.config.data.seq_len,
            "global_batch_size": bench.config.train.global_batch_size,
            "vocab_size": bench.model_config.vocab_size,
            "dtype": bench.model_config.dtype,
            "remat": bench.model_config.remat,
            "mesh": dict(bench.mesh.shape),
            "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        },
        "steps_timed": len(times),
        "step_sec": {
            "median": median,
            "min": float(totals.min()),
            "max": float(totals.max()),
        },
        "tokens_per_sec": tokens_per_sec,
        "flops_per_token": bench.flops_per_token,
        "model_flops_per_sec": model_flops,
        "peak_flops_per_sec": peak,
        "peak_source": peak_source,
        "peak_readings": peak_stats,
        "mfu": model_flops / peak if math.isfinite(peak) else float("nan"),
        "input_wait_fraction": float(waits.sum() / totals.sum()),
        "compile_sec": bench.compile_sec,
        "step_memory": bench.step_memory,
        **measured_peak_memory(),
    }


def run_bench(
    config, *, steps: int, warmup: int, data: str, workdir=None, log=print, progress=True
) -> dict:
    """Builds, warms up and times `steps` steps of `config`; the `summarize` report.

    A progress bar (stderr) counts warm-up and timed steps: a large model on CPU takes minutes
    per step.
    """
    if steps < 1 or warmup < 0:
        raise ConfigError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    with contextlib.ExitStack() as stack:
        if workdir is not None and data == "config":  # it writes the tokenizer and caches there
            workdir = writable_workdir(workdir)
            stack.enter_context(hold_workdir(workdir, "bench"))
        else:
            workdir = as_path(stack.enter_context(tempfile.TemporaryDirectory()))
        bench = build_bench(config, data=data, workdir=workdir, log=log)
        log(f"compiled in {bench.compile_sec:.1f}s; {warmup} warm-up steps, then {steps} timed")
        on_cpu = jax.devices()[0].platform == "cpu"
        cpu_peak = PeakReadings().measure() if on_cpu else None  # before the steps ...
        times = []
        with ProgressBar(warmup + steps, desc="bench", enabled=progress) as bar:
            for index in range(warmup + steps):
                ((wait, step),) = bench.time_steps(1)
                if index >= warmup:
                    times.append((wait, step))
                bar.update(index + 1, **{"step_s": wait + step})
        if cpu_peak is not None:
            cpu_peak.measure()  # ... and after them, so a load that came or went shows
    return summarize(bench, times, cpu_peak)


def format_report(report: dict) -> str:
    """The human-readable lines of a `summarize` report."""
    cfg, step = report["config"], report["step_sec"]
    memory = report["step_memory"].get("peak_bytes")
    lines = [
        f"model       {cfg['parameters']:,} parameters, {cfg['dtype']}, remat {cfg['remat']}, "
        f"batch {cfg['global_batch_size']} x seq {cfg['seq_len']}, vocab {cfg['vocab_size']}",
        f"devices     {cfg['devices']}, mesh {cfg['mesh']}",
        f"step        median {step['median'] * 1e3:.1f} ms (min {step['min'] * 1e3:.1f}, "
        f"max {step['max'] * 1e3:.1f}) over {report['steps_timed']} steps",
        f"throughput  {report['tokens_per_sec']:,.0f} tokens/s",
        f"model FLOPs {report['flops_per_token'] / 1e6:.2f} MFLOP/token -> "
        f"{report['model_flops_per_sec'] / 1e9:.1f} GFLOP/s",
        f"MFU         {100 * report['mfu']:.1f}% of {report['peak_flops_per_sec'] / 1e9:.0f} "
        f"GFLOP/s ({report['peak_source']})",
        f"input wait  {100 * report['input_wait_fraction']:.1f}% of step time",
        f"compile     {report['compile_sec']:.1f}s",
    ]
    if memory is not None:
        lines.append(f"step memory {memory / 2**20:,.0f} MiB per device (XLA's plan)")
    if "device_peak_bytes" in report:
        lines.append(f"peak memory {report['device_peak_bytes'] / 2**20:,.0f} MiB (device)")
    else:
        rss = report["process_peak_rss_bytes"]
        lines.append(f"peak memory {rss / 2**20:,.0f} MiB (process resident set, host)")
    return "\n".join(lines)
