"""Functional tests of sqlenv.executor: results, error kinds, caps, the connection cache, execute_group.

Adversarial inputs live in test_executor_attacks.py. Both build their own small database.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conftest import build_medal_db
from sqlenv.executor import ERROR_KINDS, ExecutionResult, Executor, ExecutorConfig, execute

N_MEDALS = 3000




@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return build_medal_db(tmp_path_factory.mktemp("executor") / "medals.sqlite")


@pytest.fixture
def ex():
    executor = Executor(ExecutorConfig(timeout=0.5))
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
    result = execute(db, "SELECT COUNT(*) FROM Medal", timeout=0.5)
    assert result.rows == ((N_MEDALS,),)
    assert (
        execute(db, "SELECT 1", timeout=-1).error == "other"
    )  # bad configuration: a result, not a raise


def test_config_validation_says_what_to_set():
    with pytest.raises(ValueError, match="timeout"):
        ExecutorConfig(timeout=0)
    with pytest.raises(ValueError, match="max_rows"):
        Executor(max_rows=-5)


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


def test_timeout_kind(ex, db):
    result = ex.execute(db, "SELECT COUNT(*) FROM Medal a, Medal b, Medal c")
    assert result.error == "timeout" and "0.5" in result.message


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


def test_missing_database_is_other_and_not_created(ex, tmp_path):
    missing = tmp_path / "missing.sqlite"
    result = ex.execute(missing, "SELECT 1")
    assert result.error == "other" and "missing.sqlite" in result.message
    assert not missing.exists() and list(tmp_path.iterdir()) == []


def test_not_a_database_is_other(ex, tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    assert ex.execute(junk, "SELECT * FROM Medal").error == "other"


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
    assert time.perf_counter() - start < 0.3 + 0.5
    assert [r.error for r in results] == ["timeout"] * 5


def test_group_workers_match_serial(db):
    with Executor(ExecutorConfig(timeout=0.5)) as ex:
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


def test_directory_path_is_other(ex, tmp_path):
    assert ex.execute(tmp_path, "SELECT 1").error == "other"
