"""Adversarial tests of sqlenv.executor: one attack per test, the way an RL policy would find them.

Every attack asserts the error kind, that nothing was raised, that the call returned within the time budget
plus a margin, that the database file is byte-identical afterwards (sha256), and that the same Executor
still answers a normal query correctly.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import build_medal_db as _build_medal_db
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlenv.executor import ERROR_KINDS, Executor, ExecutorConfig

BUDGET = 0.25  # seconds: the executor's time budget in these tests
MARGIN = 2.0  # seconds of slack on a loaded, shared 2-core machine (CI runs beside other jobs)
N_MEDALS = 3000


def build_medal_db(path: Path) -> Path:
    return _build_medal_db(path, N_MEDALS, index=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attack-db")
    path = build_medal_db(folder / "medals.sqlite")
    return path, sha256(path)


@pytest.fixture
def db(pristine, tmp_path, monkeypatch):
    """The database, alone in a fresh folder that is also the working directory (so relative paths land there)."""
    path, digest = pristine
    monkeypatch.chdir(tmp_path)
    yield path
    assert sha256(path) == digest, "the database file changed"
    assert sorted(os.listdir(path.parent)) == ["medals.sqlite"], (
        "a file appeared beside the database"
    )


@pytest.fixture
def ex():
    executor = Executor(ExecutorConfig(timeout=BUDGET))
    yield executor
    executor.close()


ROOMY = 30.0  # seconds: a budget the size caps always hit first, however loaded the machine


@pytest.fixture
def roomy():
    """An executor whose time budget leaves the size caps room to fire first, so the kind is the cap's on a
    loaded machine too (10,001 rows take a few ms when quiet; CI once saw the 0.25 s budget fire first)."""
    executor = Executor(ExecutorConfig(timeout=ROOMY))
    yield executor
    executor.close()


def attack(ex, db, sql, kind, budget=BUDGET):
    """Run one attack: assert its kind, its timing, and that the executor still answers afterwards."""
    start = time.perf_counter()
    result = ex.execute(db, sql)  # must not raise
    took = time.perf_counter() - start
    kinds = kind if isinstance(kind, tuple) else (kind,)
    assert result.error in kinds, (result.error, result.message)
    assert result.rows == () and not result.ok
    assert took < budget + MARGIN, f"took {took:.2f}s"
    after = ex.execute(db, "SELECT COUNT(*), MAX(year) FROM Medal")
    assert after.ok and after.rows == ((N_MEDALS, 2019),), after
    return result


# --------------------------------------------------------------------------- writes and DDL


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO Medal (type) VALUES ('MedalGold')",
        "INSERT INTO Medal SELECT * FROM Medal",
        "UPDATE Medal SET year = 0",
        "DELETE FROM Medal",
        "DROP TABLE Medal",
        "DROP INDEX medal_year",
        "CREATE TABLE t(x)",
        "CREATE TEMP TABLE t(x)",
        "CREATE TABLE t AS SELECT * FROM Medal",
        "CREATE INDEX i ON Medal(type)",
        "CREATE VIEW v AS SELECT 1",
        "CREATE TRIGGER tr AFTER INSERT ON Medal BEGIN DELETE FROM Medal; END",
        "CREATE VIRTUAL TABLE f USING fts5(x)",
        "ALTER TABLE Medal RENAME TO Gone",
        "ALTER TABLE Medal ADD COLUMN x",
        "REPLACE INTO Medal VALUES (1, 1, 'MedalGold', 2000, 'Paris')",
        "INSERT OR REPLACE INTO Athlete VALUES (1, 'Mallory')",
        "WITH x AS (SELECT 1) DELETE FROM Medal",
        "UPDATE sqlite_master SET sql = 'x'",
        "EXPLAIN DELETE FROM Medal",
    ],
)
def test_write_and_ddl_refused(ex, db, sql):
    attack(ex, db, sql, "forbidden")


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s",
        "RELEASE s",
        "ANALYZE",
        "REINDEX",
    ],
)
def test_transactions_and_maintenance_refused(ex, db, sql):
    attack(ex, db, sql, "forbidden")


# --------------------------------------------------------------------------- files


def test_attach_new_file_creates_nothing(ex, db, tmp_path):
    target = tmp_path / "evil.sqlite"
    attack(ex, db, f"ATTACH DATABASE '{target}' AS evil", "forbidden")
    attack(ex, db, "ATTACH 'relative.sqlite' AS evil", "forbidden")
    attack(ex, db, "ATTACH 'file:uri.sqlite?mode=rwc' AS evil", "forbidden")
    assert list(tmp_path.iterdir()) == []


def test_attach_existing_file_refused(ex, db, tmp_path):
    other = build_medal_db(tmp_path / "other.sqlite")
    digest = sha256(other)
    attack(ex, db, f"ATTACH DATABASE '{other}' AS other", "forbidden")
    assert sha256(other) == digest and sorted(os.listdir(tmp_path)) == ["other.sqlite"]


def test_detach_refused(ex, db):
    attack(ex, db, "DETACH DATABASE main", "forbidden")


def test_vacuum_refused(ex, db):
    attack(ex, db, "VACUUM", "forbidden")


def test_vacuum_into_creates_nothing(ex, db, tmp_path):
    attack(ex, db, f"VACUUM INTO '{tmp_path / 'copy.sqlite'}'", "forbidden")
    attack(ex, db, "VACUUM INTO 'copy.sqlite'", "forbidden")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- pragmas and internals


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA writable_schema = ON",
        "PRAGMA journal_mode = WAL",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA query_only = OFF",
        "PRAGMA trusted_schema = ON",
        "PRAGMA temp_store_directory = '/tmp'",
        "PRAGMA mmap_size = 1000000000",
        "PRAGMA hard_heap_limit = 0",
        "PRAGMA table_info(Medal)",
        "PRAGMA integrity_check",
    ],
)
def test_pragma_refused(ex, db, sql):
    attack(ex, db, sql, "forbidden")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM pragma_table_info('Medal')",
        "SELECT * FROM pragma_database_list",
        "SELECT * FROM json_each('[1, 2]')",
        "SELECT * FROM dbstat",
        "SELECT * FROM sqlite_stmt",
    ],
)
def test_table_valued_functions_refused(ex, db, sql):
    attack(ex, db, sql, "forbidden")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT load_extension('/tmp/evil.so')",
        "SELECT load_extension('libc.so.6', 'system')",
    ],
)
def test_load_extension_refused(ex, db, sql):
    attack(ex, db, sql, "forbidden")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sqlite_version()",
        "SELECT sqlite_source_id()",
        "SELECT sqlite_compileoption_get(0)",
        "SELECT sqlite_compileoption_used('ENABLE_FTS3_TOKENIZER')",
        "SELECT SQLITE_VERSION()",
        "SELECT fts3_tokenizer('simple')",  # returns a C pointer; with two arguments it installs one
        "SELECT fts3_tokenizer('simple', x'4141414141414141')",
        "SELECT rtreenode(2, x'00')",
    ],
)
def test_internal_functions_refused(ex, db, sql):
    attack(ex, db, sql, "forbidden")


def test_reading_the_schema_is_allowed(ex, db):
    result = ex.execute(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert result.rows == (("Athlete",), ("Medal",))


# --------------------------------------------------------------------------- time


def test_runaway_recursive_cte_times_out(ex, db):
    attack(
        ex,
        db,
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r",
        "timeout",
    )


def test_exponential_recursive_cte_times_out(ex, db):
    attack(
        ex,
        db,
        "WITH RECURSIVE r(x) AS (SELECT zeroblob(90000) UNION ALL SELECT x FROM r "
        "UNION ALL SELECT x FROM r) SELECT COUNT(*) FROM r",
        "timeout",
    )


def test_cartesian_product_times_out(ex, db):
    attack(ex, db, "SELECT COUNT(*) FROM Medal a, Medal b, Medal c", "timeout")


def test_huge_sort_times_out(ex, db):
    attack(
        ex, db, "SELECT a.type FROM Medal a, Medal b, Medal c ORDER BY random() LIMIT 1", "timeout"
    )


def test_group_concat_of_cartesian_product_is_stopped(ex, db):
    # whichever comes first: the 100 kB value cap or the time budget
    attack(
        ex,
        db,
        "SELECT group_concat(a.location || b.location) FROM Medal a, Medal b",
        ("too_large", "timeout"),
    )


LIKE_BOMB = (  # one LIKE is one VM instruction of about 70 us; the subject depends on a and b, so it
    # runs 9,000,000 times (about 10 minutes): unbounded at any speed. (With the subject on `a` alone SQLite
    # evaluated it 3,000 times and finished in 0.2 s, under the budget on an idle machine.)
    "SELECT COUNT(*) FROM Medal a, Medal b WHERE a.location || b.location || '"
    + "a" * 5000
    + "' LIKE '"
    + "%a" * 4000
    + "%b'"
)


def test_like_pattern_bomb_is_stopped(ex, db):
    attack(ex, db, LIKE_BOMB, "timeout")


def test_wall_clock_backstop_stops_what_the_instruction_count_misses(db):
    # Work inside one instruction (here a LIKE) is not counted: a billion instructions of LIKE_BOMB would
    # take hours. The wall-clock budget, always on, stops it.
    with Executor(ExecutorConfig(timeout=BUDGET, max_instructions=10**9)) as ex:
        result = attack(ex, db, LIKE_BOMB, "timeout")
    assert f"{BUDGET:.3g} s time budget" in result.message


# --------------------------------------------------------------------------- size


def test_randomblob_gigabyte_too_large(ex, db):
    attack(ex, db, "SELECT randomblob(1000000000)", "too_large")


def test_zeroblob_gigabyte_too_large(ex, db):
    attack(ex, db, "SELECT zeroblob(1000000000)", "too_large")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT printf('%.*c', 2000000000, 'x')",
        "SELECT format('%.2000000000c', 'x')",
        "SELECT printf('%.*c', '2e9', 'x') FROM Medal",
    ],
)
def test_printf_precision_bomb_returns_null_at_once(ex, db, sql):
    # SQLite 3.40 loops over the whole precision inside one instruction (30 s); the wrapper refuses it
    start = time.perf_counter()
    result = ex.execute(db, sql)
    assert result.ok and set(result.rows) == {(None,)}
    assert time.perf_counter() - start < BUDGET + MARGIN


def test_printf_still_formats(ex, db):
    result = ex.execute(
        db,
        "SELECT printf('%d-%s|%5.1f|%-*d|%.*c', year, type, 2.25, 3, 7, 3, 'x') FROM Medal "
        "WHERE medal_id = 1",
    )
    assert result.rows == (("1951-MedalSilver|  2.3|7  |xxx",),)


def test_string_doubling_too_large(ex, db):
    attack(
        ex,
        db,
        "WITH RECURSIVE r(s) AS (SELECT 'ab' UNION ALL SELECT s || s FROM r) SELECT max(length(s)) FROM r",
        "too_large",
    )


def test_wide_rows_of_blobs_hit_the_byte_cap(roomy, db):
    columns = ", ".join(["zeroblob(90000)"] * 90)
    attack(roomy, db, f"SELECT {columns} FROM Medal", "too_large", budget=ROOMY)


def test_unbounded_rows_hit_the_row_cap(roomy, db):
    attack(
        roomy,
        db,
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x FROM r",
        "too_large",
        budget=ROOMY,
    )


def test_cartesian_rows_hit_the_row_cap(roomy, db):
    attack(roomy, db, "SELECT * FROM Medal a, Medal b", "too_large", budget=ROOMY)


def test_deep_parenthesis_nesting(ex, db):
    attack(ex, db, "SELECT " + "(" * 20000 + "1" + ")" * 20000, "too_large")


def test_deep_expression_chain(ex, db):
    attack(ex, db, "SELECT " + " + ".join(["1"] * 5000), "too_large")


def test_deep_subquery_nesting(ex, db):
    attack(ex, db, "SELECT " + "(SELECT " * 500 + "1" + ")" * 500, "too_large")


def test_many_compound_terms(ex, db):
    attack(ex, db, " UNION ALL ".join(["SELECT 1"] * 1000), "too_large")


def test_megabyte_sql_string(ex, db):
    attack(ex, db, "SELECT '" + "x" * 2_000_000 + "'", "too_large", budget=0.1)


def test_megabyte_whitespace(ex, db):
    attack(ex, db, "SELECT 1" + " " * 1_000_000, "too_large", budget=0.1)


# --------------------------------------------------------------------------- malformed input


def test_nul_byte(ex, db):
    attack(ex, db, "SELECT 1\x00; DROP TABLE Medal", "syntax")


def test_lone_surrogate(ex, db):
    attack(ex, db, "SELECT '\udcff'", "syntax")


def test_invalid_utf8_bytes(ex, db):
    attack(ex, db, b"SELECT '\xff\xfe'", "other")


@pytest.mark.parametrize("sql", [None, 42, 3.5, ["SELECT 1"], object()])
def test_non_string_sql(ex, db, sql):
    attack(ex, db, sql, "other")


def test_invalid_utf8_in_a_result_value_is_dropped(ex, db):
    # as the Spider evaluation decodes: bytes.decode("utf-8", "ignore")
    result = ex.execute(
        db, "SELECT CAST(x'fffe' AS TEXT), CAST(x'41ff42' AS TEXT) || type FROM Medal LIMIT 1"
    )
    assert result.ok and result.rows == (("", "ABMedalGold"),)
    assert ex.execute(db, "SELECT type FROM Medal LIMIT 1").rows == (("MedalGold",),)


@pytest.mark.parametrize("sql", ["SELECT ?", "SELECT :name", "SELECT * FROM Medal WHERE year = ?1"])
def test_unbound_parameters(ex, db, sql):
    attack(ex, db, sql, "syntax")


def test_str_subclass_cannot_lie(ex, db):
    class Sneaky(str):
        def __len__(self):
            return 1

        def __str__(self):
            return "DROP TABLE Medal"

    result = ex.execute(db, Sneaky("SELECT COUNT(*) FROM Medal"))
    assert result.rows == ((N_MEDALS,),)


# --------------------------------------------------------------------------- statements


def test_second_statement_refused(ex, db):
    attack(ex, db, "SELECT 1; DROP TABLE Medal", "multiple_statements")


def test_second_statement_after_comment(ex, db):
    attack(ex, db, "SELECT 1 /* harmless */; DROP TABLE Medal", "multiple_statements")


def test_second_statement_after_line_comment_and_newline(ex, db):
    attack(ex, db, "SELECT 1; -- the rest is a comment\nDELETE FROM Medal", "multiple_statements")


def test_second_statement_after_string_with_semicolon(ex, db):
    attack(ex, db, "SELECT 'a;b'; DELETE FROM Medal", "multiple_statements")


def test_semicolon_inside_string_succeeds(ex, db):
    result = ex.execute(db, "SELECT 'a;b', ';' FROM Medal WHERE medal_id = 0")
    assert result.ok and result.rows == (("a;b", ";"),)


def test_semicolon_inside_comment_succeeds(ex, db):
    result = ex.execute(db, "SELECT 1 /* ; DROP TABLE Medal; */ -- ; DELETE FROM Medal")
    assert result.ok and result.rows == ((1,),)


def test_trailing_semicolons_and_comments_succeed(ex, db):
    for sql in [
        "SELECT 1;",
        "SELECT 1 ;  \n",
        "SELECT 1;;",
        "SELECT 1; ;",
        "SELECT 1; -- done",
        "SELECT 1; /* x */",
    ]:
        result = ex.execute(db, sql)
        assert result.ok and result.rows == ((1,),), sql


def test_quoted_identifier_with_semicolon(ex, db):
    attack(ex, db, 'SELECT * FROM "Medal; DROP TABLE Medal"', "no_such_table")


# --------------------------------------------------------------------------- worker processes


@pytest.fixture
def pool_ex():
    executor = Executor(ExecutorConfig(timeout=BUDGET, kill_grace=0.25))
    yield executor
    executor.close()


def test_worker_hung_beyond_progress_handler_is_killed(db):
    # progress_steps so large the handler never fires: only the hard kill can stop this query
    with Executor(
        ExecutorConfig(timeout=BUDGET, kill_grace=0.25, progress_steps=2_000_000_000)
    ) as ex:
        assert ex.execute_group(db, ["SELECT 1"], workers=1)[0].ok  # start the worker
        pid = ex._pool.pids[0]
        start = time.perf_counter()
        results = ex.execute_group(
            db, ["SELECT COUNT(*) FROM Medal a, Medal b, Medal c", "SELECT 2"], workers=1
        )
        took = time.perf_counter() - start
        assert results[0].error == "timeout" and "killed" in results[0].message
        assert results[1].rows == ((2,),)  # the replacement worker answered
        assert ex._pool.pids[0] != pid
        assert took < BUDGET + 0.25 + MARGIN + 2.0  # + starting the replacement
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_group_deadline_bounds_the_call(pool_ex, db):
    pool_ex.execute_group(db, ["SELECT 1"], workers=2)
    start = time.perf_counter()
    results = pool_ex.execute_group(
        db, ["SELECT COUNT(*) FROM Medal a, Medal b, Medal c"] * 6, workers=2, deadline=0.1
    )
    assert time.perf_counter() - start < 0.1 + MARGIN
    assert [r.error for r in results] == ["timeout"] * 6


def test_worker_killed_mid_query_reports_other(db):
    with Executor(ExecutorConfig(timeout=5.0)) as ex:  # a budget the kill below lands well inside
        ex.execute_group(db, ["SELECT 1"], workers=1)
        pid = ex._pool.pids[0]
        killer = threading.Timer(0.2, os.kill, (pid, signal.SIGKILL))
        killer.start()
        start = time.perf_counter()
        results = ex.execute_group(
            db, ["SELECT COUNT(*) FROM Medal a, Medal b, Medal c", "SELECT 3"], workers=1
        )
        killer.join()
        assert results[0].error == "other" and "died" in results[0].message
        assert results[1].rows == ((3,),)  # requeued onto the replacement worker
        assert time.perf_counter() - start < 0.2 + MARGIN + 2.0


def test_idle_worker_killed_between_groups_is_replaced(pool_ex, db):
    pool_ex.execute_group(db, ["SELECT 1"], workers=2)
    pids = pool_ex._pool.pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_until_dead(pids)  # not a fixed sleep: a loaded machine may take longer to run the exit
    results = pool_ex.execute_group(db, ["SELECT 4", "SELECT 5"], workers=2)
    assert [r.rows for r in results] == [((4,),), ((5,),)]


def wait_until_dead(pids, limit: float = 30.0) -> None:
    """Until every pid has exited (a zombie or gone), so that the pool sees them dead."""
    end = time.monotonic() + limit
    for pid in pids:
        while time.monotonic() < end:
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    state = handle.read().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.01)


def test_pool_attacks_are_refused_in_workers(pool_ex, db):
    sqls = [
        "DROP TABLE Medal",
        "ATTACH 'w.sqlite' AS w",
        "SELECT load_extension('x')",
        "SELECT 1; DELETE FROM Medal",
        "SELECT randomblob(1000000000)",
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x FROM r) SELECT COUNT(*) FROM r",
        "SELECT '\udcff'",
        None,
    ]
    results = pool_ex.execute_group(db, sqls, workers=2)
    assert [r.error for r in results] == [
        "forbidden",
        "forbidden",
        "forbidden",
        "multiple_statements",
        "too_large",
        "timeout",
        "syntax",
        "other",
    ]


def test_close_leaves_no_processes_fds_or_threads(db):
    fds_before = set(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()
    ex = Executor(ExecutorConfig(timeout=BUDGET))
    assert all(r.ok for r in ex.execute_group(db, ["SELECT 1"] * 4, workers=2))
    pids = ex._pool.pids
    ex.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # reaped, not a zombie
            os.kill(pid, 0)
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    assert threading.active_count() == threads_before


def test_interpreter_exit_without_close_stops_the_workers(db, tmp_path):
    script = (
        "import sys\nfrom sqlenv.executor import Executor\nex = Executor(timeout=0.5)\n"
        f"assert all(r.ok for r in ex.execute_group({str(db)!r}, ['SELECT 1'] * 2, workers=2))\n"
        "print(*ex._pool.pids)\n"
    )  # and exit without close(): the atexit hook must stop them
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    for pid in map(int, done.stdout.split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_context_manager_stops_the_pool(db):
    with Executor(ExecutorConfig(timeout=BUDGET)) as ex:
        ex.execute_group(db, ["SELECT 1"], workers=1)
        pids = ex._pool.pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --------------------------------------------------------------------------- fuzzing

_TOKENS = [
    "SELECT",
    "FROM",
    "Medal",
    "Athlete",
    "WHERE",
    "year",
    "type",
    "*",
    ",",
    ";",
    "(",
    ")",
    "'",
    "'x'",
    '"',
    "--",
    "/*",
    "*/",
    "UNION",
    "ALL",
    "WITH",
    "RECURSIVE",
    "r(x)",
    "AS",
    "DROP",
    "TABLE",
    "ATTACH",
    "PRAGMA",
    "printf",
    "'%.*c'",
    "2000000000",
    "zeroblob",
    "randomblob",
    "1e9",
    "load_extension",
    "COUNT",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "1",
    "0",
    "-1",
    "NULL",
    "JOIN",
    "ON",
    "=",
    "<",
    "||",
    "\x00",
    "\udcff",
    "x'ff'",
    "CAST",
    "TEXT",
    "VACUUM",
    "INTO",
    "sqlite_version()",
    "?",
    ":a",
]


@pytest.fixture(scope="module")
def fuzz_ex():
    executor = Executor(ExecutorConfig(timeout=0.05))
    yield executor
    executor.close()


@settings(max_examples=300, deadline=None)
@given(
    sql=st.one_of(
        st.text(max_size=200), st.lists(st.sampled_from(_TOKENS), max_size=25).map(" ".join)
    )
)
def test_fuzz_never_raises_and_never_writes(pristine, fuzz_ex, sql):
    path, digest = pristine
    result = fuzz_ex.execute(path, sql)
    assert result.error is None or result.error in ERROR_KINDS
    assert isinstance(result.rows, tuple) and isinstance(result.message, str)
    assert result.elapsed < 0.05 + MARGIN
    assert sha256(path) == digest


def test_interrupted_group_leaves_no_stale_answers(db, monkeypatch):
    from sqlenv import _worker

    with Executor(ExecutorConfig(timeout=2.0)) as ex:
        ex.execute_group(db, ["SELECT 1"], workers=1)
        real_wait = _worker.wait

        def interrupted_wait(*args, **kwargs):  # Ctrl-C while a query is in flight
            raise KeyboardInterrupt

        monkeypatch.setattr(_worker, "wait", interrupted_wait)
        with pytest.raises(KeyboardInterrupt):
            ex.execute_group(db, ["SELECT 'stale'", "SELECT 'stale too'"], workers=1)
        monkeypatch.setattr(_worker, "wait", real_wait)
        result = ex.execute_group(db, ["SELECT 'fresh'"], workers=1)[0]
        assert (
            result.rows == (("fresh",),) and ex._pool is not None
        )  # answered by a worker, the right one


def test_pool_failure_falls_back_in_process(db, monkeypatch):
    from sqlenv import _worker

    with Executor(ExecutorConfig(timeout=BUDGET)) as ex:
        monkeypatch.setattr(_worker.WorkerPool, "_run", lambda *a, **k: 1 / 0)
        results = ex.execute_group(db, ["SELECT 7", "DROP TABLE Medal"], workers=2)
        assert results[0].rows == ((7,),) and results[1].error == "forbidden"
        assert "ran in-process" in results[1].message and ex._pool is None


# --------------------------------------------------------------------------- defence in depth


def test_without_the_authorizer_writes_still_fail(ex, db, tmp_path):
    assert ex.execute(db, "SELECT 1").ok
    conn = ex._cache[str(db)].conn
    conn.set_authorizer(
        None
    )  # peel off two layers: only the mode=ro&immutable=1 connection remains
    conn.execute("PRAGMA query_only = OFF")
    for sql in [
        "DELETE FROM Medal",
        "UPDATE Medal SET year = 0",
        "DROP TABLE Medal",
        "CREATE TABLE t(x)",
    ]:
        assert ex.execute(db, sql).error == "forbidden", (
            sql
        )  # "attempt to write a readonly database"
    result = ex.execute(
        db, f"ATTACH '{tmp_path / 'evil.sqlite'}' AS evil"
    )  # SQLITE_LIMIT_ATTACHED = 0
    assert result.error is not None and list(tmp_path.iterdir()) == []


def test_without_the_authorizer_extension_loading_is_off(ex, db):
    assert ex.execute(db, "SELECT 1").ok
    conn = ex._cache[str(db)].conn
    conn.set_authorizer(None)
    result = ex.execute(db, "SELECT load_extension('/nonexistent/evil.so')")
    assert (
        result.error == "forbidden" and "not authorized" in result.message
    )  # SQLite's own switch is off
