"""Attack the real OpenEnv server (and the chat server) as a hostile client would; print what held.

    .venv/bin/python benchmarks/attack_server.py                     # every attack, full size
    .venv/bin/python benchmarks/attack_server.py --attacks quadratic,malformed --scale 0.05
    .venv/bin/python benchmarks/attack_server.py --json /tmp/attacks.json

Each attack starts a fresh server process (``python -m sqlenv.integrations.openenv`` on a free
port, with a random ``--token`` when the server has that flag, some under a lowered
``RLIMIT_NOFILE``), its stdout and stderr captured to a log file. While the attack runs, a sampler
reads the server's RSS, VmHWM and open descriptors from /proc every ~50 ms, and a prober (another
client: a WebSocket session doing reset + step with a tiny query, then GET /health, in a loop)
records the longest time it went without an answer. Attacks (issue 21):

  quadratic   TextToSQLAgent-v0: one WebSocket step of "<sql>" * n (~120 KB, then ~1 MB)
  fd-walk     TextToSQL-v0, 16 sessions resetting across distinct databases and answering with the
              gold SQL (expose_gold), under RLIMIT_NOFILE 256 and 1024: correct answers not scored
              +1, and errors
  blobs       TextToSQLAgent-v0: an exploration of 79 zeroblob(99000) columns plus 19 small rows,
              then an answer of 79 blobs (4 sessions at once): response bytes, server memory
  squat       16 stateless HTTP POSTs of openenv/session/create to /mcp, then a new WebSocket
              session
  half-open   300 TCP connections sending a partial HTTP request (RLIMIT_NOFILE 256), then /health
              and a new session
  malformed   non-object JSON, an unknown type, a step without ``sql``: is the session still usable;
              HTTP POST /step; a message over the size limit (close code, traceback in the log)
  token       no token and a wrong token, on /health, /reset and the WebSocket handshake
  chat        the chat server: 32 concurrent requests, one 150 MB body (status, memory retained)

``--scale`` shrinks every size and count (the smoke test uses 0.02). The verdict is ``held`` when
the client got a bounded, correct answer, the server stayed up, its log grew under 1 MB and the
prober never waited longer than ``--stall-limit`` seconds; otherwise ``FAILED`` with the reasons.
An attack that still succeeds is reported as such. The server is always killed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AGENT = "TextToSQLAgent-v0"
SINGLE = "TextToSQL-v0"
TINY_SQL = "SELECT 1"
CALL_TIMEOUT = 60.0  # seconds any one client call may take before it counts as "no answer"
LOG_FLOOD = 1_000_000  # log bytes one attack may cause before it counts as flooding the log


# ----------------------------------------------------------------------------- the server process
_PORT_HINT: list[int] = []  # --port: the first server's port


def free_port() -> int:
    if _PORT_HINT:
        return _PORT_HINT.pop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_flags() -> str:
    """The OpenEnv server's --help text (to detect optional flags such as --token)."""
    out = subprocess.run([sys.executable, "-m", "sqlenv.integrations.openenv", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    return out.stdout


def _limit_nofile(limit: int | None) -> Callable[[], None] | None:
    if limit is None:
        return None

    def preexec() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, min(limit, hard)))
    return preexec


class Server:
    """One server process on 127.0.0.1:port, its output in ``log``; ``token``: None without one."""

    def __init__(self, argv: list[str], port: int, log: Path, token: str | None,
                 nofile: int | None = None, ready: Callable[[], bool] | None = None):
        self.port, self.log, self.token = port, log, token
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, preexec_fn=_limit_nofile(nofile))
        self._wait_ready(ready or (lambda: http_get(self, "/health", timeout=2)[0] == 200))

    def _wait_ready(self, ready: Callable[[], bool], limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {limit:.0f} s: {self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def headers(self, token: str | None = "default") -> dict[str, str]:
        token = self.token if token == "default" else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def log_bytes(self) -> int:
        return self.log.stat().st_size

    def log_tail(self, n: int = 2000) -> str:
        with open(self.log, "rb") as f:
            f.seek(max(0, self.log_bytes() - n))
            return f.read().decode("utf-8", "replace")

    def log_count(self, needle: bytes, start: int = 0) -> int:
        """Occurrences of ``needle`` in the log after byte ``start`` (streamed: logs get huge)."""
        count, carry = 0, b""
        with open(self.log, "rb") as f:
            f.seek(start)
            while chunk := f.read(1 << 20):
                data = carry + chunk
                count += data.count(needle)
                carry = data[-(len(needle) - 1):] if len(needle) > 1 else b""
                count -= carry.count(needle)
        return count

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s (a parse holding the GIL ignores SIGTERM)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


def openenv_argv(env_id: str, port: int, token: str | None, extra: list[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "sqlenv.integrations.openenv", "--env", env_id,
            "--port", str(port), *extra]
    return argv + (["--token", token] if token else [])


# ----------------------------------------------------------------------------- clients
def http_get(server: Server, path: str, timeout: float = 10.0,
             token: str | None = "default") -> tuple[int, bytes]:
    return http_request(server, "GET", path, None, timeout, token)


def http_request(server: Server, method: str, path: str, body: Any, timeout: float = 10.0,
                 token: str | None = "default") -> tuple[int, bytes]:
    """(status, body) of one request; raises OSError on a connection failure or timeout."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **server.headers(token)}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Session:
    """A WebSocket session on /ws speaking OpenEnv's message protocol; every call has a timeout."""

    def __init__(self, server: Server, timeout: float = CALL_TIMEOUT,
                 token: str | None = "default"):
        self.timeout = timeout
        self.ws = ws_connect(f"ws://127.0.0.1:{server.port}/ws",
                             additional_headers=server.headers(token), open_timeout=timeout,
                             close_timeout=2, max_size=None, ping_interval=None).__enter__()
        self.last_bytes = 0

    def send_raw(self, text: str) -> dict:
        try:
            self.ws.send(text)
        except ConnectionClosed:  # closed first: read its last word (e.g. CAPACITY_REACHED)
            raw = self.ws.recv(timeout=1)
        else:
            raw = self.ws.recv(timeout=self.timeout)
        self.last_bytes = len(raw)
        reply = json.loads(raw)
        return reply if isinstance(reply, dict) else {"type": "?", "data": reply}

    def call(self, kind: str, data: dict) -> dict:
        """The reply's ``data``; a server error raises RuntimeError with its message and code."""
        reply = self.send_raw(json.dumps({"type": kind, "data": data}))
        if reply.get("type") == "error":
            err = reply.get("data", {})
            raise RuntimeError(f"{err.get('code')}: {str(err.get('message'))[:200]}")
        return reply.get("data", {})

    def reset(self, index: int | None = None) -> dict:
        return self.call("reset", {} if index is None else {"index": index})

    def step(self, sql: str) -> dict:
        return self.call("step", {"sql": sql})

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def works(server: Server, timeout: float = 15.0) -> str:
    """'ok' when a new session can reset and step, else what went wrong."""
    try:
        with Session(server, timeout) as s:
            s.reset(0)
            s.step(TINY_SQL)
        return "ok"
    except Exception as exc:
        return _brief(exc)


def _brief(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"handshake {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        return f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


# ----------------------------------------------------------------------------- measurement
def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler(threading.Thread):
    """Samples a process's RSS and descriptors every ``period`` s; peaks relative to the start."""

    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period, self._halt = pid, period, threading.Event()
        try:  # reset VmHWM so that it measures this attack's peak only
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass
        self.base_kb = _proc_status(pid).get("VmRSS", 0)
        self.peak_kb, self.peak_fds = self.base_kb, _fds(pid)

    def run(self) -> None:
        while not self._halt.wait(self.period):
            self.sample()

    def sample(self) -> None:
        try:
            status = _proc_status(self.pid)
            self.peak_kb = max(self.peak_kb, status.get("VmRSS", 0), status.get("VmHWM", 0))
            self.peak_fds = max(self.peak_fds, _fds(self.pid))
        except OSError:
            pass  # the process is gone

    def finish(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    @property
    def rss_delta_mb(self) -> float:
        return (self.peak_kb - self.base_kb) / 1024


class Prober(threading.Thread):
    """Another client, in a loop: ``probe()`` (a reset + step + GET /health). ``stall``: the longest
    time between two answers (or since the start, or until the end) during the attack."""

    def __init__(self, probe: Callable[[], None]):
        super().__init__(daemon=True)
        self.probe, self._halt = probe, threading.Event()
        self.last = self.start_time = time.monotonic()
        self.stall, self.answers, self.failures = 0.0, 0, 0

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.probe()
                self.answers += 1
            except Exception:
                self.failures += 1
                self._halt.wait(0.2)
                continue
            self._answered()
            self._halt.wait(0.02)

    def _answered(self) -> None:
        now = time.monotonic()
        self.stall, self.last = max(self.stall, now - self.last), now

    def finish(self) -> float:
        self._halt.set()
        self.join(CALL_TIMEOUT + 5)
        self.stall = max(self.stall, time.monotonic() - self.last)
        return self.stall


def openenv_probe(server: Server) -> Callable[[], None]:
    """A probe holding one WebSocket session (reconnected after a failure)."""
    state: dict[str, Session | None] = {"s": None}

    def probe() -> None:
        try:
            if state["s"] is None:
                state["s"] = Session(server, CALL_TIMEOUT)
            state["s"].reset(0)
            state["s"].step(TINY_SQL)
            status, _ = http_get(server, "/health", CALL_TIMEOUT)
            if status != 200:
                raise RuntimeError(f"/health {status}")
        except Exception:
            if state["s"] is not None:
                state["s"].close()
            state["s"] = None
            raise
    probe.close = lambda: state["s"] and state["s"].close()  # type: ignore[attr-defined]
    return probe


# ----------------------------------------------------------------------------- one attack
@dataclass
class Outcome:
    attack: str
    saw: str = ""
    held: bool = False
    why: str = ""
    rss_delta_mb: float = 0.0
    peak_fds: int = 0
    stall_s: float = 0.0
    log_bytes: int = 0
    tracebacks: int = 0
    server_alive: bool = False
    health_after: str = ""
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "held" if self.held else f"FAILED ({self.why})"


@dataclass
class Context:
    """What every attack gets: the options, a log folder, the token (if the server takes one)."""
    scale: float
    logs: Path
    token: str | None
    stall_limit: float
    keep_logs: bool = False

    def n(self, full: int, least: int = 1) -> int:
        return max(least, int(round(full * self.scale)))

    def openenv(self, name: str, env_id: str, extra: list[str] = (), nofile: int | None = None
                ) -> Server:
        port = free_port()
        return Server(openenv_argv(env_id, port, self.token, list(extra)), port,
                      self.logs / f"{name}.log", self.token, nofile)


def run_attack(ctx: Context, name: str, server: Server, attack: Callable[[Server], tuple],
               probe: Callable[[], None] | None = None, health: Callable[[], str] | None = None
               ) -> Outcome:
    """Sample, probe, attack, then check the server; always stop it. ``attack`` returns
    (what the client saw, whether the client's side held, reason if not, details)."""
    probe = probe or openenv_probe(server)
    out, start = Outcome(name), time.monotonic()
    try:
        probe()  # warm: the prober's session exists before the attack
        log_start = server.log_bytes()
        sampler, prober = Sampler(server.pid), Prober(probe)
        sampler.start()
        prober.start()
        try:
            out.saw, held, out.why, out.details = attack(server)
        except Exception as exc:  # the attack's own client failed in an unplanned way
            out.saw, held, out.why, out.details = f"attack client error: {_brief(exc)}", False, \
                "attack client error", {}
        out.stall_s = prober.finish()
        sampler.finish()
        out.details.update(prober_answers=prober.answers, prober_failures=prober.failures)
        out.rss_delta_mb, out.peak_fds = sampler.rss_delta_mb, sampler.peak_fds
        out.server_alive = server.alive()
        out.health_after = (health or (lambda: _health(server)))()
        out.log_bytes = server.log_bytes() - log_start
        out.tracebacks = server.log_count(b"Traceback", log_start)
        out.held = _judge(ctx, out, held)
    finally:
        getattr(probe, "close", lambda: None)()
        server.stop()
        if not ctx.keep_logs:
            server.log.unlink(missing_ok=True)
    out.seconds = time.monotonic() - start
    return out


def _health(server: Server) -> str:
    try:
        return str(http_get(server, "/health", 15)[0])
    except Exception as exc:
        return _brief(exc)


def _judge(ctx: Context, out: Outcome, held: bool) -> bool:
    reasons = [out.why] if not held and out.why else []
    if not out.server_alive:
        reasons.append("server died")
    elif out.health_after not in ("200", "ok"):
        reasons.append(f"after: {out.health_after}")
    if out.stall_s > ctx.stall_limit:
        reasons.append(f"stall {out.stall_s:.1f} s")
    if out.log_bytes > LOG_FLOOD:
        reasons.append(f"log flood ({out.log_bytes / 1e6:.0f} MB)")
    out.why = "; ".join(reasons)
    return held and not reasons


# ----------------------------------------------------------------------------- the attacks
def attack_quadratic(ctx: Context) -> list[Outcome]:
    """One unclosed-tag move per size; the client waits at most CALL_TIMEOUT s for its answer."""
    outcomes = []
    for label, size in (("120 KB", 120_000), ("1 MB", 990_000)):
        n = ctx.n(size) // len("<sql>")

        def attack(server: Server, n=n) -> tuple:
            with Session(server, CALL_TIMEOUT) as s:
                s.reset(0)
                t0 = time.monotonic()
                try:
                    data = s.step("<sql>" * n)
                    info = data.get("observation", {}).get("info", {})
                    error = (info.get("move_errors") or [info.get("error")])[-1]
                    seconds = time.monotonic() - t0
                    saw = f"answered in {seconds:.2f} s (error {error!r})"
                    return saw, True, "", {"answer_s": seconds, "error": error}
                except Exception as exc:
                    return (f"no answer after {time.monotonic() - t0:.1f} s ({_brief(exc)})", False,
                            "no answer", {})
        server = ctx.openenv("quadratic", AGENT)
        outcomes.append(run_attack(ctx, f"quadratic move {label}" if ctx.scale == 1
                                   else f"quadratic move {label} x{ctx.scale:g}", server, attack))
    return outcomes


def _distinct_db_indices(count: int, dataset: str) -> list[int]:
    """Indices of ``count`` questions on distinct databases (the first question of each)."""
    import sqlenv

    data = sqlenv.load_dataset(dataset)
    seen: dict[str, int] = {}
    for i in range(len(data)):
        seen.setdefault(data[i].db_key, i)
    return list(seen.values())[:count]


def attack_fd_walk(ctx: Context, dataset: str) -> list[Outcome]:
    """16 sessions walking distinct databases with gold answers, under two descriptor limits."""
    sessions, per_session = 16, ctx.n(120, 8)
    indices = _distinct_db_indices(10_000, dataset)
    outcomes = []
    for limit in (256, 1024):
        def attack(server: Server) -> tuple:
            with ThreadPoolExecutor(sessions) as pool:
                counts = list(pool.map(lambda k: _walk(server, indices, k, per_session),
                                       range(sessions)))
            total = Counter()
            for c in counts:
                total.update(c)  # unlike +, keeps the zero counts
            kinds = ", ".join(f"{k[5:]} {v}" for k, v in total.items() if k.startswith("kind:"))
            saw = (f"{total['answers']} gold answers: {total['plus1']} scored +1, "
                   f"{total['scored_wrong']} scored below +1{f' ({kinds})' if kinds else ''}, "
                   f"{total['errors']} errors, {total['lost']} sessions lost")
            held = total["scored_wrong"] == 0 and total["errors"] == 0 and total["lost"] == 0
            return saw, held, "correct answers not scored +1" if not held else "", dict(total)
        extra = ["--dataset", dataset, "--max-sessions", str(sessions + 1),
                 "--env-kwargs", json.dumps({"expose_gold": True})]
        server = ctx.openenv(f"fd-walk-{limit}", SINGLE, extra, nofile=limit)
        outcomes.append(run_attack(ctx, f"descriptor walk, 16 sessions, nofile {limit}",
                                   server, attack))
    return outcomes


def _walk(server: Server, indices: list[int], k: int, count: int) -> Counter:
    """One session: ``count`` episodes on distinct databases (offset by k), each answered with gold;
    a gold answer not scored +1 also counts under ``kind:<info error>``."""
    tally = Counter(answers=0, plus1=0, scored_wrong=0, errors=0, lost=0)
    try:
        session = Session(server, CALL_TIMEOUT)
    except Exception:
        tally["lost"] += 1
        return tally
    with session:
        for j in range(count):
            index = indices[(k * 7 + j) % len(indices)]
            try:
                info = session.reset(index)["observation"]["info"]
                data = session.step(info["gold_sql"])
            except (RuntimeError, KeyError):
                tally["errors"] += 1
                continue
            except Exception:
                tally["lost"] += 1
                return tally
            tally["answers"] += 1
            if data.get("reward") == 1:
                tally["plus1"] += 1
            else:
                tally["scored_wrong"] += 1
                tally[f"kind:{data.get('observation', {}).get('info', {}).get('error')}"] += 1
    return tally


def _blob_move(tag: str, columns: int, blob: int, small_rows: int) -> str:
    big = ", ".join(f"zeroblob({blob}) AS c{i}" for i in range(columns))
    small = " UNION ALL ".join("SELECT " + ", ".join(str(r * columns + i) for i in range(columns))
                               for r in range(small_rows))
    sql = f"SELECT {big}" + (f" UNION ALL {small}" if small_rows else "")
    return f"<{tag}>{sql}</{tag}>"


def attack_blobs(ctx: Context) -> list[Outcome]:
    """4 sessions at once: a 7.8 MB exploration result, then an answer of 79 blobs."""
    blob, sessions = ctx.n(99_000, 100), 4
    explore, answer = _blob_move("sql", 79, blob, 19), _blob_move("answer", 79, blob, 0)

    def one(server: Server) -> dict:
        with Session(server, CALL_TIMEOUT) as s:
            s.reset(0)
            s.step(explore)
            explore_bytes = s.last_bytes
            s.step(answer)
            return {"explore_bytes": explore_bytes, "answer_bytes": s.last_bytes}

    def attack(server: Server) -> tuple:
        with ThreadPoolExecutor(sessions) as pool:
            results = list(pool.map(lambda _: one(server), range(sessions)))
        biggest = max(max(r.values()) for r in results)
        saw = (f"{sessions} sessions: exploration response {results[0]['explore_bytes']:,} B, "
               f"answer response {results[0]['answer_bytes']:,} B")
        held = biggest <= 1_000_000
        return saw, held, "response over 1 MB" if not held else "", {"responses": results}
    server = ctx.openenv("blobs", AGENT)
    return [run_attack(ctx, "blob formatting, 4 sessions", server, attack)]


def attack_squat(ctx: Context) -> list[Outcome]:
    """16 openenv/session/create over stateless HTTP, then a new WebSocket session (15 s to get
    in)."""
    def attack(server: Server) -> tuple:
        created = 0
        for i in range(16):
            body = {"jsonrpc": "2.0", "method": "openenv/session/create", "params": {}, "id": i}
            try:
                status, raw = http_request(server, "POST", "/mcp", body)
                if status == 200 and "session_id" in str(json.loads(raw).get("result")):
                    created += 1
            except Exception:
                pass
        t0, result = time.monotonic(), works(server)
        while result != "ok" and time.monotonic() - t0 < 15:
            time.sleep(1)
            result = works(server)
        waited = time.monotonic() - t0
        saw = (f"{created}/16 sessions created over HTTP; new WebSocket session: {result}"
               + (f" after {waited:.0f} s" if result == "ok" and waited > 1 else ""))
        held = result == "ok"
        return saw, held, "locked out" if not held else "", {"created": created, "new": result}
    server = ctx.openenv("squat", SINGLE)
    return [run_attack(ctx, "stateless session squatting", server, attack)]


def attack_half_open(ctx: Context) -> list[Outcome]:
    """300 partial HTTP requests held open under RLIMIT_NOFILE 256; /health and a new session."""
    count, hold = ctx.n(300, 10), max(5.0, 20 * ctx.scale)

    def attack(server: Server) -> tuple:
        socks = []
        try:
            for _ in range(count):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            health, session = _health(server), works(server)
            time.sleep(hold)
            closed = sum(_closed_by_peer(s) for s in socks)
            health2, session2 = _health(server), works(server)
        finally:
            for s in socks:
                s.close()
        saw = (f"{len(socks)} half-open: /health {health}, new session {session}; "
               f"after {hold:.0f} s {closed} closed by the server, /health {health2}, "
               f"new session {session2}")
        return saw, *_half_open_verdict(health, session, health2, session2), {
            "closed_by_server": closed, "during": [health, session], "after": [health2, session2]}
    server = ctx.openenv("half-open", SINGLE, nofile=256)
    return [run_attack(ctx, f"{count} half-open HTTP connections, nofile 256", server, attack)]


def _half_open_verdict(health: str, session: str, health2: str, session2: str) -> tuple[bool, str]:
    """Held: others were served while the connections were held, and after."""
    if health2 != "200" or session2 != "ok":
        return False, "unreachable after the hold"
    if health == "200" and session == "ok":
        return True, ""
    if "timed out" in (health, session):
        return False, "unreachable while held"
    return False, "others refused while held"


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        s.recv(1024)  # b"": closed; bytes: the server answered the partial request (e.g. 408)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def attack_malformed(ctx: Context) -> list[Outcome]:
    """Malformed WebSocket messages, HTTP POST /step, and a message over the size limit."""
    def after(s: Session, text: str) -> str:
        try:
            reply = s.send_raw(text)
            kind = reply.get("type")
        except Exception as exc:
            return f"{_brief(exc)}, session gone"
        try:
            s.reset(0)
            s.step(TINY_SQL)
            return f"{kind}, session usable"
        except Exception as exc:
            return f"{kind}, then {_brief(exc)}"

    def attack(server: Server) -> tuple:
        seen = {}
        for label, text in (("non-object JSON", "[1, 2]"), ("unknown type", '{"type": "bogus"}'),
                            ("step without sql", '{"type": "step", "data": {}}')):
            with Session(server, 15) as s:
                s.reset(0)
                seen[label] = after(s, text)
        seen["HTTP /step"] = str(http_request(server, "POST", "/step",
                                              {"action": {"sql": TINY_SQL}})[0])
        mark = server.log_bytes()
        seen["oversize"] = _oversize(server)
        time.sleep(0.5)
        seen["oversize tracebacks"] = str(server.log_count(b"Traceback", mark))
        held = (all(v.endswith("session usable") for k, v in seen.items() if k in
                    ("non-object JSON", "unknown type", "step without sql"))
                and not seen["HTTP /step"].startswith("5") and seen["oversize"] == "closed 1009"
                and seen["oversize tracebacks"] == "0")
        saw = "; ".join(f"{k}: {v}" for k, v in seen.items())
        return saw, held, "malformed message mishandled" if not held else "", seen
    server = ctx.openenv("malformed", SINGLE)
    return [run_attack(ctx, "malformed messages", server, attack)]


def _oversize(server: Server, limit: int = 1_000_000) -> str:
    try:
        with Session(server, 15) as s:
            s.reset(0)
            s.step("SELECT '" + "x" * (limit + 1000) + "'")
            return "answered (not refused)"
    except Exception as exc:
        return _brief(exc)


def attack_token(ctx: Context, has_token: bool) -> list[Outcome]:
    """Without a token and with a wrong one: /health, /reset and the WebSocket handshake (held when
    /reset and the handshake are refused; /health may stay open as a liveness probe)."""
    def attack(server: Server) -> tuple:
        if not has_token:
            return ("the server has no --token: any client that reaches the port gets a session",
                    False, "no token support", {})
        seen, refused = {}, {}
        for label, token in (("no token", None), ("wrong token", "not-" + (server.token or ""))):
            health = http_get(server, "/health", 10, token)[0]
            reset = http_request(server, "POST", "/reset", {}, 10, token)[0]
            try:
                with Session(server, 10, token) as s:
                    s.reset(0)
                ws = "session opened"
            except Exception as exc:
                ws = _brief(exc)
            seen[label] = f"/health {health}, /reset {reset}, /ws {ws}"
            refused[label] = reset in (401, 403) and ws != "session opened"
        held = all(refused.values())  # GET /health may stay open (a liveness probe)
        saw = "; ".join(f"{k}: {v}" for k, v in seen.items())
        return saw, held, "unauthenticated client served" if not held else "", seen
    server = ctx.openenv("token", SINGLE)
    return [run_attack(ctx, "no token / wrong token", server, attack)]


# ----------------------------------------------------------------------------- the chat server
CHAT_SERVER = """
import sys, time
from sqlenv.integrations.chat_server import ChatServer
server = ChatServer(lambda messages: (time.sleep(0.05), "SELECT 1")[1], port=int(sys.argv[1]))
print("ready", server.base_url, flush=True)
time.sleep(10 ** 6)
"""


def chat_post(port: int, body: bytes, timeout: float = CALL_TIMEOUT) -> int:
    """The status of one chat request; a server that answers before reading the whole body (413)
    and closes is still heard: its answer is read after the send fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            for i in range(0, len(body), 1 << 20):
                conn.send(body[i:i + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer, if any, is waiting
        return conn.getresponse().status
    finally:
        conn.close()


def _chat_body(text: str = "hi") -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()


def attack_chat(ctx: Context) -> list[Outcome]:
    """32 simultaneous requests, then one 150 MB body; memory retained after it."""
    concurrent, body_mb = 32, ctx.n(150)
    port = free_port()
    log = ctx.logs / "chat.log"
    server = Server([sys.executable, "-c", CHAT_SERVER, str(port)], port, log, None,
                    ready=lambda: b"ready" in log.read_bytes())

    def probe() -> None:
        if chat_post(port, _chat_body()) != 200:
            raise RuntimeError("chat probe failed")

    def attack(server: Server) -> tuple:
        barrier = threading.Barrier(concurrent)

        def one(_: int) -> str:
            barrier.wait(10)
            try:
                return str(chat_post(port, _chat_body(), 30))
            except Exception as exc:
                return _brief(exc)
        with ThreadPoolExecutor(concurrent) as pool:
            results = list(pool.map(one, range(concurrent)))
        answered = results.count("200")
        before = _proc_status(server.pid)["VmRSS"]
        big = _chat_body("x" * (body_mb << 20))
        try:
            status = str(chat_post(port, big, 120))
        except Exception as exc:
            status = _brief(exc)
        del big
        time.sleep(1)
        retained = (_proc_status(server.pid)["VmRSS"] - before) / 1024
        saw = (f"{answered}/{concurrent} concurrent answered; {body_mb} MB body: {status}, "
               f"{retained:.0f} MB retained")
        held = answered == concurrent and retained < body_mb / 2 and status != "200"
        why = "; ".join(w for w, bad in (("requests dropped", answered < concurrent),
                                         ("body accepted", status == "200"),
                                         ("body retained", retained >= body_mb / 2)) if bad)
        return saw, held, why, {"answered": answered, "body_status": status,
                                "retained_mb": retained, "errors": sorted(set(results) - {"200"})}
    return [run_attack(ctx, "chat server: 32 concurrent, big body", server, attack, probe,
                       health=lambda: "200" if _chat_ok(port) else "no answer")]


def _chat_ok(port: int) -> bool:
    try:
        return chat_post(port, _chat_body(), 15) == 200
    except Exception:
        return False


# ----------------------------------------------------------------------------- main
ATTACKS = ("quadratic", "fd-walk", "blobs", "squat", "half-open", "malformed", "token", "chat")


def run(names: list[str], ctx: Context, dataset: str, has_token: bool) -> list[Outcome]:
    table = {"quadratic": lambda: attack_quadratic(ctx),
             "fd-walk": lambda: attack_fd_walk(ctx, dataset),
             "blobs": lambda: attack_blobs(ctx), "squat": lambda: attack_squat(ctx),
             "half-open": lambda: attack_half_open(ctx), "malformed": lambda: attack_malformed(ctx),
             "token": lambda: attack_token(ctx, has_token), "chat": lambda: attack_chat(ctx)}
    outcomes = []
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        try:
            results = table[name]()
        except Exception as exc:  # e.g. the server did not start: report it, go on
            results = [Outcome(name, saw=f"could not run: {_brief(exc)}", why="not run")]
        for out in results:
            print(f"    {out.attack}: {out.verdict} ({out.seconds:.0f} s)", file=sys.stderr,
                  flush=True)
            outcomes.append(out)
    return outcomes


def markdown(outcomes: list[Outcome]) -> str:
    head = ("| attack | what the client saw | server peak RSS delta | peak fds | longest stall of "
            "the prober | log bytes | verdict |\n|---|---|---:|---:|---:|---:|---|")
    rows = [f"| {o.attack} | {o.saw} | {o.rss_delta_mb:+.0f} MB | {o.peak_fds} | {o.stall_s:.1f} s "
            f"| {o.log_bytes:,}{_tb(o)} | {o.verdict} |" for o in outcomes]
    return "\n".join([head, *rows])


def _tb(o: Outcome) -> str:
    return f" ({o.tracebacks} tracebacks)" if o.tracebacks else ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="attacks: " + ", ".join(ATTACKS))
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help="comma-separated subset of the attacks (default: all)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every size and count by this (e.g. 0.02 for a smoke test)")
    p.add_argument("--port", type=int, default=None,
                   help="port of the first server started (later ones take a free port)")
    p.add_argument("--dataset", default="generated", help="dataset for the descriptor walk")
    p.add_argument("--stall-limit", type=float, default=2.0,
                   help="longest prober wait (s) still counted as held (default 2)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--keep-logs", default=None, help="keep the servers' logs in this folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(names) - set(ATTACKS))
    if unknown or not names or not 0 < args.scale <= 1:
        raise SystemExit(f"--attacks must name some of {list(ATTACKS)} (unknown: {unknown}); "
                         "--scale must be in (0, 1]")
    _PORT_HINT[:] = [args.port] if args.port else []
    has_token = "--token" in server_flags()
    logs = Path(args.keep_logs or tempfile.mkdtemp(prefix="attack_server_"))
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.scale, logs, secrets.token_hex(16) if has_token else None, args.stall_limit,
                  keep_logs=bool(args.keep_logs))
    outcomes = run(names, ctx, args.dataset, has_token)
    if not args.keep_logs:
        for leftover in logs.iterdir():
            leftover.unlink()
        logs.rmdir()
    print(markdown(outcomes))
    held = sum(o.held for o in outcomes)
    print(f"\n{held}/{len(outcomes)} held; token support: {'yes' if has_token else 'no'}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{**asdict(o), "verdict": o.verdict} for o in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
