"""Filter hints: the text values a query filters on that match no row, and the values that do.

A query that comes back empty, ``0`` or ``NULL`` most often filters on a value the data spells otherwise
(``medal = 'MedalSingles'``, a tournament named differently). :class:`FilterHints` reads a query's literal
text filters with ``sqlglot`` (``column = 'text'``, ``'text' = column``, ``column IN ('a', 'b')``,
``column LIKE 'pattern'``; not under ``NOT``), checks each value against the distinct text values of its
column, and names each miss with that column's values, closest first::

    No row of Medals has medal = 'MedalSingles'; medal's values, closest first: 'MedalSilver',
    'MedalGold', 'MedalBronze'.
    No row of Medals has location = 'World Championships'; 'World Championships' is a value of tournament.

A value that another column of the query's tables holds is named with that column instead (the value was put in
the wrong column).

``TextToSQLAgentEnv(filter_hints=True)`` appends these lines to an exploration's result when the result reads
as a floor answer. What it does not do: it cannot tell a value that exists but is combined wrongly with
others (``medal = 'MedalGold' AND year = 2004`` where no gold was won in 2004), it reads no function of a
column (``LOWER(tournament) = ...``), and it says nothing about a column of a table with more than
:data:`SCAN_ROWS` rows (the values it read would not be all of them).

The hint's own queries are built from the database's schema and bound parameters, run on a read-only
connection, and bounded by :data:`SCAN_ROWS` rows a column; a query longer than :data:`MAX_SQL_CHARS` or
one ``sqlglot`` cannot read gets no hint. A column's values are remembered per database file (the dataset
files are read-only), at most :data:`CACHED_COLUMNS` columns.
"""

from __future__ import annotations

import collections
import difflib
import os
import re
import sqlite3
import threading
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from sqlenv.connections import connect_readonly
from sqlenv.schema import MAX_VALUE_CHARS, _literal, _quote  # values longer are not listed: a cut one would mislead

__all__ = ["CACHED_COLUMNS", "MAX_FILTERS", "MAX_SQL_CHARS", "SCAN_ROWS", "SHOWN_VALUES", "Filter", "FilterHints",
           "literal_filters"]

#: Queries longer than this get no hint (a policy's query is far shorter; parsing stays cheap).
MAX_SQL_CHARS = 4_000
#: At most this many filters of one query are checked.
MAX_FILTERS = 4
#: A column is read only when its table has at most this many rows (else its values are not all known).
SCAN_ROWS = 10_000
#: Values named per miss, closest first.
SHOWN_VALUES = 8
#: Columns whose distinct values are remembered (per process, least recently used dropped first).
CACHED_COLUMNS = 512


@dataclass(frozen=True)
class Filter:
    """One literal text filter of a query: ``column`` of one of ``tables`` (its qualifier resolved to a table
    name; unqualified: every table the query names), ``op`` (``=``, ``IN`` or ``LIKE``) and the ``values`` it
    compares with."""

    tables: tuple[str, ...]
    column: str
    op: str
    values: tuple[str, ...]


def literal_filters(sql: str) -> list[Filter]:
    """The literal text filters of ``sql`` (at most :data:`MAX_FILTERS`), outside any ``NOT``; [] when
    ``sqlglot`` cannot read it or it is longer than :data:`MAX_SQL_CHARS`."""
    if not isinstance(sql, str) or len(sql) > MAX_SQL_CHARS:
        return []
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except Exception:  # ParseError, TokenError, RecursionError on deep nesting: no hint, never a raise
        return []
    if tree is None:
        return []
    aliases = {t.alias_or_name.lower(): t.name for t in tree.find_all(exp.Table) if t.name}
    aliases.update({t.name.lower(): t.name for t in tree.find_all(exp.Table) if t.name})
    found: list[Filter] = []
    for node in tree.find_all(exp.EQ, exp.In, exp.Like):
        if any(isinstance(up, exp.Not) for up in _ancestors(node)):
            continue
        item = _filter(node, aliases)
        if item is not None and item not in found:
            found.append(item)
            if len(found) == MAX_FILTERS:
                break
    return found


def _ancestors(node: exp.Expression):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def _text(node) -> str | None:
    return node.this if isinstance(node, exp.Literal) and node.is_string else None


def _filter(node: exp.Expression, aliases: dict[str, str]) -> Filter | None:
    if isinstance(node, exp.In):
        column, items = node.this, node.expressions
        values = [_text(item) for item in items]
        if not items or any(v is None for v in values):
            return None
        op = "IN"
    elif isinstance(node, exp.Like):
        column, value = node.this, _text(node.expression)
        if value is None or isinstance(node.parent, exp.Escape):
            return None
        values, op = [value], "LIKE"
    else:
        left, right = node.this, node.expression
        if isinstance(right, exp.Column) and _text(left) is not None:
            left, right = right, left
        value = _text(right)
        if value is None:
            return None
        column, values, op = left, [value], "="
    if not isinstance(column, exp.Column) or not column.name:
        return None
    if column.table:
        tables = (aliases.get(column.table.lower(), column.table),)
    else:
        tables = tuple(dict.fromkeys(aliases.values()))
    return Filter(tables, column.name, op, tuple(values))


def _like(pattern: str) -> re.Pattern:
    """SQLite's LIKE (no ESCAPE) as a regular expression: ``%`` any run, ``_`` one character, ASCII case folded."""
    parts = [".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL | re.IGNORECASE | re.ASCII)


class FilterHints:
    """Names the filter values of a query that match no row of their column (see the module)."""

    def __init__(self):
        self._values: collections.OrderedDict[tuple, tuple[str, ...] | None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # a copy (a pickled env) starts with an empty cache and its own lock
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def hints(self, path: str | os.PathLike, sql: str) -> list[str]:
        """One line per filter value of ``sql`` that matches no row of the database at ``path`` (at most
        :data:`MAX_FILTERS`), with its column's values; [] when there is none, the query cannot be read, or the
        database cannot be (a hint is never worth an error)."""
        filters = literal_filters(sql)
        if not filters:
            return []
        try:
            conn = connect_readonly(path)
        except Exception:
            return []
        try:
            columns = self._columns(conn)
            lines = []
            for item in filters:
                line = self._miss(conn, str(path), columns, item)
                if line:
                    lines.append(line)
            return lines
        except (sqlite3.Error, MemoryError, OSError):
            return []
        finally:
            conn.close()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _columns(conn: sqlite3.Connection) -> dict[str, tuple[str, list[str]]]:
        """Each table and view (lower-cased name) -> (its name, its column names)."""
        out = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                    "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"):
            out[name.lower()] = (name, [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(name)})")])
        return out

    def _miss(self, conn, path: str, columns: dict, item: Filter) -> str | None:
        candidates = [columns[name.lower()] for name in item.tables if name.lower() in columns]
        places = [(table, column) for table, names in candidates for column in names
                  if column.lower() == item.column.lower()]
        if not places:
            return None  # a column the database does not have: the query's own error says so
        known = [(table, column, self._distinct(conn, path, table, column)) for table, column in places]
        if any(values is None for _, _, values in known):
            return None  # a table too large to know every value
        for value in item.values:
            test = _like(value).fullmatch if item.op == "LIKE" else value.__eq__
            if any(test(v) for _, _, values in known for v in values):
                continue
            table, column, values = known[0]
            where = f"{column} LIKE {_literal(value)}" if item.op == "LIKE" else f"{column} = {_literal(value)}"
            elsewhere = self._elsewhere(conn, path, candidates, places, test)
            if elsewhere:
                what = "matches values of" if item.op == "LIKE" else "is a value of"
                return f"No row of {table} has {where}; {_literal(value)} {what} {', '.join(elsewhere)}."
            shown = [v for v in values if len(v) <= MAX_VALUE_CHARS and v.isprintable()]
            target = (value.replace("%", "").replace("_", "") if item.op == "LIKE" else value).lower()
            shown.sort(key=lambda v: -difflib.SequenceMatcher(None, target, v.lower()).ratio())
            if not shown:
                return f"No row of {table} has {where}; {column} holds no text values."
            more = f" (+{len(shown) - SHOWN_VALUES} more)" if len(shown) > SHOWN_VALUES else ""
            return (f"No row of {table} has {where}; {column}'s values, closest first: "
                    + ", ".join(_literal(v) for v in shown[:SHOWN_VALUES]) + more + ".")
        return None

    def _elsewhere(self, conn, path: str, candidates, places, test) -> list[str]:
        """The other columns of the filter's tables holding a value ``test`` accepts (a value in the wrong column:
        ``location = 'World Championships'`` where that is a tournament), as ``column`` or ``table.column``."""
        several = len(candidates) > 1
        found = []
        for table, names in candidates:
            for column in names:
                if (table, column) in places:
                    continue
                values = self._distinct(conn, path, table, column)
                if values and any(test(v) for v in values):
                    found.append(f"{table}.{column}" if several else column)
        return found

    def _distinct(self, conn, path: str, table: str, column: str) -> tuple[str, ...] | None:
        """The distinct text values of ``table.column``, or None when the table has more than SCAN_ROWS rows."""
        key = (path, _mtime(path), table, column)
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        rows = conn.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {_quote(table)} LIMIT ?)",
                            (SCAN_ROWS + 1,)).fetchone()[0]
        values = None if rows > SCAN_ROWS else tuple(
            v for (v,) in conn.execute(f"SELECT DISTINCT {_quote(column)} FROM {_quote(table)} "
                                       f"WHERE typeof({_quote(column)}) = 'text' ORDER BY 1"))
        with self._lock:
            self._values[key] = values
            while len(self._values) > CACHED_COLUMNS:
                self._values.popitem(last=False)
        return values


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
