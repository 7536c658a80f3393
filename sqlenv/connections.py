"""The process's SQLite connections: one budget for all of them, host faults told from query faults.

- **The budget.** Every connection sqlenv keeps (the Executors' caches) counts against one
  process-wide budget, `connection_budget()`: half the soft RLIMIT_NOFILE less 16, or
  $SQLENV_CONNECTION_BUDGET. Before another is opened at the budget, the least recently used idle
  cached connection of any Executor (never one running a query) is closed. Short-lived connections
  (describing or building a database) make room the same way but are not counted.
- **Host faults.** `HostError` is a fault of the host (no descriptors, no memory, a missing or
  spoiled file), never of the query. `retry_host_fault` runs an open, read or build, retries it once
  after closing the idle connections where that can help, then raises HostError naming the action,
  the path and the cause.
- **Read-only opening.** `connect_readonly` is the one helper that opens a database to describe it
  (sqlenv.schema); the Executor opens its own, hardened connections (`sqlenv.executor._open`).

Imports nothing of sqlenv: the executor's worker processes load this file by path.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
import weakref
from pathlib import Path

try:
    import resource
except ImportError:  # not on this platform: no descriptor limit to read
    resource = None

__all__ = [
    "BUDGET",
    "BUDGET_ENV",
    "NOT_A_FILE",
    "NOT_THE_QUERY",
    "HostError",
    "cannot_open",
    "connect_readonly",
    "connection_budget",
    "diagnose",
    "errno_cause",
    "free_idle_connections",
    "is_host_message",
    "open_connection",
    "retry_host_fault",
]


# --------------------------------------------------------------------------- host faults


class HostError(RuntimeError):
    """A fault of the host, not of the query: a database that cannot be opened (missing, not a
    database, unreadable), no file descriptors, no memory, no room for SQLite's temporary files.
    Never an ExecutionResult, never scored. `path`: the database; `cause`: what went wrong."""

    def __init__(self, message: str, path: str = "", cause: str = ""):
        super().__init__(message)
        self.path = path
        self.cause = cause

    def __reduce__(self):  # picklable with its fields (async vector envs send exceptions across)
        return (type(self), (str(self), self.path, self.cause))


# Messages of a query that failed for want of a resource of the host, not because of its SQL: SQLite
# opens temporary files to sort or to materialise large intermediate results.
NOT_THE_QUERY = "A fault of the host, not of the query"
_HOST_MESSAGES = ("unable to open database file", "disk i/o error", "database or disk is full")
_TRANSIENT_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC, errno.EAGAIN}
)


def errno_cause(exc: OSError) -> str:
    """A host fault's errno in words; EMFILE names the process's open-file limit."""
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    if exc.errno == errno.EMFILE:
        soft = _nofile_limit()
        limit = "unlimited" if soft is None else str(soft)
        return f"too many open files (EMFILE; the process's open-file limit is {limit})"
    if exc.errno == errno.ENFILE:
        return "the system's open-file table is full (ENFILE)"
    if exc.errno == errno.ENOENT:
        return "no such file (ENOENT)"
    return f"{os.strerror(exc.errno).lower()} ({name})"


def _probe(path: str | None) -> OSError | None:
    """Open /dev/null, then `path`, read-only: the OSError saying why opening fails, or None."""
    for target in (os.devnull, path):
        if not target:
            continue
        try:
            os.close(os.open(target, os.O_RDONLY))
        except OSError as exc:
            return exc
    return None


def diagnose(exc: BaseException, path: str | None) -> tuple[str, bool]:
    """(the cause of a failure to open or run, in words; whether a retry after freeing may help)"""
    if isinstance(exc, MemoryError):
        return "out of memory", True
    if isinstance(exc, OSError) and exc.errno:
        return errno_cause(exc), exc.errno in _TRANSIENT_ERRNOS
    message = str(exc) or type(exc).__name__
    low = message.lower()
    if "out of memory" in low:
        return f"out of memory ({message})", True
    if "not a database" in low or "malformed" in low:
        return f"the file is not a usable SQLite database ({message})", False
    probed = _probe(path)  # SQLite's "unable to open database file" says no more than that
    if probed is not None and probed.errno:
        return f"{errno_cause(probed)}; SQLite said: {message}", probed.errno in _TRANSIENT_ERRNOS
    return f"{message} (the file itself opens: no descriptor is missing)", True


def is_host_message(message: str) -> bool:
    low = message.lower()
    return any(needle in low for needle in _HOST_MESSAGES)


def retry_host_fault(path, action: str, fn, keep=None, probe: bool = True):
    """`fn()`, which opens, reads or builds the SQLite file `path`; if it fails for a reason of the
    host, free the process's idle connections (all but `keep`, an `_Entry`) and call it once more;
    if it fails again, or for a reason retrying cannot mend (a missing file, not a database), raise
    HostError naming `action`, the path and the cause. Used for every SQLite file sqlenv opens
    (`open_connection`). `probe=False` when `path` need not exist yet (building it): the cause is
    then not looked up there."""
    target = str(path) if probe else None
    try:
        return fn()
    except HostError:
        raise
    except Exception as exc:
        cause, transient = diagnose(exc, target)
        error = exc
    note = ""
    if transient:
        freed = BUDGET.free_idle(keep)
        try:
            return fn()
        except HostError:
            raise
        except Exception as exc:
            cause, _ = diagnose(exc, target)
            error = exc
        note = f"; retried once after closing {freed} idle cached connection(s)"
    message = f"{action} {str(path)!r}: {cause}{note}. {NOT_THE_QUERY}"
    raise HostError(message, str(path), cause) from error


NOT_A_FILE = "not a regular file (a directory or a device)"


def cannot_open(path, cause: str) -> HostError:
    """The HostError for a database `path` that cannot be opened for `cause`, where no retry helps."""
    return HostError(f"cannot open database {str(path)!r}: {cause}. {NOT_THE_QUERY}", str(path), cause)


def open_connection(path, connect):
    """A short-lived SQLite connection `connect()` to `path` (to describe or build a database),
    opened within the process's connection budget (an idle cached connection is closed first if it
    is full) and under `retry_host_fault`'s rule: a host fault raises HostError, never
    sqlite3.OperationalError. The caller closes it."""
    BUDGET.make_room()
    return retry_host_fault(path, "cannot open database", connect)


def connect_readonly(path: str | os.PathLike) -> sqlite3.Connection:
    """A short-lived read-only connection (``mode=ro``) to the existing SQLite file ``path``, to
    describe it, opened within the process's connection budget. A missing file or one that is not a
    regular file raises HostError at once; any other failure to open it, under `retry_host_fault`'s
    rule. TEXT that is not UTF-8 reads with U+FFFD in place of its bad bytes. The caller closes it.

    Not the Executor's connection (`sqlenv.executor._open`): that one adds ``immutable=1`` (no locks,
    no journal, nothing created beside the file) because the Executor keeps it open and stats the
    file before every query to see a replacement; a short-lived reader takes SQLite's shared lock
    instead, so it reads a consistent snapshot even of a file another process is writing."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:  # stat needs no descriptor: retrying could not help
        raise cannot_open(path, errno_cause(exc) if exc.errno else str(exc)) from exc
    if not stat.S_ISREG(mode):
        raise cannot_open(path, NOT_A_FILE)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    conn = open_connection(path, lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    return conn


# --------------------------------------------------------------------------- connection budget

BUDGET_ENV = "SQLENV_CONNECTION_BUDGET"
_NOFILE_CAP = 1 << 20  # what "unlimited" counts as


def _nofile_limit() -> int | None:
    """The process's soft RLIMIT_NOFILE (None: unlimited or unknown)."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY or soft < 0 else soft


def connection_budget() -> int:
    """Connections all the process's Executors may keep open together: $SQLENV_CONNECTION_BUDGET if
    set (a positive int), else half the soft RLIMIT_NOFILE less 16, at least 4 (1024 -> 496, 256 ->
    112, 64 -> 16). The other half is headroom for sockets, pipes, worker processes, SQLite's
    temporary files and the short-lived connections that describe or build databases. Read on every
    open, so a limit changed at run time (`resource.setrlimit`) applies at once."""
    value = os.environ.get(BUDGET_ENV)
    if value:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number > 0:
            return number
    soft = _nofile_limit()
    return max(4, min(soft or _NOFILE_CAP, _NOFILE_CAP) // 2 - 16)


def free_idle_connections() -> int:
    """Close every cached connection of every Executor in this process that is not running a query
    (they reopen on next use). Returns how many were closed."""
    return BUDGET.free_idle()


class _ConnectionBudget:
    """The process-wide count of cached connections, kept within `connection_budget()`: before an
    Executor opens one, the least recently used idle connection of any Executor is closed while the
    count is at the budget. "Idle" means its Executor's lock could be taken without waiting (an
    Executor holds it while it runs a query), so a running query's connection is never closed.
    Locks: the budget's lock, then executors' locks only without blocking, so no deadlock. The count
    is kept as connections enter and leave caches (O(1) per open); an Executor dropped unclosed is
    discounted when it is collected, and a count that finds nothing to close is recounted.

    What it reads of a registered Executor: `_cache` (an OrderedDict, least recently used first, of
    entries with `conn` and `used`), `_lock` (held while a query runs), `_pid` and
    `_forget_after_fork()`."""

    def __init__(self):
        # Reentrant: `discount` runs from the garbage collector, which may fire while this thread
        # holds it.
        self.lock = threading.RLock()
        self.executors: weakref.WeakSet = weakref.WeakSet()
        self.open = 0  # connections in caches, plus opens admitted and not yet cached

    def register(self, executor) -> None:
        with self.lock:
            self.executors.add(executor)
        finalizer = weakref.finalize(executor, self.discount, executor._cache)
        finalizer.atexit = False

    def discount(self, cache) -> None:
        """An Executor was collected: its cached connections close with it."""
        with self.lock:
            self.open = max(0, self.open - len(cache))

    def admit(self) -> None:
        """Make room for one connection an Executor is about to open, and count it."""
        with self.lock:
            self._make_room()
            self.open += 1

    def closed(self, count: int = 1) -> None:
        """`count` connections left a cache (or an admitted open failed)."""
        with self.lock:
            self.open = max(0, self.open - count)

    def make_room(self) -> None:
        """Make room for one short-lived connection (not counted: it is closed right after use)."""
        with self.lock:
            self._make_room()

    def _make_room(self) -> None:
        pid = os.getpid()
        budget = connection_budget()
        while self.open >= budget:
            if self._close_lru(pid):
                self.open -= 1
                continue
            self.open = sum(len(ex._cache) for ex in list(self.executors) if ex._pid == pid)
            break  # every cached connection is busy: open one more rather than fail

    def _close_lru(self, pid: int) -> bool:
        """Close the least recently used idle cached connection of any Executor (False: none is)."""
        oldest, owner = None, None
        for ex in list(self.executors):
            if ex._pid != pid or not ex._cache or not ex._lock.acquire(blocking=False):
                continue
            try:
                entry = next(iter(ex._cache.values()), None)
                if entry is not None and (oldest is None or entry.used < oldest.used):
                    oldest, owner = entry, ex
            finally:
                ex._lock.release()
        if owner is None or not owner._lock.acquire(blocking=False):
            return False
        try:
            if not owner._cache:
                return False
            _, entry = owner._cache.popitem(last=False)
        finally:
            owner._lock.release()
        _close_quietly(entry.conn)
        return True

    def free_idle(self, keep=None) -> int:
        """Close every idle cached connection of every Executor (but `keep`). Returns how many."""
        closed = []
        pid = os.getpid()
        with self.lock:
            for ex in list(self.executors):
                if ex._pid != pid or not ex._lock.acquire(blocking=False):
                    continue
                try:
                    for key, entry in list(ex._cache.items()):
                        if entry is not keep:
                            del ex._cache[key]
                            closed.append(entry.conn)
                finally:
                    ex._lock.release()
            self.open = max(0, self.open - len(closed))
        for conn in closed:
            _close_quietly(conn)
        return len(closed)

    def after_fork_in_child(self) -> None:
        """The child's Executors forget the parent's connections and workers; every lock is new (a
        lock another thread held at the fork would never be released in the child)."""
        self.lock = threading.RLock()
        self.open = 0
        for ex in list(self.executors):
            ex._lock = threading.RLock()
            ex._forget_after_fork()


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:
        pass


BUDGET = _ConnectionBudget()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=BUDGET.after_fork_in_child)

