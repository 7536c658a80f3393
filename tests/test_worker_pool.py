"""sqlenv/_worker.py's WorkerPool where the executor tests do not reach: workers that never start (dead at
once, a wrong first message, silent past STARTUP_TIMEOUT) leave the group to the calling process and are
all reaped; a worker that answers another query than the one it was given is replaced; SQL too long to
queue behind a running query waits for an idle worker, so a stuck worker never blocks the caller.

Each test drives the real pool through ``Executor.execute_group``; a misbehaving worker is a real process,
a stand-in started in place of the interpreter (``sys.executable``), with the same arguments and pipes.
"""

from __future__ import annotations

import sys
import textwrap
import threading

import pytest
from conftest import build_medal_db

from sqlenv import _worker
from sqlenv.executor import Executor, ExecutorConfig

GROUP = ["SELECT COUNT(*) FROM Medal", "SELECT 1 +", "SELECT type FROM Medal WHERE medal_id = 7",
         "DROP TABLE Medal", "SELECT * FROM Nowhere"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_medal_db(tmp_path_factory.mktemp("worker-pool") / "medals.sqlite", rows=200)


def stand_in(folder, behaviour: str) -> str:
    """An executable the pool starts instead of the interpreter (argv: _worker.py FD_IN FD_OUT CONFIG).

    dead: exits at once. garbage: sends a string instead of ("ready", pid). silent: sends nothing.
    out_of_turn: ready, then answers each query with the id of another. stuck: ready, reads one query
    and never answers (nor reads again)."""
    script = folder / f"worker-{behaviour}"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import sys, time
        from multiprocessing.connection import Connection

        inbox = Connection(int(sys.argv[2]), writable=False)
        outbox = Connection(int(sys.argv[3]), readable=False)
        behaviour = {behaviour!r}
        if behaviour == "dead":
            sys.exit(3)
        if behaviour == "garbage":
            outbox.send("hello")
        if behaviour in ("garbage", "silent"):
            time.sleep(60)
        outbox.send(("ready", 0))
        if behaviour == "stuck":
            inbox.recv()
            time.sleep(60)
        while (message := inbox.recv()) is not None:
            outbox.send((message[0] + 1, (), (), None, "", 0.0))
        """))
    script.chmod(0o755)
    return str(script)


def verdicts(results) -> list:
    return [(r.rows, r.columns, r.error, r.message) for r in results]


@pytest.fixture
def started(monkeypatch) -> list:
    """The processes of every worker the pool starts, in order."""
    processes = []

    class Spy(_worker._Worker):
        def __init__(self, config_json: str):
            super().__init__(config_json)
            processes.append(self.proc)

    monkeypatch.setattr(_worker, "_Worker", Spy)
    return processes


@pytest.mark.parametrize("behaviour", ["dead", "garbage", "silent"])
def test_workers_that_never_start_leave_the_group_to_this_process(db, tmp_path, monkeypatch, started, behaviour):
    monkeypatch.setattr(_worker, "STARTUP_TIMEOUT", 1.0)
    with Executor(ExecutorConfig(timeout=2.0)) as ex:
        serial = verdicts(ex.execute_group(db, GROUP, workers=0))
        assert serial[0][0] == ((200,),) and serial[3][2] == "forbidden"  # a group with answers and errors
        with monkeypatch.context() as patch:
            patch.setattr(sys, "executable", stand_in(tmp_path, behaviour))
            assert verdicts(ex.execute_group(db, GROUP, workers=2)) == serial
        assert ex._pool.pids == []  # given up after MAX_FAILED_STARTS replacements in a row
        assert len(started) == 2 + _worker.MAX_FAILED_STARTS
        assert all(proc.returncode is not None for proc in started)  # every one killed and reaped
        assert verdicts(ex.execute_group(db, GROUP, workers=2)) == serial  # a real interpreter again
        assert len(ex._pool.pids) == 2 and len(started) == 4 + _worker.MAX_FAILED_STARTS


def test_a_worker_answering_out_of_turn_is_replaced(db, tmp_path, monkeypatch, started):
    with Executor(ExecutorConfig(timeout=2.0)) as ex:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "executable", stand_in(tmp_path, "out_of_turn"))
            results = ex.execute_group(db, ["SELECT 1", "SELECT 2", "SELECT 3"], workers=1)
        assert verdicts(results) == [((), (), "other", "worker answered out of turn; replaced")] * 3
        assert len(started) == 4  # each answer replaced its worker; the last replacement waits idle
        assert all(proc.returncode is not None for proc in started[:3])
    assert started[3].returncode is not None  # closing the executor stops it


def test_sql_too_long_to_queue_waits_for_an_idle_worker(db, tmp_path, monkeypatch, started):
    """Sent behind a running query, a long SQL could fill the pipe of a worker that stopped reading and block
    this process; it is sent to an idle worker only, so each query times out and the call returns."""
    long_sql = "SELECT '" + "x" * 90_000 + "'"  # over the pipe's 64 KiB, under max_sql_length
    assert len(long_sql) > _worker.PIPELINE_MAX_SQL
    outcome = []
    with Executor(ExecutorConfig(timeout=0.3, kill_grace=0.2)) as ex:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "executable", stand_in(tmp_path, "stuck"))
            call = threading.Thread(target=lambda: outcome.append(ex.execute_group(db, ["SELECT 1", long_sql],
                                                                                    workers=1)), daemon=True)
            call.start()
            call.join(60)
            blocked = call.is_alive()
            for proc in started if blocked else ():  # free the call (and the executor's lock) to fail
                proc.kill()
            call.join(60)
        assert not blocked, "execute_group blocked sending a long SQL to a busy worker"
    killed = ("timeout", "worker did not answer within 0.5 s; killed")
    assert [(r.error, r.message) for r in outcome[0]] == [killed] * 2
    assert len(started) == 3  # one per query, and the replacement of the second
