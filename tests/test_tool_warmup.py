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
from sqlenv.integrations.trl_env import SUBMITTED  # noqa: E402

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


def test_no_echo_moves_shows_the_results_without_the_queries(transcripts, tmp_path):
    """--no-echo-moves: the same episodes, each tool result the turn and the env's answer without the call's query;
    the TRL example refuses an adapter warmed up in the other form, naming the flag to pass."""
    cfg, _, rows, _ = transcripts
    bare_cfg = replace(cfg, echo_moves=False)
    bare, _ = build_transcripts(bare_cfg, build_factory(bare_cfg))
    assert [r["index"] for r in bare] == [r["index"] for r in rows]
    for echoed, plain in zip(rows, bare):
        assert [m.get("tool_calls") for m in plain["messages"]] == [m.get("tool_calls") for m in echoed["messages"]]
        results = [(e["content"], p["content"]) for e, p in zip(echoed["messages"], plain["messages"])
                   if e["role"] == "tool"]
        for turn, (with_echo, without) in enumerate(results, 1):
            head, reply = with_echo.split("\n", 1) if turn < len(results) else with_echo.rsplit("\n", 1)
            assert head.startswith(f"Turn {turn}/3 <") and without == f"Turn {turn}/3\n{reply}"

    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_echo")
    assert example.environment_factory(example.parse_args(["--no-echo-moves", "--limit", "2"]))().echo_moves is False
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    settings = {"model": "smollm2-135m", "schema": "tables", "column_values": 0, "max_turns": 5}
    for trained, argv, flag in [({**settings, "echo_moves": False}, [], "--no-echo-moves"),
                                (settings, ["--no-echo-moves"], "--echo-moves")]:  # older warm-ups echoed
        (tmp_path / "config.json").write_text(json.dumps(trained))
        refused = run("examples/trl_environment.py", "--warmup-adapter", str(adapter), *argv)
        assert refused.returncode == 2 and f"echo_moves={trained.get('echo_moves', True)}" in refused.stderr \
            and f"pass {flag}" in refused.stderr, refused.stderr
    assert example.parse_args(["--warmup-adapter", str(adapter)]).echo_moves is True


def test_single_step_episodes_submit_the_gold_alone(tmp_path):
    """--single-step (--max-turns unused, so not checked): each episode is the single-step tool env's: one
    submit_answer call with the gold, scored right; the TRL example takes that warm-up with --single-step only,
    and a multi-turn warm-up not with it."""
    cfg = Config(examples=6, single_step=True, max_turns=1, schema="flat", column_values=2, seed=3)
    factory = build_factory(cfg)
    rows, counts = build_transcripts(cfg, factory)
    env = factory().env.unwrapped
    assert len(rows) == 6 and counts == {"skipped_not_correct": 0, "explore_failed": 0, "explorations_0": 6}
    for row in rows:
        messages = row["messages"]
        assert messages[1]["content"].endswith("Question: " + factory.dataset[row["index"]].question)
        assert [m["role"] for m in messages[2:]] == ["assistant", "tool", "assistant"]
        call = messages[2]["tool_calls"][0]["function"]
        assert call == {"name": "submit_answer", "arguments": {"query": one_line(gold_answer(env, row["index"]))}}
        assert messages[3] == {"role": "tool", "name": "submit_answer", "content": SUBMITTED}
    assert [t["function"]["name"] for t in json.loads(rows[0]["tools"])] == ["submit_answer"]
    multi_cfg = replace(cfg, single_step=False, max_turns=3)
    multi, _ = build_transcripts(multi_cfg, build_factory(multi_cfg))
    assert [r["index"] for r in multi] == [r["index"] for r in rows]  # the same questions drawn

    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_single")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    trained = {"model": "smollm2-135m", "schema": "tables", "column_values": 0, "single_step": True, "max_turns": 3}
    (tmp_path / "config.json").write_text(json.dumps(trained))
    assert example.parse_args(["--warmup-adapter", str(adapter), "--single-step"]).single_step is True
    refused = run("examples/trl_environment.py", "--warmup-adapter", str(adapter))
    assert refused.returncode == 2 and "single_step=True" in refused.stderr and "pass --single-step" in refused.stderr
    (tmp_path / "config.json").write_text(json.dumps({**trained, "single_step": False}))
    refused = run("examples/trl_environment.py", "--warmup-adapter", str(adapter), "--single-step")
    assert refused.returncode == 2 and "pass --no-single-step" in refused.stderr, refused.stderr


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


def twin_tag_model(tokenizer):
    """A tiny random Llama whose tool-call tag rows equal an unused special token's, in the input embedding and the
    output layer: Qwen2.5-Coder-0.5B-Instruct's ``<tool_call>``/``</tool_call>`` as shipped."""
    import torch
    from tests.test_policy import tiny_model

    model = tiny_model(tokenizer)
    twin, *tags = tokenizer.convert_tokens_to_ids(["<|box_start|>", "<tool_call>", "</tool_call>"])
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[tags] = weight[twin].clone()
    return model


@pytest.mark.slow
@pytest.mark.parametrize("train_tags", [True, False])
def test_tool_tag_rows_are_trained_where_the_tags_are_tokens(tmp_path, train_tags):
    """Where the tags are one special token each and their rows are a twin's, only the trained rows let the adapted
    model prefer <tool_call> over the twin as the assistant's first token; an attention LoRA leaves them tied."""
    import torch
    from peft import PeftModel
    from tests.test_policy import tiny_tokenizer

    from agents.tool_warmup import tool_tag_ids, train
    from sqlenv.integrations.trl_env import ensure_tool_chat_template

    tokenizer = tiny_tokenizer()
    assert tool_tag_ids(tokenizer) == []  # plain text there: nothing to train
    tokenizer.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>", "<|box_start|>"]})
    twin, opening, closing = tokenizer.convert_tokens_to_ids(["<|box_start|>", "<tool_call>", "</tool_call>"])
    assert tool_tag_ids(tokenizer) == [opening, closing]
    cfg = Config(examples=2, max_turns=2, epochs=3, learning_rate=1e-2, seed=1, train_tool_tags=train_tags,
                 output_dir=str(tmp_path / "w"))
    summary = train(cfg, model=twin_tag_model(tokenizer), tokenizer=tokenizer)
    rows = ["<tool_call>", "</tool_call>"]
    assert summary["trained_token_rows"] == ({"embed_tokens": rows, "lm_head": rows} if train_tags else {})

    ensure_tool_chat_template(tokenizer)
    episode = json.loads((tmp_path / "w" / "transcripts.jsonl").read_text().splitlines()[0])
    prompt = tokenizer.apply_chat_template(episode["messages"][:2], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
    base = twin_tag_model(tokenizer)
    with torch.no_grad():
        before = base(prompt).logits[0, -1]
        tuned = PeftModel.from_pretrained(twin_tag_model(tokenizer), str(tmp_path / "w" / "adapter")).eval()
        after = tuned(prompt).logits[0, -1]
    assert before[opening] == before[twin]
    if train_tags:
        assert after[opening] > after[twin] and after[opening] != after[closing]
    else:
        assert after[opening] == after[twin]


@pytest.fixture(scope="module")
def tag_warmup(tmp_path_factory):
    """A tiny twin-tag model saved as a model folder, and a warm-up on it that trains the tag rows."""
    from tests.test_policy import tiny_tokenizer

    from agents.tool_warmup import train

    tmp = tmp_path_factory.mktemp("tag_warmup")
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>", "<|box_start|>"]})
    base = tmp / "base"
    twin_tag_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    warm = tmp / "warm"
    train(Config(model=str(base), examples=2, max_turns=2, epochs=3, learning_rate=1e-2, seed=1, output_dir=str(warm)),
          model=twin_tag_model(tokenizer), tokenizer=tokenizer)
    return base, warm, tokenizer


@pytest.mark.slow
def test_trl_example_trains_on_from_a_warmup_with_tag_rows(tag_warmup, tmp_path):
    """examples/trl_environment.py, as a process, runs a GRPO step from a warm-up that trained the tags' rows
    (TRL's fused LM head reads the PEFT-wrapped output layer) and saves an adapter that still carries them."""
    from safetensors import safe_open

    base, warm, tokenizer = tag_warmup
    out = tmp_path / "grpo"
    proc = run("examples/trl_environment.py", "--model", str(base), "--warmup-adapter", str(warm / "adapter"),
               "--max-turns", "2", "--max-steps", "1", "--max-completion-length", "16", "--limit", "2",
               "--threads", "1", "--save", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "result.json").read_text())["steps"] == 1
    assert "'sqlenv_env/collapse/top_template':" in proc.stdout  # our trainer's monitors, in TRL's step log
    saved = json.loads((out / "adapter_config.json").read_text())["trainable_token_indices"]
    ids = tokenizer.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    assert saved == {"embed_tokens": ids, "lm_head": ids}
    with safe_open(out / "adapter_model.safetensors", "pt") as tensors:
        assert sum("trainable_tokens_delta" in key for key in tensors.keys()) == 2
    # the saved adapter's greedy held-out figures, without training: two dev questions played once each
    evaluated = tmp_path / "eval"
    proc = run("examples/trl_environment.py", "--model", str(base), "--warmup-adapter", str(out), "--max-turns", "2",
               "--max-completion-length", "16", "--eval-only", "--eval-split", "dev", "--eval-limit", "2",
               "--eval-temperature", "0", "--threads", "1", "--output-dir", str(evaluated))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((evaluated / "result.json").read_text())
    assert (result["steps"], [e["step"] for e in result["eval"]], result["eval_temperature"]) == (0, [0], 0.0)
    played = [json.loads(line) for line in (evaluated / "rollouts.jsonl").read_text().splitlines()]
    assert sorted((r["environment"], r["split"], r["global_step"]) for r in played) == [("eval", "dev", 0)] * 2
    assert not (evaluated / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_tag_rows_reports_twins_until_the_rows_are_trained(tag_warmup, tmp_path):
    """benchmarks/tag_rows.py, as a process: the base model's tag rows are twins of each other and of the unused
    <|box_start|> in both layers; merged with the warm-up's adapter, no row is <|box_start|>'s twin any more."""
    base, warm, _ = tag_warmup
    for adapter in (None, warm / "adapter"):
        out = tmp_path / "rows.json"
        proc = run("benchmarks/tag_rows.py", "--model", str(base), *(["--adapter", str(adapter)] if adapter else []),
                   "--json", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "| `<tool_call>` | output layer |" in proc.stdout
        rows = json.loads(out.read_text())["rows"]
        assert set(rows) == {"<tool_call>", "</tool_call>"}
        for tag, layers in rows.items():
            assert set(layers) == {"input embedding", "output layer"}
            for row in layers.values():
                if adapter is None:
                    other = "</tool_call>" if tag == "<tool_call>" else "<tool_call>"
                    assert row["twins"] == 2 and sorted(row["twin_tokens"]) == sorted([other, "<|box_start|>"])
                else:
                    assert "<|box_start|>" not in row["twin_tokens"], (tag, row)
