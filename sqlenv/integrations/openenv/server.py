"""The OpenEnv server side: ``SQLEnvironment`` (one Gymnasium env per session) and its FastAPI app.

:func:`create_app` starts from OpenEnv's ``create_fastapi_app`` and replaces what does not hold up
to an untrusted client (see :mod:`.sessions` and :mod:`.guards`):

- ``/ws``: one session per WebSocket connection, at most ``max_sessions`` (then
  ``CAPACITY_REACHED``); a session lives only as long as its connection, is closed after
  ``session_timeout`` idle seconds, and runs its moves in its own thread, so a slow move does not
  hold up ``/health`` or other sessions. Malformed messages (bad JSON, JSON that is not an object,
  a missing ``sql`` field, an unknown type, a step before reset or after the end) get an error
  naming the problem, and the session goes on; a message over ``max_request_bytes`` closes the
  connection with 1009 (uvicorn closes it before the app hears of it, so its slot is freed a
  moment after the client sees the close, not before as with the server's own closes).
- ``POST /mcp`` cannot create sessions (they would hold a slot with no connection); ``POST /step``
  answers 409 (a stateless request has no episode); an HTTP body over ``max_request_bytes`` gets
  413.
- with a token (``--token`` or ``SQLENV_TOKEN``) every request but ``GET /health`` needs
  ``Authorization: Bearer <token>``; a non-loopback ``--host`` needs a token or
  ``--allow-no-token``.
- the CLI gives each connection ``--request-timeout`` seconds to send a whole request, caps open
  connections (``--max-connections``: a new one closes the oldest still waiting for its request,
  or gets 503), pings idle WebSockets, keeps uvicorn's access log off and rate-limits repeated
  log lines.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import uuid
from typing import Any

import gymnasium as gym

import sqlenv
from openenv.core.env_server.http_server import create_fastapi_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import ConcurrencyConfig
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from sqlenv.integrations.openenv.guards import (
    BodyLimit,
    TokenGuard,
    configure_logging,
    guarded_http_protocol,
)
from sqlenv.integrations.openenv.models import SQLAction, SQLObservation, SQLState
from sqlenv.integrations.openenv.sessions import SessionPool, serve_websocket
from sqlenv.rewards import preset_help

__all__ = ["ENV_IDS", "SQLEnvironment", "create_app", "main"]

ENV_IDS = (sqlenv.ENV_ID, sqlenv.AGENT_ENV_ID)

log = logging.getLogger("sqlenv.integrations.openenv")


class SQLEnvironment(Environment[SQLAction, SQLObservation, SQLState]):
    """An OpenEnv ``Environment`` around ``gym.make(env_id, **env_kwargs)``: reset, step and state.

    ``reset(seed=None, episode_id=None, index=None)``: ``index`` pins the question (the Gymnasium
    ``options={"index": i}``). ``step(SQLAction(sql=...))`` passes ``sql`` to the env unchanged.
    Instances share nothing (each has its own executor), so sessions run concurrently.
    """

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, env_id: str = sqlenv.ENV_ID, **env_kwargs: Any):
        super().__init__()
        if env_id not in ENV_IDS:
            raise ValueError(f"env_id={env_id!r} must be one of {list(ENV_IDS)}")
        self.env_id = env_id
        self.env = gym.make(env_id, **env_kwargs).unwrapped
        self._state = SQLState(env_id=env_id)

    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        index: int | None = None,
        **kwargs: Any,
    ) -> SQLObservation:
        if kwargs:
            raise ValueError(
                f"unknown reset arguments {sorted(kwargs)}: reset takes seed, episode_id and index"
            )
        observation, info = self.env.reset(
            seed=seed, options=None if index is None else {"index": index}
        )
        self._state = SQLState(
            episode_id=episode_id or uuid.uuid4().hex,
            step_count=0,
            env_id=self.env_id,
            index=info["index"],
            question_id=info["id"],
        )
        return _observation(observation, info)

    def step(
        self, action: SQLAction, timeout_s: float | None = None, **kwargs: Any
    ) -> SQLObservation:
        observation, reward, terminated, truncated, info = self.env.step(action.sql)
        self._state.step_count += 1
        self._state.done = bool(terminated or truncated)
        return _observation(observation, info, float(reward), self._state.done, bool(truncated))

    @property
    def state(self) -> SQLState:
        return self._state

    def interrupt(self) -> None:
        """Stop the move running now (from the event loop, when its client went away)."""
        self.env.interrupt()

    def close(self) -> None:
        self.env.close()


def _observation(
    observation: dict[str, str],
    info: dict[str, Any],
    reward: float | None = None,
    done: bool = False,
    truncated: bool = False,
) -> SQLObservation:
    return SQLObservation(
        question=observation["question"],
        schema_text=observation["schema"],
        sample_rows=observation["sample_rows"],
        transcript=observation.get("transcript", ""),
        info=info,
        reward=reward,
        done=done,
        truncated=truncated,
    )


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def _check_seconds(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < float("inf")
    ):
        raise ValueError(f"{name}={value!r} must be a positive number of seconds")


REPLACED = {
    ("/ws", "WEBSOCKET"),
    ("/mcp", "WEBSOCKET"),
    ("/mcp", "POST"),
    ("/step", "POST"),
    ("/health", "GET"),
}


def _replaced(route) -> bool:
    """OpenEnv's routes this server drops or answers itself."""
    return any(
        (route.path, method) in REPLACED
        for method in getattr(route, "methods", None) or {"WEBSOCKET"}
    )


def create_app(
    env_id: str = sqlenv.ENV_ID,
    *,
    max_sessions: int = 16,
    max_request_bytes: int = 1_000_000,
    session_timeout: float = 600.0,
    token: str | None = None,
    **env_kwargs: Any,
):
    """OpenEnv's FastAPI app serving ``env_id``: ``/ws`` sessions, ``/reset``, ``/state``,
    ``/schema``, ``/metadata``, ``/health``, behind a token (when given) and a request-size limit.

    One env is built first, so a bad ``env_kwargs`` fails here, naming the field. ``/ws`` is
    :func:`~sqlenv.integrations.openenv.sessions.serve_websocket` (sessions live only as long as
    their connection, idle ones close after ``session_timeout`` s); ``POST /mcp`` answers a
    JSON-RPC error (this env has no MCP tools, and sessions are not created over stateless HTTP);
    ``POST /step`` answers 409 (a stateless request has no episode to step); ``/health`` reports
    the session count.
    """
    _check_int("max_sessions", max_sessions, 1)
    _check_int("max_request_bytes", max_request_bytes, 1024)
    _check_seconds("session_timeout", session_timeout)
    SQLEnvironment(env_id, **env_kwargs).close()

    def factory() -> SQLEnvironment:
        return SQLEnvironment(env_id, **env_kwargs)

    app = create_fastapi_app(
        factory,
        SQLAction,
        SQLObservation,
        concurrency_config=ConcurrencyConfig(
            max_concurrent_envs=max_sessions, session_timeout=None
        ),
    )
    app.router.routes[:] = [route for route in app.router.routes if not _replaced(route)]
    _add_routes(app, SessionPool(factory, max_sessions), session_timeout)
    app.add_middleware(BodyLimit, limit=max_request_bytes)
    if token:
        app.add_middleware(TokenGuard, token=token)
    return app


def _add_routes(app, pool: SessionPool, session_timeout: float) -> None:
    @app.websocket("/ws")
    async def ws_session(websocket: WebSocket) -> None:
        await serve_websocket(websocket, pool, SQLAction, idle_timeout=session_timeout)

    @app.get("/health", tags=["Health"])
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "sessions": pool.active, "max_sessions": pool.limit}

    @app.post("/step", status_code=409, tags=["Environment Control"])
    async def step() -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": STATELESS_STEP})

    @app.post("/mcp")
    async def mcp() -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32601, "message": NO_MCP}}


STATELESS_STEP = (
    "HTTP /step has no episode to step: each HTTP request gets a fresh env. Play episodes "
    "over a WebSocket session at /ws (SQLEnvClient, or OpenEnv's EnvClient)."
)
NO_MCP = (
    "this server has no MCP tools, and sessions are not created over stateless HTTP: "
    "open a WebSocket session at /ws (SQLEnvClient)"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sqlenv.integrations.openenv",
        description="Serve a sqlenv environment over OpenEnv's HTTP/WebSocket protocol.",
    )
    p.add_argument(
        "--env", default=sqlenv.ENV_ID, choices=ENV_IDS, help="the Gymnasium env to serve"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        default=None,
        help="shared secret every client must send (Authorization: Bearer <token>); "
        "default: the SQLENV_TOKEN environment variable",
    )
    p.add_argument(
        "--allow-no-token",
        action="store_true",
        help="serve a non-loopback address without a token (not recommended)",
    )
    p.add_argument(
        "--max-sessions", type=int, default=16, help="concurrent WebSocket sessions (one env each)"
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=1_000_000,
        help="largest HTTP body and WebSocket message accepted",
    )
    p.add_argument(
        "--session-timeout",
        type=float,
        default=600.0,
        help="seconds a session may stay idle before it is closed",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds a connection has to send a whole HTTP request (or WebSocket handshake)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections at once (also the listen backlog); a new one beyond it closes the "
        "oldest still waiting for its request, or gets 503 (default: an eighth of the open-file "
        "limit, 16 to 1024)",
    )
    p.add_argument(
        "--dataset",
        default="generated",
        help="sqlenv dataset (generated, temptabqa-c, spider, ...)",
    )
    p.add_argument("--split", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--reward",
        default="binary",
        help=f"reward preset: {preset_help()}",
    )
    p.add_argument(
        "--env-kwargs",
        default="{}",
        help="more constructor keywords as JSON, e.g. '{\"max_turns\": 8}'",
    )
    return p


def default_max_connections() -> int:
    """An eighth of the soft open-file limit, 16 to 1024: a burst of connections can briefly hold
    three times that (the listen backlog is the same number), and sqlenv's connection budget takes
    half the limit for databases."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 128
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft // 8))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_exposure(host: str, token: str | None, allow_no_token: bool) -> None:
    """Refuse a non-loopback bind without a token unless allowed, and then warn loudly."""
    if token or _is_loopback(host):
        return
    if not allow_no_token:
        raise SystemExit(
            f"refusing to serve {host} without a token: anyone who can reach it could hold every "
            "session. Set SQLENV_TOKEN (or --token), or pass --allow-no-token to accept that."
        )
    log.warning(
        "SERVING %s WITHOUT A TOKEN (--allow-no-token): anyone who can reach this address can "
        "play, hold sessions and load the server. Set SQLENV_TOKEN to require a token.",
        host,
    )


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    try:
        extra = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--env-kwargs is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise SystemExit("--env-kwargs must be a JSON object")
    return {
        "dataset": args.dataset,
        "split": args.split,
        "data_dir": args.data_dir,
        "reward": args.reward,
        **extra,
    }


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    configure_logging("warning")
    token = args.token or os.environ.get("SQLENV_TOKEN") or None
    _check_exposure(args.host, token, args.allow_no_token)
    max_connections = args.max_connections
    if max_connections is None:
        max_connections = default_max_connections()
    try:
        _check_seconds("request_timeout", args.request_timeout)
        _check_int("max_connections", max_connections, 1)
        app = create_app(
            args.env,
            max_sessions=args.max_sessions,
            max_request_bytes=args.max_request_bytes,
            session_timeout=args.session_timeout,
            token=token,
            **_env_kwargs(args),
        )
    except (ValueError, TypeError, sqlenv.DatasetError) as exc:
        raise SystemExit(f"cannot serve {args.env}: {exc}") from None
    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level="warning",
        access_log=False,
        http=guarded_http_protocol(args.request_timeout, max_connections),
        ws="websockets-sansio",
        ws_max_size=args.max_request_bytes,
        ws_max_queue=8,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16_384,
        backlog=max_connections,  # asyncio accepts up to this many sockets per wakeup
    )
