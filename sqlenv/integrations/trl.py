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
lists) with :func:`sqlenv.completion.extract_sql`, the extractor every path uses, and scores the
completions of one question as a group through a ``TextToSQL-v0`` env built from the same arguments
(``env.score_sqls``: its sandboxed executor, ``max_instructions`` included, its matchers and
presets): the environment, the trainer and a TRL run give identical rewards and ``info``.

:func:`to_trl_dataset` builds the ``datasets.Dataset`` TRL expects: a ``prompt`` column (chat
messages by default, or a plain string) with the schema, sample rows and question of each example,
plus ``index``, ``id``, ``db_path``, ``question``, ``gold_sql`` and ``answer`` columns. The prompt
texts are the stacks' defaults of :mod:`sqlenv.prompts` (``SYSTEM_PROMPT`` here is its
``DEFAULT_SYSTEM_PROMPT``, ``default_messages`` its function), shared with verifiers and SkyRL.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

from sqlenv.completion import completion_text, extract_sql
from sqlenv.datasets import Dataset, Example
from sqlenv.env import TextToSQLEnv
from sqlenv.prompts import DEFAULT_SYSTEM_PROMPT as SYSTEM_PROMPT
from sqlenv.prompts import default_messages, fenced_prompt
from sqlenv.rewards import reward_preset

__all__ = [
    "SQLReward",
    "SYSTEM_PROMPT",
    "completion_text",
    "extract_sql",
    "default_messages",
    "to_trl_dataset",
]


# ---------------------------------------------------------------------- the reward function
class SQLReward:
    """A TRL reward function over a sqlenv dataset; ``reward(completions, index=[...], **kwargs)``.

    Scores through a ``TextToSQL-v0`` env built from the same arguments, so a TRL run, the env and
    the trainer give the same reward and ``info`` for the same completion (``env.score_sqls``: the
    env's executor settings, matchers and presets).

    Arguments:
        dataset: the sqlenv :class:`~sqlenv.datasets.Dataset` the prompts were built from
            (:func:`to_trl_dataset`), or a registered name (loaded with ``split``, ``data_dir``,
            ``schema`` and ``dataset_kwargs``, as the env loads it).
        reward: a preset of :mod:`sqlenv.rewards` (a name in ``REWARD_PRESETS``).
        timeout, max_rows, max_instructions: the executor's budget per query (the env's; set
            ``max_instructions`` for rewards that do not depend on the machine).
        workers: execute each group in that many worker processes (0: in-process).
        prefix: text the prompt pre-filled before the completion (e.g. ``"SELECT"``).
        name: the name TRL logs the reward under (default ``"sqlenv_<reward>"``).
        env_kwargs: any other ``TextToSQL-v0`` argument.

    Each completion becomes SQL through :func:`sqlenv.completion.extract_sql` (the one extractor).
    When TRL passes ``log_metric`` (TRL >= 1.x), the fraction of completions that executed and
    that were correct are logged as ``<name>/executed`` and ``<name>/correct``. ``last_infos``
    holds the env's ``info`` of each completion of the latest call.
    """

    def __init__(
        self,
        dataset: Dataset | str,
        reward: str = "binary",
        *,
        split: str | None = None,
        data_dir: str | None = None,
        schema: str | None = None,
        timeout: float = 1.0,
        max_rows: int = 10_000,
        max_instructions: int | None = None,
        workers: int = 0,
        prefix: str = "",
        name: str | None = None,
        **env_kwargs,
    ):
        reward_preset(reward)
        where = {} if isinstance(dataset, Dataset) else {"split": split, "data_dir": data_dir}
        env_kwargs.setdefault("sample_rows", 0)  # prompts come from to_trl_dataset, not this env
        self.env = TextToSQLEnv(dataset, reward=reward, schema=schema, timeout=timeout,
                                max_rows=max_rows, max_instructions=max_instructions,
                                workers=workers, **where, **env_kwargs)
        self.dataset = self.env.dataset
        self.preset = reward
        self.workers = workers
        self.prefix = prefix
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
        """The env's ``(reward, info)`` of each SQL string against question ``indices[k]``
        (each question's queries scored as one group)."""
        out: list[tuple[float, dict] | None] = [None] * len(sqls)
        groups: dict[int, list[int]] = {}
        for k, i in enumerate(indices):
            if isinstance(i, bool) or not 0 <= i < len(self.dataset):
                raise ValueError(f"index {i!r} is out of range for {len(self.dataset)} questions")
            groups.setdefault(i, []).append(k)
        for i, positions in groups.items():
            scored = self.env.score_sqls(i, [sqls[k] for k in positions])
            for k, pair in zip(positions, scored):
                out[k] = pair
        return out  # type: ignore[return-value]

    def summary(self) -> dict[str, float]:
        """Error kinds and correctness of the latest call (for logging)."""
        counts = Counter(i["error"] or "ok" for i in self.last_infos)
        n = max(1, len(self.last_infos))
        return {
            "correct": sum(i["correct"] for i in self.last_infos) / n,
            **{k: v / n for k, v in counts.items()},
        }

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------- the prompt dataset
def to_trl_dataset(
    dataset: Dataset,
    *,
    conversational: bool = True,
    sample_rows: int = 3,
    column_values: int = 0,
    system_prompt: str = SYSTEM_PROMPT,
    prompt_fn: Callable[[dict, Example], Any] | None = None,
    indices: Sequence[int] | None = None,
):
    """A ``datasets.Dataset`` of prompts for TRL's GRPOTrainer, one row per example.

    Columns: ``prompt`` (chat messages, or with ``conversational=False`` one string ending in an
    opened ```sql fence), ``index``, ``id``, ``db_path``, ``question``, ``gold_sql`` (``""`` when
    none) and ``answer``. ``prompt_fn(observation, example)`` replaces the default prompt (return
    messages or a string; e.g. ``lambda obs, ex: sqlenv.prompts.build_messages(obs, 2)``, the
    trainer's prompt); the
    observation is the environment's: ``{"question", "schema", "sample_rows"}`` (``sample_rows`` and
    ``column_values`` as the env's).
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
            schema, sample = dataset.describe(path, sample_rows, column_values)
            described[example.db_key] = (path, schema, sample)
        path, schema, sample = described[example.db_key]
        observation = {"question": example.question, "schema": schema, "sample_rows": sample}
        if prompt_fn is not None:
            prompt = prompt_fn(observation, example)
        else:
            messages = default_messages(observation, system_prompt)
            prompt = messages if conversational else fenced_prompt(messages)
        rows["prompt"].append(prompt)
        rows["index"].append(int(i))
        rows["id"].append(example.id)
        rows["db_path"].append(path)
        rows["question"].append(example.question)
        rows["gold_sql"].append(example.gold_sql or "")
        rows["answer"].append(example.answer)
    return hf_datasets.Dataset.from_dict(rows)
