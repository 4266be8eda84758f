"""The house's structure, checked from the source: no import cycle (imports inside functions
and type-only ones included), and no module importing a package above it
(docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "moetrace"

#: every package (or top-level module) of moetrace by layer: a module may import only from
#: its own package or from a package of a lower layer
LAYERS = {
    0: {"errors", "defaults", "paths", "display", "progress", "jsondoc", "metrics", "lazy",
        "evidence"},
    1: {"moetrace", "output"},
    2: {"trace"},
    3: {"states", "written"},
    4: {"simulate", "predictors"},
    5: {"record", "backtest"},
    6: {"calibrate", "placement"},
    7: {"forecast", "watch", "report"},
    8: {"scale"},
    9: {"pipeline"},
    10: {"cli"},
    11: {"__main__"},
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def _resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports() -> dict[str, set[str]]:
    """Module -> the moetrace modules it imports anywhere in its source (functions and
    ``if TYPE_CHECKING`` blocks included); ``from package import name`` is an edge to the
    submodule ``package.name`` where there is one, else to the package."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                         for alias in node.names]
            else:
                continue
            edges[module] |= {_resolve(n) for n in names if n.split(".")[0] == "moetrace"}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, and self-imports (Tarjan)."""
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w == v:
                found.append([v])
            elif w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_graph_is_read_from_the_source():
    edges = imports()
    # two edges this test must see: one inside a function, one from a package's __init__
    assert "moetrace.pipeline.span" in edges["moetrace.pipeline"]
    assert "moetrace.report" in edges["moetrace.cli.report"]
    assert len(MODULES) > 80


def test_no_import_cycle_inside_functions_included():
    assert _cycles(imports()) == []


def test_every_package_has_a_layer_and_imports_only_below_it():
    packages = {_package(m) for m in MODULES}
    assert packages <= set(RANK), f"packages without a layer: {sorted(packages - set(RANK))}"
    upward = sorted(f"{a} -> {b}" for a, bs in imports().items() for b in bs
                    if _package(a) != _package(b) and RANK[_package(b)] >= RANK[_package(a)])
    assert upward == []
