"""`gptjax configs`: the configs that ship with gptjax, which `--config NAME` finds by name."""

from __future__ import annotations


def builtin_names_help() -> str:
    """`--config`'s help for train, bench: a path, or one of the built-in names."""
    from gptjax.builtin_configs import builtin_config_names

    return (
        "config file (e.g. configs/tiny.py), or the name of a built-in config, found from any "
        f"directory: {', '.join(builtin_config_names())} (`gptjax configs` lists them)"
    )


def add_parsers(verbs) -> None:
    configs = verbs.add_parser(
        "configs",
        help="list the built-in configs (--config NAME)",
        description="List the configs that ship with gptjax: `gptjax train --config NAME` "
        "runs one from any directory; --path prints where their files are, to copy one.",
    )
    configs.add_argument(
        "--path", action="store_true", help="print the directory of the built-in config files"
    )
    configs.set_defaults(run=_configs)


def _configs(args) -> None:
    from gptjax.builtin_configs import (
        BUILTIN_CONFIG_DIR,
        builtin_config_names,
        builtin_config_summary,
    )

    if args.path:
        print(BUILTIN_CONFIG_DIR.resolve())
        return
    names = builtin_config_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {builtin_config_summary(name)}")
