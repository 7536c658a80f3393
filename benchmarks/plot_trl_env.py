"""Reward and tool calls per step of an ``examples/trl_environment.py`` run, from its ``rollouts.jsonl``.

    python benchmarks/plot_trl_env.py /tmp/run/rollouts.jsonl --png docs/img/trl_env_qwen.png

Each line of ``rollouts.jsonl`` is one rollout (``SQLEnvReward(rollout_log=...)``); ``call`` numbers the
reward calls, one per generation batch (one per optimizer step with the example's settings). Prints a
table per step (mean reward, rollouts with a tool call, mean run_sql and submit_answer calls, answers
submitted, correct) and, with ``--png``, plots the mean reward and the mean tool calls per rollout.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def per_step(path: str | Path) -> list[dict]:
    """One row per reward call: means over its rollouts."""
    calls: dict[int, list[dict]] = defaultdict(list)
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number} is not a JSON line: {exc}") from exc
        calls[row["call"]].append(row)
    rows = []
    for call in sorted(calls):
        rollouts = calls[call]
        n = len(rollouts)
        rows.append({
            "step": call,
            "rollouts": n,
            "reward": sum(r["reward"] for r in rollouts) / n,
            "with_tool_call": sum(sum(r["tool_calls"].values()) > 0 for r in rollouts) / n,
            "run_sql": sum(r["tool_calls"].get("run_sql", 0) for r in rollouts) / n,
            "submit_answer": sum(r["tool_calls"].get("submit_answer", 0) for r in rollouts) / n,
            "submitted": sum(bool(r["submitted"]) for r in rollouts) / n,
            "correct": sum(bool(r["correct"]) for r in rollouts) / n,
        })
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python benchmarks/plot_trl_env.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("rollouts", help="rollouts.jsonl of a run (in its --output-dir)")
    parser.add_argument("--png", help="write the plot here (needs matplotlib)")
    parser.add_argument("--title", default="TRL environment_factory run", help="plot title")
    args = parser.parse_args(argv)
    rows = per_step(args.rollouts)
    keys = ["step", "rollouts", "reward", "with_tool_call", "run_sql", "submit_answer", "submitted", "correct"]
    print(" ".join(f"{k:>14}" for k in keys))
    for row in rows:
        print(" ".join(f"{row[k]:>14}" if isinstance(row[k], int) else f"{row[k]:>14.3f}" for k in keys))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in rows]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
        top.plot(steps, [r["reward"] for r in rows], marker="o", label="mean reward")
        top.plot(steps, [r["correct"] for r in rows], marker="x", linestyle=":", label="correct share")
        top.set_ylabel("per step")
        top.legend()
        top.set_title(args.title)
        bottom.plot(steps, [r["run_sql"] for r in rows], marker="o", label="run_sql calls / rollout")
        bottom.plot(steps, [r["submit_answer"] for r in rows], marker="s", label="submit_answer calls / rollout")
        bottom.set_xlabel("step (reward call)")
        bottom.legend()
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=110)
    return rows


if __name__ == "__main__":
    main()
