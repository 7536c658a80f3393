"""Fuzz the sandboxed executor and ``env.step`` with hypothesis, and print what happened.

    nice -n 10 .venv/bin/python benchmarks/fuzz.py --long             # 100,000 cases
    nice -n 10 .venv/bin/python benchmarks/fuzz.py --cases 20000 --seed 1

Families of input (the share of ``--cases`` each gets):
  bytes      random byte strings, decoded as UTF-8 with surrogate escapes or as Latin-1, or passed as
             bytes (not str)                                                        Executor.execute
  tokens     SQL-like token soup: keywords, the schema's names, quotes, comments, ``;``, NUL,
             attack words (ATTACH, PRAGMA, load_extension, printf bombs)             Executor.execute
  grammar    SELECTs from a grammar over the environment's five tables: joins, CTEs, recursive CTEs
             (bounded, unbounded, exponential), window functions, aggregates, GROUP BY / HAVING,
             subqueries (scalar, EXISTS, IN, FROM), compound SELECTs, string and blob functions,
             huge LIMITs, deep nesting                                              Executor.execute
  cartesian  the same grammar over a synthetic 2,000-row table, where comma joins blow up
                                                                                    Executor.execute
  step       env.reset(options={"index": i}) + env.step(sql) on TextToSQLEnv("generated"), with
             grammar SQL, token soup, bytes, or the question's gold SQL with random edits
  group      env.score_group(8 queries, workers=2) (the worker-process path)

Properties checked on every case (any violation is a failure; the run goes on and lists them):
  the call returns (never raises); it returns within the time budget plus ``--margin``; the error
  kind is None or one of ERROR_KINDS; the database file is byte-identical afterwards (sha256) and no
  file appears beside it; for env calls, the reward is one of the preset's values (binary: -1, 0, 1),
  -1 exactly when the query failed, and ``terminated`` is True.

tests/test_fuzz.py runs the same strategies with a few thousand cases; this script is the long run.
The strategies live here so that the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUDGET = 0.05  # seconds: the executor's time budget while fuzzing (small, so that runaways are cheap)
MARGIN = 2.0  # seconds of slack over the budget before a case counts as a failure (shared 2-core box)
BIG_ROWS = 2000  # rows of the synthetic table: a 3-way comma join is 8e9 rows
BINARY_REWARDS = (-1.0, 0.0, 1.0)
HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]

# --------------------------------------------------------------------------- databases


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_big_db(path: Path, rows: int = BIG_ROWS) -> Path:
    """A synthetic table large enough for cartesian blow-ups, plus a small one to join it with."""
    rng = random.Random(0)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE Big(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL, payload BLOB);
        CREATE INDEX big_grp ON Big(grp);
        CREATE TABLE Small(k INTEGER PRIMARY KEY, v TEXT);
    """)
    words = ["Paris", "Kraków", "Zürich", "O'Neil", "a;b", "--", "%_", "", "東京"]
    conn.executemany(
        "INSERT INTO Big VALUES (?, ?, ?, ?, ?)",
        [
            (i, i % 37, rng.choice(words) + str(i), rng.random() * 1e6, rng.randbytes(rng.randrange(0, 64)))
            for i in range(rows)
        ],
    )
    conn.executemany("INSERT INTO Small VALUES (?, ?)", [(i, rng.choice(words)) for i in range(20)])
    conn.commit()
    conn.close()
    return path


def schema_of(path) -> dict[str, list[str]]:
    """{table: [columns]} of a SQLite file, read without writing anything."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}
    finally:
        conn.close()


# --------------------------------------------------------------------------- strategies: bytes, tokens

_KEYWORDS = (
    "SELECT FROM WHERE GROUP BY HAVING ORDER LIMIT OFFSET UNION ALL INTERSECT EXCEPT WITH RECURSIVE AS "
    "JOIN LEFT CROSS NATURAL ON USING DISTINCT CASE WHEN THEN ELSE END AND OR NOT IN EXISTS BETWEEN "
    "LIKE GLOB IS NULL CAST OVER PARTITION ROWS RANGE PRECEDING FOLLOWING CURRENT ROW VALUES "
    "DROP TABLE INSERT INTO UPDATE SET DELETE ATTACH DETACH DATABASE PRAGMA VACUUM BEGIN COMMIT "
    "ROLLBACK SAVEPOINT REINDEX ANALYZE CREATE VIEW TRIGGER INDEX TEMP"
).split()
_PUNCT = [",", ";", "(", ")", "*", "=", "<", "<>", "||", "+", "-", "/", "%", ".", "'", '"', "`",
          "[", "]", "--", "/*", "*/", "\n", "\x00", "\udcff", "?", ":a", "@b", "$c", "?999"]
_ATOMS = ["1", "0", "-1", "1e999", "9223372036854775807", "2000000000", "NULL", "'x'", "''",
          "x'ff'", "'%.*c'", "'%s%s%s'", "printf", "format", "zeroblob", "randomblob", "load_extension",
          "sqlite_version()", "json_each", "pragma_table_info", "group_concat", "replace", "char(59)",
          "'a;b'", "random()", "'Kraków'", "'東京'", "r(x)", "r", "x"]


# --------------------------------------------------------------------------- strategies: the grammar

_BIG_INTS = [2**31, 2**63 - 1, -(2**63), 10**12, 1000000, 100000]
_FLOATS = ["0.5", "-1.25", "1e308", "1e999", "-1e999", "3.0", "2.5e-300"]
_CHARS = "abcxyz XYZ019_%*?[]'\";-/\n\téüłß東京\U0001f600"
_FORMATS = ["'%d'", "'%s-%s'", "'%.3f'", "'%020.5f'", "'%q'", "'%Q'", "'%w'", "'%x'", "'%c'",
            "'%*d'", "'%.*c'", "'%-10s|'", "'%,d'", "'%%'", "'%z'"]
# (name, min args, max args)
_FUNCTIONS = [
    ("abs", 1, 1), ("length", 1, 1), ("lower", 1, 1), ("upper", 1, 1), ("hex", 1, 1), ("quote", 1, 1),
    ("typeof", 1, 1), ("unicode", 1, 1), ("trim", 1, 2), ("ltrim", 1, 2), ("rtrim", 1, 2),
    ("substr", 2, 3), ("replace", 3, 3), ("instr", 2, 2), ("round", 1, 2), ("coalesce", 2, 4),
    ("ifnull", 2, 2), ("nullif", 2, 2), ("iif", 3, 3), ("char", 1, 4), ("glob", 2, 2), ("like", 2, 3),
    ("randomblob", 1, 1), ("zeroblob", 1, 1), ("random", 0, 0), ("max", 2, 3), ("min", 2, 3),
    ("date", 1, 2), ("strftime", 2, 3), ("julianday", 1, 1), ("json_array", 0, 3), ("json_quote", 1, 1),
    ("json_extract", 2, 2), ("json_object", 2, 2), ("likely", 1, 1), ("unlikely", 1, 1),
    ("printf", 1, 4), ("format", 1, 3),
    ("soundex", 1, 1), ("no_such_function", 1, 1),
]
_AGGREGATES = ["count", "sum", "avg", "total", "min", "max", "group_concat"]
_WINDOWS = ["row_number()", "rank()", "dense_rank()", "percent_rank()", "cume_dist()", "ntile({n})",
            "lag({e})", "lag({e}, {n}, {e})", "lead({e}, {n})", "first_value({e})", "last_value({e})",
            "nth_value({e}, {n})", "sum({e})", "count(*)", "avg({e})", "group_concat({e})", "max({e})"]
_FRAMES = ["", " ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
           " ROWS BETWEEN {n} PRECEDING AND {n} FOLLOWING",
           " RANGE BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING",
           " GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW EXCLUDE TIES", " ROWS UNBOUNDED PRECEDING"]
_BINARY = ["+", "-", "*", "/", "%", "||", "=", "<>", "<", ">=", "AND", "OR", "IS", "IS NOT", "LIKE", "GLOB",
           "&", "|", "<<", ">>"]
_HUGE_LIMITS = ["9223372036854775807", "-1", "1000000000000", "2147483648", "(SELECT 1e18)"]


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class _Scope:
    """What a SELECT may name: (alias, columns) of its FROM items, and the CTEs in force."""

    items: list = field(default_factory=list)
    ctes: dict = field(default_factory=dict)


class HypothesisChoices:
    """The few choices the grammar makes, drawn by hypothesis (so failures shrink)."""

    def __init__(self, draw):
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def boolean(self) -> bool:
        return self.draw(st.booleans())

    def choice(self, options):
        return self.draw(st.sampled_from(options))

    def text(self, max_size: int) -> str:
        return self.draw(st.text(alphabet=_CHARS, max_size=max_size))

    def blob(self, max_size: int) -> bytes:
        return self.draw(st.binary(max_size=max_size))


class RandomChoices:
    """The same choices from a seeded `random.Random`: about 20x cheaper than hypothesis draws, for the
    long run (no shrinking; a failure prints the SQL itself)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def boolean(self) -> bool:
        return self.rng.random() < 0.5

    def choice(self, options):
        return self.rng.choice(options)

    def text(self, max_size: int) -> str:
        return "".join(self.rng.choice(_CHARS) for _ in range(self.rng.randint(0, max_size)))

    def blob(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))


class Grammar:
    """Hypothesis strategies for SQLite SELECT statements over `schema` ({table: [columns]})."""

    def __init__(self, schema: dict[str, list[str]], max_depth: int = 3):
        self.schema = {t: list(c) for t, c in schema.items() if c}
        self.max_depth = max_depth

    # -- leaves

    def literal(self, d) -> str:
        kind = d.integer(0, 9)
        if kind <= 3:
            return str(d.integer(-5, 100) if d.integer(0, 3) else d.choice(_BIG_INTS))
        if kind == 4:
            return d.choice(_FLOATS)
        if kind <= 6:
            return quote(d.text(12))
        if kind == 7:
            return "NULL"
        if kind == 8:
            return "x'" + d.blob(8).hex() + "'"
        return d.choice(["CURRENT_DATE", "CURRENT_TIMESTAMP", "TRUE", "FALSE"])

    def column(self, d, scope: _Scope) -> str:
        if not scope.items or d.integer(0, 40) == 0:
            return d.choice(["nope", "rowid", "x"])  # unknown names: no_such_column
        alias, columns = d.choice(scope.items)
        name = d.choice(columns)
        return f"{alias}.{name}" if d.boolean() else name

    # -- expressions

    def expr(self, d, scope: _Scope, depth: int, aggregate: bool = False) -> str:
        if depth <= 0:
            return self.column(d, scope) if d.boolean() else self.literal(d)
        kinds = ["col", "col", "lit", "unary", "binary", "binary", "func", "func", "case", "cast",
                 "between", "in_list", "like"]
        if depth >= 2:
            kinds += ["scalar_subquery", "exists", "in_subquery"]
        if aggregate:
            kinds += ["aggregate", "aggregate", "window"]
        kind = d.choice(kinds)
        sub = lambda: self.expr(d, scope, depth - 1, aggregate)  # noqa: E731
        if kind == "col":
            return self.column(d, scope)
        if kind == "lit":
            return self.literal(d)
        if kind == "unary":
            return d.choice(["-", "+", "NOT ", "~"]) + sub()
        if kind == "binary":
            return f"({sub()} {d.choice(_BINARY)} {sub()})"
        if kind == "func":
            name, lo, hi = d.choice(_FUNCTIONS)
            args = [sub() for _ in range(d.integer(lo, hi))]
            if name in ("randomblob", "zeroblob"):
                args = [d.choice(["10", "100000", "1000000000", "-1"]) if d.boolean() else args[0]]
            if name in ("printf", "format") and d.boolean():
                args[0] = d.choice(_FORMATS)
            return f"{name}({', '.join(args)})"
        if kind == "case":
            whens = " ".join(f"WHEN {sub()} THEN {sub()}" for _ in range(d.integer(1, 3)))
            return f"CASE {whens} ELSE {sub()} END"
        if kind == "cast":
            return f"CAST({sub()} AS {d.choice(['INTEGER', 'TEXT', 'REAL', 'BLOB', 'NUMERIC'])})"
        if kind == "between":
            return f"({sub()} {d.choice(['', 'NOT '])}BETWEEN {sub()} AND {sub()})"
        if kind == "in_list":
            return f"({sub()} IN ({', '.join(sub() for _ in range(d.integer(1, 4)))}))"
        if kind == "like":
            op = d.choice(["LIKE", "GLOB", "NOT LIKE"])
            pattern = d.choice(["'%a%'", "'_%_'", "'*[a-z]*'", "'%'", quote("%" * 50 + "x")])
            return f"({sub()} {op} {pattern})"
        if kind == "scalar_subquery":
            return "(" + self.select(d, depth - 1, scope, columns=1) + ")"
        if kind == "exists":
            return f"{d.choice(['', 'NOT '])}EXISTS ({self.select(d, depth - 1, scope)})"
        if kind == "in_subquery":
            return f"({sub()} IN ({self.select(d, depth - 1, scope, columns=1)}))"
        if kind == "aggregate":
            name = d.choice(_AGGREGATES)
            inner = self.expr(d, scope, depth - 1)  # no aggregate inside an aggregate
            if name == "count" and d.boolean():
                return "count(*)"
            distinct = "DISTINCT " if d.integer(0, 3) == 0 else ""
            if name == "group_concat" and not distinct and d.boolean():
                return f"group_concat({inner}, {quote(d.text(12))})"
            return f"{name}({distinct}{inner})"
        # window
        template = d.choice(_WINDOWS)
        call = template.format(e=self.expr(d, scope, depth - 1), n=d.integer(-1, 5))
        partition = f"PARTITION BY {self.expr(d, scope, 0)} " if d.boolean() else ""
        order = f"ORDER BY {self.expr(d, scope, 0)}" if d.boolean() else ""
        frame = d.choice(_FRAMES).format(n=d.integer(0, 3)) if order else ""
        return f"{call} OVER ({partition}{order}{frame})"

    # -- FROM, SELECT, WITH

    def from_item(self, d, depth: int, scope: _Scope, index: int) -> tuple[str, tuple[str, list]]:
        alias = f"t{index}"
        sources = ["table"] * 4 + (["cte"] if scope.ctes else []) + (["subquery"] if depth > 0 else [])
        kind = d.choice(sources)
        if kind == "table":
            if d.integer(0, 50) == 0:
                return f"NoSuchTable AS {alias}", (alias, ["x"])
            table = d.choice(sorted(self.schema))
            return f"{table} AS {alias}", (alias, self.schema[table])
        if kind == "cte":
            name = d.choice(sorted(scope.ctes))
            return f"{name} AS {alias}", (alias, scope.ctes[name])
        n = d.integer(1, 3)
        inner = self.select(d, depth - 1, _Scope(ctes=scope.ctes), columns=n)
        return f"({inner}) AS {alias}", (alias, [f"c{i}" for i in range(n)])

    def core(self, d, depth: int, outer: _Scope, columns: int) -> str:
        scope = _Scope(items=list(outer.items), ctes=outer.ctes)
        n_from = d.integer(0, 3) if d.integer(0, 9) else 0
        parts = []
        for i in range(n_from):
            text, item = self.from_item(d, depth, scope, len(scope.items) + i + 1)
            if i == 0:
                parts.append(text)
            else:
                join = d.choice(["JOIN", "LEFT JOIN", "CROSS JOIN", ",", "NATURAL JOIN", "USING"])
                if join in ("JOIN", "LEFT JOIN"):
                    scope.items.append(item)
                    parts.append(f"{join} {text} ON {self.expr(d, scope, 1)}")
                    continue
                if join == "USING":
                    parts.append(f"JOIN {text} USING ({d.choice(item[1])})")
                else:
                    parts.append(f"{join} {text}")
            scope.items.append(item)
        aggregate = d.integer(0, 2) == 0
        depth_e = min(depth + 1, 2)
        cols = ", ".join(
            f"{self.expr(d, scope, depth_e, aggregate)} AS c{i}" for i in range(columns)
        )
        if columns == 0:
            cols = "*"
        sql = f"SELECT {'DISTINCT ' if d.integer(0, 5) == 0 else ''}{cols}"
        if parts:
            sql += " FROM " + " ".join(parts)
        if d.boolean():
            sql += f" WHERE {self.expr(d, scope, depth_e)}"
        if d.integer(0, 3) == 0:
            sql += f" GROUP BY {self.expr(d, scope, 1)}"
            if d.boolean():
                sql += f" HAVING {self.expr(d, scope, 1, aggregate=True)}"
        return sql

    def select(self, d, depth: int, outer: _Scope | None = None, columns: int | None = None) -> str:
        outer = outer or _Scope()
        if columns is None:
            columns = d.integer(0, 3)
        sql = self.core(d, depth, outer, columns)
        for _ in range(d.integer(0, 2) if d.integer(0, 3) == 0 and columns else 0):
            op = d.choice(["UNION", "UNION ALL", "INTERSECT", "EXCEPT"])
            sql += f" {op} {self.core(d, depth, outer, columns)}"
        if d.integer(0, 2) == 0:
            key = d.choice([str(i + 1) for i in range(max(columns, 1))] + ["random()", "1e999"])
            sql += f" ORDER BY {key} {d.choice(['', 'ASC', 'DESC', 'DESC NULLS FIRST'])}"
        if d.integer(0, 2) == 0:
            limit = str(d.integer(0, 20)) if d.boolean() else d.choice(_HUGE_LIMITS)
            sql += f" LIMIT {limit}"
            if d.integer(0, 3) == 0:
                sql += f" OFFSET {d.choice(['1', '5', '9223372036854775807', '-3'])}"
        return sql

    def cte(self, d, depth: int, ctes: dict, index: int) -> str:
        name = f"q{index}"
        kind = d.choice(["plain", "recursive", "recursive", "exponential", "joined"])
        if kind == "plain":
            n = d.integer(1, 3)
            ctes[name] = [f"c{i}" for i in range(n)]
            body = self.select(d, depth - 1, _Scope(ctes=dict(ctes)), columns=n)
            return f"{name}({', '.join(ctes[name])}) AS ({body})"
        ctes[name] = ["n"]
        start = d.choice(["1", "0", "-5", "'a'"])
        bound = d.choice(["", " WHERE n < 10", " WHERE n < 1000", " WHERE n < 1000000",
                                      " WHERE n < 1000000000", " WHERE n < 9223372036854775807"])
        if kind == "recursive":
            step = d.choice(["n + 1", "n * 2", "n || 'x'", "n - 1", "n"])
            return f"{name}(n) AS (SELECT {start} UNION ALL SELECT {step} FROM {name}{bound})"
        if kind == "exponential":  # two recursive terms: the queue doubles every level
            return (f"{name}(n) AS (SELECT {start} UNION ALL SELECT n + 1 FROM {name}{bound} "
                    f"UNION ALL SELECT n + 2 FROM {name}{bound})")
        table = d.choice(sorted(self.schema))
        return f"{name}(n) AS (SELECT {start} UNION ALL SELECT n + 1 FROM {name}, {table}{bound})"

    def statement(self, d) -> str:
        ctes: dict = {}
        prefix = ""
        if d.integer(0, 2) == 0:
            n = d.integer(1, 2)
            defs = [self.cte(d, self.max_depth - 1, ctes, i) for i in range(n)]
            prefix = "WITH RECURSIVE " + ", ".join(defs) + " "
        sql = prefix + self.select(d, self.max_depth - 1, _Scope(ctes=ctes))
        nesting = d.integer(0, 15)
        if nesting == 0:  # deep nesting of subqueries, up to and past SQLite's depth limits
            depth = d.choice([10, 100, 300, 1200])
            sql = "SELECT * FROM (" * depth + sql + ")" * depth
        elif nesting == 1:
            depth = d.choice([10, 500, 999, 1001, 5000])
            sql = f"SELECT {'(' * depth}1{')' * depth}"
        elif nesting == 2:
            depth = d.choice([10, 100, 300])
            sql = "SELECT " + "(SELECT " * depth + "1" + ")" * depth
        return sql + d.choice(["", "", ";", " ; ", " -- done", "; /* c */"])

    def sample(self, rng: random.Random) -> str:
        """One statement without hypothesis (see RandomChoices)."""
        return self.statement(RandomChoices(rng))

    def strategy(self):
        return st.composite(lambda draw: self.statement(HypothesisChoices(draw)))()


def random_bytes_case(d) -> str | bytes:
    """Random bytes: as str (UTF-8 with lone surrogates where invalid, or Latin-1) or as bytes."""
    raw = d.blob(300)
    how = d.integer(0, 3)
    if how == 0:
        return raw.decode("utf-8", "surrogateescape")
    if how == 1:
        return raw.decode("latin-1")
    return raw if how == 2 else "SELECT 1 " + raw.decode("utf-8", "replace")


def token_soup_case(d, names: list[str]) -> str:
    """SQL-like token soup: keywords, the schema's names, punctuation, attack words, odd separators."""
    pools = (_KEYWORDS, _PUNCT, _ATOMS, names)
    return "".join(
        d.choice(d.choice(pools)) + d.choice([" ", " ", " ", "", "\n", "\t", " /**/ "])
        for _ in range(d.integer(0, 40))
    )


def edited(d, sql: str) -> str:
    """Up to three random edits of `sql`: delete a span, duplicate a span, insert a token."""
    for _ in range(d.integer(0, 3)):
        if not sql:
            break
        i = d.integer(0, len(sql) - 1)
        j = d.integer(i, min(len(sql), i + 8))
        edit = d.integer(0, 2)
        if edit == 0:
            sql = sql[:i] + sql[j:]
        elif edit == 1:
            sql = sql[:j] + sql[i:j] + sql[j:]
        else:
            sql = sql[:i] + d.choice(_PUNCT + _KEYWORDS[:20]) + sql[i:]
    return sql


def names_of(schema: dict[str, list[str]]) -> list[str]:
    return sorted(set(schema) | {c for cols in schema.values() for c in cols})


def strategy(case):
    """A hypothesis strategy from a case builder `case(choices) -> value`."""
    return st.composite(lambda draw: case(HypothesisChoices(draw)))()


random_bytes = strategy(random_bytes_case)


def token_soup(schema: dict[str, list[str]]):
    names = names_of(schema)
    return strategy(lambda d: token_soup_case(d, names))


# --------------------------------------------------------------------------- properties


def check_result(result, took: float, budget: float, margin: float) -> list[str]:
    """Violations of the executor's promises by one result (an empty list when all hold)."""
    from sqlenv.executor import ERROR_KINDS

    problems = []
    if result.error is not None and result.error not in ERROR_KINDS:
        problems.append(f"error kind {result.error!r} not in ERROR_KINDS")
    if result.error is None and result.message:
        problems.append("message on success")
    if not isinstance(result.rows, tuple) or not isinstance(result.message, str):
        problems.append("rows not a tuple or message not a str")
    if took > budget + margin:
        problems.append(f"took {took:.3f} s (budget {budget} s + margin {margin} s)")
    return problems


def check_step(reward, terminated, info, took: float, budget: float, margin: float,
               rewards=BINARY_REWARDS, penalty=-1.0) -> list[str]:
    """Violations by one env.step (or one score_group entry)."""
    from sqlenv.executor import ERROR_KINDS

    problems = []
    if reward not in rewards:
        problems.append(f"reward {reward!r} not one of {rewards}")
    if (reward == penalty) != (info["error"] is not None):
        problems.append(f"reward {reward} with error {info['error']!r}")
    if info["error"] is not None and info["error"] not in ERROR_KINDS:
        problems.append(f"error kind {info['error']!r} not in ERROR_KINDS")
    if terminated is not True:
        problems.append("terminated is not True")
    if took > budget + margin:
        problems.append(f"took {took:.3f} s (budget {budget} s + margin {margin} s)")
    return problems


class Guard:
    """Remembers a database's sha256 and its folder's files; `changed()` says what differs now.

    `allow_new` is a regex of names that may appear (the environment's cache folder gains a database
    whenever a question on a new athlete is first reset); anything else new, such as a -journal, -wal
    or -shm file, and anything that disappears, is reported."""

    def __init__(self, path, allow_new: str | None = None):
        self.path = Path(path)
        self.digest = sha256(self.path)
        self.listing = set(os.listdir(self.path.parent))
        self.allow_new = re.compile(allow_new) if allow_new else None

    def changed(self) -> list[str]:
        problems = []
        if sha256(self.path) != self.digest:
            problems.append(f"{self.path.name} changed (sha256)")
        listing = set(os.listdir(self.path.parent))
        gone = self.listing - listing
        new = {n for n in listing - self.listing if not (self.allow_new and self.allow_new.fullmatch(n))}
        if gone or new:
            problems.append(f"files beside the database changed: gone {sorted(gone)}, new {sorted(new)}")
        self.listing = listing
        return problems


ENV_CACHE_NAMES = r"[0-9a-f]{64}\.sqlite"  # what infobox.database_for_context writes


# --------------------------------------------------------------------------- the long run

SHARES = {"bytes": 0.12, "tokens": 0.18, "grammar": 0.30, "cartesian": 0.12, "step": 0.25, "group": 0.03}


@dataclass
class Tally:
    cases: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    rewards: Counter = field(default_factory=Counter)
    latencies: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def add(self, family: str, took: float, kind, problems: list[str], sql, reward=None) -> None:
        self.cases[family] += 1
        self.kinds[kind or "ok"] += 1
        self.latencies.setdefault(family, []).append(took)
        if reward is not None:
            self.rewards[reward] += 1
        if problems:
            self.failures.append((family, problems, sql))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(cases: int, seed: int, budget: float, margin: float, engine: str = "hypothesis",
        progress: bool = True) -> Tally:
    from tqdm import tqdm

    from sqlenv.env import TextToSQLEnv
    from sqlenv.executor import Executor, ExecutorConfig

    tally = Tally()
    work = Path(tempfile.mkdtemp(prefix="sqlenv-fuzz-"))
    os.environ.setdefault("SQLENV_CACHE_DIR", str(work / "cache"))
    big_dir = work / "big"
    big_dir.mkdir()
    big = build_big_db(big_dir / "big.sqlite")
    env = TextToSQLEnv(timeout=budget)
    obs, info = env.reset(seed=seed)
    env_db = Path(env._database(env.example(info["index"])).path)
    env_grammar, big_grammar = Grammar(schema_of(env_db)), Grammar(schema_of(big))
    env_schema = schema_of(env_db)
    executor = Executor(ExecutorConfig(timeout=budget))
    guards = {"env": None, "big": Guard(big)}
    counts = {name: max(1, round(cases * share)) for name, share in SHARES.items()}
    counts["grammar"] += cases - sum(counts.values())
    bar = tqdm(total=sum(counts.values()), disable=not progress, unit="case", smoothing=0.05)
    db_guards: dict[str, Guard] = {}

    def execute_case(family, path, guard, sql):
        start = time.perf_counter()
        result = None
        try:
            result = executor.execute(path, sql)
            problems = check_result(result, time.perf_counter() - start, budget, margin)
        except BaseException as exc:  # noqa: BLE001 - the property under test is "never raises"
            problems = [f"raised {exc!r}"]
        took = time.perf_counter() - start
        problems += guard.changed()
        tally.add(family, took, result.error if result else "raised", problems, sql)
        bar.update()

    def env_guard(index):
        path = env._database(env.example(index)).path
        if path not in db_guards:
            db_guards[path] = Guard(path, allow_new=ENV_CACHE_NAMES)
        return db_guards[path]

    def step_case(index, sql):
        start = time.perf_counter()
        try:
            env.reset(options={"index": index})
            t0 = time.perf_counter()
            _, reward, terminated, _, info = env.step(sql)
            took = time.perf_counter() - t0
            problems = check_step(reward, terminated, info, took, budget, margin)
            kind = info["error"]
        except BaseException as exc:  # noqa: BLE001
            took, reward, kind, problems = time.perf_counter() - start, None, "raised", [f"raised {exc!r}"]
        problems += env_guard(index).changed()
        tally.add("step", took, kind, problems, sql, reward)
        bar.update()

    def group_case(index, sqls):
        start = time.perf_counter()
        try:
            env.reset(options={"index": index})
            scored = env.score_group(sqls, workers=2)
            took = time.perf_counter() - start
            problems = []
            for reward, info in scored:
                problems += check_step(reward, True, info, 0.0, budget, margin)
                tally.kinds[info["error"] or "ok"] += 1
                tally.rewards[reward] += 1
            if len(scored) != len(sqls):
                problems.append(f"{len(scored)} results for {len(sqls)} queries")
            # a group runs 8 queries on 2 workers; a worker is killed past budget + kill_grace
            if took > len(sqls) * budget + env.executor.config.kill_grace + margin + 2.0:
                problems.append(f"group took {took:.3f} s")
        except BaseException as exc:  # noqa: BLE001
            took, problems = time.perf_counter() - start, [f"raised {exc!r}"]
        problems += env_guard(index).changed()
        tally.cases["group"] += 1
        tally.latencies.setdefault("group", []).append(took)
        if problems:
            tally.failures.append(("group", problems, sqls))
        bar.update()

    env_db_guard = env_guard(info["index"])
    n_questions = len(env.dataset)
    env_names, big_names = names_of(env_schema), names_of(schema_of(big))

    def step_sql(d):
        kind = d.integer(0, 5)
        if kind <= 1:
            return env_grammar.statement(d)
        if kind <= 3:
            return edited(d, env.example(d.integer(0, n_questions - 1)).gold_sql or "SELECT 1")
        return token_soup_case(d, env_names) if kind == 4 else random_bytes_case(d)

    cases_of = {  # family -> (case builder, what runs it)
        "bytes": (random_bytes_case, lambda sql: execute_case("bytes", env_db, env_db_guard, sql)),
        "tokens": (lambda d: token_soup_case(d, env_names),
                   lambda sql: execute_case("tokens", env_db, env_db_guard, sql)),
        "grammar": (env_grammar.statement, lambda sql: execute_case("grammar", env_db, env_db_guard, sql)),
        "cartesian": (lambda d: big_grammar.statement(d) if d.integer(0, 4) else token_soup_case(d, big_names),
                      lambda sql: execute_case("cartesian", big, guards["big"], sql)),
        "step": (lambda d: (d.integer(0, n_questions - 1), step_sql(d)), lambda case: step_case(*case)),
        "group": (lambda d: (d.integer(0, n_questions - 1), [step_sql(d) for _ in range(8)]),
                  lambda case: group_case(*case)),
    }
    try:
        for number, (name, (build, body)) in enumerate(cases_of.items()):
            bar.set_description(name)
            started = time.perf_counter()
            if engine == "random":
                rng = random.Random(f"{seed}-{name}")
                for _ in range(counts[name]):
                    body(build(RandomChoices(rng)))
            else:

                @hypothesis_seed(seed * 100 + number)
                @settings(max_examples=counts[name], deadline=None, database=None, phases=[Phase.generate],
                          suppress_health_check=HEALTH)
                @given(strategy(build))
                def fuzz(case):
                    body(case)

                fuzz()
            tally.seconds[name] = time.perf_counter() - started
    finally:
        bar.close()
        env.close()
        executor.close()
    return tally


def report(tally: Tally, budget: float, margin: float, seconds: float) -> str:
    everything = [t for name, values in tally.latencies.items() if name != "group" for t in values]
    lines = [
        f"cases: {sum(tally.cases.values()):,} in {seconds:.0f} s  "
        f"({', '.join(f'{k} {v:,}' for k, v in tally.cases.items())})",
        f"time budget per query: {budget} s; a case fails beyond budget + {margin} s",
        "error kinds (queries): " + ", ".join(f"{k} {v:,}" for k, v in tally.kinds.most_common()),
        "rewards (env queries): " + ", ".join(f"{k:g}: {v:,}" for k, v in sorted(tally.rewards.items())),
        f"latency over all single queries: p50 {_percentile(everything, 0.5) * 1e3:.2f} ms, "
        f"p99 {_percentile(everything, 0.99) * 1e3:.1f} ms, max {max(everything) * 1e3:.1f} ms",
    ]
    for name, values in tally.latencies.items():
        lines.append(f"  {name:<10} n={len(values):>7,} in {tally.seconds.get(name, 0):5.0f} s  "
                     f"p50 {_percentile(values, 0.5) * 1e3:7.2f} ms  "
                     f"p99 {_percentile(values, 0.99) * 1e3:7.1f} ms  max {max(values) * 1e3:7.1f} ms")
    lines.append(f"failures: {len(tally.failures)}")
    for family, problems, sql in tally.failures[:20]:
        lines.append(f"  [{family}] {'; '.join(problems)}: {str(sql)[:300]!r}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="run 100,000 cases")
    parser.add_argument("--cases", type=int, default=5000, help="number of cases (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=BUDGET, help="executor time budget, seconds")
    parser.add_argument("--margin", type=float, default=MARGIN, help="slack over the budget, seconds")
    parser.add_argument("--engine", choices=["hypothesis", "random"], default=None,
                        help="who makes the choices: hypothesis (default up to 20,000 cases) or a seeded "
                             "random.Random (default above: the same generators, ~20x cheaper, no shrinking)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cases = 100_000 if args.long else args.cases
    start = time.perf_counter()
    engine = args.engine or ("hypothesis" if cases <= 20_000 else "random")
    print(f"{cases:,} cases, engine {engine}, seed {args.seed}", flush=True)
    tally = run(cases, args.seed, args.budget, args.margin, engine, progress=not args.no_progress)
    print(report(tally, args.budget, args.margin, time.perf_counter() - start))
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
