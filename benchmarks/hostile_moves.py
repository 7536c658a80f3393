"""Hostile moves against TextToSQLAgent-v0: how long a move takes to answer, and what one
exploration result or answer of large blobs costs (issue 21).

    .venv/bin/python benchmarks/hostile_moves.py parse   # seconds per move size and shape
    .venv/bin/python benchmarks/hostile_moves.py blobs   # the blob attack: time, peak memory, sizes

``parse`` times ``env.step`` (parse, echo and answer) for moves of 1 KB to 1 MB; once a shape takes
longer than ``--give-up`` seconds its larger sizes are skipped. ``blobs`` runs, in a fresh process
per case, one exploration of a row of 79 ``zeroblob(99000)`` columns plus 19 small rows (7.8 MB,
under ``max_bytes``) and one answer of 79 blobs, and prints the wall time, the growth of the
process' peak memory (``ru_maxrss``), the exploration time the episode counted and the sizes of
what came back.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = [1_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
SHAPES = {
    "<sql>*n": "<sql>",
    "<sql></sql>*n": "<sql></sql>",
    "<answer>*n": "<answer>",
    "<SQL>x*n": "<SQL>x",
    "mixed": "<sql>a</answer><ANSWER> </sql>x<",
    "<sql></answer>*n": "<sql></answer>",
}
BLOB_COLUMNS, BLOB_BYTES, SMALL_ROWS = 79, 99_000, 19


def _env():
    import gymnasium as gym

    import sqlenv

    env = gym.make(sqlenv.AGENT_ENV_ID, split="dev", max_turns=1_000_000)
    env.reset(options={"index": 0})
    return env


def time_moves(give_up: float, shapes: list[str]) -> None:
    env = _env()
    print(f"{'shape':<18}{'chars':>10}{'seconds':>10}  move error")
    for shape in shapes:
        unit = SHAPES[shape]
        slow = False
        for size in SIZES:
            if slow:
                print(f"{shape:<18}{size:>10}{'skipped':>10}")
                continue
            move = (unit * (size // len(unit) + 1))[:size]
            start = time.perf_counter()
            *_, info = env.step(move)
            seconds = time.perf_counter() - start
            slow = seconds > give_up
            print(f"{shape:<18}{size:>10}{seconds:>10.4f}  {info['move_errors'][-1]}", flush=True)
    env.close()


def blob_query() -> str:
    blobs = ", ".join(f"zeroblob({BLOB_BYTES}) AS c{i}" for i in range(BLOB_COLUMNS))
    small = " UNION ALL ".join("SELECT " + ", ".join(str(r) for _ in range(BLOB_COLUMNS))
                               for r in range(SMALL_ROWS))
    return f"SELECT {blobs} UNION ALL {small}"


def blob_case(case: str) -> dict:
    """One case in this process: the numbers ``blobs`` prints."""
    env = _env()
    agent = env.unwrapped
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if case == "explore":
        *_, info = env.step(f"<sql>{blob_query()}</sql>")
    else:
        answer = "SELECT " + ", ".join(f"zeroblob({BLOB_BYTES})" for _ in range(BLOB_COLUMNS))
        *_, info = env.step(f"<answer>{answer}</answer>")
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"case": case, "seconds": round(seconds, 3), "peak_growth_mb": round(grown, 1),
            "explore_spent": round(agent._explore_spent, 3), "result_chars": len(info["result"]),
            "prediction_chars": len(info.get("prediction", "")),
            "info_json_bytes": len(json.dumps(info, default=str)),
            "move_error": info["move_errors"][-1]}


def blobs() -> None:
    for case in ("explore", "answer"):
        done = subprocess.run([sys.executable, __file__, "blob-case", case], capture_output=True,
                              text=True, timeout=600)
        print(done.stdout.strip() or done.stderr[-2000:], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["parse", "blobs", "blob-case"])
    parser.add_argument("case", nargs="?", default="explore")
    parser.add_argument("--give-up", type=float, default=3.0,
                        help="seconds after which a shape's larger sizes are skipped")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    args = parser.parse_args()
    if args.what == "parse":
        time_moves(args.give_up, args.shapes)
    elif args.what == "blobs":
        blobs()
    else:
        print(json.dumps(blob_case(args.case)))


if __name__ == "__main__":
    main()
