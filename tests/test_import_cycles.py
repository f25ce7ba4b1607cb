"""No import cycles in ``gateway/``: a module never imports (directly or through others) a module
that imports it back.

Edges are read with :mod:`ast` from every ``import`` statement, wherever it stands (module level,
inside a function, under ``TYPE_CHECKING``): a lazy import hides a cycle, it does not remove it.
``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``. Importing
``a.b.c`` also runs the ``__init__`` of every package on the way (``a``, ``a.b``), so that is an
edge too, except for the packages the importing module itself lives in (they are already being
imported when it runs): ``gateway.pipeline.x`` importing ``gateway.fhir.engine`` depends on
``gateway/fhir/__init__.py`` and everything it imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "gateway"


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against the importing module's package
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    return [stem] + [f"{stem}.{alias.name}" for alias in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the package its import statements run."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, name, is_package):
                if target not in modules:
                    continue  # a name inside a module (from a.b import func): a.b is listed
                parts = target.split(".")
                edges.update(
                    p
                    for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                    if p in modules and p not in own
                )
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module, for the report."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    return component


def report(graph: dict[str, set[str]]) -> list[str]:
    return [
        " -> ".join(shortest_cycle(graph, c)) + f"  ({len(c)} modules: {', '.join(c)})"
        for c in cycles(graph)
    ]


def test_no_import_cycles_in_gateway() -> None:
    graph = import_graph(module_names())
    problems = report(graph)
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_the_check_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "sub" / "b.py").write_text("import pkg.sub.a\n")
    (pkg / "c.py").write_text("from pkg.sub.b import g\n")
    (pkg / "d.py").write_text("from pkg import c\n")
    graph = import_graph(module_names(tmp_path, "pkg"))
    assert graph["pkg.c"] == {"pkg.sub", "pkg.sub.b"}  # the package __init__ runs too
    assert graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.sub.a", "pkg.sub.b"]]  # a's import inside a function counts


def test_a_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    """m -> n -> k has no cycle, but importing pkg.x.k runs pkg/x/__init__, which imports m."""
    for name, text in {
        "__init__.py": "",
        "x/__init__.py": "from pkg.x.m import M\n",
        "x/m.py": "from pkg.y.n import N\nM = 1\n",
        "x/k.py": "K = 1\n",
        "y/__init__.py": "",
        "y/n.py": "from pkg.x.k import K\nN = 1\n",
    }.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    graph = import_graph(module_names(tmp_path, "pkg"))
    assert cycles(graph) == [["pkg.x", "pkg.x.m", "pkg.y.n"]]
    assert shortest_cycle(graph, ["pkg.x", "pkg.x.m", "pkg.y.n"]) == [
        "pkg.x",
        "pkg.x.m",
        "pkg.y.n",
        "pkg.x",
    ]


if __name__ == "__main__":  # python tests/test_import_cycles.py: print the cycles
    found = report(import_graph(module_names()))
    print("\n".join(found) or "no import cycles")
    sys.exit(1 if found else 0)
