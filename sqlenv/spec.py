"""``EnvSpec``: the environment's settings, declared once, with their defaults.

Everything that builds, records or compares an env reads this class: the trainer builds its envs with
``spec.make``, an adapter folder records the spec in ``env_config.json`` (``agents/adapter_card.py``), a
resume compares it with its checkpoint's (``agents/checkpoints.py``), and ``benchmarks/evaluate.py``
takes its defaults from the field defaults below. No torch here.

>>> spec = EnvSpec(dataset="generated", split="dev", max_instructions=100_000_000, timeout=10.0)
>>> env = spec.make()                                   # a TextToSQLEnv on generated/dev
>>> EnvSpec.from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

#: Fields added after env_config.json and checkpoints existed, with the value every run before them had:
#: a file that lacks one was trained that way (wall clock only, 1 s a query, one query per question,
#: literal answers scored like any other, no column values, no filter hints).
LEGACY_VALUES: dict[str, Any] = {"timeout": 1.0, "max_instructions": None, "max_turns": 1, "literal_answers": "score",
                                 "column_values": 0, "filter_hints": False}


@dataclass(frozen=True)
class EnvSpec:
    """The settings of a ``TextToSQL-v0`` env (``TextToSQLAgent-v0`` when ``max_turns`` > 1)."""

    dataset: str = "generated"
    """Dataset name (``python -m sqlenv datasets``)."""
    split: str | None = None
    """Split to load (None: the dataset's default)."""
    data_dir: str | None = None
    """Folder of the dataset's files (None: $SQLENV_DATA_DIR, or none needed)."""
    schema: str = "tables"
    """Database schema variant: tables or flat."""
    sample_rows: int = 3
    """Sample rows per table in the observation."""
    column_values: int = 0
    """Most frequent text values listed per column under each table's statement (0: none)."""
    reward: str = "binary"
    """Reward preset (``sqlenv.rewards.REWARD_PRESETS``)."""
    timeout: float = 1.0
    """Wall-clock seconds a query may run (with max_instructions: the backstop)."""
    max_instructions: int | None = None
    """SQLite VM instructions a query may run, the same on every machine (None: wall clock only)."""
    max_turns: int = 1
    """Moves per episode: 1 is one query per question; N > 1 the multi-turn TextToSQLAgentEnv."""
    literal_answers: str = "score"
    """An answer that reads no table (``SELECT '16'``, :mod:`sqlenv.literal`): "score" scores it like any
    other; "unanswered" scores it as no answer (the preset's execution-error reward, error "literal")."""
    filter_hints: bool = False
    """Multi-turn only: an exploration whose result is empty, 0 or NULL also names each text value it filters
    on that matches no row, with that column's values (:mod:`sqlenv.filter_hints`)."""

    def __post_init__(self):
        from sqlenv.infobox import SCHEMAS
        from sqlenv.literal import literal_answers_option
        from sqlenv.rewards import reward_preset

        if not isinstance(self.dataset, str) or not self.dataset:
            _bad("dataset", self.dataset, "must name a dataset, e.g. generated or temptabqa-c")
        for name in ("split", "data_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                _bad(name, value, "must be a string or None")
        if self.schema not in SCHEMAS:
            _bad("schema", self.schema, f"is not a schema variant; choose one of {list(SCHEMAS)}")
        for name in ("sample_rows", "column_values"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                _bad(name, getattr(self, name), "must be an integer >= 0")
        reward_preset(self.reward)
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) \
                or not math.isfinite(self.timeout) or self.timeout <= 0:
            _bad("timeout", self.timeout, "must be a positive number of seconds")
        if self.max_instructions is not None and (not _is_int(self.max_instructions) or self.max_instructions < 1):
            _bad("max_instructions", self.max_instructions, "must be an integer >= 1, or None")
        if not _is_int(self.max_turns) or self.max_turns < 1:
            _bad("max_turns", self.max_turns, "must be an integer >= 1 (1: one query per question)")
        literal_answers_option(self.literal_answers)
        if not isinstance(self.filter_hints, bool):
            _bad("filter_hints", self.filter_hints, "must be true or false")
        if self.filter_hints and self.max_turns < 2:
            _bad("filter_hints", self.filter_hints, "needs max_turns > 1 (hints come with exploration results)")

    def make(self, split: str | None = None, workers: int = 0, *, dataset=None, render_mode: str | None = None):
        """The env: ``TextToSQLEnv``, or ``TextToSQLAgentEnv`` when ``max_turns`` > 1. ``split`` replaces the
        spec's; ``dataset``: an already loaded ``Dataset`` (e.g. a subset) in place of loading the spec's;
        ``workers`` and ``render_mode`` (not settings of the env's behaviour) go to its constructor."""
        kwargs = dict(dataset=self.dataset if dataset is None else dataset, reward=self.reward, schema=self.schema,
                      sample_rows=self.sample_rows, column_values=self.column_values, workers=workers,
                      timeout=self.timeout,
                      max_instructions=self.max_instructions, literal_answers=self.literal_answers,
                      render_mode=render_mode)
        if dataset is None:
            kwargs.update(split=self.split if split is None else split, data_dir=self.data_dir)
        if self.max_turns > 1:
            from sqlenv.agent_env import TextToSQLAgentEnv

            return TextToSQLAgentEnv(**kwargs, max_turns=self.max_turns, filter_hints=self.filter_hints)
        from sqlenv.env import TextToSQLEnv

        return TextToSQLEnv(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "env settings") -> "EnvSpec":
        """The spec a dict (e.g. a JSON file's) describes; ``source`` names where it came from in errors.

        Every field is required except those of ``LEGACY_VALUES`` (a file written before they existed is
        read with the value its run had); an unknown or bad field is a ValueError naming it and ``source``.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected an object of env settings, got {type(data).__name__}")
        names = field_names()
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{source}: unknown env setting {unknown[0]!r} (the settings: {', '.join(names)})")
        missing = [name for name in names if name not in data and name not in LEGACY_VALUES]
        if missing:
            raise ValueError(f"{source}: missing env setting {missing[0]!r}")
        try:
            return cls(**{**LEGACY_VALUES, **data})
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None


def field_names() -> tuple[str, ...]:
    """EnvSpec's fields, in order."""
    return tuple(f.name for f in fields(EnvSpec))


def default(name: str) -> Any:
    """The default of one EnvSpec field."""
    return EnvSpec.__dataclass_fields__[name].default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(name: str, value: Any, why: str):
    raise ValueError(f"{name}={value!r} {why}")
