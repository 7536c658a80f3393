"""Chat messages for sqlenv observations, shared by the verifiers and skyrl-gym adapters.

The single-step prompt is the TRL adapter's (:func:`sqlenv.integrations.trl.default_messages`: answer
in a ```sql block); the multi-turn prompt states ``TextToSQLAgent-v0``'s protocol. Neither imports
its stack.
"""

from __future__ import annotations

from sqlenv.integrations.trl import SYSTEM_PROMPT, default_messages

__all__ = ["AGENT_SYSTEM_PROMPT", "SYSTEM_PROMPT", "agent_messages", "latest_turn", "messages_for"]

AGENT_SYSTEM_PROMPT = (
    "You are an expert in SQLite. Answer a question about a database in up to {max_turns} moves. "
    "Each reply holds exactly one block: <sql>QUERY</sql> runs QUERY (read-only) and shows you its "
    "result, <answer>QUERY</answer> submits QUERY as your final answer and ends the episode."
)


def agent_messages(observation: dict[str, str], max_turns: int) -> list[dict[str, str]]:
    """System and user messages opening a ``TextToSQLAgent-v0`` episode."""
    user = default_messages(observation)[1]["content"]
    return [{"role": "system", "content": AGENT_SYSTEM_PROMPT.format(max_turns=max_turns)},
            {"role": "user", "content": user}]


def messages_for(observation: dict[str, str], max_turns: int | None) -> list[dict[str, str]]:
    """The opening messages: single-step when ``max_turns`` is None, else multi-turn."""
    return default_messages(observation, SYSTEM_PROMPT) if max_turns is None else agent_messages(observation, max_turns)


def latest_turn(info: dict) -> str:
    """The newest entry of an agent env's transcript, from that step's ``info``: the move (``Turn t/N``
    echoing it) and its result; whole even when the transcript is cut to ``transcript_chars``."""
    return info["result"]
