"""Environment cost against raw sqlite3, measured side by side in one run.

    .venv/bin/python benchmarks/bench_env.py                          # built-in benchmark
    .venv/bin/python benchmarks/bench_env.py --dataset temptabqa-c --data-dir ../shared/data/temptabqa-c

On the same databases and the same mixed query set (each question's gold SQL, a wrong query, a
failing one), times
  raw      cursor.execute(sql).fetchall() on an already-open sqlite3 connection (no sandbox, no scoring)
  execute  Executor.execute(path, sql): the sandbox alone (authorizer, limits, time budget, caps)
  step     env.reset(options={"index": i}) + env.step(sql): sandboxed execution, matching, reward, info
  score    env.score_sqls(i, [sql]): the same without the episode bookkeeping
  group    score_sqls(i, 8 queries) serial (workers=0) and with 2 worker processes
  build    the database of a context, cold (new cache folder) and cached (in-process dict)
Each figure is the median over --repeats rounds; rounds interleave the variants so that a noisy
shared machine disturbs all of them alike. Prints a Markdown table and the ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _median_time(fn, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="generated")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--schema", default="tables", choices=["tables", "flat"])
    parser.add_argument("--questions", type=int, default=40, help="questions with gold SQL to use")
    parser.add_argument("--repeats", type=int, default=7, help="rounds; the median is reported")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--heavy", action="store_true",
                        help="make the group queries heavy (self-joins) so that parallelism can pay")
    args = parser.parse_args(argv)

    os.environ.setdefault("SQLENV_CACHE_DIR", tempfile.mkdtemp(prefix="sqlenv-bench-"))
    from sqlenv import infobox
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(dataset=args.dataset, split=args.split, data_dir=args.data_dir, schema=args.schema)
    indices = [i for i, ex in enumerate(env.dataset) if ex.gold_sql][: args.questions]
    if not indices:
        print(f"no question of {args.dataset}/{args.split} has gold SQL; use --dataset generated "
              "or --split gold-sql", file=sys.stderr)
        return 2
    plays = []  # (index, path, sql)
    for i in indices:
        ex = env.dataset[i]
        path = str(env.dataset.database(ex))
        for sql in (ex.gold_sql, "SELECT 'wrong answer'", "SELECT nope FROM Medal"):
            plays.append((i, path, sql))
    conns = {p: sqlite3.connect(f"file:{p}?mode=ro", uri=True) for _, p, _ in plays}

    def raw():
        for _, p, sql in plays:
            try:
                conns[p].execute(sql).fetchall()
            except sqlite3.Error:
                pass

    from sqlenv.executor import Executor

    executor = Executor()

    def execute():
        for _, p, sql in plays:
            executor.execute(p, sql)

    def step():
        for i, _, sql in plays:
            env.reset(options={"index": i})
            env.step(sql)

    def score():
        for i, _, sql in plays:
            env.score_sqls(i, [sql])

    heavy = "SELECT COUNT(*) FROM Medal a, Medal b, Medal c WHERE a.year + b.year > c.year"
    group_sqls = {i: ([heavy] if args.heavy else []) + [env.dataset[i].gold_sql] * args.group_size
                  for i in indices}
    group_sqls = {i: s[: args.group_size] for i, s in group_sqls.items()}

    def group(workers):
        def run():
            for i in indices:
                env.score_sqls(i, group_sqls[i], workers=workers)
        return run

    contexts = [env.dataset[i].context for i in indices if env.dataset[i].context]

    def build_cold():
        folder = tempfile.mkdtemp(prefix="sqlenv-cold-")
        for n, ctx in enumerate(contexts):
            infobox.build_database(ctx, os.path.join(folder, f"{n}.sqlite"), schema=args.schema)

    def build_cached():
        for ctx in contexts:
            infobox.database_for_context(ctx, schema=args.schema)

    variants = {"raw": raw, "execute": execute, "step": step, "score": score,
                "group_serial": group(0), "group_2workers": group(2)}
    if contexts:
        variants.update({"build_cold": build_cold, "build_cached": build_cached})
    for fn in variants.values():  # warm: connection caches, worker pool, database cache
        fn()
    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(_median_time(fn, 1))
    med = {k: statistics.median(v) for k, v in times.items()}

    n_q = len(plays)
    n_g = sum(len(s) for s in group_sqls.values())
    rows = [
        ("raw sqlite3 (open connection)", med["raw"] / n_q, n_q / med["raw"], "1.00"),
        ("Executor.execute (sandbox only)", med["execute"] / n_q, n_q / med["execute"],
         f"{med['execute'] / med['raw']:.2f}"),
        ("env.reset + env.step", med["step"] / n_q, n_q / med["step"], f"{med['step'] / med['raw']:.2f}"),
        ("env.score_sqls (1 query)", med["score"] / n_q, n_q / med["score"], f"{med['score'] / med['raw']:.2f}"),
        (f"group of {args.group_size}, serial", med["group_serial"] / n_g, n_g / med["group_serial"], ""),
        (f"group of {args.group_size}, 2 workers", med["group_2workers"] / n_g, n_g / med["group_2workers"], ""),
    ]
    if contexts:
        rows += [("database build, cold", med["build_cold"] / len(contexts), len(contexts) / med["build_cold"], ""),
                 ("database build, cached", med["build_cached"] / len(contexts),
                  len(contexts) / med["build_cached"], "")]
    print(f"dataset={args.dataset}/{args.split} schema={args.schema} questions={len(indices)} "
          f"queries/round={n_q} repeats={args.repeats} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    print("\n| what | median per query (ms) | per second | ratio to raw |\n| --- | ---: | ---: | ---: |")
    for name, per, rate, ratio in rows:
        print(f"| {name} | {per * 1000:.3f} | {rate:,.0f} | {ratio} |")
    speedup = med["group_serial"] / med["group_2workers"]
    print(f"\nexecutor / raw = {med['execute'] / med['raw']:.2f}x; "
          f"env.step / raw = {med['step'] / med['raw']:.2f}x (target <= 1.25x; step adds answer matching)")
    print(f"group: 2 workers vs serial = {speedup:.2f}x (target >= 1.7x on 2 cores)")
    print(f"peak RSS of this process = {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
