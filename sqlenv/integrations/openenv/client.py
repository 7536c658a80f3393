"""SQLEnvClient: OpenEnv's ``EnvClient`` for the sqlenv server (one WebSocket session each)."""

from __future__ import annotations

import os
from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sqlenv.integrations.openenv.models import SQLAction, SQLObservation, SQLState

__all__ = ["SQLEnvClient"]


class SQLEnvClient(EnvClient[SQLAction, SQLObservation, SQLState]):
    """``reset(seed=None, index=None)`` and ``step(SQLAction(sql=...))`` return
    ``StepResult[SQLObservation]``.

    Async by default (``async with SQLEnvClient(base_url=...)``); ``.sync()`` wraps it. A server
    error (a step after the episode ended, a full server, a malformed request) raises
    ``RuntimeError`` with the server's message and code. ``token`` (default: the ``SQLENV_TOKEN``
    environment variable) is sent as ``Authorization: Bearer <token>``; a server that refuses it
    raises ``ConnectionError`` naming the 401. Other keywords are ``EnvClient``'s.
    """

    def __init__(self, base_url: str, *, token: str | None = None, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self._token = token if token is not None else os.environ.get("SQLENV_TOKEN") or None

    async def connect(self) -> "SQLEnvClient":
        """Open the WebSocket session, sending the token if there is one."""
        if self._ws is not None:
            return self
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        local = any(
            host in self._ws_url.lower() for host in ("://localhost", "://127.0.0.1", "://[::1]")
        )
        try:
            self._ws = await ws_connect(
                self._ws_url,
                open_timeout=self._connect_timeout,
                max_size=self._max_message_size,
                additional_headers=headers,
                proxy=None if local else True,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            why = (
                " (missing or wrong token: pass token= or set SQLENV_TOKEN)"
                if status == 401
                else ""
            )
            raise ConnectionError(
                f"{self._ws_url} refused the session: HTTP {status}{why}"
            ) from exc
        except Exception as exc:
            raise ConnectionError(f"Failed to connect to {self._ws_url}: {exc}") from exc
        return self

    async def _send_and_receive(self, message: dict[str, Any]) -> dict[str, Any]:
        """OpenEnv's exchange, plus the server's last word when it closed first: a full server
        sends its CAPACITY_REACHED error and closes at once, and a send racing that close would
        otherwise surface as a bare "connection closed" instead of the server's error."""
        try:
            return await super()._send_and_receive(message)
        except ConnectionClosed as closed:
            try:
                pending = await self._receive()  # a message the server sent before closing, if any
            except Exception:
                pending = None
            data = (
                pending.get("data", {})
                if isinstance(pending, dict) and pending.get("type") == "error"
                else {}
            )
            if data:
                raise RuntimeError(
                    f"Server error: {data.get('message', 'Unknown error')} "
                    f"(code: {data.get('code', 'UNKNOWN')})"
                ) from closed
            raise RuntimeError(f"the server closed the connection ({closed})") from closed

    def _step_payload(self, action: SQLAction) -> dict[str, Any]:
        return action.model_dump(exclude={"metadata"})

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[SQLObservation]:
        observation = SQLObservation(
            **payload.get("observation", {}),
            reward=payload.get("reward"),
            done=payload.get("done", False),
        )
        return StepResult(
            observation=observation, reward=payload.get("reward"), done=payload.get("done", False)
        )

    def _parse_state(self, payload: dict[str, Any]) -> SQLState:
        return SQLState(**payload)
