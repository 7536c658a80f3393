"""Functional tests of sqlenv.executor: results, error kinds, caps, the connection cache, execute_group.

Adversarial inputs live in test_executor_attacks.py. Both build their own small database.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import build_medal_db

from sqlenv.executor import (
    ERROR_KINDS,
    ExecutionResult,
    Executor,
    ExecutorConfig,
    HostError,
    execute,
)

N_MEDALS = 3000
MARGIN = 2.0  # seconds of slack on a loaded, shared 2-core machine (as in the other executor tests)




@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return build_medal_db(tmp_path_factory.mktemp("executor") / "medals.sqlite")


@pytest.fixture
def ex():
    """An executor whose time budget no quick query reaches, however loaded the machine (the tests of the
    budget itself build their own)."""
    executor = Executor(ExecutorConfig(timeout=30))
    yield executor
    executor.close()


# --------------------------------------------------------------------------- results


def test_select_returns_rows_and_columns(ex, db):
    result = ex.execute(
        db, "SELECT medal_id, type AS kind FROM Medal WHERE medal_id < 3 ORDER BY medal_id"
    )
    assert result.ok and result.error is None and result.message == ""
    assert result.columns == ("medal_id", "kind")
    assert result.rows == ((0, "MedalGold"), (1, "MedalSilver"), (2, "MedalBronze"))
    assert isinstance(result.rows, tuple) and all(isinstance(r, tuple) for r in result.rows)
    assert result.elapsed > 0


def test_aggregate_and_join(ex, db):
    result = ex.execute(
        db, "SELECT a.name, COUNT(*) FROM Athlete a JOIN Medal m ON m.type = 'MedalGold'"
    )
    assert result.ok and result.rows == (("Jane Doe", N_MEDALS // 3),)


def test_empty_result_keeps_columns(ex, db):
    result = ex.execute(db, "SELECT year FROM Medal WHERE year < 0")
    assert result.ok and result.rows == () and result.columns == ("year",)


def test_large_but_allowed_result(ex, db):
    result = ex.execute(db, "SELECT * FROM Medal")
    assert result.ok and len(result.rows) == N_MEDALS and len(result.columns) == 5


def test_result_is_frozen_and_comparable(ex, db):
    result = ex.execute(db, "SELECT 1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rows = ()
    assert result == ExecutionResult(rows=((1,),), columns=("1",), elapsed=result.elapsed)
    assert set(ERROR_KINDS) == {
        "syntax",
        "no_such_table",
        "no_such_column",
        "timeout",
        "too_large",
        "forbidden",
        "multiple_statements",
        "other",
    }


def test_path_and_str_share_one_connection(ex, db):
    assert ex.execute(db, "SELECT 1").ok and ex.execute(str(db), "SELECT 2").ok
    assert len(ex._cache) == 1


def test_module_level_execute(db):
    result = execute(db, "SELECT COUNT(*) FROM Medal", timeout=30)
    assert result.rows == ((N_MEDALS,),)
    assert (
        execute(db, "SELECT 1", timeout=-1).error == "other"
    )  # bad configuration: a result, not a raise


def test_config_validation_says_what_to_set():
    with pytest.raises(ValueError, match="timeout"):
        ExecutorConfig(timeout=0)
    with pytest.raises(ValueError, match="max_rows"):
        Executor(max_rows=-5)


@pytest.mark.parametrize("value", [0, -1, 2.5, 1e9, True, "1000", float("inf")])
def test_max_instructions_validation_names_the_field(value):
    with pytest.raises(ValueError, match="max_instructions"):
        ExecutorConfig(max_instructions=value)


def test_max_instructions_accepts_none_and_positive_ints():
    assert ExecutorConfig().max_instructions is None
    assert ExecutorConfig(max_instructions=1).max_instructions == 1
    assert Executor(max_instructions=50_000_000).config.max_instructions == 50_000_000


# --------------------------------------------------------------------------- error kinds


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT (", "SELECT 'abc", "SELECT FROM WHERE", ""])
def test_syntax_errors(ex, db, sql):
    assert ex.execute(db, sql).error == "syntax"


def test_no_such_table(ex, db):
    result = ex.execute(db, "SELECT * FROM Medals")
    assert result.error == "no_such_table" and "Medals" in result.message


def test_no_such_column(ex, db):
    result = ex.execute(db, "SELECT medal FROM Medal")
    assert result.error == "no_such_column" and "medal" in result.message


def test_timeout_kind(db):
    with Executor(ExecutorConfig(timeout=0.5)) as ex:
        result = ex.execute(db, "SELECT COUNT(*) FROM Medal a, Medal b, Medal c")
    assert result.error == "timeout" and "0.5" in result.message


def test_interrupt_stops_the_running_query_from_another_thread(db):
    """A query with a 600 s budget, stopped by interrupt() from another thread (a server whose
    client left): it ends as "timeout", the Executor stays usable, and an interrupt with nothing
    running does not touch the next query. The join below is a hang guard."""
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with Executor(ExecutorConfig(timeout=600.0)) as ex:
        assert ex.execute(db, "SELECT 1").ok  # the connection is cached
        results = []
        runner = threading.Thread(target=lambda: results.append(ex.execute(db, endless)))
        runner.start()
        while not results and runner.is_alive():
            ex.interrupt()
            runner.join(0.05)
        runner.join(120)
        assert not runner.is_alive() and results[0].error == "timeout"
        ex.interrupt()  # nothing runs: a no-op
        assert ex.execute(db, "SELECT COUNT(*) FROM Medal").rows == ((N_MEDALS,),)


def test_row_cap(db):
    with Executor(max_rows=10) as ex:
        assert len(ex.execute(db, "SELECT * FROM Medal LIMIT 10").rows) == 10
        result = ex.execute(db, "SELECT * FROM Medal LIMIT 11")
        assert result.error == "too_large" and result.rows == () and "10 rows" in result.message


def test_byte_cap(db):
    with Executor(max_bytes=20_000) as ex:
        assert ex.execute(db, "SELECT location FROM Medal LIMIT 100").ok
        result = ex.execute(db, "SELECT location FROM Medal")
        assert result.error == "too_large" and "bytes" in result.message


def test_forbidden_kind(ex, db):
    assert ex.execute(db, "DELETE FROM Medal").error == "forbidden"


def test_multiple_statements_kind(ex, db):
    assert ex.execute(db, "SELECT 1; SELECT 2").error == "multiple_statements"


def test_other_kind_for_unknown_function(ex, db):
    assert ex.execute(db, "SELECT no_such_fn(1)").error == "other"


def test_missing_database_is_a_host_error_and_not_created(ex, tmp_path):
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(HostError, match="missing.sqlite.*no such file") as caught:
        ex.execute(missing, "SELECT 1")
    assert caught.value.path == str(missing)
    assert not missing.exists() and list(tmp_path.iterdir()) == []


def test_not_a_database_is_a_host_error(ex, tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HostError, match="junk.sqlite.*not a usable SQLite database"):
        ex.execute(junk, "SELECT * FROM Medal")


def test_bad_db_path_type_is_other(ex):
    assert ex.execute(None, "SELECT 1").error == "other"
    assert ex.execute(12345.5, "SELECT 1").error == "other"


# --------------------------------------------------------------------------- connection cache


def test_connection_is_reused(ex, db):
    ex.execute(db, "SELECT 1")
    conn = ex._cache[str(db)].conn
    ex.execute(db, "SELECT 2")
    assert ex._cache[str(db)].conn is conn


def test_cache_is_bounded_lru(tmp_path):
    paths = [build_medal_db(tmp_path / f"{i}.sqlite", rows=3) for i in range(3)]
    with Executor(max_connections=2) as ex:
        for path in paths:
            assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((3,),)
        assert list(ex._cache) == [str(paths[1]), str(paths[2])]
        assert ex.execute(paths[0], "SELECT COUNT(*) FROM Medal").ok


def test_replaced_file_is_reopened(ex, tmp_path):
    path = build_medal_db(tmp_path / "db.sqlite", rows=5)
    assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((5,),)
    build_medal_db(tmp_path / "new.sqlite", rows=7)
    os.replace(tmp_path / "new.sqlite", path)  # atomic rebuild, as infobox.build_database does
    assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((7,),)


def test_close_then_reuse(db):
    ex = Executor()
    assert ex.execute(db, "SELECT 1").ok
    ex.close()
    assert ex._cache == {} and ex.execute(db, "SELECT 1").ok
    ex.close()


def test_threads_share_an_executor(ex, db):
    results = []

    def work():
        for _ in range(50):
            results.append(ex.execute(db, "SELECT COUNT(*) FROM Medal WHERE year = 2000").rows)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200 and len(set(results)) == 1


# --------------------------------------------------------------------------- execute_group

GROUP = [
    "SELECT COUNT(*) FROM Medal",
    "SELECT nope FROM Medal",
    "DROP TABLE Medal",
    "SELECT type FROM Medal WHERE medal_id = 4",
    "SELECT 1; SELECT 2",
    42,
]


def test_group_serial_matches_execute(ex, db):
    group = ex.execute_group(db, GROUP)
    single = [ex.execute(db, sql) for sql in GROUP]
    assert [(r.rows, r.columns, r.error) for r in group] == [
        (r.rows, r.columns, r.error) for r in single
    ]


def test_group_serial_deadline(ex, db):
    start = time.perf_counter()
    results = ex.execute_group(
        db, ["SELECT COUNT(*) FROM Medal a, Medal b, Medal c"] * 4 + ["SELECT 1"], deadline=0.3
    )
    assert time.perf_counter() - start < 0.3 + MARGIN
    assert [r.error for r in results] == ["timeout"] * 5


def test_group_workers_match_serial(db):
    with Executor(ExecutorConfig(timeout=30)) as ex:
        pooled = ex.execute_group(db, GROUP, workers=2)
        serial = ex.execute_group(db, GROUP)
        assert [(r.rows, r.columns, r.error, r.message) for r in pooled] == [
            (r.rows, r.columns, r.error, r.message) for r in serial
        ]
        assert len(ex._pool.pids) == 2
        again = ex.execute_group(db, GROUP, workers=2)  # persistent: the same processes answer
        assert [r.rows for r in again] == [r.rows for r in serial]


def test_group_bad_arguments_are_results(ex, db):
    assert ex.execute_group(db, []) == []
    assert ex.execute_group(db, ["SELECT 1"], workers="many")[0].error == "other"


def test_limits_leave_room_for_real_schemas_and_sql(ex, tmp_path):
    wide = tmp_path / "wide.sqlite"
    conn = sqlite3.connect(wide)
    conn.execute("CREATE TABLE t(" + ", ".join(f"c{i} INTEGER" for i in range(300)) + ")")
    conn.execute("INSERT INTO t VALUES (" + ", ".join(str(i) for i in range(300)) + ")")
    conn.commit()
    conn.close()
    result = ex.execute(wide, "SELECT * FROM t")
    assert result.ok and len(result.columns) == 300 and result.rows[0][299] == 299
    pairs = ", ".join(f"'k{i}', {i}" for i in range(30))
    assert ex.execute(wide, f"SELECT json_object({pairs})").ok
    assert ex.execute(
        wide, "SELECT 1 FROM t WHERE " + " OR ".join(f"c0 = {i}" for i in range(300))
    ).ok
    assert ex.execute(wide, " UNION ALL ".join(["SELECT c1 FROM t"] * 100)).ok


def test_revalidate_false_trusts_the_cached_connection(tmp_path):
    path = build_medal_db(tmp_path / "db.sqlite", rows=5)
    with Executor(revalidate=False) as ex:
        assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((5,),)
        build_medal_db(tmp_path / "new.sqlite", rows=7)
        os.replace(tmp_path / "new.sqlite", path)
        assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((5,),)  # by design: no stat
        ex.close()
        assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((7,),)


def test_path_with_uri_characters_stays_read_only(ex, tmp_path):
    folder = tmp_path / "odd ?mode=rwc#frag %41"
    folder.mkdir()
    path = build_medal_db(folder / "db?mode=rw.sqlite", rows=3)
    assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((3,),)
    assert ex.execute(path, "DELETE FROM Medal").error == "forbidden"
    assert sorted(p.name for p in folder.iterdir()) == ["db?mode=rw.sqlite"]


def test_directory_path_is_a_host_error(ex, tmp_path):
    with pytest.raises(HostError, match="not a regular file"):
        ex.execute(tmp_path, "SELECT 1")


# --------------------------------------------------------------------------- instruction budget

INSTRUCTIONS = 1_000_000  # the budget in these tests: 1,000 progress-handler calls of 1,000 instructions


def count_instructions(db, sql) -> int:
    """The exact number of VM instructions `sql` runs on db (a progress handler at every instruction)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # the schema, read uncounted
        calls = [0]

        def tick():
            calls[0] += 1
            return 0

        conn.set_progress_handler(tick, 1)
        conn.execute(sql).fetchall()
        return calls[0]
    finally:
        conn.close()


def rows_query(n: int) -> str:
    return f"SELECT COUNT(*) FROM (SELECT a.year + b.year FROM Medal a, Medal b LIMIT {n})"


@pytest.fixture(scope="module")
def near_budget(db):
    """(under, n_under, over): queries that run about 5% fewer and 5% more instructions than INSTRUCTIONS."""
    base = count_instructions(db, rows_query(10_000))
    per_row = (count_instructions(db, rows_query(20_000)) - base) / 10_000
    n_under = int(10_000 + (0.95 * INSTRUCTIONS - base) / per_row)
    n_over = int(10_000 + (1.05 * INSTRUCTIONS - base) / per_row)
    under, over = rows_query(n_under), rows_query(n_over)
    # Well clear of the budget's resolution (progress_steps = 1,000 instructions):
    assert count_instructions(db, under) < 0.96 * INSTRUCTIONS
    assert count_instructions(db, over) > 1.04 * INSTRUCTIONS
    return under, n_under, over


OVER_MESSAGE = f"query exceeded its {INSTRUCTIONS}-instruction budget"


def verdict(result):
    return result.error, result.rows, result.message


def test_instruction_budget_decides_whatever_the_speed(db, near_budget):
    """timeout=60: only the instruction count can stop these, so every run, fresh or cached, agrees."""
    under, n_under, over = near_budget
    seen = set()
    with Executor(ExecutorConfig(timeout=60, max_instructions=INSTRUCTIONS)) as ex:
        for _ in range(5):  # the same connection, its statements cached
            seen.add((verdict(ex.execute(db, under)), verdict(ex.execute(db, over))))
    for _ in range(5):  # fresh connections
        with Executor(ExecutorConfig(timeout=60, max_instructions=INSTRUCTIONS)) as ex:
            seen.add((verdict(ex.execute(db, under)), verdict(ex.execute(db, over))))
    assert seen == {((None, ((n_under,),), ""), ("timeout", (), OVER_MESSAGE))}


def test_instruction_budget_message_differs_from_the_wall_clock_one(db, near_budget):
    _, _, over = near_budget
    with Executor(ExecutorConfig(timeout=60, max_instructions=INSTRUCTIONS)) as ex:
        message = ex.execute(db, over).message
    assert str(INSTRUCTIONS) in message and "instruction budget" in message
    assert "time budget" not in message


def test_instruction_budget_same_verdict_in_workers(db, near_budget):
    under, _, over = near_budget
    sqls = [under, over] * 3
    with Executor(ExecutorConfig(timeout=60, max_instructions=INSTRUCTIONS)) as ex:
        in_process = [verdict(ex.execute(db, sql)) for sql in sqls]
        pooled = [verdict(r) for r in ex.execute_group(db, sqls, workers=2)]
        again = [verdict(r) for r in ex.execute_group(db, sqls, workers=2)]  # cached in the workers
    assert pooled == in_process == again
    assert [e for e, _, _ in pooled] == [None, "timeout"] * 3


def test_instruction_budget_in_a_serial_group_with_a_deadline(db, near_budget):
    under, n_under, over = near_budget
    with Executor(ExecutorConfig(timeout=60, max_instructions=INSTRUCTIONS)) as ex:
        results = ex.execute_group(db, [over, under, over], deadline=60)
    assert [verdict(r) for r in results] == [
        ("timeout", (), OVER_MESSAGE),
        (None, ((n_under,),), ""),
        ("timeout", (), OVER_MESSAGE),
    ]


def test_module_level_execute_takes_max_instructions(db, near_budget):
    _, _, over = near_budget
    result = execute(db, over, timeout=60, max_instructions=INSTRUCTIONS)
    assert verdict(result) == ("timeout", (), OVER_MESSAGE)


def test_wall_clock_timeout_stays_the_backstop(db):
    # an instruction budget no query here reaches: the 0.3 s wall budget stops this (unbounded) product
    with Executor(ExecutorConfig(timeout=0.3, max_instructions=10**15)) as ex:
        result = ex.execute(db, "SELECT COUNT(*) FROM Medal a, Medal b, Medal c")
        assert result.error == "timeout" and "0.3 s time budget" in result.message
        assert "instruction" not in result.message
        assert ex.execute(db, "SELECT COUNT(*) FROM Medal").rows == ((N_MEDALS,),)


def test_no_instruction_budget_by_default(db, near_budget):
    _, _, over = near_budget
    with Executor(ExecutorConfig(timeout=60)) as ex:
        assert ex.execute(db, over).ok


# --------------------------------------------------------------------------- text that is not UTF-8


@pytest.fixture(scope="module")
def latin1_db(tmp_path_factory) -> Path:
    """TEXT values holding bytes that are not UTF-8 (as some Spider databases do)."""
    path = tmp_path_factory.mktemp("latin1") / "latin1.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE City(id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute(
        "INSERT INTO City VALUES (1, CAST(x'4dfc6e6368656e' AS TEXT)), "  # 'M\xfcnchen' (Latin-1)
        "(2, 'Z\u00fcrich'), (3, CAST(x'ff' AS TEXT)), (4, CAST(x'4fc3a96c6166ff' AS TEXT))"
    )
    conn.commit()
    conn.close()
    return path


EXPECTED_CITIES = ((1, "Mnchen"), (2, "Z\u00fcrich"), (3, ""), (4, "O\u00e9laf"))


def test_invalid_utf8_text_comes_back_with_the_bad_bytes_dropped(latin1_db):
    with Executor(ExecutorConfig(timeout=5)) as ex:
        sql = "SELECT id, name FROM City ORDER BY id"
        for _ in range(2):  # the default decoding is restored after each lenient rerun
            result = ex.execute(latin1_db, sql)
            assert result.ok and result.rows == EXPECTED_CITIES and result.columns == ("id", "name")
        assert ex._cache[str(latin1_db)].conn.text_factory is str
        assert ex.execute(latin1_db, "SELECT name FROM City WHERE id = 2").rows == (("Z\u00fcrich",),)
        pooled = ex.execute_group(latin1_db, [sql, "SELECT CAST(x'61ff62' AS TEXT)"], workers=2)
        assert [r.rows for r in pooled] == [EXPECTED_CITIES, (("ab",),)]
        assert all(r.ok for r in pooled)


def test_invalid_utf8_text_still_meets_the_caps(latin1_db):
    with Executor(ExecutorConfig(timeout=5, max_rows=2)) as ex:
        result = ex.execute(latin1_db, "SELECT name FROM City")
        assert result.error == "too_large" and "2 rows" in result.message
        assert ex.execute(latin1_db, "SELECT name FROM City WHERE id = 1").rows == (("Mnchen",),)
