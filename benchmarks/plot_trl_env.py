"""Reward and tool calls per step of an ``examples/trl_environment.py`` run, from its ``rollouts.jsonl``.

    python benchmarks/plot_trl_env.py /tmp/run/rollouts.jsonl --png docs/img/trl_env_qwen.png
    python benchmarks/plot_trl_env.py run1/rollouts.jsonl run2/rollouts.jsonl   # run2 went on from run1's adapter

Each line of ``rollouts.jsonl`` is one rollout (``SQLEnvReward(rollout_log=...)``); ``call`` numbers the reward
calls, one per generation batch (one per optimizer step with the example's settings). Prints a table per step (mean
reward, rollouts with a tool call, mean run_sql and submit_answer calls, answers submitted, run, correct, calls
after the episode ended, and the collapse monitors of ``agents.monitors`` over the step's answers: floor answers,
the most frequent query template across questions, queries repeated across questions), then the
same means over blocks of ``--window`` steps (one step's group is often one question, so its mean is mostly that
question's difficulty), with the shares of rollouts that ended without an answer by why
(``sqlenv.integrations.trl_env.no_answer_reason``; per evaluation too), the last block's reward against the
first's with a bootstrap interval over their questions (is the rise more than which questions came up?) and, with
``--png``, plots the mean reward (and its mean over the
last ``--window`` steps) and the mean tool calls per rollout. Rollouts of the held-out questions (``--eval-split``;
environment ``eval``) are not steps: they get a table of their own, one row per evaluation (after ``global_step``
optimizer steps), and their own line; the first and the last evaluation are compared question by question
(``agents.paired``: the difference with its paired-bootstrap interval and McNemar's exact p; the mean reward, with
its paired interval), where each played a question once (``--eval-generations 1``; with ``--eval-temperature 0``
the pairs are the policy's, not one draw's), and with more than two evaluations the last against the one before it
too. Several logs are read as one run, in the order given: each later one went on from the earlier one's adapter
(``--warmup-adapter``), so its steps and evaluations are counted after the earlier one's (with ``--eval-seed``, its
evaluations pair with theirs). A run that skipped the evaluation before its first step (``--no-eval-before``) takes
it from another run of the same start with ``--start-eval``. A log written before its lines carried the answer's
record (the submitted query as run, its result, the question and its gold; 2026-12-07) has NaN monitors unless
``--rescore DATASET`` (with the run's ``--schema``) runs each submitted query again in the env (the query read
from the completion; a result that does not give the logged ``executed`` and ``correct`` is an error naming the
line). ``--against ROLLOUTS`` pairs this run's evaluations with another run's on the same held-out questions, after
each step both evaluated at (two settings from one start, or two ``--eval-only`` runs of saved adapters); mean
rewards are compared only where both were scored under one reward preset.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from sqlenv.integrations.trl_env import ANSWER_RECORD_FIELDS, EVAL_ENVIRONMENT, NO_ANSWER_REASONS, submitted_query

#: The collapse monitors (``agents.monitors``) a table shows, beside the outcome shares.
MONITORS = ("floor", "top_template", "repeated")


def read_rollouts(*paths: str | Path, start: str | Path | None = None, rescore: str | None = None,
                  data_dir: str | None = None, schema: str | None = None) -> list[dict]:
    """The lines of one run's ``rollouts.jsonl`` files, in order, a later file's ``call`` and ``global_step``
    counted on from the earlier ones' (it went on from their adapter); a line that is not JSON is an error
    naming it. ``start``: another run's log whose evaluation before its first step is this run's start (the same
    starting adapter and ``--eval-seed``), read as this run's evaluation before step 1, which it skipped
    (``--no-eval-before``). ``rescore``: the dataset the run played, to fill the answer records of lines logged
    without them (``rescored``, with ``data_dir`` and ``schema``)."""
    rows: list[dict] = []
    calls = steps = 0
    for path in paths:
        rows += [{**row, "call": row["call"] + calls, "global_step": row.get("global_step", 0) + steps}
                 for row in _log(path, rescore, data_dir, schema)]
        calls = max([calls] + [row["call"] for row in rows])
        # optimizer steps taken by the end of this log: after a training call at global_step s, s + 1
        steps = max([steps] + [row["global_step"] + (row.get("environment") != EVAL_ENVIRONMENT) for row in rows])
    if start is None:
        return rows
    if any(row.get("environment") == EVAL_ENVIRONMENT and row["global_step"] == 0 for row in rows):
        raise ValueError(f"{paths[0]} has its own evaluation before step 1; a start evaluation ({start}) is for a "
                         "run that skipped it (--no-eval-before)")
    before = [{**row, "call": 0, "global_step": 0} for row in _log(start, rescore, data_dir, schema)
              if row.get("environment") == EVAL_ENVIRONMENT and row.get("global_step", 0) == 0]
    if not before:
        raise ValueError(f"{start}: no evaluation before the first step to start from (a run with --eval-split and "
                         "its evaluation before training, or an --eval-only run)")
    return before + rows


def _log(path: str | Path, rescore: str | None = None, data_dir: str | None = None,
         schema: str | None = None) -> list[dict]:
    """One ``rollouts.jsonl`` as it is, a line that is not JSON an error naming it (``rescore``: see
    ``rescored``)."""
    return list(_read_log(str(path), Path(path).stat().st_mtime_ns, rescore, data_dir, schema))


@lru_cache(maxsize=8)
def _read_log(path: str, mtime_ns: int, rescore: str | None, data_dir: str | None,
              schema: str | None) -> tuple[dict, ...]:
    """``_log``'s lines, read (and rescored) once per file version: every table reads the run again."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number} is not a JSON line: {exc}") from exc
    return tuple(rescored(rows, rescore, data_dir, schema, where=path) if rescore else rows)


def rescored(rows: list[dict], dataset: str, data_dir: str | None = None, schema: str | None = None,
             where: str = "rollouts") -> list[dict]:
    """``rows`` with the answer record (``ANSWER_RECORD_FIELDS``) of each line that lacks one: its submitted query
    (``submitted_query`` of its completion) run again in a ``TextToSQLEnv`` of ``dataset`` and ``schema`` on the
    line's question. A line whose question is not ``dataset``'s, or whose query now gives another ``executed`` or
    ``correct`` than logged, is an error naming it: the log is not of this dataset and schema (or these files)."""
    from sqlenv.datasets import load_dataset
    from sqlenv.env import TextToSQLEnv

    envs: dict[str, tuple[TextToSQLEnv, dict[str, int]]] = {}
    out = []
    for number, row in enumerate(rows, start=1):
        if all(field in row for field in ANSWER_RECORD_FIELDS):
            out.append(row)
            continue
        if row["split"] not in envs:  # by id: a held-out subset (--eval-limit) numbers its questions anew
            split = load_dataset(dataset, row["split"], data_dir=data_dir, **({"schema": schema} if schema else {}))
            envs[row["split"]] = TextToSQLEnv(split), {example.id: i for i, example in enumerate(split)}
        env, positions = envs[row["split"]]
        if row.get("id") not in positions:
            raise ValueError(f"{where}:{number}: question {row.get('id')!r} is not in {dataset}/{row['split']} "
                             "(--rescore names the dataset the run played)")
        index = positions[row["id"]]
        example = env.dataset[index]
        record = {"dataset": dataset, "question": example.question, "answer": example.answer, "sql": "",
                  "prediction": None, "reads_table": None}
        query = submitted_query(row.get("completion")) if row["submitted"] else None
        if row["submitted"] and query is None:
            raise ValueError(f"{where}:{number}: submitted, but its completion has no submit_answer call")
        if query is not None:
            env.reset(options={"index": index})
            info = env.step(query)[-1]
            if (bool(info["executed"]), bool(info["correct"])) != (bool(row["executed"]), bool(row["correct"])):
                raise ValueError(f"{where}:{number}: {query!r} now gives executed={info['executed']}, "
                                 f"correct={info['correct']}; the log says {row['executed']}, {row['correct']} "
                                 "(--rescore and --schema name the dataset and schema the run played)")
            record.update(sql=info["sql"], prediction=info["prediction"], reads_table=info["reads_table"])
        out.append({**row, **record})
    for env, _ in envs.values():
        env.close()
    return out


def per_step(*paths: str | Path, **read) -> list[dict]:
    """One row per training reward call (step 1, 2, ...): means over its rollouts (``read``: ``read_rollouts``'s
    ``rescore``, ``data_dir`` and ``schema``)."""
    return [{"step": step, **_means(rollouts)} for step, rollouts in enumerate(_training_steps(*paths, **read),
                                                                               start=1)]


def _training_steps(*paths: str | Path, **read) -> list[list[dict]]:
    """The training rollouts grouped by reward call, in call order (one group a step)."""
    calls: dict[int, list[dict]] = defaultdict(list)
    for row in read_rollouts(*paths, **read):
        if row.get("environment") != EVAL_ENVIRONMENT:
            calls[row["call"]].append(row)
    return [calls[call] for call in sorted(calls)]


def per_eval(*paths: str | Path, start: str | Path | None = None, **read) -> list[dict]:
    """One row per held-out evaluation, keyed by the optimizer steps taken before it: means over its rollouts
    (``start``, ``read``: as in ``read_rollouts``)."""
    evals: dict[int, list[dict]] = defaultdict(list)
    for row in read_rollouts(*paths, start=start, **read):
        if row.get("environment") == EVAL_ENVIRONMENT:
            evals[row["global_step"]].append(row)
    return [{"step": step, **_means(evals[step])} for step in sorted(evals)]


def _evaluations(rows: list[dict], where: str) -> dict[int, dict]:
    """Each held-out evaluation of ``rows`` by the steps before it: question ``id`` -> (right, reward, the reward
    preset that scored it: None in a log written before lines named it)."""
    evals: dict[int, dict] = defaultdict(dict)
    for row in rows:
        if row.get("environment") == EVAL_ENVIRONMENT:
            step, question = row["global_step"], row.get("id", row.get("index"))
            if question in evals[step]:
                raise ValueError(f"{where}: the evaluation after step {step} played {question} more than once; "
                                 "pairing needs one rollout a question (--eval-generations 1)")
            evals[step][question] = (bool(row["correct"]), float(row["reward"]), row.get("reward_preset"))
    return evals


def _paired(before: dict, after: dict) -> dict:
    """Two evaluations of the same questions side by side (``_evaluations``' values): right before and after,
    gained, lost, the difference in points with its paired-bootstrap 95 % interval, McNemar's exact p, the mean
    rewards with their paired interval (NaN where the two were scored under other reward presets: ``presets``)."""
    from agents.paired import mcnemar_exact, paired_bootstrap

    ids = sorted(before)
    right_before, right_after = [before[i][0] for i in ids], [after[i][0] for i in ids]
    reward_before, reward_after = [before[i][1] for i in ids], [after[i][1] for i in ids]
    presets = tuple(sorted({str(e[i][2]) for i in ids}) for e in (before, after))
    low, high = paired_bootstrap(right_before, right_after)
    gained = sum(b and not a for a, b in zip(right_before, right_after))
    lost = sum(a and not b for a, b in zip(right_before, right_after))
    out = {"questions": len(ids), "right_before": sum(right_before), "right_after": sum(right_after),
           "gained": gained, "lost": lost, "diff": 100 * (sum(right_after) - sum(right_before)) / len(ids),
           "ci": (low, high), "p": mcnemar_exact(lost, gained), "presets": presets}
    known = "None" not in presets[0] + presets[1]
    if known and presets[0] != presets[1]:  # rewards of two presets are not on one scale
        nan = float("nan")
        return {**out, "reward_before": nan, "reward_after": nan, "reward_ci": (nan, nan)}
    reward_low, reward_high = (x / 100 for x in paired_bootstrap(reward_before, reward_after))  # points -> reward
    return {**out, "reward_before": sum(reward_before) / len(ids), "reward_after": sum(reward_after) / len(ids),
            "reward_ci": (reward_low, reward_high)}


def paired_evals(*paths: str | Path, first: int | None = None, last: int | None = None,
                 start: str | Path | None = None, **read) -> dict | None:
    """Two held-out evaluations side by side by question ``id``, those after ``first`` and ``last`` steps (by
    default the first and the last): right before, right after, gained, lost, the difference in points with its
    paired-bootstrap 95 % interval and McNemar's exact p. None with fewer than two evaluations; an evaluation
    that played a question more than once, or other questions than the other, is an error naming the step.
    ``start``, ``read``: as in ``read_rollouts``."""
    where = ", ".join(str(p) for p in paths)
    evals = _evaluations(read_rollouts(*paths, start=start, **read), where)
    if len(evals) < 2:
        return None
    first, last = min(evals) if first is None else first, max(evals) if last is None else last
    for step in (first, last):
        if step not in evals:
            raise ValueError(f"{where}: no evaluation after step {step} (there are after {sorted(evals)})")
    if set(evals[first]) != set(evals[last]):
        raise ValueError(f"{where}: the evaluations after steps {first} and {last} played other questions")
    return {"first_step": first, "last_step": last, **_paired(evals[first], evals[last])}


def paired_runs(paths: Sequence[str | Path], against: Sequence[str | Path], **read) -> list[dict]:
    """This run's held-out evaluations (``paths``) against another run's (``against``: the same held-out questions,
    ``--eval-limit`` and ``--eval-seed``) after each step both evaluated at, by question: ``right_before`` is the
    other run's, ``right_after`` this one's (``_paired``'s figures, plus ``step``). Other questions at a step, or no
    step in common, is an error naming both."""
    where, other = ", ".join(str(p) for p in paths), ", ".join(str(p) for p in against)
    mine = _evaluations(read_rollouts(*paths, **read), where)
    theirs = _evaluations(read_rollouts(*against, **read), other)
    steps = sorted(set(mine) & set(theirs))
    if not steps:
        raise ValueError(f"{where} (evaluations after steps {sorted(mine)}) and {other} (after {sorted(theirs)}) "
                         "have no evaluation after the same step")
    for step in steps:
        if set(mine[step]) != set(theirs[step]):
            raise ValueError(f"{where} and {other} played other held-out questions after step {step} (the runs' "
                             "--eval-split, --eval-limit and --eval-seed must be the same)")
    return [{"step": step, **_paired(theirs[step], mine[step])} for step in steps]


def per_window(*paths: str | Path, window: int = 5, **read) -> list[dict]:
    """The training steps in blocks of ``window`` (1-5, 6-10, ...; the last may be shorter): means over the
    block's rollouts, with its ``first`` and ``last`` step; the monitors are the means of the steps' own (a query
    repeated in another step is no repeat)."""
    steps = _training_steps(*paths, **read)
    monitors = [_monitors(step) for step in steps]
    blocks = []
    for start in range(0, len(steps), window):
        block = slice(start, start + window)
        blocks.append({"first": start + 1, "last": min(start + window, len(steps)),
                       **_outcomes([r for step in steps[block] for r in step]),
                       **{name: sum(m[name] for m in monitors[block]) / len(monitors[block]) for name in MONITORS}})
    return blocks


def reward_trend(*paths: str | Path, window: int = 5, **read) -> dict | None:
    """The training reward of the last block of ``window`` steps against the first block's (``per_window``'s
    blocks): each block's questions (one group of rollouts of a question in a step) as the units, the difference of
    their mean rewards with a bootstrap 95 % interval that resamples each block's questions (other questions in
    each, so unpaired). None with fewer than two blocks."""
    from agents.paired import bootstrap_difference

    steps = _training_steps(*paths, **read)
    if len(steps) <= window:
        return None
    last_start = (len(steps) - 1) // window * window  # per_window's last block
    first, last = _question_rewards(steps[:window]), _question_rewards(steps[last_start:])
    before, after = sum(first) / len(first), sum(last) / len(last)
    return {"first": (1, window), "last": (last_start + 1, len(steps)), "questions": (len(first), len(last)),
            "reward": (before, after), "diff": after - before, "ci": bootstrap_difference(first, last)}


def _question_rewards(steps: list[list[dict]]) -> list[float]:
    """The mean reward of each question's group of rollouts in each of ``steps``."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for number, step in enumerate(steps):
        for row in step:
            groups[number, row.get("id", row.get("index"))].append(row["reward"])
    return [sum(rewards) / len(rewards) for rewards in groups.values()]


def _means(rollouts: list[dict]) -> dict:
    """The outcome shares and the collapse monitors of ``rollouts``."""
    return {**_outcomes(rollouts), **_monitors(rollouts)}


def _outcomes(rollouts: list[dict]) -> dict:
    n = len(rollouts)
    return {
        "rollouts": n,
        "reward": sum(r["reward"] for r in rollouts) / n,
        "with_tool_call": sum(sum(r["tool_calls"].values()) > 0 for r in rollouts) / n,
        "run_sql": sum(r["tool_calls"].get("run_sql", 0) for r in rollouts) / n,
        "submit_answer": sum(r["tool_calls"].get("submit_answer", 0) for r in rollouts) / n,
        "submitted": sum(bool(r["submitted"]) for r in rollouts) / n,
        "executed": sum(bool(r["executed"]) for r in rollouts) / n,
        "correct": sum(bool(r["correct"]) for r in rollouts) / n,
        # tool calls after the episode ended (logged since 2026-12-07; NaN for an older log)
        "after_end": (sum(r["calls_after_end"] for r in rollouts) / n
                      if all("calls_after_end" in r for r in rollouts) else float("nan")),
        # why rollouts ended without an answer, as shares of all (NaN for a log written before they were logged)
        **{f"no_answer_{reason}": (sum(r["no_answer"] == reason for r in rollouts) / n
                                   if all("no_answer" in r for r in rollouts) else float("nan"))
           for reason in NO_ANSWER_REASONS},
    }


def _no_answer_text(means: dict) -> str:
    """The shares of rollouts without an answer by reason (``_outcomes``), as a phrase."""
    return ", ".join(f"{reason} {means[f'no_answer_{reason}']:.3f}" for reason in NO_ANSWER_REASONS)


def _monitors(rollouts: list[dict]) -> dict:
    """``agents.monitors.collapse_monitors`` of the rollouts' answers (``MONITORS`` and ``top_template_sql``);
    NaN where a line carries no answer record (an older log not ``--rescore``d)."""
    from agents.monitors import collapse_monitors

    if not all("sql" in r for r in rollouts):
        return {**{name: float("nan") for name in MONITORS}, "top_template_sql": ""}
    found = collapse_monitors(rollouts)
    return {**{name: found[name] for name in MONITORS}, "top_template_sql": found["top_template_sql"]}


def _pair_text(paired: dict) -> str:
    from agents.paired import format_p

    right = (f"right {paired['right_before']} -> {paired['right_after']}, gained {paired['gained']}, lost "
             f"{paired['lost']}, {paired['diff']:+.2f} points ({paired['ci'][0]:+.1f} to {paired['ci'][1]:+.1f}), "
             f"McNemar p = {format_p(paired['p'])}")
    if paired["reward_before"] != paired["reward_before"]:  # NaN: two presets
        before, after = ("/".join(p) for p in paired["presets"])
        return f"{right}; mean reward not compared (scored under {before} and {after})"
    return (f"{right}; mean reward {paired['reward_before']:.3f} -> {paired['reward_after']:.3f} "
            f"({paired['reward_ci'][0]:+.3f} to {paired['reward_ci'][1]:+.3f})")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python benchmarks/plot_trl_env.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("rollouts", nargs="+",
                        help="rollouts.jsonl of a run (in its --output-dir); more than one: a run and the runs that "
                             "went on from its adapter, in order")
    parser.add_argument("--start-eval", metavar="ROLLOUTS",
                        help="rollouts.jsonl of another run from the same adapter with the same --eval-seed: its "
                             "evaluation before training is this run's (which skipped it with --no-eval-before)")
    parser.add_argument("--against", metavar="ROLLOUTS", nargs="+",
                        help="rollouts.jsonl of another run evaluated on the same held-out questions (--eval-split, "
                             "--eval-limit, --eval-seed): this run's evaluations against its own after each step "
                             "both evaluated at, question by question (an --eval-only run's is after step 0)")
    parser.add_argument("--rescore", metavar="DATASET",
                        help="the dataset the run played (e.g. temptabqa-c): fill the answer records of a log written "
                             "without them by running each submitted query again, for the collapse monitors")
    parser.add_argument("--data-dir", help="the dataset's files, with --rescore (default: as load_dataset finds them, "
                                           "e.g. SQLENV_DATA_DIR)")
    parser.add_argument("--schema", help="the run's --schema, with --rescore (default: the env's)")
    parser.add_argument("--png", help="write the plot here (needs matplotlib)")
    parser.add_argument("--title", default="TRL environment_factory run", help="plot title")
    parser.add_argument("--window", type=int, default=5, help="training steps per block of the block means, and "
                                                                 "of the plot's running mean")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window {args.window}: must be >= 1")
    for path in [*args.rollouts, *([args.start_eval] if args.start_eval else []), *(args.against or [])]:
        if not Path(path).is_file():
            parser.error(f"{path}: no such file (pass the rollouts.jsonl in a run's --output-dir)")
    try:
        read = {"rescore": args.rescore, "data_dir": args.data_dir, "schema": args.schema}
        rows, evals = per_step(*args.rollouts, **read), per_eval(*args.rollouts, start=args.start_eval, **read)
        comparisons = [(None, None)] + ([(evals[-2]["step"], None)] if len(evals) > 2 else [])
        pairs = [paired_evals(*args.rollouts, first=first, last=last, start=args.start_eval, **read)
                 for first, last in comparisons]
        blocks = per_window(*args.rollouts, window=args.window, **read)
        runs = paired_runs(args.rollouts, args.against, **read) if args.against else []
    except ValueError as exc:
        parser.error(str(exc))
    keys = ["step", "rollouts", "reward", "with_tool_call", "run_sql", "submit_answer", "submitted", "executed",
            "correct", "after_end", *MONITORS]
    for title, table in (("training", rows), ("held-out evaluations (after step)", evals)):
        if not table:
            continue
        print(title)
        print(" ".join(f"{k:>14}" for k in keys))
        for row in table:
            print(" ".join(f"{row[k]:>14}" if isinstance(row[k], int) else f"{row[k]:>14.3f}" for k in keys))
    for row in evals:
        if row["top_template_sql"]:
            print(f"most frequent template after step {row['step']} ({row['top_template']:.3f} of the answers): "
                  f"{row['top_template_sql']}")
    for block in blocks:
        print(f"training steps {block['first']}-{block['last']}: {block['rollouts']} rollouts, mean reward "
              f"{block['reward']:.3f}, submitted {block['submitted']:.3f}, ran {block['executed']:.3f}, correct "
              f"{block['correct']:.3f}, run_sql calls a rollout {block['run_sql']:.3f}, calls after the end "
              f"{block['after_end']:.3f}, floor answers {block['floor']:.3f}, top template "
              f"{block['top_template']:.3f}, repeated {block['repeated']:.3f}; without an answer: "
              f"{_no_answer_text(block)}")
    for row in evals:
        print(f"held-out after step {row['step']}, without an answer: {_no_answer_text(row)}")
    trend = reward_trend(*args.rollouts, window=args.window, **read)
    if trend:
        (a, b), (c, d) = trend["first"], trend["last"]
        print(f"training reward, steps {c}-{d} against steps {a}-{b} ({trend['questions'][1]} and "
              f"{trend['questions'][0]} questions): {trend['reward'][0]:.3f} -> {trend['reward'][1]:.3f}, "
              f"{trend['diff']:+.3f} (95 % CI {trend['ci'][0]:+.3f} to {trend['ci'][1]:+.3f})")
    for paired in pairs:
        if paired:
            print(f"held-out, after step {paired['first_step']} against after step {paired['last_step']} "
                  f"({paired['questions']} questions, paired): {_pair_text(paired)}")
    for paired in runs:
        print(f"held-out after step {paired['step']}, this run against {' '.join(args.against)} "
              f"({paired['questions']} questions, paired; theirs -> this run's): {_pair_text(paired)}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in rows]
        fig, (top, bottom, collapse) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
        top.plot(steps, [r["reward"] for r in rows], marker="o", label="mean reward")
        top.plot(steps, [r["executed"] for r in rows], marker=".", linestyle="--", label="answer ran (share)")
        top.plot(steps, [r["correct"] for r in rows], marker="x", linestyle=":", label="correct share")
        running = [sum(r["reward"] for r in rows[max(0, i + 1 - args.window):i + 1]) / min(i + 1, args.window)
                   for i in range(len(rows))]
        top.plot(steps, running, color="tab:blue", linewidth=2.5, alpha=0.5,
                 label=f"mean reward, last {args.window} steps")
        if evals:
            top.plot([r["step"] for r in evals], [r["reward"] for r in evals], marker="D", color="black",
                     label=f"held-out mean reward ({evals[0]['rollouts']} rollouts)")
        top.set_ylabel("per step")
        top.legend()
        top.set_title(args.title)
        bottom.plot(steps, [r["run_sql"] for r in rows], marker="o", label="run_sql calls / rollout")
        bottom.plot(steps, [r["submit_answer"] for r in rows], marker="s", label="submit_answer calls / rollout")
        bottom.legend()
        for name, marker, label in (("floor", "o", "floor answers (0, empty, None)"),
                                    ("top_template", "s", "most frequent query template"),
                                    ("repeated", "^", "query repeated across questions")):
            line, = collapse.plot(steps, [r[name] for r in rows], marker=marker, label=f"{label}, training")
            if evals:
                collapse.plot([r["step"] for r in evals], [r[name] for r in evals], marker=marker, linestyle="--",
                              color=line.get_color(), markerfacecolor="none", label="held-out")
        collapse.set_ylabel("share of answers")
        collapse.set_xlabel("step (reward call)")
        collapse.legend(fontsize="small")
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=110)
    return rows


if __name__ == "__main__":
    main()
