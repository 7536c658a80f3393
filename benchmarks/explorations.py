"""What a multi-turn evaluation's explorations found, for results written by ``benchmarks/evaluate.py --max-turns N``.

    python benchmarks/explorations.py RESULT.json [RESULT.json ...] [--data-dir DIR] [--out DIR]

Each exploration that ran is scored as if it had been submitted (``TextToSQLAgentEnv.score_explorations``: the
env's ``score_sqls`` for that question, on the env the result names), and the report prints, per result:
episodes where an exploration was a right answer, those of them answered wrong (found, then lost), answers
that resubmit an exploration, and episodes where an exploration's result was a floor answer (0, empty, None)
and those of them answered with a wrong floor all the same; then whether episodes explore a second time,
and after what (:func:`second_looks`: exploring twice, the second a repeat, after a floor or not), and the
episodes whose floor exploration got filter hints (or would have, without ``--filter-hints``). Results
from ``evaluate.py`` since this was added carry these already; this scores older ones too. ``--out DIR``
writes each result again, with the new fields, into DIR (same file names).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evaluate import DATA_DIR_ENV, load_eval_dataset, turn_metrics, turn_table, write_result  # noqa: E402
from sqlenv.datasets import DatasetError  # noqa: E402
from sqlenv.spec import EnvSpec  # noqa: E402

SETTINGS = ("dataset", "schema", "column_values", "reward", "timeout", "max_instructions", "max_turns",
            "literal_answers", "filter_hints")


class ResultError(ValueError):
    """A result file that cannot be rescored (not multi-turn, or not the questions of its dataset)."""


def rescore(result: dict, data_dir: str | None, name: str = "result") -> tuple[dict, int]:
    """``result`` with each record's ``explore_correct`` / ``explore_floor`` / ``answer_explored`` and the
    multi-turn metrics redone, and the number of its episodes with a floor exploration that filter hints name a
    missing value for (``TextToSQLAgentEnv.hinted_explorations``)."""
    config = result.get("config", {})
    if config.get("max_turns", 1) < 2 or not result.get("records"):
        raise ResultError(f"{name}: not a multi-turn result (config.max_turns {config.get('max_turns', 1)}); "
                          "evaluate with --max-turns N > 1")
    settings = {k: config[k] for k in SETTINGS if k in config}
    dataset = load_eval_dataset(config["dataset"], config["split"], data_dir, config["schema"], gold_sql=False)
    for position, record in enumerate(result["records"]):
        index = record["index"]
        if not 0 <= index < len(dataset) or record.get("question", dataset[index].question) != dataset[index].question:
            raise ResultError(f"{name}: record {position} (index {index}) is not question {index} of "
                              f"{config['dataset']}/{config['split']}; pass the --data-dir it was evaluated on")
    env = EnvSpec(**settings, data_dir=data_dir).make(dataset=dataset)
    try:
        records = [dict(r) for r in result["records"]]
        hinted = 0
        for record in records:
            found = env.unwrapped.score_explorations(
                record["index"], record["moves"], record["move_kinds"], record["move_errors"])
            record.update(explore_correct=found.correct, explore_floor=found.floor,
                          answer_explored=found.answer_explored)
            hinted += any(env.unwrapped.hinted_explorations(record["index"], record["moves"], found.floor))
    finally:
        env.close()
    metrics = dict(result["metrics"], multi_turn=turn_metrics(records, config["max_turns"]))
    return dict(result, records=records, metrics=metrics), hinted


def second_looks(records: list[dict]) -> dict[str, float | int]:
    """Whether an episode explores again, and after what: the share of episodes with two or more explorations
    (``<sql>`` moves) and with a second identical to the first, and, of the episodes that explored, those whose
    first exploration came back a floor (0, empty, None) or not, and how many of each explored again."""
    episodes = len(records)
    twice = repeats = floor_first = floor_again = other_first = other_again = 0
    for record in records:
        moves = record["moves"]
        if isinstance(moves, str):  # evaluate.py writes the moves as their Python repr
            import ast

            moves = ast.literal_eval(moves)
        explored = [i for i, kind in enumerate(record["move_kinds"]) if kind == "sql"]
        if not explored:
            continue
        again = len(explored) > 1
        twice += again
        repeats += again and moves[explored[0]] == moves[explored[1]]
        if record.get("explore_floor", [False] * len(moves))[explored[0]]:
            floor_first, floor_again = floor_first + 1, floor_again + again
        else:
            other_first, other_again = other_first + 1, other_again + again
    share = (lambda n: round(100.0 * n / episodes, 2)) if episodes else (lambda n: 0.0)
    return {"explored_twice_pct": share(twice), "second_repeats_first_pct": share(repeats),
            "first_floor": floor_first, "first_floor_explored_again": floor_again,
            "first_other": other_first, "first_other_explored_again": other_again}


def second_looks_table(looks: dict) -> str:
    """:func:`second_looks` as one Markdown row."""
    return ("| Exploring twice (%) | ... the second repeats the first (%) | First exploration a floor | ... then "
            "explored again | First exploration not a floor | ... then explored again |\n|---|---|---|---|---|---|\n"
            f"| {looks['explored_twice_pct']:.2f} | {looks['second_repeats_first_pct']:.2f} | {looks['first_floor']} "
            f"| {looks['first_floor_explored_again']} | {looks['first_other']} "
            f"| {looks['first_other_explored_again']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/explorations.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="result JSON files of evaluate.py --max-turns N")
    parser.add_argument("--data-dir", default=None, help=f"dataset folder (default: ${DATA_DIR_ENV})")
    parser.add_argument("--out", default=None, help="write each rescored result into this folder")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or os.environ.get(DATA_DIR_ENV)
    for path in args.results:
        try:
            result = json.loads(Path(path).read_text())
            rescored, hinted = rescore(result, data_dir, path)
        except (OSError, json.JSONDecodeError, KeyError, DatasetError, ResultError) as exc:
            parser.error(f"{path}: {exc}" if not isinstance(exc, ResultError) else str(exc))
        print(f"{path} ({len(rescored['records'])} episodes):")
        print(turn_table(rescored["metrics"]["multi_turn"]))
        print(second_looks_table(second_looks(rescored["records"])))
        shown = "got" if rescored["config"].get("filter_hints") else "would have got (with --filter-hints)"
        print(f"Episodes whose floor exploration {shown} a filter hint: {hinted} of {len(rescored['records'])}")
        if args.out:
            json_path, _ = write_result(rescored, args.out, result.get("command"))
            print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
