"""The trainer's held-out evaluations kept question by question: collapse monitors and the paired comparison.

``HeldOut`` is the trainer's greedy evaluation (rank 0): ``eval_limit`` questions of the eval split,
the same ones each time, evaluated by ``agents.rollouts.evaluate``, which returns each question's
``info`` (a multi-turn episode's: its last step's). ``held_out_records`` turns those infos into
per-question records, adds the collapse monitors (``agents/monitors.py``) to the evaluation's metrics as
``eval/collapse/*``, and writes ``<run>/eval/step_NNNNNN.json`` in ``benchmarks/evaluate.py``'s result
format, so any two steps compare with ``benchmarks/paired.py`` (the command line of ``agents/paired.py``).
``compare_with_start`` is the final evaluation against the starting policy (step 0, written before
any update, also by the run a resume continues): ``paired/*`` metrics and ``<run>/eval/paired.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents import paired
from agents.monitors import RECORD_FIELDS, monitor_metrics
from agents.multiturn import EnvPool
from agents.rollouts import evaluate

if TYPE_CHECKING:
    from agents.grpo_config import Config

#: What a held-out record keeps of the env's info (the question's text and type come from the dataset): the
#: outcome, then everything else the collapse monitors read (``reads_table``, for ``literal``).
RECORD_KEYS = ("index", "sql", "error", "correct", "exact", "relaxed", "f1", "reward", "prediction", "answer")
RECORD_KEYS += tuple(name for name in RECORD_FIELDS if name not in RECORD_KEYS and name != "question")


class HeldOut:
    """The greedy evaluations of a run on ``cfg.eval_limit`` questions of the eval env (seeded, sorted),
    each one recorded in ``<out>/eval/``; multi-turn (``max_turns`` > 1): greedy episodes on copies of it."""

    def __init__(self, env, cfg: "Config", out: Path):
        self.env, self.cfg, self.out = env, cfg, Path(out)
        self.pool = EnvPool(env) if cfg.max_turns > 1 else None
        self.indices = sorted(np.random.default_rng(0).permutation(len(env.dataset))[:cfg.eval_limit].tolist())

    def __call__(self, policy, step: int) -> dict[str, Any]:
        """Evaluate ``policy`` at ``step``: its eval/* metrics (with eval/collapse/*), its records written."""
        return self._run(policy, step)[0]

    def final(self, policy, step: int) -> tuple[dict[str, Any], str | None]:
        """The last evaluation, paired against step 0's: ``(metrics with paired/*, the table or None)``."""
        metrics, result = self._run(policy, step)
        return metrics, compare_with_start(result, metrics, self.out)

    def _run(self, policy, step: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        metrics, infos = evaluate(policy, self.env, self.indices, self.cfg, self.pool)
        return metrics, held_out_records(self.env, infos, metrics, self.out, step)

    def close(self):
        if self.pool is not None:
            self.pool.close()
        self.env.close()


def eval_file(out: Path, step: int) -> Path:
    return Path(out) / "eval" / f"step_{step:06d}.json"


def held_out_records(env, infos: list[dict], metrics: dict[str, Any], out: Path, step: int) -> dict[str, Any] | None:
    """Records of the evaluation just run on ``env`` (its questions' ``infos``; None when there are none):
    ``eval/collapse/*`` added to ``metrics``, the result written to ``<out>/eval/step_NNNNNN.json`` and returned."""
    if not infos:
        return None
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
