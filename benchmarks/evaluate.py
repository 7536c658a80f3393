"""Evaluate a policy on a Text-to-SQL split through the environment and write the paper-style table.

    python benchmarks/evaluate.py --policy oracle --dataset generated --split dev
    python benchmarks/evaluate.py --policy template --dataset temptabqa-c --split dev \
        --data-dir ../shared/data/temptabqa-c
    python benchmarks/evaluate.py --policy oracle --dataset temptabqa-c --gold-sql --data-dir ../shared/data/temptabqa-c
    python benchmarks/evaluate.py --policy few-shot --dataset temptabqa-c --split dev --limit 50 --threads 1
    python benchmarks/evaluate.py --policy runs/grpo/adapter --samples 8      # pass@1..8 from 8 samples
    python benchmarks/evaluate.py --summarize results/                        # one table of every run in results/
    python benchmarks/evaluate.py --policy template --compare-to results/constant_generated_dev_tables.json

What is measured (every figure is over the evaluated questions, the greedy query unless noted):

* execution accuracy: % of questions whose query executes and whose result matches the gold answer
  under the environment's default matcher (``info["correct"]``);
* EMS / REMS: means of the dataset scripts' exact and relaxed exact match scores (``info["exact"]``,
  ``info["relaxed"]``), in % like the reference work;
* errors: % of queries that fail to execute, broken down by the executor's error kind;
* accuracy and errors by question type and by difficulty;
* pass@k (``--samples K`` > 1): the unbiased estimator 1 - C(n-c, k) / C(n, k) over K sampled
  queries per question (Chen et al. 2021), for k = 1, 2, 4, ... up to K;
* collapse monitors (``agents/monitors.py``, every one of ``LABELS``): shares of constant-floor answers, of
  queries repeated across questions, of the most frequent query template, of queries naming the worked
  examples' entity, of lists where one value is asked, and of literal answers (queries that read no table
  of the database, ``SELECT '16'``: the env's ``reads_table``, kept in each record);
* with ``--compare-to BEFORE.json``: the paired comparison with that earlier result on the same
  questions (``benchmarks/paired.py``: McNemar's exact test, bootstrap interval of the difference).

Questions are taken in dataset order; ``--limit N`` takes a seeded random subset of N (in dataset
order), so every policy evaluated with the same seed and limit sees the same questions. The policy is
asked them grouped by database (:func:`database_order`, so that a rollout engine can share the prompt
prefix of a batch); the records keep dataset order.

Several splits (``--split original,hard``; ``--split test``: TempTabQA-C's seven test splits): each split's
questions are chosen as for a run on it alone (``--limit`` per split), the distinct questions among them
(:func:`question_identity`: question text, database, gold answer) are answered once, in one process, and
each split gets the report such a run would write (:func:`split_result`), plus ``config["shared_run"]``.
A stochastic policy draws other samples than separate runs would; ``--compare-to`` takes one split.

    python benchmarks/evaluate.py --policy template --dataset temptabqa-c --split test --threads 1

A trained adapter (``--policy <folder>``, or ``--adapter``) is evaluated on the environment it was trained
on: its ``env_config.json`` (``agents/adapter_card.py``) gives the defaults of ``--dataset``, ``--split``
(its held-out split), ``--data-dir``, ``--schema``, ``--sample-rows``, ``--column-values``, ``--reward``, the
query budget ``--timeout`` and ``--max-instructions`` (a run trained under an instruction budget is evaluated
under it), ``--max-turns`` (an adapter trained in multi-turn episodes is evaluated in them),
``--literal-answers`` and ``--filter-hints``; a flag that differs is honoured with a notice. Without a flag
or an adapter, every env setting has the default of ``sqlenv.spec.EnvSpec``; the report's config records the
query budget, the literal-answer option and the filter hints the env had. A policy or model that cannot be
used, or the oracle on questions without gold SQL, stops the script at once with exit status 2 and a message
naming the flag. The report records the command so that it runs again as written (``SQLENV_DATA_DIR=...`` in
front when the data folder came
from that variable).

The core, :func:`evaluate`, takes a policy (anything with ``act``/``act_batch``, see
:mod:`agents.baselines`) and a :class:`~sqlenv.env.TextToSQLEnv`; the GRPO trainer reuses it for its
held-out evaluations. Nothing here imports torch unless an LM policy is asked for.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: make `agents` importable
    sys.path.insert(0, str(REPO))

from agents.monitors import LABELS, collapse_monitors  # noqa: E402  (no torch)
from sqlenv.agent_env import kept_a_floor  # noqa: E402
from sqlenv.datasets import select_indices  # noqa: E402
from sqlenv.executor import ERROR_KINDS  # noqa: E402
from sqlenv.literal import LITERAL_ANSWERS  # noqa: E402
from sqlenv.rewards import preset_help  # noqa: E402
from sqlenv.spec import EnvSpec, default  # noqa: E402

UNKNOWN = "n/a"


# ---------------------------------------------------------------------------------------- metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    # Product form: numerically stable, no big binomials.
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_ks(samples: int) -> list[int]:
    """The k reported for ``samples`` samples: 1, 2, 4, ... and ``samples`` itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return ks + [samples] if samples >= 1 else []


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of a proportion, in %; (0, 0) when n is 0.

    Small ``--limit`` runs carry wide intervals: 1 of 30 correct is 0.6-16.7 %.
    """
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def _pct(numerator: float, denominator: int) -> float:
    return 100.0 * numerator / denominator if denominator else 0.0


def _group_stats(records: Sequence[dict]) -> dict[str, Any]:
    n = len(records)
    return {
        "n": n,
        "accuracy": _pct(sum(r["correct"] for r in records), n),
        "ems": _pct(sum(r["exact"] for r in records), n),
        "rems": _pct(sum(r["relaxed"] for r in records), n),
        "error_rate": _pct(sum(r["error"] is not None for r in records), n),
    }


def _sort_key(value: str):
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _breakdown(records: Sequence[dict], field: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        value = r.get(field)
        groups[UNKNOWN if value in (None, "") else str(value)].append(r)
    return {key: _group_stats(groups[key]) for key in sorted(groups, key=_sort_key)}


def compute_metrics(records: Sequence[dict], samples: int = 1) -> dict[str, Any]:
    """Aggregate per-question records (as :func:`evaluate` makes them) into the reported metrics.

    A record needs ``correct`` (bool), ``exact`` and ``relaxed`` (0..1), ``error`` (None or an
    error kind), ``question_type``, ``difficulty``, ``reward``; for pass@k also ``num_samples``
    and ``num_correct`` (correct among the samples).
    """
    n = len(records)
    errors = Counter(r["error"] for r in records if r["error"] is not None)
    kinds = list(ERROR_KINDS) + sorted(k for k in errors if k not in ERROR_KINDS)
    metrics: dict[str, Any] = {
        "n": n,
        "execution_accuracy": _pct(sum(r["correct"] for r in records), n),
        "execution_accuracy_ci95": list(wilson_interval(sum(bool(r["correct"]) for r in records), n)),
        "ems": _pct(sum(r["exact"] for r in records), n),
        "rems": _pct(sum(r["relaxed"] for r in records), n),
        "f1": _pct(sum(r.get("f1", 0.0) for r in records), n),
        "error_rate": _pct(sum(errors.values()), n),
        "errors": {kind: {"count": errors.get(kind, 0), "percent": _pct(errors.get(kind, 0), n)} for kind in kinds},
        "mean_reward": sum(r.get("reward", 0.0) for r in records) / n if n else 0.0,
        "by_question_type": _breakdown(records, "question_type"),
        "by_difficulty": _breakdown(records, "difficulty"),
        "collapse": collapse_monitors(records),
    }
    if samples > 1 and n:
        metrics["pass_at_k"] = {
            str(k): 100.0 * sum(pass_at_k(r["num_samples"], r["num_correct"], k) for r in records) / n
            for k in pass_ks(samples)
        }
        metrics["sample_error_rate"] = _pct(sum(r["num_errors"] for r in records),
                                            sum(r["num_samples"] for r in records))
    return metrics


# ---------------------------------------------------------------------------------------- the loop
def database_order(db_keys: Sequence[str]) -> list[int]:
    """Positions ``0..len(db_keys)-1`` with equal database keys made adjacent: the databases in the order of
    their first question, each database's questions in their own order (a stable sort by database)."""
    first: dict[str, int] = {}
    for position, key in enumerate(db_keys):
        first.setdefault(key, position)
    return sorted(range(len(db_keys)), key=lambda position: first[db_keys[position]])


def _record(index: int, info: dict, score: dict, sample_scores: list[dict] | None, question: str = "") -> dict:
    record = {
        "index": index,
        "id": info.get("id"),
        "question": question,
        "question_type": info.get("question_type"),
        "difficulty": info.get("difficulty"),
        "sql": score["sql"],
        "error": score["error"],
        "error_message": score.get("error_message", "") if score["error"] else "",
        "correct": bool(score["correct"]),
        "exact": float(score["exact"]),
        "relaxed": float(score["relaxed"]),
        "f1": float(score["f1"]),
        "reward": float(score["reward"]),
        "prediction": score["prediction"],
        "answer": score["answer"],
        "reads_table": score.get("reads_table"),  # False: a literal answer (agents/monitors.py, "literal")
    }
    if sample_scores is not None:
        record["num_samples"] = len(sample_scores)
        record["num_correct"] = sum(bool(s["correct"]) for s in sample_scores)
        record["num_errors"] = sum(s["error"] is not None for s in sample_scores)
    return record


def _score_unique(env, sqls: Sequence[str]) -> list[dict]:
    """Score the queries for the current question, executing each distinct query once."""
    unique = list(dict.fromkeys(sqls))
    scored = {sql: info for sql, (_, info) in zip(unique, env.score_group(unique))}
    return [scored[sql] for sql in sqls]


def evaluate(policy, env, limit: int | None = None, samples: int = 1, seed: int = 0, *,
             batch_size: int = 8, progress: bool = False, indices: Iterable[int] | None = None) -> dict[str, Any]:
    """Evaluate ``policy`` on the questions of ``env`` and return ``{"metrics", "records", "config"}``.

    Each question gets one greedy query (accuracy, EMS, REMS, errors, breakdowns) and, when
    ``samples`` > 1, ``samples`` sampled queries for pass@k (a deterministic policy's samples are
    its greedy query repeated). ``limit`` takes a seeded subset (see :func:`select_indices`),
    ``indices`` pins the questions instead. Scoring goes through ``env.score_group``; the
    episode state of ``env`` is left reset on the last question answered.

    Questions are asked in :func:`database_order`: those sharing a database go to the policy together,
    ``batch_size`` at a time, so that a rollout engine can reuse the prompt prefix they share (system
    prompt, that database's schema and sample rows). The records come back in the order of the indices.
    """
    if samples < 1:
        raise ValueError(f"samples={samples!r} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    base = getattr(env, "unwrapped", env)
    chosen = list(indices) if indices is not None else select_indices(len(base.dataset), limit, seed)
    if hasattr(policy, "seed"):
        policy.seed(seed)
    base.reset(seed=seed)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen), desc=f"{getattr(policy, 'name', 'policy')}", unit="q", dynamic_ncols=True)
    stochastic = bool(getattr(policy, "stochastic", False))
    slots: list[dict | None] = [None] * len(chosen)
    done: list[dict] = []
    order = database_order([base.example(i).db_key for i in chosen])
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        positions = order[start:start + batch_size]
        batch = [chosen[p] for p in positions]
        pairs = [base.reset(options={"index": i}) for i in batch]
        observations = [obs for obs, _ in pairs]
        infos = [info for _, info in pairs]
        if getattr(policy, "needs_gold", False):  # the oracle: the env never puts gold in reset info
            infos = [dict(info, gold_sql=base.example(i).gold_sql) for i, info in zip(batch, infos)]
        greedy = policy.act_batch(observations, infos, n=1, greedy=True)
        sampled = None
        if samples > 1:
            if stochastic:
                sampled = policy.act_batch(observations, infos, n=samples, greedy=False)
            else:
                sampled = [[g[0]] * samples for g in greedy]
        for j, (index, info) in enumerate(zip(batch, infos)):
            base.reset(options={"index": index})
            queries = [greedy[j][0]] + (list(sampled[j]) if sampled is not None else [])
            scores = _score_unique(base, queries)
            slots[positions[j]] = _record(index, info, scores[0], scores[1:] if sampled is not None else None,
                                          question=observations[j]["question"])
            done.append(slots[positions[j]])
        if bar is not None:
            bar.update(len(batch))
            bar.set_postfix(acc=f"{_pct(sum(r['correct'] for r in done), len(done)):.1f}",
                            err=f"{_pct(sum(r['error'] is not None for r in done), len(done)):.1f}")
    if bar is not None:
        bar.close()
    records = [r for r in slots if r is not None]
    return {"config": run_config(policy, base, records, started, limit=limit, samples=samples, seed=seed),
            "metrics": compute_metrics(records, samples), "records": records}


def run_config(policy, base, records: Sequence[dict], started: float, **settings) -> dict[str, Any]:
    """The ``config`` block of a result: what was evaluated on what, ``settings``, and the time taken."""
    elapsed = time.perf_counter() - started
    dataset = base.dataset
    return {
        "policy": getattr(policy, "name", type(policy).__name__),
        "policy_repr": repr(policy),
        "dataset": getattr(dataset, "name", ""),
        "split": getattr(dataset, "split", ""),
        "schema": getattr(base, "schema_variant", getattr(dataset, "schema", "")),
        "reward": getattr(base, "reward_preset", ""),
        **query_budget(base),
        "literal_answers": getattr(base, "literal_answers", None),
        "column_values": getattr(base, "column_values", 0),
        "filter_hints": getattr(base, "filter_hints", None) is not None,
        "num_questions_in_split": len(dataset),
        **settings,
        "elapsed_s": round(elapsed, 2),
        "seconds_per_question": round(elapsed / len(records), 4) if records else None,
    }


def query_budget(env) -> dict[str, Any]:
    """The env's query budget: ``timeout`` (seconds) and ``max_instructions`` (None: wall clock only)."""
    config = getattr(getattr(env, "executor", None), "config", None)
    return {} if config is None else {"timeout": config.timeout, "max_instructions": config.max_instructions}


def turn_metrics(records: Sequence[dict], max_turns: int) -> dict[str, Any]:
    """Multi-turn metrics of episode records (:func:`evaluate_episodes`), in % unless a mean: turns used,
    questions never answered, submitted answers that failed to execute (% of questions), exploratory
    moves (``<sql>`` or malformed) per episode and the share of them that failed, malformed moves. Records
    with what their explorations found (``explore_correct``, ``answer_explored``) add: episodes where an
    exploration would have been a right answer (``explore_found_rate``), those of them whose answer was not
    right (``found_then_lost_rate``, % of all episodes), and answers that resubmit one of the episode's
    explorations (``answer_explored_rate``, % of the episodes that answered); with ``explore_floor``, episodes
    where an exploration's result was a floor answer (0, empty, None: ``explore_floor_rate``) and those that
    still answered with a wrong floor (``floor_kept_rate``, % of all episodes)."""
    n = len(records)
    explorations = [err for r in records for kind, err in zip(r["move_kinds"], r["move_errors"]) if kind != "answer"]
    moves = sum(r["turns"] for r in records)
    metrics = {
        "max_turns": max_turns,
        "turns_mean": sum(r["turns"] for r in records) / n if n else 0.0,
        "no_answer_rate": _pct(sum(r["error"] == "no_answer" for r in records), n),
        "answer_error_rate": _pct(sum(r["error"] not in (None, "no_answer") for r in records), n),
        "explore_moves_mean": len(explorations) / n if n else 0.0,
        "explore_error_rate": _pct(sum(err is not None for err in explorations), len(explorations)),
        "malformed_rate": _pct(sum(kind == "malformed" for r in records for kind in r["move_kinds"]), moves),
    }
    if records and all("explore_correct" in r for r in records):  # results from before lack them
        found = [any(r["explore_correct"]) for r in records]
        answered = [r for r in records if r["move_kinds"][-1] == "answer"]
        metrics.update(
            explore_found_rate=_pct(sum(found), n),
            found_then_lost_rate=_pct(sum(f and not r["correct"] for f, r in zip(found, records)), n),
            answer_explored_rate=_pct(sum(bool(r["answer_explored"]) for r in answered), len(answered)),
        )
    if records and all("explore_floor" in r for r in records):
        metrics.update(
            explore_floor_rate=_pct(sum(any(r["explore_floor"]) for r in records), n),
            floor_kept_rate=_pct(sum(kept_a_floor(r["explore_floor"], r) for r in records), n),
        )
    return metrics


def evaluate_episodes(policy, env, limit: int | None = None, seed: int = 0, *, batch_size: int = 8,
                      progress: bool = False, indices: Iterable[int] | None = None) -> dict[str, Any]:
    """Evaluate ``policy`` in multi-turn episodes of ``env`` (a ``TextToSQLAgentEnv``): one greedy episode
    per question. A language-model policy plays whole episodes (``agents.multiturn``: explore with
    ``<sql>``, answer with ``<answer>``), ``batch_size`` questions in lockstep; any other policy answers
    its one query at once (``<answer>SQL</answer>``, one turn). Returns :func:`evaluate`'s shape, each
    record with the episode's ``turns``, ``moves``, ``move_kinds`` and ``move_errors`` and what its explorations
    found (``explore_correct``, ``explore_floor``, ``answer_explored``: ``TextToSQLAgentEnv.score_explorations``, as
    ``agents.multiturn`` scored them), and ``metrics["multi_turn"]`` (:func:`turn_metrics`); the final answer is
    scored by the env's step."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    base = getattr(env, "unwrapped", env)
    if not hasattr(base, "max_turns"):
        raise ValueError("evaluate_episodes needs a TextToSQLAgentEnv (TextToSQLAgent-v0)")
    chosen = list(indices) if indices is not None else select_indices(len(base.dataset), limit, seed)
    if hasattr(policy, "seed"):
        policy.seed(seed)
    pool = None
    if hasattr(policy, "lm"):
        from agents.multiturn import EnvPool

        pool = EnvPool(base)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen), desc=f"{getattr(policy, 'name', 'policy')} (multi-turn)", unit="q",
                   dynamic_ncols=True)
    records: list[dict] = []
    started = time.perf_counter()
    try:
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start:start + batch_size]
            pairs = [base.reset(options={"index": i}) for i in batch]
            if pool is not None:
                from agents.multiturn import run_episodes

                played = run_episodes(policy.lm, pool, batch, 1, greedy=True)
                episodes = [dict(info=e.info, turns=e.turns, moves=e.moves, move_kinds=e.move_kinds,
                                 move_errors=e.move_errors, explore_correct=e.explore_correct,
                                 explore_floor=e.explore_floor, answer_explored=e.answer_explored)
                            for e in played]
            else:
                infos = [info for _, info in pairs]
                if getattr(policy, "needs_gold", False):
                    infos = [dict(info, gold_sql=base.example(i).gold_sql) for i, info in zip(batch, infos)]
                answers = policy.act_batch([obs for obs, _ in pairs], infos, n=1, greedy=True)
                episodes = []
                for index, answer in zip(batch, answers):
                    base.reset(options={"index": index})
                    move = f"<answer>{answer[0]}</answer>"
                    info = base.step(move)[4]
                    episodes.append(dict(info=info, turns=1, moves=[move], move_kinds=[info["move"]],
                                         move_errors=list(info["move_errors"]), explore_correct=[False],
                                         explore_floor=[False], answer_explored=False))  # nothing explored
            for index, (obs, info), episode in zip(batch, pairs, episodes):
                final = episode.pop("info")
                record = _record(index, info, final, None, question=obs["question"])
                records.append({**record, **episode})
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(acc=f"{_pct(sum(r['correct'] for r in records), len(records)):.1f}",
                                turns=f"{sum(r['turns'] for r in records) / len(records):.2f}")
    finally:
        if pool is not None:
            pool.close()
        if bar is not None:
            bar.close()
    metrics = compute_metrics(records)
    metrics["multi_turn"] = turn_metrics(records, base.max_turns)
    return {"config": run_config(policy, base, records, started, limit=limit, samples=1, seed=seed,
                                 max_turns=base.max_turns),
            "metrics": metrics, "records": records}


# ---------------------------------------------------------------------------------------- report
def _f(x: float) -> str:
    return f"{x:.2f}"


def summary_header(samples: int = 1) -> list[str]:
    head = ["Policy", "Dataset", "Split", "Schema", "N", "Exec. acc. (%)", "95% CI", "EMS (%)", "REMS (%)",
            "Errors (%)"]
    return head + [f"pass@{k} (%)" for k in pass_ks(samples)] if samples > 1 else head


def summary_row(result: dict, samples: int | None = None) -> list[str]:
    c, m = result["config"], result["metrics"]
    lo, hi = m.get("execution_accuracy_ci95", (float("nan"), float("nan")))
    row = [c["policy"], c["dataset"], c["split"], c["schema"], str(m["n"]), _f(m["execution_accuracy"]),
           f"{lo:.1f}-{hi:.1f}", _f(m["ems"]), _f(m["rems"]), _f(m["error_rate"])]
    samples = c["samples"] if samples is None else samples
    if samples > 1:
        pk = m.get("pass_at_k", {})
        row += [_f(pk[str(k)]) if str(k) in pk else "" for k in pass_ks(samples)]
    return row


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _breakdown_table(title: str, groups: dict[str, dict]) -> str:
    rows = [[key, str(g["n"]), _f(g["accuracy"]), _f(g["ems"]), _f(g["rems"]), _f(g["error_rate"])]
            for key, g in groups.items()]
    return _table([title, "N", "Exec. acc. (%)", "EMS (%)", "REMS (%)", "Errors (%)"], rows)


def format_markdown(result: dict, command: str | None = None) -> str:
    """The Markdown report of one evaluation: summary, errors by kind, by question type, by difficulty."""
    c, m = result["config"], result["metrics"]
    out = [f"# {c['policy']} on {c['dataset']}/{c['split']} ({c['schema']} schema)", ""]
    if command:
        out += ["```", command, "```", ""]
    subset = f"a seeded subset (seed {c['seed']}) of {m['n']} of {c['num_questions_in_split']}" \
        if m["n"] < c["num_questions_in_split"] else f"all {m['n']}"
    out += [f"Questions: {subset}. Greedy query per question; {c['elapsed_s']} s "
            f"({c['seconds_per_question']} s/question).", ""]
    out += [_table(summary_header(c["samples"]), [summary_row(result)]), ""]
    if "sample_error_rate" in m:
        out += [f"Errors among the {c['samples']} samples per question: {_f(m['sample_error_rate'])} %.", ""]
    out += ["## Failing queries by error kind", ""]
    out += [_table(["Error kind", "Count", "% of questions"],
                   [[k, str(v["count"]), _f(v["percent"])] for k, v in m["errors"].items() if v["count"]]
                   + [["total", str(sum(v["count"] for v in m["errors"].values())), _f(m["error_rate"])]]), ""]
    if "multi_turn" in m:
        out += ["## Multi-turn episodes", "", turn_table(m["multi_turn"]), ""]
    out += ["## By question type", "", _breakdown_table("Type", m["by_question_type"]), ""]
    out += ["## By difficulty", "", _breakdown_table("Difficulty", m["by_difficulty"]), ""]
    if "collapse" in m:
        out += ["## Collapse monitors", "", collapse_table(m["collapse"]), ""]
    if result.get("paired"):
        out += ["## Paired comparison", "", format_paired(result["paired"]), ""]
    return "\n".join(out)


def turn_table(turns: dict[str, Any]) -> str:
    """The multi-turn metrics (:func:`turn_metrics`) as a Markdown table."""
    header = ["Max turns", "Turns used (mean)", "No answer (%)", "Answer errors (%)", "Explorations (mean)",
              "Exploration errors (%)", "Malformed moves (%)"]
    row = [str(turns["max_turns"]), _f(turns["turns_mean"]), _f(turns["no_answer_rate"]),
           _f(turns["answer_error_rate"]), _f(turns["explore_moves_mean"]), _f(turns["explore_error_rate"]),
           _f(turns["malformed_rate"])]
    if "explore_found_rate" in turns:
        header += ["Explored a right answer (%)", "... then answered wrong (%)", "Answer is an exploration (%)"]
        row += [_f(turns["explore_found_rate"]), _f(turns["found_then_lost_rate"]), _f(turns["answer_explored_rate"])]
    if "explore_floor_rate" in turns:
        header += ["Explored a floor: 0, empty, None (%)", "... then answered a wrong floor (%)"]
        row += [_f(turns["explore_floor_rate"]), _f(turns["floor_kept_rate"])]
    return _table(header, [row])


def collapse_table(monitors: dict[str, Any]) -> str:
    """The collapse monitors (``agents/monitors.py``, labelled by its ``LABELS``) as a Markdown table, % of
    questions; a monitor missing from ``monitors`` (a result written before it existed) is left out."""
    rows = [[label, _f(100.0 * monitors[name])] for name, label in LABELS.items() if name in monitors]
    table = _table(["Monitor", "% of questions"], rows)
    if monitors.get("top_template_sql"):
        table += f"\n\nMost frequent template: `{monitors['top_template_sql']}`"
    return table


def paired_module():
    """``benchmarks/paired.py``, imported from beside this file."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import paired

    return paired


def format_paired(comparison: dict) -> str:
    return paired_module().format_paired(comparison)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def result_stem(result: dict) -> str:
    """``<policy>_<dataset>_<split>_<schema>[_n<limit>][_k<samples>][_t<turns>][_hints]`` for the result files."""
    c = result["config"]
    stem = "_".join(_slug(c[k]) for k in ("policy", "dataset", "split", "schema"))
    if c["limit"] is not None and result["metrics"]["n"] < c["num_questions_in_split"]:
        stem += f"_n{result['metrics']['n']}"
    if c["samples"] > 1:
        stem += f"_k{c['samples']}"
    if c.get("max_turns", 1) > 1:
        stem += f"_t{c['max_turns']}"
    if c.get("filter_hints"):
        stem += "_hints"
    return stem


def write_result(result: dict, out_dir: str | Path, command: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (config, metrics, per-question records) and ``<stem>.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    payload = dict(result, command=command)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    md_path.write_text(format_markdown(result, command) + "\n")
    return json_path, md_path


def summarize(paths: Iterable[str | Path]) -> str:
    """One Markdown table of the runs in the given JSON files or folders of them."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.json")) if p.is_dir() else ([p] if p.suffix == ".json" else [])
    results = [json.loads(f.read_text()) for f in dict.fromkeys(files)]
    for r in results:  # recompute from the per-question records, so older files get newer metrics
        if r.get("records") is not None:
            r["metrics"] = compute_metrics(r["records"], r["config"]["samples"])
    samples = max([r["config"]["samples"] for r in results] + [1])
    summary = _table(summary_header(samples), [summary_row(r, samples) for r in results])
    kinds = [k for k in dict.fromkeys(k for r in results for k, v in r["metrics"]["errors"].items() if v["count"])]
    if not kinds:
        return summary
    errors = _table(["Policy", "Dataset", "Split", "Schema", "Errors (%)"] + [f"{k} (%)" for k in kinds],
                    [[r["config"][f] for f in ("policy", "dataset", "split", "schema")]
                     + [_f(r["metrics"]["error_rate"])]
                     + [_f(r["metrics"]["errors"].get(k, {"percent": 0.0})["percent"]) for k in kinds]
                     for r in results if r["metrics"]["error_rate"] > 0])
    return summary + "\n\nFailing queries by error kind (% of questions):\n\n" + errors


# ---------------------------------------------------------------------------------------- datasets
def gold_sql_only(dataset):
    """A copy of ``dataset`` holding only the questions that carry gold SQL (split renamed ``<split>-gold``)."""
    subset = dataset.subset([i for i, ex in enumerate(dataset) if ex.gold_sql])
    subset.split = f"{getattr(dataset, 'split', '')}-gold"
    return subset


def load_eval_dataset(name: str, split: str | None, data_dir: str | None, schema: str, gold_sql: bool):
    """The dataset to evaluate; ``gold_sql`` keeps only the questions that carry gold SQL.

    For TempTabQA-C, ``gold_sql`` with no split is its ``gold-sql`` split: the benchmark's 47
    gold-SQL samples (one per question type, ``One_Sample_Per_Question_Template.csv``). Their
    gold SQL is written for the five-table schema; with ``schema="flat"`` they carry none.
    """
    from sqlenv.datasets import load_dataset

    if gold_sql and name == "temptabqa-c" and split is None:
        return load_dataset(name, split="gold-sql", data_dir=data_dir, schema=schema)
    dataset = load_dataset(name, split=split or "dev", data_dir=data_dir, schema=schema)
    return gold_sql_only(dataset) if gold_sql else dataset


# ---------------------------------------------------------------------------------------- several splits
#: ``--split test``: a dataset's test splits, evaluated together (TempTabQA-C's seven, in SPLIT_FILES' order).
TEST_ALIAS = "test"


def test_splits(dataset: str) -> tuple[str, ...]:
    """The splits ``--split test`` names for ``dataset``; () where ``test`` is an ordinary split or none."""
    if dataset != "temptabqa-c":
        return ()
    from sqlenv.datasets.temptabqa_c import SPLIT_FILES

    return tuple(split for split in SPLIT_FILES if split not in ("train", "dev"))


def split_list(dataset: str, text: str | None) -> list[str | None]:
    """The splits ``--split`` names: one, or a comma-separated list in which ``test`` stands for
    :func:`test_splits` (repeats dropped). A ValueError names a split ``dataset`` does not have."""
    if text is None:
        return [None]
    names: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            raise ValueError("an empty split name in the list: separate split names with single commas")
        names += list(test_splits(dataset)) if name == TEST_ALIAS and test_splits(dataset) else [name]
    names = list(dict.fromkeys(names))
    if len(names) > 1:
        from sqlenv.datasets import available_datasets

        known = available_datasets().get(dataset)
        for name in names:
            if known is not None and name not in known:
                alias = f", or {TEST_ALIAS} (all of {', '.join(test_splits(dataset))})" if test_splits(dataset) else ""
                raise ValueError(f"unknown split {name!r} for dataset {dataset!r}; available: "
                                 f"{', '.join(known)}{alias}")
    return names


def question_identity(example) -> tuple:
    """What makes two examples of different splits the same question, answered once: the question text and
    the database it is asked against (``db_key``, and the ``context`` a database is built from) decide the
    policy's observation; the gold ``answer`` (and ``gold_sql``, the oracle's query) decide the score.
    ``id``, ``question_type`` and ``difficulty`` are left out: they are labels that differ between splits
    (Easy.tsv gives blank difficulties its own), and each split's records keep their own. (On TempTabQA-C's
    test splits, 14 question/database pairs have different gold answers in different splits.)"""
    return example.question, example.db_key, example.context, example.answer, example.gold_sql


def union_of_splits(datasets: Sequence, selections: Sequence[Sequence[int]]):
    """One dataset holding every distinct question (:func:`question_identity`) among the selected examples
    of ``datasets`` once, in order of first appearance, and for each split the position in it of each of its
    selected examples."""
    position_of: dict[tuple, int] = {}
    examples = []
    positions: list[list[int]] = []
    for dataset, chosen in zip(datasets, selections):
        row = []
        for index in chosen:
            example = dataset[index]
            key = question_identity(example)
            if key not in position_of:
                position_of[key] = len(examples)
                examples.append(example)
            row.append(position_of[key])
        positions.append(row)
    union = datasets[0].subset([])
    union.examples = examples
    union.split = ",".join(getattr(d, "split", "") for d in datasets)
    return union, positions


def split_result(shared: dict, dataset, chosen: Sequence[int], positions: Sequence[int],
                 splits: Sequence[str]) -> dict[str, Any]:
    """The result of one split from a run on the union of several (:func:`union_of_splits`): the shared
    records at ``positions``, each with the split's own index, id, question type and difficulty; the metrics
    recomputed from them; the config with the split's name and size. The run's time (``elapsed_s``,
    ``seconds_per_question``: per distinct question) is the shared run's; ``shared_run`` says what it covered."""
    records = []
    for index, position in zip(chosen, positions):
        example = dataset[index]
        records.append(dict(shared["records"][position], index=index, id=example.id,
                            question_type=example.question_type, difficulty=example.difficulty))
    config = shared["config"]
    metrics = compute_metrics(records, config["samples"])
    if "multi_turn" in shared["metrics"]:
        metrics["multi_turn"] = turn_metrics(records, shared["metrics"]["multi_turn"]["max_turns"])
    config = dict(config, split=getattr(dataset, "split", ""), num_questions_in_split=len(dataset),
                  shared_run={"splits": list(splits), "distinct_questions": len(shared["records"])})
    return {"config": config, "metrics": metrics, "records": records}


# ---------------------------------------------------------------------------------------- CLI
# The env settings a flag or the adapter's env_config.json gives, else EnvSpec's default (sqlenv/spec.py).
ENV_FLAGS = ("dataset", "schema", "sample_rows", "column_values", "reward", "timeout", "max_instructions", "max_turns",
             "literal_answers", "filter_hints")
DATA_DIR_ENV = "SQLENV_DATA_DIR"
PROG = "benchmarks/evaluate.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate a policy through the Text-to-SQL environment; write a Markdown + JSON report. "
                    "An adapter folder is evaluated on the environment it was trained on (its env_config.json: "
                    "dataset, held-out split, data folder, schema, sample rows, reward, query budget, turns per "
                    "episode, literal answers) unless a flag says otherwise.",
    )
    g = parser.add_argument_group("what to evaluate")
    g.add_argument("--policy", default="oracle",
                   help="oracle, constant, template, zero-shot, few-shot, or the path of a trained adapter folder "
                        "(default: oracle)")
    g.add_argument("--dataset", default=None,
                   help=f"dataset name, see python -m sqlenv datasets (default: the adapter's, else "
                        f"{default('dataset')})")
    g.add_argument("--split", default=None,
                   help="split, or a comma-separated list of splits; on temptabqa-c, test is its "
                        f"{len(test_splits('temptabqa-c'))} test splits ({', '.join(test_splits('temptabqa-c'))}). "
                        "Several splits: their "
                        "distinct questions are answered once, in one process, and each split gets its own report "
                        "(default: the adapter's held-out split, else dev; with --gold-sql on temptabqa-c: its 47 "
                        "gold-SQL samples, split gold-sql)")
    g.add_argument("--schema", default=None, choices=["tables", "flat"],
                   help=f"database schema variant (default: the adapter's, else {default('schema')})")
    g.add_argument("--data-dir", default=None,
                   help="dataset folder (default: $SQLENV_DATA_DIR, else the adapter's)")
    g.add_argument("--gold-sql", action="store_true",
                   help="evaluate only questions with gold SQL (temptabqa-c without --split: its 47 gold-SQL samples)")
    g.add_argument("--limit", type=int, default=None,
                   help="evaluate a seeded random subset of N questions (default: all)")
    g.add_argument("--samples", type=int, default=1,
                   help="K sampled queries per question for pass@k (default: 1, greedy only)")
    g.add_argument("--seed", type=int, default=0, help="seed for the subset and for sampling (default: 0)")
    g.add_argument("--max-turns", type=int, default=None,
                   help="N > 1: multi-turn episodes on TextToSQLAgent-v0 (explore with <sql>, answer with <answer>, "
                        "at most N moves), reporting turns used, exploration errors and unanswered questions; "
                        f"1: one query per question (default: the adapter's, else {default('max_turns')})")
    g.add_argument("--reward", default=None,
                   help=f"reward preset recorded as mean_reward (default: the adapter's, else {default('reward')}): "
                        + preset_help())
    g.add_argument("--sample-rows", type=int, default=None,
                   help=f"sample rows per table in the observation (default: the adapter's, else "
                        f"{default('sample_rows')})")
    g.add_argument("--column-values", type=int, default=None,
                   help="most frequent text values listed per column under each table in the observation, 0: none "
                        f"(default: the adapter's, else {default('column_values')})")
    g.add_argument("--timeout", type=_seconds, default=None,
                   help=f"wall-clock seconds a query may run; with --max-instructions the backstop (default: the "
                        f"adapter's, else {default('timeout')})")
    g.add_argument("--max-instructions", type=_instructions, default=None, metavar="N|none",
                   help="SQLite VM instructions a query may run, the same on every machine (docs/env.md, "
                        "\"Reproducible rewards\"); none: wall clock only (default: the adapter's, else none)")
    g.add_argument("--literal-answers", default=None, choices=list(LITERAL_ANSWERS),
                   help="an answer that reads no table of the database (SELECT '16', SELECT 0): score it like any "
                        "other, or as no answer, error 'literal' (docs/env.md, \"Literal answers\"); the collapse "
                        f"table's literal share counts them either way (default: the adapter's, else "
                        f"{default('literal_answers')})")
    g.add_argument("--filter-hints", default=None, action=argparse.BooleanOptionalAction,
                   help="multi-turn: an exploration whose result is empty, 0 or NULL also names each text value it "
                        "filters on that matches no row, with that column's values (sqlenv/filter_hints.py) "
                        f"(default: the adapter's, else {default('filter_hints')})")
    m = parser.add_argument_group("language-model policies")
    m.add_argument("--model", default=None, help="model name or folder (default: the adapter's, else smollm2-135m)")
    m.add_argument("--adapter", default=None, help="LoRA adapter folder to load into a zero-shot/few-shot policy")
    m.add_argument("--few-shot", type=int, default=None,
                   help="worked examples in the prompt (default: the adapter's, else the policy's)")
    m.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature for --samples > 1 (default: the adapter's, else 0.8)")
    m.add_argument("--max-completion-length", type=int, default=None,
                   help="max generated tokens (default: the adapter's, else 96)")
    m.add_argument("--device", default="auto", help="torch device (default: auto, CUDA when available)")
    m.add_argument("--threads", type=int, default=None, help="torch CPU threads; use 1 on a shared machine "
                                                             "(default: torch's choice)")
    m.add_argument("--batch-size", type=int, default=8, help="questions per generate call (default: 8)")
    m.add_argument("--rollout-dtype", default=None, choices=["bfloat16", "float16"],
                   help="generate in this precision (the rollout engine's weights, activations and cache; float32 "
                        "logits): faster on CPUs with native bfloat16 products (AVX512-BF16, AMX) and on GPUs, "
                        "and the greedy SQL can differ from float32's on some questions (55 of 282 on dev; "
                        "docs/performance.md, \"The full dev split, quiet machine\"; default: the model's dtype)")
    o = parser.add_argument_group("output")
    o.add_argument("--out", default="results", help="folder for the Markdown and JSON reports (default: results)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--compare-to", default=None, metavar="BEFORE.json",
                   help="an earlier result JSON on the same questions: append the paired comparison (McNemar's "
                        "exact test, bootstrap interval of the accuracy difference; benchmarks/paired.py) to the "
                        "report, this run being B")
    o.add_argument("--summarize", nargs="+", metavar="PATH", default=None,
                   help="print one table of the JSON results in these files/folders and exit")
    return parser


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return value


NO_LIMIT = "none"  # --max-instructions none: no instruction budget, even when the adapter was trained under one


def _instructions(text: str) -> int | str:
    if text.lower() == NO_LIMIT:
        return NO_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= 1 or none") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= 1 or none")
    return value


def adapter_of(args) -> Path | None:
    """The adapter folder being evaluated: ``--policy <folder>`` or ``--adapter``."""
    from agents.baselines import POLICY_NAMES

    if args.policy not in POLICY_NAMES and Path(args.policy).expanduser().is_dir():
        return Path(args.policy).expanduser()
    return Path(args.adapter).expanduser() if args.adapter else None


def env_settings(args, adapter: Path | None) -> tuple[dict[str, Any], list[str]]:
    """The env to evaluate on: flags first, then the adapter's env_config.json, then EnvSpec's defaults.

    Returns (settings: EnvSpec's fields; notices to print). A bad env_config.json is a ValueError naming
    the file and the field.
    """
    from agents.adapter_card import read_env_config

    trained = read_env_config(adapter) if adapter is not None else {}
    notices = []
    settings: dict[str, Any] = {}
    for key in ENV_FLAGS:
        flagged = getattr(args, key) is not None
        given = None if getattr(args, key) == NO_LIMIT else getattr(args, key)
        settings[key] = given if flagged else trained.get(key, default(key))
        if flagged and key in trained and given != trained[key]:
            notices.append(f"notice: evaluating with {key}={given!r} although {adapter} was trained with "
                           f"{trained[key]!r}")
    same_dataset = trained.get("dataset") == settings["dataset"]
    settings["split"] = args.split if args.split is not None else (
        trained.get("eval_split") if same_dataset and not args.gold_sql else None)
    settings["data_dir"] = args.data_dir or (None if os.environ.get(DATA_DIR_ENV) else
                                             trained.get("data_dir") if same_dataset else None)
    if settings["max_turns"] < 2 and args.filter_hints is None:
        settings["filter_hints"] = False  # an adapter's hints come with its explorations; one query has none
    if adapter is not None and not trained:
        notices.append(f"notice: {adapter} records no training environment (no env_config.json: saved before it "
                       f"existed); evaluating on the {settings['schema']!r} schema with {settings['sample_rows']} "
                       "sample rows: pass --schema/--sample-rows if it was trained otherwise")
    return settings, notices


def command_line(argv: Sequence[str], settings: dict[str, Any], args) -> str:
    """The command as it can be run again: the data folder named when it came from $SQLENV_DATA_DIR."""
    import shlex

    command = "python benchmarks/evaluate.py " + shlex.join(argv)
    if settings["dataset"] != "generated" and not args.data_dir and os.environ.get(DATA_DIR_ENV) \
            and not settings.get("data_dir"):
        command = f"{DATA_DIR_ENV}={shlex.quote(os.environ[DATA_DIR_ENV])} " + command
    return command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if args.samples < 1:
        parser.error(f"--samples {args.samples}: must be >= 1")
    if args.max_turns is not None and args.max_turns < 1:
        parser.error(f"--max-turns {args.max_turns}: must be >= 1 (1 = one query per question)")

    from agents.baselines import POLICY_NAMES, make_policy
    from sqlenv.datasets import DatasetError

    paired = paired_module()
    before = None
    if args.compare_to:
        try:
            before = paired.load_result(args.compare_to)
        except paired.PairingError as exc:
            parser.error(f"--compare-to {exc}")
    lm_policy = args.policy not in ("oracle", "constant", "template")
    if args.rollout_dtype and not lm_policy:
        parser.error(f"--rollout-dtype {args.rollout_dtype}: --policy {args.policy} is not a language model")
    if args.policy not in POLICY_NAMES and not Path(args.policy).expanduser().is_dir():
        parser.error(f"--policy {args.policy}: unknown policy: use one of {', '.join(POLICY_NAMES)} or the path of "
                     f"a trained adapter folder (no folder exists at {args.policy!r})")
    adapter = adapter_of(args)
    if args.adapter and not adapter.is_dir():
        parser.error(f"--adapter {args.adapter}: no adapter folder there")
    try:
        settings, notices = env_settings(args, adapter)
    except ValueError as exc:
        parser.error(f"--policy {adapter}: {exc}")
    max_turns = settings["max_turns"]
    if max_turns > 1 and args.samples > 1:
        source = f"--max-turns {max_turns}" if args.max_turns is not None else (
            f"{adapter} (trained in {max_turns}-move episodes; pass --max-turns 1 for one query per question)")
        parser.error(f"--samples {args.samples} with {source}: multi-turn evaluation plays one greedy episode per "
                     "question; drop --samples")
    try:
        splits = split_list(settings["dataset"], settings["split"])
    except ValueError as exc:
        parser.error(f"--split {settings['split']}: {exc}")
    if len(splits) > 1 and before is not None:
        parser.error(f"--compare-to {args.compare_to}: pairs one result with one earlier result, and --split "
                     f"{settings['split']} names {len(splits)} splits; evaluate the split to compare on its own")
    for line in notices:
        print(line, flush=True)
    try:
        spec = EnvSpec(**settings)
        datasets = [load_eval_dataset(spec.dataset, split, spec.data_dir, spec.schema, args.gold_sql)
                    for split in splits]
        selections = [select_indices(len(d), args.limit, args.seed) for d in datasets]
        if len(datasets) == 1:  # one split: its own questions
            (dataset,), (indices,), positions = datasets, selections, None
        else:  # several: each distinct question of their selections once
            dataset, positions = union_of_splits(datasets, selections)
            indices = list(range(len(dataset)))
        env = spec.make(dataset=dataset)
    except (DatasetError, ValueError) as exc:
        parser.error(f"--dataset {settings['dataset']} --split {settings['split'] or 'dev'}: {exc}")
    policy_kwargs: dict[str, Any] = {}
    if lm_policy:
        from agents.adapter_card import read_policy_config
        from agents.models import ModelNotFoundError, check_model

        model = args.model or (read_policy_config(adapter).get("model") if adapter is not None else None)
        try:
            check_model(model or "smollm2-135m")
        except (ModelNotFoundError, ValueError) as exc:
            env.close()
            parser.error(f"--model {model or 'smollm2-135m'}: {exc}")
        policy_kwargs = dict(model=args.model, adapter=args.adapter, few_shot=args.few_shot, device=args.device,
                             threads=args.threads, temperature=args.temperature,
                             max_completion_length=args.max_completion_length, batch_size=args.batch_size,
                             rollout_dtype=args.rollout_dtype)
    policy = make_policy(args.policy, **policy_kwargs)
    if getattr(policy, "needs_gold", False):
        missing = sum(not env.example(i).gold_sql for i in indices)
        if missing:
            env.close()
            parser.error(f"--policy {args.policy}: {missing} of the {len(indices)} questions of "
                         f"{settings['dataset']}/{getattr(env.dataset, 'split', '')} ({settings['schema']} schema) "
                         "have no gold SQL, so the oracle cannot answer them; evaluate it on a split whose questions "
                         "all carry gold SQL: the generated benchmark, or add --gold-sql (TempTabQA-C's gold SQL is "
                         "written for --schema tables)")
    command = command_line(argv, settings, args)
    try:
        if max_turns > 1:
            result = evaluate_episodes(policy, env, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                                       progress=not args.no_progress, indices=indices)
        else:
            result = evaluate(policy, env, limit=args.limit, samples=args.samples, seed=args.seed,
                              batch_size=args.batch_size, progress=not args.no_progress, indices=indices)
    finally:
        env.close()
    if positions is None:
        results = [result]
    else:
        results = [split_result(result, d, chosen, rows, splits)
                   for d, chosen, rows in zip(datasets, selections, positions)]
        print(f"answered {len(result['records'])} distinct questions for the {sum(map(len, selections))} "
              f"questions of {len(splits)} splits ({', '.join(splits)})")
    if adapter is not None:  # what the adapter was trained on, beside what it was evaluated on
        from agents.adapter_card import read_env_config

        for one in results:
            one["config"]["trained_env"] = read_env_config(adapter) or None
    mismatch = None
    if before is not None:
        try:
            result["paired"] = paired.paired_comparison(before, result, (args.compare_to, "this run"), seed=args.seed)
        except paired.PairingError as exc:
            mismatch = f"{PROG}: error: --compare-to {exc}"
    written = [write_result(one, args.out, command) for one in results]
    print(_table(summary_header(args.samples), [summary_row(one) for one in results]))
    for one in results:
        if "multi_turn" in one["metrics"]:
            label = "" if len(results) == 1 else f"{one['config']['split']}:\n"
            print(label + turn_table(one["metrics"]["multi_turn"]))
    if result.get("paired"):
        print(format_paired(result["paired"]))
    for json_path, md_path in written:
        print(f"wrote {md_path} and {json_path}")
    if mismatch:
        print(mismatch, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
