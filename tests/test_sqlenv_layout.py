"""sqlenv/: no import circle between its modules (function-level imports included), no torch, never agents
or benchmarks, and no ``sys.path`` edits."""

import ast
from pathlib import Path

from test_agents_layout import assert_no_sys_path_edits, find_cycle, top_level_imports

SQLENV = Path(__file__).resolve().parents[1] / "sqlenv"


def module_name(path: Path) -> str:
    parts = path.relative_to(SQLENV).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The sqlenv modules a file imports anywhere in it; ``from sqlenv.pkg import sub`` names ``pkg.sub``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sqlenv":
            base = node.module.split(".", 1)[1] if "." in node.module else ""
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if sub in modules else (base or "__init__"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlenv":
                    found.add(alias.name.split(".", 1)[1] if "." in alias.name else "__init__")
    return found


def module_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SQLENV.rglob("*.py")}
    return {name: imports_of(path, set(paths)) & set(paths) - {name} for name, path in paths.items()}


def test_no_import_circle_in_sqlenv():
    graph = module_graph()
    assert {"executor", "_worker", "datasets.base", "infobox", "env"} <= set(graph)
    assert "schema" in graph["datasets.base"] and "executor" in graph["__init__"] | graph["env"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_sqlenv_never_imports_torch():
    for path in SQLENV.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "torch" for n in names), f"{path} imports torch"


def test_sqlenv_imports_neither_agents_nor_benchmarks():
    for path in SQLENV.rglob("*.py"):
        found = top_level_imports(path) & {"agents", "benchmarks"}
        assert not found, f"{path} imports {sorted(found)}"


def test_no_sys_path_edits_in_sqlenv():
    assert_no_sys_path_edits(SQLENV)
