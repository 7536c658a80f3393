"""Literal answers: queries that answer without reading any table of the database.

TempTabQA-C (like any benchmark scored by execution results) checks answers, not queries, so
``SELECT '16'`` earns full reward whenever the constant is right. :func:`reads_table` tells such an
answer apart by asking SQLite, not by reading the SQL text: it prepares the query on a read-only
connection of its own whose authorizer records every ``SQLITE_READ`` (the table each column read,
or ``count(*)``, comes from), and stops the statement at its first virtual-machine instruction, so
nothing runs. A read counts when it names a table of the database's ``sqlite_master`` (``type =
'table'``, not ``sqlite_*``); views are expanded by SQLite into the tables they read.

- no table: ``SELECT '16'``, ``SELECT 0``, ``SELECT 1+1``, ``WITH c(x) AS (SELECT 5) SELECT x FROM c``,
  ``SELECT * FROM (VALUES (1))``, ``SELECT 1 -- FROM Medals``, ``SELECT 'FROM Medals'``,
  ``SELECT count(*) FROM sqlite_master`` (the schema is not a table of the database);
- a table: ``SELECT count(*) FROM Medals``, ``SELECT (SELECT max(year) FROM Medals)``,
  ``SELECT '16' FROM Medals LIMIT 1``.

What it does not see: a query that reads a table only to return a constant (the last example above)
counts as reading one; an ``EXPLAIN`` query counts the tables of the statement it explains.

Cost: one prepare of the query (tens of microseconds on the development machine; docs/env.md,
"Literal answers"), on at most :data:`MAX_OPEN` connections per process, opened within the
executor's connection budget (:func:`sqlenv.executor.open_connection`) and reopened when the file
changes. Thread-safe; a forked child opens its own.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
import urllib.parse
from typing import Any

from sqlenv.executor import HostError, open_connection

__all__ = ["LITERAL", "LITERAL_ANSWERS", "LITERAL_MESSAGE", "MAX_OPEN", "close_all", "literal_answers_option",
           "reads_table", "tables_read"]

#: The env's ``literal_answers`` choices: ``"score"`` scores a literal answer like any other (the default);
#: ``"unanswered"`` scores it as an answer that gives nothing, with error kind :data:`LITERAL`.
LITERAL_ANSWERS = ("score", "unanswered")
#: ``info["error"]`` of an answer that reads no table, under ``literal_answers="unanswered"``.
LITERAL = "literal"
#: Its ``info["error_message"]``.
LITERAL_MESSAGE = ("the query reads no table of the database (a constant answer); "
                   "literal_answers='unanswered' scores it as no answer")
#: Connections this module keeps open per process (least recently used closed first).
MAX_OPEN = 8

_OK, _DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
_READ, _SELECT, _FUNCTION = sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION
_RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)


def literal_answers_option(value: Any) -> str:
    """``value`` if it is one of :data:`LITERAL_ANSWERS`, else a ValueError naming the field and the choices."""
    if not isinstance(value, str) or value not in LITERAL_ANSWERS:
        raise ValueError(f"literal_answers={value!r} is not an option; choose one of {list(LITERAL_ANSWERS)}")
    return value


class _Reader:
    """A read-only connection that prepares queries and records which user tables they read."""

    __slots__ = ("conn", "identity", "tables", "seen")

    def __init__(self, path: str, identity: tuple):
        self.identity = identity
        self.seen: set[str] = set()
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro&immutable=1"
        # cached_statements=0: a cached statement is not prepared again, and the authorizer runs at prepare
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=0)
        try:
            if hasattr(conn, "enable_load_extension"):
                conn.enable_load_extension(False)
            conn.execute("PRAGMA query_only=ON")
            # Also reads the schema now: the progress handler below would interrupt that too.
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            self.tables = frozenset(name.casefold() for (name,) in rows
                                    if not name.casefold().startswith("sqlite_"))
            conn.set_authorizer(self._authorize)
            conn.set_progress_handler(_stop, 1)  # stop at the first instruction: prepare, never run
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _authorize(self, action, arg1, arg2, db_name, source):
        if action == _READ:
            name = (arg1 or "").casefold()
            if name in self.tables:
                self.seen.add(name)
            return _OK
        if action == _SELECT or action == _FUNCTION or action == _RECURSIVE:
            return _OK
        return _DENY  # the executor refuses these too: nothing but a SELECT reaches here

    def read(self, sql: str) -> frozenset[str] | None:
        """The user tables ``sql`` reads (lower-cased), or None when it does not prepare here."""
        for text in (sql, sql.rstrip(" \t\r\n\f;")):  # "SELECT 1;;": the executor reruns it stripped
            self.seen = set()
            try:
                self.conn.execute(text).close()
            except sqlite3.OperationalError as exc:
                if "interrupted" not in str(exc):
                    return None
            except sqlite3.ProgrammingError:  # a second statement after ';': try once without trailing ';'
                if text is sql:
                    continue
                return None
            except Exception:  # noqa: BLE001 -- any other failure: unknown, never an exception
                return None
            return frozenset(self.seen)
        return None


def _stop() -> int:
    return 1


_LOCK = threading.Lock()
_OPEN: collections.OrderedDict[str, _Reader] = collections.OrderedDict()
_PID = [os.getpid()]


def _reader(path: str) -> _Reader:
    """The cached reader of ``path``, (re)opened when missing or when the file changed. Holds _LOCK."""
    if _PID[0] != os.getpid():  # a forked child: the parent's connections are not ours to use
        _OPEN.clear()
        _PID[0] = os.getpid()
    try:
        st = os.stat(path)
    except OSError as exc:  # the executor ran on it just now: the file went away or cannot be read
        cause = exc.strerror or str(exc)
        raise HostError(f"cannot open database {path!r} to check its reads: {cause}", path, cause) from exc
    identity = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
    reader = _OPEN.get(path)
    if reader is not None and reader.identity == identity:
        _OPEN.move_to_end(path)
        return reader
    if reader is not None:
        del _OPEN[path]
        reader.conn.close()
    reader = open_connection(path, lambda: _Reader(path, identity))
    _OPEN[path] = reader
    while len(_OPEN) > MAX_OPEN:
        _, old = _OPEN.popitem(last=False)
        old.conn.close()
    return reader


def tables_read(db_path, sql: Any) -> frozenset[str] | None:
    """The tables of the SQLite file ``db_path`` that SQLite reads to answer ``sql`` (names lower-cased;
    empty for a literal answer), or None when that cannot be told (``sql`` is not a string, or does not
    prepare: only for queries that did not execute). Nothing of ``sql`` runs. Raises HostError when the
    database cannot be opened, as the executor does.
    """
    if not isinstance(sql, str):
        return None
    path = os.fspath(db_path)
    with _LOCK:
        return _reader(path).read(str.__str__(sql))


def reads_table(db_path, sql: Any) -> bool:
    """Whether SQLite reads a table of ``db_path`` to answer ``sql`` (False: a literal answer, constants
    only). A query whose reads cannot be told (:func:`tables_read` gives None) counts as reading one, so
    that a failure of this check never costs a query its reward."""
    found = tables_read(db_path, sql)
    return found is None or bool(found)


def close_all() -> None:
    """Close the connections this module keeps (they reopen on the next check)."""
    with _LOCK:
        while _OPEN:
            _OPEN.popitem()[1].conn.close()
