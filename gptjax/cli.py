"""`gptjax <verb>`: parses flags and calls library functions; nothing else lives here.

Errors meant for people (`GptjaxError`) print one line and exit with their code (DESIGN.md):
2 config/usage · 65 data/tokenizer · 70 non-finite · 74 checkpoint I/O · 75 preempted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gptjax.errors import ConfigError, DataError, GptjaxError

_OVERRIDE_PREFIX = "--config."


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.a.b=v` (or `--config.a.b v`) overrides from the other flags.

    (other flags, overrides as `a.b=v`); the tools/ scripts parse their overrides with it too.
    """
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(_OVERRIDE_PREFIX):
            item = arg[len(_OVERRIDE_PREFIX) :]
            if "=" not in item:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg}: missing value (use {arg}=VALUE)")
                item, i = f"{item}={argv[i + 1]}", i + 1
            overrides.append(item)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptjax",
        description="Train GPT-style models in JAX on a device mesh, and sample from them.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    train = verbs.add_parser(
        "train",
        help="train a model from a config file",
        description="Train from a config file; any field can be overridden with "
        "--config.SECTION.FIELD=VALUE (e.g. --config.model.num_layers=4).",
    )
    train.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py")
    train.add_argument("--workdir", required=True, help="directory for metrics, tokenizer, data")
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    _add_dry_run_args(train)
    _add_process_args(train)
    checkpoints = verbs.add_parser(
        "checkpoints", help="list a run's checkpoints, or print one's arrays (--tree)"
    )
    checkpoints.add_argument("workdir", help="a gptjax workdir")
    checkpoints.add_argument(
        "--tree", action="store_true", help="print every array: shape, dtype, sharding"
    )
    checkpoints.add_argument("--step", type=int, help="with --tree: this step (default latest)")
    plot = verbs.add_parser("plot", help="draw a run's curves into a PNG")
    plot.add_argument("workdir", help="a workdir holding metrics.jsonl")
    plot.add_argument("--out", help="output PNG (default WORKDIR/curves.png)")
    _add_tokenizer_parser(verbs)
    _add_prepare_parser(verbs)
    _add_inference_parsers(verbs)
    _add_hf_parsers(verbs)
    _add_bench_parser(verbs)
    return parser


def _add_bench_parser(verbs) -> None:
    bench = verbs.add_parser(
        "bench",
        help="time a config's train step: tokens/s, MFU, compile time, memory",
        description="Compile a config's train step once, run --warmup steps, then time --steps "
        "steps (median, min, max). Reports tokens/s, model FLOPs per token (MaxText's causal "
        "formula), MFU against the device peak (measured in-process on CPU), the input-wait "
        "fraction, compile time and memory. Overrides as for train: --config.SECTION.FIELD=V.",
    )
    bench.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py")
    bench.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    bench.add_argument(
        "--data",
        default="synthetic",
        choices=("synthetic", "config"),
        help="synthetic: random tokens of the model's vocabulary (default); config: the "
        "config's own data pipeline (needs --workdir for its tokenizer and cache)",
    )
    bench.add_argument("--workdir", help="with --data config: where data is prepared")
    bench.add_argument("--json", metavar="PATH", help="also write the report as JSON (- = stdout)")


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


def _add_hf_parsers(verbs) -> None:
    imp = verbs.add_parser(
        "import-hf",
        help="turn a Hugging Face GPT-2/Llama directory into a gptjax checkpoint",
        description="Read config.json, the weights (safetensors, or pytorch_model.bin with "
        "torch) and the tokenizer of a Hugging Face model directory and write WORKDIR/"
        "checkpoints/0; then train from it with --config.init_from=WORKDIR or sample from it.",
    )
    imp.add_argument("model_dir", help="Hugging Face model directory (config.json + weights)")
    imp.add_argument("--workdir", required=True, help="new workdir for the checkpoint")
    imp.add_argument(
        "--add-chat-tokens",
        action="store_true",
        help="append the chat tokens (<|system|> <|user|> <|assistant|> <|end|>) the "
        "tokenizer lacks, for SFT; needs embedding rows for them (see --vocab-size)",
    )
    imp.add_argument(
        "--vocab-size",
        type=int,
        help="embedding rows, when more than the model's (new rows start as the mean "
        "embedding), e.g. 50304 for GPT-2 with chat tokens",
    )
    imp.add_argument("--mesh", help="device mesh to place the weights on (default fsdp=-1)")
    exp = verbs.add_parser(
        "export-hf",
        help="write a checkpoint as a Hugging Face model directory",
        description="Write config.json, safetensors weights and the tokenizer, loadable with "
        "transformers.AutoModelForCausalLM.from_pretrained(DIR).",
    )
    exp.add_argument("workdir", help="a workdir (or WORKDIR/checkpoints/STEP)")
    exp.add_argument("--out", required=True, help="new directory for the Hugging Face model")
    exp.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    exp.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    exp.add_argument(
        "--max-shard-gb", type=float, default=5.0, help="largest safetensors file, GB (5)"
    )


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument(
        "--mesh",
        help="device mesh for the parameters, e.g. data=1,tensor=-1 (default data=-1: every "
        "device holds the whole model)",
    )


def _add_sampling_args(parser: argparse.ArgumentParser, *, temperature: float, top_p: float):
    parser.add_argument("--max-new-tokens", type=int, default=128, help="token budget (128)")
    parser.add_argument(
        "--temperature", type=float, default=temperature, help=f"0 = greedy ({temperature})"
    )
    parser.add_argument("--top-k", type=int, default=0, help="keep the k likeliest (0 = off)")
    parser.add_argument(
        "--top-p", type=float, default=top_p, help=f"nucleus sampling mass (1 = off; {top_p})"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")


def _add_inference_parsers(verbs) -> None:
    sample = verbs.add_parser(
        "sample",
        help="complete prompts with a trained model",
        description="Complete each prompt; a chat model (phase sft/dpo) answers it as a user "
        "message through the chat template, a pretrained model continues the text.",
    )
    sample.add_argument("workdir", help="a workdir (or WORKDIR/checkpoints/STEP)")
    sample.add_argument("--prompt", action="append", default=[], help="a prompt; repeatable")
    sample.add_argument("--prompts-file", help="a file with one prompt per line")
    sample.add_argument(
        "--template",
        choices=("auto", "chat", "raw"),
        default="auto",
        help="auto: chat for sft/dpo checkpoints, raw text continuation otherwise",
    )
    _add_model_args(sample)
    _add_sampling_args(sample, temperature=0.8, top_p=1.0)

    chat = verbs.add_parser(
        "chat",
        help="talk to a trained chat model in the terminal",
        description="Interactive chat; the history is kept and sent through the chat "
        "template every turn. Commands: /reset, /system TEXT, /temperature X, /quit.",
    )
    chat.add_argument("workdir", help="a workdir (or WORKDIR/checkpoints/STEP)")
    chat.add_argument("--system", help="system prompt")
    _add_model_args(chat)
    _add_sampling_args(chat, temperature=0.7, top_p=0.9)

    evaluate = verbs.add_parser(
        "eval",
        help="held-out perplexity, answer loss, BLEU and exact match of trained models",
        description="Evaluate one or more workdirs side by side on held-out text (--text) "
        "and/or conversations (--conversations); by default both built-in held-out sets.",
    )
    evaluate.add_argument("workdirs", nargs="+", help="workdirs (or WORKDIR/checkpoints/STEP)")
    evaluate.add_argument(
        "--text",
        action="append",
        help="held-out text: builtin (the built-in corpus's validation documents) or a "
        "source spec as for `gptjax prepare` (text:GLOB, jsonl:GLOB, tfds:NAME); repeatable",
    )
    evaluate.add_argument(
        "--conversations",
        action="append",
        help="builtin (the built-in instruction set) or JSONL files/globs of {messages: "
        "[...]} or {prompt, response}; repeatable. Only each set's held-out part is used: the "
        "same hash split the SFT phase trains with (see --no-split)",
    )
    evaluate.add_argument(
        "--no-split",
        action="store_true",
        help="evaluate every conversation of the --conversations files (a set never trained on)",
    )
    evaluate.add_argument(
        "--validation-fraction",
        type=float,
        default=0.05,
        help="the held-out fraction the sets were split with in training (0.05)",
    )
    evaluate.add_argument("--batch-size", type=int, default=16, help="rows per batch (16)")
    evaluate.add_argument(
        "--max-batches", type=int, help="teacher-forced batches per set (default all)"
    )
    evaluate.add_argument(
        "--max-generate", type=int, default=200, help="answers generated for BLEU (200)"
    )
    evaluate.add_argument(
        "--max-new-tokens", type=int, default=64, help="token budget per answer (64)"
    )
    evaluate.add_argument("--json", help="also write the results to this JSON file")
    evaluate.add_argument("--show", type=int, default=3, help="example answers printed (3)")
    _add_model_args(evaluate)


_SOURCE_HELP = (
    "builtin | text:GLOB[,docs=file|blank_lines][,sep=STR] | jsonl:GLOB[,field=text] | "
    "tfds:NAME[,split=train][,field=text][,data_dir=DIR], each with optional ,weight=W "
    "and ,errors=strict|replace; repeat for a mixture"
)


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", action="append", required=True, help=_SOURCE_HELP)
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.05,
        help="documents held out for validation, chosen by a hash of their text (0.05)",
    )


def _add_tokenizer_parser(verbs) -> None:
    tokenizer = verbs.add_parser("tokenizer", help="train a tokenizer, or encode/decode with one")
    actions = tokenizer.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a sentencepiece tokenizer on sources")
    _add_source_args(train)
    train.add_argument("--out", required=True, help="directory for tokenizer.model/.json")
    train.add_argument("--vocab-size", type=int, required=True, help="pieces, e.g. 32768")
    train.add_argument("--type", default="bpe", choices=("bpe", "unigram", "char"))
    encode = actions.add_parser("encode", help="print the token ids of text (args or stdin)")
    encode.add_argument("--tokenizer", required=True, help="tokenizer dir or .model file")
    encode.add_argument("--pieces", action="store_true", help="print pieces, not ids")
    encode.add_argument("text", nargs="*", help="texts, one output line each (default: stdin)")
    decode = actions.add_parser("decode", help="print the text of token ids (args or stdin)")
    decode.add_argument("--tokenizer", required=True, help="tokenizer dir or .model file")
    decode.add_argument("ids", nargs="*", help="token ids (default: read from stdin)")


def _add_prepare_parser(verbs) -> None:
    prepare = verbs.add_parser(
        "prepare",
        help="tokenize sources into token shards + manifest for training",
        description="Tokenize sources once, on all cores, into DIR (shards, tokenizer, "
        "manifest.json); train on it with --config.data.source=prepared "
        "--config.data.prepared_dir=DIR.",
    )
    _add_source_args(prepare)
    prepare.add_argument("--out", required=True, help="new directory for the shards")
    prepare.add_argument("--tokenizer", help="existing tokenizer dir (else give --vocab-size)")
    prepare.add_argument("--vocab-size", type=int, help="train a tokenizer of this many pieces")
    prepare.add_argument("--tokenizer-type", default="bpe", choices=("bpe", "unigram", "char"))
    prepare.add_argument("--workers", type=int, help="tokenizing processes (default: all cores)")
    prepare.add_argument("--shard-tokens", type=int, help="tokens per shard (default 2**27)")


def _train(args, overrides: list[str]) -> None:
    from gptjax.config import apply_overrides, load_config_file

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    if args.print_config:
        print(config)
        return
    if args.dry_run:
        from gptjax.memory_report import dry_run

        dry_run(config, args.devices, args.device_memory, compile=not args.no_compile)
        return
    if args.devices or args.device_memory or args.no_compile:
        raise ConfigError("--devices, --device-memory and --no-compile only apply to --dry-run")
    from gptjax.multihost import is_primary
    from gptjax.runtime import ClusterSpec
    from gptjax.train import train

    cluster = ClusterSpec(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=args.initialization_timeout,
    )
    summary = train(config, args.workdir, cluster=cluster)
    summary.pop("run")
    if not is_primary():
        return  # process 0 prints the summary
    evaluation, entropy = summary["eval"], summary["unigram_entropy"]
    if config.phase == "dpo":
        print(
            f"held-out DPO loss {evaluation['loss']:.3f}, reward accuracy "
            f"{evaluation['reward_accuracy']:.3f}, reward margin {evaluation['reward_margin']:.3f}"
        )
    else:
        valid = evaluation["loss"]
        print(
            f"validation loss {valid:.3f} nats/token vs unigram entropy {entropy:.3f} "
            f"({'below' if valid < entropy else 'NOT below'} it by {entropy - valid:.3f})"
        )
    train_stats = summary["train"]
    if train_stats:
        print(
            f"throughput {train_stats['tokens_per_sec']:.0f} tokens/s (median of logged windows), "
            f"MFU {100 * train_stats['mfu']:.1f}%, compile {summary['compile_sec']:.1f}s"
        )


def _bench(args, overrides: list[str]) -> None:
    from gptjax.config import apply_overrides, load_config_file

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    from gptjax.bench import format_report, run_bench
    from gptjax.multihost import is_primary, primary_log
    from gptjax.runtime import initialize_runtime

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
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


def _checkpoints(args) -> None:
    from gptjax.checkpoint_report import checkpoint_tree, list_checkpoints

    lines = (
        checkpoint_tree(args.workdir, args.step) if args.tree else list_checkpoints(args.workdir)
    )
    print("\n".join(lines))


def _plot(args) -> None:
    from gptjax.plot import plot_run

    print(plot_run(args.workdir, args.out))


def _tokenizer(args) -> None:
    from gptjax.tokenizer import Tokenizer

    if args.action == "train":
        from gptjax.data.prepare import train_tokenizer_on
        from gptjax.data.sources import parse_sources

        tokenizer = train_tokenizer_on(
            parse_sources(args.source),
            args.out,
            vocab_size=args.vocab_size,
            model_type=args.type,
            validation_fraction=args.validation_fraction,
        )
        print(f"tokenizer: {tokenizer.vocab_size} pieces, sha256 {tokenizer.sha256} in {args.out}")
        return
    tokenizer = Tokenizer.load(args.tokenizer)
    if args.action == "encode":
        for text in args.text or [sys.stdin.read()]:
            out = tokenizer.pieces(text) if args.pieces else tokenizer.encode(text)
            print(" ".join(map(str, out)))
        return
    words = args.ids or sys.stdin.read().split()
    try:
        ids = [int(word) for word in words]
    except ValueError as error:
        raise ConfigError(f"decode takes integer token ids: {error}") from None
    bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if bad:
        raise DataError(
            f"token id {bad[0]} is outside {args.tokenizer}'s {tokenizer.vocab_size} pieces; "
            "decode with the tokenizer that produced the ids"
        )
    sys.stdout.write(tokenizer.decode(ids) + "\n")


def _prepare(args) -> None:
    from gptjax.data.prepare import check_out_dir, prepare, train_tokenizer_on
    from gptjax.data.shards import TOKENIZER_DIR
    from gptjax.data.sources import parse_sources
    from gptjax.tokenizer import Tokenizer

    sources = parse_sources(args.source)
    if bool(args.tokenizer) == bool(args.vocab_size):
        raise ConfigError(
            "give either --tokenizer DIR (an existing tokenizer) or --vocab-size N (train one "
            "on these sources), not both or neither"
        )
    out = check_out_dir(args.out)
    if args.tokenizer:
        tokenizer = Tokenizer.load(args.tokenizer)
    else:
        print(f"training a {args.tokenizer_type} tokenizer of {args.vocab_size} pieces ...")
        tokenizer = train_tokenizer_on(
            sources,
            out / TOKENIZER_DIR,
            vocab_size=args.vocab_size,
            model_type=args.tokenizer_type,
            validation_fraction=args.validation_fraction,
        )
    options = {"shard_tokens": args.shard_tokens} if args.shard_tokens else {}
    prepare(
        sources,
        out,
        tokenizer,
        validation_fraction=args.validation_fraction,
        workers=args.workers,
        **options,
    )
    print(
        f"train on it: gptjax train --config CONFIG --workdir WORKDIR "
        f"--config.data.source=prepared --config.data.prepared_dir={out}"
    )


def _import_hf(args) -> None:
    from gptjax.hf_import import import_hf
    from gptjax.inference import parse_mesh

    mesh = parse_mesh(args.mesh) if args.mesh else None
    result = import_hf(
        args.model_dir,
        args.workdir,
        add_chat_tokens=args.add_chat_tokens,
        vocab_size=args.vocab_size,
        mesh=mesh,
    )
    for line in result.describe():
        print(line)


def _export_hf(args) -> None:
    from gptjax.hf_export import export_hf

    if args.max_shard_gb <= 0:
        raise ConfigError(f"--max-shard-gb must be positive, got {args.max_shard_gb}")
    result = export_hf(
        args.workdir,
        args.out,
        step=args.step,
        dtype=args.dtype,
        max_shard_bytes=int(args.max_shard_gb * 2**30),
    )
    print(f"wrote a {result.family} model ({result.tensors} tensors) to {result.out}:")
    print("  " + " ".join(result.files))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        rest, overrides = split_overrides(argv)
        args = _parser().parse_args(rest)
        if overrides and args.verb not in ("train", "bench"):
            raise ConfigError(
                f"--config.* overrides only apply to `gptjax train` and `bench`, not {args.verb}"
            )
        if args.verb == "train":
            _train(args, overrides)
        elif args.verb == "bench":
            _bench(args, overrides)
        elif args.verb == "plot":
            _plot(args)
        elif args.verb == "checkpoints":
            _checkpoints(args)
        elif args.verb == "tokenizer":
            _tokenizer(args)
        elif args.verb == "prepare":
            _prepare(args)
        elif args.verb == "import-hf":
            _import_hf(args)
        elif args.verb == "export-hf":
            _export_hf(args)
        elif args.verb in ("sample", "chat", "eval"):
            from gptjax import inference_cli

            getattr(inference_cli, args.verb.replace("eval", "evaluate"))(args)
    except GptjaxError as error:
        print(f"gptjax: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("gptjax: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
