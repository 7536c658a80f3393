"""sqlenv as a TRL ``GRPOTrainer(environment_factory=...)`` environment: SQL tools, scored by our presets.

TRL's contract (trl >= 1.x, transformers >= 5.2): ``environment_factory`` is a zero-argument callable
returning an object with ``reset(**row)``; TRL makes one instance per rollout, calls ``reset`` with the
dataset row's columns and appends the string it returns to the last user message; every other public
method of the class becomes a tool (its name, type hints and Google-style docstring are the schema
the chat template shows the model). Reward functions get the instances as ``environments=``::

    from trl import GRPOConfig, GRPOTrainer
    from sqlenv.integrations.trl_env import SQLEnvironmentFactory, SQLEnvReward, ensure_tool_chat_template

    factory = SQLEnvironmentFactory("generated", split="train", multi_turn=True, reward="binary")
    trainer = GRPOTrainer(model=model, processing_class=ensure_tool_chat_template(tokenizer),
                          reward_funcs=SQLEnvReward(), train_dataset=factory.train_dataset(),
                          environment_factory=factory, args=GRPOConfig(...))

What maps to what:

* :class:`TextToSQLAgentTools` wraps one :class:`~sqlenv.agent_env.TextToSQLAgentEnv`
  (``TextToSQLAgent-v0``): ``reset(index=i)`` is ``env.reset(options={"index": i})``; the tool
  ``run_sql(query)`` is the move ``<sql>query</sql>`` and returns that move's transcript entry (the
  result table or the error, cut to ``result_chars``, after the move's query unless ``echo_moves=False``;
  the episode's turn and exploration-time budgets apply); ``submit_answer(query)`` is the move
  ``<answer>query</answer>``, scored by the env's preset.
* :class:`TextToSQLTools` wraps one :class:`~sqlenv.env.TextToSQLEnv` (``TextToSQL-v0``): the
  only tool is ``submit_answer(query)``, the env's one step.
* :class:`SQLEnvReward` (for ``reward_funcs``) reads each instance's ``reward``: the episode's return,
  or, when no answer was submitted, the preset's execution-error reward (what ``TextToSQLAgent-v0``
  gives when the turns run out). The classes define no ``get_reward``, so the reward is counted once.
* :func:`accept_json_tool_calls` (optional, before ``GRPOTrainer``) sets the tokenizer's
  ``response_template`` to TRL's Qwen ``<tool_call>`` parser plus a fenced or bare one-line JSON call
  naming a tool, the forms Qwen2.5-Coder-0.5B writes; ``GRPOTrainer`` keeps a template already set.
* :func:`end_tool_loop_at_episode_end` (optional, before ``GRPOTrainer``) stops TRL's tool loop for a
  rollout whose episode is over, instead of a generation round for each call after the answer.

The adapter keeps no SQL, budget or scoring logic: it formats the env's observation as the user turn
(:func:`sqlenv.prompts.user_message`, the other stacks' user turn; the system prompts are
``sqlenv.prompts.TOOLS_AGENT_SYSTEM_PROMPT`` and ``TOOLS_ANSWER_SYSTEM_PROMPT``) and turns tool calls
into env steps. A tool's ``query`` goes through :func:`sqlenv.completion.extract_sql`, the extractor
of every other path (a query in which it finds no SQL is run as written). Tool calls never raise: bad
SQL comes back as error text.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import Any, Callable, Sequence

from sqlenv.agent_env import MOVE_HINT, NO_ANSWER, SUBMIT_HINT, TextToSQLAgentEnv
from sqlenv.completion import extract_sql
from sqlenv.datasets import Dataset
from sqlenv.env import TextToSQLEnv
from sqlenv.executor import ExecutionResult
from sqlenv.prompts import TOOLS_AGENT_SYSTEM_PROMPT as AGENT_SYSTEM_PROMPT
from sqlenv.prompts import TOOLS_ANSWER_SYSTEM_PROMPT as ANSWER_SYSTEM_PROMPT
from sqlenv.prompts import user_message
from sqlenv.rewards import reward as compute_reward

__all__ = [
    "AGENT_SYSTEM_PROMPT",
    "ANSWER_SYSTEM_PROMPT",
    "EVAL_ENVIRONMENT",
    "SQLEnvReward",
    "SQLEnvironmentFactory",
    "TextToSQLAgentTools",
    "TextToSQLTools",
    "accept_json_tool_calls",
    "end_tool_loop_at_episode_end",
    "ends_episode",
    "ensure_tool_chat_template",
    "environment_tools",
    "first_turn_messages",
    "json_tool_call_template",
    "no_answer_reason",
    "to_trl_env_dataset",
    "tool_transcript",
]

#: What ``submit_answer`` returns in single-step mode (the agent env's own text for its answer move).
SUBMITTED = "Answer submitted."
ENDED = "The episode has ended: an answer was already submitted or the turns ran out. Stop here."
#: What ``run_sql`` adds to its last turn's result: the turns ran out without an answer.
NO_TURNS_LEFT = "No turns left: the episode ended without an answer."
#: What a multi-turn tool returns for a blank ``query`` (no turn used).
EMPTY_QUERY = "Error: query is empty; pass one SQLite SELECT statement."
#: The env's hints in its text protocol's tags, as the tools say them (a reply never tells a tool user to
#: write ``<answer>`` tags).
TOOL_HINTS = {MOVE_HINT: "Call run_sql (explore) or submit_answer (submit) with one SQLite query.",
              SUBMIT_HINT: "Call submit_answer."}
#: The ``environment`` name of held-out rows in a dict ``environment_factory`` (``examples/trl_environment.py
#: --eval-split``; ``benchmarks/plot_trl_env.py`` reads rollouts under it as evaluations, not training steps).
EVAL_ENVIRONMENT = "eval"


# ---------------------------------------------------------------------- the environments
def _sql(query: str) -> str:
    """The SQL in a tool call's ``query``, by the extractor every path uses (a fence, trailing
    prose, a second statement or a closing tag is dropped); a query in which it finds none is run
    as written, so the model sees the database's error."""
    return extract_sql(query) or query


class _SQLTools:
    """What both tool environments share: ``reset`` pins the row's question, the episode's return."""

    _env_type: type = TextToSQLEnv

    def __init__(self, env: TextToSQLEnv):
        if not isinstance(getattr(env, "unwrapped", env), self._env_type):
            raise TypeError(f"{type(self).__name__} wraps a {self._env_type.__name__}, got {type(env).__name__}")
        self.env = env
        self.info: dict[str, Any] | None = None  # the scored answer's info once the episode has ended
        self.sql_calls = 0
        self.tool_calls: Counter = Counter()  # every tool call of the episode by tool name, refused ones too
        self.calls_after_end = 0  # calls refused because the episode had ended
        self._return = 0.0
        self._done = False
        self._index: int | None = None

    def reset(self, index: int | None = None, id: str | None = None, **row) -> str:
        """Start the episode of question ``index`` (the dataset column); return its user-turn text."""
        if index is None:
            raise ValueError(
                "reset needs the dataset column 'index' (build train_dataset with "
                "SQLEnvironmentFactory.train_dataset or to_trl_env_dataset): without it the completions "
                "of one GRPO group would not share a question"
            )
        dataset = self.env.unwrapped.dataset
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"index={index!r} must be an integer")
        if id is not None and 0 <= index < len(dataset) and dataset[index].id != id:
            raise ValueError(
                f"index {index} is question {dataset[index].id!r} in {dataset!r}, but the TRL row says "
                f"{id!r}: the environment was built on another dataset"
            )
        observation, _ = self.env.reset(options={"index": index})
        self.info, self.sql_calls, self._return, self._done, self._index = None, 0, 0.0, False, index
        self.tool_calls, self.calls_after_end = Counter(), 0
        return user_message(observation)

    # Properties, not methods: TRL turns every public method into a tool.
    @property
    def index(self) -> int | None:
        """The question of the current episode (``None`` before the first reset)."""
        return self._index

    @property
    def done(self) -> bool:
        """Whether the episode has ended (an answer was submitted or the turns ran out)."""
        return self._done

    @property
    def reward(self) -> float:
        """The episode's return; without a submitted answer, plus the preset's execution-error reward."""
        if self._index is None:
            raise RuntimeError("Call reset before reading the reward.")
        if self._done:
            return self._return
        missing = ExecutionResult(error=NO_ANSWER, message="no answer submitted")
        return self._return + float(compute_reward(self.env.unwrapped.reward_preset, missing, None))

    def _step(self, action: str) -> tuple[dict, bool, bool, dict]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        if terminated or truncated:
            self._done = True
            self.info = info
        return observation, terminated, truncated, info

    def _check(self, query: Any, tool: str) -> str | None:
        """Count the call of ``tool``; why it cannot run (episode not started or over, query not text), or None."""
        self.tool_calls[tool] += 1
        if self._index is None:
            return "Error: the episode has not started (TRL calls reset first)."
        if self._done:
            self.calls_after_end += 1
            return ENDED
        if not isinstance(query, str):
            return f"Error: query must be a string of SQL, got {type(query).__name__}."
        return None


class TextToSQLTools(_SQLTools):
    """``TextToSQL-v0`` for TRL: one tool, ``submit_answer``, the env's single scored step."""

    def __init__(self, env: TextToSQLEnv):
        if isinstance(getattr(env, "unwrapped", env), TextToSQLAgentEnv):
            raise TypeError("TextToSQLTools wraps the single-step TextToSQLEnv; use TextToSQLAgentTools "
                            "for a TextToSQLAgentEnv")
        super().__init__(env)

    def submit_answer(self, query: str) -> str:
        """Submit the final SQLite query; its result is compared with the answer. Call it once.

        Args:
            query: one SQLite SELECT statement whose result answers the question.

        Returns:
            A confirmation; the episode ends.
        """
        problem = self._check(query, "submit_answer")
        if problem is not None:
            return problem
        self._step(_sql(query))
        return SUBMITTED


class TextToSQLAgentTools(_SQLTools):
    """``TextToSQLAgent-v0`` for TRL: ``run_sql`` explores, ``submit_answer`` ends the episode.

    A tool's result is the move's transcript entry (``Turn t/N <sql>QUERY</sql>``, then the result table or
    error); ``echo_moves=False`` drops the echoed query, which the model's tool call already holds
    (``Turn t/N``, then the result): fewer tokens of ``max_completion_length`` spent on tool results."""

    _env_type = TextToSQLAgentEnv

    def __init__(self, env: TextToSQLAgentEnv, echo_moves: bool = True):
        super().__init__(env)
        self.echo_moves = bool(echo_moves)

    def _check(self, query: Any, tool: str) -> str | None:
        """As every tool's check, and a blank query is refused without using a turn (the single-step tool scores
        it, as the env's step does: an answer that fails)."""
        problem = super()._check(query, tool)
        if problem is None and not query.strip():
            return EMPTY_QUERY
        return problem

    def _result(self, info: dict) -> str:
        reply = info["reply"]
        for hint, said in TOOL_HINTS.items():
            reply = reply.replace(hint, said)
        if self.echo_moves:  # the transcript entry this move appended: its head, then the reply
            return info["result"][: len(info["result"]) - len(info["reply"])] + reply
        return f"Turn {info['turn']}/{self.env.unwrapped.max_turns}\n{reply}"

    def run_sql(self, query: str) -> str:
        """Run one read-only SQLite query on the database and see its result (not scored).

        Args:
            query: one SQLite SELECT statement.

        Returns:
            The row count and the first rows as a table, or the error.
        """
        problem = self._check(query, "run_sql")
        if problem is not None:
            return problem
        self.sql_calls += 1
        observation, _, truncated, info = self._step(f"<sql>{_sql(query)}</sql>")
        text = self._result(info)
        if truncated:
            text += "\n" + NO_TURNS_LEFT
        return text

    def submit_answer(self, query: str) -> str:
        """Submit the final SQLite query; its result is compared with the answer. Call it once.

        Args:
            query: one SQLite SELECT statement whose result answers the question.

        Returns:
            A confirmation; the episode ends.
        """
        problem = self._check(query, "submit_answer")
        if problem is not None:
            return problem
        _, _, _, info = self._step(f"<answer>{_sql(query)}</answer>")
        return self._result(info)


# ---------------------------------------------------------------------- the factory TRL calls
class SQLEnvironmentFactory:
    """TRL's ``environment_factory``: each call returns a fresh tool environment over one shared dataset.

    Arguments:
        dataset: a sqlenv :class:`~sqlenv.datasets.Dataset`, or a registered name (loaded once here with
            ``split``, ``data_dir`` and ``schema``). A Dataset keeps the schema it was loaded with: a ``schema``
            naming another is a ValueError (load it with ``sqlenv.load_dataset(..., schema=)``).
        multi_turn: ``True`` for :class:`TextToSQLAgentTools` (run_sql + submit_answer), ``False`` for
            :class:`TextToSQLTools` (submit_answer only).
        echo_moves: multi-turn tool results start with the move's query (the transcript entry, the default);
            ``False``: ``Turn t/N`` and the result alone (:class:`TextToSQLAgentTools`).
        env_kwargs: the env's arguments (``reward``, ``timeout``, ``max_instructions``, ``sample_rows``,
            ``column_values``; multi-turn: ``max_turns``, ``result_rows``, ``result_chars``, ``explore_seconds``, ...).

    Picklable (a module-level class holding the dataset and keywords), as TRL's async worker needs.
    """

    def __init__(self, dataset: str | Dataset = "generated", *, multi_turn: bool = True,
                 split: str | None = None, data_dir: str | None = None, echo_moves: bool = True, **env_kwargs):
        self.multi_turn = bool(multi_turn)
        self.echo_moves = bool(echo_moves)
        self.env_kwargs = env_kwargs
        if isinstance(dataset, Dataset):
            if split is not None or data_dir is not None:
                raise ValueError("split and data_dir load a dataset by name; a Dataset object is already loaded")
            probe = self._env_class(dataset=dataset, **env_kwargs)
        else:
            probe = self._env_class(dataset=dataset, split=split, data_dir=data_dir, **env_kwargs)
        for key in [k for k in env_kwargs if k not in _env_arguments(self._env_class)]:
            env_kwargs.pop(key)  # dataset loader arguments, used by the load above
        self.dataset = probe.dataset
        probe.close()

    @property
    def _env_class(self) -> type:
        return TextToSQLAgentEnv if self.multi_turn else TextToSQLEnv

    def __call__(self) -> TextToSQLAgentTools | TextToSQLTools:
        env = self._env_class(dataset=self.dataset, **self.env_kwargs)
        return TextToSQLAgentTools(env, echo_moves=self.echo_moves) if self.multi_turn else TextToSQLTools(env)

    def train_dataset(self, indices: Sequence[int] | None = None, system_prompt: str | None = None,
                      environment: str | None = None):
        """TRL's ``train_dataset`` (or ``eval_dataset``) for this factory's questions and mode (see
        :func:`to_trl_env_dataset`; ``environment`` names this factory in a dict ``environment_factory``)."""
        return to_trl_env_dataset(self.dataset, multi_turn=self.multi_turn, indices=indices,
                                  system_prompt=system_prompt, environment=environment)


def _env_arguments(env_class: type) -> set[str]:
    import inspect

    names: set[str] = set()
    for cls in env_class.__mro__:
        if cls in (TextToSQLEnv, TextToSQLAgentEnv):
            names |= set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs", "dataset_kwargs"}
    return names - {"dataset", "split", "data_dir"}


# ---------------------------------------------------------------------- the prompt dataset
def to_trl_env_dataset(dataset: Dataset, *, multi_turn: bool = True, indices: Sequence[int] | None = None,
                       system_prompt: str | None = None, environment: str | None = None):
    """A ``datasets.Dataset`` for ``environment_factory`` training, one row per question.

    Columns: ``prompt`` (a system turn with the tool instructions and an empty user turn, which
    ``reset`` fills with the schema, sample rows and question), ``index`` (pins the question in
    ``reset``), ``id`` (checked against it) and ``question`` (for logs); with ``environment``, also
    that column, which routes each row to its factory when ``environment_factory`` is a dict (TRL's
    multi-environment mode: e.g. ``{"train": ..., "dev": ...}`` for a held-out ``eval_dataset``).
    """
    try:
        import datasets as hf_datasets
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("to_trl_env_dataset needs the 'datasets' package: pip install 'sqlenv[trl]'") from exc
    if system_prompt is None:
        system_prompt = AGENT_SYSTEM_PROMPT if multi_turn else ANSWER_SYSTEM_PROMPT
    chosen = range(len(dataset)) if indices is None else [int(i) for i in indices]
    prompt = [{"role": "system", "content": system_prompt}, {"role": "user", "content": ""}]
    rows: dict[str, list] = {"prompt": [], "index": [], "id": [], "question": []}
    for i in chosen:
        example = dataset[i]
        rows["prompt"].append(prompt)
        rows["index"].append(i)
        rows["id"].append(example.id)
        rows["question"].append(example.question)
    if environment is not None:
        rows["environment"] = [environment] * len(rows["index"])
    return hf_datasets.Dataset.from_dict(rows)


# ---------------------------------------------------------------------- the reward function
class SQLEnvReward:
    """A TRL reward function returning each rollout's environment reward (``environments=``, from TRL).

    When TRL passes ``log_metric``, logs the fraction of rollouts that submitted an answer, whose answer
    executed and whose answer was correct (``<name>/submitted``, ``/executed``, ``/correct``), the
    mean number of ``run_sql`` queries run (``<name>/sql_calls``), of tool calls of either tool,
    refused ones included (``<name>/tool_calls``), and of calls written after the episode ended
    (``<name>/calls_after_end``: refused with :data:`ENDED`, or left unrun by
    :func:`end_tool_loop_at_episode_end`). ``last_infos`` holds the latest call's per-rollout
    details; with ``rollout_log``, every call appends them to that file, one JSON line per rollout
    (``call``: the reward call's number from 1; ``environment``, the row's factory name in TRL's
    multi-environment mode, e.g. :data:`EVAL_ENVIRONMENT`; ``global_step``, the optimizer steps taken before it;
    then the question's ``split``, ``index`` and ``id``, ``tool_calls`` by tool, ``reward``, ..., the answer's
    record (``ANSWER_RECORD_FIELDS``) and the ``completion`` TRL passed: the model's messages, tool calls and
    results). ``monitors``: a function of the call's per-rollout details returning more metrics to log under
    ``<name>/`` (``functools.partial(agents.monitors.monitor_metrics, "")``: the trainer's collapse monitors,
    ``<name>/collapse/floor``, ...). Each rollout's details also say how many tokens its completion took
    (``completion_tokens``, tool results included: TRL's ``completion_ids``) and, for one without an answer, why
    (``no_answer``: :func:`no_answer_reason`, told the run's ``max_completion_length`` and ``max_tool_calls``,
    TRL's ``max_tool_calling_iterations``), logged as the share of all rollouts per reason
    (``<name>/no_answer/budget``, ...).
    """

    def __init__(self, name: str = "sqlenv_env", rollout_log: str | os.PathLike | None = None,
                 monitors: Callable[[list[dict]], dict[str, float]] | None = None,
                 max_completion_length: int | None = None, max_tool_calls: int | None = None):
        self.__name__ = name
        self.last_infos: list[dict] = []
        self.rollout_log = rollout_log
        self.monitors = monitors
        self.max_completion_length = max_completion_length
        self.max_tool_calls = max_tool_calls
        self.calls = 0

    def resume(self, step: int) -> int:
        """Go on with ``rollout_log`` from a checkpoint taken after ``step`` optimizer steps (a run resumed with
        TRL's ``resume_from_checkpoint``): the rows of the steps that will be played again (training rollouts
        at ``global_step >= step``, evaluations after more than ``step`` steps) are dropped, the rest kept, and
        call numbers go on from the last kept. Returns the number of rows kept (0 without a log)."""
        if self.rollout_log is None or not os.path.exists(self.rollout_log):
            return 0
        kept = []
        with open(self.rollout_log, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{self.rollout_log}:{number} is not a JSON line: {exc}") from exc
                played = row.get("global_step", 0)
                if played < step or (played == step and row.get("environment") == EVAL_ENVIRONMENT):
                    kept.append(row)
        with open(self.rollout_log, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, default=str) + "\n" for row in kept)
        self.calls = max((row["call"] for row in kept), default=0)
        return len(kept)

    def __call__(self, completions: Sequence[Any] = (), environments: Sequence[_SQLTools] | None = None,
                 **kwargs) -> list[float]:
        if environments is None:
            raise ValueError("SQLEnvReward reads the rollouts' environments, which TRL passes only with "
                             "GRPOTrainer(environment_factory=SQLEnvironmentFactory(...))")
        if completions and len(completions) != len(environments):
            raise ValueError(f"got {len(completions)} completions but {len(environments)} environments")
        self.last_infos = [_rollout_info(env) for env in environments]
        completion_ids = kwargs.get("completion_ids") or [None] * len(self.last_infos)
        for info, completion, ids in zip(self.last_infos, completions or [None] * len(self.last_infos),
                                         completion_ids):
            info["calls_after_end"] += _ignored_calls(completion)
            info["completion_tokens"] = len(ids) if ids is not None else None
            info["no_answer"] = None if info["submitted"] else no_answer_reason(
                completion, info["completion_tokens"], self.max_completion_length, self.max_tool_calls)
        self.calls += 1
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and self.last_infos:
            n = len(self.last_infos)
            for key in ("submitted", "executed", "correct", "sql_calls", "calls_after_end"):
                log_metric(f"{self.__name__}/{key}", sum(float(i[key]) for i in self.last_infos) / n)
            log_metric(f"{self.__name__}/tool_calls", sum(sum(i["tool_calls"].values()) for i in self.last_infos) / n)
            for reason in NO_ANSWER_REASONS:
                log_metric(f"{self.__name__}/no_answer/{reason}",
                           sum(i["no_answer"] == reason for i in self.last_infos) / n)
            for key, value in (self.monitors(self.last_infos) if self.monitors else {}).items():
                log_metric(f"{self.__name__}/{key}", value)
        if self.rollout_log is not None:
            names = kwargs.get("environment")  # TRL's multi-environment column: the factory each rollout played
            step = getattr(kwargs.get("trainer_state"), "global_step", None)
            with open(self.rollout_log, "a", encoding="utf-8") as fh:
                for i, info in enumerate(self.last_infos):
                    where = {"environment": names[i]} if names else {}
                    when = {"global_step": step} if step is not None else {}
                    text = {"completion": completions[i]} if completions else {}
                    fh.write(json.dumps({"call": self.calls, **where, **when, **info, **text}, default=str) + "\n")
        return [i["reward"] for i in self.last_infos]

    def summary(self) -> dict[str, float]:
        """Correctness and error kinds of the latest call (``no_answer`` when none was submitted)."""
        counts = Counter(i["error"] or "ok" for i in self.last_infos)
        n = max(1, len(self.last_infos))
        return {"correct": sum(i["correct"] for i in self.last_infos) / n, **{k: v / n for k, v in counts.items()}}


def _rollout_info(env: _SQLTools) -> dict[str, Any]:
    info = env.info or {}
    submitted = env.info is not None and info.get("error") != NO_ANSWER
    dataset = env.env.unwrapped.dataset
    return {
        "split": dataset.split,
        "index": env.index,
        "id": dataset[env.index].id if env.index is not None else None,
        "reward": env.reward,
        "reward_preset": env.env.unwrapped.reward_preset,
        "submitted": submitted,
        "executed": submitted and bool(info.get("executed")),
        "correct": submitted and bool(info.get("correct")),
        "error": info.get("error") if submitted else NO_ANSWER,
        "sql_calls": env.sql_calls,
        "tool_calls": {name: env.tool_calls[name] for name in _tool_names(env)},
        "calls_after_end": env.calls_after_end,
        **_answer_record(env, info if submitted else None),
    }


#: What a rollout's log line says of its answer, beside the outcome: the fields ``agents.monitors`` reads.
ANSWER_RECORD_FIELDS = ("dataset", "question", "answer", "sql", "prediction", "reads_table")


def _answer_record(env: _SQLTools, info: dict | None) -> dict[str, Any]:
    """The question, its gold answer and the submitted query as the env ran it, with its result as an answer
    string (``sql`` empty and ``prediction`` None without an answer)."""
    dataset = env.env.unwrapped.dataset
    example = dataset[env.index] if env.index is not None else None
    info = info or {}
    return {"dataset": getattr(dataset, "name", None), "question": example.question if example else None,
            "answer": example.answer if example else None, "sql": info.get("sql") or "",
            "prediction": info.get("prediction"), "reads_table": info.get("reads_table")}


def submitted_query(completion: Any) -> str | None:
    """The SQL a rollout submitted, read from its TRL ``completion`` (the model's messages): the first
    ``submit_answer`` call whose arguments are a string ``query`` alone (TRL fails a call with other arguments
    before the tool sees it), through the extractor the tool uses; None without one. (The env ran it only where
    the rollout's log says ``submitted``: a call after the last turn was refused.)"""
    for message in completion if isinstance(completion, list) else ():
        for call in (message.get("tool_calls") or ()) if isinstance(message, dict) else ():
            function = call.get("function", call) if isinstance(call, dict) else {}
            query = call_query(function)
            if function.get("name") == "submit_answer" and query is not None:
                return _sql(query)
    return None


def call_query(function: Any) -> str | None:
    """The ``query`` of a logged tool call (``{"name": ..., "arguments": ...}``, arguments a dict or JSON text) that
    TRL could make: arguments a string ``query`` alone (TRL fails a call with others before the tool sees it)."""
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if isinstance(arguments, dict) and set(arguments) == {"query"} and isinstance(arguments["query"], str):
        return arguments["query"]
    return None


#: Why a rollout ended without an answer (:func:`no_answer_reason`), in the order they are checked.
NO_ANSWER_REASONS = ("turns", "budget", "call_limit", "malformed_call", "no_call")
_CALL_TEXT = re.compile(r"<tool_call>|\"name\"\s*:")  # what a tool call the parser missed still shows


def no_answer_reason(completion: Any, completion_tokens: int | None = None, max_completion_length: int | None = None,
                     max_tool_calls: int | None = None) -> str:
    """Why a rollout that submitted no answer ended (one of :data:`NO_ANSWER_REASONS`), from its TRL
    ``completion`` (the model's messages) and, where known, its length in tokens (tool results included,
    TRL's ``completion_ids``) and the run's ``max_completion_length`` and ``max_tool_calling_iterations``:

    * ``turns``: the env's turns ran out (a ``run_sql`` reply says :data:`NO_TURNS_LEFT`);
    * ``budget``: the token budget ran out: the completion reached ``max_completion_length`` (cut mid-turn), or it
      ends on a tool call whose reply TRL dropped because it would not fit (fewer rounds than ``max_tool_calls``);
    * ``call_limit``: it ends on a tool call left unrun after ``max_tool_calls`` rounds;
    * ``malformed_call``: the model ended its turn on text that looks like a tool call (``<tool_call>`` or a JSON
      ``"name"``) that the parser could not read;
    * ``no_call``: the model ended its turn with prose, or nothing.

    A completion ending on an unrun call when ``max_tool_calls`` is unknown counts as ``budget``; one cut
    mid-turn whose length is unknown counts as what its text shows."""
    messages = [m for m in completion if isinstance(m, dict)] if isinstance(completion, list) else []
    if any(m.get("role") == "tool" and NO_TURNS_LEFT in str(m.get("content", "")) for m in messages):
        return "turns"
    if None not in (completion_tokens, max_completion_length) and completion_tokens >= max_completion_length:
        return "budget"
    last = messages[-1] if messages else {}
    if last.get("role") == "assistant" and last.get("tool_calls"):
        rounds = sum(1 for m, after in zip(messages, messages[1:])
                     if m.get("role") == "assistant" and m.get("tool_calls") and after.get("role") == "tool")
        return "call_limit" if max_tool_calls is not None and rounds >= max_tool_calls else "budget"
    text = last.get("content") if isinstance(completion, list) else completion
    return "malformed_call" if _CALL_TEXT.search(str(text or "")) else "no_call"


def _ignored_calls(completion: Any) -> int:
    """The tool calls of a TRL completion (its messages) that :func:`end_tool_loop_at_episode_end` left unrun."""
    if not isinstance(completion, list):
        return 0
    return sum(len(m.get(IGNORED_TOOL_CALLS) or ()) for m in completion if isinstance(m, dict))


def _tool_names(env: _SQLTools) -> tuple[str, ...]:
    return ("run_sql", "submit_answer") if isinstance(env, TextToSQLAgentTools) else ("submit_answer",)


# ---------------------------------------------------------------------- episodes as TRL sees them
def environment_tools(environment: _SQLTools) -> list:
    """The tools TRL exposes for an environment instance: its public methods but ``reset`` and ``get_reward``
    (``GRPOTrainer.__init__``, trl 1.16), bound to ``environment``."""
    import inspect

    return [getattr(environment, name) for name, _ in inspect.getmembers(type(environment), inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")]


def first_turn_messages(row: dict, environment: _SQLTools) -> list[dict]:
    """The row's ``prompt`` with ``reset(**row)``'s text appended to its last (user) turn, as TRL builds a
    rollout's first turn; the episode of ``environment`` is started."""
    observation = environment.reset(**row)
    prompt = list(row["prompt"])
    return prompt[:-1] + [{**prompt[-1], "content": prompt[-1]["content"] + observation}]


def tool_transcript(row: dict, environment: _SQLTools, calls: Sequence[tuple[str, str]]) -> list[dict]:
    """A whole episode as the chat messages of a TRL rollout: the first turn (:func:`first_turn_messages`),
    then for each ``(tool, query)`` of ``calls`` an assistant turn calling that tool of ``environment`` and the
    tool's result as TRL appends it (``{"role": "tool", "name": tool, "content": result}``), then an empty
    assistant turn (the model stops once the episode has ended). ``environment.info`` holds the scored answer's
    info afterwards. A tool name ``environment`` does not have raises ``ValueError``."""
    names = {tool.__name__ for tool in environment_tools(environment)}
    messages = first_turn_messages(row, environment)
    for name, query in calls:
        if name not in names:
            raise ValueError(f"tool {name!r} is not one of {sorted(names)}")
        result = getattr(environment, name)(query)
        call = {"type": "function", "function": {"name": name, "arguments": {"query": query}}}
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        messages.append({"role": "tool", "name": name, "content": str(result)})
    messages.append({"role": "assistant", "content": ""})
    return messages


# ---------------------------------------------------------------------- the model's chat template
def ensure_tool_chat_template(processing_class):
    """Make a tokenizer's chat template render tools and tool calls, as TRL's tool loop requires.

    A template that already does (TRL's ``supports_tool_calling``) is kept. A ChatML template that drops
    ``tool_calls`` and tool messages, such as SmolLM2-Instruct's, is replaced by TRL's copy of Qwen2.5's
    ChatML template, which adds a ``# Tools`` block to the system turn and Hermes-style
    ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` calls that TRL knows how to parse: the
    same ``<|im_start|>``/``<|im_end|>`` tokens, but a format the model was not trained on, so a small
    model calls the tools rarely until training rewards it. Any other template raises ``ValueError``.
    Returns ``processing_class`` (changed in place).
    """
    from trl.chat_template_utils import qwen2_5_chat_template, supports_tool_calling

    if supports_tool_calling(processing_class):
        return processing_class
    template = processing_class.chat_template or ""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    chatml = "<|im_start|>" in template and all(
        tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id) for t in ("<|im_start|>", "<|im_end|>")
    )
    if not chatml:
        raise ValueError(
            "the tokenizer's chat_template cannot render tool calls and is not ChatML: set a tool-calling "
            "chat_template yourself (see TRL's chat_template_utils), or use a tool-calling model"
        )
    processing_class.chat_template = qwen2_5_chat_template
    return processing_class


# ---------------------------------------------------------------------- lenient tool-call parsing
#: The tools of :class:`TextToSQLAgentTools` (``submit_answer`` alone is :class:`TextToSQLTools`' one tool).
TOOL_NAMES = ("run_sql", "submit_answer")


def json_tool_call_template(tool_names: Sequence[str] = TOOL_NAMES) -> dict:
    """A transformers ``response_template`` (the new-style parser, transformers >= 5.13) for Qwen2.5's ChatML
    that reads three ways of writing a tool call; see :func:`accept_json_tool_calls`.

    It is TRL's ``qwen3_template`` (what ``add_response_schema`` sets for Qwen2.5/Qwen3 templates) with two
    more ways to open and close its one ``tool_calls`` field, whose body is still parsed as strict JSON and
    turned into ``{"type": "function", "function": <the object>}`` as TRL's template does:

    * ``<tool_call>`` ... ``</tool_call>``: TRL's own form, unchanged;
    * a ```` ``` ```` or ```` ```json ```` fence whose content starts with ``{"name": "<tool>", "arguments": {``
      (a known tool name, arguments an object), closed by the next ```` ``` ````;
    * a bare call on a line of its own (after optional indentation or an ``<|im_start|>``), starting
      ``{"name": "<tool>", "arguments": {`` and ending the line with ``}}``.

    Text before, between and after calls is the message's ``content`` (the pieces joined by newlines).
    """
    names = [str(n) for n in tool_names]
    if not names or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", n) for n in names):
        raise ValueError(f"tool_names must be non-empty function names, got {names!r}")
    name = "(?:" + "|".join(re.escape(n) for n in names) + ")"
    head = r'\{\s*"name"\s*:\s*"' + name + r'"\s*,\s*"arguments"\s*:\s*\{'  # fenced: may span lines
    line_head = r'\{[ \t]*"name"[ \t]*:[ \t]*"' + name + r'"[ \t]*,[ \t]*"arguments"[ \t]*:[ \t]*\{'
    line_end = r"[ \t]*(?:\n|<\|im_end\|>|\Z)"
    line_start = r"(?:\A|(?<=\n))[ \t]*(?:<\|im_start\|>(?:assistant)?[ \t]*\n?[ \t]*)?"
    bare_line = line_head + r"[^\n]*\}\}"
    open_pattern = "|".join([
        r"<tool_call>",  # TRL's (qwen3_template's "open")
        r"```(?:json)?[ \t]*\n?[ \t]*(?=" + head + ")",  # a fenced call
        line_start + r"(?=" + bare_line + line_end + ")",  # a bare one-line call
    ])
    close_pattern = "|".join([
        r"</tool_call>\s*",  # TRL's
        r"\s*```[ \t]*",  # the fence's end
        # the end of a bare one-line call (inside <tool_call> tags, TRL's close above ends the call instead)
        r"(?<=" + line_start + bare_line + r")(?=" + line_end + r")(?!\s*</tool_call>)",
    ])
    return {
        "defaults": {"role": "assistant"},
        "start_anchor": "<|im_start|>assistant\n",
        "fields": {
            "reasoning_content": {"open": "<think>", "close_pattern": r"</think>\s*", "content": "text"},
            "tool_calls": {
                "open_pattern": open_pattern,
                "close_pattern": close_pattern,
                "repeats": True,
                "content": "json",
                "transform": {"type": "function", "function": "{content}"},
            },
            "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text", "repeats": True, "join": "\n"},
        },
    }


def accept_json_tool_calls(processing_class, tools: Sequence[Any] = TOOL_NAMES):
    """Make TRL's tool-call parser also accept the JSON calls small Qwen2.5 models write instead of
    ``<tool_call>``: a fenced ```` ```json {"name": ..., "arguments": {...}} ``` ```` block, or a bare
    one-line ``{"name": ..., "arguments": {...}}`` (also when opened by ``<|im_start|>``).

    ``GRPOTrainer`` parses each completion with ``trl.chat_template_utils.parse_response``, which reads the
    tokenizer's ``response_template`` (transformers' response parsing); ``GRPOTrainer.__init__`` calls
    ``add_response_schema`` only when the tokenizer has none, so a template set here, before the trainer is
    built, is the one TRL uses (trl 1.16). The template is :func:`json_tool_call_template`: the one TRL sets
    for Qwen2.5/Qwen3 ChatML templates plus the two lenient forms. A lenient call counts only when it is a
    JSON object that starts with ``"name"``, one of ``tools``, followed by an ``"arguments"`` object; prose
    that mentions JSON, another name, a call cut short or split over lines outside a fence stay text.

    Call it after :func:`ensure_tool_chat_template`. ``tools`` are the tool names (or the environment's
    bound methods). Raises ``ValueError`` for a chat template TRL does not parse with its Qwen template, or a
    transformers older than 5.13 (no ``response_template``). Returns ``processing_class`` (changed in place).
    """
    import transformers
    from packaging.version import Version
    from trl.chat_template_utils import add_response_schema, qwen3_template

    if Version(transformers.__version__) < Version("5.13.0.dev0"):
        raise ValueError(f"accept_json_tool_calls needs transformers >= 5.13 (response_template parsing), "
                         f"found {transformers.__version__}")
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    saved = getattr(tokenizer, "response_template", None)
    tokenizer.response_template = None
    try:
        add_response_schema(processing_class)
        known = getattr(tokenizer, "response_template", None) == qwen3_template
    except ValueError:
        known = False
    if not known:
        tokenizer.response_template = saved
        raise ValueError("accept_json_tool_calls extends TRL's Qwen ChatML (<tool_call>) parser; this chat template "
                         "is not one TRL parses that way (call ensure_tool_chat_template first)")
    names = [t if isinstance(t, str) else t.__name__ for t in tools]
    tokenizer.response_template = json_tool_call_template(names)
    return processing_class


# ---------------------------------------------------------------------- no generation rounds after the episode
#: The key of a parsed reply under which :func:`end_tool_loop_at_episode_end` keeps the calls it did not run.
IGNORED_TOOL_CALLS = "ignored_tool_calls"
_LAST_TURN = re.compile(r"Turn (\d+)/(\d+)[ \n]")  # the head, echoing the move or not (echo_moves=False)
_ANSWER_TURN = re.compile(r"Turn \d+/\d+ <answer>|Turn \d+/\d+\n" + re.escape(SUBMITTED) + r"$")


def ends_episode(reply: str) -> bool:
    """Whether ``reply``, the text one of this module's tools returned, shows the episode over: an answer was
    scored (``submit_answer``'s reply, single-step or multi-turn), the turns ran out (the reply of the last
    turn, ``Turn N/N``), or a call came after the end (:data:`ENDED`). It reads the env-written head of a move's
    reply (``Turn t/N <answer>``; without the echo, ``Turn t/N`` and exactly ``Answer submitted.``, which no
    result or error reads as), never the query's result, so no SQL can make a reply look final."""
    reply = reply.strip()
    if reply in (SUBMITTED, ENDED) or _ANSWER_TURN.match(reply):
        return True
    turn = _LAST_TURN.match(reply)
    return turn is not None and turn[1] == turn[2]


def _last_tool_reply(text: str) -> str | None:
    """The content of the last ``<tool_response>`` block of a rendered Qwen2.5 ChatML chat (the template
    :func:`ensure_tool_chat_template` sets and Qwen2.5's own), or None when it has none."""
    start = text.rfind("<tool_response>")
    if start < 0:
        return None
    body = text[start + len("<tool_response>"):]
    end = body.find("</tool_response>")
    return body if end < 0 else body[:end]


class _EndAtEpisodeEnd:
    """``tokenizer.parse_response`` that, for a reply generated after a tool reply ending the episode, moves its
    tool calls to :data:`IGNORED_TOOL_CALLS`: TRL's tool loop then stops for that rollout."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, response, schema=None, *, prefix=None, tools=None):
        parsed = type(self.tokenizer).parse_response(self.tokenizer, response, schema, prefix=prefix, tools=tools)
        if isinstance(parsed, dict) and parsed.get("tool_calls") and prefix is not None and self.ended(prefix):
            parsed = {**parsed}
            parsed[IGNORED_TOOL_CALLS] = parsed.pop("tool_calls")
        return parsed

    def ended(self, prefix) -> bool:
        text = prefix if isinstance(prefix, str) else self.tokenizer.decode(prefix)
        reply = _last_tool_reply(text)
        return reply is not None and ends_episode(reply)


def end_tool_loop_at_episode_end(processing_class):
    """Stop TRL's tool loop for a rollout once its episode is over.

    TRL's ``GRPOTrainer`` (1.16) generates again after every reply that calls a tool, up to
    ``max_tool_calling_iterations``; an environment cannot end that loop. A policy that goes on calling
    ``submit_answer`` after its answer costs a generation round per call, though only the first answer counts.
    With this, the reply generated after a tool reply that ended the episode (:func:`ends_episode`) is parsed
    with its calls kept under ``"ignored_tool_calls"`` instead of ``"tool_calls"``: TRL runs none of them and
    generates no more for that rollout. Rewards are unchanged (the env scores the first answer); the reply's
    tokens stay in the completion and are trained as before. Rollouts still playing are untouched, but for one
    case: the last tool reply is read from the rendered text, so a query whose result or error spells out
    ``<tool_response>`` followed by a final head (``Turn N/N ``) ends its own rollout's loop, unanswered: the
    reward of an episode without an answer, never more.

    It wraps the tokenizer's ``parse_response``, which TRL's ``parse_response`` calls with the rendered chat so
    far as ``prefix``, so it needs the Qwen2.5 ChatML tool template (:func:`ensure_tool_chat_template`) and a
    ``response_template`` (:func:`accept_json_tool_calls`, or the one ``GRPOTrainer`` adds). Returns
    ``processing_class`` (changed in place; calling it again changes nothing).
    """
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if not isinstance(tokenizer.__dict__.get("parse_response"), _EndAtEpisodeEnd):
        tokenizer.parse_response = _EndAtEpisodeEnd(tokenizer)
    return processing_class
