"""Property fuzzing of the executor and the environment (the long run: benchmarks/fuzz.py --long).

One property set per test, on a real environment database (TextToSQLEnv on the built-in "generated"
benchmark) and on a synthetic 2,000-row table where comma joins blow up: the call never raises,
returns within the time budget plus a margin, reports an error kind from ERROR_KINDS, leaves the
database byte-identical (sha256) with nothing new beside it, and, through env.step, gives a reward of
the preset (binary: -1, 0, 1) that is -1 exactly when the query failed. The strategies live in
benchmarks/fuzz.py. Hypothesis runs derandomized (the same cases on every run) without its example
database, about 4,000 cases in all (about a minute on a shared 2-core machine).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from conftest import load_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlenv.env import TextToSQLEnv
from sqlenv.executor import ERROR_KINDS, Executor, ExecutorConfig

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"
fuzz = load_script(_SCRIPT, "sqlenv_benchmarks_fuzz")

BUDGET = fuzz.BUDGET  # 0.05 s per query
MARGIN = fuzz.MARGIN  # 2.0 s of slack on a loaded, shared 2-core machine


def fuzz_settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def env():
    environment = TextToSQLEnv(timeout=BUDGET)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def env_db(env):
    """(path, guard) of the first question's database: five tables, a real athlete."""
    path = Path(env._database(env.example(0)).path)
    return path, fuzz.Guard(path, allow_new=fuzz.ENV_CACHE_NAMES)


@pytest.fixture(scope="module")
def big_db(tmp_path_factory):
    path = fuzz.build_big_db(tmp_path_factory.mktemp("fuzz-big") / "big.sqlite")
    return path, fuzz.Guard(path)


@pytest.fixture(scope="module")
def ex():
    executor = Executor(ExecutorConfig(timeout=BUDGET))
    yield executor
    executor.close()


ENV_SCHEMA = {
    "Athlete": ["athlete_id", "name"],
    "Tournament": ["tournament_id", "athlete_id", "name"],
    "Format": ["format_id", "tournament_id", "name"],
    "Medal": ["medal_id", "format_id", "type", "year", "location"],
    "PersonalInformation": ["info_id", "athlete_id", "birth_year", "birth_month", "birth_day"],
}
BIG_SCHEMA = {"Big": ["id", "grp", "name", "val", "payload"], "Small": ["k", "v"]}
env_grammar = fuzz.Grammar(ENV_SCHEMA)
big_grammar = fuzz.Grammar(BIG_SCHEMA)


def test_schemas_match_the_databases(env_db, big_db):
    assert fuzz.schema_of(env_db[0]) == ENV_SCHEMA
    assert fuzz.schema_of(big_db[0]) == BIG_SCHEMA


def assert_executes_safely(ex, db, sql):
    path, guard = db
    start = time.perf_counter()
    result = ex.execute(path, sql)  # must not raise
    took = time.perf_counter() - start
    assert fuzz.check_result(result, took, BUDGET, MARGIN) == [], (sql, result)
    assert result.error is None or result.error in ERROR_KINDS
    assert guard.changed() == [], sql
    return result


# --------------------------------------------------------------------------- executor


@fuzz_settings(400)
@given(sql=fuzz.random_bytes)
def test_random_bytes_never_raise(ex, env_db, sql):
    result = assert_executes_safely(ex, env_db, sql)
    if not isinstance(sql, str):
        assert result.error == "other"


@fuzz_settings(400)
@given(sql=fuzz.token_soup(ENV_SCHEMA))
def test_token_soup_never_raises_or_writes(ex, env_db, sql):
    assert_executes_safely(ex, env_db, sql)


@fuzz_settings(400)
@given(sql=env_grammar.strategy())
def test_grammar_selects_on_the_environment_database(ex, env_db, sql):
    assert_executes_safely(ex, env_db, sql)


@fuzz_settings(250)
@given(sql=big_grammar.strategy())
def test_grammar_selects_on_a_large_table(ex, big_db, sql):
    assert_executes_safely(ex, big_db, sql)


def test_grammar_reaches_every_outcome(ex, env_db, big_db):
    """The grammar is not all syntax errors: a fixed sample succeeds, times out, and hits the caps."""
    rng = random.Random(7)
    kinds = set()
    for _ in range(400):
        kinds.add(assert_executes_safely(ex, env_db, env_grammar.sample(rng)).error)
        kinds.add(assert_executes_safely(ex, big_db, big_grammar.sample(rng)).error)
    assert {None, "syntax", "no_such_column", "timeout", "too_large", "other"} <= kinds, kinds


NONDETERMINISTIC = ("random", "now", "current_")  # random(), randomblob(), 'now', CURRENT_TIMESTAMP


def test_instruction_budget_verdicts_agree_in_process_and_in_workers(env_db, big_db):
    """With timeout=30 only the instruction budget (10^5) stops these: a fixed grammar sample gets the
    same kind, rows and message from two in-process Executors and from worker processes, at any speed."""
    rng = random.Random(5)
    cases = []
    for _ in range(300):
        for (path, _), grammar in ((env_db, env_grammar), (big_db, big_grammar)):
            sql = grammar.sample(rng)
            if not any(word in sql.lower() for word in NONDETERMINISTIC):
                cases.append((path, sql))
    config = ExecutorConfig(timeout=30, max_instructions=100_000)
    runs = []
    for workers in (0, 0, 2):
        with Executor(config) as executor:
            results = []
            for path, sql in cases:
                if workers:
                    results.extend(executor.execute_group(path, [sql], workers=workers))
                else:
                    results.append(executor.execute(path, sql))
            runs.append([(r.error, r.rows, r.message) for r in results])
    assert runs[0] == runs[1] == runs[2]
    messages = [message for _, _, message in runs[0]]
    assert sum("100000-instruction budget" in m for m in messages) >= 10  # the budget did decide some
    assert not any("time budget" in m for m in messages)


# --------------------------------------------------------------------------- env.step and score_group

N_QUESTIONS = 2000  # the generated train split


def step_sql():
    gold = st.integers(0, N_QUESTIONS - 1).map(lambda i: i)
    return st.one_of(
        env_grammar.strategy(),
        fuzz.token_soup(ENV_SCHEMA),
        fuzz.random_bytes,
        st.tuples(gold, st.randoms(use_true_random=False)).map(lambda t: ("edit", *t)),
    )


def resolve(env, sql):
    """("edit", i, rng) stands for question i's gold SQL with random edits."""
    if isinstance(sql, tuple):
        _, index, rng = sql
        return fuzz.edited(fuzz.RandomChoices(rng), env.example(index).gold_sql)
    return sql


def assert_step_safely(env, index, sql):
    env.reset(options={"index": index})
    path = env._database(env.example(index)).path
    guard = fuzz.Guard(path, allow_new=fuzz.ENV_CACHE_NAMES)
    start = time.perf_counter()
    _, reward, terminated, truncated, info = env.step(sql)  # must not raise
    took = time.perf_counter() - start
    assert fuzz.check_step(reward, terminated, info, took, BUDGET, MARGIN) == [], (sql, info)
    assert truncated is False
    assert guard.changed() == [], sql
    return reward, info


def test_env_fixture_is_the_generated_train_split(env):
    assert len(env.dataset) == N_QUESTIONS


@fuzz_settings(500)
@given(index=st.integers(0, N_QUESTIONS - 1), sql=step_sql())
def test_env_step_rewards_stay_in_the_preset(env, index, sql):
    assert_step_safely(env, index, resolve(env, sql))


def test_env_step_edited_gold_sql_sweep(env):
    """1,000 near-miss queries (gold SQL with random edits, seeded): some still score 1, none raise."""
    rng = random.Random(11)
    choices = fuzz.RandomChoices(rng)
    rewards = []
    for _ in range(1000):
        index = rng.randrange(N_QUESTIONS)
        reward, _ = assert_step_safely(env, index, fuzz.edited(choices, env.example(index).gold_sql))
        rewards.append(reward)
    assert set(rewards) == {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("preset", ["partial", "paper"])
def test_other_presets_stay_in_their_range(preset):
    from sqlenv.rewards import reward_range

    low, high = reward_range(preset)
    penalty = low
    rng = random.Random(3)
    with TextToSQLEnv(reward=preset, timeout=BUDGET) as environment:
        for _ in range(150):
            index = rng.randrange(N_QUESTIONS)
            environment.reset(options={"index": index})
            sql = fuzz.edited(fuzz.RandomChoices(rng), environment.example(index).gold_sql)
            _, reward, _, _, info = environment.step(sql)
            assert low <= reward <= high
            assert (reward == penalty) == (info["error"] is not None), (sql, info)


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(index=st.integers(0, N_QUESTIONS - 1), sqls=st.lists(step_sql(), min_size=8, max_size=8))
def test_score_group_in_workers_never_raises(env, index, sqls):
    env.reset(options={"index": index})
    sqls = [resolve(env, sql) for sql in sqls]
    start = time.perf_counter()
    scored = env.score_group(sqls, workers=2)
    took = time.perf_counter() - start
    assert len(scored) == 8
    for reward, info in scored:
        assert fuzz.check_step(reward, True, info, 0.0, BUDGET, MARGIN) == [], info
    kill_grace = env.executor.config.kill_grace
    assert took < 8 * BUDGET + kill_grace + MARGIN + 5.0  # + starting the two workers
