"""TextToSQLAgent-v0: multi-turn episodes (explore with <sql>, submit with <answer>) on TextToSQL-v0's
executor, datasets, matchers and rewards; its promises checked as tests/test_conformance.py checks v0's."""

import copy
import dataclasses
import json
import pickle
import re
import warnings

import cloudpickle
import gymnasium as gym
import pytest
from conftest import write_city_dataset
from gymnasium.utils.env_checker import check_env

import sqlenv
from sqlenv import AGENT_ENV_ID, ENV_ID
from sqlenv.agent_env import Explorations, TextToSQLAgentEnv, kept_a_floor

CITIES = [("Kraków", "Polska", 779), ("Zürich", "Schweiz", 421), ("東京", "日本", 13960),
          ("São Paulo", "Brasil", 12330), ("Reykjavík", "Ísland", 139), ("Plain", "ASCII", 1)]
QUESTIONS = [
    {"id": "q-krakow", "question": "Wie viele Einwohner (in Tausend) hat Kraków?",
     "sql": "SELECT population FROM city WHERE name = 'Kraków'"},
    {"id": "q-largest", "question": "Which city is the largest?",
     "sql": "SELECT name FROM city ORDER BY population DESC LIMIT 1"},
    {"id": "q-count", "question": "How many cities are listed?", "sql": "SELECT COUNT(*) FROM city"},
]
HINT = "Write exactly one <sql>QUERY</sql> (explore) or <answer>QUERY</answer> (submit)."
# per sub-environment, a scripted sequence of moves (explore, fail, malformed, answer, run out of turns)
SCRIPTS = [
    ["<sql>SELECT name FROM city</sql>", "<answer>SELECT COUNT(*) FROM city</answer>"],
    ["no tag", "<sql>SELEC</sql>", "<sql>SELECT 'Zürich'</sql>"],
    ["<answer>SELECT 'Kraków'</answer>"],
]


@pytest.fixture(scope="module")
def kwargs(tmp_path_factory):
    return write_city_dataset(tmp_path_factory.mktemp("agent-jsonl"), CITIES, QUESTIONS)


@pytest.fixture
def make(kwargs):
    envs = []

    def factory(**extra):
        env = gym.make(AGENT_ENV_ID, **{**kwargs, **extra})
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()


def last_entry(obs):
    return re.split(r"\n\n(?=Turn \d+/)", obs["transcript"])[-1]


# ---------------------------------------------------------------------- a scripted agent scores 100%


ROW_COUNT = re.compile(r"^(\d+) rows?( \(first \d+ shown\))?$", re.M)


def read_table(transcript):
    """The rows of the newest result in the transcript, or None when they were not all shown."""
    heads = list(ROW_COUNT.finditer(transcript))
    if not heads or heads[-1].group(2):
        return None
    lines = transcript[heads[-1].end():].strip("\n").split("\n")
    if "(cut at" in transcript[heads[-1].end():]:
        return None
    rows = []
    for line in lines[2:]:  # header, rule, rows
        if not line.startswith("| "):
            break
        rows.append([cell.rstrip() for cell in line[2:-2].split(" | ")])
    return rows


def literal_query(rows):
    """A query that returns ``rows`` from literals: the answer as read off the exploration."""
    def value(cell):
        return "NULL" if cell == "NULL" else "'" + cell.replace("'", "''") + "'"

    if not rows:
        return "SELECT 1 WHERE 0"
    return " UNION ALL ".join("SELECT " + ", ".join(value(c) for c in row) for row in rows)


def test_scripted_agent_scores_every_question_of_the_generated_dev_split():
    env = gym.make(AGENT_ENV_ID, split="dev")
    derived = 0
    rewards = []
    for index in range(len(env.unwrapped.dataset)):
        obs, info = env.reset(options={"index": index})
        assert obs["transcript"] == "" and info["turns_left"] == 5
        obs, reward, terminated, *_ = env.step("<sql>SELECT name FROM Athlete</sql>")
        assert (reward, terminated) == (0.0, False) and "| name" in obs["transcript"]
        gold = env.unwrapped.example(index).gold_sql
        obs, reward, terminated, _, info = env.step(f"Let me run it.\n<sql>{gold}</sql>")
        assert info["move_errors"] == [None, None] and info["turns_left"] == 3
        rows = read_table(obs["transcript"])
        if rows is not None:
            derived += 1
            answer = literal_query(rows)
        else:  # not all of the result was shown: submit the query itself
            answer = gold
        obs, reward, terminated, truncated, info = env.step(f"<answer>{answer}</answer>")
        assert terminated and not truncated and info["turn"] == 3
        rewards.append(reward)
    env.close()
    assert rewards == [1.0] * len(rewards)
    assert derived >= 0.9 * len(rewards)  # nearly every answer was read off the exploration


# ---------------------------------------------------------------------- moves and their observations


def test_exploration_shows_the_result_the_row_count_and_errors(make):
    env = make(result_rows=2)
    obs, info = env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step("<sql>SELECT name, population FROM city</sql>")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs["transcript"] == (
        "Turn 1/5 <sql>SELECT name, population FROM city</sql>\n"
        "6 rows (first 2 shown)\n"
        "| name   | population |\n"
        "|--------|------------|\n"
        "| Kraków | 779        |\n"
        "| Zürich | 421        |")
    assert info == {"index": 0, "turn": 1, "turns_left": 4, "move_errors": [None], "move": "sql",
                    "result": obs["transcript"], "reply": obs["transcript"].split("</sql>\n", 1)[1]}
    obs, reward, *_, info = env.step("<sql>SELECT * FROM town</sql>")
    assert last_entry(obs) == "Turn 2/5 <sql>SELECT * FROM town</sql>\nError (no_such_table): no such table: town"
    assert info["result"] == last_entry(obs)
    assert reward == 0.0 and info["move_errors"] == [None, "no_such_table"]
    obs, *_ = env.step("<sql>SELECT name FROM city WHERE 0</sql>")
    assert last_entry(obs) == "Turn 3/5 <sql>SELECT name FROM city WHERE 0</sql>\n0 rows\n| name |\n|------|"
    assert env.observation_space.contains(obs)


MALFORMED = [
    ("SELECT 1", "no_tag", "Malformed move: no <sql> or <answer> block. " + HINT),
    ("<sql>SELECT 1", "no_tag", "Malformed move: the <sql> tag is not closed. " + HINT),
    ("<sql>SELECT 1</sql> <answer>SELECT 1</answer>", "both_tags",
     "Malformed move: both <sql> and <answer> blocks. " + HINT),
    ("<sql>SELECT 1</sql><sql>SELECT 2</sql>", "several_tags", "Malformed move: 2 <sql> blocks. " + HINT),
    ("<answer>  \n </answer>", "empty", "Malformed move: the <answer> block is empty. " + HINT),
    (42, "not_text", "Malformed move: expected a string, got int. Write <sql>QUERY</sql> to explore or "
                     "<answer>QUERY</answer> to submit."),
]


@pytest.mark.parametrize("action,kind,text", MALFORMED, ids=[m[1] + str(i) for i, m in enumerate(MALFORMED)])
def test_malformed_moves_cost_a_turn_and_say_why(make, action, kind, text):
    env = make()
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs["transcript"].split("\n", 1)[1] == text
    assert obs["transcript"].startswith("Turn 1/5 (malformed move) ")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info == {"index": 0, "turn": 1, "turns_left": 4, "move_errors": [kind], "move": "malformed",
                    "result": obs["transcript"], "reply": text}
    penalised = make(exploration_error_penalty=0.5, turn_cost=0.1)
    penalised.reset(options={"index": 0})
    assert penalised.step(action)[1] == pytest.approx(-0.6)


def test_turn_cost_and_exploration_error_penalty(make):
    env = make(turn_cost=0.1, exploration_error_penalty=0.5)
    env.reset(options={"index": 2})
    assert env.step("<sql>SELECT COUNT(*) FROM city</sql>")[1] == pytest.approx(-0.1)
    assert env.step("<sql>SELEC</sql>")[1] == pytest.approx(-0.6)
    reward, terminated = env.step("<answer>SELECT COUNT(*) FROM city</answer>")[1:3]
    assert (reward, terminated) == (1.0, True)  # the answer is scored as in TextToSQL-v0, no cost added
    assert env.unwrapped.reward_range == (-1.6, 1.0)


def test_score_explorations_reads_an_episode_outside_it(make):
    """Which explorations would have been right answers, and whether the answer resubmitted one, from the moves
    and the infos a client saw; the episode itself is left as it was."""
    env = make()
    env.reset(options={"index": 2})
    moves = ["<sql>SELECT COUNT(*) FROM city</sql>", "<sql>SELEC</sql>", "no tags", "<sql>SELECT 1 FROM city</sql>",
             "<answer>select COUNT(*) FROM city</answer>"]
    infos = [env.step(move)[4] for move in moves]
    kinds, errors = [info["move"] for info in infos], infos[-1]["move_errors"]
    assert kinds == ["sql", "sql", "malformed", "sql", "answer"] and errors[1:3] == ["syntax", "no_tag"]
    transcript = env.unwrapped._transcript()
    found = env.unwrapped.score_explorations(2, moves, kinds, errors)
    assert found == Explorations([True, False, False, False, False], [False] * 5, False)
    assert env.unwrapped._transcript() == transcript
    resubmitted = [*moves[:4], "<answer> SELECT COUNT(*)\n  FROM city; </answer>"]
    assert env.unwrapped.score_explorations(2, resubmitted, kinds, errors).answer_explored is True
    assert env.unwrapped.score_explorations(2, moves[:4], kinds[:4], errors[:4]).answer_explored is None  # no answer
    # a result that reads as a floor answer: a count over nothing, no row, NULL; a failed one is no floor
    floors = ["<sql>SELECT COUNT(*) FROM city WHERE 0</sql>", "<sql>SELECT * FROM city WHERE 0</sql>",
              "<sql>SELECT NULL</sql>", "<sql>SELECT nope FROM city</sql>", "<sql>SELECT 7</sql>"]
    found = env.unwrapped.score_explorations(2, floors, ["sql"] * 5, [None, None, None, "no_such_column", None])
    assert found.floor == [True, True, True, False, False]


def test_kept_a_floor_needs_a_floor_explored_and_a_wrong_floor_answered():
    wrong_zero = {"error": None, "correct": False, "prediction": "0"}
    assert kept_a_floor([False, True], wrong_zero)
    assert not kept_a_floor([False, False], wrong_zero)  # no floor seen
    assert not kept_a_floor([True], dict(wrong_zero, correct=True))  # the gold is 0: keeping it is right
    assert not kept_a_floor([True], dict(wrong_zero, prediction="3"))  # answered something else
    assert not kept_a_floor([True], {"error": "no_answer", "correct": False, "prediction": ""})


def test_tags_ignore_case_and_surrounding_text(make):
    env = make()
    env.reset(options={"index": 2})
    obs, reward, terminated, _, info = env.step("I counted them.\n<ANSWER>\nSELECT COUNT(*) FROM city;\n</ANSWER>")
    assert (reward, terminated, info["sql"], info["move"]) == (1.0, True, "SELECT COUNT(*) FROM city;", "answer")
    assert obs["transcript"] == "Turn 1/5 <answer>SELECT COUNT(*) FROM city;</answer>\nAnswer submitted."


# ---------------------------------------------------------------------- final answers and running out of turns


@pytest.mark.parametrize("preset", ["binary", "partial", "paper"])
def test_the_answer_is_scored_exactly_as_text_to_sql_v0_scores_it(kwargs, preset):
    single = gym.make(ENV_ID, reward=preset, **kwargs)
    agent = gym.make(AGENT_ENV_ID, reward=preset, **kwargs)
    for index in range(len(QUESTIONS)):
        for sql in [QUESTIONS[index]["sql"], "SELECT name FROM city", "SELEC", "SELECT 'Kraków'"]:
            single.reset(options={"index": index})
            _, want_reward, *_, want = single.step(sql)
            agent.reset(options={"index": index})
            agent.step("<sql>SELECT COUNT(*) FROM city</sql>")
            _, reward, terminated, truncated, info = agent.step(f"<answer>{sql}</answer>")
            assert (reward, terminated, truncated) == (want_reward, True, False)
            extra = {"turn": 2, "turns_left": 3, "move_errors": [None, want["error"]], "move": "answer",
                     "result": f"Turn 2/5 <answer>{sql}</answer>\nAnswer submitted.", "reply": "Answer submitted."}
            assert info == {**want, **extra}
            with pytest.raises(RuntimeError, match="episode has ended"):
                agent.step("<answer>SELECT 1</answer>")
    single.close()
    agent.close()


@pytest.mark.parametrize("preset,penalty", [("binary", -1.0), ("paper", -100.0)])
def test_running_out_of_turns_truncates_with_the_error_penalty(make, preset, penalty):
    env = make(max_turns=2, reward=preset)
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step("<sql>SELECT 1</sql>")
    assert (reward, terminated, truncated, info["turns_left"]) == (0.0, False, False, 1)
    obs, reward, terminated, truncated, info = env.step("<sql>SELECT 2</sql>")
    assert (reward, terminated, truncated) == (penalty, False, True)
    assert info["error"] == "no_answer" and info["error_message"] == "no <answer> within 2 turns"
    assert info["answer"] == "779" and info["reward"] == penalty and not info["correct"]
    assert (info["turn"], info["turns_left"], info["move_errors"]) == (2, 0, [None, None])
    assert last_entry(obs) == "Turn 2/2 <sql>SELECT 2</sql>\n1 row\n| 2 |\n|---|\n| 2 |"
    with pytest.raises(RuntimeError, match="Call reset"):
        env.step("<answer>SELECT 779</answer>")
    costly = make(max_turns=1, turn_cost=0.25)
    costly.reset(options={"index": 0})
    assert costly.step("oops")[1:4] == (-1.25, False, True)


# ---------------------------------------------------------------------- budgets


def test_long_results_are_cut_at_result_chars(make):
    env = make(result_chars=120)
    env.reset(options={"index": 0})
    obs, *_ = env.step("<sql>SELECT name, country, population, name || country AS both_ FROM city</sql>")
    result = last_entry(obs).split("\n", 1)[1]
    assert len(result) == 120 and result.endswith("\n... (cut at 120 characters)")
    assert result.startswith("6 rows\n| name ")
    long_query = "SELECT " + " + ".join(["1"] * 100)
    obs, *_ = env.step(f"<sql>{long_query}</sql>")
    head = last_entry(obs).split("\n")[0]
    assert head.startswith("Turn 2/5 <sql>SELECT 1 + 1") and len(head) < 140  # the echoed query is cut too


def test_transcript_keeps_the_newest_moves_within_transcript_chars(make):
    env = make(result_chars=100, transcript_chars=400, max_turns=10)
    env.reset(options={"index": 0})
    entry = ("Turn {t}/10 <sql>SELECT name FROM city WHERE population > {t}</sql>\n5 rows\n| name      |\n"
             "|-----------|\n| Kraków    |\n| Zürich    |\n| 東京     \n... (cut at 100 characters)")
    for turn in range(1, 8):
        obs, reward, terminated, truncated, info = env.step(
            f"<sql>SELECT name FROM city WHERE population > {turn}</sql>")
        assert len(obs["transcript"]) <= 400 and env.observation_space.contains(obs)
        assert (reward, terminated, truncated, info["turn"]) == (0.0, False, False, turn)
    assert obs["transcript"] == ("(5 earlier turns omitted)\n\n" + entry.format(t=6) + "\n\n" + entry.format(t=7))
    assert len(entry.format(t=7).split("\n", 1)[1]) == 100  # each result: at most result_chars characters


def test_info_result_is_each_moves_own_entry_even_when_the_transcript_is_cut(make):
    env = make(result_chars=100, transcript_chars=100, max_turns=3)
    env.reset(options={"index": 2})
    query = "SELECT name, country FROM city WHERE population > 100 ORDER BY name"
    obs, *_, info = env.step(f"<sql>{query}</sql>")
    table = ("5 rows\n| name      | country |\n|-----------|---------|\n| Kraków    | Pol"  # 72 characters
             "\n... (cut at 100 characters)")
    assert info["result"] == f"Turn 1/3 <sql>{query}</sql>\n{table}"
    assert obs["transcript"] == info["result"][:100]  # the newest entry alone is longer than the transcript
    *_, info = env.step("oops")
    assert info["result"] == "Turn 2/3 (malformed move) oops\nMalformed move: no <sql> or <answer> block. " + HINT
    obs, reward, terminated, truncated, info = env.step("<answer>SELECT COUNT(*) FROM city</answer>")
    assert (reward, terminated, info["move"]) == (1.0, True, "answer")
    assert info["result"] == "Turn 3/3 <answer>SELECT COUNT(*) FROM city</answer>\nAnswer submitted."
    env.reset(options={"index": 2})
    env.step("<sql>SELECT 1</sql>"), env.step("<sql>SELECT 2</sql>")
    *_, truncated, info = env.step("<sql>SELECT 3</sql>")  # the turns run out: the last move's entry
    assert (truncated, info["error"], info["result"]) == (True, "no_answer", "Turn 3/3 <sql>SELECT 3</sql>\n"
                                                                             "1 row\n| 3 |\n|---|\n| 3 |")


def test_exploration_time_and_instruction_budgets(make):
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    env = make(explore_max_instructions=100_000, timeout=60.0)
    env.reset(options={"index": 0})
    obs, reward, *_, info = env.step(f"<sql>{runaway}</sql>")
    assert last_entry(obs).endswith("Error (timeout): query exceeded its 100000-instruction budget")
    assert info["move_errors"] == ["timeout"]
    spent = make(explore_seconds=0)
    spent.reset(options={"index": 0})
    obs, reward, *_, info = spent.step("<sql>SELECT 1</sql>")
    assert last_entry(obs) == ("Turn 1/5 <sql>SELECT 1</sql>\nNot run: the episode's 0 s of exploration query time "
                               "is spent. Submit an <answer>.")
    assert info["move_errors"] == ["budget"] and reward == 0.0
    assert spent.step(f"<answer>{QUESTIONS[0]['sql']}</answer>")[1] == 1.0  # the answer always runs


@pytest.mark.parametrize("field,value", [
    ("max_turns", 0), ("max_turns", True), ("result_rows", -1), ("result_chars", 10), ("transcript_chars", 50),
    ("explore_timeout", 0), ("explore_max_instructions", 0), ("explore_seconds", -1.0),
    ("turn_cost", float("nan")), ("exploration_error_penalty", -0.5), ("reward", "dense"),
    ("literal_answers", "penalise")])
def test_bad_arguments_are_named(kwargs, field, value):
    with pytest.raises(ValueError, match=field):
        TextToSQLAgentEnv(**{**kwargs, field: value})


# ---------------------------------------------------------------------- what TextToSQL-v0 promises, here too


def test_registration():
    spec = gym.spec(AGENT_ENV_ID)
    assert spec.entry_point == "sqlenv.agent_env:TextToSQLAgentEnv" and spec.nondeterministic is True
    assert spec.vector_entry_point is None  # Gymnasium's own vector envs, NEXT_STEP autoreset
    assert gym.spec(ENV_ID).vector_entry_point == "sqlenv.vector:make_vector_env"  # v0 untouched
    assert sqlenv.TextToSQLAgentEnv is TextToSQLAgentEnv


def test_check_env_passes_with_warnings_as_errors(make, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make()
        check_env(env.unwrapped, skip_render_check=True)
        env = gym.make(AGENT_ENV_ID, max_instructions=10_000_000, **kwargs)
        env.unwrapped.spec = dataclasses.replace(env.unwrapped.spec, nondeterministic=False)
        check_env(env.unwrapped, skip_render_check=True)  # with the seeded determinism checks
        env.close()


def episode_trace(env, seed, script):
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    env.action_space.seed(seed)
    for action in script + [env.action_space.sample()]:
        step = env.step(action)
        trace.append(step)
        if step[2] or step[3]:
            break
    return trace


def test_seeded_episodes_repeat_exactly(make):
    env = make(max_turns=4)
    runs = [[episode_trace(env, seed, SCRIPTS[seed % 3]) for seed in range(6)] for _ in range(2)]
    assert runs[0] == runs[1]
    assert len({t[0][1]["id"] for t in runs[0]}) > 1


@pytest.mark.parametrize("vector_mode,shared", [("sync", None), ("async", True), ("async", False)])
def test_vector_env_returns_what_single_envs_return(kwargs, vector_mode, shared):
    """Gymnasium's vector envs with the default NEXT_STEP autoreset: every value, compared as strings."""
    num_envs, steps, seed = 3, 5, 7
    expected = []
    for i in range(num_envs):
        env = gym.make(AGENT_ENV_ID, max_turns=3, **kwargs)
        obs, _ = env.reset(seed=seed + i)
        rows, pending = [(obs, None, None, None, None)], False
        moves = iter(SCRIPTS[i] * steps)
        for _ in range(steps):
            if pending:
                obs, info = env.reset()
                rows.append((obs, 0.0, False, False, None))
                pending = False
                continue
            obs, reward, terminated, truncated, info = env.step(next(moves))
            rows.append((obs, reward, terminated, truncated, info))
            pending = terminated or truncated
        expected.append(rows)
        env.close()
    extra = {} if shared is None else {"vector_kwargs": {"shared_memory": shared}}
    envs = gym.make_vec(AGENT_ENV_ID, num_envs=num_envs, vectorization_mode=vector_mode, max_turns=3,
                        **extra, **kwargs)
    moves = [iter(SCRIPTS[i] * steps) for i in range(num_envs)]
    try:
        obs, _ = envs.reset(seed=seed)
        keys = ("question", "schema", "sample_rows", "transcript")
        column = lambda o, i: {k: o[k][i] for k in keys}  # noqa: E731
        assert [column(obs, i) for i in range(num_envs)] == [rows[0][0] for rows in expected]
        for t in range(1, steps + 1):
            actions = [next(moves[i]) if expected[i][t][4] is not None else "" for i in range(num_envs)]
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            for i in range(num_envs):
                want_obs, want_reward, want_term, want_trunc, want_info = expected[i][t]
                assert column(obs, i) == want_obs
                assert (rewards[i], terminated[i], truncated[i]) == (want_reward, want_term, want_trunc)
                if want_info is not None:
                    got = {k: infos[k][i] for k in want_info}
                    assert got == want_info
    finally:
        envs.close()


@pytest.mark.parametrize("how", ["pickle", "cloudpickle", "deepcopy"])
def test_copies_mid_episode_step_like_the_original(make, how):
    env = make(max_turns=4)
    env.reset(seed=3, options={"index": 0})
    env.step("<sql>SELECT name FROM city</sql>")  # open connections, a transcript under way
    clone = {"pickle": lambda e: pickle.loads(pickle.dumps(e)),
             "cloudpickle": lambda e: cloudpickle.loads(cloudpickle.dumps(e)),
             "deepcopy": copy.deepcopy}[how](env)
    assert clone.unwrapped.explore_executor is not env.unwrapped.explore_executor
    actions = ["<sql>SELEC</sql>", "<sql>SELECT country FROM city</sql>", f"<answer>{QUESTIONS[0]['sql']}</answer>"]
    for action in actions:
        assert clone.step(action) == env.step(action)
    for seed in range(3):
        assert episode_trace(clone, seed, SCRIPTS[seed]) == episode_trace(env, seed, SCRIPTS[seed])
    clone.close()


def test_no_gold_before_the_episode_ends(make):
    env = gym.make(AGENT_ENV_ID, split="dev")
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        example = env.unwrapped.example(info["index"])
        assert set(info) == {"index", "id", "question_type", "difficulty", "turn", "turns_left", "move_errors"}
        for move in ["<sql>SELECT 1</sql>", "nonsense"]:
            obs, _, _, _, info = env.step(move)
            assert set(info) == {"index", "turn", "turns_left", "move_errors", "move", "result", "reply"}
            assert example.gold_sql not in obs["transcript"] and example.gold_sql not in info["result"]
    env.close()
    exposed = make(expose_gold=True)
    _, info = exposed.reset(options={"index": 0})
    assert info["gold_sql"] == QUESTIONS[0]["sql"] and info["answer"] == "779"


def test_observation_for_is_the_first_observation(make):
    env = make()
    first, _ = env.reset(options={"index": 1})
    env.step("<sql>SELECT 1</sql>")
    assert env.unwrapped.observation_for(1) == first and first["transcript"] == ""


def test_render_ansi(make):
    env = make(render_mode="ansi")
    env.reset(options={"index": 2})
    env.step("<sql>SELECT COUNT(*) FROM city</sql>")
    env.step("<answer>SELECT COUNT(*) FROM city</answer>")
    text = env.render()
    assert text.startswith("Question [2]: How many cities are listed?\nTurn 1/5 <sql>")
    assert text.endswith("Answer submitted.\nGold answer: 6\nReward: 1  correct=True  error=None\n")


def test_the_docs_example_runs_and_prints_what_it_says(capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "agent_env.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(example, "docs/agent_env.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "In how many different events has Yselle Achterberg won a medal?"
    assert out[1].startswith("Turn 1/5 <sql>SELECT DISTINCT f.name") and out[2] == "2 rows"
    assert out[-2:] == ["0.0 False 4 [None]", "1.0 True True 2"]


def test_the_docs_transcript_is_what_the_env_shows(make):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "agent_env.md").read_text(encoding="utf-8")
    shown = re.search(r"```\n(Turn 1/5.*?)\n```", text, re.S).group(1)
    env = make(result_rows=2)
    env.reset(options={"index": 0})
    for move in ["<sql>SELECT name, population FROM city</sql>", "<sql>SELECT * FROM town</sql>", "SELECT 1"]:
        obs, *_ = env.step(move)
    assert obs["transcript"] == shown


def test_pickled_env_plays_the_same_episodes_in_a_fresh_process(make, tmp_path):
    import subprocess
    import sys

    env = make(max_turns=3)
    (tmp_path / "env.pkl").write_bytes(cloudpickle.dumps(env))
    child = (
        "import json, pickle, sys\n"
        "env = pickle.load(open(sys.argv[1], 'rb'))\n"
        "out = []\n"
        f"for seed, script in enumerate({SCRIPTS!r}):\n"
        "    out.append([list(env.reset(seed=seed))] + [list(env.step(a)) for a in script])\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path / "env.pkl")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    want = [[list(env.reset(seed=seed))] + [list(env.step(a)) for a in script]
            for seed, script in enumerate(SCRIPTS)]
    assert json.loads(done.stdout) == json.loads(json.dumps(want))
    assert want[1][-1][3] is True and want[0][-1][2] is True  # a truncated and a terminated episode


def test_an_unknown_argument_is_named(kwargs):
    with pytest.raises(ValueError, match="max_turn"):
        gym.make(AGENT_ENV_ID, max_turn=3, **kwargs)


# ---------------------------------------------------------------------- literal answers (issue 23)
@pytest.mark.parametrize("preset,nothing", [("binary", -1.0), ("arctic", 0.0)])
def test_a_literal_answer_is_unanswered_under_the_option(make, kwargs, preset, nothing):
    """The scripted agent of issue 23: explore, then answer the constant it saw. Default: full reward."""
    def play(env, answer):
        env.reset(options={"index": 2})  # How many cities are listed? Gold: 6
        env.step("<sql>SELECT COUNT(*) FROM city</sql>")
        return env.step(f"<answer>{answer}</answer>")

    default = make(reward=preset)
    strict = make(reward=preset, literal_answers="unanswered")
    for answer in ("SELECT 6", "SELECT 2 * 3", "WITH c(n) AS (SELECT 6) SELECT n FROM c", "SELECT 6 -- FROM city"):
        _, reward, terminated, _, info = play(default, answer)
        assert (reward, terminated, info["correct"], info["reads_table"]) == (1.0, True, True, False)
        _, reward, terminated, truncated, info = play(strict, answer)
        assert (reward, terminated, truncated, info["error"], info["correct"]) == (nothing, True, False, "literal",
                                                                                   False)
        assert info["reads_table"] is False and info["move_errors"] == [None, "literal"]
    _, reward, _, _, info = play(strict, "SELECT COUNT(*) FROM city")
    assert (reward, info["error"], info["reads_table"]) == (1.0, None, True)
    # explorations are never scored: a literal one is fine, and running out of turns is still no_answer
    env = make(reward=preset, literal_answers="unanswered", max_turns=1)
    env.reset(options={"index": 2})
    _, reward, _, truncated, info = env.step("<sql>SELECT 6</sql>")
    assert (reward, truncated, info["error"], info["reads_table"]) == (nothing, True, "no_answer", False)
    single = gym.make(ENV_ID, reward=preset, literal_answers="unanswered", **kwargs)
    single.reset(options={"index": 2})
    _, want, *_, want_info = single.step("SELECT 6")
    _, got, *_, got_info = play(strict, "SELECT 6")
    assert (got, got_info["error_message"]) == (want, want_info["error_message"])
    single.close()
