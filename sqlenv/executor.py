"""
Run untrusted SQL (written by a policy under RL) against a SQLite file and return a result object.

`Executor.execute` never raises for anything the SQL does: every failure of the query, whatever the
input, comes back as an `ExecutionResult` whose `error` is one of `ERROR_KINDS` (`None` on success).
It raises `HostError` for faults of the host (a database that cannot be opened, no file descriptors,
no memory), which are never the query's failure and must never be scored as one. Modelled on
nanochat's `execution.py`.

What is covered:
- Read-only by construction, three layers deep: the file is opened through a `file:...?mode=ro&immutable=1`
  URI (no locks, no journal, nothing ever created beside it), `PRAGMA query_only=ON` is set, and an
  authorizer allows only SELECT, READ, recursive CTEs and functions. Everything else is refused at
  prepare time, before anything runs: INSERT/UPDATE/DELETE/REPLACE, all DDL, ATTACH/DETACH (so
  `VACUUM INTO` cannot create a file), PRAGMA, BEGIN/COMMIT/SAVEPOINT, ANALYZE, REINDEX, virtual-table
  creation and table-valued functions (json_each, pragma_*, dbstat, sqlite_stmt). -> "forbidden"
- printf/format are replaced by a wrapper that returns NULL for widths or precisions above the value cap
  (SQLite 3.40 spends time linear in a `%.*c` precision inside one instruction, which no progress handler
  can interrupt) and otherwise runs SQLite's own printf.
- Dangerous or internal functions are refused: load_extension, fts3_tokenizer (leaks and sets C
  pointers), the fts5/rtree introspection helpers and every sqlite_* function. Extension loading is
  also off at the connection level. -> "forbidden"
- A time budget (`timeout`): a progress handler aborts the statement once the deadline passes
  (runaway recursive CTEs, cartesian products, huge sorts); the connection stays usable. -> "timeout"
- An instruction budget (`max_instructions`, off by default): the same progress handler counts the SQLite
  virtual-machine instructions a query runs (calls x `progress_steps`) and aborts it once they exceed the
  budget. -> "timeout", with a message naming the instruction budget ("query exceeded its
  50000000-instruction budget") rather than the time budget. Wall-clock time depends on the machine and its
  load, so a query near `timeout` may score "timeout" on one run and succeed on the next; its instruction
  count does not (same SQL, database and SQLite version: same verdict, in-process or in workers). For
  reproducible rewards set `max_instructions` and keep `timeout` several times larger as the backstop:
  work done inside a single instruction (sorting, a LIKE/GLOB match, printf, building a large value) is
  not counted, and only the clock stops it. Resolution: `progress_steps` instructions (a query within
  that many of the budget may get either verdict, depending on the earlier runs of its cached statement).
  On the 2-core development machine SQLite ran 24 to 215 million instructions per second depending on
  the query's shape (about 84 million for a runaway recursive CTE), so 100_000_000 is roughly the 1 s
  budget; everyday queries run hundreds to thousands (docs/reliability.md).
- Result size: at most `max_rows` rows and `max_bytes` bytes (the values' marshal size), counted while
  fetching, in chunks sized so that even a chunk of maximal values cannot overshoot by more than a row.
  -> "too_large"
- SQLite limits: one value (string/blob, so randomblob/zeroblob/printf/group_concat) is capped at
  `max_value_bytes`, plus caps on SQL length, expression depth, compound SELECT terms, columns,
  function arguments, LIKE patterns, bound variables and attached databases (0). -> "too_large"
- Exactly one statement: a second statement after `;` is never prepared (the tokenizer-aware check of
  the sqlite3 module; `;` inside strings and comments is fine, so are trailing `;`, whitespace and
  comments). -> "multiple_statements"
- Malformed input: non-str SQL -> "other"; NUL bytes, lone surrogates (not UTF-8 encodable), empty SQL
  -> "syntax"; SQL longer than `max_sql_length` -> "too_large". sqlite error messages map to kinds in
  `_classify`. A TEXT value in the result that is not valid UTF-8 (some Spider databases hold such bytes) is
  not an error: its invalid bytes are dropped, as `bytes.decode("utf-8", "ignore")` and the official
  Spider evaluation do. The common path keeps the sqlite3 module's own decoding; only when that fails is
  the query run again on the same connection with a lenient `text_factory` (restored afterwards), with a
  fresh instruction budget but within the same deadline.
- Connections are cached per path (LRU, `max_connections`), so repeated queries pay no open cost; the
  file's identity (inode, size, mtime) is checked on every call and a replaced file is reopened (one stat,
  cheaper than the per-statement checks SQLite itself skips under `immutable=1`; `revalidate=False` skips it).
- One connection budget per process, shared by every Executor (so by every env, session and reward
  function in it): `connection_budget()`, half the soft RLIMIT_NOFILE less 16 (1024 -> 496), or
  $SQLENV_CONNECTION_BUDGET. When the process's cached connections reach it, the least recently used
  idle one (of any Executor; never one running a query) is closed before another is opened, so no
  number of envs can exhaust the descriptors; the other half of the limit is headroom for sockets,
  pipes, workers, SQLite's temporary files and the short-lived connections that describe or build a
  database. The budget and the host-fault rules below live in `sqlenv.connections` (re-exported
  here). `max_connections` stays a per-Executor cap.
- Host faults raise `HostError` (message: the action, the database path and the cause), never a
  result: opening a database that fails for want of descriptors or memory (EMFILE, ENFILE, ENOMEM,
  SQLite's "unable to open database file") is retried once after closing every idle cached
  connection of the process (`free_idle_connections`); a query that fails because SQLite cannot open
  a temporary file ("unable to open database file", "disk I/O error", "database or disk is full") is
  rerun once the same way. A missing or unreadable file, or one that is not a SQLite database,
  raises at once (no retry can mend it). `execute_group` runs the whole group and then raises
  HostError if a worker met one (workers have their own budgets and retry likewise); a pool that
  cannot be started still runs the group here.
- `execute_group(..., workers=N)` runs a group in N persistent worker processes (fresh interpreters,
  each with its own Executor). A worker that does not answer by its hard deadline (the query budget plus
  `kill_grace`) or by the group `deadline` is killed and replaced; that sample comes back as "timeout"
  (or "other" if the worker died). The workers also cap SQLite's heap (`worker_heap_limit`).

What is not covered:
- Not an OS sandbox: a bug in SQLite's C code reachable from a SELECT could still crash or compromise the
  process. Use `workers>0` to keep such crashes out of the training process.
- In-process (`workers=0`) the timeout is cooperative: it is checked every `progress_steps` virtual-machine
  instructions, so one very slow instruction (a big sort, a large blob copy, a LIKE with a long pattern,
  about 70 us each) can overrun the budget,
  and SQLite's own memory is not capped (each value is, and the result is). Workers add a hard kill and a
  heap cap.
- The sorter may spill to temporary files while a heavy query runs (bounded by the time budget; SQLite
  deletes them).
- The database must not be rewritten in place while a query runs on it (`immutable=1`: no locks). A change
  between calls, or an atomic replacement (write + rename, as `infobox.build_database` does), is seen by the
  per-call stat and the file is reopened. WAL-mode databases are read without their WAL.
- `trusted_schema` is off, so a view stored in the database that calls printf/format (here an application
  function) fails with "unsafe use of printf()" -> "other".
- Nondeterministic functions (random, randomblob, current_timestamp) are allowed.
- One Executor may be shared by threads (a lock serialises its calls), but not across fork: a forked
  child starts with an empty cache and pool (and new locks).
- The budget counts the connections sqlenv keeps; it cannot stop other code in the process from
  using the descriptors up. Then opening fails, and HostError says so. A query's own "out of memory"
  (SQLite's heap, a huge value) stays "too_large": that is the query's doing; only failing to open
  is a host fault.
"""

from __future__ import annotations

import collections
import marshal
import math
import os
import re
import sqlite3
import stat
import sys
import threading
import time
import urllib.parse
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import chain

if __package__:
    from sqlenv import connections
else:  # loaded by file path in a worker process (sqlenv/_worker.py): load the sibling the same way,
    # so a worker still imports nothing of sqlenv/__init__.py
    import importlib.util

    _here = os.path.dirname(os.path.abspath(__file__))
    _spec = importlib.util.spec_from_file_location(
        "_sqlenv_worker_connections", os.path.join(_here, "connections.py")
    )
    connections = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = connections
    _spec.loader.exec_module(connections)

# The process-wide connection budget and host faults live in sqlenv.connections; re-exported here.
BUDGET_ENV = connections.BUDGET_ENV
HostError = connections.HostError
connection_budget = connections.connection_budget
free_idle_connections = connections.free_idle_connections
open_connection = connections.open_connection
retry_host_fault = connections.retry_host_fault

__all__ = [
    "ERROR_KINDS",
    "BUDGET_ENV",
    "ExecutionResult",
    "ExecutorConfig",
    "Executor",
    "HostError",
    "connection_budget",
    "execute",
    "free_idle_connections",
    "open_connection",
    "retry_host_fault",
]

ERROR_KINDS = (
    "syntax",
    "no_such_table",
    "no_such_column",
    "timeout",
    "too_large",
    "forbidden",
    "multiple_statements",
    "other",
)


@dataclass(frozen=True)
class ExecutionResult:
    """What one SQL statement produced: rows and column names on success, else an error kind and message."""

    rows: tuple[tuple, ...] = ()
    columns: tuple[str, ...] = ()
    error: str | None = None  # None on success, else one of ERROR_KINDS
    message: str = ""  # the error message ("" on success)
    elapsed: float = 0.0  # seconds spent in execute()

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ExecutorConfig:
    """Budgets for one query. The first five fields are the interface contract; the rest are tuning."""

    timeout: float = 1.0
    """Seconds a query may run before it is aborted ("timeout"). Wall-clock, so the verdict on a query near
    the budget depends on the machine and its load; see max_instructions."""
    max_rows: int = 10_000
    """Most rows a result may have ("too_large" beyond)."""
    max_bytes: int = 8_000_000
    """Most bytes a result may hold ("too_large" beyond): the size of its values' marshal encoding, i.e. the
    string and blob bytes plus 2 to 9 bytes per value."""
    max_sql_length: int = 100_000
    """Most characters of SQL accepted ("too_large" beyond)."""
    max_instructions: int | None = None
    """Most SQLite virtual-machine instructions a query may run ("timeout" beyond), None for no such budget.
    The same on every machine and under any load, so rewards are reproducible; counted by the progress
    handler, to a resolution of progress_steps instructions. `timeout` stays active as the hard backstop
    (work inside one instruction, such as a sort or a LIKE, is not counted). 100_000_000 is roughly a
    1 s budget on the 2-core development machine (24 to 215 million instructions per second by query
    shape; docs/reliability.md)."""
    max_value_bytes: int = 100_000
    """Largest single string or blob SQLite may build (SQLITE_LIMIT_LENGTH), capped at max_bytes. Fetch chunks
    are sized so that even rows of such values overshoot max_bytes by at most one row."""
    max_connections: int = 64
    """Open read-only connections kept per Executor (least recently used are closed)."""
    revalidate: bool = True
    """stat() the file on every call and reopen it if it was replaced or changed (about 2 us). False is
    for paths whose content never changes, such as the content-addressed database cache."""
    progress_steps: int = 1000
    """SQLite VM instructions between deadline checks (smaller: sharper timeouts, more overhead)."""
    kill_grace: float = 0.5
    """Workers only: seconds past the query budget before an unresponsive worker is killed."""
    worker_heap_limit: int = 1 << 30
    """Workers only: SQLite's hard heap limit in each worker process, bytes (0 = none)."""

    def __post_init__(self):
        if not (
            isinstance(self.timeout, (int, float))
            and self.timeout > 0
            and math.isfinite(self.timeout)
        ):
            raise ValueError(
                f"ExecutorConfig.timeout must be a positive number of seconds, got {self.timeout!r}"
            )
        for name in (
            "max_rows",
            "max_bytes",
            "max_sql_length",
            "max_value_bytes",
            "max_connections",
            "progress_steps",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"ExecutorConfig.{name} must be a positive int, got {value!r}")
        if self.max_instructions is not None and not (
            isinstance(self.max_instructions, int)
            and not isinstance(self.max_instructions, bool)
            and self.max_instructions > 0
        ):
            raise ValueError(
                "ExecutorConfig.max_instructions must be a positive int (SQLite virtual-machine "
                f"instructions) or None, got {self.max_instructions!r}"
            )
        if self.kill_grace < 0 or self.worker_heap_limit < 0:
            raise ValueError("ExecutorConfig.kill_grace and worker_heap_limit must be >= 0")


_now = time.perf_counter
_new = object.__new__


def _result(rows, columns, error, message, elapsed) -> ExecutionResult:
    """ExecutionResult(...) without the frozen dataclass's __init__ (1.3 us of the hot path)."""
    result = _new(ExecutionResult)
    fields = result.__dict__
    fields["rows"] = rows
    fields["columns"] = columns
    fields["error"] = error
    fields["message"] = message
    fields["elapsed"] = elapsed
    return result


# --------------------------------------------------------------------------- authorizer

_OK, _DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
_READ, _SELECT, _FUNCTION = sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION
_RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)
_DENIED_FUNCTIONS = frozenset(
    {
        "load_extension",
        "fts3_tokenizer",
        "fts5",
        "fts5_source_id",
        "optimize",
        "matchinfo",
        "offsets",
        "snippet",
        "highlight",
        "bm25",
        "rtreenode",
        "rtreedepth",
        "rtreecheck",
        # Not in the stock build, refused should one appear (the sqlite3 shell's file functions).
        "readfile",
        "writefile",
        "edit",
        "fsdir",
        "sqlar_compress",
        "sqlar_uncompress",
        "zipfile",
    }
)


def _authorizer(action, arg1, arg2, db_name, source):
    """Allow reads, SELECTs, recursive CTEs and safe functions; deny everything else at prepare time."""
    if action == _READ or action == _SELECT or action == _RECURSIVE:
        return _OK
    if action == _FUNCTION:
        name = (arg2 or "").lower()
        if name in _DENIED_FUNCTIONS or name.startswith("sqlite_"):
            return _DENY
        return _OK
    # Writes, DDL, ATTACH/DETACH, PRAGMA, transactions, ANALYZE, REINDEX, and the implicit UPDATE of
    # sqlite_master that declaring a table-valued function (eponymous virtual table) performs.
    return _DENY


# --------------------------------------------------------------------------- errors

_RULES = (  # (substring of the lower-cased message, kind); first match wins
    ("interrupted", "timeout"),
    ("one statement at a time", "multiple_statements"),
    ("not authorized", "forbidden"),
    ("prohibited", "forbidden"),
    ("readonly database", "forbidden"),
    ("vtable constructor failed", "forbidden"),
    ("authorization denied", "forbidden"),
    ("may not be modified", "forbidden"),
    ("no such table", "no_such_table"),
    ("no such column", "no_such_column"),
    ("syntax error", "syntax"),
    ("incomplete input", "syntax"),
    ("unrecognized token", "syntax"),
    ("null character", "syntax"),
    ("incorrect number of bindings", "syntax"),  # a placeholder (?, :x) with nothing bound
    ("too big", "too_large"),
    ("too large", "too_large"),
    ("too long", "too_large"),
    ("too many", "too_large"),
    ("stack overflow", "too_large"),
    ("out of memory", "too_large"),
)


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception raised while running SQL to (error kind, message)."""
    if isinstance(exc, MemoryError):
        return "too_large", "out of memory"
    if isinstance(exc, UnicodeError):
        return "syntax", f"SQL is not valid UTF-8 text: {exc}"
    if isinstance(exc, RecursionError):
        return "too_large", f"too deeply nested: {exc}"
    message = str(exc) or type(exc).__name__
    low = message.lower()
    for needle, kind in _RULES:
        if needle in low:
            return kind, message
    return "other", message


_UNDECODABLE = "Could not decode to UTF-8"  # the sqlite3 module's message for TEXT that is not UTF-8


def _decode_leniently(data: bytes) -> str:
    return data.decode("utf-8", "ignore")


def _strip_trailing_semicolons(sql: str) -> str:
    return sql.rstrip(" \t\r\n\f;")


# --------------------------------------------------------------------------- connections


_UNLIMITED = 1 << 62  # progress-handler calls: no instruction budget


class _Entry:
    """A cached read-only connection, the file identity it was opened on, and the running query's budgets:
    its deadline and `ticks`, the progress-handler calls it has left (it is over its instruction budget once
    they drop below zero), and when it was last `used`."""

    __slots__ = ("conn", "identity", "deadline", "ticks", "used", "__weakref__")

    def __init__(self, conn, identity):
        self.conn = conn
        self.identity = identity
        self.deadline = 0.0
        self.ticks = _UNLIMITED
        self.used = _now()  # when a query last started on it: the process-wide LRU order


_LIMITS = (  # (limit, value or a function of the config). Generous where real schemas or SQL could need it.
    ("SQLITE_LIMIT_LENGTH", lambda c: max(1, min(c.max_value_bytes, c.max_bytes))),
    ("SQLITE_LIMIT_SQL_LENGTH", lambda c: 4 * c.max_sql_length + 16),  # bytes; chars checked first
    ("SQLITE_LIMIT_COLUMN", 1000),  # also bounds a row: 1000 values of max_value_bytes
    ("SQLITE_LIMIT_EXPR_DEPTH", 1000),
    ("SQLITE_LIMIT_COMPOUND_SELECT", 500),
    ("SQLITE_LIMIT_VDBE_OP", 250_000),
    ("SQLITE_LIMIT_FUNCTION_ARG", 127),  # json_object with many pairs
    ("SQLITE_LIMIT_ATTACHED", 0),
    ("SQLITE_LIMIT_LIKE_PATTERN_LENGTH", 10_000),
    ("SQLITE_LIMIT_VARIABLE_NUMBER", 100),
    ("SQLITE_LIMIT_TRIGGER_DEPTH", 1),
    ("SQLITE_LIMIT_WORKER_THREADS", 0),
)


def _open(path: str, identity: tuple, config: ExecutorConfig) -> _Entry:
    """A hardened connection for untrusted SQL. Not `connections.connect_readonly` (the describe path's
    `mode=ro`): `immutable=1` takes no locks and creates nothing beside the file, which is safe only
    because this connection is cached and `_entry` stats the file before every query to reopen a
    replaced one; then the limits, authorizer, progress handler and safe printf."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro&immutable=1"
    conn = sqlite3.connect(
        uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=256
    )
    try:
        if hasattr(conn, "enable_load_extension"):  # absent when Python was built without it
            conn.enable_load_extension(False)
        # Read the schema now, before the progress handler exists: a first query would otherwise have its
        # instruction count include the schema's parsing (and fail on a file that is not a database).
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA trusted_schema=OFF")
        if hasattr(conn, "setlimit"):  # Python >= 3.11
            for name, value in _LIMITS:
                category = getattr(sqlite3, name, None)
                if category is not None:
                    conn.setlimit(category, value(config) if callable(value) else value)
        entry = _Entry(conn, identity)
        conn.set_authorizer(_authorizer)  # last: our own PRAGMAs above would be refused
        now = time.perf_counter

        def over_budget(entry_ref=weakref.ref(entry)) -> bool:
            """Called every `progress_steps` instructions: abort (True) past either budget."""
            current = entry_ref()
            if current is None:
                return True
            current.ticks -= 1
            return current.ticks < 0 or now() > current.deadline

        conn.set_progress_handler(over_budget, config.progress_steps)
        safe_printf = _make_safe_printf(_LIMITS[0][1](config))
        for name in ("printf", "format"):
            conn.create_function(name, -1, safe_printf, deterministic=True)
        return entry
    except BaseException:
        conn.close()
        raise



_PRINTF_SPEC = re.compile(r"%[-+ 0#!,]*(\*|\d+)?(?:\.(\*|\d+))?l{0,2}(.)?", re.DOTALL)


def _printf_is_bounded(fmt, args, limit: int) -> bool:
    """False if a width or precision in printf's format (literal or `*`) exceeds `limit`.

    SQLite 3.40's printf spends time linear in the precision of `%c` even when the result is too big to keep:
    printf('%.*c', 2000000000, 'x') takes half a minute inside one VM instruction, out of the progress
    handler's reach.
    """
    if not isinstance(fmt, str):
        return True  # a NULL or numeric format has no conversions
    position = 0
    for match in _PRINTF_SPEC.finditer(fmt):
        if match.group(3) == "%":
            continue
        for part in match.group(1, 2):
            if part is None:
                continue
            if part == "*":
                value = args[position] if position < len(args) else 0
                position += 1
                try:
                    number = abs(float(value)) if value is not None else 0.0
                except (TypeError, ValueError, OverflowError):
                    number = 0.0  # text that is not a number reads as 0, as in SQLite
                if not number <= limit:  # also catches NaN
                    return False
            elif len(part) > 12 or int(part) > limit:
                return False
        position += 1
    return True


def _make_safe_printf(limit: int):
    """printf/format that refuses (returns NULL, as SQLite does for a too-big result) oversized widths, and
    otherwise runs SQLite's own printf on a private in-memory connection."""
    helper: list = []

    def safe_printf(*args):
        if not args or not _printf_is_bounded(args[0], args[1:], limit):
            return None
        if not helper:
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            if hasattr(conn, "setlimit"):
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
            helper.append(conn)
        placeholders = ", ".join(["?"] * len(args))
        return helper[0].execute(f"SELECT printf({placeholders})", args).fetchone()[0]

    return safe_printf


def _byte_size(rows: list) -> int:
    """Bytes of the values in `rows`: the length of their marshal encoding (C speed, about 10% of a fetch)."""
    try:
        return len(marshal.dumps(rows))
    except ValueError:  # a type marshal does not know (only with custom converters)
        return sum(map(sys.getsizeof, chain.from_iterable(rows)))


# --------------------------------------------------------------------------- executor


class Executor:
    """Runs untrusted SELECTs against SQLite files; `execute` never raises for anything the SQL does
    (HostError for faults of the host; see the module docstring).

    >>> with Executor(ExecutorConfig(timeout=0.5)) as ex:
    ...     result = ex.execute("db.sqlite", "SELECT name FROM Athlete")
    """

    def __init__(self, config: ExecutorConfig | None = None, **config_kwargs):
        # A private copy: later changes to the caller's config object cannot half-apply.
        config = ExecutorConfig(
            **{**(asdict(config) if config is not None else {}), **config_kwargs}
        )
        self.config = config
        self._cache: collections.OrderedDict[object, _Entry] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._pool = None
        self._pid = os.getpid()
        self._max_rows, self._max_bytes = config.max_rows, config.max_bytes
        self._revalidate = bool(config.revalidate)
        # progress-handler calls a query may make (over max_instructions once calls x progress_steps is)
        self._ticks = (
            _UNLIMITED
            if config.max_instructions is None
            else config.max_instructions // config.progress_steps
        )
        # marshal bytes one value may take: SQLite's cap on a string or blob plus a little framing
        self._value_room = max(1, min(config.max_value_bytes, config.max_bytes)) + 16
        connections.BUDGET.register(self)

    # -- public API

    def execute(self, db_path, sql) -> ExecutionResult:
        """Run one SELECT `sql` against the SQLite file `db_path`. Never raises for anything the SQL
        does; raises HostError for a fault of the host (see the module docstring)."""
        return self._execute(db_path, sql, self.config.timeout)

    def execute_group(
        self, db_path, sqls: Sequence, workers: int = 0, deadline: float | None = None
    ) -> list[ExecutionResult]:
        """Run a group of SQL strings (a GRPO group) against one database; results in input order.

        workers=0 runs them here, one after another. workers>0 runs them in that many persistent worker
        processes (started on first use, kept for later calls): a worker that does not answer within
        `timeout + kill_grace` seconds of getting its query, or dies, is killed and replaced, and its sample
        comes back as "timeout" (or "other" naming the crash). `deadline`, in seconds from the call, bounds
        the whole call: queries still running or not started by then come back as "timeout". A pool
        that cannot be started runs the group here. Raises HostError if a query met a host fault
        that a retry did not mend (with workers, once the whole group has run); never for the SQL.
        """
        start = time.perf_counter()
        try:
            sqls = list(sqls)
            end = None if deadline is None else start + max(0.0, float(deadline))
            n_workers = int(workers)
        except Exception as exc:  # a bad argument is still a result, per query if we know how many
            message = f"bad execute_group arguments: {exc!r}"
            count = len(sqls) if isinstance(sqls, list) else 0
            return [ExecutionResult(error="other", message=message)] * count
        if n_workers <= 0 or len(sqls) == 0:
            return self._execute_serial(db_path, sqls, end)
        try:
            with self._lock:
                pool = self._get_pool(n_workers)
                results = pool.run(db_path, sqls, end, self)
        except HostError:
            raise
        except Exception as exc:  # pool trouble must not lose the group: fall back to in-process
            with self._lock:
                pool, self._pool = self._pool, None
            if pool is not None:
                try:
                    pool.close()
                except Exception:
                    pass
            results = self._execute_serial(db_path, sqls, end)
            note = f" (worker pool failed: {exc!r}; ran in-process)"
            return [r if r.ok else _replace_message(r, r.message + note) for r in results]
        for result in results:  # a worker met a host fault it could not mend: not the query's doing
            if result.error == _HOST_KIND:
                raise HostError(result.message, os.fspath(db_path), result.message)
        return results

    def interrupt(self) -> None:
        """Stop the query this Executor is running now, from any thread (``sqlite3``'s
        ``Connection.interrupt``): it ends as "timeout". For a client that went away; a no-op when
        nothing runs. Lock-free, so it never waits for the query it stops."""
        try:
            entries = tuple(self._cache.values())
        except RuntimeError:  # the cache changed under us: that query has not started yet
            return
        for entry in entries:
            try:
                entry.conn.interrupt()
            except Exception:  # noqa: BLE001 - closed meanwhile: nothing to stop
                pass

    def close(self) -> None:
        """Close every cached connection and stop the worker pool. The Executor stays usable."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            entries = list(self._cache.values())
            self._cache.clear()
        connections.BUDGET.closed(len(entries))
        for entry in entries:
            try:
                entry.conn.close()
            except Exception:
                pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- internals

    def _execute_serial(self, db_path, sqls: list, end: float | None) -> list[ExecutionResult]:
        results = []
        timeout = self.config.timeout
        for sql in sqls:
            budget = timeout if end is None else min(timeout, end - time.perf_counter())
            if budget <= 0:
                results.append(
                    ExecutionResult(
                        error="timeout", message="group deadline passed before this query ran"
                    )
                )
            else:
                results.append(self._execute(db_path, sql, budget))
        return results

    def _execute(self, db_path, sql, budget: float) -> ExecutionResult:
        """execute() with an explicit time budget in seconds (the group paths pass what is left)."""
        start = _now()
        try:
            if type(sql) is not str:
                if not isinstance(sql, str):
                    return _result(
                        (),
                        (),
                        "other",
                        f"SQL must be a str, got {type(sql).__name__}",
                        _now() - start,
                    )
                sql = str.__str__(sql)  # a str subclass: use the plain string, never its methods
            if len(sql) > self.config.max_sql_length:
                return _result(
                    (),
                    (),
                    "too_large",
                    f"SQL is {len(sql)} characters long; the limit is {self.config.max_sql_length}",
                    _now() - start,
                )
            with self._lock:
                entry = self._entry(db_path)
                if type(entry) is str:
                    return _result((), (), "other", entry, _now() - start)
                entry.deadline = start + budget
                entry.ticks = self._ticks
                entry.used = start
                try:
                    rows, columns, error, message = self._run(entry.conn, sql)
                    if error == "other":
                        if message.startswith(_UNDECODABLE):
                            rows, columns, error, message = self._run_lenient(entry, sql)
                        elif connections.is_host_message(message):
                            rows, columns, error, message = self._rerun_host(entry, db_path, sql)
                    over_instructions = entry.ticks < 0
                finally:
                    entry.deadline = 0.0
                    entry.ticks = _UNLIMITED
            if error == "timeout" and not message:
                if over_instructions:
                    message = (
                        f"query exceeded its {self.config.max_instructions}-instruction budget"
                    )
                else:
                    message = f"query exceeded its {budget:.3g} s time budget"
            return _result(rows, columns, error, message, _now() - start)
        except HostError:
            raise
        except Exception as exc:  # last resort: the contract is "never raises" for the SQL
            kind, message = _classify(exc)
            return _result((), (), kind, message, _now() - start)

    def _rerun_host(self, entry: _Entry, db_path, sql: str):
        """_run again after a host fault while the query ran (SQLite could not open a temporary
        file): the process's other idle connections are closed first; the same deadline, a fresh
        instruction budget. Raises HostError if the fault persists."""

        def rerun():
            entry.ticks = self._ticks
            outcome = self._run(entry.conn, sql)
            if outcome[2] == "other" and connections.is_host_message(outcome[3]):
                raise sqlite3.OperationalError(outcome[3])
            return outcome

        freed = connections.BUDGET.free_idle(keep=entry)
        try:
            return rerun()
        except sqlite3.OperationalError as exc:
            cause, _ = connections.diagnose(exc, None)
            message = (
                f"a query on {str(db_path)!r} failed: {cause}; retried once after closing {freed} "
                f"idle cached connection(s). {connections.NOT_THE_QUERY}"
            )
            raise HostError(message, os.fspath(db_path), cause) from exc

    def _run_lenient(self, entry: _Entry, sql: str):
        """_run again with TEXT decoded as bytes.decode("utf-8", "ignore"), as Spider's evaluation does, for
        a result holding text that is not valid UTF-8. The rerun gets the instruction budget afresh (it
        repeats the same work) but not more time; the default decoding is restored afterwards."""
        conn = entry.conn
        entry.ticks = self._ticks
        conn.text_factory = _decode_leniently
        try:
            return self._run(conn, sql)
        finally:
            conn.text_factory = str

    def _run(self, conn: sqlite3.Connection, sql: str):
        """Execute and fetch under the caps. Returns (rows, columns, error, message)."""
        try:
            cursor = conn.execute(sql)
        except sqlite3.ProgrammingError as exc:
            kind, message = _classify(exc)
            stripped = _strip_trailing_semicolons(sql)
            if kind != "multiple_statements" or stripped == sql:
                return (), (), kind, message
            try:  # "SELECT 1;;" or "SELECT 1; ;": empty statements after the first are harmless
                cursor = conn.execute(stripped)
            except Exception as exc2:
                return (), (), *_classify(exc2)
        except Exception as exc:
            kind, message = _classify(exc)
            return (), (), kind, "" if kind == "timeout" else message
        finished = False
        try:
            description = cursor.description
            if description is None:
                finished = True
                return (), (), "syntax", "empty SQL statement: nothing to run"
            columns = tuple([d[0] for d in description])
            # A chunk is as many rows as fit in the byte budget even if every value were as large as SQLite
            # allows; results that fit in the first chunk need no accounting at all.
            per_row = len(columns) * self._value_room + 64
            max_rows, max_bytes = self._max_rows, self._max_bytes
            chunk = max(1, min(max_rows + 1, max_bytes // per_row, 1024))
            rows = cursor.fetchmany(chunk)
            if len(rows) < chunk:  # done: the sqlite3 module has already reset the statement
                finished = True
                if len(rows) * per_row > max_bytes and _byte_size(rows) > max_bytes:
                    return (), columns, "too_large", f"result holds more than {max_bytes} bytes"
                return tuple(rows), columns, None, ""
            size = _byte_size(rows)
            while True:
                if len(rows) > max_rows:
                    return (), columns, "too_large", f"result has more than {max_rows} rows"
                if size > max_bytes:
                    return (), columns, "too_large", f"result holds more than {max_bytes} bytes"
                want = max(1, min(max_rows + 1 - len(rows), (max_bytes - size) // per_row, 4096))
                more = cursor.fetchmany(want)
                size += _byte_size(more)
                rows.extend(more)
                if len(more) < want:
                    finished = True
                    if len(rows) > max_rows:
                        return (), columns, "too_large", f"result has more than {max_rows} rows"
                    if size > max_bytes:
                        return (), columns, "too_large", f"result holds more than {max_bytes} bytes"
                    return tuple(rows), columns, None, ""
        except Exception as exc:
            kind, message = _classify(exc)
            return (), (), kind, "" if kind == "timeout" else message
        finally:
            if not finished:
                try:
                    cursor.close()  # resets the unfinished statement
                except Exception:
                    pass

    def _entry(self, db_path):
        """The cached connection for db_path (opened or reopened as needed), or an error message."""
        if self._pid != os.getpid():
            self._forget_after_fork()
        cache = self._cache
        try:
            key = os.fspath(db_path)
            entry = cache.get(key)
            if entry is not None and not self._revalidate:
                cache.move_to_end(key)
                return entry
            st = os.stat(key)
        except (TypeError, ValueError) as exc:  # not a path at all: the caller's mistake
            return f"cannot open database {db_path!r}: {exc}"
        except OSError as exc:  # stat needs no descriptor: retrying could not help
            cause = connections.errno_cause(exc) if exc.errno else str(exc)
            raise connections.cannot_open(key, cause) from exc
        if entry is not None:
            if entry.identity == (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns):
                cache.move_to_end(key)
                return entry
            del cache[key]  # the file was replaced or changed: reopen
            entry.conn.close()
            connections.BUDGET.closed()
        if not stat.S_ISREG(st.st_mode):
            raise connections.cannot_open(key, connections.NOT_A_FILE)
        identity = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
        connections.BUDGET.admit()
        try:
            entry = retry_host_fault(
                key, "cannot open database", lambda: _open(key, identity, self.config)
            )
        except BaseException:
            connections.BUDGET.closed()
            raise
        cache[key] = entry
        while len(cache) > self.config.max_connections:
            _, old = cache.popitem(last=False)
            old.conn.close()
            connections.BUDGET.closed()
        return entry

    def _forget_after_fork(self) -> None:
        """In a forked child the parent's connections and workers are not ours: drop them (the same
        dict, which the budget's finalizer holds), and the parent's workers unstopped."""
        self._cache.clear()
        self._pool = None
        self._pid = os.getpid()

    def _get_pool(self, workers: int):
        from sqlenv._worker import WorkerPool  # only the group path needs it

        if self._pid != os.getpid():
            self._forget_after_fork()
        if self._pool is None:
            self._pool = WorkerPool(self.config, workers, ExecutionResult)
        else:
            self._pool.resize(workers)
        return self._pool


def _replace_message(result: ExecutionResult, message: str) -> ExecutionResult:
    return _result(result.rows, result.columns, result.error, message, result.elapsed)


_HOST_KIND = "host"  # a worker's answer for a query that met a host fault (never an error kind)

_DEFAULT_EXECUTORS: dict = {}
_DEFAULT_LOCK = threading.Lock()


def _new_default_lock_in_child() -> None:
    """A forked child gets a new lock (one another thread held at the fork would never be released)."""
    global _DEFAULT_LOCK
    _DEFAULT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_default_lock_in_child)


def execute(db_path, sql, **config_kwargs) -> ExecutionResult:
    """Module-level convenience: run `sql` on `db_path` with a shared Executor per configuration."""
    try:
        key = tuple(sorted(config_kwargs.items()))
        with _DEFAULT_LOCK:
            executor = _DEFAULT_EXECUTORS.get(key)
            if executor is None:
                if len(_DEFAULT_EXECUTORS) >= 8:
                    _DEFAULT_EXECUTORS.pop(next(iter(_DEFAULT_EXECUTORS))).close()
                executor = _DEFAULT_EXECUTORS[key] = Executor(ExecutorConfig(**config_kwargs))
    except Exception as exc:
        return ExecutionResult(error="other", message=f"bad executor configuration: {exc}")
    return executor.execute(db_path, sql)
