"""The built-in corpus: English text every CPython installation carries, read at run time.

Two sources, both shipped with the interpreter so a smoke test or a demo needs no download:
the standard library's docstrings (read by parsing the source with `ast`; no module is
imported, so nothing runs and platform-only modules cost nothing) and the reference manual's
topics in `pydoc_data.topics` (what `help("with")` prints). Together about 2 MB on Python 3.11.
The text depends on the Python version, not on the machine: only paths, sorted, are used.
"""

import ast
import functools
import hashlib
import inspect
import os
import sysconfig
import warnings
from collections.abc import Sequence
from pathlib import Path

from gptjax.errors import ConfigError

# Directory names never read. Tests, IDLE, lib2to3 and turtledemo are code fixtures or
# tools, not documentation. tkinter and idlelib are split into separate packages by Debian,
# Ubuntu and others (python3-tk, idle), so including them would make the corpus differ
# between two installations of the same Python; ensurepip and config-* hold no prose.
_SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "turtledemo",
        "tkinter",
        "ensurepip",
        "__phello__",
    }
)
# Single files never read: `_sysconfigdata_*` is generated per build (paths, compiler flags),
# `this.py` is rot13 text, `turtle.py` needs tkinter (dropped with it, see above).
_SKIP_FILE_PREFIXES = ("_sysconfigdata", "this.py", "turtle.py", "__hello__.py")

# Documents shorter than this (characters) are boilerplate ("Codec for CP1252.") and mostly
# teach the model a module name; dropping them keeps the corpus prose.
MIN_DOCUMENT_CHARS = 200


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> list[Path]:
    """Stdlib .py files, sorted by relative path so the order is the same on every machine."""
    files = []
    # os.walk with pruning, not rglob: site-packages alone can hold hundreds of MB.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith(_SKIP_FILE_PREFIXES):
                files.append(Path(dirpath, name).relative_to(root))
    return [root / rel for rel in sorted(files, key=lambda p: p.as_posix())]


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _walk_definitions(body: list[ast.stmt], prefix: str) -> list[tuple[str, str]]:
    """(qualified name, docstring) for classes and functions, recursing into classes only.

    Functions nested in functions are implementation details, so their bodies are not
    entered; `if`/`try` blocks at module or class level are (platform-specific definitions
    live there).
    """
    found: list[tuple[str, str]] = []
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{node.name}"
            doc = ast.get_docstring(node, clean=False)
            if doc and doc.strip():
                found.append((name, inspect.cleandoc(doc)))
            if isinstance(node, ast.ClassDef):
                found.extend(_walk_definitions(node.body, name))
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in (
                node.body,
                getattr(node, "orelse", []),
                getattr(node, "finalbody", []),
                *(h.body for h in getattr(node, "handlers", [])),
            ):
                found.extend(_walk_definitions(block, prefix))
    return found


def _parse(path: Path) -> ast.Module | None:
    with warnings.catch_warnings():
        # Old stdlib files contain invalid escape sequences; the warning is not ours to show.
        warnings.simplefilter("ignore")
        try:
            # Bytes, so ast honours each file's own coding cookie.
            return ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            return None


@functools.lru_cache(maxsize=1)
def _stdlib_modules() -> tuple[tuple[str, str | None, tuple[tuple[str, str], ...]], ...]:
    """(module, module docstring, definitions) for every readable stdlib module, cached."""
    root = _stdlib_dir()
    modules = []
    for path in _source_files(root):
        tree = _parse(path)
        if tree is None:
            continue
        name = _module_name(root, path)
        doc = ast.get_docstring(tree, clean=False)
        module_doc = inspect.cleandoc(doc) if doc and doc.strip() else None
        seen: set[tuple[str, str]] = set()
        defs = []
        for item in _walk_definitions(tree.body, name):
            # Platform variants (`if os.name == "nt": def f` / `else: def f`) repeat a docstring.
            if item not in seen:
                seen.add(item)
                defs.append(item)
        modules.append((name, module_doc, tuple(defs)))
    return tuple(modules)


def builtin_docstrings() -> list[tuple[str, str]]:
    """(qualified name, cleaned docstring) for stdlib modules, classes, functions and methods.

    Names are where the object is defined: `json.dumps`, `json.encoder.JSONEncoder.encode`.
    """
    out: list[tuple[str, str]] = []
    for name, module_doc, defs in _stdlib_modules():
        if module_doc:
            out.append((name, module_doc))
        out.extend(defs)
    return out


def _pydoc_topics() -> list[tuple[str, str]]:
    # A plain data module (one dict literal), so importing it runs no library code.
    from pydoc_data.topics import topics

    return [(key, topics[key]) for key in sorted(topics)]


@functools.lru_cache(maxsize=1)
def _builtin_documents() -> tuple[str, ...]:
    docs: list[str] = []
    for name, module_doc, defs in _stdlib_modules():
        parts = [f"{name}\n\n{module_doc}" if module_doc else name]
        parts.extend(f"{qualname}\n\n{doc}" for qualname, doc in defs)
        docs.append("\n\n".join(parts))
    docs.extend(text.strip() for _, text in _pydoc_topics())
    seen: set[str] = set()
    kept = []
    for doc in docs:
        if len(doc) >= MIN_DOCUMENT_CHARS and doc not in seen:
            seen.add(doc)
            kept.append(doc)
    return tuple(kept)


def builtin_documents() -> list[str]:
    """One document per stdlib module (its docstrings, each under its name) and per pydoc topic.

    Deterministic for a given Python version; parsed once per process (a few seconds).
    """
    return list(_builtin_documents())


def hash_units(doc: str) -> tuple[float, float]:
    """Two stable, independent numbers in [0, 1) from the text alone (halves of its sha256).

    The first decides the validation split (`split_documents`, `gptjax prepare`), the second
    which documents a fractional mixture weight keeps (`gptjax.data.sources`).
    """
    digest = hashlib.sha256(doc.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:16], "big") / 2**64


def _unit_interval(doc: str) -> float:
    """A stable number in [0, 1) from the text alone (sha256), independent of list order."""
    return hash_units(doc)[0]


def split_documents(docs: Sequence[str], validation_fraction: float) -> tuple[list[str], list[str]]:
    """Split into (train, validation) by document, decided by each document's text hash.

    A document lands in validation iff its hash falls below `validation_fraction`, so the
    split does not depend on list order and validation text is never trained on (identical
    documents always land on the same side).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction={validation_fraction} must be in [0, 1), e.g. 0.05")
    train, validation = [], []
    for doc in docs:
        (validation if _unit_interval(doc) < validation_fraction else train).append(doc)
    return train, validation
