"""SQLEnvClient: OpenEnv's ``EnvClient`` for the sqlenv server (one WebSocket session per client)."""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient

from sqlenv.integrations.openenv.models import SQLAction, SQLObservation, SQLState

__all__ = ["SQLEnvClient"]


class SQLEnvClient(EnvClient[SQLAction, SQLObservation, SQLState]):
    """``reset(seed=None, index=None)`` and ``step(SQLAction(sql=...))`` return ``StepResult[SQLObservation]``.

    Async by default (``async with SQLEnvClient(base_url=...)``); ``.sync()`` wraps it. A server error
    (a step after the episode ended, a full server, a malformed request) raises ``RuntimeError``
    with the server's message and code.
    """

    def _step_payload(self, action: SQLAction) -> dict[str, Any]:
        return action.model_dump(exclude={"metadata"})

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[SQLObservation]:
        observation = SQLObservation(**payload.get("observation", {}), reward=payload.get("reward"),
                                     done=payload.get("done", False))
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> SQLState:
        return SQLState(**payload)
