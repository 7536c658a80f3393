"""The OpenEnv server under hostile and careless clients: each test starts it as a real process
(``python -m sqlenv.integrations.openenv``) and drives it with the real client, websockets or raw
sockets. Outcomes only (statuses, error codes, close codes, log lines); waits are hang guards.
"""

import asyncio
import json
import os
import resource
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

SLOW_SQL = (
    "<sql>WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT count(*) FROM c</sql>"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a free port; its log goes to a file the test can read."""

    def __init__(self, tmp_path, *args, env=None, nofile=None, host="127.0.0.1"):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        limit = (
            (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            if nofile
            else None
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sqlenv.integrations.openenv",
                "--host",
                host,
                "--port",
                str(self.port),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
            env={**os.environ, "ENABLE_WEB_INTERFACE": "false", **(env or {})},
        )

    def wait(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not come up in 120 s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def start(tmp_path):
    servers = []

    def _start(*args, **kwargs) -> Server:
        server = Server(tmp_path, *args, **kwargs)
        servers.append(server)
        return server.wait()

    yield _start
    for server in servers:
        server.stop()


def run(coro):
    return asyncio.run(coro)


def _ws_url(server: Server) -> str:
    return server.url.replace("http", "ws") + "/ws"


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (60 s hang guard). A reset is
    a close too: a server that drops a connection it never read from may answer with RST."""
    sock.settimeout(60)
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _sessions_once_settled(server: Server) -> int:
    """``/health``'s session count once it reaches 0 (60 s hang guard): a close that uvicorn sends
    itself (1009) reaches the client before the app has freed the slot."""
    deadline = time.monotonic() + 60
    while (sessions := httpx.get(server.url + "/health", timeout=60).json()["sessions"]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    return sessions


def test_stateless_http_cannot_create_sessions_or_step(start):
    server = start("--max-sessions", "2")
    for i in range(20):
        answer = httpx.post(
            server.url + "/mcp",
            json={"jsonrpc": "2.0", "id": i, "method": "openenv/session/create", "params": {}},
        )
        assert answer.status_code == 200
        assert "sessions are not created over stateless HTTP" in answer.json()["error"]["message"]
    assert httpx.get(server.url + "/health").json() == {
        "status": "healthy",
        "sessions": 0,
        "max_sessions": 2,
    }
    step = httpx.post(server.url + "/step", json={"action": {"sql": "SELECT 1"}})
    assert step.status_code == 409 and "/ws" in step.json()["detail"]

    async def two_sessions():
        async with SQLEnvClient(base_url=server.url) as a, SQLEnvClient(base_url=server.url) as b:
            first, second = await a.reset(index=1), await b.reset(index=2)
            sessions = httpx.get(server.url + "/health").json()["sessions"]
            return first.observation.info["index"], second.observation.info["index"], sessions

    assert run(two_sessions()) == (1, 2, 2)


def test_silent_partial_and_slow_connections_are_closed(start):
    server = start("--request-timeout", "2")
    silent = socket.create_connection(("127.0.0.1", server.port))
    partial = socket.create_connection(("127.0.0.1", server.port))
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    slow_body = socket.create_connection(("127.0.0.1", server.port))
    slow_body.sendall(
        b"POST /reset HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"index"'
    )
    assert _until_closed(silent) == b""
    assert _until_closed(partial).startswith(b"HTTP/1.1 408 ")
    assert _until_closed(slow_body).startswith(b"HTTP/1.1 408 ")
    for sock in (silent, partial, slow_body):
        sock.close()
    assert "no complete request within 2 s" in server.log()
    assert httpx.get(server.url + "/health").status_code == 200


def test_idle_session_is_closed_and_frees_its_slot(start):
    server = start("--max-sessions", "1", "--session-timeout", "2")

    async def idle_then_next():
        async with websockets.connect(_ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "reset", "data": {"index": 0}}))
            assert json.loads(await ws.recv())["type"] == "observation"
            timeout = json.loads(
                await asyncio.wait_for(ws.recv(), 60)
            )  # nothing sent: the server ends it
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 60)
        async with SQLEnvClient(base_url=server.url) as client:  # the slot is free again
            result = await client.reset(index=4)
        return timeout["data"], closed.value.rcvd.code, result.observation.info["index"]

    data, code, index = run(idle_then_next())
    assert data["code"] == "SESSION_TIMEOUT" and "idle for 2 s" in data["message"]
    assert (code, index) == (1001, 4)


def test_half_open_sockets_cannot_exhaust_descriptors_or_lock_clients_out(start):
    """300 sockets with half a request against a server limited to 256 descriptors (so at most 32
    connections): each new connection closes the oldest half-open one, so /health and a session
    are served while the attack holds; every half-open socket ends; the log stays short."""
    server = start("--request-timeout", "5", nofile=256)
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert httpx.get(server.url + "/health", timeout=60).json()["sessions"] == 0
    with SQLEnvClient(base_url=server.url).sync() as client:
        assert client.reset(index=2).observation.info["index"] == 2
    answers = [_until_closed(sock) for sock in socks]
    for sock in socks:
        sock.close()
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers)
    assert "closed to make room for a new connection" in server.log()
    assert len(server.log().splitlines()) <= 60  # 10 lines per kind per minute
    assert "Traceback" not in server.log()


def test_a_full_server_answers_503_when_no_connection_is_idle(start):
    server = start("--max-connections", "3", "--max-sessions", "3")

    async def fill_then_probe():
        clients = [SQLEnvClient(base_url=server.url) for _ in range(3)]
        for client in clients:
            await client.reset(index=0)
        probe = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", server.port))
        refused = await asyncio.to_thread(_until_closed, probe)
        probe.close()
        await clients.pop().close()
        for _ in range(600):  # the closed session's connection goes away
            answer = await asyncio.to_thread(httpx.get, server.url + "/health")
            if answer.status_code == 200:
                break
            await asyncio.sleep(0.1)
        for client in clients:
            await client.close()
        return refused, answer.status_code

    refused, status = run(fill_then_probe())
    assert refused.startswith(b"HTTP/1.1 503 ") and b"too many open connections" in refused
    assert status == 200


def test_token_is_required_on_every_connection_but_health(start, monkeypatch):
    monkeypatch.delenv("SQLENV_TOKEN", raising=False)
    server = start(env={"SQLENV_TOKEN": "s3cret-token"})
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/schema").status_code == 401
    assert (
        httpx.post(
            server.url + "/reset", json={}, headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    assert (
        httpx.get(
            server.url + "/schema", headers={"Authorization": "Bearer s3cret-token"}
        ).status_code
        == 200
    )

    with pytest.raises(ConnectionError, match="HTTP 401.*missing or wrong token"):
        with SQLEnvClient(base_url=server.url).sync() as client:
            client.reset(index=0)
    with SQLEnvClient(base_url=server.url, token="s3cret-token").sync() as client:
        assert client.reset(index=3).observation.info["index"] == 3
    monkeypatch.setenv("SQLENV_TOKEN", "s3cret-token")
    with SQLEnvClient(base_url=server.url).sync() as client:
        assert client.reset(index=5).observation.info["index"] == 5

    async def raw_wrong_token():
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                _ws_url(server), additional_headers={"Authorization": "Bearer nope"}
            )
        return refused.value.response.status_code

    assert run(raw_wrong_token()) == 401
    for _ in range(100):
        httpx.get(server.url + "/schema")
    refusals = [line for line in server.log().splitlines() if "missing or wrong token" in line]
    assert 1 <= len(refusals) <= 25


def test_non_loopback_bind_needs_a_token_or_an_explicit_opt_out(start, monkeypatch):
    monkeypatch.delenv("SQLENV_TOKEN", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "SQLENV_TOKEN"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sqlenv.integrations.openenv",
            "--host",
            "0.0.0.0",
            "--port",
            str(_free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode != 0 and "refusing to serve 0.0.0.0 without a token" in out.stderr
    server = start("--allow-no-token", host="0.0.0.0")
    assert "SERVING 0.0.0.0 WITHOUT A TOKEN" in server.log()
    assert httpx.get(server.url + "/schema").status_code == 200


def test_a_client_that_closes_and_reconnects_at_once_gets_the_slot(start):
    """One slot, forty sessions one after another, each opened as soon as the last one closed: none is
    refused by its predecessor (the server hears of a close after the client has seen it, so a new
    session waits briefly for a slot being freed), while a slot held open is still refused."""
    server = start("--max-sessions", "1")

    async def back_to_back():
        indices = []
        for i in range(40):
            async with SQLEnvClient(base_url=server.url) as client:
                indices.append((await client.reset(index=i % 5)).observation.info["index"])
        async with SQLEnvClient(base_url=server.url) as holder:
            await holder.reset(index=0)
            with pytest.raises(RuntimeError, match="CAPACITY_REACHED"):
                async with SQLEnvClient(base_url=server.url) as extra:
                    await extra.reset(index=1)
        return indices

    assert run(back_to_back()) == [i % 5 for i in range(40)]
    assert "Traceback" not in server.log()


def test_malformed_messages_get_errors_and_oversize_closes_cleanly(start):
    server = start("--env", sqlenv.AGENT_ENV_ID, "--max-request-bytes", "20000")

    async def probe():
        async with websockets.connect(_ws_url(server)) as ws:

            async def ask(raw):
                await ws.send(raw)
                return json.loads(await ws.recv())["data"]

            replies = [
                await ask(raw)
                for raw in (
                    "[1, 2]",
                    "null",
                    '"reset"',
                    "7",
                    b"\xff\xfe",
                    json.dumps({"type": "step", "data": [1]}),
                    json.dumps({"type": "step", "data": {"sql": ["x" * 5000]}}),
                )
            ]
            ok = await ask(json.dumps({"type": "reset", "data": {"index": 2}}))
            step = await ask(json.dumps({"type": "step", "data": {"sql": "<sql>SELECT 7</sql>"}}))
        async with websockets.connect(_ws_url(server), max_size=None) as ws:
            await ws.send(json.dumps({"type": "step", "data": {"sql": "x" * 20_001}}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        return replies, ok, step, closed.value.rcvd.code

    replies, ok, step, code = run(probe())
    assert [r["code"] for r in replies] == ["VALIDATION_ERROR"] * 4 + ["INVALID_JSON"] + [
        "VALIDATION_ERROR"
    ] * 2
    assert "must be a JSON object with a 'type' field, got list" in replies[0]["message"]
    assert "'data' must be a JSON object" in replies[5]["message"]
    assert "sql: Input should be a valid string" in replies[6][
        "message"
    ] and "xxxx" not in json.dumps(replies[6])
    assert ok["observation"]["info"]["index"] == 2 and "| 7 " in step["observation"]["transcript"]
    assert code == 1009
    assert _sessions_once_settled(server) == 0
    assert "Traceback" not in server.log()


def test_a_client_that_leaves_has_its_queued_moves_dropped(start):
    server = start(
        "--env",
        sqlenv.AGENT_ENV_ID,
        "--max-sessions",
        "1",
        "--env-kwargs",
        json.dumps({"max_turns": 30, "explore_timeout": 3, "explore_seconds": 300}),
    )

    async def pipeline_and_leave():
        async with websockets.connect(_ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "reset", "data": {"index": 0}}))
            assert json.loads(await ws.recv())["type"] == "observation"
            for _ in range(6):
                await ws.send(json.dumps({"type": "step", "data": {"sql": SLOW_SQL}}))
        for _ in range(600):  # the slot frees once the move in flight ends
            try:
                async with SQLEnvClient(base_url=server.url) as client:
                    return (await client.reset(index=1)).observation.info["index"]
            except RuntimeError as exc:
                assert "CAPACITY_REACHED" in str(exc)
                await asyncio.sleep(0.1)
        raise AssertionError("the slot was never freed")

    assert run(pipeline_and_leave()) == 1
    dropped = [
        line for line in server.log().splitlines() if "queued messages; dropped them" in line
    ]
    assert len(dropped) == 1 and int(dropped[0].split("went away with ")[1].split()[0]) >= 1
    assert "Traceback" not in server.log()


def test_a_flood_of_pipelined_messages_is_cut_off(start):
    server = start(
        "--env",
        sqlenv.AGENT_ENV_ID,
        "--env-kwargs",
        json.dumps({"max_turns": 30, "explore_timeout": 3, "explore_seconds": 300}),
    )

    async def flood():
        async with websockets.connect(_ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "reset", "data": {"index": 0}}))
            assert json.loads(await ws.recv())["type"] == "observation"
            for _ in range(20):
                await ws.send(json.dumps({"type": "step", "data": {"sql": SLOW_SQL}}))
            replies = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        return replies, closed.value.rcvd.code

    replies, code = run(flood())
    codes = [r["data"].get("code") for r in replies if r["type"] == "error"]
    assert codes == ["TOO_MANY_MESSAGES"] and code == 1008
    assert httpx.get(server.url + "/health").status_code == 200


@pytest.mark.slow
def test_a_slow_move_does_not_hold_up_health_or_other_sessions(start):
    server = start(
        "--env",
        sqlenv.AGENT_ENV_ID,
        "--env-kwargs",
        json.dumps({"explore_timeout": 20, "explore_seconds": 60}),
    )

    async def together():
        async with (
            SQLEnvClient(base_url=server.url) as slow,
            SQLEnvClient(base_url=server.url) as quick,
        ):
            await slow.reset(index=0)
            slow_move = asyncio.create_task(slow.step(SQLAction(sql=SLOW_SQL)))
            await asyncio.sleep(0.5)  # let the slow move start
            health = await asyncio.to_thread(httpx.get, server.url + "/health", timeout=60)
            await quick.reset(index=3)
            result = await quick.step(SQLAction(sql="<sql>SELECT 11</sql>"))
            pending_after_others = not slow_move.done()
            slow_result = await slow_move
            return (
                health.status_code,
                result.observation.transcript,
                pending_after_others,
                slow_result,
            )

    status, transcript, pending, slow_result = run(together())
    assert status == 200 and "| 11 " in transcript and pending
    assert "time" in slow_result.observation.transcript.lower()


def test_a_host_fault_is_an_error_never_a_reward_and_the_session_goes_on(start, tmp_path):
    """The database vanishes between reset and step (a fault of the host): the client gets
    HOST_FAULT naming the file, not reward -1; once the file is back the same move scores."""
    cache = tmp_path / "cache"
    server = start("--env-kwargs", json.dumps({"expose_gold": True}),
                   env={"SQLENV_CACHE_DIR": str(cache)})

    async def probe():
        async with websockets.connect(_ws_url(server)) as ws:

            async def ask(message):
                await ws.send(json.dumps(message))
                return json.loads(await ws.recv())

            reset = await ask({"type": "reset", "data": {"index": 0}})
            gold = reset["data"]["observation"]["info"]["gold_sql"]
            databases = [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".db", ".sqlite")]
            hidden = [p.rename(p.with_name(p.name + ".away")) for p in databases]
            fault = await ask({"type": "step", "data": {"sql": gold}})
            for path in hidden:
                path.rename(str(path)[: -len(".away")])
            again = await ask({"type": "reset", "data": {"index": 0}})
            scored = await ask({"type": "step", "data": {"sql": gold}})
            return databases, fault, again, scored

    databases, fault, again, scored = run(probe())
    assert databases, "the generated dataset built no database under SQLENV_CACHE_DIR"
    assert fault["type"] == "error" and fault["data"]["code"] == "HOST_FAULT"
    assert "not of the query" in fault["data"]["message"]
    assert again["type"] == "observation"
    assert scored["data"]["reward"] == 1.0 and scored["data"]["observation"]["info"]["correct"]


def test_a_client_that_leaves_mid_move_has_its_query_interrupted(start):
    """A query with a 600 s budget is running when its client leaves: the server interrupts it, so
    the only slot frees long before that budget (the 120 s loop below is a hang guard)."""
    server = start("--max-sessions", "1", "--env-kwargs", json.dumps({"timeout": 600}))
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"

    async def start_move_and_leave():
        async with websockets.connect(_ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "reset", "data": {"index": 0}}))
            assert json.loads(await ws.recv())["type"] == "observation"
            await ws.send(json.dumps({"type": "step", "data": {"sql": endless}}))
            await asyncio.sleep(2)  # the session's thread has picked the move up
        for _ in range(1200):
            try:
                async with SQLEnvClient(base_url=server.url) as client:
                    return (await client.reset(index=1)).observation.info["index"]
            except RuntimeError as exc:
                assert "CAPACITY_REACHED" in str(exc)
                await asyncio.sleep(0.1)
        raise AssertionError("the slot was never freed: the query was not interrupted")

    assert run(start_move_and_leave()) == 1
    assert "a session ended during a move; interrupted its query" in server.log()
    assert "Traceback" not in server.log()
