"""verifiers adapter (``verifiers`` 0.4.0, ``verifiers.v1``): sqlenv questions as a taskset, our reward as its rubric.

``pip install 'sqlenv[verifiers]'``. In verifiers an environment is a taskset (data: one ``Task`` per
question) played by an agent seat (harness x model); the task's ``@vf.reward`` methods are the rubric.

| verifiers | sqlenv |
| --- | --- |
| ``SQLTaskset`` (``SQLTasksetConfig``: ``env``, ``dataset``, ``split``, ``data_dir``, ``reward``, ``max_turns``, ``limit``) | the questions of ``TextToSQL-v0`` / ``TextToSQLAgent-v0`` |
| ``SQLTask.data.prompt`` | the reset observation as chat messages (schema, sample rows, question) |
| ``@vf.reward sqlenv`` (weight 1) | the env's reward: the episode replayed through the Gymnasium env |
| ``@vf.metric executed``, ``correct``, ``f1`` (logged, not rewarded) | the final step's ``info`` |
| ``@vf.stop`` | ``terminated or truncated``: one reply (single-step), or an ``<answer>`` / ``max_turns`` replies |
| ``SQLAgentEnv`` (``SQLAgentEnvConfig``) | the episode loop: each reply is a move, its result the next user turn |
| ``SQLChatHarness`` (id ``sqlenv-verifiers``) | verifiers' ``null`` chat program run by this Python (no ``uv``, no tools) |

``vf-eval sqlenv-verifiers`` runs the real evaluation: the top-level package ``sqlenv_verifiers``
exports these three classes, which is how verifiers finds a taskset, its env and its default harness.

The reward replays the trace's assistant replies through a fresh env pinned to the task's question, so
the score is exactly the Gymnasium env's (same executor, matchers and presets) and needs no state
carried between processes.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from typing import Any

import gymnasium as gym

import sqlenv
from sqlenv.integrations._chat import latest_turn, messages_for
from sqlenv.integrations.trl import extract_sql

try:
    import verifiers.v1 as vf
    from verifiers.v1.harnesses.null import NullHarness
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("sqlenv.integrations.verifiers needs verifiers: pip install 'sqlenv[verifiers]'") from exc

__all__ = ["SQLAgentEnv", "SQLAgentEnvConfig", "SQLChatHarness", "SQLTask", "SQLTaskConfig", "SQLTaskData",
           "SQLTaskset", "SQLTasksetConfig", "play", "replay"]

_ENVS = (sqlenv.ENV_ID, sqlenv.AGENT_ENV_ID)


class SQLTaskConfig(vf.TaskConfig):
    """How a reply is scored: the Gymnasium env id and its constructor keywords."""

    env: str = sqlenv.ENV_ID
    env_kwargs: dict[str, Any] = {}


class SQLTaskData(vf.TaskData):
    index: int
    """The question's index in the sqlenv dataset (the env's ``options={"index": i}``)."""


def _make(config: SQLTaskConfig):
    if config.env not in _ENVS:
        raise ValueError(f"env={config.env!r} must be one of {list(_ENVS)}")
    return gym.make(config.env, **config.env_kwargs).unwrapped


def replay(config: SQLTaskConfig, index: int, replies: Iterable[str]) -> tuple[float, dict[str, Any], bool]:
    """Play ``replies`` through a fresh env on question ``index``: ``(total reward, last info, done)``.

    Single-step: the SQL extracted from the first reply is the action (no reply: an empty query).
    Agent: each reply is a move until the episode ends; replies after the end are ignored.
    """
    env = _make(config)
    try:
        env.reset(options={"index": index})
        moves = list(replies)
        if config.env == sqlenv.ENV_ID:
            _, reward, _, _, info = env.step(extract_sql(moves[0]) if moves else "")
            return float(reward), info, True
        total, info, done = 0.0, {}, False
        for move in moves:
            _, reward, terminated, truncated, info = env.step(move)
            total += float(reward)
            if terminated or truncated:
                done = True
                break
        return total, info, done
    finally:
        env.close()


class SQLTask(vf.Task[SQLTaskData, vf.State, SQLTaskConfig]):
    """One question; the rubric is the env's reward (weight 1) plus unweighted metrics."""

    @property
    def key(self) -> str:
        return f"sqlenv:{self.config.env}:{self.data.id}"

    def _replies(self, trace: vf.Trace) -> list[str]:
        return [message.content or "" for message in trace.assistant_messages]

    def _scored(self, trace: vf.Trace) -> tuple[float, dict[str, Any], bool]:
        cached = trace.info.get("sqlenv")
        replies = self._replies(trace)
        if cached is None or cached["replies"] != replies:
            reward, info, done = replay(self.config, self.data.index, replies)
            cached = {"replies": replies, "reward": reward, "info": info, "done": done}
            trace.info["sqlenv"] = cached
        return cached["reward"], cached["info"], cached["done"]

    @vf.stop
    async def episode_over(self, trace: vf.Trace) -> bool:
        if not trace.assistant_messages:
            return False
        return self.config.env == sqlenv.ENV_ID or self._scored(trace)[2]

    @vf.reward(weight=1.0)
    async def sqlenv(self, trace: vf.Trace) -> float:
        return self._scored(trace)[0]

    @vf.metric
    async def executed(self, trace: vf.Trace) -> float:
        return float(bool(self._scored(trace)[1].get("executed", False)))

    @vf.metric
    async def correct(self, trace: vf.Trace) -> float:
        return float(bool(self._scored(trace)[1].get("correct", False)))

    @vf.metric
    async def f1(self, trace: vf.Trace) -> float:
        return float(self._scored(trace)[1].get("f1", 0.0))


class SQLTasksetConfig(vf.TasksetConfig):
    """Which env and questions: ``env`` is ``TextToSQL-v0`` or ``TextToSQLAgent-v0``."""

    env: str = sqlenv.ENV_ID
    dataset: str = "generated"
    split: str | None = None
    data_dir: str | None = None
    reward: str = "binary"
    max_turns: int = 5
    """Moves per episode (``TextToSQLAgent-v0`` only)."""
    sample_rows: int = 3
    limit: int | None = None
    """The first ``limit`` questions (default: all)."""
    task: SQLTaskConfig = SQLTaskConfig()


class SQLTaskset(vf.Taskset[SQLTask, SQLTasksetConfig]):
    """One ``SQLTask`` per question of the configured sqlenv dataset."""

    def load(self) -> Iterable[SQLTask]:
        c = self.config
        kwargs = {"dataset": c.dataset, "split": c.split, "data_dir": c.data_dir, "reward": c.reward,
                  "sample_rows": c.sample_rows}
        if c.env == sqlenv.AGENT_ENV_ID:
            kwargs["max_turns"] = c.max_turns
        task_config = c.task.model_copy(update={"env": c.env, "env_kwargs": {**kwargs, **c.task.env_kwargs}})
        env = _make(task_config)
        try:
            n = len(env.dataset) if c.limit is None else min(c.limit, len(env.dataset))
            multi = c.env == sqlenv.AGENT_ENV_ID
            for i in range(n):
                example = env.dataset[i]
                messages = messages_for(env.observation_for(i), c.max_turns if multi else None)
                yield SQLTask(SQLTaskData(index=i, id=example.id, name=example.question_type,
                                          system_prompt=messages[0]["content"], prompt=messages[1]["content"]),
                              task_config)
        finally:
            env.close()


class _ThisPython:
    """A runtime whose PEP 723 scripts run with this interpreter: no ``uv`` environment, no download."""

    def __init__(self, runtime: vf.Runtime) -> None:
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    async def prepare_uv_script(self, script: str | bytes, env: dict[str, str] | None = None, *,
                                activate: bool = True) -> list[str]:
        data = script.encode() if isinstance(script, str) else script
        path = f".vf-chat-{hashlib.sha256(data).hexdigest()[:16]}.py"
        await self._runtime.write(path, data)
        return [sys.executable, path]


class SQLChatHarness(NullHarness):
    """verifiers' ``null`` chat harness (one plain reply per turn, no tools), run by this Python.

    The ``null`` harness installs its program's dependencies with ``uv`` at run time; they are
    verifiers' own dependencies, so this one runs the same program with ``sys.executable``. Needs the
    ``subprocess`` runtime (the program runs on this host), which ``SQLAgentEnvConfig`` defaults to.
    """

    async def setup(self, runtime: vf.Runtime) -> None:
        if not isinstance(runtime.config, vf.SubprocessConfig):
            raise ValueError(f"runtime.type={runtime.config.type!r}: harness {self.config.id!r} runs "
                             "its chat program with this host's Python; use runtime.type='subprocess'")

    async def launch(self, ctx, trace, runtime, endpoint, secret, mcp_urls, data, tool_interception_url=None):
        return await super().launch(ctx, trace, _ThisPython(runtime), endpoint, secret, mcp_urls, data,
                                    tool_interception_url)


class SQLAgentEnvConfig(vf.SingleAgentEnvConfig):
    """The one ``agent`` seat, on the ``subprocess`` runtime by default (``SQLChatHarness`` needs it)."""

    agent: vf.AgentConfig = vf.AgentConfig(runtime=vf.SubprocessConfig())


class SQLAgentEnv(vf.Env[SQLAgentEnvConfig]):
    """sqlenv's episode loop in verifiers: the env scripts the user side of the conversation.

    The task's prompt opens the interaction; each model reply is played through the task's Gymnasium
    env, and while the episode runs the move's result (the newest transcript entry) is the next user
    turn. ``TextToSQL-v0`` ends after one reply; ``TextToSQLAgent-v0`` at an ``<answer>`` or after
    ``max_turns`` replies.
    """

    async def run(self, task: SQLTask, agents: vf.Agents) -> None:
        env = _make(task.config)
        try:
            env.reset(options={"index": task.data.index})
            async with agents.agent.interaction(task) as interaction:
                segment = await interaction.turn(None)
                while not segment.terminated:
                    observation, _, terminated, truncated, info = env.step(segment.last_reply)
                    if terminated or truncated:
                        break
                    segment = await interaction.turn(latest_turn(info))
        finally:
            env.close()


def play(taskset: SQLTaskset, policy, limit: int | None = None) -> list[dict[str, Any]]:
    """Evaluate a local policy (``policy(messages) -> reply``) on ``taskset`` with verifiers' own scoring.

    Builds each task's ``vf.Trace`` from the policy's replies (the agent loop for ``TextToSQLAgent-v0``)
    and runs ``Task.score`` on it: the rubric a ``vf eval`` run applies, without a model server.
    Returns per task ``{"index", "id", "reward", "rewards", "metrics"}``.
    """
    import asyncio

    return asyncio.run(_play(taskset, policy, limit))


async def _play(taskset: SQLTaskset, policy, limit: int | None) -> list[dict[str, Any]]:
    from verifiers.v1.graph import MessageNode
    from verifiers.v1.trace import AgentInfo, TraceTask

    tasks = list(taskset.take(limit) if limit is not None else taskset)
    out = []
    for task in tasks:
        messages = [{"role": "system", "content": task.data.system_prompt}, {"role": "user", "content": task.data.prompt}]
        trace = vf.Trace(task=TraceTask(type=type(task).__name__, data=task.data),
                         agent=AgentInfo(config=vf.AgentConfig()))
        nodes: list[MessageNode] = []

        def add(message, sampled=False):
            nodes.append(MessageNode(id=len(nodes), parent=len(nodes) - 1 if nodes else None,
                                     message=message, sampled=sampled))

        add(vf.SystemMessage(content=messages[0]["content"]))
        add(vf.UserMessage(content=messages[1]["content"]))
        env = _make(task.config)
        try:
            env.reset(options={"index": task.data.index})
            while True:
                reply = policy(messages)
                messages.append({"role": "assistant", "content": reply})
                add(vf.AssistantMessage(content=reply), sampled=True)
                trace.nodes = list(nodes)
                if await task.episode_over(trace):
                    break
                observation, _, _, _, info = env.step(reply)
                feedback = latest_turn(info)
                messages.append({"role": "user", "content": feedback})
                add(vf.UserMessage(content=feedback))
        finally:
            env.close()
        trace.nodes = list(nodes)
        await task.score(trace)
        rewards = {k: v.score for k, v in trace.rewards.items() if v is not None}
        out.append({"index": task.data.index, "id": task.data.id, "reward": sum(
            v.score * v.weight for v in trace.rewards.values() if v is not None),
            "rewards": rewards, "metrics": dict(trace.metrics)})
    return out
