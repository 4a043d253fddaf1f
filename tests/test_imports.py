"""Imports in ``src/xchat`` point one way: no module imports, directly or through others,
a module that imports it back.

The graph is built from the source with :mod:`ast` (nothing is imported), from every
``import xchat...`` and ``from xchat... import ...``, at module level and inside functions
alike: a function-level import that closes a loop is the same cycle, only deferred. Two
kinds of edge are left out, because neither runs an import at a time that can loop:

* imports under ``if TYPE_CHECKING:``: how a component names the type of the host it is
  handed (``Groups`` receives a ``SendingClient``) without importing it at run time;
* a module's import of its own parent package (``xchat.client.x`` -> ``xchat.client``),
  which Python has already initialised before the module runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "xchat").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name ``module`` imports at run time (module level or in a function)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                yield from walk(node.orelse)
            elif isinstance(node, ast.Import):
                yield from (a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                yield from (f"{base}.{a.name}" for a in node.names)
                yield base
            else:
                yield from walk([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    yield from walk(ast.parse(path.read_text("utf-8"), str(path)).body)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ``src/xchat`` it imports (see the module docstring)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name in _imported_names(module, path):
            target = name
            while target and target not in modules:  # ``from pkg import name``: pkg
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_src() -> None:
    loops = cycles(import_graph())
    assert not loops, f"modules that import each other (break the loop): {loops}"


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check itself can fail: a two-module loop and a three-module loop are found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """A deferred import still counts; a TYPE_CHECKING one does not."""
    src = tmp_path / "pkg.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    from xchat.hidden import T\n"
        "def f():\n    import xchat.later\n"
    )
    names = set(_imported_names("xchat.x.pkg", src))
    assert {"xchat.x.sibling", "xchat.later"} <= names
    assert not any(n.startswith("xchat.hidden") for n in names)


def test_the_graph_has_the_real_edges() -> None:
    """A known edge exists, so an empty graph cannot pass the cycle check by accident."""
    graph = import_graph()
    assert "xchat.client.group_book" in graph["xchat.client.groups"]
    assert "xchat.client.groups" not in graph["xchat.client.group_book"]
