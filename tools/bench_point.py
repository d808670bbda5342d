"""One speed-and-memory point of a training step, measured in a process of its own.

Run:    python tools/bench_point.py gptjax --config configs/nanogpt_cpu.py --steps 3
        python tools/bench_point.py nanogpt --config configs/nanogpt_cpu.py --steps 3
Prints one JSON object: tokens/s (median step), resident memory, and for gptjax XLA's plan.

tools/bench_sweep.py runs one of these per (side, shape) so that neither memory nor threads
carry over from one point to the next. Memory is measured the same way for every side: the
process's resident set (RSS) before the model exists (the baseline: Python, the framework
and, for gptjax, the step already compiled from abstract shapes, so the compiler's memory is
not counted as the step's), and the highest RSS sampled every 10 ms from building the model's
state through the last step (the torch side allocates its AdamW moments in its first step,
inside the window). "Above baseline" is what the parameters, the optimizer state and the
step's activations took. ru_maxrss (the whole process, compile included) is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_gpt, torch_reference

SIDES = ("gptjax", "nanogpt", "transformers")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssSampler:
    """The highest RSS seen by a background thread polling every `interval` seconds."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak = interval, rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("side", choices=SIDES, help="gptjax or a PyTorch reference")
    parser.add_argument("--config", required=True, help="a GPT-2-family config file")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--cpu-devices", type=int, default=os.cpu_count(), help="gptjax devices")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    return parser.parse_args(rest), overrides


def _config(path: str, overrides: list[str]):
    from gptjax.config import apply_overrides, load_config_file, model_config

    config = load_config_file(path)
    apply_overrides(config, overrides)
    return config, model_config(config)


def measure_gptjax(args, overrides) -> dict:
    """The train step `gptjax train` runs, compiled from abstract shapes before the baseline
    (as tools/bench_memory.py does), so the compiler's memory is not counted as the step's."""
    from gptjax.train.memory_plan import simulate_host_devices

    simulate_host_devices(args.cpu_devices)  # before JAX starts its backend
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from flax.core import spmd as flax_spmd

    from gptjax import sharding
    from gptjax.config import validate
    from gptjax.train import memory_plan
    from gptjax.train.bench import synthetic_batches

    config, _ = _config(args.config, overrides)
    model = validate(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    model = model["model"]
    mesh = sharding.make_mesh(config.mesh.to_dict())
    rules = tuple(config.sharding_rules)
    create, target, shardings, jitted, _ = memory_plan.train_step_parts(config, model, mesh)
    rows, seq = config.train.global_batch_size, config.data.seq_len
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        compiled = jitted.lower(target, memory_plan.abstract_batch(mesh, rows, seq)).compile()
        analysis = compiled.memory_analysis()
        baseline = rss_bytes()
        batches = synthetic_batches(config, model.vocab_size)
        times = []
        with RssSampler() as sampler:
            state = jax.jit(create, out_shardings=shardings)()
            for index in range(args.warmup + args.steps):
                start = time.perf_counter()
                batch = sharding.global_batch_from_local(next(batches), mesh)
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics)
                if index >= args.warmup:
                    times.append(time.perf_counter() - start)
    plan = None
    if analysis is not None:  # arguments + outputs - donated aliases + temporaries
        plan = analysis.argument_size_in_bytes + analysis.output_size_in_bytes
        plan += analysis.temp_size_in_bytes - analysis.alias_size_in_bytes
    return {
        "tokens_per_step": rows * seq,
        "step_sec": times,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": sampler.peak,
        "xla_plan_bytes_per_device": plan,
        "devices": jax.device_count(),
        "final_loss": float(metrics["loss"]),
    }


def measure_torch(args, overrides) -> dict:
    import torch  # noqa: F401  (in the baseline, as jax is on the gptjax side)
    from torch_gpt import check_gpt2_family
    from torch_reference import TorchTrainer

    config, shape = _config(args.config, overrides)
    check_gpt2_family(shape)
    baseline = rss_bytes()
    with RssSampler() as sampler:
        trainer = TorchTrainer(args.side, config, shape, args.threads)
        trainer.time_steps(args.warmup)
        times = trainer.time_steps(args.steps)
    return {
        "tokens_per_step": config.train.global_batch_size * config.data.seq_len,
        "step_sec": times,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": sampler.peak,
        "threads": args.threads,
        "final_loss": trainer.last_loss,
    }


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    measure = measure_gptjax if args.side == "gptjax" else measure_torch
    config, _ = _config(args.config, overrides)
    report = {
        "side": args.side,
        "batch": config.train.global_batch_size,
        "seq_len": config.data.seq_len,
        "vocab_size": config.model.vocab_size,
        **measure(args, overrides),
    }
    report["tokens_per_sec"] = report["tokens_per_step"] / statistics.median(report["step_sec"])
    # ru_maxrss is KiB on Linux: the whole process's high-water mark, compile included.
    report["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
