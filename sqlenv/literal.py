"""Literal answers: queries that answer without reading any table of the database.

TempTabQA-C (like any benchmark scored by execution results) checks answers, not queries, so
``SELECT '16'`` earns full reward whenever the constant is right. :func:`reads_table` tells such an
answer apart by asking SQLite, not by reading the SQL text: it prepares the query on a connection of
its own whose authorizer watches every ``SQLITE_READ`` (the table each column read, or ``count(*)``,
comes from, seen while names are resolved): the first read of a table of the database stops the
prepare there, and a query that reads none is stopped at its first virtual-machine instruction, so
nothing runs. That connection holds an in-memory copy of the database's schema (its ``CREATE TABLE`` and ``CREATE VIEW``
statements, no rows), shared by every file of the same schema; a schema that does not copy (a virtual
table of a module this build lacks, an application's collation) is read from the file. A read counts
when it names a table of the database's ``sqlite_master`` (``type = 'table'``, not ``sqlite_*``); views
are expanded by SQLite into the tables they read.

- no table: ``SELECT '16'``, ``SELECT 0``, ``SELECT 1+1``, ``WITH c(x) AS (SELECT 5) SELECT x FROM c``,
  ``SELECT * FROM (VALUES (1))``, ``SELECT 1 -- FROM Medals``, ``SELECT 'FROM Medals'``,
  ``SELECT count(*) FROM sqlite_master`` (the schema is not a table of the database);
- a table: ``SELECT count(*) FROM Medals``, ``SELECT (SELECT max(year) FROM Medals)``,
  ``SELECT '16' FROM Medals LIMIT 1``.

What it does not see: a query that reads a table only to return a constant (the last example above)
counts as reading one; an ``EXPLAIN`` query counts the tables of the statement it explains.

Cost: one prepare of the query (up to its first table read; the last 1,024 texts are remembered), and the
first time a file is seen (or after it changed) one short read of its schema; docs/env.md, "Literal
answers", has the figures. At most :data:`MAX_OPEN` connections per process; those on files are opened
within the process's connection budget (:func:`sqlenv.connections.open_connection`). Thread-safe; a forked
child opens its own.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
import urllib.parse
from typing import Any

from sqlenv.connections import HostError, open_connection

__all__ = ["LITERAL", "LITERAL_ANSWERS", "LITERAL_MESSAGE", "MAX_OPEN", "close_all", "literal_answers_option",
           "reads_table", "table_read"]

#: The env's ``literal_answers`` choices: ``"score"`` scores a literal answer like any other (the default);
#: ``"unanswered"`` scores it as an answer that gives nothing, with error kind :data:`LITERAL`.
LITERAL_ANSWERS = ("score", "unanswered")
#: ``info["error"]`` of an answer that reads no table, under ``literal_answers="unanswered"``.
LITERAL = "literal"
#: Its ``info["error_message"]``.
LITERAL_MESSAGE = ("the query reads no table of the database (a constant answer); "
                   "literal_answers='unanswered' scores it as no answer")
#: Schema copies (in memory) this module keeps per process, least recently used closed first; a database
#: whose schema does not copy is read from its file, and then its connection is one of them.
MAX_OPEN = 16

_OK, _DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
_READ, _SELECT, _FUNCTION = sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION
_RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)


def literal_answers_option(value: Any) -> str:
    """``value`` if it is one of :data:`LITERAL_ANSWERS`, else a ValueError naming the field and the choices."""
    if not isinstance(value, str) or value not in LITERAL_ANSWERS:
        raise ValueError(f"literal_answers={value!r} is not an option; choose one of {list(LITERAL_ANSWERS)}")
    return value


class _Reader:
    """A connection that prepares queries and tells the first table of the database they read. It holds a
    copy of the database's schema in memory (no file, no rows), or, when the schema does not copy, the file."""

    __slots__ = ("conn", "first", "known", "tables")

    def __init__(self, conn: sqlite3.Connection):
        self.conn, self.first = conn, ""
        self.known: collections.OrderedDict[str, str | None] = collections.OrderedDict()
        try:
            if hasattr(conn, "enable_load_extension"):
                conn.enable_load_extension(False)
            # Also loads the schema now: the progress handler below would interrupt that too.
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            self.tables = frozenset(name.casefold() for (name,) in rows
                                    if not name.casefold().startswith("sqlite_"))
            conn.execute("PRAGMA query_only=ON")
            conn.set_authorizer(self._authorize)
            conn.set_progress_handler(_stop, 1)  # stop at the first instruction: prepare, never run
        except BaseException:
            conn.close()
            raise

    def _authorize(self, action, arg1, arg2, db_name, source):
        if action == _READ:
            name = (arg1 or "").casefold()
            if name in self.tables:
                self.first = name
                return _DENY  # known now: stop the prepare before planning and code generation
            return _OK
        if action == _SELECT or action == _FUNCTION or action == _RECURSIVE:
            return _OK
        return _DENY  # the executor refuses these too: nothing but a SELECT reaches here

    def read(self, sql: str) -> str | None:
        """:func:`table_read` of ``sql`` here; remembered for the last ``_KNOWN`` queries of at most
        ``_KNOWN_CHARS`` characters (the samples of a GRPO group repeat some)."""
        found = self.known.get(sql, self)
        if found is not self:
            self.known.move_to_end(sql)
            return found
        found = self._prepare(sql)
        if len(sql) <= _KNOWN_CHARS:
            self.known[sql] = found
            if len(self.known) > _KNOWN:
                self.known.popitem(last=False)
        return found

    def _prepare(self, sql: str) -> str | None:
        for text in (sql, sql.rstrip(" \t\r\n\f;")):  # "SELECT 1;;": the executor reruns it stripped
            self.first = ""
            try:
                self.conn.execute(text).close()
            except sqlite3.ProgrammingError:  # a second statement after ';': try once without trailing ';'
                if text is sql:
                    continue
                return None
            except Exception as exc:  # noqa: BLE001 -- our stops, or a failure: then unknown, never raised
                if self.first:
                    return self.first
                return "" if "interrupted" in str(exc) else None
            return self.first  # ran without an instruction (EXPLAIN): what it named
        return None


_KNOWN, _KNOWN_CHARS = 1024, 2000


def _stop() -> int:
    return 1


def _connect(target: str, file: bool) -> sqlite3.Connection:
    # cached_statements=0: a cached statement is not prepared again, and the authorizer runs at prepare
    if not file:
        return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, cached_statements=0)
    uri = "file:" + urllib.parse.quote(os.path.abspath(target)) + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=0)


def _schema(path: str) -> tuple[str, ...]:
    """The ``CREATE TABLE`` and ``CREATE VIEW`` statements of the SQLite file ``path``, in schema order."""
    conn = open_connection(path, lambda: _connect(path, True))
    try:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type IN ('table', 'view') AND sql IS NOT NULL "
                            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid").fetchall()
    except sqlite3.DatabaseError as exc:  # the executor could not read it either
        raise HostError(f"cannot read the schema of {path!r}: {exc}", path, str(exc)) from exc
    finally:
        conn.close()
    return tuple(sql for (sql,) in rows)


def _memory_reader(statements: tuple[str, ...]) -> _Reader | None:
    """A reader on an in-memory copy of the schema; None when a statement does not run here (a virtual
    table of a module this build lacks, a collation the file's application defined)."""
    conn = _connect(":memory:", False)
    try:
        for statement in statements:
            conn.execute(statement)
    except sqlite3.Error:
        conn.close()
        return None
    return _Reader(conn)


_LOCK = threading.Lock()
_SCHEMAS: collections.OrderedDict[str, tuple[tuple, object]] = collections.OrderedDict()  # path -> identity, key
_READERS: collections.OrderedDict[object, _Reader] = collections.OrderedDict()  # schema or file key -> reader
_PID = [os.getpid()]
_MAX_PATHS = 4096


def _reader(path: str) -> _Reader:
    """The reader for the database ``path``: shared by every file of the same schema, found again by the
    file's identity (a changed or replaced file is read afresh). Holds _LOCK."""
    if _PID[0] != os.getpid():  # a forked child: the parent's connections are not ours to use
        _SCHEMAS.clear()
        _READERS.clear()
        _PID[0] = os.getpid()
    try:
        st = os.stat(path)
    except OSError as exc:  # the executor ran on it just now: the file went away or cannot be read
        cause = exc.strerror or str(exc)
        raise HostError(f"cannot open database {path!r} to check its reads: {cause}", path, cause) from exc
    identity = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
    known = _SCHEMAS.get(path)
    key = known[1] if known is not None and known[0] == identity else None
    reader = _READERS.get(key) if key is not None else None
    if reader is None:
        key = _schema(path)
        reader = _READERS.get(key) or _memory_reader(key)
        if reader is None:  # the schema does not copy: read the file itself
            key = ("file", path, identity)
            reader = open_connection(path, lambda: _Reader(_connect(path, True)))
        _READERS[key] = reader
        _SCHEMAS[path] = (identity, key)
        while len(_SCHEMAS) > _MAX_PATHS:
            _SCHEMAS.popitem(last=False)
        while len(_READERS) > MAX_OPEN:
            _READERS.popitem(last=False)[1].conn.close()
    _READERS.move_to_end(key)
    return reader


def table_read(db_path, sql: Any) -> str | None:
    """The first table of the SQLite file ``db_path`` that SQLite reads to answer ``sql`` (its name lower-cased),
    ``""`` when it reads none (a literal answer), or None when that cannot be told (``sql`` is not a string, or
    does not prepare: only for queries that did not execute). Nothing of ``sql`` runs. Raises HostError when the
    database cannot be opened, as the executor does."""
    if not isinstance(sql, str):
        return None
    path = os.fspath(db_path)
    with _LOCK:
        return _reader(path).read(str.__str__(sql))


def reads_table(db_path, sql: Any) -> bool:
    """Whether SQLite reads a table of ``db_path`` to answer ``sql`` (False: a literal answer, constants
    only). A query whose reads cannot be told (:func:`table_read` gives None) counts as reading one, so
    that a failure of this check never costs a query its reward."""
    return table_read(db_path, sql) != ""


def close_all() -> None:
    """Close the connections this module keeps (they reopen on the next check)."""
    with _LOCK:
        _SCHEMAS.clear()
        while _READERS:
            _READERS.popitem()[1].conn.close()
