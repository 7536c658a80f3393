"""The sqlenv command line: list datasets, show a question, run SQL against it, play a demo.

    python -m sqlenv datasets
    python -m sqlenv show --dataset temptabqa-c --split dev --index 3 --data-dir ../shared/data/temptabqa-c
    python -m sqlenv run "SELECT COUNT(*) FROM Medal" --index 3
    python -m sqlenv run "SELECT 0" --literal-answers unanswered --max-instructions 100000000 --timeout 10
    python -m sqlenv demo

The env settings (--dataset ... --literal-answers) are those of ``sqlenv.spec.EnvSpec``, with its defaults.
"""

from __future__ import annotations

import argparse
import sys

from sqlenv.datasets import DatasetError, available_datasets
from sqlenv.infobox import SCHEMAS
from sqlenv.literal import LITERAL_ANSWERS
from sqlenv.rewards import preset_help
from sqlenv.spec import EnvSpec, default


def _env_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=default("dataset"), help="dataset name (see `python -m sqlenv datasets`)")
    parser.add_argument("--split", default=None, help="split name (default: the dataset's first split)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $SQLENV_DATA_DIR)")
    parser.add_argument("--schema", default=default("schema"), choices=list(SCHEMAS),
                        help="the benchmark's five tables, or one denormalised table")
    parser.add_argument("--reward", default=default("reward"), help=f"reward preset: {preset_help()}")
    parser.add_argument("--sample-rows", type=int, default=default("sample_rows"),
                        help="sample rows per table in the observation")
    parser.add_argument("--column-values", type=int, default=default("column_values"),
                        help="most frequent text values listed per column under each table (default: "
                             f"{default('column_values')}, none)")
    parser.add_argument("--timeout", type=float, default=default("timeout"),
                        help=f"wall-clock seconds a query may run (default: {default('timeout')})")
    parser.add_argument("--max-instructions", type=int, default=default("max_instructions"),
                        help="SQLite VM instructions a query may run, the same on every machine (default: none, "
                             "wall clock only)")
    parser.add_argument("--literal-answers", default=default("literal_answers"), choices=list(LITERAL_ANSWERS),
                        help="an answer that reads no table (SELECT '16'): score it like any other, or as no "
                             f"answer, error 'literal' (default: {default('literal_answers')})")
    parser.add_argument("--index", type=int, default=0, help="question index in the split")


def _make_env(args):
    spec = EnvSpec(dataset=args.dataset, split=args.split, data_dir=args.data_dir, schema=args.schema,
                   sample_rows=args.sample_rows, column_values=args.column_values, reward=args.reward,
                   timeout=args.timeout,
                   max_instructions=args.max_instructions, literal_answers=args.literal_answers)
    return spec.make(render_mode="ansi")


def cmd_datasets(args) -> int:
    for name, splits in available_datasets().items():
        print(f"{name}: {', '.join(splits)}")
    return 0


def cmd_show(args) -> int:
    env = _make_env(args)
    obs, info = env.reset(options={"index": args.index})
    example = env.example(args.index)
    print(f"# {example.id}  type={example.question_type}  difficulty={example.difficulty}")
    print(f"Question: {obs['question']}")
    print(f"Gold answer: {example.answer}")
    if example.gold_sql:
        print(f"Gold SQL:\n{example.gold_sql}")
    print(f"\nSchema:\n{obs['schema']}")
    if obs["sample_rows"]:
        print(f"\nSample rows:\n{obs['sample_rows']}")
    return 0


def cmd_run(args) -> int:
    env = _make_env(args)
    env.reset(options={"index": args.index})
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    _, reward, _, _, info = env.step(sql)
    print(env.render(), end="")
    return 0 if info["error"] is None else 1


def cmd_demo(args) -> int:
    """Play gold, wrong and failing queries through the env and print their rewards."""
    env = _make_env(args)
    for index in range(min(args.questions, len(env.dataset))):
        example = env.dataset[index]
        plays = [("gold", example.gold_sql)] if example.gold_sql else []
        plays += [("wrong", "SELECT 'no idea'"), ("failing", "SELECT nothing FROM NoSuchTable"),
                  ("forbidden", "DROP TABLE Medal")]
        for label, sql in plays:
            env.reset(options={"index": index})
            _, reward, _, _, info = env.step(sql)
            print(f"[{index}] {label:9s} reward={reward:+g} error={info['error']} correct={info['correct']}")
            if label == "gold":
                print(env.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlenv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("datasets", help="list datasets and their splits").set_defaults(func=cmd_datasets)
    show = sub.add_parser("show", help="show a question with its schema and gold answer")
    _env_args(show)
    show.set_defaults(func=cmd_show)
    run = sub.add_parser("run", help="run a SQL string against a question; print result and reward")
    run.add_argument("sql", help="the SQL to run ('-' reads it from standard input)")
    _env_args(run)
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="play gold and wrong queries through the env and print rewards")
    _env_args(demo)
    demo.add_argument("--questions", type=int, default=3, help="how many questions to play")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
