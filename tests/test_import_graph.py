"""No import circles in the package (scripts/import_graph.py), and the check itself finds one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_circle() -> None:
    graph = _script()
    edges = graph.graph()
    assert "qiter.run_loop" in edges and "qiter.agent" in edges["qiter.run_loop"]
    assert graph.circles(edges) == []


def test_a_circle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    graph = _script()
    package = tmp_path / "qiter"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from qiter.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from qiter import c\n")
    (package / "c.py").write_text("from . import a\n")
    (package / "d.py").write_text("import qiter.a\n")
    edges = graph.graph(tmp_path)
    assert edges["qiter.d"] == {"qiter.a"}
    assert graph.circles(edges) == [["qiter.a", "qiter.c", "qiter.sub.b"]]
