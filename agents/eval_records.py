"""The trainer's held-out evaluations kept question by question: collapse monitors and the paired comparison.

``EvalRecorder`` wraps the eval env and keeps the ``info`` of every query it scores (the trainer's
greedy evaluation scores one query a question through ``env.score_group``). ``held_out_records``
turns what it kept into per-question records, adds the collapse monitors (``agents/monitors.py``) to
the evaluation's metrics as ``eval/collapse/*``, and writes ``<run>/eval/step_NNNNNN.json`` in
``benchmarks/evaluate.py``'s result format, so any two steps compare with ``benchmarks/paired.py``
(the command line of ``agents/paired.py``).
``compare_with_start`` is the final evaluation against the starting policy (step 0, written before
any update, also by the run a resume continues): ``paired/*`` metrics and ``<run>/eval/paired.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents import paired
from agents.monitors import monitor_metrics

RECORD_KEYS = ("index", "sql", "error", "correct", "exact", "relaxed", "f1", "reward", "prediction", "answer")


class EvalRecorder:
    """The eval env, keeping the infos of the queries it scores; every other attribute is the env's."""

    def __init__(self, env):
        self.__dict__["env"] = env
        self.__dict__["infos"] = []

    def __getattr__(self, name: str):
        if name in ("env", "infos"):
            raise AttributeError(name)
        return getattr(self.__dict__["env"], name)

    def score_group(self, sqls, *args, **kwargs):
        scored = self.env.score_group(sqls, *args, **kwargs)
        self.infos.extend(info for _, info in scored)
        return scored

    def take(self) -> list[dict]:
        """The infos kept since the last call."""
        infos, self.__dict__["infos"] = self.infos, []
        return infos


def eval_file(out: Path, step: int) -> Path:
    return Path(out) / "eval" / f"step_{step:06d}.json"


def held_out_records(recorder, metrics: dict[str, Any], out: Path, step: int) -> dict[str, Any] | None:
    """Records of the evaluation just run (None when ``recorder`` kept nothing): ``eval/collapse/*`` added
    to ``metrics``, the result written to ``<out>/eval/step_NNNNNN.json`` and returned."""
    infos = recorder.take() if isinstance(recorder, EvalRecorder) else []
    if not infos:
        return None
    env = recorder.env
    records = []
    for info in infos:
        example = env.example(int(info["index"]))
        records.append({**{k: info.get(k) for k in RECORD_KEYS}, "id": example.id, "question": example.question,
                        "question_type": example.question_type, "difficulty": example.difficulty})
    metrics.update(monitor_metrics("eval", records))
    dataset = env.dataset
    result = {"config": {"policy": f"step {step}", "dataset": getattr(dataset, "name", ""),
                         "split": getattr(dataset, "split", ""), "schema": getattr(env, "schema_variant", ""),
                         "reward": getattr(env, "reward_preset", ""), "step": step},
              "records": records}
    path = eval_file(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def compare_with_start(result: dict[str, Any] | None, metrics: dict[str, Any], out: Path) -> str | None:
    """The paired comparison of this evaluation (B) with step 0's (A): ``paired/*`` added to ``metrics``,
    the table written to ``<out>/eval/paired.md`` and returned; None without both evaluations."""
    start = eval_file(out, 0)
    if result is None or not start.exists() or result["config"]["step"] == 0:
        return None
    before = paired.load_result(start)
    step = result["config"]["step"]
    comparison = paired.paired_comparison(before, result, (f"step 0 ({start.name})", f"step {step}"))
    metrics.update({f"paired/{k}": comparison[k] for k in ("diff", "p_mcnemar", "a_only", "b_only")})
    metrics["paired/diff_ci_low"], metrics["paired/diff_ci_high"] = comparison["diff_ci95"]
    table = paired.format_paired(comparison)
    (Path(out) / "eval" / "paired.md").write_text(
        f"# Held-out evaluation: step {step} against the starting policy\n\n{table}\n")
    return table
