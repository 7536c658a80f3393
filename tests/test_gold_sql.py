"""The benchmark's 47 gold queries (one per question template), converted to SQLite, run on the database
built from each question's own context, must reproduce the benchmark's gold answers.

This checks the infobox parser, the 5-table builder, the MySQL -> SQLite conversion and the answer
matcher together. Two rows cannot pass, because their gold answers do not follow from their
contexts by any reading of the SQL; they are marked xfail (strict) with the evidence.
"""

import sqlite3

import pytest

from sqlenv.datasets.temptabqa_c import GOLD_SQL_CORRECTIONS, load_gold_sql, mysql_to_sqlite
from sqlenv.matching import match_answer

N_GOLD = 47

# Question type -> why its gold answer cannot come from its context.
UNREACHABLE = {
    "95": (
        "Eli Dershwitz, medals 'in his/her twenties': gold 24, the SQL gives 22. The context's birth date is "
        "1995-9-23, so ages 20-29 are 2015-2024: 22 medals (the dataset's own generator, which for type 95 "
        "uses ages 20-30 in all 65 other type-95 rows, also gives 22). 24 is the count for 2014-2023, i.e. "
        "a birth year of 1994 that appears nowhere in the context."
    ),
    "1006": (
        "Deepika Kumari, bronze -> silver -> gold in three consecutive iterations of an event: gold 2, the "
        "SQL gives 0. Her context has no event with that sequence under any grouping (by tournament and "
        "format, by format alone, or case-insensitively); her answers to the other multi-iteration "
        "templates (type 1001: 78 events, 1004, 1016) contradict the context the same way, so they were "
        "computed from a fuller medal table than the one given."
    ),
}


@pytest.fixture(scope="module")
def gold(data_dir):
    dataset = load_gold_sql(data_dir)
    assert len(dataset) == N_GOLD
    return dataset


def run(path, sql):
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_every_template_is_present_once(gold):
    assert len({e.question_type for e in gold}) == N_GOLD
    assert set(UNREACHABLE) | set(GOLD_SQL_CORRECTIONS) <= {e.question_type for e in gold}


@pytest.mark.parametrize("index", range(N_GOLD))
def test_gold_sql_reproduces_the_gold_answer(gold, index, request):
    example = gold[index]
    if example.question_type in UNREACHABLE:
        request.applymarker(pytest.mark.xfail(reason=UNREACHABLE[example.question_type], strict=True))
    rows = run(gold.database(example), example.gold_sql)
    assert match_answer(rows, example.answer).correct, (example.question, example.answer, rows)


@pytest.mark.parametrize("question_type", sorted(GOLD_SQL_CORRECTIONS))
def test_each_correction_is_needed_or_harmless(gold, question_type):
    """The corrected SQL answers correctly; where the uncorrected one fails, that is why it exists."""
    example = next(e for e in gold if e.question_type == question_type)
    path = gold.database(example)
    uncorrected = run(path, mysql_to_sqlite(example.metadata["gold_sql_mysql"]))
    corrected = run(path, example.gold_sql)
    assert match_answer(corrected, example.answer).correct
    # Types 55 and 75 fail without their correction; 66 and 77 pass by luck of their ids here.
    assert match_answer(uncorrected, example.answer).correct == (question_type in ("66", "77"))


def test_gold_sql_is_valid_sqlite_for_every_template(gold):
    for example in gold:
        run(gold.database(example), example.gold_sql)  # raises on any leftover MySQL
