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
