"""The configs that ship with gptjax, and `--config NAME` resolved to one of them.

gptjax/configs is a symbolic link to the repository's configs/ (the path every command,
docstring and test names), packaged as package data (pyproject.toml), so a `pip install` finds
them too. A link rather than a move: configs/ stays where users, tools and other branches edit
it. Standard library only, so `gptjax --help` can list the names without importing JAX.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gptjax.errors import ConfigError

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# `--config tiny`: a bare name (no directory, no .py) names a built-in config.
_BARE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def builtin_config_names() -> list[str]:
    return sorted(path.stem for path in BUILTIN_CONFIG_DIR.glob("*.py"))


def builtin_config_summary(name: str) -> str:
    """The first line of a built-in config's docstring (read, not run)."""
    source = (BUILTIN_CONFIG_DIR / f"{name}.py").read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return docstring.split("\n", 1)[0]


def _builtin_hint() -> str:
    return f"built-in configs, by name: {', '.join(builtin_config_names())}"


def resolve_config_path(spec: str | Path) -> Path:
    """The file `--config spec` names: a path as given, or a bare name (`tiny`) as the built-in
    config of that name, so `--config tiny` works from any directory and after `pip install`."""
    if isinstance(spec, str) and _BARE_NAME.fullmatch(spec):
        path = BUILTIN_CONFIG_DIR / f"{spec}.py"
        if not path.is_file():
            raise ConfigError(
                f"--config {spec}: no built-in config of that name ({_builtin_hint()}; or give "
                "a config file's path)"
            )
        return path
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist ({_builtin_hint()})")
    return path
