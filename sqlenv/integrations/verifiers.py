"""verifiers adapter (``verifiers`` 0.4.0, ``verifiers.v1``): sqlenv questions as a taskset, our reward as its rubric.

``pip install 'sqlenv[verifiers]'``. In verifiers an environment is a taskset (data: one ``Task`` per
question) played by an agent seat (harness x model); the task's ``@vf.reward`` methods are the rubric.

| verifiers | sqlenv |
| --- | --- |
| ``SQLTaskset`` (``SQLTasksetConfig``: ``env``, ``limit``, the env's arguments) | the questions |
| ``SQLTask.data.prompt`` | the reset observation as the stacks' default chat messages (``sqlenv.prompts``) |
| ``@vf.reward sqlenv`` (weight 1) | the return of the rollout's Gymnasium env |
| ``@vf.metric executed``, ``correct``, ``f1`` (logged, not rewarded) | the final step's ``info`` |
| ``@vf.stop`` | ``terminated or truncated``: one reply (single-step), or an ``<answer>`` / ``max_turns`` replies |
| ``SQLAgentEnv`` (``SQLAgentEnvConfig``) | the episode loop: each reply is a move, its result the next user turn |
| ``SQLChatHarness`` (id ``sqlenv-verifiers``) | verifiers' ``null`` chat program in this Python (no ``uv``, no tools) |

``vf-eval sqlenv-verifiers`` runs the real evaluation: the top-level package ``sqlenv_verifiers``
exports these three classes, which is how verifiers finds a taskset, its env and its default harness.

Each rollout plays its replies through one Gymnasium env pinned to the task's question, kept in
:data:`EPISODES` under the trace's id: every reply is stepped exactly once (the stop hook, the agent
loop and the rubric share the env), so the score is exactly the Gymnasium env's (same executor,
matchers and presets) and a move near a time budget is never re-run. The env is closed when the
episode ends or the trace is scored; at most ``EPISODES.limit`` live at once (the oldest is closed;
a rollout whose env was closed early, or that is scored in another process, is replayed from its
trace). A single-step reply becomes SQL
through :func:`sqlenv.completion.extract_sql`, the extractor every path uses.

``SQLTasksetConfig`` fields (``--env.taskset.<field>`` on the ``vf-eval`` command line): ``env``,
``limit`` and the env's arguments ``dataset``, ``split``, ``data_dir``, ``reward``, ``schema``,
``sample_rows``, ``timeout``, ``max_rows``, ``max_instructions``; for ``TextToSQLAgent-v0`` also
``max_turns``, ``result_rows``, ``result_chars``, ``transcript_chars``, ``explore_timeout``,
``explore_max_instructions``, ``explore_seconds``, ``turn_cost``, ``exploration_error_penalty``, ``filter_hints``
(``None``: the env's default). ``task.env_kwargs`` passes any other keyword.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import gymnasium as gym

import sqlenv
from sqlenv.completion import extract_sql
from sqlenv.prompts import latest_turn, messages_for

try:
    import verifiers.v1 as vf
    from verifiers.v1.harnesses.null import NullHarness
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("sqlenv.integrations.verifiers needs verifiers: pip install 'sqlenv[verifiers]'") from exc

__all__ = ["EPISODES", "SQLAgentEnv", "SQLAgentEnvConfig", "SQLChatHarness", "SQLTask",
           "SQLTaskConfig", "SQLTaskData", "SQLTaskset", "SQLTasksetConfig", "env_kwargs", "play",
           "replay"]

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


class _Episode:
    """One rollout's env, stepped once per reply: ``play(replies)`` plays only the new ones."""

    def __init__(self, config: SQLTaskConfig, index: int):
        self.single = config.env == sqlenv.ENV_ID
        self.env = _make(config)
        self.env.reset(options={"index": index})
        self.replies: list[str] = []
        self.reward, self.info, self.done = 0.0, {}, False

    def follows(self, replies: list[str]) -> bool:
        """Whether ``replies`` continue the replies played so far (same trace, later turn)."""
        return replies[: len(self.replies)] == self.replies

    def play(self, replies: list[str], final: bool = False) -> None:
        """Step the env with each reply not played yet, until the episode ends. ``final``: a
        single-step episode without a reply is scored as an empty query."""
        for reply in replies[len(self.replies):]:
            if self.done:
                break
            self._step(extract_sql(reply) if self.single else reply)
            self.replies.append(reply)
        if final and self.single and not self.done:
            self._step("")

    def _step(self, action: str) -> None:
        _, reward, terminated, truncated, info = self.env.step(action)
        self.reward += float(reward)
        self.info = info
        self.done = bool(self.single or terminated or truncated)

    def close(self) -> None:
        self.env.close()


class _Episodes:
    """Live episodes keyed by trace id, at most ``limit`` (the oldest is closed first)."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._live: OrderedDict[str, _Episode] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, config: SQLTaskConfig, index: int, replies: list[str]) -> _Episode:
        """The trace's episode, new when there is none or it does not lead to ``replies``."""
        with self._lock:
            episode = self._live.pop(key, None)
        if episode is not None and not episode.follows(replies):
            episode.close()
            episode = None
        episode = episode or _Episode(config, index)
        with self._lock:
            self._live[key] = episode
            extra = len(self._live) - self.limit
            evicted = [self._live.popitem(last=False)[1] for _ in range(extra)]
        for old in evicted:
            old.close()
        return episode

    def end(self, key: str) -> None:
        """Close and forget the trace's episode (it ended, or its trace was scored)."""
        with self._lock:
            episode = self._live.pop(key, None)
        if episode is not None:
            episode.close()

    def __len__(self) -> int:
        return len(self._live)


#: Every rollout's live episode in this process.
EPISODES = _Episodes()


def replay(config: SQLTaskConfig, index: int, replies: Iterable[str]) -> tuple[float, dict[str, Any], bool]:
    """Play ``replies`` through a fresh env on question ``index``: ``(total reward, last info, done)``.

    Single-step: the SQL extracted from the first reply is the action (no reply: an empty query).
    Agent: each reply is a move until the episode ends; replies after the end are ignored.
    """
    episode = _Episode(config, index)
    try:
        episode.play(list(replies), final=True)
        return episode.reward, episode.info, episode.done
    finally:
        episode.close()


class SQLTask(vf.Task[SQLTaskData, vf.State, SQLTaskConfig]):
    """One question; the rubric is the env's reward (weight 1) plus unweighted metrics.

    The rollout's env lives in :data:`EPISODES` under the trace's id: each new reply is stepped
    once (the stop hook, the agent loop and the rubric share it), and the env is closed when the
    episode ends or the trace is scored.
    """

    @property
    def key(self) -> str:
        return f"sqlenv:{self.config.env}:{self.data.id}"

    def _replies(self, trace: vf.Trace) -> list[str]:
        return [message.content or "" for message in trace.assistant_messages]

    def _scored(self, trace: vf.Trace, final: bool = False) -> tuple[float, dict[str, Any], bool]:
        cached = trace.info.get("sqlenv")
        replies = self._replies(trace)
        fresh = (cached is not None and cached["replies"] == replies
                 and (cached["final"] or not final))
        ended = cached is not None and cached["done"]  # replies after the end are ignored
        if not fresh and not ended:
            episode = EPISODES.get(trace.id, self.config, self.data.index, replies)
            episode.play(replies, final)
            cached = {"replies": replies, "reward": episode.reward, "info": episode.info,
                      "done": episode.done, "final": final or episode.done}
            trace.info["sqlenv"] = cached
            if episode.done or final:
                EPISODES.end(trace.id)
        return cached["reward"], cached["info"], cached["done"]

    @vf.stop
    async def episode_over(self, trace: vf.Trace) -> bool:
        if not trace.assistant_messages:
            return False
        return self.config.env == sqlenv.ENV_ID or self._scored(trace)[2]

    @vf.reward(weight=1.0)
    async def sqlenv(self, trace: vf.Trace) -> float:
        return self._scored(trace, final=True)[0]

    @vf.metric
    async def executed(self, trace: vf.Trace) -> float:
        return float(bool(self._scored(trace, final=True)[1].get("executed", False)))

    @vf.metric
    async def correct(self, trace: vf.Trace) -> float:
        return float(bool(self._scored(trace, final=True)[1].get("correct", False)))

    @vf.metric
    async def f1(self, trace: vf.Trace) -> float:
        return float(self._scored(trace, final=True)[1].get("f1", 0.0))


# The env's ``schema`` argument shadows pydantic's deprecated ``BaseModel.schema()`` (harmless).
warnings.filterwarnings("ignore", message='Field name "schema" in "SQLTasksetConfig"',
                        category=UserWarning)


class SQLTasksetConfig(vf.TasksetConfig):
    """Which env and questions: ``env`` is ``TextToSQL-v0`` or ``TextToSQLAgent-v0``; the other
    fields are the env's arguments (``None``: the env's default)."""

    env: str = sqlenv.ENV_ID
    dataset: str = "generated"
    split: str | None = None
    data_dir: str | None = None
    reward: str = "binary"
    schema: str = "tables"
    """``"tables"`` (the benchmark's tables) or ``"flat"`` (one denormalised table)."""
    sample_rows: int = 3
    column_values: int = 0
    """Most frequent text values listed per column under each table (0: none)."""
    timeout: float | None = None
    """Each query's wall-clock budget in seconds."""
    max_rows: int | None = None
    max_instructions: int | None = None
    """Each query's budget in SQLite VM instructions (rewards independent of the machine)."""
    literal_answers: str | None = None
    """``"unanswered"``: an answer that reads no table (``SELECT '16'``) scores as no answer."""
    max_turns: int = 5
    """Moves per episode (``TextToSQLAgent-v0`` only, as are the fields below)."""
    result_rows: int | None = None
    result_chars: int | None = None
    transcript_chars: int | None = None
    explore_timeout: float | None = None
    explore_max_instructions: int | None = None
    explore_seconds: float | None = None
    turn_cost: float | None = None
    exploration_error_penalty: float | None = None
    filter_hints: bool | None = None
    """An empty, 0 or NULL exploration result also names the filter values that match no row."""
    limit: int | None = None
    """The first ``limit`` questions (default: all)."""
    task: SQLTaskConfig = SQLTaskConfig()


#: Taskset fields passed to both envs / to ``TextToSQLAgent-v0`` only (``None`` values left out).
_ENV_FIELDS = ("dataset", "split", "data_dir", "reward", "schema", "sample_rows", "column_values", "timeout",
               "max_rows", "max_instructions", "literal_answers")
_AGENT_FIELDS = ("max_turns", "result_rows", "result_chars", "transcript_chars", "explore_timeout",
                 "explore_max_instructions", "explore_seconds", "turn_cost",
                 "exploration_error_penalty", "filter_hints")


def env_kwargs(config: SQLTasksetConfig) -> dict[str, Any]:
    """The env constructor keywords a taskset config sets (``task.env_kwargs`` on top)."""
    names = _ENV_FIELDS + (_AGENT_FIELDS if config.env == sqlenv.AGENT_ENV_ID else ())
    kwargs = {name: getattr(config, name) for name in names}
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k in ("split", "data_dir")}
    return {**kwargs, **config.task.env_kwargs}


class SQLTaskset(vf.Taskset[SQLTask, SQLTasksetConfig]):
    """One ``SQLTask`` per question of the configured sqlenv dataset."""

    def load(self) -> Iterable[SQLTask]:
        c = self.config
        task_config = c.task.model_copy(update={"env": c.env, "env_kwargs": env_kwargs(c)})
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
        async with agents.agent.interaction(task) as interaction:
            segment = await interaction.turn(None)
            while not segment.terminated:
                _, info, done = task._scored(interaction.trace)  # the rollout's env, each move once
                if done or task.config.env == sqlenv.ENV_ID:
                    break
                segment = await interaction.turn(latest_turn(info))


def play(taskset: SQLTaskset, policy, limit: int | None = None) -> list[dict[str, Any]]:
    """Evaluate a local policy (``policy(messages) -> reply``) on ``taskset`` with verifiers' own scoring.

    Builds each task's ``vf.Trace`` from the policy's replies (the agent loop for ``TextToSQLAgent-v0``)
    and runs ``Task.score`` on it: the rubric a ``vf eval`` run applies, without a model server.
    Returns per task ``{"index", "id", "reward", "rewards", "metrics", "info"}`` (``info``: the
    env's ``info`` of the episode's last step).
    """
    import asyncio

    return asyncio.run(_play(taskset, policy, limit))


async def _play(taskset: SQLTaskset, policy, limit: int | None) -> list[dict[str, Any]]:
    from verifiers.v1.graph import MessageNode
    from verifiers.v1.trace import AgentInfo, TraceTask

    tasks = list(taskset.take(limit) if limit is not None else taskset)
    out = []
    for task in tasks:
        messages = [{"role": "system", "content": task.data.system_prompt},
                    {"role": "user", "content": task.data.prompt}]
        trace = vf.Trace(task=TraceTask(type=type(task).__name__, data=task.data),
                         agent=AgentInfo(config=vf.AgentConfig()))
        nodes: list[MessageNode] = []

        def add(message, sampled=False):
            nodes.append(MessageNode(id=len(nodes), parent=len(nodes) - 1 if nodes else None,
                                     message=message, sampled=sampled))

        add(vf.SystemMessage(content=messages[0]["content"]))
        add(vf.UserMessage(content=messages[1]["content"]))
        while True:
            reply = policy(messages)
            messages.append({"role": "assistant", "content": reply})
            add(vf.AssistantMessage(content=reply), sampled=True)
            trace.nodes = list(nodes)
            if await task.episode_over(trace):
                break
            feedback = latest_turn(task._scored(trace)[1])
            messages.append({"role": "user", "content": feedback})
            add(vf.UserMessage(content=feedback))
        trace.nodes = list(nodes)
        await task.score(trace)
        rewards = {k: v.score for k, v in trace.rewards.items() if v is not None}
        out.append({"index": task.data.index, "id": task.data.id, "reward": sum(
            v.score * v.weight for v in trace.rewards.values() if v is not None),
            "rewards": rewards, "metrics": dict(trace.metrics),
            "info": trace.info["sqlenv"]["info"]})
    return out
