"""sqlenv.completion: the one extractor (trainer, TRL, verifiers, SkyRL), its rules and its cost."""

import subprocess
import sys

import pytest

from sqlenv.completion import completion_text, extract_sql, statement_end

CASES = [
    # fenced blocks
    ("```sql\nSELECT COUNT(*) FROM Medal;\n```", "SELECT COUNT(*) FROM Medal"),
    ("```sql\nSELECT COUNT(*) FROM Medal\n```\nThis counts the medals.",
     "SELECT COUNT(*) FROM Medal"),
    ("```sql\nSELECT name FROM Athlete", "SELECT name FROM Athlete"),  # no closing fence
    ("```sql\nSELECT 1; SELECT 2;\n```", "SELECT 1"),
    ("```\nselect 1\n```", "select 1"),
    ("```sqlite\nWITH x AS (SELECT 1) SELECT * FROM x;```", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("Here is the query:\n```sql\nSELECT 1\n```", "SELECT 1"),
    ("```text\nno sql here\n```\n```sql\nSELECT 2\n```", "SELECT 2"),
    ("Let me think.\n```python\nprint(1)\n```\n```sql\nSELECT 2\n```", "SELECT 2"),
    ("Here you go:\n```sqlite\nselect a from t where b = 'x;y'\n```\nThis works.",
     "select a from t where b = 'x;y'"),
    # fenced: blank lines kept
    ("```sql\n-- count them\nSELECT a\n\nFROM t\n```",
     "SELECT a\n\nFROM t"),
    ("```sql\nDROP TABLE t;\n```", "DROP TABLE t"),  # taken as written: the executor refuses it
    ("```sql\n```", ""),
    # bare text
    ("SELECT year FROM Medal WHERE type = 'MedalGold'; This returns the years.",
     "SELECT year FROM Medal WHERE type = 'MedalGold'"),
    ("The answer is: SELECT MIN(year) FROM Medal", "SELECT MIN(year) FROM Medal"),
    ("The query is SELECT count(*) FROM singer; hope it helps", "SELECT count(*) FROM singer"),
    ("SELECT MIN(year) FROM Medal\n\nThis query finds the first year.",
     "SELECT MIN(year) FROM Medal"),
    ("SELECT 1\n\nIt returns one; done", "SELECT 1"),  # the blank line comes before the ';'
    ("WITH x AS (SELECT 1) SELECT * FROM x;", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("WITH RECURSIVE c(n) AS (SELECT 1) SELECT n FROM c",
     "WITH RECURSIVE c(n) AS (SELECT 1) SELECT n FROM c"),
    ("With pleasure: SELECT 1", "SELECT 1"),  # prose "with" is not a CTE
    ("Explain: SELECT 1", "SELECT 1"),  # a keyword followed by ':' is prose
    # a leading statement wins (a pre-filled fence)
    ("SELECT 1\n```sql\nSELECT 2\n```",
     "SELECT 1"),
    ("<answer>SELECT 1</answer>", "SELECT 1"),  # a closing tag ends a bare statement
    ("I went with my friends.", ""),
    ("There is no SQL for this question.", ""),
    ("", ""),
    # statement ends
    ("SELECT * FROM t WHERE name = 'a;b'; DROP TABLE t", "SELECT * FROM t WHERE name = 'a;b'"),
    ("SELECT * FROM t WHERE name = 'O''Neil; x' AND y = 1;",
     "SELECT * FROM t WHERE name = 'O''Neil; x' AND y = 1"),
    ('SELECT "odd;col" FROM t;', 'SELECT "odd;col" FROM t'),
    ("SELECT [a;b] FROM t -- comment; here\nWHERE 1;",
     "SELECT [a;b] FROM t -- comment; here\nWHERE 1"),
    ("SELECT /* ; */ 1;", "SELECT /* ; */ 1"),
    ("SELECT 'a\n\nb' FROM t\n\nprose", "SELECT 'a\n\nb' FROM t"),  # a blank line in a literal
    # clauses go on
    ("SELECT a\n\nFROM t\n\nWHERE b = 1\n\nThis filters.",
     "SELECT a\n\nFROM t\n\nWHERE b = 1"),
    # capitalised prose stops
    ("SELECT a FROM t\n\nFrom this we get the answer.",
     "SELECT a FROM t"),
]


@pytest.mark.parametrize("text, sql", CASES)
def test_extract_sql(text, sql):
    assert extract_sql(text) == sql


def test_extracting_twice_changes_nothing():
    """The TRL tools extract a query the model may have extracted itself: a fixed point."""
    texts = [text for text, _ in CASES] + ["SELECT '" * 50, "<sql>" * 20 + "SELECT 1</sql>"]
    for text in texts:
        once = extract_sql(text)
        assert extract_sql(once) == once, text


def test_prefix_is_prepended():
    text = ' name FROM "we;ird" ;\n```\nmore text'
    assert extract_sql(text, "SELECT") == 'SELECT name FROM "we;ird"'
    assert extract_sql(" COUNT(*) FROM t;", "```sql\nSELECT") == "SELECT COUNT(*) FROM t"
    assert extract_sql(None) == "" and extract_sql(42) == ""


def test_statement_end_ignores_semicolons_in_literals():
    assert statement_end("SELECT 'a;b'") is None
    assert statement_end("SELECT 'a;b';") == 12
    assert statement_end("SELECT 'unterminated;") is None
    assert statement_end("SELECT 1\n\nSELECT 2;") == 18  # only ';' ends a statement here


def test_every_adapter_uses_this_extractor():
    from sqlenv.integrations import trl

    assert trl.extract_sql is extract_sql and trl.completion_text is completion_text


def test_completion_text_forms():
    assert completion_text("SELECT 1") == "SELECT 1"
    assert completion_text({"role": "assistant", "content": "SELECT 4"}) == "SELECT 4"
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert completion_text(chat) == "a"
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "SELECT 3"}]}]
    assert completion_text(parts) == "SELECT 3"
    assert completion_text(None) == "" and completion_text([]) == ""


HOSTILE = {
    "fences": "```", "sql fences": "```sql\n", "open tags": "<sql>", "answer tags": "<answer>",
    "closing tags": "</sql>", "with": "WITH ", "with words": "with a ", "cte heads": "WITH x AS (",
    "open cte columns": "with x (", "select quotes": "SELECT '", "quotes": "'", "comments": "/*",
    "dashes": "--", "brackets": "[", "blank lines": "\n\n", "selects": "SELECT ",
    "blank clauses": "SELECT\n\nFROM ",
}


def test_a_megabyte_of_hostile_text_is_answered():
    """1 MB of each repeated fragment (and with a fence or a word in front): a quadratic rule would
    not finish; the subprocess timeout is only a hang guard."""
    script = (
        "import json, sys\n"
        "from sqlenv.completion import extract_sql\n"
        "out = {}\n"
        "for name, piece in json.loads(sys.argv[1]).items():\n"
        "    text = piece * (1_000_000 // len(piece))\n"
        "    out[name] = [len(extract_sql(t)) for t in (text, 'x ' + text, '```' + text)]\n"
        "print(json.dumps(out))\n"
    )
    import json

    done = subprocess.run([sys.executable, "-c", script, json.dumps(HOSTILE)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lengths = json.loads(done.stdout)
    assert sorted(lengths) == sorted(HOSTILE)
    assert lengths["fences"] == [0, 0, 0] and lengths["open tags"] == [0, 0, 0]
    assert lengths["selects"][0] > 0  # a query of repeated SELECTs is still extracted, whole
