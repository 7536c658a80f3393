"""OpenEnv wire types for sqlenv: one action field, the Gymnasium observation plus the step's info."""

from __future__ import annotations

from typing import Any

from pydantic import Field

try:
    from openenv.core.env_server.types import Action, Observation, State
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("sqlenv.integrations.openenv needs OpenEnv: pip install 'sqlenv[openenv]'") from exc

__all__ = ["SQLAction", "SQLObservation", "SQLState"]


class SQLAction(Action):
    """The env's action string: one SQL query (``TextToSQL-v0``) or one ``<sql>``/``<answer>`` move."""

    sql: str = Field(description="the query (TextToSQL-v0) or the move text (TextToSQLAgent-v0)")


class SQLObservation(Observation):
    """The Gymnasium observation's fields, and the ``info`` of the reset or step that produced it.

    ``reward`` and ``done`` (``terminated or truncated``) are OpenEnv's own fields; ``truncated``
    tells the two endings apart.
    """

    question: str = ""
    schema_text: str = Field("", description="the database's CREATE TABLE statements ('schema')")
    sample_rows: str = ""
    transcript: str = Field("", description="earlier moves and their results (TextToSQLAgent-v0)")
    truncated: bool = False
    info: dict[str, Any] = Field(default_factory=dict)


class SQLState(State):
    """``episode_id`` and ``step_count`` (OpenEnv's), plus the env id and the question's index and id."""

    env_id: str = ""
    index: int | None = None
    question_id: str | None = None
    done: bool = False
