"""Reward presets: one scalar per query, built from a :class:`~sqlenv.matching.MatchResult`.

==================  ===============  ===================================  ===================================
preset              execution error  executed, wrong                      correct
==================  ===============  ===================================  ===================================
``binary``          -1               0                                    +1                 (the default)
``partial``         -1               F1 of the answer items, <= 0.99      +1
``paper``           -100             +1 + 100 x REMS                      +1 + 100 x REMS, +1000 when EMS = 1
``arctic``          0                0.1                                  1
``arctic-nofloor``  0                0.1, but 0 for ``0``/empty/``None``   1
==================  ===============  ===================================  ===================================

``binary`` and ``partial`` judge correctness with the normalised matcher (``match.correct``);
``partial`` adds precision-aware partial credit, so returning every row scores low. A rejected
answer never earns 1.0 under ``partial``: its F1 is capped at :data:`PARTIAL_WRONG_MAX` (0.99),
whatever the matcher reports (an answer with the right items in the wrong order, where the
question or the gold's ``ORDER BY`` asks for an order, gets the order-aware F1 of the matcher).

``paper`` is *our reading* of the reward in Kulkarni & Srikumar (2025), "Reinforcing Code
Generation: Improving Text-to-SQL with Execution-Based Learning": a large penalty (-100) for a
query that fails to execute, +1 for valid SQL, partial credit from 0 to 100 scaled by the
dataset's relaxed exact match score (REMS), and a +1000 bonus for an exact match, which we take
to be the dataset's EMS (``match.exact``). The paper does not publish code for it; the exact
constants and their combination are our interpretation. Note that the dataset's EMS/REMS ignore
extra predicted items, so under ``paper`` a query returning every row can earn the full
1101; ``binary`` (the default) and ``partial`` do not have that hole.

``arctic`` is the correctness-dominated reward of Arctic-Text2SQL-R1 (Yao et al. 2025,
arXiv:2505.20315): 1 when the result matches the gold answer, 0.1 when the query executes (is valid
SQL) but the answer is wrong, 0 when it fails to execute or there is no query. It pays no partial
credit, so a list that contains the gold item earns what any wrong answer earns. Why it exists: under
``binary`` a failing query costs 1 below a wrong one and a right one earns 1 above it, so with ~10 %
right samples most of a batch's signal says "execute", and GRPO drifts to queries that execute and
are safe (counts that come out 0); under ``arctic`` merely executing is worth a tenth of being right.
Under ``scale_rewards="group"`` each group is divided by its own std, which undoes the magnitudes for
a group with no right sample (0 vs 0.1 becomes -1 vs +1): pair it with ``batch``/``none`` scaling or
with the trainer's ``--drop-unsolved-groups`` (docs/training.md).

``arctic-nofloor`` is ``arctic`` without the tenth for a *floor* answer: a query that executes but
returns ``0``, no rows or ``NULL`` (:func:`sqlenv.matching.is_floor_answer`) and is wrong earns 0, what a
failing query earns; a floor answer that is right (the gold is ``0``) still earns 1. Why: under
``arctic`` GRPO drifted toward floor answers (25.5 % of full-dev answers after 20 CPU steps, 7.8 % of
golds are floors, docs/results.md): a query whose filter matches nothing always executes, so it collects
the execution tenth whatever it asked. Here executing only pays when the query found something.
Measured from the same warm start it lost 8.9 points against ``arctic``: the policy moved to counts with
the question's filters dropped, which are never 0 and rarely right. An experiment, not a fix.

``reward(preset, result, match)`` duck-types ``result``: anything with an ``.error`` attribute
that is ``None`` when the query executed (an :class:`sqlenv.executor.ExecutionResult`); ``arctic-nofloor``
also reads its ``.rows``.
"""

from __future__ import annotations

from typing import Any

from sqlenv.matching import MatchResult, is_floor_answer, result_to_answer

__all__ = ["ARCTIC_EXECUTES", "PARTIAL_WRONG_MAX", "REWARD_PRESETS", "reward", "reward_range"]

REWARD_PRESETS = ("binary", "paper", "partial", "arctic", "arctic-nofloor")

#: The most a wrong answer earns under ``partial`` (a correct one earns 1.0).
PARTIAL_WRONG_MAX = 0.99

#: What a query that executes but answers wrong earns under ``arctic`` (a right one earns 1.0).
ARCTIC_EXECUTES = 0.1

_ERROR = {"binary": -1.0, "paper": -100.0, "partial": -1.0, "arctic": 0.0, "arctic-nofloor": 0.0}
_RANGE = {"binary": (-1.0, 1.0), "paper": (-100.0, 1101.0), "partial": (-1.0, 1.0), "arctic": (0.0, 1.0),
          "arctic-nofloor": (0.0, 1.0)}


def _check(preset: str) -> None:
    if preset not in REWARD_PRESETS:
        raise ValueError(
            f"reward={preset!r} is not a reward preset; choose one of {list(REWARD_PRESETS)}"
        )


def reward(preset: str, result: Any, match: MatchResult | None) -> float:
    """The reward of one query under ``preset``.

    ``result.error`` is ``None`` when the query executed; ``match`` compares its rows with the
    gold answer and may be ``None`` only when the query errored (it is then ignored).

    >>> class Ok: error = None
    >>> reward("binary", Ok(), MatchResult(correct=True, exact=1.0, relaxed=1.0, f1=1.0))
    1.0
    >>> reward("paper", Ok(), MatchResult(correct=False, exact=0.0, relaxed=0.5, f1=0.4))
    51.0
    >>> reward("arctic", Ok(), MatchResult(correct=False, exact=1.0, relaxed=1.0, f1=0.5))
    0.1
    """
    _check(preset)
    if result.error is not None:
        return _ERROR[preset]
    if match is None:
        raise ValueError("reward needs a MatchResult for a query that executed (error is None)")
    if preset == "binary":
        return 1.0 if match.correct else 0.0
    if preset == "partial":
        return 1.0 if match.correct else min(float(match.f1), PARTIAL_WRONG_MAX)
    if preset == "arctic":
        return 1.0 if match.correct else ARCTIC_EXECUTES
    if preset == "arctic-nofloor":
        if match.correct:
            return 1.0
        rows = getattr(result, "rows", None)
        if rows is None:
            raise ValueError("reward 'arctic-nofloor' needs the executed query's rows (result.rows)")
        return 0.0 if is_floor_answer(result_to_answer(rows)) else ARCTIC_EXECUTES
    # paper
    return 1.0 + 100.0 * float(match.relaxed) + (1000.0 if match.exact >= 1.0 else 0.0)


def reward_range(preset: str) -> tuple[float, float]:
    """The (lowest, highest) reward ``preset`` can give.

    >>> reward_range("paper")
    (-100.0, 1101.0)
    """
    _check(preset)
    return _RANGE[preset]
