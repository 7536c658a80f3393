"""Schema text of a SQLite database for the observation: the one describer of every dataset.

:func:`describe` returns the two observation texts, ``(schema, sample_rows)``:

* ``schema``: each table's ``CREATE TABLE`` statement exactly as stored in ``sqlite_master``
  (so column types, primary keys and ``FOREIGN KEY ... REFERENCES`` clauses are kept), plus a
  ``-- foreign keys:`` comment for any declared foreign key the statement text does not show.
* ``sample_rows``: up to ``n`` rows of each table as ``table: col | col`` blocks (long values
  cut to :data:`MAX_VALUE_CHARS`). ``verbatim=True`` keeps values as they are and shows an empty
  table's header: the TempTabQA-C and generated datasets' format (``Dataset.describe``, no budget).
* ``column_values=k`` (opt-in) adds to ``schema``, under each table's statement, the ``k`` most
  frequent text values of each column as SQL literals, so a model can copy a filter's value instead
  of guessing its spelling (``'MedalGold'``, ``'Women''s team'``)::

      -- Medals values, most frequent first:
      -- medal: 'MedalGold', 'MedalBronze', 'MedalSilver'
      -- location: 'Nanning', 'Chengdu', 'Jakarta' (+12 more)

  Counted over a table's first :data:`VALUES_SCAN_ROWS` rows; values longer than
  :data:`MAX_VALUE_CHARS` or holding control characters are left out (a literal cut short would
  match nothing).

Large schemas (BIRD has tables with 100+ columns) are cut to a token budget, where a token is
approximated as 4 characters. Whole tables are kept or dropped, never cut in half: column values
go first, then sample rows (fewer per table, then none), then trailing tables; each cut is announced in a ``--``
comment line so the model knows the schema it sees is partial.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlenv.connections import connect_readonly, is_host_message, retry_host_fault

#: Default budget of :func:`describe`, in approximate tokens (4 characters each).
DEFAULT_MAX_TOKENS = 4_000
#: Sample values longer than this are cut with "..." (and left out of column values).
MAX_VALUE_CHARS = 80
#: Column values are counted over at most this many rows of each table.
VALUES_SCAN_ROWS = 10_000
CHARS_PER_TOKEN = 4


def approx_tokens(text: str) -> int:
    """Approximate token count of ``text``: characters / 4, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Table:
    name: str
    create_sql: str
    sample: str  # "" when no rows were asked for or the table is empty (verbatim: its header line)
    values: str = ""  # "-- " lines of column values; "" when none were asked for or found


def tables(path: str | os.PathLike, sample_rows: int = 0, *, verbatim: bool = False,
           column_values: int = 0) -> list[Table]:
    """Every user table of the database (``sqlite_master`` order), with ``sample_rows`` rows and the
    ``column_values`` most frequent values of each text column.

    ``verbatim``: sample values as ``str(value)`` (``NULL`` for None), never cut or re-spaced, and an
    empty table still shows its header line: the format of TempTabQA-C and generated observations,
    kept byte-identical (tests/test_observation_texts.py). Any failure to open or read the file
    (missing, not a database, no descriptors) raises :class:`sqlenv.connections.HostError` naming
    the file and the cause."""
    return retry_host_fault(
        path, "cannot read database", lambda: _read_tables(path, sample_rows, verbatim, column_values)
    )


def _read_tables(path: str | os.PathLike, sample_rows: int, verbatim: bool, column_values: int) -> list[Table]:
    conn = connect_readonly(path)
    try:
        out = []
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        ):
            create = sql.strip().rstrip(";") + ";"
            fks = _missing_foreign_keys(conn, name, create)
            if fks:
                create += "\n-- foreign keys: " + ", ".join(fks)
            sample = _sample(conn, name, sample_rows, verbatim) if sample_rows > 0 else ""
            values = _column_values(conn, name, column_values) if column_values > 0 else ""
            out.append(Table(name, create, sample, values))
        return out
    finally:
        conn.close()


def render(tables_: list[Table], max_tokens: int | None = DEFAULT_MAX_TOKENS) -> tuple[str, str]:
    """``(schema, sample_rows)`` texts of ``tables_``, cut to ``max_tokens`` together (None: no cut)."""

    def join(parts: list[str]) -> str:
        return "\n\n".join(p for p in parts if p)

    if any(t.values for t in tables_):  # 0. Column values go first, all at once.
        schema, rows = join([t.create_sql + "\n" + t.values if t.values else t.create_sql for t in tables_]), \
            join([t.sample for t in tables_])
        if max_tokens is None or approx_tokens(schema) + approx_tokens(rows) <= max_tokens:
            return schema, rows
        schema, rows = render([Table(t.name, t.create_sql, t.sample) for t in tables_], max_tokens)
        return schema + f"\n\n-- column values omitted to fit the {max_tokens}-token schema budget", rows

    schema, rows = join([t.create_sql for t in tables_]), join([t.sample for t in tables_])
    if max_tokens is None or approx_tokens(schema) + approx_tokens(rows) <= max_tokens:
        return schema, rows

    # 1. Sample rows go first: fewer per table, then none.
    if rows:
        for keep in range(max(_sample_len(t) for t in tables_) - 1, 0, -1):
            cut = join([_first_rows(t.sample, keep) for t in tables_])
            note = f"-- sample rows cut to {keep} per table to fit the {max_tokens}-token schema budget"
            if approx_tokens(schema) + approx_tokens(cut + "\n\n" + note) <= max_tokens:
                return schema, cut + "\n\n" + note
    rows_note = (
        f"-- sample rows omitted to fit the {max_tokens}-token schema budget" if rows else ""
    )
    if approx_tokens(schema) + approx_tokens(rows_note) <= max_tokens:
        return schema, rows_note

    # 2. Then trailing tables, whole (the first table is always kept).
    budget = max_tokens - approx_tokens(rows_note)
    kept = 1
    while kept < len(tables_):
        rest = tables_[kept + 1 :]
        text = join(
            [t.create_sql for t in tables_[: kept + 1]]
            + [_dropped_note(rest, max_tokens) if rest else ""]
        )
        if approx_tokens(text) > budget:
            break
        kept += 1
    parts = [t.create_sql for t in tables_[:kept]]
    if kept < len(tables_):
        parts.append(_dropped_note(tables_[kept:], max_tokens))
    return join(parts), rows_note


def describe(
    path: str | os.PathLike,
    sample_rows: int = 3,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    *,
    verbatim: bool = False,
    column_values: int = 0,
) -> tuple[str, str]:
    """The observation's ``(schema, sample_rows)`` texts for the database at ``path`` (``verbatim``,
    ``column_values``: see :func:`tables`)."""
    return render(tables(path, sample_rows, verbatim=verbatim, column_values=column_values), max_tokens)


def schema_text(path: str | os.PathLike, max_tokens: int | None = DEFAULT_MAX_TOKENS) -> str:
    """Only the ``CREATE TABLE`` text (cut to ``max_tokens``)."""
    return describe(path, 0, max_tokens)[0]


# ---------------------------------------------------------------------- helpers
def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _missing_foreign_keys(conn: sqlite3.Connection, table: str, create_sql: str) -> list[str]:
    """Declared foreign keys that the CREATE text does not spell out with REFERENCES."""
    if "references" in create_sql.lower():
        return []
    try:
        fks = conn.execute(f"PRAGMA foreign_key_list({_quote(table)})").fetchall()
    except sqlite3.Error:
        return []
    # (id, seq, table, from, to, on_update, on_delete, match)
    return [f"{table}.{fk[3]} -> {fk[2]}.{fk[4] or '?'}" for fk in fks]


def _format_value(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"<blob {len(bytes(v))} bytes>"
    text = " ".join(str(v).split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _verbatim_value(v: Any) -> str:
    return "NULL" if v is None else str(v)


def _sample(conn: sqlite3.Connection, table: str, n: int, verbatim: bool = False) -> str:
    try:
        cursor = conn.execute(f"SELECT * FROM {_quote(table)} LIMIT ?", (n,))
        rows = cursor.fetchall()
    except sqlite3.Error as exc:  # e.g. a virtual table whose module is missing
        if is_host_message(str(exc)):  # no temporary file, disk I/O: retry_host_fault's to handle
            raise
        return f"-- {table}: rows unavailable ({exc})"
    if not rows and not verbatim:
        return ""
    header = " | ".join(d[0] for d in cursor.description)
    value = _verbatim_value if verbatim else _format_value
    return "\n".join([f"{table}: {header}"] + [" | ".join(value(v) for v in r) for r in rows])


def _column_values(conn: sqlite3.Connection, table: str, k: int) -> str:
    """``-- column: 'a', 'b' (+N more)`` lines: each column's ``k`` most frequent text values (ties by
    value) among the table's first VALUES_SCAN_ROWS rows, as SQL literals; "" when no column has one."""
    try:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")]
        lines = []
        for column in columns:
            counts = conn.execute(
                f"SELECT v, COUNT(*) AS n FROM (SELECT {_quote(column)} AS v FROM {_quote(table)} LIMIT ?) "
                "WHERE typeof(v) = 'text' GROUP BY v ORDER BY n DESC, v", (VALUES_SCAN_ROWS,)).fetchall()
            shown = [v for v, _ in counts if len(v) <= MAX_VALUE_CHARS and v.isprintable()][:k]
            if shown:
                more = f" (+{len(counts) - len(shown)} more)" if len(counts) > len(shown) else ""
                lines.append(f"-- {column}: " + ", ".join(_literal(v) for v in shown) + more)
    except sqlite3.Error as exc:  # e.g. a virtual table whose module is missing
        if is_host_message(str(exc)):
            raise
        return ""
    return "\n".join([f"-- {table} values, most frequent first:"] + lines) if lines else ""


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sample_len(table: Table) -> int:
    return (
        max(0, table.sample.count("\n"))
        if table.sample and not table.sample.startswith("--")
        else 0
    )


def _first_rows(sample: str, keep: int) -> str:
    if not sample or sample.startswith("--"):
        return sample
    lines = sample.split("\n")
    return "\n".join(lines[: 1 + keep])


def _dropped_note(dropped: list[Table], max_tokens: int) -> str:
    names = [t.name for t in dropped]
    shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
    return f"-- {len(names)} more table(s) omitted to fit the {max_tokens}-token schema budget: {shown}"
