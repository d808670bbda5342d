"""`gptjax <verb>`: parses flags and calls library functions; nothing else lives here.

Errors meant for people (`GptjaxError`) print one line and exit with their code (DESIGN.md):
2 config/usage · 65 data/tokenizer · 70 non-finite · 74 checkpoint I/O · 75 preempted.
"""

from __future__ import annotations

import argparse
import os
import sys

from gptjax.errors import ConfigError, GptjaxError

_OVERRIDE_PREFIX = "--config."


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.a.b=v` (or `--config.a.b v`) overrides from the other flags."""
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
    plot = verbs.add_parser("plot", help="draw a run's curves into a PNG")
    plot.add_argument("workdir", help="a workdir holding metrics.jsonl")
    plot.add_argument("--out", help="output PNG (default WORKDIR/curves.png)")
    return parser


def _train(args, overrides: list[str]) -> None:
    from gptjax.config import apply_overrides, load_config_file

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    if args.print_config:
        print(config)
        return
    from gptjax.train import sample, train

    summary = train(config, args.workdir)
    run = summary.pop("run")
    valid, entropy = summary["eval"]["loss"], summary["unigram_entropy"]
    print(
        f"validation loss {valid:.3f} nats/token vs unigram entropy {entropy:.3f} "
        f"({'below' if valid < entropy else 'NOT below'} it by {entropy - valid:.3f})"
    )
    train_stats = summary["train"]
    if train_stats:
        print(
            f"throughput {train_stats['tokens_per_sec']:.0f} tokens/s, "
            f"MFU {100 * train_stats['mfu']:.1f}%, compile {summary['compile_sec']:.1f}s"
        )
    sample_config = config.sample
    if sample_config.prompts and sample_config.max_new_tokens:
        texts = sample(
            run,
            list(sample_config.prompts),
            max_new_tokens=sample_config.max_new_tokens,
            temperature=sample_config.temperature,
            top_k=sample_config.top_k,
        )
        for text in texts:
            print("---\n" + text)


def _plot(args) -> None:
    from gptjax.plot import plot_run

    print(plot_run(args.workdir, args.out))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        rest, overrides = _split_overrides(argv)
        args = _parser().parse_args(rest)
        if overrides and args.verb != "train":
            raise ConfigError(f"--config.* overrides only apply to `gptjax train`, not {args.verb}")
        if args.verb == "train":
            _train(args, overrides)
        elif args.verb == "plot":
            _plot(args)
    except GptjaxError as error:
        print(f"gptjax: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("gptjax: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
