"""The import graph of the qiter package, and its circles.

Reads every module under ``src/qiter`` with :mod:`ast` (nothing is imported), draws an edge ``a -> b`` for
each ``import``/``from ... import`` of a qiter module in ``a``, at module level or inside a function (a
function-level import hides a circle from Python, not from a reader), and prints every strongly connected
group of more than one module. Exit status 1 when there is one.

    python scripts/import_graph.py            # the circles, if any
    python scripts/import_graph.py --edges    # every edge too
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "qiter"
ROOT = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, root: Path = ROOT) -> str:
    """``src/qiter/dqn/agent.py`` -> ``qiter.dqn.agent``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The qiter modules that ``path`` imports (a ``from package import name`` counts as the submodule
    ``package.name`` when there is one, else as the package)."""
    name = module_name(path, root)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    found.discard(name)
    return {m for m in found if m in modules}


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the qiter modules it imports."""
    paths = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): imports_of(p, modules, root) for p in paths}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges)))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(groups)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", action="store_true", help="print every edge too")
    args = parser.parse_args()
    edges = graph()
    if args.edges:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{a} -> {b}")
    groups = circles(edges)
    for group in groups:
        inner = [f"{a} -> {b}" for a in group for b in sorted(edges[a]) if b in group]
        print(f"circle of {len(group)} modules: {', '.join(inner)}")
    if not groups:
        print(f"no import circle among {len(edges)} modules")
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
