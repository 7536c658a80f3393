"""Executor overhead and worker speed-up.

    .venv/bin/python benchmarks/bench_executor.py ratio     # Executor.execute vs raw sqlite3, small queries
    .venv/bin/python benchmarks/bench_executor.py group     # execute_group: 2 workers vs serial, 8 heavy queries
    .venv/bin/python benchmarks/bench_executor.py instructions   # SQLite VM instructions per second

ratio: for each query, the best of `--repeats` timings of `--number` calls of
  executor  Executor().execute(db, sql)            (cached connection, authorizer, caps, ExecutionResult)
  no_stat   Executor(revalidate=False).execute      (the same without the per-call stat of the file)
  raw       cursor.execute(sql).fetchall()          on sqlite3.connect(db), the plain way
  raw_same  cursor.execute(sql).fetchall()          on a connection opened exactly as the Executor opens it
            (mode=ro&immutable=1, limits, authorizer, progress handler): isolates the Python-side overhead.
  --cpu times with process_time, which a busy shared machine disturbs less than wall time.
group: wall time of execute_group(db, sqls) with workers=0 and workers=2 on a warm pool, best of --repeats,
  and the machine's current capacity (two spinning processes vs one), which bounds any speed-up.
instructions: how many SQLite virtual-machine instructions run per second, to translate a wall-clock budget
  into `max_instructions`: each heavy query runs under max_instructions=--budget (timeout 60 s) until that
  budget stops it; the rate is budget / elapsed, best of --repeats. Then the exact instruction counts of the
  small everyday queries (ratio's), for scale.
Builds its own databases in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlenv.executor import Executor, ExecutorConfig, _open  # noqa: E402 (after sys.path)


def build_infobox_db(path: str) -> None:
    """A small five-table database shaped like one infobox (the env's common case)."""
    rng = random.Random(0)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE Athlete(athlete_id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE Tournament(tournament_id INTEGER PRIMARY KEY, athlete_id INTEGER, name TEXT);
        CREATE TABLE Format(format_id INTEGER PRIMARY KEY, tournament_id INTEGER, name TEXT);
        CREATE TABLE Medal(medal_id INTEGER PRIMARY KEY, format_id INTEGER, type TEXT, year INTEGER, location TEXT);
        CREATE TABLE PersonalInformation(info_id INTEGER PRIMARY KEY, athlete_id INTEGER, birth_year INTEGER,
                                         birth_month TEXT, birth_day INTEGER);
        INSERT INTO Athlete VALUES (1, 'Jane Doe');
        INSERT INTO PersonalInformation VALUES (1, 1, 1980, 'March', 3);
    """)
    for t in range(1, 5):
        conn.execute("INSERT INTO Tournament VALUES (?, 1, ?)", (t, f"Tournament {t}"))
        for f in range(1, 4):
            conn.execute("INSERT INTO Format VALUES (?, ?, ?)", (t * 10 + f, t, f"Format {f}"))
    for m in range(40):
        conn.execute(
            "INSERT INTO Medal VALUES (?, ?, ?, ?, ?)",
            (
                m,
                rng.randint(1, 4) * 10 + rng.randint(1, 3),
                rng.choice(["MedalGold", "MedalSilver", "MedalBronze"]),
                rng.randint(1998, 2016),
                rng.choice(["Paris", "Tokyo", "Rome", "Oslo"]),
            ),
        )
    conn.commit()
    conn.close()


def build_medal_db(path: str, rows: int = 3000) -> None:
    rng = random.Random(0)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE Medal(medal_id INTEGER PRIMARY KEY, format_id INTEGER, type TEXT, year INTEGER, "
        "location TEXT)"
    )
    conn.executemany(
        "INSERT INTO Medal VALUES (?, ?, ?, ?, ?)",
        [
            (
                i,
                i % 50,
                rng.choice(["MedalGold", "MedalSilver", "MedalBronze"]),
                1950 + i % 70,
                rng.choice(["Paris", "Tokyo", "Rome", "Oslo"]),
            )
            for i in range(rows)
        ],
    )
    conn.commit()
    conn.close()


SMALL_QUERIES = [  # (database, sql)
    ("infobox", "SELECT name FROM Athlete"),
    ("infobox", "SELECT birth_year FROM PersonalInformation WHERE athlete_id = 1"),
    ("infobox", "SELECT COUNT(*) FROM Medal WHERE type = 'MedalGold'"),
    ("infobox", "SELECT MIN(year) FROM Medal WHERE location = 'Paris'"),
    (
        "infobox",
        "SELECT DISTINCT T.name FROM Tournament T JOIN Format F ON F.tournament_id = T.tournament_id "
        "JOIN Medal M ON M.format_id = F.format_id WHERE M.type = 'MedalGold' AND M.year > 2005",
    ),
    ("infobox", "SELECT year, location FROM Medal ORDER BY year"),
    ("medal", "SELECT type FROM Medal WHERE medal_id = 17"),
    ("medal", "SELECT type, COUNT(*) FROM Medal GROUP BY type"),
]


def best_of(fn, number: int, repeats: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            fn()
        best = min(best, (clock() - start) / number)
    return best


def bench_ratio(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dbs = {
            "infobox": os.path.join(tmp, "infobox.sqlite"),
            "medal": os.path.join(tmp, "medal.sqlite"),
        }
        build_infobox_db(dbs["infobox"])
        build_medal_db(dbs["medal"])
        executor = Executor()
        trusting = Executor(revalidate=False)
        plain = {k: sqlite3.connect(v) for k, v in dbs.items()}
        same = {k: _open(v, (), executor.config) for k, v in dbs.items()}
        for entry in same.values():
            entry.deadline = float("inf")
        print(
            f"{'query':<62} {'executor':>9} {'no_stat':>9} {'raw':>9} {'raw_same':>9} {'ratio':>6} "
            f"{'ratio_same':>10} {'no_stat/same':>12}"
        )
        totals = [0.0, 0.0, 0.0, 0.0]
        for db, sql in SMALL_QUERIES:
            path = dbs[db]
            assert executor.execute(path, sql).ok
            raw_conn, same_conn = plain[db], same[db].conn
            clock = time.process_time if args.cpu else time.perf_counter
            t_ex = best_of(lambda: executor.execute(path, sql), args.number, args.repeats, clock)
            t_raw = best_of(
                lambda: raw_conn.execute(sql).fetchall(), args.number, args.repeats, clock
            )
            t_same = best_of(
                lambda: same_conn.execute(sql).fetchall(), args.number, args.repeats, clock
            )
            t_trust = best_of(lambda: trusting.execute(path, sql), args.number, args.repeats, clock)
            times = (t_ex, t_trust, t_raw, t_same)
            totals = [a + b for a, b in zip(totals, times)]
            print(
                f"{(db + ': ' + sql)[:62]:<62} "
                + " ".join(f"{t * 1e6:8.1f}u" for t in times)
                + f" {t_ex / t_raw:6.2f} {t_ex / t_same:10.2f} {t_trust / t_same:12.2f}"
            )
        print(
            f"{'TOTAL (sum of per-query times)':<62} "
            + " ".join(f"{t * 1e6:8.1f}u" for t in totals)
            + f" {totals[0] / totals[2]:6.2f} {totals[0] / totals[3]:10.2f} {totals[1] / totals[3]:12.2f}"
        )
        executor.close()
        trusting.close()


def machine_capacity(seconds_of_work: float = 0.3) -> float:
    """Wall-time speed-up two processes get right now on a fixed pure-CPU job: the ceiling for any pool."""
    import subprocess

    code = (
        "import time\nt=time.process_time()\nwhile time.process_time()-t<%r: pass" % seconds_of_work
    )

    def run(n: int) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-S", "-c", code]) for _ in range(n)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - start

    one, two = min(run(1) for _ in range(2)), min(run(2) for _ in range(2))
    return 2 * one / two


def bench_group(args) -> None:
    heavy = [
        f"SELECT COUNT(*) FROM Medal a JOIN Medal b ON a.year = b.year + {k} WHERE a.type <> b.type"
        for k in range(8)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "medal.sqlite")
        build_medal_db(path, rows=args.rows)
        with Executor(ExecutorConfig(timeout=30.0)) as executor:
            one = best_of(lambda: executor.execute(path, heavy[0]), 1, 3)
            print(f"one heavy query: {one * 1e3:.1f} ms; group of {len(heavy)}")
            assert all(
                r.ok for r in executor.execute_group(path, heavy, workers=2)
            )  # warm the pool
            serial = best_of(lambda: executor.execute_group(path, heavy), 1, args.repeats)
            pooled = best_of(
                lambda: executor.execute_group(path, heavy, workers=2), 1, args.repeats
            )
            check = executor.execute_group(path, heavy, workers=2)
            assert [r.rows for r in check] == [r.rows for r in executor.execute_group(path, heavy)]
        print(
            f"serial (workers=0): {serial * 1e3:.1f} ms   workers=2: {pooled * 1e3:.1f} ms   "
            f"speed-up: {serial / pooled:.2f}x   (os.cpu_count()={os.cpu_count()})"
        )
        print(
            f"machine capacity now: two CPU-bound processes run {machine_capacity():.2f}x as fast as one "
            f"(the ceiling for any 2-worker speed-up; 2.00 on an idle 2-core machine)"
        )


HEAVY_QUERIES = [  # (label, sql) on the 3,000-row medal database: each runs far past any budget
    (
        "runaway recursive CTE",
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r",
    ),
    ("cartesian product, COUNT(*)", "SELECT COUNT(*) FROM Medal a, Medal b, Medal c"),
    (
        "cartesian product, filtered",
        "SELECT COUNT(*) FROM Medal a, Medal b, Medal c WHERE a.year + b.year > c.year + 1950 "
        "AND a.location <> c.location",
    ),
    (
        "cartesian product, GROUP BY",
        "SELECT a.location, b.type, COUNT(*) FROM Medal a, Medal b, Medal c GROUP BY 1, 2",
    ),
    (
        "cartesian product, GROUP BY year",
        "SELECT a.year, COUNT(*) FROM Medal a, Medal b, Medal c GROUP BY 1",
    ),
    (
        "cartesian product, ORDER BY",
        "SELECT a.type FROM Medal a, Medal b, Medal c ORDER BY random() LIMIT 1",
    ),
]


def count_instructions(path: str, sql: str) -> int:
    """The exact number of VM instructions `sql` runs (a progress handler called at every instruction)."""
    entry = _open(path, (), ExecutorConfig())
    calls = [0]

    def count() -> bool:
        calls[0] += 1
        return False

    entry.conn.set_progress_handler(count, 1)
    try:
        entry.conn.execute(sql).fetchall()
    finally:
        entry.conn.close()
    return calls[0]


def bench_instructions(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dbs = {
            "infobox": os.path.join(tmp, "infobox.sqlite"),
            "medal": os.path.join(tmp, "medal.sqlite"),
        }
        build_infobox_db(dbs["infobox"])
        build_medal_db(dbs["medal"])
        budget = args.budget
        print(
            f"SQLite {sqlite3.sqlite_version}, max_instructions={budget:,}, best of {args.repeats}"
        )
        rates = []
        with Executor(ExecutorConfig(timeout=60.0, max_instructions=budget)) as executor:
            for label, sql in HEAVY_QUERIES:
                best = float("inf")
                for _ in range(args.repeats):
                    result = executor.execute(dbs["medal"], sql)
                    assert result.error == "timeout" and "instruction" in result.message, result
                    best = min(best, result.elapsed)
                rates.append(budget / best)
                print(f"  {label:<32} {best:7.3f} s   {budget / best / 1e6:7.1f} M instructions/s")
        print(
            f"range {min(rates) / 1e6:.0f} to {max(rates) / 1e6:.0f} M instructions/s: a 1 s wall budget is "
            f"{min(rates) / 1e6:.0f}M to {max(rates) / 1e6:.0f}M instructions on this machine"
        )
        print("everyday queries (exact instruction counts):")
        for db, sql in SMALL_QUERIES:
            print(f"  {count_instructions(dbs[db], sql):>9,}  {(db + ': ' + sql)[:80]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["ratio", "group", "instructions"])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing (ratio)")
    parser.add_argument("--repeats", type=int, default=5, help="timings; the best is kept")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time with process_time (CPU time: steadier on a loaded machine) instead of wall time",
    )
    parser.add_argument("--rows", type=int, default=3000, help="Medal rows (group)")
    parser.add_argument(
        "--budget", type=int, default=100_000_000, help="max_instructions (instructions)"
    )
    args = parser.parse_args()
    {"ratio": bench_ratio, "group": bench_group, "instructions": bench_instructions}[args.what](args)


if __name__ == "__main__":
    main()
