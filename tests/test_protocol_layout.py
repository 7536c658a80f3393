"""The text protocol (sqlenv/prompts.py, sqlenv/completion.py): stdlib only, never torch, transformers or
agents, and the one home of every prompt text that the trainer and the adapters use."""

import ast
import subprocess
import sys
from pathlib import Path

from test_agents_layout import top_level_imports

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = [REPO / "sqlenv" / "prompts.py", REPO / "sqlenv" / "completion.py"]
# Modules that read prompt texts: they import them from sqlenv.prompts and define none of their own.
READERS = [*sorted((REPO / "agents").rglob("*.py")), *sorted((REPO / "sqlenv" / "integrations").rglob("*.py")),
           *sorted((REPO / "sqlenv_verifiers").rglob("*.py"))]


def test_protocol_modules_import_only_the_standard_library():
    for path in PROTOCOL:
        found = top_level_imports(path) - set(sys.stdlib_module_names) - {"__future__"}
        assert not found, f"{path.relative_to(REPO)} imports {sorted(found)}"


def test_importing_the_protocol_loads_no_torch_transformers_or_agents():
    code = ("import sys, sqlenv.prompts, sqlenv.completion; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'agents'}))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def prompt_constants(path: Path) -> list[str]:
    """Module-level names assigned a string whose name says it is a prompt text (``*_PROMPT``, ``*_TEMPLATE``,
    ``PREFILL``)."""
    found = []
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            name = getattr(target, "id", "")
            if name.endswith(("_PROMPT", "_TEMPLATE")) or name == "PREFILL":
                found.append(name)
    return found


def test_prompt_texts_live_only_in_sqlenv_prompts():
    assert {"SYSTEM_PROMPT", "DEFAULT_SYSTEM_PROMPT", "USER_TEMPLATE", "PREFILL"} <= set(prompt_constants(PROTOCOL[0]))
    for path in READERS:
        assert not prompt_constants(path), f"{path.relative_to(REPO)} defines {prompt_constants(path)}"


def test_the_adapters_take_their_prompts_from_sqlenv_prompts():
    for name in ("trl.py", "trl_env.py", "verifiers.py", "skyrl.py"):
        path = REPO / "sqlenv" / "integrations" / name
        modules = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "sqlenv.prompts" in modules, f"{name} does not import sqlenv.prompts"
