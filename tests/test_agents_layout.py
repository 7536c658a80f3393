"""agents/: one job a module, and no import circle between them (function-level imports included)."""

import ast
from pathlib import Path

AGENTS = Path(__file__).resolve().parents[1] / "agents"


def imports_of(path: Path) -> set[str]:
    """The agents.* modules a file imports anywhere in it (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "agents":
                names.update(alias.name for alias in node.names)
            elif node.module.startswith("agents."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("agents."))
    return names


def module_graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in AGENTS.glob("*.py") if p.stem != "__init__"}
    return {name: imports_of(path) & set(modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_in_agents():
    graph = module_graph()
    assert "grpo_train" in graph and "sft_warmup" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_trainer_parts_do_not_import_the_script():
    graph = module_graph()
    for name, deps in graph.items():
        assert "grpo_train" not in deps, f"agents/{name}.py imports the script agents/grpo_train.py"


def test_every_module_says_its_job():
    for path in AGENTS.glob("*.py"):
        if path.stem != "__init__":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no module docstring"


def top_level_imports(path: Path) -> set[str]:
    """The top-level package of every import anywhere in a file (``from . import x`` counts as nothing)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def sys_path_edits(path: Path) -> list[int]:
    """Lines of a file that touch ``sys.path`` (insert, append, assignment, ...) or call ``site.addsitedir``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "addsitedir":
            lines.append(node.lineno)
    return lines


def test_agents_never_imports_benchmarks():
    for path in AGENTS.rglob("*.py"):
        assert "benchmarks" not in top_level_imports(path), f"agents/{path.name} imports benchmarks"


# Known edits, to be removed by their owners, not to be added to: the two trainer scripts put the
# checkout on sys.path when run as files (``python agents/grpo_train.py``); sqlenv/_worker.py drops its
# own folder from sys.path when run as a script. Anything else is refused.
RUN_AS_FILE = {"agents/grpo_train.py", "agents/sft_warmup.py", "sqlenv/_worker.py"}


def assert_no_sys_path_edits(package: Path):
    for path in package.rglob("*.py"):
        name = path.relative_to(package.parent).as_posix()
        if name in RUN_AS_FILE:
            assert len(sys_path_edits(path)) <= 1, f"{name} edits sys.path more than once"
            continue
        assert not sys_path_edits(path), f"{name} edits sys.path at lines {sys_path_edits(path)}"


def test_no_sys_path_edits_in_agents():
    assert_no_sys_path_edits(AGENTS)


def test_the_scanners_see_what_they_look_for(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import sys\ndef f():\n    sys.path.insert(0, '.')\n    from benchmarks import paired\n")
    assert "benchmarks" in top_level_imports(source) and sys_path_edits(source) == [3]
