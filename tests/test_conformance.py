"""TextToSQL-v0 as third-party RL code runs it: the checkers, every vector mode, pickling and copies
in other processes, the common wrappers, seeding and the gold-leak rule.

Vector and copied envs are compared with plain single envs on the same seeds, value by value (the
observation text, the reward, the step info), on a small dataset whose questions, schema and rows
hold non-ASCII text.
"""

import copy
import json
import pickle
import subprocess
import sys
import warnings

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from conftest import write_city_dataset
from gymnasium.spaces.utils import flatten, flatten_space, unflatten
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import sqlenv
from sqlenv import ENV_ID

CITIES = [("Kraków", "Polska", 779), ("Zürich", "Schweiz", 421), ("東京", "日本", 13960),
          ("São Paulo", "Brasil", 12330), ("Reykjavík", "Ísland", 139), ("Plain", "ASCII", 1)]
QUESTIONS = [
    {"id": "q-krakow", "question": "Wie viele Einwohner (in Tausend) hat Kraków?",
     "sql": "SELECT population FROM city WHERE name = 'Kraków'"},
    {"id": "q-largest", "question": "Which city is the largest? (東京, São Paulo, ...)",
     "sql": "SELECT name FROM city ORDER BY population DESC LIMIT 1"},
    {"id": "q-country", "question": "In which country is Zürich?",
     "sql": "SELECT country FROM city WHERE name = 'Zürich'"},
    {"id": "q-count", "question": "How many cities are listed?", "sql": "SELECT COUNT(*) FROM city"},
    {"id": "q-island", "question": "Name the city in Ísland.",
     "sql": "SELECT name FROM city WHERE country = 'Ísland'"},
]
# One action per sub-environment and step: right for some questions, wrong, failing, non-ASCII.
ACTIONS = ["SELECT population FROM city WHERE name = 'Kraków'", "SELECT COUNT(*) FROM city",
           "SELEC nonsense", "SELECT 'Zürich'", "SELECT name FROM city WHERE country = 'Ísland'"]


@pytest.fixture(scope="module")
def kwargs(tmp_path_factory):
    """gym.make keyword arguments for the non-ASCII JSONL dataset."""
    return write_city_dataset(tmp_path_factory.mktemp("unicode-jsonl"), CITIES, QUESTIONS)


@pytest.fixture
def make(kwargs):
    envs = []

    def factory(**extra):
        env = gym.make(ENV_ID, **{**kwargs, **extra})
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()


def test_the_dataset_really_is_non_ascii(make):
    env = make(sample_rows=6)
    obs, _ = env.reset(options={"index": 1})
    assert obs["question"] == "Which city is the largest? (東京, São Paulo, ...)"
    assert "Kraków" in obs["sample_rows"] and "東京" in obs["sample_rows"]


# ---------------------------------------------------------------------- checkers


@pytest.mark.parametrize("dataset", ["generated", "jsonl"])
def test_check_env_and_passive_checker_raise_no_warning(kwargs, dataset):
    make_kwargs = kwargs if dataset == "jsonl" else {"split": "dev"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(ENV_ID, **make_kwargs)  # wrapped in Gymnasium's PassiveEnvChecker
        check_env(env.unwrapped, skip_render_check=True)
        env.reset(seed=3)
        env.step("SELECT 'Kraków'")
        env.close()


def test_the_spec_says_what_holds():
    spec = gym.spec(ENV_ID)
    assert spec.nondeterministic is True  # random(), date('now') and the wall-clock backstop
    assert spec.vector_entry_point == "sqlenv.vector:make_vector_env"


def test_seeded_resets_and_steps_repeat_exactly(make):
    env = make()
    runs = []
    for _ in range(2):
        trace = []
        for seed in range(6):
            obs, info = env.reset(seed=seed)
            env.action_space.seed(seed)
            sql = ACTIONS[seed % len(ACTIONS)]
            step_obs, reward, terminated, truncated, step_info = env.step(sql)
            trace.append((obs, info, step_obs, reward, terminated, truncated, step_info,
                          env.action_space.sample()))
        runs.append(trace)
    assert runs[0] == runs[1]
    assert [t[1]["id"] for t in runs[0]] != [runs[0][0][1]["id"]] * 6  # seeds pick different questions


# ---------------------------------------------------------------------- spaces


def test_action_space_accepts_what_step_rewards(make):
    env = make()
    sql = "SELECT population FROM city WHERE name = 'Kraków'"
    assert env.action_space.contains(sql)
    env.reset(options={"index": 0})
    assert env.step(sql)[1] == 1.0
    assert not env.action_space.contains(b"SELECT 1") and not env.action_space.contains(7)
    env.action_space.seed(0)
    assert all(set(env.action_space.sample()) <= sqlenv.env.ACTION_CHARSET for _ in range(20))


def test_observation_space_contains_non_ascii_observations(make):
    env = make(sample_rows=6)
    for index in range(len(QUESTIONS)):
        obs, _ = env.reset(options={"index": index})
        assert env.observation_space.contains(obs)


def test_flatten_round_trips_non_ascii_text(make):
    env = make(sample_rows=6)
    obs, _ = env.reset(options={"index": 1})
    space = env.observation_space
    flat = flatten(space, obs)
    assert flat.shape == flatten_space(space).shape and flatten_space(space).contains(flat)
    assert unflatten(space, flat) == obs


def test_flatten_observation_wrapper(make):
    env = gym.wrappers.FlattenObservation(make(sample_rows=6))
    flat, _ = env.reset(options={"index": 1})
    assert env.observation_space.contains(flat)
    assert unflatten(env.env.observation_space, flat)["question"] == QUESTIONS[1]["question"]


# ---------------------------------------------------------------------- gold never leaks


def test_reset_info_holds_no_gold(make):
    env = make()
    for index, question in enumerate(QUESTIONS):
        _, info = env.reset(options={"index": index})
        assert info == {"index": index, "id": question["id"], "question_type": "", "difficulty": None}
    builtin = gym.make(ENV_ID, split="dev")
    for seed in range(20):
        _, info = builtin.reset(seed=seed)
        example = builtin.unwrapped.example(info["index"])
        assert set(info) == {"index", "id", "question_type", "difficulty"}
        assert example.gold_sql not in info.values() and example.answer not in info.values()
    builtin.close()


def test_gold_is_in_reset_info_only_when_asked_and_in_step_info_after(make):
    env = make(expose_gold=True)
    _, info = env.reset(options={"index": 0})
    assert info["gold_sql"] == QUESTIONS[0]["sql"] and info["answer"] == "779"
    env = make()
    env.reset(options={"index": 0})
    info = env.step("SELECT 1")[4]
    assert info["answer"] == "779"


# ---------------------------------------------------------------------- vector environments


def single_env_trace(make_kwargs, seed, num_envs, steps, mode):
    """What each plain env returns for the vector env's seeds, as the vector env should report it:
    per step the returned observations, rewards, terminations, and the step infos."""
    trace = {"reset": [], "steps": [[] for _ in range(steps)]}
    for i in range(num_envs):
        env = gym.make(ENV_ID, **make_kwargs)
        obs, _ = env.reset(seed=seed + i)
        trace["reset"].append(obs)
        pending_reset = False
        for t in range(steps):
            action = ACTIONS[(i + t) % len(ACTIONS)]
            if mode == AutoresetMode.NEXT_STEP and pending_reset:
                obs, _ = env.reset()
                trace["steps"][t].append((obs, 0.0, False, None))
                pending_reset = False
                continue
            obs, reward, terminated, _, info = env.step(action)
            if mode == AutoresetMode.SAME_STEP:
                final = (obs, info)
                obs, _ = env.reset()
                trace["steps"][t].append((obs, reward, terminated, final))
            elif mode == AutoresetMode.NEXT_STEP:
                trace["steps"][t].append((obs, reward, terminated, info))
                pending_reset = True
            else:  # DISABLED: the caller resets the finished envs itself
                trace["steps"][t].append((obs, reward, terminated, info))
                obs, _ = env.reset()
                trace["steps"][t][-1] += (obs,)
        env.close()
    return trace


def _column(obs, i):
    return {key: obs[key][i] for key in ("question", "schema", "sample_rows")}


VECTOR_CASES = [("sync", None, mode) for mode in AutoresetMode] + [
    ("async", shared, mode) for shared in (True, False) for mode in AutoresetMode]


@pytest.mark.parametrize("vector_mode,shared_memory,autoreset", VECTOR_CASES,
                         ids=[f"{v}-{'shm' if s else 'pipe' if s is False else ''}-{m.name}"
                              for v, s, m in VECTOR_CASES])
def test_vector_env_returns_what_single_envs_return(kwargs, vector_mode, shared_memory, autoreset):
    num_envs, steps, seed = 3, 4, 11
    make_kwargs = dict(kwargs, sample_rows=6)
    expected = single_env_trace(make_kwargs, seed, num_envs, steps, autoreset)
    extra = {} if shared_memory is None else {"shared_memory": shared_memory}
    envs = gym.make_vec(ENV_ID, num_envs=num_envs, vector_mode=vector_mode, autoreset_mode=autoreset,
                        **extra, **make_kwargs)
    try:
        obs, _ = envs.reset(seed=seed)
        assert [_column(obs, i) for i in range(num_envs)] == expected["reset"]
        for t in range(steps):
            actions = [ACTIONS[(i + t) % len(ACTIONS)] for i in range(num_envs)]
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            rows = expected["steps"][t]
            assert [_column(obs, i) for i in range(num_envs)] == [r[0] for r in rows]
            assert rewards.tolist() == [r[1] for r in rows]
            assert terminated.tolist() == [r[2] for r in rows] and not truncated.any()
            for i, row in enumerate(rows):
                if autoreset == AutoresetMode.SAME_STEP:
                    final_obs, final_info = row[3]
                    assert {k: v[i] for k, v in infos["final_info"].items() if not k.startswith("_")} == final_info
                    assert _column(infos["final_obs"][i], slice(None)) == final_obs
                elif row[3] is not None:
                    assert infos["reward"][i] == row[3]["reward"] and infos["sql"][i] == row[3]["sql"]
            if autoreset == AutoresetMode.DISABLED:
                obs, _ = envs.reset(options={"reset_mask": terminated})
                assert [_column(obs, i) for i in range(num_envs)] == [r[4] for r in rows]
    finally:
        envs.close()


def test_make_vec_defaults_to_same_step_autoreset(kwargs):
    envs = gym.make_vec(ENV_ID, num_envs=2, **kwargs)
    try:
        assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        envs.reset(seed=0)
        for _ in range(3):  # every step scores a query: no bare reset steps with reward 0
            _, rewards, terminated, _, infos = envs.step(["SELECT COUNT(*) FROM city", "SELEC"])
            assert rewards[1] == -1.0 and terminated.all()
            assert infos["final_info"]["error"][1] == "syntax"
    finally:
        envs.close()


def test_gymnasium_async_vector_env_with_shared_memory_carries_the_text(kwargs):
    """The docs' snippet before the fix: Gymnasium's own async mode and default shared memory."""
    make_kwargs = dict(kwargs, sample_rows=6)
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="async",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **make_kwargs)
    expected = single_env_trace(make_kwargs, 5, 3, 2, AutoresetMode.SAME_STEP)
    try:
        obs, _ = envs.reset(seed=5)
        assert [_column(obs, i) for i in range(3)] == expected["reset"]
        obs, *_ = envs.step([ACTIONS[i] for i in range(3)])
        assert [_column(obs, i) for i in range(3)] == [r[0] for r in expected["steps"][0]]
    finally:
        envs.close()


@pytest.mark.parametrize("kwargs_,field", [({"num_envs": 0}, "num_envs"), ({"vector_mode": "threads"}, "vector_mode"),
                                          ({"autoreset_mode": "later"}, "autoreset_mode")])
def test_vector_entry_point_names_bad_arguments(kwargs_, field):
    from sqlenv.vector import make_vector_env

    with pytest.raises(ValueError, match=field):
        make_vector_env(**{"num_envs": 2, **kwargs_})


# ---------------------------------------------------------------------- pickling, copies, other processes


# (seed, question, query): right, failing, wrong, right, and a seeded pick of the question
EPISODES = [(0, 0, QUESTIONS[0]["sql"]), (1, 2, "SELEC"), (2, 1, "SELECT 'Kraków'"),
            (3, 3, "SELECT COUNT(*) FROM city"), (4, None, "SELECT name FROM city WHERE country = 'Ísland'")]


def _episode(env, seed, index, sql):
    obs, info = env.reset(seed=seed, options=None if index is None else {"index": index})
    step = env.step(sql)
    return obs, info, step[1], step[4]


@pytest.mark.parametrize("how", ["pickle", "cloudpickle", "deepcopy"])
def test_copies_step_like_the_original(make, how):
    env = make()
    env.reset(seed=1)
    env.step(ACTIONS[0])  # an env with open connections and a finished episode
    clone = {"pickle": lambda e: pickle.loads(pickle.dumps(e)),
             "cloudpickle": lambda e: cloudpickle.loads(cloudpickle.dumps(e)),
             "deepcopy": copy.deepcopy}[how](env)
    assert clone.unwrapped.executor is not env.unwrapped.executor
    for episode in EPISODES:
        assert _episode(clone, *episode) == _episode(env, *episode)
    clone.close()
    assert [_episode(env, *e)[2] for e in EPISODES[:4]] == [1.0, -1.0, 0.0, 1.0]  # the original still works


def test_pickled_env_before_reset_steps_in_a_fresh_process(make, tmp_path):
    env = make(sample_rows=6)
    (tmp_path / "env.pkl").write_bytes(cloudpickle.dumps(env))
    child = (
        "import json, pickle, sys\n"
        "env = pickle.load(open(sys.argv[1], 'rb'))\n"
        "out = []\n"
        f"for seed, index, sql in {EPISODES!r}:\n"
        "    obs, info = env.reset(seed=seed, options=None if index is None else {'index': index})\n"
        "    _, reward, terminated, _, step_info = env.step(sql)\n"
        "    out.append([obs, info, reward, terminated, step_info])\n"
        "env.close()\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path / "env.pkl")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = []
    for episode in EPISODES:
        obs, info, reward, step_info = _episode(env, *episode)
        want.append([obs, info, reward, True, step_info])
    assert got == json.loads(json.dumps(want))
    assert [row[2] for row in got[:4]] == [1.0, -1.0, 0.0, 1.0]


def test_pickled_env_with_worker_pool_scores_groups_after_the_copy(make):
    env = make(workers=2)
    env.reset(options={"index": 0})
    before = env.unwrapped.score_group([ACTIONS[0], "SELEC", "SELECT 1"])
    clone = pickle.loads(pickle.dumps(env))
    clone.reset(options={"index": 0})
    assert clone.unwrapped.score_group([ACTIONS[0], "SELEC", "SELECT 1"]) == before
    assert [r for r, _ in before] == [1.0, -1.0, 0.0]
    clone.close()


# ---------------------------------------------------------------------- common wrappers


def test_record_episode_statistics(make):
    env = gym.wrappers.RecordEpisodeStatistics(make())
    env.reset(options={"index": 0})
    info = env.step(ACTIONS[0])[4]
    assert info["episode"]["r"] == 1.0 and info["episode"]["l"] == 1


def test_time_limit_of_one_step_truncates_and_terminates(make):
    env = gym.wrappers.TimeLimit(make(), max_episode_steps=1)
    env.reset(options={"index": 3})
    _, reward, terminated, truncated, info = env.step("SELECT COUNT(*) FROM city")
    assert (reward, terminated, truncated, info["correct"]) == (1.0, True, True, True)


def test_normalize_reward_keeps_the_order_of_rewards(make):
    env = gym.wrappers.NormalizeReward(make())
    scaled = []
    for seed in range(8):
        env.reset(options={"index": 0}, seed=seed)
        scaled.append((env.step(ACTIONS[seed % 3])[1], seed % 3))
    by_kind = {kind: value for value, kind in scaled[-3:]}
    assert by_kind[0] > by_kind[1] > by_kind[2]  # right (1) > wrong (0) > failing (-1), after scaling
    assert all(np.isfinite(v) for v, _ in scaled)


# ---------------------------------------------------------------------- reproducible rewards

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
BOUNDED = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) SELECT COUNT(*) FROM c"


def test_instruction_budget_decides_rewards_whatever_the_wall_clock(make):
    env = make(max_instructions=200_000, timeout=60.0)  # generous wall clock: only instructions decide
    verdicts = set()
    for seed in range(4):
        env.reset(seed=seed, options={"index": 3})
        _, reward, _, _, info = env.step(RUNAWAY)
        verdicts.add((reward, info["error"], info["error_message"]))
        env.reset(seed=seed, options={"index": 3})
        _, reward, _, _, info = env.step(BOUNDED)
        verdicts.add((reward, info["error"], info["prediction"]))
    assert verdicts == {(-1.0, "timeout", "query exceeded its 200000-instruction budget"), (0.0, None, "2000")}
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.executor.config.max_instructions == 200_000


def test_check_env_determinism_checks_pass_with_an_instruction_budget(kwargs):
    """The registered spec says nondeterministic (wall clock); with an instruction budget Gymnasium's
    seeded reset and step determinism checks hold."""
    import dataclasses

    env = gym.make(ENV_ID, max_instructions=10_000_000, **kwargs)
    env.unwrapped.spec = dataclasses.replace(env.unwrapped.spec, nondeterministic=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()
