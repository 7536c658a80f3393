"""The OpenEnv server side: ``SQLEnvironment`` (one Gymnasium env per session) and its FastAPI app.

OpenEnv's ``HTTPEnvServer`` gives each WebSocket connection (``/ws``) its own ``SQLEnvironment``,
refuses connections beyond ``max_sessions`` (error code ``CAPACITY_REACHED``) and reaps sessions idle
for ``session_timeout`` seconds. :func:`create_app` adds a request-size limit: an HTTP body over
``max_request_bytes`` gets 413, and the CLI passes the same limit to uvicorn as the WebSocket message
size cap (a larger message closes that connection with code 1009). Malformed messages (bad JSON, a
missing ``sql`` field, an unknown type, a step before reset or after the end) get an error response
naming the problem, and the session stays usable.
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import gymnasium as gym

import sqlenv
from openenv.core.env_server.http_server import create_fastapi_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import ConcurrencyConfig

from sqlenv.integrations.openenv.models import SQLAction, SQLObservation, SQLState

__all__ = ["ENV_IDS", "SQLEnvironment", "create_app", "main"]

ENV_IDS = (sqlenv.ENV_ID, sqlenv.AGENT_ENV_ID)


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

    def reset(self, seed: int | None = None, episode_id: str | None = None, index: int | None = None,
              **kwargs: Any) -> SQLObservation:
        if kwargs:
            raise ValueError(f"unknown reset arguments {sorted(kwargs)}: reset takes seed, episode_id and index")
        observation, info = self.env.reset(seed=seed, options=None if index is None else {"index": index})
        self._state = SQLState(episode_id=episode_id or uuid.uuid4().hex, step_count=0, env_id=self.env_id,
                               index=info["index"], question_id=info["id"])
        return _observation(observation, info)

    def step(self, action: SQLAction, timeout_s: float | None = None, **kwargs: Any) -> SQLObservation:
        observation, reward, terminated, truncated, info = self.env.step(action.sql)
        self._state.step_count += 1
        self._state.done = bool(terminated or truncated)
        return _observation(observation, info, float(reward), self._state.done, bool(truncated))

    @property
    def state(self) -> SQLState:
        return self._state

    def close(self) -> None:
        self.env.close()


def _observation(observation: dict[str, str], info: dict[str, Any], reward: float | None = None,
                 done: bool = False, truncated: bool = False) -> SQLObservation:
    return SQLObservation(question=observation["question"], schema_text=observation["schema"],
                          sample_rows=observation["sample_rows"], transcript=observation.get("transcript", ""),
                          info=info, reward=reward, done=done, truncated=truncated)


class _BodyLimit:
    """ASGI middleware: HTTP requests whose body exceeds ``limit`` bytes get 413 (declared or streamed)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(env_id: str = sqlenv.ENV_ID, *, max_sessions: int = 16, max_request_bytes: int = 1_000_000,
               session_timeout: float | None = 600.0, **env_kwargs: Any):
    """OpenEnv's FastAPI app serving ``env_id``: ``/ws`` sessions, ``/reset``, ``/step``, ``/state``,
    ``/schema``, ``/health``. One env is built first, so a bad ``env_kwargs`` fails here, naming the field."""
    if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
        raise ValueError(f"max_sessions={max_sessions!r} must be an integer >= 1")
    if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or max_request_bytes < 1024:
        raise ValueError(f"max_request_bytes={max_request_bytes!r} must be an integer >= 1024")
    SQLEnvironment(env_id, **env_kwargs).close()

    def factory() -> SQLEnvironment:
        return SQLEnvironment(env_id, **env_kwargs)

    app = create_fastapi_app(factory, SQLAction, SQLObservation, concurrency_config=ConcurrencyConfig(
        max_concurrent_envs=max_sessions, session_timeout=session_timeout))
    app.add_middleware(_BodyLimit, limit=max_request_bytes)
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sqlenv.integrations.openenv",
                                description="Serve a sqlenv environment over OpenEnv's HTTP/WebSocket protocol.")
    p.add_argument("--env", default=sqlenv.ENV_ID, choices=ENV_IDS, help="the Gymnasium env to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-sessions", type=int, default=16, help="concurrent WebSocket sessions (one env each)")
    p.add_argument("--max-request-bytes", type=int, default=1_000_000,
                   help="largest HTTP body and WebSocket message accepted")
    p.add_argument("--session-timeout", type=float, default=600.0, help="seconds before an idle session is reaped")
    p.add_argument("--dataset", default="generated", help="sqlenv dataset (generated, temptabqa-c, spider, ...)")
    p.add_argument("--split", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--reward", default="binary", help="reward preset: binary, partial, paper, arctic or arctic-nofloor")
    p.add_argument("--env-kwargs", default="{}", help='more constructor keywords as JSON, e.g. \'{"max_turns": 8}\'')
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        extra = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--env-kwargs is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise SystemExit("--env-kwargs must be a JSON object")
    kwargs = {"dataset": args.dataset, "split": args.split, "data_dir": args.data_dir, "reward": args.reward, **extra}
    try:
        app = create_app(args.env, max_sessions=args.max_sessions, max_request_bytes=args.max_request_bytes,
                         session_timeout=args.session_timeout, **kwargs)
    except (ValueError, TypeError, sqlenv.DatasetError) as exc:
        raise SystemExit(f"cannot serve {args.env}: {exc}") from None
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, ws_max_size=args.max_request_bytes, log_level="warning")
