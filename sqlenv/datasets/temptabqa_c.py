"""TempTabQA-C (Kulkarni et al., Findings of ACL 2025): temporal questions over athletes' medal infoboxes.

Files come from the benchmark's repository (github.com/CoRAL-ASU/TEMPTABQA-C), found through
``data_dir=...`` or ``$SQLENV_DATA_DIR``; nothing is downloaded. Splits and their files:

============== =================================================================== ======
split          file                                                                 rows
============== =================================================================== ======
train          Train_set/train_set.tsv                                              2961
dev            Dev_set/dev_set.tsv                                                   282
original       Test_Dataset_with_Splits/Original.tsv                                 578
counterfactual Test_Dataset_with_Splits/CounterFactual.tsv                           699
small          Test_Dataset_with_Splits/Original_Small_Table.tsv                     855
large          Test_Dataset_with_Splits/Original_Large_Table.tsv                     538
easy           Test_Dataset_with_Splits/Easy.tsv                                     732
medium         Test_Dataset_with_Splits/Medium.tsv                                   507
hard           Test_Dataset_with_Splits/Hard.tsv                                     719
gold-sql       Dataset_Creation/Questions_Answers_with_SQL_Logic/                     47
               One_Sample_Per_Question_Template.csv (one question per template, with SQL)
============== =================================================================== ======

The test splits overlap one another. Every example's database is built from its own ``Context``
(the infobox text) by :mod:`sqlenv.infobox`; ``db_key`` is a hash of that text. Only the
``gold-sql`` split carries ``gold_sql``: the benchmark's MySQL converted to SQLite by
:func:`mysql_to_sqlite`, plus the corrections in ``GOLD_SQL_CORRECTIONS`` where the benchmark's SQL
contradicts its own answers (each one explained there).

Blank ``Difficulty`` cells in Easy/Medium/Hard.tsv (339, 156 and 406 rows) take the difficulty of
their file; ``metadata["difficulty_source"]`` says which.

Seven answer cells (2 in Original_Small_Table.tsv, 5 in Hard.tsv, all of type 75 or 77, "In which
format/city did X win his/her first International medal ?") read "No international medals found."
run into another template's question ("...found.Type12: How many International medals did ...?");
no prediction can match them. ``ANSWER_CORRECTIONS`` replaces each with the answer its own infobox
gives (the one the other splits give where they hold the same question and context), keyed by
split, question and the defective text, so a source fixed upstream loads unchanged. A corrected
example keeps the raw cell in ``metadata["answer"]`` and records ``metadata["answer_corrected_from"]``
(the defective text) and ``metadata["answer_correction"]`` (why). Splits that disagree on a real
answer for the same question and context (14 such pairs among small, large, easy, hard and
original) are left as the benchmark wrote them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import sys
from pathlib import Path

import sqlglot
from sqlglot import exp

from sqlenv import infobox
from sqlenv.datasets.base import Dataset, DatasetError, Example, register_dataset, resolve_data_dir

__all__ = [
    "ANSWER_CORRECTIONS", "GOLD_SQL_CORRECTIONS", "GOLD_SQL_FILE", "NAME", "SPLIT_FILES", "SPLITS", "TempTabQACDataset",
    "load_gold_sql", "load_temptabqa_c", "mysql_to_sqlite",
]

NAME = "temptabqa-c"
SPLIT_FILES = {
    "train": "Train_set/train_set.tsv",
    "dev": "Dev_set/dev_set.tsv",
    "original": "Test_Dataset_with_Splits/Original.tsv",
    "counterfactual": "Test_Dataset_with_Splits/CounterFactual.tsv",
    "small": "Test_Dataset_with_Splits/Original_Small_Table.tsv",
    "large": "Test_Dataset_with_Splits/Original_Large_Table.tsv",
    "easy": "Test_Dataset_with_Splits/Easy.tsv",
    "medium": "Test_Dataset_with_Splits/Medium.tsv",
    "hard": "Test_Dataset_with_Splits/Hard.tsv",
}
GOLD_SQL_FILE = "Dataset_Creation/Questions_Answers_with_SQL_Logic/One_Sample_Per_Question_Template.csv"
SPLITS = (*SPLIT_FILES, "gold-sql")
REQUIRED_COLUMNS = ("Questions", "Answers", "Context", "Types")
_FILE_DIFFICULTY = {"easy": "Easy", "medium": "Medium", "hard": "Hard"}


class TempTabQACDataset(Dataset):
    """A TempTabQA-C split; ``database(example)`` builds (once) the example's infobox database."""

    name = NAME

    def __init__(self, examples, split: str, schema: str = "tables"):
        super().__init__(examples)
        self.split = split
        self.schema = schema

    def database(self, example: Example) -> Path:
        if example.context is None:
            raise DatasetError(f"example {example.id!r} has no context to build a database from")
        return infobox.database_for_context(example.context, self.schema)


# ---------------------------------------------------------------------------------------------
# MySQL -> SQLite
# ---------------------------------------------------------------------------------------------

def _strftime_int(fmt: str, value: exp.Expression) -> exp.Expression:
    if isinstance(value, exp.TsOrDsToDate):  # sqlglot wraps date arguments in DATE(...)
        value = value.this
    return exp.cast(exp.Anonymous(this="STRFTIME", expressions=[exp.Literal.string(fmt), value.copy()]),
                    "INTEGER")


def _date_diff(unit: str, start: exp.Expression, end: exp.Expression) -> exp.Expression | None:
    """MySQL ``TIMESTAMPDIFF(unit, start, end)``: whole units from start to end, as SQLite."""
    start_sql, end_sql = start.sql("sqlite"), end.sql("sqlite")
    whole_years = (f"(CAST(STRFTIME('%Y', {end_sql}) AS INTEGER) - CAST(STRFTIME('%Y', {start_sql}) AS INTEGER)"
                   f" - (STRFTIME('%m-%d', {end_sql}) < STRFTIME('%m-%d', {start_sql})))")
    whole_months = (f"((CAST(STRFTIME('%Y', {end_sql}) AS INTEGER) - CAST(STRFTIME('%Y', {start_sql}) AS INTEGER)) * 12"
                    f" + CAST(STRFTIME('%m', {end_sql}) AS INTEGER) - CAST(STRFTIME('%m', {start_sql}) AS INTEGER)"
                    f" - (STRFTIME('%d', {end_sql}) < STRFTIME('%d', {start_sql})))")
    days = f"CAST(JULIANDAY({end_sql}) - JULIANDAY({start_sql}) AS INTEGER)"
    sql = {"YEAR": whole_years, "MONTH": whole_months, "DAY": days}.get(unit.upper())
    return sqlglot.parse_one(sql, read="sqlite") if sql else None


def _fix_for_sqlite(node: exp.Expression) -> exp.Expression:
    """Rewrite the MySQL functions sqlglot leaves as they are (SQLite has none of them)."""
    if isinstance(node, (exp.Year, exp.Month, exp.Day, exp.DayOfMonth)):
        fmt = {exp.Year: "%Y", exp.Month: "%m", exp.Day: "%d", exp.DayOfMonth: "%d"}[type(node)]
        return _strftime_int(fmt, node.this)
    if isinstance(node, exp.TimestampDiff):  # sqlglot: this=end, expression=start
        unit = node.args.get("unit")
        fixed = _date_diff(unit.name if unit is not None else "DAY", node.expression, node.this)
        return fixed if fixed is not None else node
    if isinstance(node, exp.StrToDate):
        return exp.Anonymous(this="DATE", expressions=[node.this.copy()])  # SQLite reads ISO dates only
    if isinstance(node, exp.Anonymous) and node.name.upper() in ("NOW", "SYSDATE"):
        return exp.Anonymous(this="DATETIME", expressions=[exp.Literal.string("now")])
    return node


def mysql_to_sqlite(sql: str, pretty: bool = True) -> str:
    """The benchmark's MySQL as SQLite: ``sqlglot`` (read mysql, write sqlite) plus small fix-ups.

    sqlglot already turns ``CONCAT`` into ``||``, ``IF`` into ``IIF``, ``/`` into real division,
    ``LIMIT a, b`` into ``LIMIT b OFFSET a`` and ``GROUP_CONCAT(x SEPARATOR s)`` into
    ``GROUP_CONCAT(x, s)``. What it leaves unconvertible is rewritten here:

    - ``YEAR(d)``, ``MONTH(d)``, ``DAY(d)`` -> ``CAST(STRFTIME('%Y', d) AS INTEGER)`` etc.;
    - ``TIMESTAMPDIFF(YEAR|MONTH|DAY, a, b)`` -> whole years / months / days from ``a`` to ``b``;
    - ``STR_TO_DATE(x, fmt)`` -> ``DATE(x)`` (SQLite reads ISO ``YYYY-MM-DD`` text only);
    - ``NOW()``/``SYSDATE()`` -> ``DATETIME('now')``.

    MySQL semantics that no rewrite reproduces: its default collation compares text case- and
    accent-insensitively and ignores trailing spaces (``'Team ' = 'team'``); SQLite compares
    bytes. The infobox builder strips names, which covers the trailing spaces of the source.
    """
    statements = [s for s in sqlglot.parse(sql.strip(), read="mysql") if s is not None]
    if len(statements) != 1:
        raise ValueError(f"expected one SQL statement, found {len(statements)}")
    tree = statements[0].transform(_fix_for_sqlite)
    return tree.sql(dialect="sqlite", pretty=pretty)


# Where the benchmark's SQL template disagrees with the benchmark's own answers, keyed by question
# type: (text in the single-line SQLite form, replacement, why). Applied by load_gold_sql.
_ATHLETE_JOIN_BUG = "JOIN Athlete AS a2 ON m2.format_id = a2.athlete_id"
_ATHLETE_JOIN = ("JOIN Format AS f2 ON m2.format_id = f2.format_id "
                 "JOIN Tournament AS t2 ON f2.tournament_id = t2.tournament_id "
                 "JOIN Athlete AS a2 ON t2.athlete_id = a2.athlete_id")
_JOIN_WHY = ("the template's subquery joins Medal to Athlete on m2.format_id = a2.athlete_id, which only "
             "picked the athlete's medals by accident of ids in the benchmark's shared MySQL database; "
             "restored to the Medal-Format-Tournament-Athlete chain its outer query uses")
GOLD_SQL_CORRECTIONS: dict[str, tuple[str, str, str]] = {
    "55": ("ROUND(AVG(medal_count))", "CAST(AVG(medal_count) AS INTEGER)",
           "the template rounds the average medals per year, but the answers truncate it: truncation "
           "matches all 67 type-55 rows of every split, rounding 35"),
    "66": (_ATHLETE_JOIN_BUG, _ATHLETE_JOIN, _JOIN_WHY),
    "75": (_ATHLETE_JOIN_BUG, _ATHLETE_JOIN, _JOIN_WHY),
    "77": (_ATHLETE_JOIN_BUG, _ATHLETE_JOIN, _JOIN_WHY),
}


def _correct_gold_sql(question_type: str, sqlite_sql: str, where: str) -> tuple[str, str | None]:
    correction = GOLD_SQL_CORRECTIONS.get(question_type)
    if correction is None:
        return sqlite_sql, None
    old, new, why = correction
    if old not in sqlite_sql:
        raise DatasetError(f"{where}: the type-{question_type} SQL no longer holds {old!r}; "
                           "update GOLD_SQL_CORRECTIONS")
    return sqlite_sql.replace(old, new), why


# Answer cells that run into another template's question: (split, question, the defective answer
# as loaded) -> (the answer, why). Applied by load_temptabqa_c only where the defective text is present.
_NO_MEDALS = "No international medals found."
_RUN_ON = {
    24: "Type24: Which tournament did Derrick Atkins win more Gold Medals in: World Championships or "
        "Central American and Caribbean Games ? Discard",
    42: "Type42: In which city has Lin Sang won more medals in: HiroshimaAsian GamesTeam or BangkokAsian "
        "GamesTeam ? Discard",
    12: "Type12: How many International medals did Christophe Lemaitre win throughout his/her career?",
    13: "Type13: How many International Bronze Medals did Li Bingjie win throughout his/her career?",
    14: "Type14: How many times has Andre De Grasse won medals in Pan American Games ?",
    5: "Type5: In which format(s) is Christian Coleman most succesfull ?",
}
_FIRST = "win his/her first International medal ?"
ANSWER_CORRECTIONS: dict[tuple[str, str, str], tuple[str, str]] = {
    ("small", f"In which format did Dennis Mitchell {_FIRST}", _NO_MEDALS + _RUN_ON[24]): (
        _NO_MEDALS, "the cell runs into a type-24 question; the infobox lists no medals (small-127 agrees)"),
    ("hard", f"In which format did Dennis Mitchell {_FIRST}", _NO_MEDALS + _RUN_ON[24]): (
        _NO_MEDALS, "the cell runs into a type-24 question; the infobox lists no medals (small-127 agrees)"),
    ("small", f"In which format did Cheng Ming {_FIRST}", _NO_MEDALS + _RUN_ON[42]): (
        _NO_MEDALS, "the cell runs into a type-42 question; the infobox lists no medals (small-434 agrees)"),
    ("hard", f"In which city did Tim Harden {_FIRST}", _NO_MEDALS + _RUN_ON[12]): (
        "Atlanta", "the cell runs into a type-12 question; first medal: 1996 Olympic Games, Atlanta "
                   "(small-383 agrees)"),
    ("hard", f"In which city did Evgeniia Chikunova {_FIRST}", _NO_MEDALS + _RUN_ON[13]): (
        "Budapest", "the cell runs into a type-13 question; first medals: 2019 World Junior Championships, "
                    "Budapest (its 2020 medal too)"),
    ("hard", f"In which city did Isiah Young {_FIRST}", _NO_MEDALS + _RUN_ON[14]): (
        "Nassau", "the cell runs into a type-14 question; first medal: 2017 World Relays, Nassau "
                  "(small-576 agrees)"),
    ("hard", f"In which city did Justin Gatlin {_FIRST}", _NO_MEDALS + _RUN_ON[5]): (
        "Birmingham", "the cell runs into a type-5 question; first medal: 2003 World Indoor Championships, "
                      "Birmingham"),
}


def _correct_answer(split: str, example: Example) -> Example:
    """``example`` with its answer from ``ANSWER_CORRECTIONS`` where its defective text is present."""
    correction = ANSWER_CORRECTIONS.get((split, example.question, example.answer))
    if correction is None:
        return example
    answer, why = correction
    metadata = {**example.metadata, "answer_corrected_from": example.answer, "answer_correction": why}
    return dataclasses.replace(example, answer=answer, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

def _not_utf8(path: Path, delimiter: str) -> DatasetError:
    """A DatasetError naming the row and line of the first byte of ``path`` that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
        return DatasetError(f"{path}: not UTF-8 text")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=""), delimiter=delimiter)
    row = -1  # the header is row 0
    for cells in reader:
        if any(c.strip() for c in cells):
            row += 1
        if reader.line_num >= line:
            break
    where = "header" if row <= 0 else f"row {row}"
    return DatasetError(f"{path}, {where} (line {line}): not UTF-8 text; re-save the file as UTF-8")


def _read_rows(path: Path, delimiter: str, required: tuple[str, ...]):
    """Yield ``(row_number, line_number, row_dict)``; ``DatasetError`` names the file and row on damage."""
    if not path.is_file():
        raise DatasetError(f"TempTabQA-C file not found: {path} (check the data_dir argument or "
                           f"$SQLENV_DATA_DIR; it should hold the benchmark's folders, e.g. Dev_set/)")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # contexts are long multi-line cells
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DatasetError(f"{path}: the file is empty") from None
        except UnicodeDecodeError:
            raise _not_utf8(path, delimiter) from None
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(f"{path}: header lacks column(s) {missing}; found {header}")
        row_number, previous_end = 0, reader.line_num
        try:
            for cells in reader:
                line, previous_end = previous_end + 1, reader.line_num
                if not any(c.strip() for c in cells):
                    continue  # a blank line
                row_number += 1
                if len(cells) != len(header):
                    detail = (f"missing {header[len(cells):]}" if len(cells) < len(header)
                              else "more cells than the header has columns")
                    raise DatasetError(f"{path}, row {row_number} (line {line}): {len(cells)} of "
                                       f"{len(header)} columns; {detail}")
                yield row_number, line, dict(zip(header, cells))
        except csv.Error as error:
            raise DatasetError(f"{path}, row {row_number + 1} (line {previous_end + 1}): {error}") from None
        except UnicodeDecodeError:
            raise _not_utf8(path, delimiter) from None


def _check_row(path: Path, row_number: int, line: int, row: dict) -> None:
    for column in ("Questions", "Context"):
        if not row[column].strip():
            raise DatasetError(f"{path}, row {row_number} (line {line}): empty {column!r}")


def _example_from_row(split: str, path: Path, row_number: int, line: int, row: dict) -> Example:
    _check_row(path, row_number, line, row)
    context = row["Context"]
    difficulty = (row.get("Difficulty") or "").strip() or None
    source = "column" if difficulty else None
    if difficulty is None and split in _FILE_DIFFICULTY:
        difficulty, source = _FILE_DIFFICULTY[split], "file"
    player = (row.get("PlayerName") or "").strip() or context.split("\n", 1)[0].strip()
    metadata = {
        "question": row["Questions"], "answer": row["Answers"], "question_type": row["Types"].strip(),
        "difficulty": difficulty, "difficulty_source": source, "player_name": player,
        "sport_category": (row.get("SportCategory") or "").strip() or None,
        "popularity": (row.get("Popularity") or "").strip() or None,
        "file": str(path), "row": row_number, "line": line,
    }
    return Example(
        id=f"{split}-{row_number}", question=row["Questions"].strip(), answer=row["Answers"].strip(),
        db_key=infobox.context_key(context), question_type=row["Types"].strip(), difficulty=difficulty,
        context=context, gold_sql=None, metadata=metadata,
    )


def _check_schema(schema: str) -> None:
    if schema not in infobox.SCHEMAS:
        raise DatasetError(f"unknown schema {schema!r}; use one of {list(infobox.SCHEMAS)}")


def load_gold_sql(data_dir: str | os.PathLike | None = None, schema: str = "tables") -> TempTabQACDataset:
    """The 47 questions of ``One_Sample_Per_Question_Template.csv`` (one per template) with SQLite gold SQL.

    ``gold_sql`` is set for the ``"tables"`` schema (the SQL's own); with ``"flat"`` it is None and the
    SQLite text stays in ``metadata["gold_sql_tables"]``. ``metadata["gold_sql_mysql"]`` is the original,
    ``metadata["gold_sql_correction"]`` the reason when ``GOLD_SQL_CORRECTIONS`` changed it.
    """
    _check_schema(schema)
    path = resolve_data_dir(data_dir, NAME) / GOLD_SQL_FILE
    examples = []
    for row_number, line, row in _read_rows(path, ",", (*REQUIRED_COLUMNS, "SQL")):
        example = _example_from_row("gold-sql", path, row_number, line, row)
        where = f"{path}, row {row_number} (line {line})"
        try:
            converted = mysql_to_sqlite(row["SQL"], pretty=False)
        except (sqlglot.errors.SqlglotError, ValueError) as error:
            raise DatasetError(f"{where}: cannot convert its SQL: {error}") from None
        sqlite_sql, why = _correct_gold_sql(example.question_type, converted, where)
        metadata = {**example.metadata, "gold_sql_mysql": row["SQL"], "gold_sql_tables": sqlite_sql,
                    "gold_sql_correction": why}
        examples.append(Example(
            id=example.id, question=example.question, answer=example.answer, db_key=example.db_key,
            question_type=example.question_type, difficulty=example.difficulty, context=example.context,
            gold_sql=sqlite_sql if schema == "tables" else None, metadata=metadata,
        ))
    return TempTabQACDataset(examples, "gold-sql", schema)


def load_temptabqa_c(split: str = "train", data_dir: str | os.PathLike | None = None,
                     schema: str = "tables") -> TempTabQACDataset:
    """Load one split (see the module docstring); ``data_dir`` defaults to ``$SQLENV_DATA_DIR``."""
    if split == "gold-sql":
        return load_gold_sql(data_dir, schema)
    if split not in SPLIT_FILES:
        raise DatasetError(f"unknown split {split!r} for dataset {NAME!r}; available: {list(SPLITS)}")
    _check_schema(schema)
    path = resolve_data_dir(data_dir, NAME) / SPLIT_FILES[split]
    examples = [_correct_answer(split, _example_from_row(split, path, n, line, row))
                for n, line, row in _read_rows(path, "\t", REQUIRED_COLUMNS)]
    return TempTabQACDataset(examples, split, schema)


register_dataset(NAME, load_temptabqa_c, SPLITS)
