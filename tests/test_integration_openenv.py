"""The OpenEnv server started as a real process, played over OpenEnv's protocol by its real client."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("openenv.core.env_client")
httpx = pytest.importorskip("httpx")
websockets = pytest.importorskip("websockets")

import sqlenv  # noqa: E402
from sqlenv.integrations.openenv import SQLAction, SQLEnvClient  # noqa: E402
from sqlenv.integrations.openenv.server import SQLEnvironment, create_app  # noqa: E402

MAX_SESSIONS = 3
MAX_BYTES = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env_id: str, *extra: str):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlenv.integrations.openenv", "--env", env_id, "--port", str(port),
         "--max-sessions", str(MAX_SESSIONS), "--max-request-bytes", str(MAX_BYTES), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "ENABLE_WEB_INTERFACE": "false"})
    return proc, f"http://127.0.0.1:{port}"


def _wait(proc, url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stdout.read().decode()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not come up in 120 s")


@pytest.fixture(scope="module")
def servers():
    started = {"single": _start(sqlenv.ENV_ID),
               "agent": _start(sqlenv.AGENT_ENV_ID, "--env-kwargs", '{"max_turns": 3}')}
    try:
        for proc, url in started.values():
            _wait(proc, url)
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for proc, _ in started.values():
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def dataset():
    return sqlenv.load_dataset("generated")


def run(coro):
    return asyncio.run(coro)


def test_single_step_episode_over_the_client(servers, dataset):
    example = dataset[3]
    with SQLEnvClient(base_url=servers["single"]).sync() as client:
        result = client.reset(index=3)
        assert result.done is False and result.reward is None
        assert result.observation.question == example.question
        assert "CREATE TABLE" in result.observation.schema_text
        assert result.observation.info["id"] == example.id and "gold_sql" not in result.observation.info
        result = client.step(SQLAction(sql=example.gold_sql))
        assert result.done is True and result.reward == 1.0
        assert result.observation.info["correct"] is True and result.observation.info["answer"] == example.answer
        state = client.state()
        assert (state.env_id, state.index, state.question_id, state.step_count, state.done) == (
            sqlenv.ENV_ID, 3, example.id, 1, True)
        result = client.reset(index=4)  # the session goes on with the next episode
        result = client.step(SQLAction(sql="DROP TABLE Medal"))
        assert result.done is True and result.reward == -1.0 and result.observation.info["executed"] is False


def test_agent_episode_over_the_client(servers, dataset):
    example = dataset[5]

    async def play():
        async with SQLEnvClient(base_url=servers["agent"]) as client:
            result = await client.reset(index=5)
            assert result.observation.transcript == "" and result.observation.info["turns_left"] == 3
            result = await client.step(SQLAction(sql="<sql>SELECT COUNT(*) FROM Medal</sql>"))
            assert result.done is False and result.reward == 0.0
            assert result.observation.transcript.startswith("Turn 1/3 <sql>SELECT COUNT(*) FROM Medal</sql>\n1 row")
            result = await client.step(SQLAction(sql=f"<answer>{example.gold_sql}</answer>"))
            assert result.done is True and result.observation.truncated is False and result.reward == 1.0
            assert result.observation.info["move_errors"] == [None, None]

    run(play())


def test_concurrent_sessions_are_isolated(servers, dataset):
    """Three sessions, each pinned to its own question, interleave their moves; each scores its own."""
    indices = [10, 11, 12]

    async def episode(i):
        async with SQLEnvClient(base_url=servers["agent"]) as client:
            await client.reset(index=i)
            await asyncio.sleep(0.05)
            first = await client.step(SQLAction(sql=f"<sql>SELECT {i}</sql>"))
            await asyncio.sleep(0.05)
            last = await client.step(SQLAction(sql=f"<answer>{dataset[i].gold_sql}</answer>"))
            state = await client.state()
            return first.observation.transcript, last.reward, last.observation.info["answer"], state.question_id

    async def together():
        return await asyncio.gather(*(episode(i) for i in indices))

    results = run(together())
    for i, (transcript, reward, answer, qid) in zip(indices, results):
        assert f"<sql>SELECT {i}</sql>\n1 row" in transcript and f"| {i} " in transcript
        assert (reward, answer, qid) == (1.0, dataset[i].answer, dataset[i].id)


def test_sessions_over_the_cap_are_refused(servers):
    async def crowd():
        clients = [SQLEnvClient(base_url=servers["single"]) for _ in range(MAX_SESSIONS)]
        try:
            for c in clients:
                await c.reset(index=0)
            extra = SQLEnvClient(base_url=servers["single"])
            with pytest.raises(RuntimeError, match="CAPACITY_REACHED"):
                await extra.reset(index=0)
            await extra.close()
            await clients.pop().close()
            for _ in range(600):  # the server frees the closed session's slot (60 s: a hang guard under load)
                retry = SQLEnvClient(base_url=servers["single"])
                try:
                    return (await retry.reset(index=1)).observation.info["index"]
                except RuntimeError:
                    await asyncio.sleep(0.1)
                finally:
                    await retry.close()
            raise AssertionError("the closed session's slot was never freed")
        finally:
            for c in clients:
                await c.close()

    assert run(crowd()) == 1


def test_malformed_requests_get_errors_and_the_session_survives(servers):
    async def probe():
        ws_url = servers["agent"].replace("http", "ws") + "/ws"
        async with websockets.connect(ws_url) as ws:
            async def ask(raw):
                await ws.send(raw)
                return json.loads(await ws.recv())

            bad_json = await ask("{not json")
            assert bad_json["type"] == "error" and bad_json["data"]["code"] == "INVALID_JSON"
            unknown = await ask(json.dumps({"type": "teleport"}))
            assert unknown["data"]["code"] == "UNKNOWN_TYPE" and "teleport" in unknown["data"]["message"]
            early = await ask(json.dumps({"type": "step", "data": {"sql": "<sql>SELECT 1</sql>"}}))
            assert early["data"]["code"] == "EXECUTION_ERROR" and "reset" in early["data"]["message"]
            ok = await ask(json.dumps({"type": "reset", "data": {"index": 2}}))
            assert ok["type"] == "observation" and ok["data"]["observation"]["info"]["index"] == 2
            no_field = await ask(json.dumps({"type": "step", "data": {"query": "SELECT 1"}}))
            assert no_field["type"] == "error" and "sql" in json.dumps(no_field["data"])
            bad_reset = await ask(json.dumps({"type": "reset", "data": {"index": 10**9}}))
            assert bad_reset["type"] == "error" and "out of range" in bad_reset["data"]["message"]
            bad_arg = await ask(json.dumps({"type": "reset", "data": {"question": 1}}))
            assert "unknown reset arguments ['question']" in bad_arg["data"]["message"]
            ok = await ask(json.dumps({"type": "step", "data": {"sql": "<sql>SELECT 7</sql>"}}))
            assert ok["type"] == "observation" and "| 7 " in ok["data"]["observation"]["transcript"]
        async with websockets.connect(ws_url, max_size=None) as ws:  # over the message size limit
            await ws.send(json.dumps({"type": "step", "data": {"sql": "x" * (MAX_BYTES + 1)}}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1009

    run(probe())
    big = httpx.post(servers["single"] + "/step", content=b"{" + b" " * MAX_BYTES + b"}",
                     headers={"content-type": "application/json"})
    assert big.status_code == 413 and str(MAX_BYTES) in big.json()["detail"]
    assert httpx.get(servers["single"] + "/health").status_code == 200


def test_step_after_the_end_raises_a_clear_error(servers, dataset):
    with SQLEnvClient(base_url=servers["single"]).sync() as client:
        client.reset(index=0)
        client.step(SQLAction(sql="SELECT 1"))
        with pytest.raises(RuntimeError, match="Call reset before using step method"):
            client.step(SQLAction(sql="SELECT 1"))


def test_bad_configuration_fails_at_startup_naming_the_field():
    with pytest.raises(ValueError, match="reward='nope'"):
        create_app(sqlenv.ENV_ID, reward="nope")
    with pytest.raises(ValueError, match="max_sessions=0"):
        create_app(sqlenv.ENV_ID, max_sessions=0)
    with pytest.raises(ValueError, match="env_id='Other-v0'"):
        SQLEnvironment("Other-v0")
    out = subprocess.run([sys.executable, "-m", "sqlenv.integrations.openenv", "--reward", "nope", "--port", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "cannot serve TextToSQL-v0: reward='nope'" in out.stderr
