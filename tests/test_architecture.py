"""The package's shape: no import circles, and each layer imports only the layers below it.

Imports are read from the source (top-level and function-level alike), so a lazy import that
closes a circle is caught too.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import gptjax

PACKAGE_DIR = Path(gptjax.__file__).parent
# Layers from the top: a module may import its own layer and the ones below it, never one above.
# Below them all is the library at the package's top level (config, model, steps, ...).
LAYERS = (
    ("gptjax.cli",),
    ("gptjax.train", "gptjax.inference", "gptjax.hf"),
    ("gptjax.data",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The gptjax modules `path` imports; `from pkg import mod` counts as importing pkg.mod."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gptjax"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gptjax"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, known) - {name} for name, path in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def _layer(module: str) -> int:
    for depth, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return depth
    return len(LAYERS)


def test_the_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_gptjax_is_part_of_an_import_circle():
    assert _cycle(_graph()) is None


def test_the_graph_holds_lazy_imports_and_modules_imported_from_their_package():
    graph = _graph()
    assert "gptjax.train.loop" in graph["gptjax.cli.train"]  # imported inside a function
    assert "gptjax.train.multihost" in graph["gptjax.train.loop"]  # `from gptjax.train import`


def test_lower_layers_never_import_higher_ones():
    graph = _graph()
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if _layer(target) < _layer(module)
    )
    assert upward == []


def test_data_preparation_imports_no_jax_and_the_package_names_stay_functions():
    # prepare's tokenizing workers are spawned: each imports gptjax.data.prepare afresh, and
    # jax + flax would cost each of them seconds. The exported names load on first use, and
    # `gptjax.generate` stays the function once its module (gptjax.generation) is imported.
    script = (
        "import sys, gptjax.data.prepare\n"
        "assert 'jax' not in sys.modules and 'flax' not in sys.modules, 'jax imported'\n"
        "import gptjax.generation, gptjax.model\n"
        "from gptjax import Transformer, generate\n"
        "assert generate is gptjax.generation.generate and callable(gptjax.generate)\n"
        "assert Transformer is gptjax.model.Transformer\n"
        "import gptjax.inference.api\n"
        "assert gptjax.load is gptjax.inference.api.load, 'gptjax.load is not the Python API'\n"
        "missing = [n for n in gptjax.__all__ if not hasattr(gptjax, n)]\n"
        "assert not missing, f'exported but not defined: {missing}'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=os.environ)
