"""agents/tool_warmup.py: tool-call episodes played through TRL's environment, and the adapter TRL's example loads."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import help_options, load_script

pytest.importorskip("trl")

from agents.agent_warmup import gold_answer  # noqa: E402
from agents.tool_warmup import Config, build_factory, build_transcripts, one_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run(script, *argv):
    return subprocess.run([sys.executable, str(REPO / script), *argv], check=False, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "2000"})


def test_help_and_bad_settings_name_the_flag():
    proc = run("agents/tool_warmup.py", "--help")
    assert proc.returncode == 0, proc.stderr
    lines = help_options(proc.stdout)
    assert "(default: 5)" in lines["--max-turns"] and "(default: tables)" in lines["--schema"]
    assert "(default: smollm2-135m)" in lines["--model"]
    for argv, message in [(["--max-turns", "1"], "max_turns=1 (--max-turns) must be at least 2"),
                          (["--schema", "wide"], "schema='wide' (--schema) must be one of tables, flat"),
                          (["--examples", "0"], "examples=0 (--examples) must be at least 1")]:
        bad = run("agents/tool_warmup.py", *argv)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


@pytest.fixture(scope="module")
def transcripts():
    cfg = Config(examples=8, max_turns=3, schema="flat", column_values=2, seed=3)
    factory = build_factory(cfg)
    rows, counts = build_transcripts(cfg, factory)
    return cfg, factory, rows, counts


def test_transcripts_explore_then_submit_the_gold(transcripts):
    cfg, factory, rows, counts = transcripts
    env = factory().env.unwrapped
    assert len(rows) == 8 and counts["skipped_not_correct"] == 0
    assert sum(counts[f"explorations_{n}"] for n in range(3)) == 8
    assert {row["explorations"] for row in rows} <= {0, 1, 2} and len({row["explorations"] for row in rows}) > 1
    for row in rows:
        messages = row["messages"]
        assert [m["role"] for m in messages[:2]] == ["system", "user"]
        assert messages[1]["content"].endswith("Question: " + factory.dataset[row["index"]].question)
        calls = [m["tool_calls"][0]["function"] for m in messages if m.get("tool_calls")]
        assert [c["name"] for c in calls] == ["run_sql"] * row["explorations"] + ["submit_answer"]
        assert calls[-1]["arguments"] == {"query": one_line(gold_answer(env, row["index"]))}
        assert not any("\n" in c["arguments"]["query"] for c in calls)
        results = [m["content"] for m in messages if m["role"] == "tool"]
        assert all(r.startswith(f"Turn {k}/3 <sql>") and "Error" not in r for k, r in enumerate(results[:-1], 1))
        assert results[-1].endswith("Answer submitted.") and messages[-1] == {"role": "assistant", "content": ""}
    assert [t["function"]["name"] for t in json.loads(rows[0]["tools"])] == ["run_sql", "submit_answer"]
    again, _ = build_transcripts(cfg, factory)
    assert [r["messages"] for r in again] == [r["messages"] for r in rows]  # seeded


def test_one_line_keeps_quoted_text_and_drops_comments():
    sql = ("SELECT a, -- the year\n  b /* two\nlines */\nFROM \"my  table\"\n"
           "WHERE name = 'Ivo  Fair\nholm' AND [x  y] = 'it''s'\n")
    assert one_line(sql) == "SELECT a, b FROM \"my  table\" WHERE name = 'Ivo  Fair\nholm' AND [x  y] = 'it''s'"
    assert one_line("SELECT 1") == "SELECT 1" and one_line("") == ""


def test_no_one_line_sql_keeps_the_gold_as_written(transcripts):
    cfg, factory, rows, _ = transcripts
    env = factory().env.unwrapped
    as_written, counts = build_transcripts(replace(cfg, one_line_sql=False), factory)
    assert counts["skipped_not_correct"] == 0
    golds = [gold_answer(env, row["index"]) for row in as_written]
    assert any("\n" in gold for gold in golds)
    assert [row["messages"][-3]["tool_calls"][0]["function"]["arguments"]["query"] for row in as_written] == golds
    assert [row["index"] for row in as_written] == [row["index"] for row in rows]


@pytest.mark.slow
def test_warmup_fits_an_adapter_that_the_trl_example_loads(tmp_path):
    """The whole warm-up on a tiny random Llama: SFTTrainer's loss falls over three passes of two episodes, the
    adapter is saved where examples/trl_environment.py --warmup-adapter reads it, and that example refuses an
    adapter trained with other env settings than its own."""
    from agents.tool_warmup import train
    from tests.test_policy import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    cfg = Config(examples=2, max_turns=2, epochs=3, learning_rate=1e-2, seed=1, output_dir=str(tmp_path / "w"))
    summary = train(cfg, model=tiny_model(tokenizer), tokenizer=tokenizer)
    assert summary["episodes"] == 2 and summary["steps"] == 3 and summary["last_loss"] < summary["first_loss"]
    adapter = tmp_path / "w" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    assert (adapter / "adapter_model.safetensors").is_file()
    assert len((tmp_path / "w" / "transcripts.jsonl").read_text().splitlines()) == 2

    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_example")
    args = example.parse_args(["--warmup-adapter", str(adapter), "--max-turns", "2", "--model", "smollm2-135m"])
    assert args.warmup_adapter == str(adapter)
    with pytest.raises(SystemExit):
        example.parse_args(["--warmup-adapter", str(adapter), "--max-turns", "5"])
    refused = run("examples/trl_environment.py", "--warmup-adapter", str(adapter), "--max-turns", "2",
                  "--schema", "flat")
    assert refused.returncode == 2 and "trained with schema='tables'" in refused.stderr, refused.stderr
    missing = run("examples/trl_environment.py", "--warmup-adapter", str(tmp_path))
    assert missing.returncode == 2 and "no adapter_config.json there" in missing.stderr
