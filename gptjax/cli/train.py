"""`gptjax train` (with --dry-run) and `gptjax bench`: their flags and their bodies."""

from __future__ import annotations

import argparse
import json
import sys

from gptjax.cli.configs import builtin_names_help
from gptjax.errors import ConfigError
from gptjax.paths import as_path


def add_parsers(verbs) -> None:
    train = verbs.add_parser(
        "train",
        help="train a model from a config file",
        description="Train from a config file; any field can be overridden with "
        "--config.SECTION.FIELD=VALUE (e.g. --config.model.num_layers=4).",
    )
    train.add_argument("--config", required=True, help=builtin_names_help())
    train.add_argument("--workdir", required=True, help="directory for metrics, tokenizer, data")
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    _add_dry_run_args(train)
    _add_process_args(train)
    train.set_defaults(run=_train, takes_overrides=True)
    _add_bench_parser(verbs)


def _add_bench_parser(verbs) -> None:
    bench = verbs.add_parser(
        "bench",
        help="time a config's train step: tokens/s, MFU, compile time, memory",
        description="Compile a config's train step once, run --warmup steps, then time --steps "
        "steps (median, min, max). Reports tokens/s, model FLOPs per token (MaxText's causal "
        "formula), MFU against the device peak (measured in-process on CPU), the input-wait "
        "fraction, compile time and memory. Overrides as for train: --config.SECTION.FIELD=V.",
    )
    bench.add_argument("--config", required=True, help=builtin_names_help())
    bench.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    bench.add_argument(
        "--data",
        default="synthetic",
        choices=("synthetic", "config"),
        help="synthetic: random tokens of the model's vocabulary (default); config: the "
        "config's own data pipeline (needs --workdir for its tokenizer and cache)",
    )
    bench.add_argument(
        "--workdir",
        help="with --data config: where data is prepared (held, like train's, for the bench)",
    )
    bench.add_argument("--json", metavar="PATH", help="also write the report as JSON (- = stdout)")
    bench.set_defaults(run=_bench, takes_overrides=True)


def _add_dry_run_args(train: argparse.ArgumentParser) -> None:
    group = train.add_argument_group(
        "memory plan",
        "--dry-run validates the config, then prints the per-device bytes of parameters, "
        "optimizer state, gradients and activations (for remat none/full/dots), the sharding "
        "of the largest parameters and XLA's plan for the compiled train step; it allocates "
        "no array, writes nothing (the workdir need not exist) and exits 0.",
    )
    group.add_argument("--dry-run", action="store_true", help="print the memory plan and exit")
    group.add_argument(
        "--device-memory",
        type=float,
        metavar="GB",
        help="memory per device in GiB (e.g. 16); a plan above it prints a WARNING line. "
        "Default: what GPU/TPU devices report (CPU reports none)",
    )
    group.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="plan for N devices (default: this machine's). More than exist: on CPU they are "
        "simulated and XLA's plan compiled for them; on GPU/TPU only the analytic estimate",
    )
    group.add_argument(
        "--no-compile", action="store_true", help="skip XLA's plan (the analytic estimate only)"
    )


def _add_process_args(train: argparse.ArgumentParser) -> None:
    group = train.add_argument_group(
        "multi-process runs",
        "A multi-host Cloud TPU slice is detected by itself (run the same command on every "
        "host). Elsewhere (CPU/GPU clusters) give all three of --coordinator_address, "
        "--num_processes and --process_id; --num_processes 1 forces a one-process run.",
    )
    group.add_argument(
        "--coordinator_address",
        "--coordinator-address",
        metavar="HOST:PORT",
        help="address of process 0, where the others join (the same on every process)",
    )
    group.add_argument(
        "--num_processes", "--num-processes", type=int, metavar="N", help="processes in the run"
    )
    group.add_argument(
        "--process_id", "--process-id", type=int, metavar="I", help="this process: 0 .. N-1"
    )
    group.add_argument(
        "--initialization_timeout",
        "--initialization-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="how long every process may take to join before exit 2 (300)",
    )


def _adopt_architecture(config, workdir, on_purpose) -> None:
    """A finetune's architecture from its starting checkpoint, for --print-config and
    --dry-run (a training run does this itself, once the runtime has started)."""
    from gptjax.train.architecture import adopt_architecture, starting_model

    start = starting_model(config, workdir)
    if start is not None:
        adopt_architecture(config, *start, on_purpose, lambda line: print(line, file=sys.stderr))


def _train(args) -> None:
    from gptjax.config import load_config_with_origins

    config, on_purpose = load_config_with_origins(args.config, args.overrides)
    if args.print_config or args.dry_run:
        _adopt_architecture(config, args.workdir, on_purpose)
    if args.print_config:
        print(config)
        return
    if args.dry_run:
        from gptjax.train.memory_report import dry_run

        dry_run(config, args.devices, args.device_memory, compile=not args.no_compile)
        return
    if args.devices or args.device_memory or args.no_compile:
        raise ConfigError("--devices, --device-memory and --no-compile only apply to --dry-run")
    from gptjax.train.loop import train
    from gptjax.train.multihost import is_primary
    from gptjax.train.runtime import ClusterSpec

    cluster = ClusterSpec(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=args.initialization_timeout,
    )
    summary = train(config, args.workdir, cluster=cluster, on_purpose=on_purpose)
    objective = summary.pop("run").objective
    if not is_primary():
        return  # process 0 prints the summary
    evaluation, entropy = summary["eval"], summary["unigram_entropy"]
    print(objective.summary_line(evaluation, entropy, summary.get("start_eval")))
    train_stats = summary["train"]
    if train_stats:
        print(
            f"throughput {train_stats['tokens_per_sec']:.0f} tokens/s (median of logged windows), "
            f"MFU {100 * train_stats['mfu']:.1f}%, compile {summary['compile_sec']:.1f}s"
        )


def _bench(args) -> None:
    from gptjax.config import apply_overrides, load_config_file

    config = load_config_file(args.config)
    apply_overrides(config, args.overrides)
    from gptjax.train.bench import format_report, run_bench
    from gptjax.train.multihost import is_primary, primary_log
    from gptjax.train.runtime import initialize_runtime
    from gptjax.train.workdir_lock import writable_workdir

    if args.workdir is not None and args.data == "config":  # exit 2 before the runtime starts
        writable_workdir(args.workdir)
    initialize_runtime()  # a TPU slice's hosts join, as for train
    report = run_bench(
        config,
        steps=args.steps,
        warmup=args.warmup,
        data=args.data,
        workdir=args.workdir,
        log=primary_log(print),
        progress=is_primary(),
    )
    if not is_primary():
        return
    if args.json == "-":
        print(json.dumps(report, indent=1))
        return
    print(format_report(report))
    if args.json:
        as_path(args.json, "--json").write_text(json.dumps(report, indent=1) + "\n")
