"""One completion, one score: every path that scores a completion agrees with the env's own step.

The same completions go through the env's step (the reference), the trainer (``agents``' extractor
and ``score_groups``), TRL's ``SQLReward``, TRL's environment tools, SkyRL, verifiers' rubric and
the OpenEnv server (a real process, its real client). Rewards and ``info`` are compared value by
value. The settings bound each query at ``BUDGET`` SQLite instructions, and one completion needs
more: every path must report the same budget error, so ``max_instructions`` reached it.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

import sqlenv
from sqlenv.agent_env import TextToSQLAgentEnv
from sqlenv.completion import extract_sql
from sqlenv.env import TextToSQLEnv

BUDGET = 200_000
SETTINGS = {"dataset": "generated", "split": "train", "reward": "partial", "timeout": 10.0,
            "max_instructions": BUDGET}
AGENT_SETTINGS = {**SETTINGS, "max_turns": 3}
QUESTIONS = (0, 3)
HEAVY = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000) "
         "SELECT COUNT(*) FROM c")
HOSTILE = "```sql\n" * 4000 + "<sql>" * 4000 + "<answer>" * 1000 + "SELECT '" * 2000


@pytest.fixture(scope="module")
def dataset():
    return sqlenv.load_dataset("generated", split="train")


def completions(example) -> list[str]:
    """Completions of every kind for one question (its gold SQL spans several lines)."""
    gold = example.gold_sql
    return [
        f"```sql\n{gold}\n```",                                   # gold SQL in a fence
        f"To answer this I join the tables.\n{gold};\nThis gives the answer.",  # prose + SQL
        f"{gold}; SELECT 2",                                      # two statements
        "I do not know how to answer this question.",             # no SQL
        "SELEC * FORM ;; ```",                                    # garbage
        f"SELECT '{example.answer}'",                             # a literal answer
        f"<answer>{gold}</answer>",                               # a multi-turn move
        f"```sql\n{HEAVY}\n```",                                  # over the instruction budget
        HOSTILE,                                                  # hostile text
    ]


def reference(index: int, texts: list[str]) -> list[tuple[float, dict]]:
    """The env's own step on each completion's SQL."""
    env = TextToSQLEnv(**SETTINGS)
    out = []
    for text in texts:
        env.reset(options={"index": index})
        _, reward, _, _, info = env.step(extract_sql(text))
        out.append((float(reward), info))
    env.close()
    return out


def plain(info: dict) -> dict:
    """``info`` as JSON carries it (the form the OpenEnv client sees)."""
    return json.loads(json.dumps(info))


def assert_same(got: list[tuple[float, dict]], expected: list[tuple[float, dict]]) -> None:
    assert len(got) == len(expected)
    for k, ((reward, info), (want, want_info)) in enumerate(zip(got, expected)):
        assert reward == want, (k, info.get("sql", "")[:200])
        assert plain(info) == plain(want_info), k


# ------------------------------------------------------------------------- the single-step paths
def trainer_path(index, texts):
    pytest.importorskip("torch")
    from agents.policy import extract_sql as agents_extract
    from agents.rollouts import score_groups

    env = sqlenv.EnvSpec(**SETTINGS).make()  # the trainer builds its envs from an EnvSpec
    rewards, infos = score_groups(env, [index], [agents_extract(t) for t in texts], len(texts))
    env.close()
    return list(zip(rewards, infos))


def trl_reward_path(index, texts):
    from sqlenv.integrations.trl import SQLReward

    reward = SQLReward(**SETTINGS)
    rewards = reward(texts, index=[index] * len(texts))
    infos = reward.last_infos
    reward.close()
    return list(zip(rewards, infos))


def trl_tools_path(index, texts):
    from sqlenv.integrations.trl_env import SQLEnvironmentFactory

    factory = SQLEnvironmentFactory(**SETTINGS, multi_turn=False)
    out = []
    for text in texts:  # the model's tool call carries the SQL the completion holds
        tools = factory()
        tools.reset(index=index)
        tools.submit_answer(extract_sql(text))
        out.append((tools.reward, tools.info))
        tools.env.close()
    return out


def skyrl_path(index, texts):
    skyrl_gym = pytest.importorskip("skyrl_gym")
    pytest.importorskip("sqlenv.integrations.skyrl")
    out = []
    for text in texts:
        env = skyrl_gym.make("sqlenv", env_config=SETTINGS, extras={"index": index})
        env.init(None)
        step = env.step(text)
        out.append((step["reward"], step["metadata"]))
        env.close()
    return out


def verifiers_path(index, texts):
    pytest.importorskip("verifiers.v1")
    from sqlenv.integrations import verifiers as adapter

    config = adapter.SQLTasksetConfig(**SETTINGS, limit=index + 1)
    taskset = adapter.SQLTaskset(config).include(idx=[f"{index}:{index + 1}"])
    out = []
    for text in texts:
        result = adapter.play(taskset, lambda messages: text)[0]
        out.append((result["reward"], result["info"]))
    return out


PATHS = {"trainer": trainer_path, "trl_reward": trl_reward_path, "trl_tools": trl_tools_path,
         "skyrl": skyrl_path, "verifiers": verifiers_path}


@pytest.mark.parametrize("path", PATHS)
def test_every_path_scores_like_the_env(path, dataset):
    for index in QUESTIONS:
        texts = completions(dataset[index])
        expected = reference(index, texts)
        assert_same(PATHS[path](index, texts), expected)


def test_the_reference_covers_each_outcome(dataset):
    """The completions are what they claim: gold scored correct, garbage failing, the budget hit."""
    texts = completions(dataset[0])
    scored = reference(0, texts)
    correct = [info["correct"] for _, info in scored]
    assert correct[:3] == [True, True, True] and correct[6] is True
    assert [info["sql"] for _, info in scored][3] == ""
    assert scored[4][1]["executed"] is False and scored[8][1]["executed"] is False
    heavy = scored[7][1]
    assert heavy["sql"] == HEAVY and heavy["executed"] is False
    unbounded = TextToSQLEnv(**{**SETTINGS, "max_instructions": None})
    assert unbounded.score_sqls(0, [HEAVY])[0][1]["executed"] is True  # only the budget stops it
    unbounded.close()


# ------------------------------------------------------------------------- the multi-turn paths
# None: the gold answer
MOVES = ["<sql>SELECT COUNT(*) FROM Medal</sql>", "<sql>" + HEAVY + "</sql>", None]


def agent_moves(example) -> list[str]:
    return [m if m is not None else f"<answer>{example.gold_sql}</answer>" for m in MOVES]


def agent_reference(index, moves):
    env = TextToSQLAgentEnv(**AGENT_SETTINGS)
    env.reset(options={"index": index})
    out = [env.step(move) for move in moves]
    env.close()
    return [(float(reward), info) for _, reward, _, _, info in out]


def test_agent_paths_play_moves_like_the_env(dataset):
    index = QUESTIONS[1]
    moves = agent_moves(dataset[index])
    expected = agent_reference(index, moves)
    assert expected[1][1]["move_errors"][1] is not None  # the instruction budget stopped it
    assert expected[-1][1]["correct"] is True
    total = sum(r for r, _ in expected)

    from sqlenv.integrations.trl_env import SQLEnvironmentFactory

    tools = SQLEnvironmentFactory(**AGENT_SETTINGS, multi_turn=True)()
    tools.reset(index=index)
    tools.run_sql("SELECT COUNT(*) FROM Medal")
    tools.run_sql(HEAVY)
    tools.submit_answer(dataset[index].gold_sql)
    assert (tools.reward, plain(tools.info)) == (total, plain(expected[-1][1]))

    if _has("skyrl_gym"):
        import skyrl_gym

        import sqlenv.integrations.skyrl  # noqa: F401

        env = skyrl_gym.make("sqlenv_agent", env_config=AGENT_SETTINGS, extras={"index": index})
        env.init(None)
        assert_same([(s["reward"], s["metadata"]) for s in map(env.step, moves)], expected)

    if _has("verifiers.v1"):
        from sqlenv.integrations import verifiers as adapter

        config = adapter.SQLTasksetConfig(**AGENT_SETTINGS, env=sqlenv.AGENT_ENV_ID,
                                          limit=index + 1)
        taskset = adapter.SQLTaskset(config).include(idx=[f"{index}:{index + 1}"])
        replies = iter(moves)
        result = adapter.play(taskset, lambda messages: next(replies))[0]
        assert (result["reward"], plain(result["info"])) == (total, plain(expected[-1][1]))


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------- the OpenEnv server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env_id: str, settings: dict):
    """``python -m sqlenv.integrations.openenv`` serving ``env_id`` with ``settings``."""
    port = _free_port()
    extra = {k: v for k, v in settings.items() if k not in ("dataset", "split", "reward")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlenv.integrations.openenv", "--env", env_id, "--port", str(port),
         "--dataset", settings["dataset"], "--split", settings["split"],
         "--reward", settings["reward"], "--env-kwargs", json.dumps(extra)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "ENABLE_WEB_INTERFACE": "false"})
    return proc, f"http://127.0.0.1:{port}"


def _wait(proc, url: str) -> None:
    httpx = pytest.importorskip("httpx")
    deadline = time.monotonic() + 180  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode()[-2000:]
            raise RuntimeError(f"server exited {proc.returncode}: {output}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the OpenEnv server did not come up in 180 s")


@pytest.fixture(scope="module")
def servers():
    pytest.importorskip("openenv.core.env_client")
    pytest.importorskip("httpx")
    started = {"single": _start(sqlenv.ENV_ID, SETTINGS),
               "agent": _start(sqlenv.AGENT_ENV_ID, AGENT_SETTINGS)}
    try:
        for proc, url in started.values():
            _wait(proc, url)
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for proc, _ in started.values():
            proc.terminate()
            proc.wait(timeout=30)


def test_openenv_server_scores_like_the_env(servers, dataset):
    from sqlenv.integrations.openenv import SQLAction, SQLEnvClient

    with SQLEnvClient(base_url=servers["single"]).sync() as client:
        for index in QUESTIONS:
            texts = completions(dataset[index])
            got = []
            for text in texts:
                client.reset(index=index)
                result = client.step(SQLAction(sql=extract_sql(text)))
                got.append((result.reward, result.observation.info))
            assert_same(got, reference(index, texts))
    index = QUESTIONS[1]
    moves = agent_moves(dataset[index])
    with SQLEnvClient(base_url=servers["agent"]).sync() as client:
        client.reset(index=index)
        got = [client.step(SQLAction(sql=move)) for move in moves]
    assert_same([(r.reward, r.observation.info) for r in got], agent_reference(index, moves))
