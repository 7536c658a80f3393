"""Hostile moves and results (issue 21): every move is measured before it is read, and read in one
pass; exploration tables, ``info`` fields and ``render()`` are bounded before they are built; scores
still come from the whole result."""

import json
import random
import re
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import pytest
from conftest import REPO, write_city_dataset

import sqlenv.agent_env
from sqlenv import AGENT_ENV_ID, ENV_ID
from sqlenv.env import CUT_NOTE, MAX_INFO_CHARS

CITIES = [("Kraków", "Polska", 779), ("Zürich", "Schweiz", 421), ("東京", "日本", 13960)]
QUESTIONS = [{"id": "q-count", "question": "How many cities are listed?",
              "sql": "SELECT COUNT(*) FROM city"}]
HINT = "Write exactly one <sql>QUERY</sql> (explore) or <answer>QUERY</answer> (submit)."
# 79 columns of 99,000-byte blobs in one row, then 19 small rows: 7.8 MB, under max_bytes
BLOBS = ", ".join(f"zeroblob(99000) AS c{i}" for i in range(79))
SMALL = " UNION ALL ".join("SELECT " + ", ".join([str(r)] * 79) for r in range(19))
BLOB_ATTACK = f"SELECT {BLOBS} UNION ALL {SMALL}"
BLOB_ANSWER = "SELECT " + ", ".join(["zeroblob(99000)"] * 79)


@pytest.fixture(scope="module")
def kwargs(tmp_path_factory):
    return write_city_dataset(tmp_path_factory.mktemp("hostile"), CITIES, QUESTIONS)


@pytest.fixture
def make(kwargs):
    envs = []

    def factory(env_id=AGENT_ENV_ID, **extra):
        env = gym.make(env_id, **{**kwargs, **extra})
        env.reset(options={"index": 0})
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()


def run_child(code: str, kwargs: dict, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter (``KWARGS`` holds the env's arguments); its last stdout
    line is JSON. The timeout only guards against a hang."""
    script = f"import json, sys\nKWARGS = json.loads(sys.argv[1])\n{textwrap.dedent(code)}"
    done = subprocess.run([sys.executable, "-c", script, json.dumps(kwargs)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ moves: measured, then read once


def test_a_move_longer_than_the_action_space_is_too_long_and_echoed_briefly(make):
    env = make()
    limit = env.unwrapped.action_space.max_length
    move = "<sql>SELECT 1</sql>" + "." * (limit - 19)  # the block, then reasoning text
    assert len(move) == limit
    *_, info = env.step(move)
    assert info["move_errors"] == [None]  # exactly at the limit: read and run
    obs, reward, terminated, truncated, info = env.step(move + " ")
    assert (reward, terminated, truncated, info["move"]) == (0.0, False, False, "malformed")
    assert info["move_errors"][-1] == "too_long" and "too_long" in sqlenv.agent_env.MOVE_ERRORS
    head, text = info["result"].split("\n", 1)
    assert text == (f"Malformed move: it is {limit + 1} characters long; the limit is {limit}. "
                    + HINT)
    assert head.startswith("Turn 2/5 (malformed move) <sql>SELECT 1</sql>...")
    assert head.endswith(" ...")
    assert len(head) < 300 and obs["transcript"].endswith(text)


@pytest.mark.parametrize("unit", ["<sql>", "<answer>", "<SQL>x", "<sql></answer>", "<sql></sql>",
                                  "<sql>a</answer><ANSWER> </sql>x<"])
def test_moves_up_to_a_megabyte_are_answered(make, unit):
    env = make(max_turns=100)
    limit = env.unwrapped.action_space.max_length
    for size in (limit, limit + 1, 1_000_000):
        move = (unit * (size // len(unit) + 1))[:size]
        *_, info = env.step(move)
        kind = info["move_errors"][-1]
        expected = ("too_long",) if size > limit else ("no_tag", "several_tags", "both_tags")
        assert kind in expected
        assert len(info["result"]) < 600


def test_quadratic_shapes_at_the_length_limit_do_not_stall(kwargs):
    """Twelve moves at the limit that the former regular expression read in quadratic time (about
    10 s each); the generous timeout is a hang guard, not a measurement."""
    result = run_child("""
        import gymnasium as gym
        from sqlenv import AGENT_ENV_ID
        env = gym.make(AGENT_ENV_ID, max_turns=100, **KWARGS)
        env.reset(options={"index": 0})
        limit = env.unwrapped.action_space.max_length
        kinds = []
        for unit in ["<sql>", "<answer>", "<SQL>x", "<sql></answer>"] * 3:
            kinds.append(env.step((unit * (limit // len(unit) + 1))[:limit])[4]["move_errors"][-1])
        print(json.dumps(kinds))
    """, kwargs, timeout=100)
    assert result == ["no_tag"] * 12


def test_the_parser_reads_blocks_as_the_documented_pattern_does(make):
    """Random moves of tags and text: the one-pass parser finds the blocks
    ``<(sql|answer)>(.*?)</\\1>`` finds (ASCII tag names in any case)."""
    pattern = re.compile(r"<(sql|answer)>(.*?)</\1>", re.IGNORECASE | re.DOTALL | re.ASCII)
    parse = make().unwrapped.parse
    atoms = ["<sql>", "</sql>", "<answer>", "</answer>", "<SQL>", "</Sql>", "<ANSWER>", "</aNsWeR>",
             "SELECT 1", " ", "<", ">", "/", "\n", "東", "<ſql>"]
    rng = random.Random(0)
    for _ in range(5_000):
        move = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 10)))
        blocks = pattern.findall(move)
        kind, query, problem = parse(move)
        if len(blocks) == 1 and blocks[0][1].strip():
            assert (kind, query, problem) == (blocks[0][0].lower(), blocks[0][1].strip(), None)
        elif not blocks:
            assert problem[0] == "no_tag"
        elif len({name.lower() for name, _ in blocks}) > 1:
            assert problem[0] == "both_tags"
        else:
            assert problem[0] == ("several_tags" if len(blocks) > 1 else "empty")


def test_a_look_alike_tag_is_no_tag_and_never_raises(make):
    env = make()
    # U+017F: the former parser read it as a block of kind 'ſql', and step raised TypeError
    *_, info = env.step("<ſql>SELECT 1</ſql>")
    assert info["move_errors"] == ["no_tag"]
    assert info["result"].endswith("Malformed move: no <sql> or <answer> block. " + HINT)


def test_a_str_subclass_is_read_as_its_plain_text(make):
    class Liar(str):
        def __len__(self):
            return 0

        def lower(self):
            return "<sql>DROP TABLE city</sql>"

    *_, info = make().step(Liar("<sql>SELECT COUNT(*) FROM city</sql>"))
    assert info["move_errors"] == [None]
    assert info["result"].endswith("1 row\n| COUNT(*) |\n|----------|\n| 3        |")


@pytest.mark.parametrize("env_id", [ENV_ID, AGENT_ENV_ID])
def test_an_unprintable_action_is_scored_not_raised(make, env_id):
    env = make(env_id)
    *_, info = env.step(10 ** 5000)  # repr() of it raises ValueError
    if env_id == ENV_ID:
        assert info["error"] == "other" and info["sql"] == "<int object>"
    else:
        assert info["move_errors"] == ["not_text"] and "<int object>" in info["result"]


# ------------------------------------------------------------------ results bounded before built


def test_an_exploration_of_large_blobs_stays_small(kwargs):
    """The blob attack: formerly +0.7 GB peak memory and seconds to format; the result is cut at
    result_chars, and building it takes a few MB besides the 7.8 MB result itself."""
    result = run_child(f"""
        import resource
        import gymnasium as gym
        from sqlenv import AGENT_ENV_ID
        env = gym.make(AGENT_ENV_ID, **KWARGS)
        env.reset(options={{"index": 0}})
        env.step("<sql>SELECT 1</sql>")  # the connection is open before the measurement
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        obs, reward, terminated, truncated, info = env.step("<sql>{BLOB_ATTACK}</sql>")
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"grown_kb": grown, "result": info["result"],
                          "errors": info["move_errors"], "transcript": obs["transcript"]}}))
    """, kwargs)
    entry = result["result"]  # the echoed query is cut too, its note on a line of its own
    text = entry[entry.index("</sql>\n") + 7:]
    assert result["errors"] == [None, None]
    assert text.startswith("20 rows\n| c0 " + " " * 100) and len(text) == 2_000
    assert text.endswith(CUT_NOTE.format(limit=2_000))
    assert result["transcript"].endswith(text)
    assert result["grown_kb"] < 100 * 1024, f"peak memory grew {result['grown_kb'] / 1024:.0f} MB"


def test_formatting_a_result_spends_the_exploration_budget(make, monkeypatch):
    slow = sqlenv.agent_env._format_table

    def slow_format(*args, **kwargs):
        time.sleep(0.3)  # formatting that takes longer than the episode's exploration budget
        return slow(*args, **kwargs)

    monkeypatch.setattr(sqlenv.agent_env, "_format_table", slow_format)
    env = make(explore_seconds=0.2)
    *_, info = env.step("<sql>SELECT 1</sql>")
    assert info["move_errors"] == [None]
    *_, info = env.step("<sql>SELECT 2</sql>")  # the query itself took microseconds
    assert info["move_errors"] == [None, "budget"]


@pytest.mark.parametrize("env_id", [ENV_ID, AGENT_ENV_ID])
def test_an_answer_of_large_blobs_gets_a_bounded_info(make, env_id):
    env = make(env_id, render_mode="ansi")
    move = BLOB_ANSWER if env_id == ENV_ID else f"<answer>{BLOB_ANSWER}</answer>"
    obs, reward, terminated, truncated, info = env.step(move)
    assert (reward, info["executed"], info["correct"]) == (0.0, True, False)
    assert len(info["prediction"]) == MAX_INFO_CHARS
    assert info["prediction"].startswith("\x00" * 1000)
    assert info["prediction"].endswith(CUT_NOTE.format(limit=MAX_INFO_CHARS))
    assert len(json.dumps(info)) < 10 * MAX_INFO_CHARS  # formerly 46.9 MB
    assert len(env.render()) < 4 * MAX_INFO_CHARS


def test_scores_come_from_the_whole_result_when_the_prediction_is_cut(make):
    env = make(ENV_ID, reward="partial")
    sql = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
           "SELECT i FROM n UNION ALL SELECT 3")
    *_, info = env.step(sql)
    rows = [(i,) for i in range(1, 3001)] + [(3,)]
    whole = env.unwrapped.dataset.match(env.unwrapped.example(0), rows)
    assert (info["correct"], info["exact"], info["relaxed"], info["f1"]) == (
        whole.correct, whole.exact, whole.relaxed, whole.f1)
    assert info["f1"] > 0 and info["prediction"].startswith("1, 2, 3, 4, ")
    assert len(info["prediction"]) == MAX_INFO_CHARS and info["prediction"].endswith(" characters)")


def test_long_sql_and_error_messages_are_cut_in_info_and_render(make):
    env = make(ENV_ID, render_mode="ansi")
    sql = "SELECT " + "1 + " * 30_000 + "x"
    *_, info = env.step(sql)
    assert len(info["sql"]) == MAX_INFO_CHARS and info["sql"].startswith("SELECT 1 + 1 + ")
    assert info["sql"].endswith(CUT_NOTE.format(limit=MAX_INFO_CHARS))
    assert info["error"] == "too_large" and len(info["error_message"]) <= MAX_INFO_CHARS
    text = env.render()
    assert "SQL: SELECT 1 + 1 + " in text and len(text) < 2 * MAX_INFO_CHARS


def test_render_of_a_blob_result_is_a_bounded_table(make):
    env = make(ENV_ID, render_mode="ansi")
    env.step(BLOB_ATTACK)
    text = env.render()
    assert "| c0 " in text  # the blob column is wider than the whole budget
    assert CUT_NOTE.format(limit=MAX_INFO_CHARS) in text and len(text) < 2 * MAX_INFO_CHARS


@pytest.mark.parametrize("tag", ["sql", "answer"])
def test_interrupt_ends_a_running_move_as_a_timeout(make, tag):
    """env.interrupt() from another thread (a server whose client left) stops the query of the move
    running now, exploration or answer, under 600 s budgets; the join is a hang guard."""
    import threading

    env = make(timeout=600.0, explore_timeout=600.0, explore_seconds=600.0)
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(env.step(f"<{tag}>{endless}</{tag}>")))
    runner.start()
    while not outcome and runner.is_alive():
        env.unwrapped.interrupt()
        runner.join(0.05)
    runner.join(120)
    assert not runner.is_alive()
    _, reward, terminated, _, info = outcome[0]
    assert info["move_errors"][-1] == "timeout" and terminated == (tag == "answer")
    if tag == "answer":
        assert info["error"] == "timeout" and reward == -1.0
