"""``gym.make_vec("TextToSQL-v0", ...)`` with Gymnasium's own arguments and with ours.

Each combination is compared by value (observations, rewards, terminations, infos) with single envs
or with another path that must agree: sync with async, Gymnasium's vectorisers with the entry point.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers import RecordEpisodeStatistics, TransformReward

from sqlenv import ENV_ID

ENV = {"split": "dev"}
ACTIONS = ["SELECT COUNT(*) FROM Medal", "SELEC", "SELECT 1"]
SEED, STEPS, NUM_ENVS = 3, 4, 2
SAME, NEXT, DISABLED = AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED


def plain(value):
    """Numpy arrays and nested dicts as plain Python values, for comparing by value (without
    RecordEpisodeStatistics' wall-clock ``t``)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if key not in ("t", "_t")}
    if isinstance(value, np.ndarray):
        return [plain(item) for item in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


def actions(t: int) -> list[str]:
    return [ACTIONS[(i + t) % len(ACTIONS)] for i in range(NUM_ENVS)]


def trace(envs) -> list:
    """A seeded reset and ``STEPS`` steps of ``envs``, closed afterwards, as plain values."""
    try:
        steps = [plain(envs.reset(seed=SEED))]
        for t in range(STEPS):
            obs, reward, terminated, truncated, info = envs.step(actions(t))
            steps.append(plain((obs, reward, terminated, truncated, info)))
            if envs.metadata["autoreset_mode"] == DISABLED:
                steps.append(plain(envs.reset(options={"reset_mask": terminated})))
        return steps
    finally:
        envs.close()


def single_envs(autoreset: AutoresetMode) -> list[list[tuple]]:
    """Per sub-env: the first question, then per step (question, reward, terminated, reward)."""
    expected = []
    for i in range(NUM_ENVS):
        env = gym.make(ENV_ID, **ENV)
        question = env.reset(seed=SEED + i)[0]["question"]
        rows, pending = [], False
        for t in range(STEPS):
            if pending:  # NEXT_STEP: this step is the bare reset
                rows.append((env.reset()[0]["question"], 0.0, False, None))
                pending = False
                continue
            obs, reward, terminated, _, info = env.step(actions(t)[i])
            if autoreset == NEXT:
                pending = True
            else:  # SAME_STEP returns the next question; DISABLED the terminal one, then resets
                following = env.reset()[0]
                obs = following if autoreset == SAME else obs
            rows.append((obs["question"], reward, terminated, info["reward"]))
        env.close()
        expected.append([question, *rows])
    return expected


def observed(steps: list, autoreset: AutoresetMode) -> list[list[tuple]]:
    """``steps`` of a vector trace in the shape of ``single_envs``."""
    if autoreset == DISABLED:
        steps = [steps[0], *steps[1::2]]
    result = []
    for i in range(NUM_ENVS):
        rows = [steps[0][0]["question"][i]]
        for obs, reward, terminated, _, info in steps[1:]:
            step_info = info["final_info"] if autoreset == SAME else info
            scored = step_info.get("_reward", [False] * NUM_ENVS)[i]
            rows.append((obs["question"][i], reward[i], terminated[i],
                         step_info["reward"][i] if scored else None))
        result.append(rows)
    return result


def scale_reward(env):
    return TransformReward(env, lambda reward: 10 * reward)


@pytest.fixture(scope="module")
def expected():
    return {mode: single_envs(mode) for mode in AutoresetMode}


@pytest.mark.parametrize("arguments", [{}, {"vectorization_mode": "vector_entry_point"},
                                       {"vector_mode": "async"}, {"autoreset_mode": "SameStep"}])
def test_the_default_and_the_entry_point_autoreset_in_the_same_step(expected, arguments):
    envs = gym.make_vec(ENV_ID, num_envs=NUM_ENVS, **arguments, **ENV)
    assert envs.metadata["autoreset_mode"] == SAME
    assert envs.spec.kwargs["vectorization_mode"] == "vector_entry_point"
    assert observed(trace(envs), SAME) == expected[SAME]


@pytest.mark.parametrize("autoreset", list(AutoresetMode))
def test_gymnasium_vector_kwargs_are_honoured_sync_and_async_alike(expected, autoreset):
    traces = {}
    for mode in ("sync", "async"):
        envs = gym.make_vec(ENV_ID, num_envs=NUM_ENVS, vectorization_mode=mode,
                            vector_kwargs={"autoreset_mode": autoreset}, **ENV)
        assert envs.metadata["autoreset_mode"] == autoreset and type(envs).__name__ == (
            "SyncVectorEnv" if mode == "sync" else "AsyncVectorEnv")
        traces[mode] = trace(envs)
    assert traces["async"] == traces["sync"]
    assert observed(traces["sync"], autoreset) == expected[autoreset]
    if autoreset == NEXT:  # every second step is the bare reset: reward 0, not terminated
        assert [step[1] for step in traces["sync"][2::2]] == [[0.0, 0.0]] * (STEPS // 2)
        assert [step[2] for step in traces["sync"][1::2]] == [[True, True]] * (STEPS // 2)


def test_gymnasium_same_step_equals_the_entry_point():
    entry_point = trace(gym.make_vec(ENV_ID, num_envs=NUM_ENVS, **ENV))
    for mode in ("sync", "async"):
        envs = gym.make_vec(ENV_ID, num_envs=NUM_ENVS, vectorization_mode=mode,
                            vector_kwargs={"autoreset_mode": SAME}, **ENV)
        assert trace(envs) == entry_point


@pytest.mark.parametrize("autoreset", [SAME, NEXT])
def test_gymnasium_wrappers_are_applied_sync_and_async_alike(expected, autoreset):
    traces = {}
    for mode in ("sync", "async"):
        envs = gym.make_vec(ENV_ID, num_envs=NUM_ENVS, vectorization_mode=mode,
                            wrappers=[scale_reward, RecordEpisodeStatistics],
                            vector_kwargs={"autoreset_mode": autoreset}, **ENV)
        traces[mode] = trace(envs)
    assert traces["async"] == traces["sync"]
    scaled = [[rows[0], *[(q, 10 * r, term, info) for q, r, term, info in rows[1:]]]
              for rows in expected[autoreset]]
    assert observed(traces["sync"], autoreset) == scaled
    finished = [step[4]["final_info"] if autoreset == SAME else step[4]
                for step in traces["sync"][1:] if any(step[2])]
    assert [info["episode"]["r"] for info in finished] == [
        [10 * r for _, r, *_ in (rows[t] for rows in expected[autoreset])]
        for t in range(1, STEPS + 1) if expected[autoreset][0][t][2]]


@pytest.mark.parametrize("mode", ["sync", "async", "vector_entry_point"])
def test_the_spec_recreates_the_vector_env(mode):
    arguments = {} if mode == "vector_entry_point" else {"vector_kwargs": {"autoreset_mode": NEXT}}
    envs = gym.make_vec(ENV_ID, num_envs=NUM_ENVS, vectorization_mode=mode, **arguments, **ENV)
    again = gym.make_vec(envs.spec)
    assert again.spec.kwargs == envs.spec.kwargs and trace(again) == trace(envs)


@pytest.mark.parametrize("env_id", [ENV_ID, "CartPole-v1"])
def test_without_a_mode_gymnasium_keeps_its_own_vectoriser_arguments_for_sync_and_async(env_id):
    """Gymnasium's rule for every env with a vector entry point, CartPole-v1's included."""
    with pytest.raises(gym.error.Error, match="`vector_kwargs` is not empty"):
        gym.make_vec(env_id, num_envs=NUM_ENVS, vector_kwargs={"autoreset_mode": NEXT})
    with pytest.raises(gym.error.Error, match="with the wrappers argument"):
        gym.make_vec(env_id, num_envs=NUM_ENVS, wrappers=[scale_reward])


def test_the_entry_point_takes_the_vectorisers_arguments_as_keywords(expected):
    envs = gym.make_vec(ENV_ID, num_envs=NUM_ENVS, autoreset_mode=NEXT, copy=False,
                        vector_mode="async", shared_memory=False, daemon=True, **ENV)
    assert (envs.metadata["autoreset_mode"], envs.shared_memory, envs.daemon) == (NEXT, False, True)
    assert observed(trace(envs), NEXT) == expected[NEXT]


@pytest.mark.parametrize("arguments,message", [
    ({"shared_memory": False}, "shared_memory=False applies to vector_mode='async' only"),
    ({"context": "spawn"}, "context='spawn' applies to vector_mode='async' only"),
    ({"vector_mode": "threads"}, "vector_mode='threads' is not a vector mode"),
    ({"autoreset_mode": "later"}, "autoreset_mode='later' is not one of"),
    ({"num_envs": 0}, "num_envs=0 must be an integer >= 1"),
])
def test_bad_entry_point_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        gym.make_vec(ENV_ID, **{"num_envs": NUM_ENVS, **arguments})
