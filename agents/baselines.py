"""Baseline policies behind one interface: oracle, trivial (constant, template) and LM (zero/few-shot).

Every policy maps an observation (and the ``reset`` info) to SQL strings::

    policy = make_policy("template")
    obs, info = env.reset(options={"index": 0})
    [sql] = policy.act(obs, info)

``act(observation, info, n, greedy)`` returns ``n`` queries for one question; ``act_batch`` does the
same for several questions at once (the LM policy implements it with one batched generate call).
The oracle, constant and template policies never import torch; :class:`LMPolicy` imports
``agents.policy`` (and so torch) only when it is constructed.

=============  ==================================================================================
name           what it answers
=============  ==================================================================================
oracle         the question's gold SQL (``info["gold_sql"]``, which the evaluator adds for it); the upper bound
constant       ``SELECT 0``: always executes, almost never correct
template       one fixed query that fits the schema: the number of the athlete's medals
zero-shot      the language model with no worked examples in the prompt
few-shot       the language model with the prompts' worked examples
<folder>       the language model with a trained LoRA adapter loaded from ``<folder>``
=============  ==================================================================================
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from agents.adapter_card import read_policy_config

POLICY_NAMES = ("oracle", "constant", "template", "zero-shot", "few-shot")


class MissingGoldSQLError(ValueError):
    """The oracle was asked a question that has no gold SQL."""


class Policy:
    """What every baseline implements: SQL strings for an observation.

    Subclasses implement :meth:`act`; :meth:`act_batch` loops over :meth:`act` unless a subclass
    can do better. ``greedy=False`` asks for samples (only the LM policy distinguishes the two;
    deterministic policies return the same query ``n`` times).
    """

    #: A short name for tables and result file names.
    name: str = "policy"
    #: Whether ``greedy=False`` can return different queries than ``greedy=True``.
    stochastic: bool = False

    def act(self, observation: dict, info: dict, n: int = 1, greedy: bool = True) -> list[str]:
        raise NotImplementedError

    def act_batch(self, observations: Sequence[dict], infos: Sequence[dict], n: int = 1,
                  greedy: bool = True) -> list[list[str]]:
        """``n`` queries for each of several questions (one list per question, in order)."""
        return [self.act(obs, info, n=n, greedy=greedy) for obs, info in zip(observations, infos)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class OraclePolicy(Policy):
    """Answers with the gold SQL; an evaluation of it checks the environment, not a model."""

    name = "oracle"
    #: The evaluator adds ``info["gold_sql"]`` for policies that set this (reset info never has it).
    needs_gold = True

    def act(self, observation: dict, info: dict, n: int = 1, greedy: bool = True) -> list[str]:
        sql = info.get("gold_sql")
        if not sql:
            raise MissingGoldSQLError(
                f"question {info.get('id', info.get('index'))!r} has no gold SQL, so the oracle cannot answer it; "
                "evaluate the oracle on a split whose questions all carry gold SQL (the generated benchmark, "
                "or TempTabQA-C with --gold-sql)"
            )
        return [sql] * n


class ConstantPolicy(Policy):
    """Answers every question with the same query (default ``SELECT 0``)."""

    name = "constant"

    def __init__(self, sql: str = "SELECT 0"):
        self.sql = sql

    def act(self, observation: dict, info: dict, n: int = 1, greedy: bool = True) -> list[str]:
        return [self.sql] * n


_TABLE_RE = re.compile(r'CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?[\["`]?(\w+)', re.IGNORECASE)


class TemplatePolicy(Policy):
    """Answers every question with one fixed query that fits the schema: the athlete's medal count.

    Each TempTabQA-C database holds one athlete, so ``SELECT COUNT(*) FROM Medal`` (five-table
    schema) or ``SELECT COUNT(*) FROM Medals`` (flat schema) counts that athlete's medals; on an
    unknown schema it counts the rows of the first table. It is the "always guess a count"
    baseline: right only when the question asks for the total number of medals.
    """

    name = "template"

    def act(self, observation: dict, info: dict, n: int = 1, greedy: bool = True) -> list[str]:
        return [self.query_for(observation.get("schema", ""))] * n

    @staticmethod
    def query_for(schema: str) -> str:
        tables = _TABLE_RE.findall(schema)
        lowered = {t.lower(): t for t in tables}
        for name in ("medal", "medals"):
            if name in lowered:
                return f"SELECT COUNT(*) FROM {lowered[name]}"
        if tables:
            return f'SELECT COUNT(*) FROM "{tables[0]}"'
        return "SELECT 0"


class LMPolicy(Policy):
    """A causal language model (optionally with a LoRA adapter) writing SQL from the prompt.

    Wraps :class:`agents.policy.LoRAPolicy`; ``few_shot=0`` is the zero-shot baseline, ``few_shot>0``
    puts that many of the prompts' worked examples in the prompt. ``batch_size`` bounds how many
    prompts go into one ``generate`` call. torch is imported here, not at module import.
    """

    stochastic = True

    def __init__(self, model: str | None = None, few_shot: int = 0, adapter: str | None = None,
                 device: str = "auto", dtype: str = "auto", threads: int | None = None,
                 temperature: float | None = None, max_completion_length: int | None = None,
                 batch_size: int = 8, name: str | None = None, **config_overrides: Any):
        from agents.policy import LoRAPolicy, PolicyConfig  # torch lives behind this import

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        fields: dict[str, Any] = {"few_shot": few_shot, "device": device, "dtype": dtype, "threads": threads}
        if model is not None:
            fields["model"] = model
        if adapter is not None:
            fields["adapter"] = str(adapter)
        if temperature is not None:
            fields["temperature"] = temperature
        if max_completion_length is not None:
            fields["max_completion_length"] = max_completion_length
        fields.update(config_overrides)
        self.config = PolicyConfig(**fields)
        self.lm = LoRAPolicy(self.config)
        self.few_shot = few_shot
        self.adapter = adapter
        self.batch_size = batch_size
        self.name = name or (Path(adapter).name if adapter else ("zero-shot" if few_shot == 0 else "few-shot"))

    @classmethod
    def wrap(cls, lm, name: str = "policy", batch_size: int = 8) -> "LMPolicy":
        """An ``LMPolicy`` around an already-built ``LoRAPolicy`` (the trainer's, mid-training)."""
        self = cls.__new__(cls)
        self.lm, self.config = lm, lm.config
        self.few_shot, self.adapter = lm.config.few_shot, lm.config.adapter
        self.batch_size, self.name = batch_size, name
        return self

    def seed(self, seed: int) -> None:
        """Seed torch's sampler so sampled evaluations repeat."""
        import torch

        torch.manual_seed(seed)

    def act(self, observation: dict, info: dict, n: int = 1, greedy: bool = True) -> list[str]:
        return self.act_batch([observation], [info], n=n, greedy=greedy)[0]

    def act_batch(self, observations: Sequence[dict], infos: Sequence[dict], n: int = 1,
                  greedy: bool = True) -> list[list[str]]:
        out: list[list[str]] = []
        for start in range(0, len(observations), self.batch_size):
            chunk = observations[start:start + self.batch_size]
            prompts = [self.lm.prompt(obs) for obs in chunk]
            if greedy:
                # One greedy completion per prompt is enough: all n would be identical.
                rollouts = self.lm.generate(prompts, 1, greedy=True)
                sqls = [[group[0].sql] * n for group in _by_prompt(rollouts, len(prompts))]
            else:
                rollouts = self.lm.generate(prompts, n, greedy=False)
                sqls = [[r.sql for r in group] for group in _by_prompt(rollouts, len(prompts))]
            out.extend(sqls)
        return out

    def __repr__(self) -> str:
        return (f"LMPolicy(name={self.name!r}, model={self.config.model!r}, few_shot={self.few_shot}, "
                f"adapter={self.adapter!r})")


def _by_prompt(rollouts, num_prompts: int) -> list[list]:
    groups: list[list] = [[] for _ in range(num_prompts)]
    for r in rollouts:
        groups[r.prompt_index].append(r)
    return groups


def default_few_shot() -> int:
    """How many worked examples the few-shot baseline uses: the policy's default."""
    from agents.policy import PolicyConfig

    return PolicyConfig().few_shot


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a baseline by name: ``oracle``, ``constant``, ``template``, ``zero-shot``, ``few-shot``,
    or the path of a trained adapter folder (an LM policy with that adapter).

    Keyword arguments go to the policy's constructor (``sql=`` for constant; ``model=``,
    ``threads=``, ``few_shot=``, ``adapter=``, ... for the LM policies); ``None`` values are dropped.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name == "oracle":
        return OraclePolicy()
    if name == "constant":
        return ConstantPolicy(**kwargs)
    if name == "template":
        return TemplatePolicy()
    if name == "zero-shot":
        kwargs["few_shot"] = 0
        return LMPolicy(**kwargs)
    if name == "few-shot":
        if kwargs.get("few_shot", 0) <= 0:
            kwargs["few_shot"] = default_few_shot()
        return LMPolicy(**kwargs)
    path = Path(name).expanduser()
    if path.is_dir():
        # The trained policy's own settings (LoRAPolicy.save writes them) are the defaults.
        for key, value in read_policy_config(path).items():
            if key in ("model", "few_shot", "max_completion_length", "temperature", "top_p"):
                kwargs.setdefault(key, value)
        kwargs.setdefault("few_shot", default_few_shot())
        kwargs["adapter"] = str(path)
        return LMPolicy(**kwargs)
    raise ValueError(f"unknown policy {name!r}: use one of {list(POLICY_NAMES)} or the path of an adapter folder "
                     f"(no folder exists at {str(path)!r})")
