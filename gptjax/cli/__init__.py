"""`gptjax <verb>`: one module per verb family (its flags beside its body), registered below.

Errors meant for people (`GptjaxError`) print one line and exit with their code (DESIGN.md):
2 config/usage · 65 data/tokenizer · 70 non-finite · 74 checkpoint I/O · 75 preempted.
"""

from __future__ import annotations

import argparse
import sys

from gptjax.cli import configs, data, evaluate, hf, inference, runs, train
from gptjax.cli.quiet import let_library_logging_through, quiet_library_noise
from gptjax.errors import ConfigError, GptjaxError

# Every verb family registers its subcommands, and binds each to its body, in add_parsers.
VERB_FAMILIES = (train, configs, runs, data, inference, evaluate, hf)

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


class _Parser(argparse.ArgumentParser):
    """Every verb's parser (argparse makes subparsers of the parent's class) takes --verbose,
    so it works before the verb (`gptjax --verbose train`) and after it (`gptjax train ...
    --verbose`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--verbose",
            action="store_true",
            # Only the top-level parser sets the default: a verb's own would reset it.
            default=False if kwargs.get("prog") == "gptjax" else argparse.SUPPRESS,
            help="also show the libraries' logging (TensorFlow, JAX, Orbax, absl; INFO level), "
            "which gptjax hides by default",
        )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gptjax",
        description="Train GPT-style models in JAX on a device mesh, and sample from them.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    for family in VERB_FAMILIES:
        family.add_parsers(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rest, overrides = split_overrides(argv)
        args = _parser().parse_args(rest)
        # Before any verb imports TF, JAX's backends or Orbax.
        if args.verbose:
            let_library_logging_through()
        else:
            quiet_library_noise()
        if overrides and not getattr(args, "takes_overrides", False):
            raise ConfigError(
                f"--config.* overrides only apply to `gptjax train` and `bench`, not {args.verb}"
            )
        args.overrides = overrides
        args.run(args)
    except GptjaxError as error:
        print(f"gptjax: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("gptjax: interrupted", file=sys.stderr)
        return 130
    return 0
