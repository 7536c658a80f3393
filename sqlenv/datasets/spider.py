"""Spider, BIRD and generic JSONL question files over real SQLite databases.

``load_dataset("spider", split="dev", data_dir="path/to/spider")``
    Spider's layout: ``train_spider.json`` + ``train_others.json`` (train), ``dev.json``,
    ``test.json``; records ``{"question", "query", "db_id"}``; databases at
    ``database/<db_id>/<db_id>.sqlite`` (``test_database/`` for test). ``data_dir`` may also be
    the folder above (holding ``spider/`` or ``spider_data/``).
``load_dataset("bird", split="dev", data_dir="path/to/bird")``
    BIRD's layout: ``dev.json`` + ``dev_databases/`` (``train.json`` + ``train_databases/``),
    records ``{"question", "SQL", "db_id", "evidence", "difficulty", "question_id"}``. The files
    may sit in ``data_dir`` or in a sub-folder named after the split (``dev/``,
    ``dev_20240627/``, ``train/``); a doubly nested ``dev_databases/dev_databases/`` is fine.
``load_dataset("jsonl", split="train", data_dir=..., file="questions.jsonl", db="my.sqlite")``
    One JSON object per line: ``question`` plus gold ``sql`` (or ``query``/``SQL``) or a gold
    ``answer`` (rows as a list of lists, or a string scored by the default matcher); the database
    is ``db`` (a path relative to the file) or ``db_id``, else the ``db=`` argument. Optional:
    ``id``, ``evidence``, ``difficulty``, ``question_type``.

Options shared by all three (keywords of ``load_dataset``):
    ``questions_file`` / ``db_dir``: override the file names of the layout (Spider/BIRD);
    ``comparator`` (``"spider"`` for Spider and JSONL, ``"bird"`` for BIRD), ``empty_match``,
    ``float_tol``, ``normalize``, ``official_quirks``: how results are compared
    (:mod:`sqlenv.comparators`); ``on_invalid`` (``"exclude"``/``"flag"``/``"raise"``; a question
    whose database file is missing is excluded in every mode), ``gold_timeout`` (10 s),
    ``gold_max_rows`` (10,000), ``gold_workers``, ``use_cache``: gold validation
    (:mod:`sqlenv.datasets.resultset`); ``evidence_in_question`` (BIRD default True): append
    ``"Hint: <evidence>"`` to the question; ``schema_tokens``: the schema budget of the
    observation; ``limit``: keep only the first N questions (before validation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from sqlenv.datasets.base import DatasetError, register_dataset, resolve_data_dir
from sqlenv.datasets.resultset import Question, ResultSetDataset, build

SPIDER_SPLITS = ("train", "dev", "test")
BIRD_SPLITS = ("train", "dev")
JSONL_SPLITS = ("train", "dev", "test")

SPIDER_FILES = {
    "train": ("train_spider.json", "train_others.json"),
    "dev": ("dev.json",),
    "test": ("test.json",),
}
SPIDER_DB_DIRS = {
    "train": ("database",),
    "dev": ("database",),
    "test": ("test_database", "database"),
}
BIRD_FILES = {"train": ("train.json",), "dev": ("dev.json",)}
BIRD_DB_DIRS = {
    "train": ("train_databases", "databases", "database"),
    "dev": ("dev_databases", "databases", "database"),
}
_BIRD_NO_EVIDENCE = {"", "false", "none"}  # BIRD writes "False" where a question has no evidence
_BUILD_OPTIONS = (
    "comparator",
    "empty_match",
    "float_tol",
    "normalize",
    "official_quirks",
    "on_invalid",
    "gold_timeout",
    "gold_max_rows",
    "gold_workers",
    "use_cache",
    "schema_tokens",
    "evidence_in_question",
)


def find_database(db_root: Path, db_id: str) -> Path | None:
    """``<root>/<db_id>/<db_id>.sqlite`` (or ``.db``), else ``<root>/<db_id>.sqlite``; None if absent."""
    for candidate in (
        db_root / db_id / f"{db_id}.sqlite",
        db_root / db_id / f"{db_id}.db",
        db_root / f"{db_id}.sqlite",
        db_root / f"{db_id}.db",
    ):
        if candidate.is_file():
            return candidate
    return None


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read questions file {str(path)!r}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{str(path)!r} must hold a JSON list of question objects")
    return data


def _field(
    record: dict, names: Sequence[str], path: Path, index: int, required: bool = True
) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    if required:
        raise DatasetError(
            f"{str(path)!r} record {index}: missing field {' / '.join(repr(n) for n in names)}"
        )
    return None


def _as_files(value: str | os.PathLike | Sequence[str | os.PathLike], root: Path) -> list[Path]:
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    return [p if p.is_absolute() else root / p for p in (Path(i).expanduser() for i in items)]


def _pick_root(data_dir: Path, first_file: str, subdirs: Sequence[str]) -> Path:
    candidates = [data_dir] + [data_dir / s for s in subdirs]
    for root in candidates:
        if (root / first_file).is_file():
            return root
    tried = ", ".join(repr(str(c / first_file)) for c in candidates)
    raise DatasetError(
        f"questions file not found; looked for {tried} (pass questions_file=... to name it)"
    )


def _pick_db_root(roots: Sequence[Path], db_dirs: Sequence[str], db_ids: Sequence[str]) -> Path:
    candidates: list[Path] = []
    for root in roots:
        for d in db_dirs:
            candidates += [root / d, root / d / d]
    candidates = [c for c in dict.fromkeys(candidates) if c.is_dir()]
    probe = list(dict.fromkeys(db_ids))[:20]
    best, best_hits = None, 0
    for c in candidates:
        hits = sum(find_database(c, db) is not None for db in probe)
        if hits > best_hits:
            best, best_hits = c, hits
    if best is None:
        looked = ", ".join(repr(str(r / d)) for r in roots for d in db_dirs)
        raise DatasetError(
            f"no database folder holding <db_id>/<db_id>.sqlite found; looked in {looked} "
            "(pass db_dir=... to name it)"
        )
    return best


def _split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    build_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _BUILD_OPTIONS}
    return build_kw, kwargs


def _check_schema(schema: str, name: str) -> None:
    if schema not in ("tables", None):
        raise DatasetError(
            f"schema={schema!r} does not apply to {name!r}: its databases have their own schema; "
            "pass schema='tables' (agents/grpo_train.py: --schema tables)"
        )


def _limit(items: list, limit: int | None) -> list:
    if limit is None:
        return items
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit={limit!r} must be an integer >= 0 or None")
    return items[:limit]


def _reject_unknown(name: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(
            f"load_dataset({name!r}) got unknown options {sorted(kwargs)}; "
            f"known: questions_file, db_dir, limit, {', '.join(_BUILD_OPTIONS)}"
        )


# ---------------------------------------------------------------------- Spider
def load_spider(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    schema: str = "tables",
    questions_file: str | Sequence[str] | None = None,
    db_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    **kwargs,
) -> ResultSetDataset:
    """Spider (or any dataset in Spider's format); see the module docstring."""
    _check_schema(schema, "spider")
    build_kw, rest = _split_kwargs(kwargs)
    _reject_unknown("spider", rest)
    data = resolve_data_dir(data_dir, "spider")
    if questions_file is not None:
        files = _as_files(questions_file, data)
        root = files[0].parent
    else:
        root = _pick_root(
            data, SPIDER_FILES[split][0], ("spider", "spider_data", "spider_data/spider")
        )
        files = [root / f for f in SPIDER_FILES[split] if (root / f).is_file()]
    records: list[tuple[Path, int, dict]] = []
    for f in files:
        if not f.is_file():
            raise DatasetError(f"questions file {str(f)!r} not found")
        records += [(f, i, r) for i, r in enumerate(_read_json_list(f))]
    records = _limit(records, limit)
    db_ids = [str(_field(r, ("db_id",), f, i)) for f, i, r in records]
    db_root = (
        Path(db_dir).expanduser()
        if db_dir is not None
        else _pick_db_root([root, data], SPIDER_DB_DIRS[split], db_ids)
    )
    questions = []
    for n, ((f, i, r), db_id) in enumerate(zip(records, db_ids)):
        questions.append(
            Question(
                id=f"spider-{split}-{n:05d}",
                question=str(_field(r, ("question",), f, i)).strip(),
                db_id=db_id,
                db_path=find_database(db_root, db_id),
                sql=str(_field(r, ("query", "SQL", "sql"), f, i)).strip(),
                evidence=str(r.get("evidence") or ""),
                difficulty=r.get("difficulty") or r.get("hardness"),
                metadata={"source": f.name, "row": i},
            )
        )
    build_kw.setdefault("comparator", "spider")
    return build(questions, name="spider", split=split, **build_kw)


# ---------------------------------------------------------------------- BIRD
def load_bird(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    schema: str = "tables",
    questions_file: str | os.PathLike | None = None,
    db_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    **kwargs,
) -> ResultSetDataset:
    """BIRD (or any dataset in BIRD's format); see the module docstring."""
    _check_schema(schema, "bird")
    build_kw, rest = _split_kwargs(kwargs)
    _reject_unknown("bird", rest)
    data = resolve_data_dir(data_dir, "bird")
    if questions_file is not None:
        path = _as_files(questions_file, data)[0]
        root = path.parent
    else:
        subdirs = [split, f"bird/{split}", "bird"] + sorted(
            p.name
            for p in data.glob(f"{split}_*")
            if p.is_dir() and not p.name.endswith("_databases")
        )
        root = _pick_root(data, BIRD_FILES[split][0], subdirs)
        path = root / BIRD_FILES[split][0]
    if not path.is_file():
        raise DatasetError(f"questions file {str(path)!r} not found")
    records = _limit(list(enumerate(_read_json_list(path))), limit)
    db_ids = [str(_field(r, ("db_id",), path, i)) for i, r in records]
    db_root = (
        Path(db_dir).expanduser()
        if db_dir is not None
        else _pick_db_root([root, data], BIRD_DB_DIRS[split], db_ids)
    )
    questions = []
    for (i, r), db_id in zip(records, db_ids):
        evidence = str(r.get("evidence") or "").strip()
        if evidence.lower() in _BIRD_NO_EVIDENCE:
            evidence = ""
        qid = r.get("question_id", i)
        questions.append(
            Question(
                id=f"bird-{split}-{qid}",
                question=str(_field(r, ("question",), path, i)).strip(),
                db_id=db_id,
                db_path=find_database(db_root, db_id),
                sql=str(_field(r, ("SQL", "query", "sql"), path, i)).strip(),
                evidence=evidence,
                difficulty=r.get("difficulty"),
                metadata={"source": path.name, "row": i, "question_id": qid},
            )
        )
    build_kw.setdefault("comparator", "bird")
    build_kw.setdefault("evidence_in_question", True)
    return build(questions, name="bird", split=split, **build_kw)


# ---------------------------------------------------------------------- JSONL
def load_jsonl(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    schema: str = "tables",
    file: str | os.PathLike | None = None,
    db: str | os.PathLike | None = None,
    limit: int | None = None,
    name: str = "jsonl",
    **kwargs,
) -> ResultSetDataset:
    """Questions from a JSONL file over any SQLite database(s); see the module docstring."""
    _check_schema(schema, "jsonl")
    build_kw, rest = _split_kwargs(kwargs)
    _reject_unknown("jsonl", rest)
    path, data = _jsonl_file(file, data_dir, split)
    default_db = None
    if db is not None:
        default_db = Path(db).expanduser()
        default_db = default_db if default_db.is_absolute() else data / default_db
    records = _limit(_read_jsonl(path), limit)
    questions = [
        _jsonl_question(r, path, lineno, data, default_db, f"{name}-{split}-{lineno:05d}")
        for lineno, r in records
    ]
    build_kw.setdefault("comparator", "spider")
    return build(questions, name=name, split=split, **build_kw)


def _jsonl_file(
    file: str | os.PathLike | None, data_dir: str | os.PathLike | None, split: str
) -> tuple[Path, Path]:
    """(the questions file, the folder relative paths start from)."""
    if file is not None and Path(file).expanduser().is_absolute() and data_dir is None:
        path = Path(file).expanduser()
        data = path.parent
    else:
        data = resolve_data_dir(data_dir, "jsonl")
        path = data / (file if file is not None else f"{split}.jsonl")
    if not path.is_file():
        raise DatasetError(
            f"questions file {str(path)!r} not found (pass file=... relative to data_dir)"
        )
    return path, data


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{str(path)!r} line {lineno}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{str(path)!r} line {lineno}: expected a JSON object")
            records.append((lineno, record))
    return records


def _jsonl_question(
    r: dict, path: Path, lineno: int, data: Path, default_db: Path | None, default_id: str
) -> Question:
    """The Question of line ``lineno``: its gold (SQL or answer) and its database checked."""
    sql = _field(r, ("sql", "query", "SQL", "gold_sql"), path, lineno, required=False)
    answer = r.get("answer")
    if sql is None and answer is None:
        raise DatasetError(
            f"{str(path)!r} line {lineno}: needs a gold 'sql' (or 'query') or an 'answer'"
        )
    if answer is not None and not isinstance(answer, (str, list)):
        raise DatasetError(
            f"{str(path)!r} line {lineno}: 'answer' must be a string or a list of rows"
        )
    db_path, db_id = _jsonl_database(r, path, lineno, data, default_db)
    if db_path is None or not db_path.is_file():
        if sql is None:  # nothing to execute, but the env needs the file
            raise DatasetError(f"{str(path)!r} line {lineno}: database for {db_id!r} not found")
    return Question(
        id=str(r.get("id", default_id)),
        question=str(_field(r, ("question",), path, lineno)).strip(),
        db_id=_db_key(db_id, db_path),
        db_path=db_path,
        sql=None if sql is None else str(sql).strip(),
        answer=answer if sql is None else None,
        evidence=str(r.get("evidence") or ""),
        difficulty=r.get("difficulty"),
        question_type=str(r.get("question_type") or ""),
        metadata={
            "source": path.name,
            "line": lineno,
            "db_name": db_id,
            **({"given_answer": answer} if sql is not None and answer is not None else {}),
        },
    )


def _jsonl_database(
    r: dict, path: Path, lineno: int, data: Path, default_db: Path | None
) -> tuple[Path | None, str]:
    """(database file or None if not found, db_id) of a line: its ``db``, else its ``db_id``, else
    the ``db=`` argument."""
    if r.get("db"):
        db_path = Path(str(r["db"])).expanduser()
        db_path = db_path if db_path.is_absolute() else path.parent / db_path
        return db_path, str(r.get("db_id") or db_path.stem)
    if r.get("db_id"):
        db_id = str(r["db_id"])
        db_path = (
            find_database(data, db_id)
            or find_database(data / "database", db_id)
            or (default_db if default_db is not None and default_db.stem == db_id else None)
        )
        return db_path, db_id
    if default_db is not None:
        return default_db, default_db.stem
    raise DatasetError(
        f"{str(path)!r} line {lineno}: no database: give 'db' or 'db_id', or pass db=..."
    )


def _db_key(db_id: str, db_path: Path | None) -> str:
    """The env's per-database key: the file's resolved path (two folders may hold an ``x.sqlite`` each)."""
    return db_id if db_path is None else str(db_path.resolve())


register_dataset("spider", load_spider, SPIDER_SPLITS)
register_dataset("bird", load_bird, BIRD_SPLITS)
register_dataset("jsonl", load_jsonl, JSONL_SPLITS)
