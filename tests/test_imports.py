"""Imports in ``src/xchat`` point one way: no module imports, directly or through others,
a module that imports it back.

The graph is built from the source with :mod:`ast` (nothing is imported), from every
``import xchat...`` and ``from xchat... import ...``: at module level, inside functions
and under ``if TYPE_CHECKING:`` alike. A function-level import that closes a loop is the
same cycle, only deferred; a type-checking one is the same dependency, only hidden from
the interpreter: a lower layer that must name something of an upper one names an
interface of its own instead (a :class:`typing.Protocol` the upper class satisfies
structurally, e.g. ``sending.RichMessaging``, ``rich_send.MessagingHost``). One kind of
edge is left out, because it cannot loop: a module's import of its own parent package
(``xchat.client.x`` -> ``xchat.client``), which Python has already initialised before
the module runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(src: Path) -> dict[str, Path]:
    out = {}
    for path in (src / "xchat").rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name ``module`` imports (module level, in a function, for the type
    checker)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.Import):
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


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of ``src/xchat`` it imports (see the module docstring)."""
    modules = _modules(src)
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


def test_the_graph_sees_function_level_relative_and_type_checking_imports(
    tmp_path: Path,
) -> None:
    """A deferred import counts, and so does a TYPE_CHECKING one (either branch)."""
    src = tmp_path / "pkg.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import typing\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    from xchat.hidden import T\n"
        "else:\n    import xchat.fallback\n"
        "if typing.TYPE_CHECKING:\n    import xchat.qualified\n"
        "def f():\n    import xchat.later\n"
    )
    names = set(_imported_names("xchat.x.pkg", src))
    assert {
        "xchat.x.sibling",
        "xchat.later",
        "xchat.hidden.T",
        "xchat.fallback",
        "xchat.qualified",
    } <= names


def test_a_type_checking_only_cycle_fails_the_check(tmp_path: Path) -> None:
    """The loop this check exists for: a lower module names an upper one's class for its
    annotations only (``sending`` -> ``rich_send`` -> ``client`` -> ... -> ``sending``
    before issue #21). The interpreter never runs it, the graph still has it."""
    pkg = tmp_path / "xchat" / "client"
    pkg.mkdir(parents=True)
    (tmp_path / "xchat" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from xchat.client.high import High\n"
        "class Low:\n    host: High\n"
    )
    (pkg / "high.py").write_text("from xchat.client.low import Low\nclass High(Low): ...\n")
    (pkg / "other.py").write_text(
        "from xchat.client import low\n"
    )  # its edge to the parent package is left out
    graph = import_graph(tmp_path)
    assert graph["xchat.client.low"] == {"xchat.client.high"}
    assert cycles(graph) == [["xchat.client.high", "xchat.client.low"]]


def test_the_graph_has_the_real_edges() -> None:
    """A known edge exists, so an empty graph cannot pass the cycle check by accident."""
    graph = import_graph()
    assert "xchat.client.group_book" in graph["xchat.client.groups"]
    assert "xchat.client.groups" not in graph["xchat.client.group_book"]
