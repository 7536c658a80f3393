"""Dataset primitives shared by every source: an ``Example``, a ``Dataset`` and the loader registry."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from sqlenv import schema as schema_mod
from sqlenv.cache import CACHE_DIR_ENV, cache_dir  # noqa: F401  (re-exported: datasets build into it)
from sqlenv.matching import match_answer

DATA_DIR_ENV = "SQLENV_DATA_DIR"


def select_indices(num_questions: int, limit: int | None = None, seed: int = 0) -> list[int]:
    """All question indices, or a seeded random subset of ``limit`` of them, in dataset order (a split's
    subsets of one seed are nested: the first 32 of seed 0 are among its first 100)."""
    if limit is None or limit >= num_questions:
        return list(range(num_questions))
    if limit < 0:
        raise ValueError(f"limit={limit!r} must be >= 0")
    import numpy as np

    return sorted(int(i) for i in np.random.default_rng(seed).permutation(num_questions)[:limit])


class DatasetError(ValueError):
    """A dataset could not be found or read; the message names the file, row or field."""


@dataclass(frozen=True)
class Example:
    """One benchmark question.

    ``db_key`` identifies the database the question is asked against; a ``Dataset``
    turns it into a SQLite file with ``dataset.database(example)``.
    """

    id: str
    question: str
    answer: str
    db_key: str
    question_type: str = ""
    difficulty: str | None = None
    context: str | None = None
    gold_sql: str | None = None
    metadata: dict = field(default_factory=dict, compare=False, hash=False)


class Dataset(Sequence[Example]):
    """A sized, indexable split of examples plus the way to obtain each example's database.

    Subclasses implement ``database(example) -> Path``: the path of a SQLite file (built and
    cached on first use) that the executor opens read-only.
    """

    name: str = ""
    split: str = ""
    schema: str = "tables"

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("slice a Dataset with dataset.subset(indices)")
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def subset(self, indices) -> "Dataset":
        """A copy of this dataset holding only ``indices`` (same databases, same scoring)."""
        clone = copy.copy(self)
        clone.examples = [self.examples[i] for i in indices]
        return clone

    def database(self, example: Example) -> Path:
        raise NotImplementedError

    def describe(self, path: str | os.PathLike, sample_rows: int, column_values: int = 0) -> tuple[str, str]:
        """The observation's ``(schema, sample_rows)`` texts for the database at ``path``: every table,
        values verbatim, no token budget (:func:`sqlenv.schema.describe`)."""
        return schema_mod.describe(path, sample_rows, None, verbatim=True, column_values=column_values)

    def match(self, example: Example, rows):
        """Score a query's result rows against the example's gold answer (a ``MatchResult``).

        Datasets whose gold is a query result (Spider, BIRD) override this with a result-set comparator.
        """
        return match_answer(rows, example.answer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, schema={self.schema!r}, n={len(self)})"


Loader = Callable[..., Dataset]
_LOADERS: dict[str, Loader] = {}
_SPLITS: dict[str, tuple[str, ...]] = {}


def register_dataset(name: str, loader: Loader, splits: Sequence[str]) -> None:
    """Register ``loader(split=..., data_dir=..., schema=..., **kwargs) -> Dataset`` under ``name``."""
    _LOADERS[name] = loader
    _SPLITS[name] = tuple(splits)


def available_datasets() -> dict[str, tuple[str, ...]]:
    """Registered dataset names mapped to their splits."""
    return dict(_SPLITS)


def load_dataset(name: str = "generated", split: str | None = None, data_dir: str | os.PathLike | None = None,
                 schema: str = "tables", **kwargs) -> Dataset:
    """Load split ``split`` of dataset ``name`` (see ``available_datasets()``)."""
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; available: {sorted(_LOADERS)}")
    if split is None:
        split = _SPLITS[name][0]
    if split not in _SPLITS[name]:
        raise DatasetError(f"unknown split {split!r} for dataset {name!r}; available: {list(_SPLITS[name])}")
    return _LOADERS[name](split=split, data_dir=data_dir, schema=schema, **kwargs)


def resolve_data_dir(data_dir: str | os.PathLike | None, dataset: str) -> Path:
    """The data directory from the argument, else ``$SQLENV_DATA_DIR``; a clear error otherwise."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise DatasetError(f"data_dir={data_dir!r} for dataset {dataset!r} must be a path (str or os.PathLike)")
    if not data_dir:
        raise DatasetError(
            f"dataset {dataset!r} needs its files: pass data_dir=... or set the environment "
            f"variable {DATA_DIR_ENV} to the folder that holds them"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data_dir {str(path)!r} for dataset {dataset!r} is not a directory "
                           f"(from the data_dir argument or {DATA_DIR_ENV})")
    return path

