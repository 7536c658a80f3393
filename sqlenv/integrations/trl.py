"""TRL integration: score GRPO completions by executing them, and turn a sqlenv dataset into TRL's.

Two pieces, neither imports torch (``datasets`` is imported only by :func:`to_trl_dataset`)::

    from trl import GRPOConfig, GRPOTrainer
    from sqlenv.datasets import load_dataset
    from sqlenv.integrations.trl import SQLReward, to_trl_dataset

    ds = load_dataset("spider", split="train", data_dir="~/data/spider")
    trainer = GRPOTrainer(model=..., reward_funcs=SQLReward(ds, reward="binary"),
                          train_dataset=to_trl_dataset(ds), args=GRPOConfig(...))

:class:`SQLReward` has TRL's reward-function signature, ``reward(completions, **kwargs) ->
list[float]``: TRL passes every dataset column as a keyword list (one entry per completion), and the
reward reads ``index`` (the question's position in the sqlenv dataset; ``id`` is checked against it
when present). It extracts the SQL from each completion (plain strings or conversational message
lists), executes the completions of one question as a group with the sandboxed
:class:`~sqlenv.executor.Executor`, compares the rows with the dataset's cached gold result
(``dataset.match``, never re-running the gold query) and maps them to a reward with the same presets
as the environment (:mod:`sqlenv.rewards`): the environment and a TRL run give identical rewards.

:func:`to_trl_dataset` builds the ``datasets.Dataset`` TRL expects: a ``prompt`` column (chat
messages by default, or a plain string) with the schema, sample rows and question of each example,
plus ``index``, ``id``, ``db_path``, ``question``, ``gold_sql`` and ``answer`` columns.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Sequence

from sqlenv.datasets import Dataset, Example
from sqlenv.executor import Executor, ExecutorConfig
from sqlenv.rewards import REWARD_PRESETS, reward as compute_reward

SYSTEM_PROMPT = (
    "You are an expert in SQLite. Given a database schema, a few sample rows and a question, "
    "write one SQLite query that answers the question. Reply with the query in a ```sql code block."
)
USER_TEMPLATE = "Database schema:\n{schema}\n\n{sample_block}Question: {question}"

__all__ = [
    "SQLReward",
    "SYSTEM_PROMPT",
    "completion_text",
    "extract_sql",
    "default_messages",
    "to_trl_dataset",
]


# ---------------------------------------------------------------------- SQL extraction
_SQL_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
_FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def _first_statement(sql: str) -> str:
    """``sql`` up to its first ``;`` outside quotes and comments (without the ``;``), stripped."""
    quote: str | None = None
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
        elif c == "[":
            quote = "]"
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif c == ";":
            return sql[:i].strip()
        i += 1
    return sql.strip()


def extract_sql(text: str, prefix: str = "") -> str:
    """The first SQL statement in a model's answer, without its ``;``; ``""`` when there is none.

    ``prefix`` is prepended first (what the prompt pre-filled, e.g. ``"SELECT"``). Text before a
    first ``` that already starts with SELECT/WITH wins (a prompt that opened the fence itself);
    then fenced blocks (```sql, ``` ...; an unclosed fence is fine); then the bare text from its
    first SELECT/WITH.

    >>> extract_sql("Sure!\\n```sql\\nSELECT name FROM t WHERE x = 'a;b';\\n```\\nDone.")
    "SELECT name FROM t WHERE x = 'a;b'"
    >>> extract_sql(" name FROM t;\\n```", prefix="SELECT")
    'SELECT name FROM t'
    """
    text = (prefix or "") + (text or "")
    head = text.split("```", 1)[0]
    if "```" in text and _SQL_START.match(head.strip()):
        return _first_statement(head)
    for block in _FENCE.finditer(text):
        body = block.group(1)
        found = _SQL_START.search(body)
        if found:
            return _first_statement(body[found.start() :])
    found = _SQL_START.search(text)
    return _first_statement(text[found.start() :].split("```", 1)[0]) if found else ""


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages (last assistant turn)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        chosen = assistant or messages
        if chosen:
            content = chosen[-1].get("content") or ""
            if isinstance(content, list):  # multimodal-style content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
        return ""
    return "" if completion is None else str(completion)


# ---------------------------------------------------------------------- the reward function
class SQLReward:
    """A TRL reward function over a sqlenv dataset; ``reward(completions, index=[...], **kwargs)``.

    Arguments:
        dataset: the sqlenv :class:`~sqlenv.datasets.Dataset` the prompts were built from
            (:func:`to_trl_dataset`).
        reward: a preset of :mod:`sqlenv.rewards` (``"binary"``, ``"partial"``, ``"paper"``).
        timeout, max_rows: the executor's budget per query (the environment's defaults).
        workers: execute each group in that many worker processes (0: in-process).
        prefix: text the prompt pre-filled before the completion (e.g. ``"SELECT"``).
        name: the name TRL logs the reward under (default ``"sqlenv_<reward>"``).

    When TRL passes ``log_metric`` (TRL >= 1.x), the fraction of completions that executed and
    that were correct are logged as ``<name>/executed`` and ``<name>/correct``. ``last_infos``
    holds the per-completion details (sql, error, correct, f1, reward) of the latest call.
    """

    def __init__(
        self,
        dataset: Dataset,
        reward: str = "binary",
        *,
        timeout: float = 1.0,
        max_rows: int = 10_000,
        workers: int = 0,
        prefix: str = "",
        name: str | None = None,
    ):
        if reward not in REWARD_PRESETS:
            raise ValueError(
                f"reward={reward!r} is not a reward preset; choose one of {list(REWARD_PRESETS)}"
            )
        self.dataset = dataset
        self.preset = reward
        self.workers = workers
        self.prefix = prefix
        self.executor = Executor(ExecutorConfig(timeout=timeout, max_rows=max_rows))
        self.__name__ = name or f"sqlenv_{reward}"
        self.last_infos: list[dict] = []

    def __call__(
        self, completions: Sequence[Any], index: Sequence[int] | None = None, **kwargs
    ) -> list[float]:
        if index is None:
            raise ValueError(
                "SQLReward needs the dataset column 'index' (build the TRL dataset with "
                "sqlenv.integrations.trl.to_trl_dataset, which adds it)"
            )
        if len(index) != len(completions):
            raise ValueError(f"got {len(completions)} completions but {len(index)} 'index' values")
        ids = kwargs.get("id")
        if ids is not None:
            for i, qid in zip(index, ids):
                if self.dataset[int(i)].id != qid:
                    raise ValueError(
                        f"index {i} is question {self.dataset[int(i)].id!r} in {self.dataset!r}, "
                        f"but the TRL row says {qid!r}: the reward was built on another dataset"
                    )
        sqls = [extract_sql(completion_text(c), self.prefix) for c in completions]
        scored = self.score([int(i) for i in index], sqls)
        self.last_infos = [info for _, info in scored]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and scored:
            n = len(scored)
            log_metric(f"{self.__name__}/executed", sum(i["executed"] for i in self.last_infos) / n)
            log_metric(f"{self.__name__}/correct", sum(i["correct"] for i in self.last_infos) / n)
        return [r for r, _ in scored]

    def score(self, indices: Sequence[int], sqls: Sequence[str]) -> list[tuple[float, dict]]:
        """``(reward, info)`` of each SQL string against question ``indices[k]`` (grouped by question)."""
        out: list[tuple[float, dict] | None] = [None] * len(sqls)
        groups: dict[int, list[int]] = {}
        for k, i in enumerate(indices):
            groups.setdefault(i, []).append(k)
        for i, positions in groups.items():
            example = self.dataset[i]
            path = self.dataset.database(example)
            results = self.executor.execute_group(
                path, [sqls[k] for k in positions], workers=self.workers
            )
            for k, result in zip(positions, results):
                out[k] = self._score(example, i, sqls[k], result)
        return out  # type: ignore[return-value]

    def _score(self, example: Example, index: int, sql: str, result) -> tuple[float, dict]:
        match = self.dataset.match(example, result.rows) if result.error is None else None
        value = float(compute_reward(self.preset, result, match))
        return value, {
            "index": index,
            "sql": sql,
            "executed": result.error is None,
            "error": result.error,
            "correct": bool(match.correct) if match else False,
            "f1": float(match.f1) if match else 0.0,
            "reward": value,
        }

    def summary(self) -> dict[str, float]:
        """Error kinds and correctness of the latest call (for logging)."""
        counts = Counter(i["error"] or "ok" for i in self.last_infos)
        n = max(1, len(self.last_infos))
        return {
            "correct": sum(i["correct"] for i in self.last_infos) / n,
            **{k: v / n for k, v in counts.items()},
        }

    def close(self) -> None:
        self.executor.close()

    def __getstate__(self):  # picklable for multiprocessing: executors are rebuilt
        state = dict(self.__dict__)
        state["executor_config"] = self.executor.config
        del state["executor"]
        return state

    def __setstate__(self, state):
        config = state.pop("executor_config")
        self.__dict__.update(state)
        self.executor = Executor(config)


# ---------------------------------------------------------------------- the prompt dataset
def default_messages(
    observation: dict[str, str], system_prompt: str = SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """Chat messages for one observation: a system prompt and a user turn with schema, rows and question."""
    rows = observation.get("sample_rows") or ""
    user = USER_TEMPLATE.format(
        schema=observation["schema"],
        question=observation["question"],
        sample_block=f"Sample rows:\n{rows}\n\n" if rows else "",
    )
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def to_trl_dataset(
    dataset: Dataset,
    *,
    conversational: bool = True,
    sample_rows: int = 3,
    system_prompt: str = SYSTEM_PROMPT,
    prompt_fn: Callable[[dict, Example], Any] | None = None,
    indices: Sequence[int] | None = None,
):
    """A ``datasets.Dataset`` of prompts for TRL's GRPOTrainer, one row per example.

    Columns: ``prompt`` (chat messages, or with ``conversational=False`` one string ending in an
    opened ```sql fence), ``index``, ``id``, ``db_path``, ``question``, ``gold_sql`` (``""`` when
    none) and ``answer``. ``prompt_fn(observation, example)`` replaces the default prompt (return
    messages or a string; e.g. ``lambda obs, ex: agents.prompts.build_messages(obs, 2)``); the
    observation is the environment's: ``{"question", "schema", "sample_rows"}``.
    """
    try:
        import datasets as hf_datasets
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "to_trl_dataset needs the 'datasets' package: pip install 'sqlenv[trl]'"
        ) from exc
    described: dict[str, tuple[str, str, str]] = {}
    rows: dict[str, list] = {
        k: [] for k in ("prompt", "index", "id", "db_path", "question", "gold_sql", "answer")
    }
    for i in range(len(dataset)) if indices is None else indices:
        example = dataset[i]
        if example.db_key not in described:
            path = str(dataset.database(example))
            schema, sample = dataset.describe(path, sample_rows)
            described[example.db_key] = (path, schema, sample)
        path, schema, sample = described[example.db_key]
        observation = {"question": example.question, "schema": schema, "sample_rows": sample}
        if prompt_fn is not None:
            prompt = prompt_fn(observation, example)
        else:
            messages = default_messages(observation, system_prompt)
            prompt = (
                messages
                if conversational
                else (f"{messages[0]['content']}\n\n{messages[1]['content']}\n\n```sql\n")
            )
        rows["prompt"].append(prompt)
        rows["index"].append(int(i))
        rows["id"].append(example.id)
        rows["db_path"].append(path)
        rows["question"].append(example.question)
        rows["gold_sql"].append(example.gold_sql or "")
        rows["answer"].append(example.answer)
    return hf_datasets.Dataset.from_dict(rows)
