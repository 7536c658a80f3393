"""Literal answers (issue 23): what the env's table-read check costs, and how often evaluated policies answered
with constants.

    .venv/bin/python benchmarks/literal_check.py cost                       # built-in benchmark, dev split
    .venv/bin/python benchmarks/literal_check.py records docs/runs/*/eval_final/*.json \\
        --data-dir ../shared/data/temptabqa-c

``cost`` plays each question's gold SQL, a literal (``SELECT '<gold answer>'``) and a failing query through
``env.reset`` + ``env.step`` and through ``env.score_sqls`` (a group of 8), with the check of
:mod:`sqlenv.literal` on (as the env runs) and off (``sqlenv.literal.reads_table`` replaced by a function that
answers True without asking SQLite), in interleaved rounds; prints the medians per query and the ratio on/off.
Twice: with the same query texts every round (the executor's statement cache and the check's memory of recent
queries answer) and with a new comment appended each round (every query prepared afresh, as a policy's new
SQL is).

``records`` runs the check over the per-question records of ``benchmarks/evaluate.py`` result files (their SQL
against the databases of their dataset, split and schema) and prints, per file, the share of answers that read
no table, how many of those were right (the reward ``literal_answers="unanswered"`` would take away), and how
many were floor answers (``0``, empty, ``None``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time


def _rounds(variants: dict, repeats: int) -> dict[str, float]:
    """The median seconds of one call of each variant over ``repeats`` interleaved rounds (after a warm-up)."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def cost(args) -> int:
    os.environ.setdefault("SQLENV_CACHE_DIR", tempfile.mkdtemp(prefix="sqlenv-literal-"))
    from sqlenv import literal
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(dataset=args.dataset, split=args.split, data_dir=args.data_dir, schema=args.schema)
    indices = [i for i, ex in enumerate(env.dataset) if ex.gold_sql][: args.questions]
    if not indices:
        print(f"no question of {args.dataset}/{args.split} has gold SQL; use the generated benchmark", file=sys.stderr)
        return 2
    plays = [(i, sql) for i in indices for sql in (env.dataset[i].gold_sql,
                                                     "SELECT '" + env.dataset[i].answer.replace("'", "''") + "'",
                                                     "SELECT nope FROM no_such_table")]
    group = {i: [env.dataset[i].gold_sql] * 4 + ["SELECT 0"] * 4 for i in indices}
    real = literal.reads_table
    rounds = iter(range(1 << 30))

    def skipped(db_path, sql) -> bool:
        return True

    def tag(novel: bool) -> str:  # a novel query text each round: no statement cache nor memo helps
        return f"\n-- round {next(rounds)}" if novel else ""

    def step(novel):
        def run():
            end = tag(novel)
            for i, sql in plays:
                env.reset(options={"index": i})
                env.step(sql + end)
        return run

    def score(novel):
        def run():
            end = tag(novel)
            for i in indices:
                env.score_sqls(i, [sql + end for sql in group[i]])
        return run

    checked = [(env._database(env.dataset[i]).path, sql) for i, sql in plays if "no_such_table" not in sql]

    def check():  # the check alone, on the queries the env runs it for (those that executed), new text
        end = tag(True)
        for path, sql in checked:
            real(path, sql + end)

    def off(fn):
        def run():
            literal.reads_table = skipped
            try:
                fn()
            finally:
                literal.reads_table = real
        return run

    variants = {}
    for novel in (False, True):
        for name, make in (("step", step), ("group", score)):
            variants[(name, novel, True)] = make(novel)
            variants[(name, novel, False)] = off(make(novel))
    variants["check"] = check
    med = _rounds(variants, args.repeats)
    n_step, n_group = len(plays), sum(len(g) for g in group.values())
    print(f"dataset={args.dataset}/{args.split} schema={args.schema} questions={len(indices)} "
          f"repeats={args.repeats} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    print("\n| what | queries | check off (ms/query) | check on (ms/query) | on / off |\n"
          "| --- | --- | ---: | ---: | ---: |")
    for label, name, n in (("env.reset + env.step (gold, literal, failing)", "step", n_step),
                           ("env.score_sqls, group of 8 (4 gold, 4 literal)", "group", n_group)):
        for novel in (False, True):
            on, off_ = med[(name, novel, True)], med[(name, novel, False)]
            kind = "new text each round" if novel else "the same each round"
            print(f"| {label} | {kind} | {off_ / n * 1e3:.3f} | {on / n * 1e3:.3f} | {on / off_:.2f} |")
    print(f"\nthe check alone (sqlenv.literal.reads_table on the gold and literal queries, new text each round): "
          f"{med['check'] / len(checked) * 1e6:.1f} us/query")
    env.close()
    return 0


def records(args) -> int:
    from sqlenv import literal
    from sqlenv.datasets import load_dataset
    from sqlenv.matching import is_floor_answer

    paths = sorted({p for pattern in args.files for p in glob.glob(pattern)})
    if not paths:
        print(f"no result file matches {args.files}", file=sys.stderr)
        return 2
    datasets: dict[tuple, object] = {}
    print("| result file | answers | executed | read no table | of those right | of those floor |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    total = {"n": 0, "executed": 0, "literal": 0, "right": 0, "floor": 0}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        config = result["config"]
        key = (config["dataset"], config["split"], config.get("schema") or "tables")
        if key not in datasets:
            datasets[key] = load_dataset(key[0], split=key[1], data_dir=args.data_dir, schema=key[2])
        dataset = datasets[key]
        counts = {"n": 0, "executed": 0, "literal": 0, "right": 0, "floor": 0}
        for record in result["records"]:
            counts["n"] += 1
            if record["error"] is not None:
                continue
            counts["executed"] += 1
            example = dataset[int(record["index"])]
            if example.id != record.get("id", example.id):
                raise ValueError(f"{path}: record {record['index']} is {record.get('id')!r}, "
                                 f"the dataset's question there is {example.id!r}")
            if not literal.reads_table(dataset.database(example), record["sql"]):
                counts["literal"] += 1
                counts["right"] += bool(record["correct"])
                counts["floor"] += is_floor_answer(record.get("prediction"))
        for name in total:
            total[name] += counts[name]
        print(_row(path, counts))
    if len(paths) > 1:
        print(_row("all", total))
    return 0


def _row(label: str, c: dict) -> str:
    share = 100.0 * c["literal"] / c["n"] if c["n"] else 0.0
    return (f"| {label} | {c['n']} | {c['executed']} | {c['literal']} ({share:.1f}%) | {c['right']} | "
            f"{c['floor']} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cost", help="the check's cost per step, on and off in one run")
    c.add_argument("--dataset", default="generated")
    c.add_argument("--split", default="dev")
    c.add_argument("--data-dir", default=None)
    c.add_argument("--schema", default="tables", choices=["tables", "flat"])
    c.add_argument("--questions", type=int, default=40, help="questions with gold SQL to use")
    c.add_argument("--repeats", type=int, default=9, help="rounds; the median is reported")
    r = sub.add_parser("records", help="the share of literal answers in evaluate.py result files")
    r.add_argument("files", nargs="+", help="result JSON files (globs are expanded)")
    r.add_argument("--data-dir", default=os.environ.get("SQLENV_DATA_DIR"),
                   help="the dataset's files (default: $SQLENV_DATA_DIR)")
    args = parser.parse_args(argv)
    return cost(args) if args.command == "cost" else records(args)


if __name__ == "__main__":
    sys.exit(main())
