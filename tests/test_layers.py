"""The import rule of ``dwt_lib`` (README "Layout", ``dwt_lib/__init__.py``), read from the source with ``ast``:

- every module sits in a layer: a subpackage (``core < config < data | models < runs < train < studies <
  notebook``) or, at the top of ``dwt_lib/``, the app (``cli``, ``lab``, ``reproduce``);
- a module imports only its own package and lower layers (``data`` and ``models`` share a floor and never import
  each other);
- no ``dwt_lib`` import inside a function (heavy third-party libraries may still be imported lazily);
- no circle among the modules (package faces, ``__init__.py``, included);
- ``import dwt_lib.config`` loads neither torch nor transformers.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "dwt_lib"
#: floor of each layer; two layers on one floor never import each other
LAYERS = {"core": 0, "config": 1, "data": 2, "models": 2, "runs": 3, "train": 4, "studies": 5, "notebook": 6}
APP = 7
APP_MODULES = {"dwt_lib", "dwt_lib.cli", "dwt_lib.lab", "dwt_lib.reproduce"}


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _resolve(name: str, mods: dict) -> str:
    while name not in mods and "." in name:
        name = name.rpartition(".")[0]
    return name


def imports(mods: dict) -> list[tuple[str, str, bool, int]]:
    """Every import of a ``dwt_lib`` module: (importer, imported module, inside a function, line)."""
    edges = []
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rpartition(".")[0]

        def visit(node, in_function):
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, ast.Import):
                    edges.extend((m, _resolve(a.name, mods), in_function, ch.lineno)
                                 for a in ch.names if a.name.split(".")[0] == "dwt_lib")
                elif isinstance(ch, ast.ImportFrom):
                    base = ch.module or ""
                    if ch.level:
                        up = pkg.split(".")[:len(pkg.split(".")) - (ch.level - 1)]
                        base = ".".join(up + ([base] if base else []))
                    if base.split(".")[0] == "dwt_lib":
                        for a in ch.names:
                            full = f"{base}.{a.name}"
                            edges.append((m, full if full in mods else _resolve(base, mods), in_function, ch.lineno))
                visit(ch, in_function or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
        visit(ast.parse(path.read_text()), False)
    return edges


def layer(m: str) -> tuple[int, str]:
    """(floor, layer name) of a module."""
    if m in APP_MODULES:
        return APP, "app"
    top = m.split(".")[1]
    return LAYERS[top], top


def circles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    g = defaultdict(set)
    for a, b, _, _ in edges:
        if a != b:
            g[a].add(b)
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(g):
        if v not in index:
            visit(v)
    return out


MODS = modules()
EDGES = imports(MODS)


def test_every_module_is_in_a_layer():
    stray = [m for m in MODS if m not in APP_MODULES and m.split(".")[1] not in LAYERS]
    assert not stray, f"modules outside the layers (move them into a layer's folder): {stray}"


def test_no_import_runs_up_or_sideways():
    bad = []
    for a, b, _, line in EDGES:
        (fa, la), (fb, lb) = layer(a), layer(b)
        if la != lb and (fb > fa or fb == fa):
            bad.append(f"{MODS[a].relative_to(PKG.parent)}:{line}: {la} imports {lb} ({b})")
    assert not bad, "imports running up (or between data and models):\n" + "\n".join(bad)


def test_no_dwt_lib_import_inside_a_function():
    bad = [f"{MODS[a].relative_to(PKG.parent)}:{line}: {b}" for a, b, f, line in EDGES if f]
    assert not bad, "dwt_lib imports inside functions (move them to the top):\n" + "\n".join(bad)


def test_no_circle():
    assert circles(EDGES) == []


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The rules above are not vacuous: a made-up graph with a circle and an import from config up to studies."""
    fake = [("dwt_lib.config.a", "dwt_lib.studies.b", False, 1), ("dwt_lib.studies.b", "dwt_lib.config.a", False, 1)]
    assert circles(fake) == [["dwt_lib.config.a", "dwt_lib.studies.b"]]
    assert layer("dwt_lib.studies.b")[0] > layer("dwt_lib.config.a")[0]
    assert len(EDGES) > 100 and any(f for _, _, f, _ in imports({"dwt_lib": PKG / "__init__.py", "dwt_lib.x": Path(__file__)}))


def _inside_a_function_here():
    from dwt_lib import config  # noqa: F401  (seen by the self-test above: this file, read as a module)


@pytest.mark.parametrize("module", ["dwt_lib.config", "dwt_lib.core"])
def test_config_loads_without_torch(module):
    code = (f"import sys, {module} as m; m.load_params('smoke') if hasattr(m, 'load_params') else None; "
            "heavy = [k for k in ('torch', 'transformers') if k in sys.modules]; "
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert r.returncode == 0, r.stderr[-2000:]
