"""Datasets whose gold is a query result over a real SQLite file (Spider, BIRD, your own JSONL).

The gold query of every question is executed **once**, at load time, with the sandboxed
:class:`~sqlenv.executor.Executor` (read-only, time-budgeted), and its rows are kept in memory and
in an on-disk cache (``cache_dir()/gold.sqlite``, keyed by the database file's SHA-256, the SQL and
the executor budget), so a reward call never re-runs the gold query and a second load is instant.

Every gold result is validated. A gold query that fails, times out, exceeds the row budget or
returns no rows is *never silently scored*: it is listed in ``dataset.summary`` (a
:class:`LoadSummary`) and, by ``on_invalid``:

``"exclude"`` (default)
    dropped from the dataset;
``"flag"``
    kept, with ``metadata["gold_status"]`` naming the problem. A flagged empty gold is scored by
    the comparator (so it matches only with ``empty_match=True``); a failed gold scores every
    prediction as wrong;
``"raise"``
    a :class:`~sqlenv.datasets.DatasetError` listing them.

Two cases do not depend on ``on_invalid``:

* a question whose database file is missing cannot be asked (the environment needs the file), so
  it is excluded in every mode; ``summary.missing_databases`` and ``str(summary)`` name the
  missing ``db_id`` values, and loading warns (:class:`MissingDatabaseWarning`);
* with ``empty_match=True`` an empty gold result is scoreable (only an empty prediction matches
  it, as in the official evaluators), so it is kept in every mode, with
  ``metadata["gold_status"] = "empty"``, and counted in ``summary.empty_kept``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlenv import schema as schema_mod
from sqlenv.comparators import Comparator, get_comparator
from sqlenv.connections import BUDGET
from sqlenv.datasets.base import Dataset, DatasetError, Example, cache_dir
from sqlenv.executor import ExecutionResult, Executor, ExecutorConfig
from sqlenv.matching import MatchResult, match_answer, result_to_answer

ON_INVALID = ("exclude", "flag", "raise")
#: Gold statuses: "ok", "empty" (no rows), "missing_db", or an executor error kind.
OK, EMPTY, MISSING_DB = "ok", "empty", "missing_db"
#: ``Example.answer`` is cut to this many characters (the full gold rows are kept for scoring).
MAX_ANSWER_CHARS = 2_000
#: Bump when the cached gold format changes.
GOLD_CACHE_VERSION = 1


@dataclass(frozen=True)
class GoldResult:
    """The validated gold of one question: rows (for a gold query or given rows) or an answer string."""

    status: str
    rows: tuple[tuple, ...] = ()
    columns: tuple[str, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


class MissingDatabaseWarning(UserWarning):
    """Some questions were excluded because their database file is missing."""


@dataclass(frozen=True)
class Problem:
    """A question whose gold could not be validated."""

    id: str
    db_id: str
    status: str
    message: str
    sql: str | None


@dataclass
class LoadSummary:
    """What loading found: counts, gold problems, and how they were handled (``str()`` reads well)."""

    dataset: str
    split: str
    read: int = 0
    kept: int = 0
    on_invalid: str = "exclude"
    problems: list[Problem] = field(default_factory=list)
    executed: int = 0  # gold queries run now
    cached: int = 0  # gold results found in the memory or disk cache
    seconds: float = 0.0
    empty_kept: list[str] = field(default_factory=list)  # ids kept with an empty gold (empty_match)

    @property
    def counts(self) -> dict[str, int]:
        """Problem statuses and how many questions have each."""
        return dict(Counter(p.status for p in self.problems))

    @property
    def missing_databases(self) -> dict[str, int]:
        """Missing databases: ``db_id`` -> number of questions excluded for it (every mode)."""
        return dict(sorted(Counter(p.db_id for p in self.problems if p.status == MISSING_DB).items()))

    @property
    def excluded(self) -> list[Problem]:
        """Questions left out: missing databases always, gold problems with ``"exclude"``."""
        if self.on_invalid == "exclude":
            return list(self.problems)
        return [p for p in self.problems if p.status == MISSING_DB]

    @property
    def flagged(self) -> list[Problem]:
        """Questions kept with a gold problem (``on_invalid="flag"``)."""
        if self.on_invalid != "flag":
            return []
        return [p for p in self.problems if p.status != MISSING_DB]

    def __str__(self) -> str:
        head = (
            f"{self.dataset}/{self.split}: {self.read} questions read, {self.kept} kept "
            f"({self.executed} gold queries executed, {self.cached} from cache, {self.seconds:.1f}s)"
        )
        lines = [head]
        if self.empty_kept:
            lines.append(
                f"kept {len(self.empty_kept)} with an empty gold result "
                "(empty_match=True: only an empty prediction matches them)"
            )
        if not self.problems:
            lines[0] += "; every gold result validated"
            return "\n".join(lines)
        missing = self.missing_databases
        if missing:
            names = ", ".join(f"{db!r} ({n})" for db, n in missing.items())
            lines.append(
                f"missing {len(missing)} database(s), {sum(missing.values())} question(s) "
                f"excluded: {names}"
            )
        for verb, group in (("excluded", self.excluded), ("flagged", self.flagged)):
            group = [p for p in group if p.status != MISSING_DB]
            if not group:
                continue
            counts = Counter(p.status for p in group)
            parts = ", ".join(
                f"{n} {_STATUS_WORDS.get(s, 'gold error: ' + s)}" for s, n in sorted(counts.items())
            )
            lines.append(f"{verb} {len(group)}: {parts}")
        for p in self.problems[:10]:
            lines.append(f"  {p.id} [{p.db_id}] {p.status}: {p.message}")
        if len(self.problems) > 10:
            lines.append(f"  ... {len(self.problems) - 10} more (dataset.summary.problems)")
        return "\n".join(lines)


_STATUS_WORDS = {
    EMPTY: "empty gold result",
    MISSING_DB: "missing database",
    "timeout": "gold timeout",
    "too_large": "gold result too large",
}


@dataclass(frozen=True)
class Question:
    """One raw question, before validation (what a loader reads from its files)."""

    id: str
    question: str
    db_id: str
    db_path: Path | None
    sql: str | None = None
    answer: Any = None  # given gold: a string, or rows (list of lists / scalars)
    evidence: str = ""
    difficulty: str | None = None
    question_type: str = ""
    metadata: dict = field(default_factory=dict, compare=False, hash=False)


class ResultSetDataset(Dataset):
    """A split of questions over real SQLite files, scored by a result-set comparator.

    ``database(example)`` is the question's SQLite file; ``match(example, rows)`` compares rows
    with the cached gold rows (:mod:`sqlenv.comparators`); ``describe`` renders the schema with
    :mod:`sqlenv.schema`, cut to ``schema_tokens``; ``summary`` is the :class:`LoadSummary`.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        name: str,
        split: str,
        databases: dict[str, Path],
        gold: dict[str, GoldResult],
        comparator: Comparator,
        summary: LoadSummary,
        schema_tokens: int | None = schema_mod.DEFAULT_MAX_TOKENS,
    ):
        super().__init__(examples)
        self.name, self.split, self.schema = name, split, "tables"
        self.databases = dict(databases)
        self.gold = dict(gold)
        self.comparator = comparator
        self.summary = summary
        self.schema_tokens = schema_tokens

    def database(self, example: Example) -> Path:
        try:
            return self.databases[example.db_key]
        except KeyError:
            raise DatasetError(f"no database for db_key {example.db_key!r} in {self!r}") from None

    def gold_result(self, example: Example) -> GoldResult:
        return self.gold[example.id]

    def describe(self, path: str | os.PathLike, sample_rows: int, column_values: int = 0) -> tuple[str, str]:
        return schema_mod.describe(path, sample_rows, self.schema_tokens, column_values=column_values)

    def match(self, example: Example, rows) -> MatchResult:
        gold = self.gold.get(example.id)
        if gold is None or gold.status not in (OK, EMPTY, "answer"):
            return MatchResult(
                correct=False, exact=0.0, relaxed=0.0, f1=0.0
            )  # gold failed: flagged
        if gold.status == "answer":  # a gold answer string (JSONL without SQL or rows)
            return match_answer(rows, gold.message)
        return self.comparator(rows, gold.rows, example.gold_sql)


# ---------------------------------------------------------------------- building a dataset
def build(
    questions: Sequence[Question],
    *,
    name: str,
    split: str,
    comparator: str | Comparator = "bird",
    empty_match: bool = False,
    float_tol: float | None = None,
    normalize: bool = True,
    official_quirks: bool = True,
    on_invalid: str = "exclude",
    gold_timeout: float = 10.0,
    gold_max_rows: int = 10_000,
    gold_workers: int = 0,
    use_cache: bool = True,
    schema_tokens: int | None = schema_mod.DEFAULT_MAX_TOKENS,
    evidence_in_question: bool = False,
) -> ResultSetDataset:
    """Validate the gold of ``questions`` and make the dataset (see the module docstring)."""
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid={on_invalid!r}; choose one of {list(ON_INVALID)}")
    cmp = _comparator(comparator, empty_match, float_tol, normalize, official_quirks)
    start = time.perf_counter()
    summary = LoadSummary(dataset=name, split=split, read=len(questions), on_invalid=on_invalid)
    _check_unique_ids(questions, name, split)
    config = ExecutorConfig(timeout=gold_timeout, max_rows=gold_max_rows)
    gold = compute_gold(
        questions, config, workers=gold_workers, use_cache=use_cache, summary=summary
    )
    examples, databases = _keep_examples(questions, gold, cmp, summary, evidence_in_question)
    summary.kept = len(examples)
    summary.seconds = time.perf_counter() - start
    if on_invalid == "raise" and any(p.status != MISSING_DB for p in summary.problems):
        summary.kept = 0
        raise DatasetError(f"gold validation failed (on_invalid='raise'):\n{summary}")
    missing = summary.missing_databases
    if missing:  # here, not in a helper: stacklevel=4 names the caller of load_dataset
        warnings.warn(
            f"{name}/{split}: {len(missing)} database(s) missing, "
            f"{sum(missing.values())} question(s) excluded: "
            + ", ".join(f"{db!r} ({n})" for db, n in missing.items()),
            MissingDatabaseWarning,
            stacklevel=4,
        )
    return ResultSetDataset(
        examples,
        name=name,
        split=split,
        databases=databases,
        gold={e.id: gold[e.id] for e in examples},
        comparator=cmp,
        summary=summary,
        schema_tokens=schema_tokens,
    )


def _comparator(
    comparator: str | Comparator,
    empty_match: bool,
    float_tol: float | None,
    normalize: bool,
    official_quirks: bool,
) -> Comparator:
    """``comparator`` itself if it is one, else the named comparator with these options."""
    if isinstance(comparator, Comparator):
        return comparator
    return get_comparator(
        comparator,
        empty_match=empty_match,
        float_tol=float_tol,
        normalize=normalize,
        official_quirks=official_quirks,
    )


def _check_unique_ids(questions: Sequence[Question], name: str, split: str) -> None:
    ids = Counter(q.id for q in questions)
    duplicates = [i for i, n in ids.items() if n > 1]
    if duplicates:
        raise DatasetError(f"{name}/{split}: question ids repeat: {duplicates[:5]}")


def _keep_examples(
    questions: Sequence[Question],
    gold: dict[str, GoldResult],
    cmp: Comparator,
    summary: LoadSummary,
    evidence_in_question: bool,
) -> tuple[list[Example], dict[str, Path]]:
    """The examples to ask, and the database of each db_id; invalid gold is recorded in
    ``summary`` and, under ``exclude`` (always for a missing database), leaves its question out."""
    examples: list[Example] = []
    databases: dict[str, Path] = {}
    for q in questions:
        g = gold[q.id]
        if g.status == EMPTY and cmp.empty_match:
            summary.empty_kept.append(q.id)  # scoreable: only an empty prediction matches
        elif g.status not in (OK, "answer"):
            summary.problems.append(Problem(q.id, q.db_id, g.status, g.message, q.sql))
            if summary.on_invalid == "exclude" or g.status == MISSING_DB:
                continue  # a question without its database cannot be asked, in any mode
        examples.append(_example(q, g, evidence_in_question))
        if q.db_path is not None:
            databases[q.db_id] = q.db_path
    return examples, databases


def _example(q: Question, g: GoldResult, evidence_in_question: bool) -> Example:
    """The Example of question ``q`` with gold ``g``: its answer text and metadata."""
    text = q.question
    if evidence_in_question and q.evidence:
        text = f"{text}\nHint: {q.evidence}"
    metadata = {**q.metadata, "db_id": q.db_id, "evidence": q.evidence, "gold_status": g.status}
    if g.status == "answer":
        answer = g.message
    else:
        answer = _cut(result_to_answer(g.rows))
        metadata["gold_columns"] = list(g.columns)
    return Example(
        id=q.id,
        question=text,
        answer=answer,
        db_key=q.db_id,
        question_type=q.question_type,
        difficulty=q.difficulty,
        gold_sql=q.sql,
        metadata=metadata,
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ANSWER_CHARS else text[: MAX_ANSWER_CHARS - 4] + " ..."


def _given_rows(answer: Any) -> tuple[tuple, ...]:
    rows = []
    for row in answer:
        rows.append(tuple(row) if isinstance(row, (list, tuple)) else (row,))
    return tuple(rows)


def compute_gold(
    questions: Sequence[Question],
    config: ExecutorConfig,
    *,
    workers: int = 0,
    use_cache: bool = True,
    summary: LoadSummary | None = None,
) -> dict[str, GoldResult]:
    """Gold result of each question id: given rows/answer, or its gold SQL run once (cached)."""
    out: dict[str, GoldResult] = {}
    todo: dict[Path, dict[str, list[str]]] = {}  # db -> sql -> question ids
    for q in questions:
        if q.sql is None:
            if q.answer is None:
                out[q.id] = GoldResult(
                    "no_gold", message="the question has neither gold SQL nor a gold answer"
                )
            elif isinstance(q.answer, str) and not q.answer.strip():
                out[q.id] = GoldResult(EMPTY, message="the gold answer is empty")
            elif isinstance(q.answer, str):
                out[q.id] = GoldResult("answer", message=q.answer)
            else:
                rows = _given_rows(q.answer)
                out[q.id] = GoldResult(
                    OK if rows else EMPTY, rows, message="" if rows else "the gold rows are empty"
                )
            continue
        if q.db_path is None or not Path(q.db_path).is_file():
            out[q.id] = GoldResult(
                MISSING_DB,
                message=f"no SQLite file for db_id {q.db_id!r}"
                + (f" at {str(q.db_path)!r}" if q.db_path else ""),
            )
            continue
        todo.setdefault(Path(q.db_path), {}).setdefault(q.sql, []).append(q.id)
    if not todo:
        return out
    cache = _GOLD_CACHE if use_cache else None
    executor = Executor(config)
    try:
        for db_path, by_sql in todo.items():
            db_hash = file_sha256(db_path) if cache is not None else ""
            sqls = list(by_sql)
            keys = [_key(db_hash, sql, config) for sql in sqls]
            found = cache.get_many(keys) if cache is not None else {}
            missing = [(sql, key) for sql, key in zip(sqls, keys) if key not in found]
            if missing:
                results = executor.execute_group(
                    db_path, [sql for sql, _ in missing], workers=workers
                )
                fresh = {key: _gold_from(result) for (_, key), result in zip(missing, results)}
                if cache is not None:
                    cache.put_many(fresh)
                found.update(fresh)
            if summary is not None:
                summary.executed += len(missing)
                summary.cached += len(sqls) - len(missing)
            for sql, key in zip(sqls, keys):
                for qid in by_sql[sql]:
                    out[qid] = found[key]
    finally:
        executor.close()
    return out


def _gold_from(result: ExecutionResult) -> GoldResult:
    if result.error is not None:
        return GoldResult(result.error, message=result.message)
    if not result.rows:
        return GoldResult(EMPTY, (), tuple(result.columns), "the gold query returns no rows")
    return GoldResult(OK, tuple(tuple(r) for r in result.rows), tuple(result.columns))


def _key(db_hash: str, sql: str, config: ExecutorConfig) -> str:
    text = json.dumps(
        [GOLD_CACHE_VERSION, db_hash, sql, config.timeout, config.max_rows, config.max_bytes]
    )
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


# ---------------------------------------------------------------------- caches
def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, memoised in memory and on disk by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    ident = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    digest = _HASHES.get(ident)
    if digest is None:
        digest = _GOLD_CACHE.get_hash(ident)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        _GOLD_CACHE.put_hash(ident, digest)
    _HASHES[ident] = digest
    return digest


_HASHES: dict[str, str] = {}


def _encode(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(v)).decode("ascii")}
    return v


def _decode(v: Any) -> Any:
    if isinstance(v, dict) and "b64" in v:
        return base64.b64decode(v["b64"])
    return v


class _GoldCache:
    """Gold results in memory and in ``cache_dir()/gold.sqlite`` (safe to share between processes)."""

    MEMORY_LIMIT = 200_000

    def __init__(self):
        self._memory: dict[str, GoldResult] = {}
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection | None:
        path = cache_dir() / "gold.sqlite"
        BUDGET.make_room()  # within the process's connection budget, like every sqlenv connection
        try:
            conn = sqlite3.connect(path, timeout=30)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS gold (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS file_hash (ident TEXT PRIMARY KEY, sha256 TEXT NOT NULL)"
            )
            return conn
        except sqlite3.Error:  # a read-only or broken cache only costs speed
            return None

    def get_many(self, keys: Iterable[str]) -> dict[str, GoldResult]:
        keys = list(keys)
        out = {k: self._memory[k] for k in keys if k in self._memory}
        rest = [k for k in keys if k not in out]
        if rest:
            conn = self._conn()
            if conn is not None:
                try:
                    for i in range(0, len(rest), 500):
                        chunk = rest[i : i + 500]
                        marks = ",".join("?" * len(chunk))
                        for key, value in conn.execute(
                            f"SELECT key, value FROM gold WHERE key IN ({marks})", chunk
                        ):
                            data = json.loads(value)
                            out[key] = GoldResult(
                                data["status"],
                                tuple(tuple(_decode(v) for v in r) for r in data["rows"]),
                                tuple(data["columns"]),
                                data["message"],
                            )
                except (sqlite3.Error, ValueError, KeyError):
                    pass
                finally:
                    conn.close()
            self._remember({k: out[k] for k in rest if k in out})
        return out

    def put_many(self, items: dict[str, GoldResult]) -> None:
        self._remember(items)
        conn = self._conn()
        if conn is None:
            return
        try:
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO gold (key, value) VALUES (?, ?)",
                    [
                        (
                            k,
                            json.dumps(
                                {
                                    "status": g.status,
                                    "rows": [[_encode(v) for v in r] for r in g.rows],
                                    "columns": list(g.columns),
                                    "message": g.message,
                                }
                            ),
                        )
                        for k, g in items.items()
                    ],
                )
        except sqlite3.Error:
            pass
        finally:
            conn.close()

    def get_hash(self, ident: str) -> str | None:
        conn = self._conn()
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT sha256 FROM file_hash WHERE ident = ?", (ident,)).fetchone()
            return row[0] if row else None
        except sqlite3.Error:
            return None
        finally:
            conn.close()

    def put_hash(self, ident: str, digest: str) -> None:
        conn = self._conn()
        if conn is None:
            return
        try:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO file_hash (ident, sha256) VALUES (?, ?)",
                    (ident, digest),
                )
        except sqlite3.Error:
            pass
        finally:
            conn.close()

    def _remember(self, items: dict[str, GoldResult]) -> None:
        with self._lock:
            if len(self._memory) + len(items) > self.MEMORY_LIMIT:
                self._memory.clear()
            self._memory.update(items)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()
        _HASHES.clear()


_GOLD_CACHE = _GoldCache()


def clear_memory_cache() -> None:
    """Forget the in-memory gold results and file hashes (the disk cache stays)."""
    _GOLD_CACHE.clear_memory()
