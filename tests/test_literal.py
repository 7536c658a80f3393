"""sqlenv.literal: which tables SQLite reads to answer a query, asked of SQLite on real databases."""

import os
import sqlite3

import pytest
from conftest import build_medal_db

from sqlenv import HostError, literal
from sqlenv.literal import LITERAL_ANSWERS, MAX_OPEN, literal_answers_option, reads_table, table_read


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = build_medal_db(tmp_path_factory.mktemp("literal") / "medals.sqlite", rows=50)
    conn = sqlite3.connect(path)
    conn.executescript("CREATE VIEW gold AS SELECT year FROM Medal WHERE type = 'MedalGold';"
                       "CREATE VIEW sixteen AS SELECT 16 AS n;")
    conn.close()
    return str(path)


@pytest.mark.parametrize("sql", [
    "SELECT '16'",
    "SELECT 0",
    "SELECT 1+1",
    "select NULL",
    "WITH c(x) AS (SELECT 5) SELECT x FROM c",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT max(n) FROM r",
    "WITH Medal AS (SELECT 16 AS n) SELECT n FROM Medal",  # a CTE named like the table hides it
    "SELECT * FROM (VALUES (1), (2))",
    "SELECT * FROM (SELECT 1 AS x) WHERE x > 0",
    "SELECT 16 -- FROM Medal",
    "/* SELECT count(*) FROM Medal */ SELECT 16",
    "SELECT 'FROM Medal'",
    "SELECT \"FROM Medal\"",  # an unknown column in double quotes is a string to SQLite
    "SELECT count(*) FROM sqlite_master",  # the schema, not a table of the database
    "SELECT n FROM sixteen",  # a view of constants
    "SELECT 16;",
    "SELECT 16 ;; ",  # the executor runs it without the trailing semicolons
])
def test_constant_answers_read_no_table(db, sql):
    assert table_read(db, sql) == ""
    assert reads_table(db, sql) is False


@pytest.mark.parametrize("sql,tables", [
    ("SELECT count(*) FROM Medal", {"medal"}),
    ("select COUNT(*) from medal", {"medal"}),
    ("SELECT count(*) FROM main.Medal", {"medal"}),
    ("SELECT (SELECT max(year) FROM Medal)", {"medal"}),
    ("SELECT 1 WHERE EXISTS (SELECT 1 FROM Athlete)", {"athlete"}),
    ("SELECT 1 WHERE 2000 IN (SELECT year FROM Medal)", {"medal"}),
    ("SELECT a.name, m.year FROM Medal m JOIN Athlete a ON a.athlete_id = m.format_id", {"medal", "athlete"}),
    ("WITH c AS (SELECT year FROM Medal) SELECT max(year) FROM c", {"medal"}),
    ("SELECT count(*) FROM gold", {"medal"}),  # a view reads its tables
    ("SELECT 'FROM' FROM Medal LIMIT 1", {"medal"}),  # names a table: counts as reading, constant or not
    ("-- SELECT 16\nSELECT count(*) FROM Medal ;;", {"medal"}),
])
def test_queries_over_tables_name_a_table_they_read(db, sql, tables):
    assert table_read(db, sql) in tables
    assert reads_table(db, sql) is True


def test_the_query_is_prepared_never_run(db):
    # run, each fails with "integer overflow"; prepared only, each is told apart
    for sql, table in (("SELECT count(*) FROM Medal WHERE abs(-9223372036854775808) > 0", "medal"),
                       ("SELECT abs(-9223372036854775808)", ""),
                       ("WITH c(x) AS (SELECT abs(-9223372036854775808)) SELECT x FROM c", "")):
        with pytest.raises(sqlite3.OperationalError, match="overflow"):
            sqlite3.connect(db).execute(sql).fetchall()
        assert table_read(db, sql) == table


def test_the_same_query_twice_gives_the_same_answer(db):
    # no statement cache: the authorizer sees every prepare
    assert [table_read(db, "SELECT count(*) FROM Medal") for _ in range(3)] == ["medal"] * 3
    assert [table_read(db, "SELECT 7") for _ in range(3)] == [""] * 3


@pytest.mark.parametrize("sql", [None, 12, b"SELECT 1", "SELEC 1", "SELECT nope FROM Medal", "SELECT 1; SELECT 2"])
def test_what_cannot_be_told_counts_as_reading(db, sql):
    assert table_read(db, sql) is None
    assert reads_table(db, sql) is True


def test_a_replaced_file_is_read_afresh(tmp_path):
    path = tmp_path / "swap.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE Old (x)")
    conn.close()
    assert table_read(path, "SELECT count(*) FROM Old") == "old"
    fresh = tmp_path / "fresh.sqlite"
    conn = sqlite3.connect(fresh)
    conn.execute("CREATE TABLE New (x)")
    conn.close()
    os.replace(fresh, path)
    assert table_read(path, "SELECT count(*) FROM New") == "new"
    assert table_read(path, "SELECT count(*) FROM Old") is None


def test_a_missing_database_is_a_host_error(tmp_path):
    with pytest.raises(HostError, match="gone.sqlite"):
        table_read(tmp_path / "gone.sqlite", "SELECT 1")


def test_files_of_one_schema_share_one_copy_within_max_open(tmp_path):
    literal.close_all()
    paths = [build_medal_db(tmp_path / f"{n}.sqlite", rows=n) for n in range(3)]
    assert [table_read(p, "SELECT count(*) FROM Athlete") for p in paths] == ["athlete"] * 3
    assert len(literal._READERS) == 1
    for n in range(MAX_OPEN + 3):  # as many schemas: a table name each
        conn = sqlite3.connect(tmp_path / f"schema{n}.sqlite")
        conn.execute(f"CREATE TABLE t{n} (x)")
        conn.close()
        assert table_read(tmp_path / f"schema{n}.sqlite", f"SELECT x FROM t{n}") == f"t{n}"
    assert len(literal._READERS) == MAX_OPEN
    literal.close_all()
    assert not literal._READERS
    assert table_read(paths[0], "SELECT 1") == ""


def test_a_schema_that_does_not_copy_is_read_from_the_file(tmp_path):
    path = tmp_path / "collated.sqlite"
    conn = sqlite3.connect(path)
    conn.create_collation("backwards", lambda a, b: (a < b) - (a > b))
    conn.execute("CREATE TABLE word (w TEXT COLLATE backwards)")
    conn.execute("INSERT INTO word VALUES ('a')")
    conn.commit()
    conn.close()
    with pytest.raises(sqlite3.OperationalError, match="collation"):
        sqlite3.connect(":memory:").execute("CREATE TABLE word (w TEXT COLLATE backwards)")
    assert table_read(path, "SELECT count(*) FROM word") == "word"
    assert table_read(path, "SELECT 'a'") == ""
    assert any(key[0] == "file" for key in literal._READERS)


def test_option_names_the_field():
    assert [literal_answers_option(v) for v in LITERAL_ANSWERS] == list(LITERAL_ANSWERS)
    for bad in ("penalise", None, True):
        with pytest.raises(ValueError, match="literal_answers"):
            literal_answers_option(bad)
