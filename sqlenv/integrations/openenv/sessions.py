"""WebSocket sessions for the OpenEnv server: one env per connection, its moves in its own thread.

The wire protocol is OpenEnv's (``reset``, ``step``, ``state``, ``close`` messages; ``observation``,
``state`` and ``error`` answers), so OpenEnv's ``EnvClient`` and :class:`SQLEnvClient` speak it.
What this module adds to OpenEnv's own handler:

- a slot is held only by an open connection, and freed when the connection ends; a move in flight
  then has its query interrupted (``env.interrupt()``), so no work outlives its connection;
- a new session at the cap waits up to ``SLOT_WAIT`` seconds for a slot being freed before it gets
  ``CAPACITY_REACHED``, so a client that closes and reconnects at once is not refused by itself;
- messages are read while a move runs, so a client that goes away is noticed at once: its queued
  messages are dropped, never run;
- a message that is not a JSON object, or whose ``data`` is not an object, gets an error and the
  session goes on; a validation error does not echo the input back;
- a session idle for ``idle_timeout`` seconds gets a ``SESSION_TIMEOUT`` error and is closed (1001);
  more than ``max_pending`` messages in flight get ``TOO_MANY_MESSAGES`` and a 1008 close;
- a connection that breaks mid-answer is closed quietly (no traceback in the log);
- a fault of the host (``sqlenv.executor.HostError``: a database that cannot be opened, no
  descriptors) gets a ``HOST_FAULT`` error naming the cause, never a reward; the session goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from openenv.core.env_server.types import (
    WSErrorCode,
    WSErrorResponse,
    WSObservationResponse,
    WSStateResponse,
)
from openenv.core.env_server.serialization import serialize_observation
from pydantic import ValidationError
from starlette.websockets import WebSocket

from sqlenv.executor import HostError

__all__ = ["SessionPool", "serve_websocket"]

log = logging.getLogger("sqlenv.integrations.openenv")


class PoolFull(Exception):
    """Every session slot is taken."""


class Session:
    """One env and the single thread that runs its calls (envs are used from one thread only)."""

    def __init__(self, env, executor: ThreadPoolExecutor):
        self.env, self.executor = env, executor

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in this session's thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, lambda: fn(*args, **kwargs)
        )

    def interrupt(self) -> None:
        """Stop the env's running query from the event loop, if the env can (never raises)."""
        try:
            getattr(self.env, "interrupt", lambda: None)()
        except Exception as exc:  # noqa: BLE001 - the session is ending anyway
            log.warning("interrupting a session's move failed: %s", exc)


#: Seconds a new session waits for a slot before ``CAPACITY_REACHED``: a client that closes its session
#: and reconnects at once can be faster than the server hearing of the close (uvicorn answers a close
#: frame before the app sees the disconnect), and would otherwise be refused by its own old session.
SLOT_WAIT = 2.0


class SessionPool:
    """At most ``limit`` live sessions; a slot is reserved before the env is built and freed after
    the env is closed, so the cap also bounds envs still finishing a move. A new session waits up to
    ``slot_wait`` seconds for a slot that is being freed before it is refused."""

    def __init__(self, factory: Callable[[], Any], limit: int, slot_wait: float = SLOT_WAIT):
        self.factory, self.limit, self.slot_wait, self.active = factory, limit, slot_wait, 0
        self._freed = asyncio.Condition()

    async def _reserve(self) -> None:
        """Take a slot, waiting up to ``slot_wait`` seconds for one; ``PoolFull`` after that."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.slot_wait
        async with self._freed:
            while self.active >= self.limit:
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    await asyncio.wait_for(self._freed.wait(), remaining)
                except asyncio.TimeoutError:
                    raise PoolFull(
                        f"Server at capacity ({self.active}/{self.limit} sessions); retry later"
                    ) from None
            self.active += 1

    async def _free_slot(self) -> None:
        self.active -= 1  # first, so a cancelled notify cannot leak the slot
        async with self._freed:
            self._freed.notify_all()  # each waiter checks again; one whose wait timed out loses nothing

    async def open(self) -> Session:
        await self._reserve()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlenv-session")
        try:
            env = await asyncio.get_running_loop().run_in_executor(executor, self.factory)
        except BaseException:
            executor.shutdown(wait=False)
            await self._free_slot()
            raise
        return Session(env, executor)

    async def close(self, session: Session) -> None:
        """Close the env in its thread (after the move in flight, if any), then free the slot."""
        try:
            await asyncio.shield(session.call(session.env.close))
        except Exception as exc:  # noqa: BLE001 - a failing close must still free the slot
            log.warning("closing a session's env failed: %s", exc)
        finally:
            session.executor.shutdown(wait=False)
            await self._free_slot()


def _error(code: str, message: str, **extra: Any) -> str:
    return WSErrorResponse(data={"message": message, "code": code, **extra}).model_dump_json()


def _validation_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return _error(
        WSErrorCode.VALIDATION_ERROR,
        "Invalid message: "
        + "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in errors),
        errors=errors,
    )


#: The error code of a move the server could not score for a fault of its own host.
HOST_FAULT = "HOST_FAULT"


async def answer(session: Session, raw: str | bytes, action_cls) -> str | None:
    """The reply to one message (``None`` for ``close``). Never raises for a bad message."""
    try:
        message = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(WSErrorCode.INVALID_JSON, f"Invalid JSON: {exc}")
    if not isinstance(message, dict):
        return _error(
            WSErrorCode.VALIDATION_ERROR,
            f"a message must be a JSON object with a 'type' field, got {type(message).__name__}",
        )
    kind, data = message.get("type"), message.get("data", {})
    if kind == "close":
        return None
    if kind not in ("reset", "step", "state"):
        return _error(WSErrorCode.UNKNOWN_TYPE, f"Unknown message type: {str(kind)[:100]}")
    if not isinstance(data, dict):
        return _error(
            WSErrorCode.VALIDATION_ERROR, f"'data' must be a JSON object, got {type(data).__name__}"
        )
    try:
        if kind == "reset":
            observation = await session.call(session.env.reset, **data)
            return WSObservationResponse(data=serialize_observation(observation)).model_dump_json()
        if kind == "step":
            action = action_cls.model_validate(data)
            observation = await session.call(session.env.step, action)
            return WSObservationResponse(data=serialize_observation(observation)).model_dump_json()
        return WSStateResponse(data=session.env.state.model_dump()).model_dump_json()
    except ValidationError as exc:
        return _validation_error(exc)
    except HostError as exc:  # the server's fault, never the move's: no reward, the session goes on
        return _error(HOST_FAULT, str(exc)[:2000])
    except Exception as exc:  # noqa: BLE001 - the session survives; the client gets why
        return _error(WSErrorCode.EXECUTION_ERROR, str(exc)[:2000])


class _Gone(Exception):
    """The client closed the connection (or it broke)."""


async def _send(websocket: WebSocket, text: str) -> None:
    try:
        await websocket.send_text(text)
    except Exception as exc:  # noqa: BLE001 - a send on a broken connection ends the session
        raise _Gone from exc


async def _close(websocket: WebSocket, code: int = 1000, reason: str = "") -> None:
    try:
        await websocket.close(code, reason)
    except Exception:  # noqa: BLE001 - already closed by the peer or by the server
        pass


async def serve_websocket(
    websocket: WebSocket,
    pool: SessionPool,
    action_cls,
    *,
    idle_timeout: float,
    max_pending: int = 8,
) -> None:
    """One OpenEnv session over ``websocket``: accept, take a slot, answer until it ends."""
    await websocket.accept()
    try:
        session = await pool.open()
    except PoolFull as exc:
        await _deliver_and_close(
            websocket,
            _error(
                WSErrorCode.CAPACITY_REACHED,
                str(exc),
                active_sessions=pool.active,
                max_sessions=pool.limit,
            ),
            1013,
        )
        return
    except Exception as exc:  # noqa: BLE001 - a failing env build is the server's fault; say so
        log.warning("building a session's env failed: %s", exc)
        await _deliver_and_close(
            websocket, _error(WSErrorCode.FACTORY_ERROR, f"cannot build the env: {exc}"), 1011
        )
        return
    try:
        code, reason = await _converse(websocket, session, action_cls, idle_timeout, max_pending)
    finally:  # the slot is free before the client can see the close, so it may reconnect at once
        await pool.close(session)
    await _close(websocket, code, reason)


async def _deliver_and_close(websocket: WebSocket, text: str, code: int) -> None:
    try:
        await _send(websocket, text)
    except _Gone:
        pass
    await _close(websocket, code)


async def _converse(websocket, session, action_cls, idle_timeout, max_pending) -> tuple[int, str]:
    """Read and answer concurrently; returns the close code and reason once either side ends."""
    inbox: asyncio.Queue = asyncio.Queue()
    busy = asyncio.Event()
    reader = asyncio.create_task(_read(websocket, inbox, busy, idle_timeout, max_pending))
    worker = asyncio.create_task(_work(websocket, session, action_cls, inbox, busy))
    try:
        done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the server shuts down: no task outlives the session
        if busy.is_set():  # a move is running for a session that is ending: stop its query
            log.warning("a session ended during a move; interrupted its query")
            session.interrupt()
        for task in (reader, worker):
            task.cancel()
        await asyncio.gather(reader, worker, return_exceptions=True)
    finished = next(iter(done))
    if finished.cancelled():
        return 1011, ""
    if finished.exception() is not None:
        if not isinstance(finished.exception(), _Gone):
            log.warning("a session ended on an unexpected error: %r", finished.exception())
        return 1011, ""
    outcome = finished.result()
    if outcome == "gone" and inbox.qsize():
        log.warning("a client went away with %d queued messages; dropped them", inbox.qsize())
    return outcome if isinstance(outcome, tuple) else (1000, "")


async def _read(websocket, inbox, busy, idle_timeout, max_pending):
    """Queue each message; returns ``"gone"`` on disconnect, or its own close (code, reason)."""
    while True:
        try:
            event = await asyncio.wait_for(websocket.receive(), idle_timeout)
        except asyncio.TimeoutError:
            if busy.is_set() or not inbox.empty():
                continue
            await _send(
                websocket, _error("SESSION_TIMEOUT", f"session idle for {idle_timeout:g} s; closed")
            )
            return 1001, "idle timeout"
        except Exception:  # noqa: BLE001 - the connection broke
            return "gone"
        if event["type"] == "websocket.disconnect":
            return "gone"
        if inbox.qsize() >= max_pending:
            await _send(
                websocket,
                _error("TOO_MANY_MESSAGES", f"more than {max_pending} messages in flight"),
            )
            return 1008, "too many messages in flight"
        inbox.put_nowait(
            event.get("text") if event.get("text") is not None else event.get("bytes", b"")
        )


async def _work(websocket, session, action_cls, inbox, busy):
    """Answer queued messages in order; returns ``"close"`` on a close message."""
    while True:
        raw = await inbox.get()
        busy.set()
        try:
            reply = await answer(session, raw, action_cls)
        finally:
            busy.clear()
        if reply is None:
            return "close"
        await _send(websocket, reply)
