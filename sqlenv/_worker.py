"""
Persistent worker processes for `Executor.execute_group(..., workers=N)`.

Each worker is a fresh interpreter (`python sqlenv/_worker.py FD_IN FD_OUT CONFIG`), the equivalent of
multiprocessing's "spawn" start method without its one drawback here: spawn re-imports the caller's
`__main__` module in every child, and the training script's `__main__` imports torch. The worker loads
only `executor.py` (by file path, so not even `sqlenv/__init__.py`), caps SQLite's heap, ignores SIGINT
(the parent shuts it down) and answers queries over a pair of pipes framed by
`multiprocessing.connection.Connection` until it reads `None` or end-of-file (the parent is gone).
A query that meets a host fault the worker's own retry did not mend (executor.HostError) is answered
with the error "host" and its message; the parent's Executor raises HostError once the group ran.

The parent side (`WorkerPool`) keeps up to two queries in flight per worker (one running, one waiting in
its pipe), waits with `multiprocessing.connection.wait` until a reply or the earliest hard deadline, and
kills and replaces a worker that is late or dead, requeueing the query that waited behind it. No threads.
`WorkerPool._run` reads as its steps: answer here what needs no worker, replace unfit idle workers, expire
the call at its deadline, dispatch, fall back when no worker can start, wait and read the replies, kill the
overdue. Workers are stopped by `close()`, and by a `weakref.finalize` hook when the pool is
garbage-collected or the interpreter exits.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # run as a script: don't let sqlenv/ shadow top-level modules
    sys.path.pop(0)

import json
import os
import signal
import subprocess
import time
import weakref
from collections import deque
from dataclasses import asdict
from multiprocessing.connection import Connection, wait

STARTUP_TIMEOUT = 20.0  # seconds a fresh worker may take to report ready
STOP_TIMEOUT = 1.0  # seconds a worker gets to exit after the stop message before it is killed
PIPELINE = 2  # queries in flight per worker: one running, one waiting in its pipe
PIPELINE_MAX_SQL = (
    8192  # longer SQL waits for an idle worker (a send must never block on a full pipe)
)
MAX_FAILED_STARTS = 3  # consecutive workers that die before reporting ready: stop replacing them
DEADLINE_PASSED = "group deadline passed before this query ran"
_HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- child side


def _load_executor_module():
    """Import executor.py by path under a private name (skips sqlenv/__init__ and its imports)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_sqlenv_worker_executor", os.path.join(_HERE, "executor.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _child_main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd_in, fd_out, config_json = int(argv[1]), int(argv[2]), argv[3]
    inbox = Connection(fd_in, writable=False)
    outbox = Connection(fd_out, readable=False)
    executor_module = _load_executor_module()
    config = executor_module.ExecutorConfig(**json.loads(config_json))
    if config.worker_heap_limit:
        import sqlite3

        probe = sqlite3.connect(":memory:")
        probe.execute(f"PRAGMA hard_heap_limit={int(config.worker_heap_limit)}")  # process-wide
        probe.close()
    executor = executor_module.Executor(config)
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        task_id, db_path, sql, timeout, end = message
        budget = (
            timeout if end is None else min(timeout, end - time.monotonic())
        )  # monotonic: system-wide
        if budget <= 0:
            outbox.send((task_id, (), (), "timeout", DEADLINE_PASSED, 0.0))
            continue
        try:
            result = executor._execute(db_path, sql, budget)
        except executor_module.HostError as exc:  # the parent raises it once the group has run
            outbox.send((task_id, (), (), "host", str(exc), 0.0))
            continue
        try:
            outbox.send(
                (task_id, result.rows, result.columns, result.error, result.message, result.elapsed)
            )
        except (BrokenPipeError, OSError):
            break
        except Exception as exc:  # unpicklable value (should not happen with sqlite types)
            outbox.send(
                (task_id, (), (), "other", f"result could not be sent: {exc!r}", result.elapsed)
            )
    executor.close()
    return 0


# --------------------------------------------------------------------------- parent side


class _Worker:
    __slots__ = ("proc", "inbox", "outbox", "ready", "started", "tasks", "dispatched", "kill_at")

    def __init__(self, config_json: str):
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    os.path.join(_HERE, "_worker.py"),
                    str(child_in),
                    str(child_out),
                    config_json,
                ],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            for fd in (child_in, parent_out, parent_in, child_out):
                os.close(fd)
            raise
        os.close(child_in)
        os.close(child_out)
        self.inbox = Connection(parent_in, writable=False)  # replies from the worker
        self.outbox = Connection(parent_out, readable=False)  # tasks to the worker
        self.ready = False
        self.started = time.perf_counter()
        self.tasks: deque = (
            deque()
        )  # (index, task id) of the queries sent to it: the first is running
        self.dispatched = 0.0  # when the first of `tasks` started, as far as the parent knows
        self.kill_at = 0.0  # when the first of `tasks` is overdue

    def ask_to_stop(self) -> bool:
        try:
            self.outbox.send(None)
            return True
        except Exception:
            return False

    def stop(self, graceful: bool, asked: bool = False) -> int | None:
        """Stop the process (politely if graceful), reap it, close both pipes. Returns its exit code."""
        if graceful and not asked:
            graceful = self.ask_to_stop()
        try:
            if graceful:
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        except Exception:
            pass
        for conn in (self.inbox, self.outbox):
            try:
                conn.close()
            except Exception:
                pass
        return self.proc.returncode


def _stop_all(workers: list, owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked child must not touch its parent's workers
        return
    asked = [worker.ask_to_stop() for worker in workers]  # all at once, then reap each
    for worker, ok in zip(workers, asked):
        worker.stop(graceful=ok, asked=True)
    workers.clear()


class _Call:
    """One `WorkerPool.run` call: its queries and database, their results so far, the indices still to send,
    and its deadline on both clocks (the workers read time.monotonic(), which is system-wide)."""

    __slots__ = ("end", "end_monotonic", "path", "pending", "results", "sqls")

    def __init__(self, path: str, sqls: list, end: float | None):
        self.path = path
        self.sqls = sqls
        self.results: list = [None] * len(sqls)
        self.pending: deque = deque()  # indices of the queries not sent to a worker yet, in order
        self.end = end
        self.end_monotonic = None if end is None else time.monotonic() + (end - time.perf_counter())

class WorkerPool:
    """N persistent worker processes, each with its own Executor; see the module docstring."""

    def __init__(self, config, size: int, result_type):
        self.config = config
        self._result_type = result_type  # executor.ExecutionResult, passed in: no import back
        self._config_json = json.dumps(asdict(config))
        self._workers: list[_Worker] = []
        self._task_ids = 0
        self._failed_starts = 0
        self._finalizer = weakref.finalize(self, _stop_all, self._workers, os.getpid())
        self.resize(size)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def resize(self, size: int) -> None:
        while len(self._workers) < size:
            self._workers.append(_Worker(self._config_json))
        while len(self._workers) > size:
            self._workers.pop().stop(graceful=True)

    def close(self) -> None:
        self._finalizer()

    def _replace(self, worker: _Worker, failed_start: bool = False) -> int | None:
        """Kill `worker` and start another in its place (none after repeated failed starts)."""
        code = worker.stop(graceful=False)
        self._failed_starts = self._failed_starts + 1 if failed_start else self._failed_starts
        index = self._workers.index(worker)
        if self._failed_starts > MAX_FAILED_STARTS:
            del self._workers[index]
            return code
        try:
            self._workers[index] = _Worker(self._config_json)
        except Exception:
            del self._workers[index]  # could not start one; the others go on
        return code

    def run(self, db_path, sqls: list, end: float | None, fallback) -> list:
        """Run sqls across the workers (see `_run`). If anything interrupts it (an exception, Ctrl-C), the
        workers with queries in flight are replaced, so that no stale answer is read by a later call."""
        try:
            return self._run(db_path, sqls, end, fallback)
        except BaseException:
            for worker in list(self._workers):
                if worker.tasks:
                    worker.tasks.clear()
                    try:
                        self._replace(worker)
                    except BaseException:
                        pass
            raise

    def _run(self, db_path, sqls: list, end: float | None, fallback) -> list:
        """Run sqls across the workers; results in input order. `end` is a time.perf_counter() deadline for the
        whole call (None: none). `fallback` (an Executor) answers what needs no worker, or what no worker can
        run because none could be started.

        Each worker gets up to PIPELINE queries at a time (one running, the next already in its pipe, so it
        never waits for this process to wake up); a query's hard deadline counts from when the previous
        answer arrived. Large SQL is only sent to an idle worker, so a send can never block on a full pipe.
        """
        try:
            path = os.fspath(db_path)
        except TypeError as exc:
            message = f"cannot open database {db_path!r}: {exc}"
            return [self._result_type(error="other", message=message)] * len(sqls)
        call = _Call(path, sqls, end)
        self._answer_here(call, fallback)
        while True:
            now = time.perf_counter()
            self._replace_unfit_idle(now)
            if end is not None and now >= end:
                self._expire(call, now)
                break
            self._dispatch(call, now)
            busy = [w for w in self._workers if w.tasks]
            starting = [w for w in self._workers if not w.ready]
            if not busy and not call.pending:
                break
            if not self._workers:  # no worker could be started at all
                self._fall_back(call, fallback)
                break
            answered = self._wait_and_read(call, busy, starting)
            self._kill_overdue(call, busy, answered)
        return call.results

    def _answer_here(self, call: _Call, fallback) -> None:
        """Answer with `fallback` what needs no worker (not a string, or over max_sql_length); queue the rest."""
        config = self.config
        for index, sql in enumerate(call.sqls):
            if type(sql) is not str or len(sql) > config.max_sql_length:
                call.results[index] = fallback._execute(call.path, sql, config.timeout)
        call.pending.extend(i for i in range(len(call.sqls)) if call.results[i] is None)

    def _replace_unfit_idle(self, now: float) -> None:
        """Replace the idle workers that died, and those that did not report ready within STARTUP_TIMEOUT."""
        for worker in list(self._workers):
            if not worker.tasks and worker.proc.poll() is not None:
                self._replace(worker, failed_start=not worker.ready)
            elif not worker.ready and now - worker.started > STARTUP_TIMEOUT:
                self._replace(worker, failed_start=True)

    def _retire(self, call: _Call, worker: _Worker, result) -> None:
        """Give `worker`'s running query `result` (None: it had none), requeue the queries waiting behind it,
        and replace the worker."""
        if worker.tasks:
            call.results[worker.tasks.popleft()[0]] = result
        call.pending.extendleft(reversed([index for index, _ in worker.tasks]))
        worker.tasks.clear()
        self._replace(worker, failed_start=not worker.ready)

    def _expire(self, call: _Call, now: float) -> None:
        """The call's deadline has passed: the running queries time out (their workers killed), the rest are
        answered as never run."""
        ExecutionResult = self._result_type
        for worker in [w for w in self._workers if w.tasks]:
            message = "group deadline passed while this query ran; worker killed"
            self._retire(call, worker, ExecutionResult(error="timeout", elapsed=now - worker.dispatched,
                                                       message=message))
        for index in call.pending:
            call.results[index] = ExecutionResult(error="timeout", message=DEADLINE_PASSED)

    def _dispatch(self, call: _Call, now: float) -> None:
        """Fill each ready worker's pipeline (up to PIPELINE queries) from the queue, large SQL only to an idle
        worker; a worker whose pipe is broken (it died while idle) is retired."""
        config = self.config
        broken = []
        for worker in self._workers:
            while call.pending and worker.ready and len(worker.tasks) < PIPELINE:
                index = call.pending[0]
                if worker.tasks and len(call.sqls[index]) > PIPELINE_MAX_SQL:
                    break
                self._task_ids += 1
                try:
                    worker.outbox.send((self._task_ids, call.path, call.sqls[index], config.timeout,
                                        call.end_monotonic))
                except Exception:  # it died while idle
                    broken.append(worker)
                    break
                call.pending.popleft()
                if not worker.tasks:
                    worker.dispatched = now
                    worker.kill_at = now + config.timeout + config.kill_grace
                worker.tasks.append((index, self._task_ids))
        for worker in broken:
            message = "worker process died while running this query"
            self._retire(call, worker, self._result_type(error="other", message=message))

    def _fall_back(self, call: _Call, fallback) -> None:
        """No worker could be started: run the queued queries here with `fallback`, each within what is left of
        the call's deadline (none left: a timeout)."""
        config = self.config
        for index in call.pending:
            budget = config.timeout if call.end is None else min(config.timeout, call.end - time.perf_counter())
            call.results[index] = (
                fallback._execute(call.path, call.sqls[index], budget)
                if budget > 0
                else self._result_type(error="timeout", message=DEADLINE_PASSED)
            )

    def _wait_and_read(self, call: _Call, busy: list, starting: list) -> set:
        """Sleep until a reply, a ready message or the earliest deadline, then read what arrived. Returns the
        ids of the workers whose pipes were readable."""
        wake = [w.kill_at for w in busy] + [w.started + STARTUP_TIMEOUT for w in starting]
        if call.end is not None:
            wake.append(call.end)
        watched = {id(w.inbox): w for w in busy + starting}
        readable = wait([w.inbox for w in busy + starting], max(0.0, min(wake) - time.perf_counter()))
        answered = set()
        for conn in readable:
            worker = watched[id(conn)]
            answered.add(id(worker))
            self._read_replies(call, worker)
        return answered

    def _read_replies(self, call: _Call, worker: _Worker) -> None:
        """Take every message already in `worker`'s pipe: its ready message, or its answers in turn. A worker
        that died, sent anything else before ready, or answered another query than its first is retired."""
        ExecutionResult = self._result_type
        while worker in self._workers and worker.inbox.poll():
            try:
                message = worker.inbox.recv()
            except Exception:  # end of file: the worker died
                code = worker.proc.poll()
                text = f"worker process died while running this query (exit code {code})"
                self._retire(call, worker, ExecutionResult(error="other", message=text,
                                                           elapsed=time.perf_counter() - worker.dispatched))
                return
            if not worker.ready:
                if isinstance(message, tuple) and message[:1] == ("ready",):
                    worker.ready = True
                    self._failed_starts = 0
                else:
                    self._retire(call, worker, None)
                return
            task_id, rows, columns, error, text, elapsed = message
            if task_id != worker.tasks[0][1]:  # not the query it was given: never trust it
                answer = ExecutionResult(error="other", message="worker answered out of turn; replaced")
                self._retire(call, worker, answer)
                return
            call.results[worker.tasks.popleft()[0]] = ExecutionResult(rows, columns, error, text, elapsed)
            worker.dispatched = time.perf_counter()  # the next one, if any, has just started
            worker.kill_at = worker.dispatched + self.config.timeout + self.config.kill_grace

    def _kill_overdue(self, call: _Call, busy: list, answered: set) -> None:
        """Kill and replace each busy worker past its hard deadline that did not just answer: its running query
        times out, the ones queued behind it are requeued."""
        now = time.perf_counter()
        for worker in busy:
            if id(worker) not in answered and worker.tasks and worker in self._workers and now >= worker.kill_at:
                message = f"worker did not answer within {worker.kill_at - worker.dispatched:.3g} s; killed"
                self._retire(call, worker, self._result_type(error="timeout", elapsed=now - worker.dispatched,
                                                             message=message))


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv))
