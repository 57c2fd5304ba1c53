"""Package structure: no import circles among the modules of ``src/degan``.

The import graph is built statically: every module is parsed with :mod:`ast`, relative imports are resolved, and only
imports that run when the module is imported count (module level, class bodies, ``if`` / ``try`` / ``with`` blocks;
not function bodies, not ``if TYPE_CHECKING:``). ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_imports(body: list[ast.stmt]):
    """The import statements that run when a module (or class body) executes; function bodies are skipped."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_imports(node.body)
            yield from _import_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_imports(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _import_time_imports(node.body)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules of the package it imports at import time}`` for every ``.py`` file under
    ``root/package``."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}

    def owner(name: str) -> str:  # the closest module of the package that ``name`` lives in
        while name not in files:
            name = name.rsplit(".", 1)[0]
        return name

    def inside(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        out: set[str] = set()
        for node in _import_time_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                out |= {owner(a.name) for a in node.names if inside(a.name)}
                continue
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not inside(target):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in files else owner(target))
        out.discard(name)
        graph[name] = out
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of the graph, or None (depth-first search, sorted for stable output)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (cycle := visit(w)) is not None:
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)) is not None:
            return cycle
    return None


def test_degan_has_no_import_cycles():
    graph = import_graph(SRC, "degan")
    assert len(graph) > 50 and "degan.lottery.techniques" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import thing\n")
    (pkg / "sub" / "__init__.py").write_text("from .mod import thing\n")
    (pkg / "sub" / "mod.py").write_text("from .. import version\nthing = 1\n")
    (pkg / "version.py").write_text("def f():\n    from . import sub\n")  # inside a function: not an edge
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
    (pkg / "sub" / "mod.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg\n"
                                        "from .. import version\nthing = 1\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
    (pkg / "sub" / "mod.py").write_text("from .. import __doc__\nthing = 1\n")  # a name of pkg/__init__
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg", "pkg.sub", "pkg.sub.mod", "pkg"]
