"""Schema text of real databases: CREATE TABLE with foreign keys, sample rows, column values, token budget."""

import sqlite3
from pathlib import Path

import pytest

from sqlenv import schema
from sqlenv.connections import HostError

FIXTURES = Path(__file__).parent / "fixtures"
CONCERT = FIXTURES / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
SCHOOL = FIXTURES / "spider" / "database" / "school" / "school.sqlite"


def make_db(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA synchronous=OFF; PRAGMA journal_mode=OFF;" + script)
    conn.commit()
    conn.close()
    return path


def test_create_statements_keep_foreign_keys():
    text, rows = schema.describe(CONCERT, sample_rows=0)
    assert rows == ""
    assert text.count("CREATE TABLE") == 4
    assert "FOREIGN KEY (stadium_id) REFERENCES stadium(stadium_id)" in text
    # column-level REFERENCES are kept too
    assert "REFERENCES department(dept_id)" in schema.schema_text(SCHOOL)
    assert text.index("CREATE TABLE stadium") < text.index(
        "CREATE TABLE singer"
    )  # sqlite_master order


def test_sample_rows_per_table():
    _, rows = schema.describe(CONCERT, sample_rows=2)
    assert "singer: singer_id | name | country | age | net_worth" in rows
    assert "1 | Ana | France | 52 | 1.5" in rows
    assert "3 | Chen" not in rows  # only 2 rows per table
    _, rows = schema.describe(CONCERT, sample_rows=10)
    assert "5 | Eli | NULL | 45 | NULL" in rows


def test_internal_tables_and_views_skipped(tmp_path):
    db = make_db(
        tmp_path / "a.sqlite",
        """
        CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, x TEXT);
        INSERT INTO t (x) VALUES ('a');
        CREATE VIEW v AS SELECT x FROM t;
        CREATE INDEX ix ON t (x);
    """,
    )
    text, _ = schema.describe(db, 1)
    assert (
        "sqlite_sequence" not in text and "CREATE VIEW" not in text and "CREATE INDEX" not in text
    )


def test_foreign_key_pragma_fallback():
    # A hand-built Table whose CREATE text lost its REFERENCES gets a comment from PRAGMA foreign_key_list.
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (pid INTEGER REFERENCES p(id));"
    )
    assert schema._missing_foreign_keys(conn, "c", "CREATE TABLE c (pid INTEGER);") == [
        "c.pid -> p.id"
    ]
    assert (
        schema._missing_foreign_keys(conn, "c", "CREATE TABLE c (pid INTEGER REFERENCES p(id));")
        == []
    )


def test_long_and_blob_values_are_cut(tmp_path):
    db = make_db(tmp_path / "b.sqlite", "CREATE TABLE t (a TEXT, b BLOB);")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO t VALUES (?, ?)", ("word " * 100, b"\x00" * 50))
    conn.commit()
    conn.close()
    _, rows = schema.describe(db, 1)
    line = rows.splitlines()[1]
    assert "<blob 50 bytes>" in line and "..." in line and len(line) < 200


def big_db(tmp_path: Path, n_tables: int = 30, n_cols: int = 12) -> Path:
    statements = []
    for t in range(n_tables):
        cols = ", ".join(f"column_{c} TEXT" for c in range(n_cols))
        statements.append(f"CREATE TABLE table_{t:02d} ({cols});")
        values = ", ".join(f"'value {t}-{c}'" for c in range(n_cols))
        statements += [f"INSERT INTO table_{t:02d} VALUES ({values});"] * 3
    return make_db(tmp_path / "big.sqlite", "\n".join(statements))


def test_budget_drops_sample_rows_first(tmp_path):
    db = big_db(tmp_path)
    full_schema, full_rows = schema.describe(db, 3, max_tokens=None)
    budget = (
        schema.approx_tokens(full_schema) + 200
    )  # room for the schema, not for 3 rows x 30 tables
    text, rows = schema.describe(db, 3, max_tokens=budget)
    assert text == full_schema  # every table kept whole
    assert schema.approx_tokens(text) + schema.approx_tokens(rows) <= budget
    assert rows.splitlines()[-1].startswith("-- sample rows")  # said so


def test_budget_then_drops_trailing_tables(tmp_path):
    db = big_db(tmp_path)
    text, rows = schema.describe(db, 3, max_tokens=1_000)
    assert schema.approx_tokens(text) + schema.approx_tokens(rows) <= 1_000
    assert rows.startswith("-- sample rows omitted")
    assert "CREATE TABLE table_00" in text
    assert "CREATE TABLE table_29" not in text
    note = text.splitlines()[-1]
    assert note.startswith("-- ") and "more table(s) omitted" in note and "table_29" in note
    # tables are whole: every kept CREATE statement ends with ");"
    kept = [block for block in text.split("\n\n") if block.startswith("CREATE TABLE")]
    assert all(block.endswith(");") for block in kept)


def test_budget_keeps_first_table_even_if_too_big(tmp_path):
    db = big_db(tmp_path, n_tables=2, n_cols=200)
    text, _ = schema.describe(db, 0, max_tokens=50)
    assert "CREATE TABLE table_00" in text and "table_01" in text.splitlines()[-1]


def test_fits_untouched_and_token_estimate():
    assert schema.approx_tokens("") == 0 and schema.approx_tokens("abcde") == 2
    assert schema.describe(CONCERT, 3, max_tokens=100_000) == schema.describe(
        CONCERT, 3, max_tokens=None
    )


def test_missing_file_is_a_host_error(tmp_path):
    with pytest.raises(HostError, match="nope.sqlite.*no such file") as caught:
        schema.describe(tmp_path / "nope.sqlite", 0)
    assert caught.value.path == str(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()  # read-only open never creates it
    with pytest.raises(HostError, match="not a regular file"):
        schema.describe(tmp_path, 0)


def test_a_file_that_is_not_a_database_is_a_host_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    for verbatim in (False, True):
        with pytest.raises(HostError, match="cannot read database.*junk.sqlite.*not a usable SQLite database"):
            schema.describe(junk, 3, verbatim=verbatim)


def test_verbatim_keeps_values_and_empty_tables(tmp_path):
    long = "x" * 100
    db = make_db(
        tmp_path / "v.sqlite",
        f"""
        CREATE TABLE t (id INTEGER, label TEXT, data BLOB);
        INSERT INTO t VALUES (1, 'two  spaces', NULL), (2, '{long}', NULL);
        CREATE TABLE empty (id INTEGER);
    """,
    )
    text, rows = schema.describe(db, 3, None, verbatim=True)
    assert rows == f"t: id | label | data\n1 | two  spaces | NULL\n2 | {long} | NULL\n\nempty: id"
    assert text == schema.describe(db, 3, None)[0]  # the CREATE text is the same either way
    _, cut = schema.describe(db, 3, None)
    assert cut == f"t: id | label | data\n1 | two spaces | NULL\n2 | {long[:77]}..." + " | NULL"
    assert schema.describe(db, 0, None, verbatim=True) == (text, "")


def test_column_values_are_the_most_frequent_text_values_as_sql_literals(tmp_path):
    db = make_db(tmp_path / "v.sqlite", """
        CREATE TABLE medal (athlete TEXT, format TEXT, year INTEGER, note TEXT);
        INSERT INTO medal VALUES ('Ana', 'Women''s team', 2019, NULL), ('Ana', 'Singles', 2020, NULL),
            ('Ana', 'Women''s team', 2021, NULL), ('Ana', 'Doubles', 2022, NULL), ('Ana', 'Mixed', 2023, 'x');
        INSERT INTO medal VALUES ('Ana', 'line' || char(10) || 'break', 2024, NULL);
        CREATE TABLE empty (name TEXT);""")
    text, rows = schema.describe(db, 0, column_values=2)
    assert rows == ""
    assert text.split(";\n", 1)[1].split("\n\n")[0] == (
        "-- medal values, most frequent first:\n"
        "-- athlete: 'Ana'\n"
        "-- format: 'Women''s team', 'Doubles' (+3 more)\n"      # ties by value; a value with a newline is not shown
        "-- note: 'x'")                                            # numbers and NULLs are not text values
    assert text.endswith("CREATE TABLE empty (name TEXT);")      # nothing to list: no values block
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM medal WHERE format = 'Women''s team'").fetchone() == (2,)  # copyable
    conn.close()
    assert schema.describe(db, 0) == (schema.describe(db, 0, column_values=0))
    assert "values" not in schema.describe(db, 0)[0]


def test_budget_drops_column_values_first(tmp_path):
    db = big_db(tmp_path)
    bare, _ = schema.describe(db, 0, max_tokens=None)
    full, _ = schema.describe(db, 0, max_tokens=None, column_values=3)
    assert full.count("values, most frequent first") == 30 and schema.approx_tokens(full) > schema.approx_tokens(bare)
    text, _ = schema.describe(db, 0, max_tokens=schema.approx_tokens(bare) + 30, column_values=3)
    assert text == bare + "\n\n-- column values omitted to fit the " \
        f"{schema.approx_tokens(bare) + 30}-token schema budget"
