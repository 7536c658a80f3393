"""Paired comparison of two evaluations of the same questions: is B's accuracy really different from A's?

Both are ``benchmarks/evaluate.py`` results (their per-question ``records``), on the same questions:
matched by question index (and id, where recorded); a result whose questions differ is refused with
a :class:`PairingError` naming it. What :func:`paired_comparison` reports, A first and B second:

* accuracy of each, and the difference B - A in points;
* its 95 % interval from a paired bootstrap: questions resampled with replacement (the same draw for
  both policies), ``resamples`` times, seeded, percentile interval;
* McNemar's exact test: only the discordant questions carry evidence (A-only right, B-only right);
  under "no difference" each is A-only or B-only with probability 1/2, so the two-sided p-value is
  ``min(1, 2 * P(X <= min(A-only, B-only)))``, X ~ Binomial(A-only + B-only, 1/2);
* the failing-query share of each and its relative change (B - A) / A.

The trainer's final evaluation (``agents/eval_records.py``) and the command line
``benchmarks/paired.py`` (with ``benchmarks/evaluate.py --compare-to``) both use this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

RESAMPLES = 10_000


class PairingError(ValueError):
    """Two results that cannot be paired; the message names the file at fault."""


# ---------------------------------------------------------------------------------------- statistics
def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none).

    >>> mcnemar_exact(1, 6)  # 2 * (1 + 7) / 2**7
    0.125
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only}, {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], resamples: int = RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(b) - mean(a), in points, resampling questions (pairs) with replacement."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"need two equal-length 1-D outcome lists, got {a_arr.shape} and {b_arr.shape}")
    if not a_arr.size:
        return 0.0, 0.0
    diff = b_arr - a_arr
    low, high = _percentiles(lambda rng, count: diff[rng.integers(0, diff.size, size=(count, diff.size))].mean(axis=1),
                             resamples, seed, level)
    return 100.0 * low, 100.0 * high


def bootstrap_difference(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(b) - mean(a) for two independent samples (other questions in each, e.g. the
    first and the last training steps), each resampled with replacement on its own; in the values' units."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.ndim != 1 or b_arr.ndim != 1 or not a_arr.size or not b_arr.size:
        raise ValueError(f"need two non-empty 1-D samples, got shapes {a_arr.shape} and {b_arr.shape}")

    def draw(rng, count):
        return (b_arr[rng.integers(0, b_arr.size, size=(count, b_arr.size))].mean(axis=1)
                - a_arr[rng.integers(0, a_arr.size, size=(count, a_arr.size))].mean(axis=1))

    return _percentiles(draw, resamples, seed, level)


def _percentiles(draw, resamples: int, seed: int, level: float) -> tuple[float, float]:
    """The ``level`` percentile interval of ``resamples`` statistics, ``draw(rng, count)`` making ``count`` of them
    at a time (bounded memory: 1000 x n indices at once)."""
    if resamples < 1:
        raise ValueError(f"resamples={resamples!r} must be >= 1")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for start in range(0, resamples, 1000):
        count = min(1000, resamples - start)
        stats[start:start + count] = draw(rng, count)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------- pairing
def load_result(path: str | Path) -> dict[str, Any]:
    """An evaluate.py result with its per-question records; PairingError naming the file otherwise."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PairingError(f"{path}: cannot read an evaluation result ({exc})") from None
    if not isinstance(result, dict) or not isinstance(result.get("records"), list):
        raise PairingError(f"{path}: no per-question 'records' (write it with benchmarks/evaluate.py)")
    for i, r in enumerate(result["records"]):
        missing = [k for k in ("index", "correct", "error") if k not in r]
        if missing:
            raise PairingError(f"{path}: record {i} lacks {', '.join(missing)}")
    return result


def pair_records(a: dict, b: dict, names: tuple[str, str] = ("A", "B"), *, common: bool = False
                 ) -> list[tuple[dict, dict]]:
    """The records of ``a`` and ``b`` side by side, by question; PairingError naming ``b``'s file
    (or ``a``'s, for a question recorded twice) when the question sets differ. ``common``: keep the
    questions both hold instead (a ``--limit`` subset against a whole split of the same seed order),
    PairingError when they share none."""
    for key in ("dataset", "split"):
        va, vb = a.get("config", {}).get(key), b.get("config", {}).get(key)
        if va is not None and vb is not None and va != vb:
            raise PairingError(f"{names[1]}: {key} {vb!r} differs from {names[0]}'s {va!r}; "
                               "a paired comparison needs the same questions")
    by_a = _by_index(a["records"], names[0])
    by_b = _by_index(b["records"], names[1])
    if common:
        shared = set(by_a) & set(by_b)
        if not shared:
            raise PairingError(f"{names[1]}: no question in common with {names[0]} (by question index)")
        by_a = {i: r for i, r in by_a.items() if i in shared}
        by_b = {i: r for i, r in by_b.items() if i in shared}
    if set(by_a) != set(by_b):
        only_a, only_b = sorted(set(by_a) - set(by_b)), sorted(set(by_b) - set(by_a))
        raise PairingError(
            f"{names[1]}: its {len(by_b)} questions differ from {names[0]}'s {len(by_a)} "
            f"({len(only_b)} only in {names[1]}, e.g. {only_b[:3]}; {len(only_a)} only in {names[0]}, "
            f"e.g. {only_a[:3]}); evaluate both with the same --dataset, --split, --limit and --seed, or compare on "
            f"the questions both hold (benchmarks/paired.py --common)")
    pairs = []
    for index in sorted(by_a):
        ra, rb = by_a[index], by_b[index]
        if ra.get("id") not in (None, "") and rb.get("id") not in (None, "") and ra["id"] != rb["id"]:
            raise PairingError(f"{names[1]}: question {index} is {rb['id']!r}, in {names[0]} {ra['id']!r}")
        pairs.append((ra, rb))
    return pairs


def _by_index(records: Sequence[dict], name: str) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for r in records:
        if int(r["index"]) in out:
            raise PairingError(f"{name}: question {r['index']} is recorded twice")
        out[int(r["index"])] = r
    return out


def paired_comparison(a: dict, b: dict, names: tuple[str, str] = ("A", "B"), *, resamples: int = RESAMPLES,
                      seed: int = 0, common: bool = False) -> dict[str, Any]:
    """Accuracy of each, the difference with its bootstrap interval, McNemar's p and the failing shares;
    ``common``: on the questions both hold (``n_a`` and ``n_b`` say how many each had)."""
    pairs = pair_records(a, b, names, common=common)
    n = len(pairs)
    ca = [bool(ra["correct"]) for ra, _ in pairs]
    cb = [bool(rb["correct"]) for _, rb in pairs]
    a_only = sum(x and not y for x, y in zip(ca, cb))
    b_only = sum(y and not x for x, y in zip(ca, cb))
    err_a = 100.0 * sum(ra["error"] is not None for ra, _ in pairs) / n if n else 0.0
    err_b = 100.0 * sum(rb["error"] is not None for _, rb in pairs) / n if n else 0.0
    acc_a, acc_b = (100.0 * sum(ca) / n, 100.0 * sum(cb) / n) if n else (0.0, 0.0)
    low, high = paired_bootstrap(ca, cb, resamples=resamples, seed=seed)
    return {
        "a": names[0], "b": names[1], "n": n,
        "accuracy_a": acc_a, "accuracy_b": acc_b, "diff": acc_b - acc_a, "diff_ci95": [low, high],
        "p_mcnemar": mcnemar_exact(a_only, b_only), "a_only": a_only, "b_only": b_only,
        "both": sum(x and y for x, y in zip(ca, cb)),
        "error_a": err_a, "error_b": err_b,
        "error_rel_change": (err_b - err_a) / err_a if err_a else None,
        "resamples": resamples, "seed": seed, "n_a": len(a["records"]), "n_b": len(b["records"]),
    }


def format_paired(c: dict[str, Any]) -> str:
    """One Markdown table of a :func:`paired_comparison`, with the names of A and B under it."""
    rel = "n/a" if c["error_rel_change"] is None else f"{100 * c['error_rel_change']:+.0f} %"
    header = ["N", "Acc. A (%)", "Acc. B (%)", "Diff. (points)", "95% CI (bootstrap)", "McNemar p", "A only",
              "B only", "Errors A (%)", "Errors B (%)", "Errors rel. change"]
    row = [str(c["n"]), f"{c['accuracy_a']:.2f}", f"{c['accuracy_b']:.2f}", f"{c['diff']:+.2f}",
           f"{c['diff_ci95'][0]:+.1f} to {c['diff_ci95'][1]:+.1f}", format_p(c["p_mcnemar"]), str(c["a_only"]),
           str(c["b_only"]), f"{c['error_a']:.2f}", f"{c['error_b']:.2f}", rel]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
             "| " + " | ".join(row) + " |", "",
             f"A: {c['a']}; B: {c['b']}. "
             + (f"On the {c['n']} questions both hold (A has {c['n_a']}, B {c['n_b']}). "
                if c.get("n_a", c["n"]) != c["n"] or c.get("n_b", c["n"]) != c["n"] else "")
             + f"Both right on {c['both']}. Interval: paired bootstrap, "
             f"{c['resamples']} resamples, seed {c['seed']}; p: McNemar's exact test (two-sided)."]
    return "\n".join(lines)


def format_p(p: float) -> str:
    """A p-value as the tables write it: three decimals, or scientific below 0.001."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def compare_files(before: str | Path, after: str | Path, *, resamples: int = RESAMPLES, seed: int = 0,
                  common: bool = False) -> dict:
    """:func:`paired_comparison` of two result files, named by their paths."""
    return paired_comparison(load_result(before), load_result(after), (str(before), str(after)),
                             resamples=resamples, seed=seed, common=common)
