"""TextToSQLEnv: the Gymnasium contract, rewards in info, group scoring, vector envs."""

import sqlite3
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import sqlenv  # noqa: F401  (registers TextToSQL-v0)
from sqlenv.env import TextToSQLEnv


@pytest.fixture(scope="module")
def env():
    env = TextToSQLEnv(split="dev", render_mode="ansi")
    yield env
    env.close()


def _gold_index(env):
    return next(i for i, ex in enumerate(env.dataset) if ex.gold_sql)


def test_check_env_builtin_passes_without_warnings():
    env = gym.make("TextToSQL-v0", split="dev")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("schema", ["tables", "flat"])
def test_check_env_temptabqa_passes_without_warnings(data_dir, schema):
    env = gym.make("sqlenv:TextToSQL-v0", dataset="temptabqa-c", split="dev", data_dir=str(data_dir), schema=schema)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_default_make_uses_builtin_benchmark():
    env = gym.make("TextToSQL-v0")
    assert env.unwrapped.dataset.name == "generated"
    obs, info = env.reset(seed=0)
    assert set(obs) == {"question", "schema", "sample_rows"}
    assert "CREATE TABLE" in obs["schema"] and obs["question"]
    env.close()


def test_reset_pins_index_and_seed_is_deterministic(env):
    _, info = env.reset(options={"index": 5})
    assert info["index"] == 5
    a = env.reset(seed=7)[1]["index"]
    b = env.reset(seed=7)[1]["index"]
    assert a == b


def test_reset_rejects_bad_index(env):
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": len(env.dataset)})


def test_gold_sql_is_rewarded_and_info_has_components(env):
    i = _gold_index(env)
    env.reset(options={"index": i})
    _, reward, terminated, truncated, info = env.step(env.example(i).gold_sql)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["error"] is None and info["executed"] and info["correct"] is True
    for key in ("exact", "relaxed", "f1", "prediction", "answer", "error_message"):
        assert key in info


@pytest.mark.parametrize("sql,kind", [
    ("SELEC 1", "syntax"),
    ("SELECT * FROM NoSuchTable", "no_such_table"),
    ("SELECT nope FROM Medal", "no_such_column"),
    ("DROP TABLE Medal", "forbidden"),
    ("SELECT 1; SELECT 2", "multiple_statements"),
    ("\x00\xff garbage", None),
])
def test_failing_sql_is_penalised_never_raised(env, sql, kind):
    env.reset(options={"index": 0})
    _, reward, terminated, _, info = env.step(sql)
    assert reward == -1.0 and terminated
    assert info["error"] is not None and info["correct"] is False
    if kind:
        assert info["error"] == kind


def test_non_string_action_is_penalised(env):
    env.reset(options={"index": 0})
    _, reward, _, _, info = env.step(12345)
    assert reward == -1.0 and info["error"] is not None


def test_wrong_answer_scores_zero(env):
    env.reset(options={"index": 0})
    _, reward, _, _, info = env.step("SELECT 'certainly not the answer'")
    assert reward == 0.0 and info["executed"] and not info["correct"]


def test_step_requires_reset():
    env = TextToSQLEnv(split="dev")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("SELECT 1")
    env.reset(seed=0)
    env.step("SELECT 1")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("SELECT 1")


def test_render_ansi_shows_question_sql_and_table(env):
    i = _gold_index(env)
    env.reset(options={"index": i})
    env.step(env.example(i).gold_sql)
    text = env.render()
    assert env.dataset[i].question in text and "Reward: 1" in text and "|" in text


def test_score_group_serial_and_parallel_agree(env):
    i = _gold_index(env)
    env.reset(options={"index": i})
    sqls = [env.example(i).gold_sql, "SELECT 'x'", "SELEC", "DELETE FROM Medal"] * 2
    serial = env.score_group(sqls)
    parallel = env.score_group(sqls, workers=2)
    assert [r for r, _ in serial] == [1.0, 0.0, -1.0, -1.0] * 2
    assert [r for r, _ in parallel] == [r for r, _ in serial]
    assert [i["error"] for _, i in parallel] == [i["error"] for _, i in serial]


@pytest.mark.parametrize("reward,lo,hi", [("binary", -1, 1), ("partial", -1, 1), ("paper", -100, 1101)])
def test_reward_presets(reward, lo, hi):
    env = TextToSQLEnv(split="dev", reward=reward)
    i = _gold_index(env)
    env.reset(options={"index": i})
    (good, _), (bad, _) = env.score_group([env.example(i).gold_sql, "SELEC"])
    assert lo <= bad < good <= hi
    assert bad == lo


@pytest.mark.parametrize("kwargs,field", [
    ({"reward": "nope"}, "reward"), ({"schema": "wide"}, "schema"),
    ({"sample_rows": -1}, "sample_rows"), ({"workers": -2}, "workers"), ({"render_mode": "human"}, "render_mode"),
    ({"split": "nope"}, "split"), ({"dataset": "nope"}, "dataset"), ({"literal_answers": "drop"}, "literal_answers"),
    ({"column_values": -1}, "column_values"), ({"column_values": True}, "column_values"),
])
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TextToSQLEnv(**kwargs)


def test_a_dataset_object_keeps_the_schema_it_was_loaded_with():
    """A Dataset's databases are built for one schema: the env shows that one, and ``schema=`` naming another is
    refused, naming both (it was ignored silently: ``--schema flat`` over a loaded dataset showed five tables)."""
    from sqlenv.datasets import load_dataset

    flat, tables = (load_dataset("generated", split="dev", schema=s) for s in ("flat", "tables"))
    for dataset, kwargs, count in [(flat, {}, 1), (flat, {"schema": "flat"}, 1), (tables, {}, 5),
                                   (tables, {"schema": "tables"}, 5)]:
        env = TextToSQLEnv(dataset, **kwargs)
        obs, _ = env.reset(seed=0)
        assert obs["schema"].count("CREATE TABLE") == count and env.schema_variant == dataset.schema
    for dataset, schema in [(tables, "flat"), (flat, "tables")]:
        message = (f"schema='{schema}', but the Dataset object was loaded with schema='{dataset.schema}'"
                   f".*pass schema='{schema}' to sqlenv.load_dataset")
        with pytest.raises(ValueError, match=message):
            gym.make("sqlenv:TextToSQL-v0", dataset=dataset, schema=schema)


def test_flat_schema_observation(data_dir):
    env = TextToSQLEnv(dataset="temptabqa-c", split="dev", data_dir=str(data_dir), schema="flat", sample_rows=2)
    obs, _ = env.reset(seed=0)
    assert obs["schema"].count("CREATE TABLE") == 1 and obs["sample_rows"]


def test_column_values_list_the_athletes_values_in_the_observation(data_dir):
    """column_values=k: under the statement, each text column's k most frequent values of this athlete's
    database, as literals a query can copy; the rest of the observation is unchanged."""
    kwargs = dict(dataset="temptabqa-c", split="dev", data_dir=str(data_dir), schema="flat")
    env, plain = TextToSQLEnv(**kwargs, column_values=2), TextToSQLEnv(**kwargs)
    obs, info = env.reset(seed=0)
    bare, _ = plain.reset(seed=0)
    lines = obs["schema"][len(bare["schema"]) + 1:].splitlines()  # after the statement's newline
    assert obs["schema"].startswith(bare["schema"]) and obs["sample_rows"] == bare["sample_rows"]
    conn = sqlite3.connect(env.dataset.database(env.example(info["index"])))
    counts = conn.execute("SELECT medal, COUNT(*) FROM Medals GROUP BY medal ORDER BY 2 DESC, 1").fetchall()
    conn.close()
    more = f" (+{len(counts) - 2} more)" if len(counts) > 2 else ""
    assert lines[0] == "-- Medals values, most frequent first:"
    assert "-- medal: " + ", ".join(f"'{v}'" for v, _ in counts[:2]) + more in lines
    _, _, _, _, step = env.step(f"SELECT COUNT(*) FROM Medals WHERE medal = '{counts[0][0]}'")  # copied
    assert step["error"] is None and step["reads_table"]
    env.close()
    plain.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env_on_the_builtin_benchmark_matches_single_envs(mode):
    envs = gym.make_vec("TextToSQL-v0", num_envs=2, vector_mode=mode, split="dev")
    singles = [gym.make("TextToSQL-v0", split="dev") for _ in range(2)]
    obs, _ = envs.reset(seed=0)
    assert list(obs["question"]) == [s.reset(seed=i)[0]["question"] for i, s in enumerate(singles)]
    for _ in range(3):
        obs, rewards, terminated, truncated, infos = envs.step(["SELECT COUNT(*) FROM Medal", "SELEC"])
        steps = [s.step(sql) for s, sql in zip(singles, ["SELECT COUNT(*) FROM Medal", "SELEC"])]
        assert rewards.tolist() == [step[1] for step in steps] and rewards[1] == -1.0 and terminated.all()
        assert list(infos["final_info"]["prediction"]) == [step[4]["prediction"] for step in steps]
        resets = [s.reset()[0] for s in singles]
        assert ([(q, sc) for q, sc in zip(obs["question"], obs["schema"])]
                == [(r["question"], r["schema"]) for r in resets])
    envs.close()


def test_dataset_subset_keeps_scoring():
    from sqlenv import load_dataset

    ds = load_dataset("generated", split="dev")
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub[0] is ds[3] and sub.database(sub[1]) == ds.database(ds[1])
    with pytest.raises(TypeError, match="subset"):
        ds[0:2]


def test_observation_space_accepts_any_unicode_value():
    env = TextToSQLEnv(split="dev")
    obs, _ = env.reset(seed=0)
    obs = dict(obs, sample_rows="Zürich | Kraków | 東京")
    assert env.observation_space.contains(obs)
    assert not env.observation_space["question"].contains(12)


# ---------------------------------------------------------------------- literal answers (issue 23)
def _literal(answer: str) -> str:
    return "SELECT '" + answer.replace("'", "''") + "'"


def _single_value_index(env):
    return next(i for i, ex in enumerate(env.dataset) if ex.gold_sql and ex.answer and "," not in ex.answer)


@pytest.mark.parametrize("reward", ["binary", "arctic", "paper"])
def test_literal_answers_unanswered_scores_a_right_constant_as_no_answer(reward):
    scored = TextToSQLEnv(split="dev", reward=reward)
    unanswered = TextToSQLEnv(split="dev", reward=reward, literal_answers="unanswered")
    i = _single_value_index(scored)
    gold, answer = scored.example(i).gold_sql, scored.example(i).answer
    cte = "WITH c(x) AS (SELECT '" + answer.replace("'", "''") + "') SELECT x FROM c"
    sqls = [_literal(answer), cte, gold, "SELECT COUNT(*) FROM Medal", "", "SELECT 'surely wrong'"]
    nothing = scored.reward_range[0]  # what an answer that gives nothing (an empty query) earns
    for env in (scored, unanswered):
        env.reset(options={"index": i})
    default = scored.score_group(sqls)
    strict = unanswered.score_group(sqls)
    assert [info["reads_table"] for _, info in default] == [False, False, True, True, False, False]
    assert [info["reads_table"] for _, info in strict] == [False, False, True, True, False, False]
    # the default scores a right constant as right; "unanswered" gives it what the empty query gets
    assert [r for r, _ in default][:3] == [scored.reward_range[1]] * 3 and default[4][0] == nothing
    assert [r for r, _ in strict] == [nothing, nothing, default[2][0], default[3][0], nothing, nothing]
    assert [info["error"] for _, info in strict] == ["literal", "literal", None, None, "syntax", "literal"]
    assert [info["correct"] for _, info in strict][:3] == [False, False, True]
    assert strict[0][1]["executed"] is False and "reads no table" in strict[0][1]["error_message"]
    assert strict[0][1]["prediction"] == "" and default[0][1]["prediction"] == answer
    # env.step and the worker-process group path score the same way
    unanswered.reset(options={"index": i})
    _, reward_step, terminated, _, info = unanswered.step(_literal(answer))
    assert (reward_step, terminated, info["error"], info["reads_table"]) == (nothing, True, "literal", False)
    unanswered.reset(options={"index": i})
    assert unanswered.score_group(sqls, workers=2) == strict
    for env in (scored, unanswered):
        env.close()


def test_reads_table_on_temptabqa_c_queries(data_dir):
    env = TextToSQLEnv(dataset="temptabqa-c", split="dev", data_dir=str(data_dir), schema="flat",
                       literal_answers="unanswered")
    env.reset(options={"index": 0})  # dev-1: how many silver medals at the European Games? Gold: 0
    counted = ("SELECT COUNT(*) FROM Medals WHERE athlete = 'Linda Efler' AND tournament = 'European Games' "
               "AND medal = 'MedalSilver'")
    sqls = {"SELECT '16'": False, "SELECT 0": False, "SELECT 1+1": False,
            "WITH c(n) AS (SELECT 0) SELECT n FROM c": False, "SELECT 0 -- FROM Medals": False,
            "SELECT 'FROM Medals'": False, "SELECT count(*) FROM medals": True,
            "SELECT (SELECT count(*) FROM Medals WHERE year < 0)": True, counted: True}
    scored = env.score_group(list(sqls))
    assert [info["reads_table"] for _, info in scored] == list(sqls.values())
    rewards = dict(zip(sqls, (r for r, _ in scored)))
    assert rewards["SELECT 0"] == -1.0 and rewards[counted] == 1.0  # same answer "0": only the count earns it
    assert rewards["SELECT (SELECT count(*) FROM Medals WHERE year < 0)"] == 1.0
    env.close()


def test_literal_answers_passes_through_make_and_pickle():
    import pickle

    env = gym.make("TextToSQL-v0", split="dev", literal_answers="unanswered").unwrapped
    copy = pickle.loads(pickle.dumps(env))
    assert copy.literal_answers == "unanswered"
    copy.reset(options={"index": 0})
    _, reward, _, _, info = copy.step("SELECT 1")
    assert (reward, info["error"]) == (-1.0, "literal")
    for e in (env, copy):
        e.close()


def test_render_shows_a_literal_answer_as_scored():
    """render() shows the step as it was scored: under "unanswered" a literal is an error line, not its table."""
    env = TextToSQLEnv(split="dev", render_mode="ansi", literal_answers="unanswered")
    env.reset(options={"index": 0})
    env.step("SELECT 'x'")
    lines = env.render().splitlines()
    assert lines[2].startswith("Error (literal): ") and "reads no table" in lines[2], lines
    assert "x" not in lines[2:3] and lines[-1].startswith("Reward: -1  correct=False")
    env.close()
