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

Each preset is one :class:`RewardPreset` in :data:`REWARD_PRESETS` (its error reward, range, scoring
and a one-line summary); :func:`reward_preset` is the one check of a preset's name, and help texts
list the table with :func:`preset_help`. A new preset is one new entry.

``reward(preset, result, match)`` duck-types ``result``: anything with an ``.error`` attribute
that is ``None`` when the query executed (an :class:`sqlenv.executor.ExecutionResult`); ``arctic-nofloor``
also reads its ``.rows``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlenv.matching import MatchResult, is_floor_answer, result_to_answer

__all__ = ["ARCTIC_EXECUTES", "PARTIAL_WRONG_MAX", "REWARD_PRESETS", "RewardPreset", "preset_help",
           "reward", "reward_preset", "reward_range"]

#: The most a wrong answer earns under ``partial`` (a correct one earns 1.0).
PARTIAL_WRONG_MAX = 0.99

#: What a query that executes but answers wrong earns under ``arctic`` (a right one earns 1.0).
ARCTIC_EXECUTES = 0.1


@dataclass(frozen=True)
class RewardPreset:
    """One reward preset: what a failing query earns, the range, and the scoring of one that ran.

    ``score(result, match)`` is the reward of a query that executed (``result.error is None``);
    ``summary`` is the one line help texts show after the name.
    """

    name: str
    error_reward: float
    range: tuple[float, float]
    score: Callable[[Any, MatchResult], float]
    summary: str


def _binary(result: Any, match: MatchResult) -> float:
    return 1.0 if match.correct else 0.0


def _partial(result: Any, match: MatchResult) -> float:
    return 1.0 if match.correct else min(float(match.f1), PARTIAL_WRONG_MAX)


def _paper(result: Any, match: MatchResult) -> float:
    return 1.0 + 100.0 * float(match.relaxed) + (1000.0 if match.exact >= 1.0 else 0.0)


def _arctic(result: Any, match: MatchResult) -> float:
    return 1.0 if match.correct else ARCTIC_EXECUTES


def _arctic_nofloor(result: Any, match: MatchResult) -> float:
    if match.correct:
        return 1.0
    rows = getattr(result, "rows", None)
    if rows is None:
        raise ValueError("reward 'arctic-nofloor' needs the executed query's rows (result.rows)")
    return 0.0 if is_floor_answer(result_to_answer(rows)) else ARCTIC_EXECUTES


def _table(*presets: RewardPreset) -> dict[str, RewardPreset]:
    return {preset.name: preset for preset in presets}


#: Every preset by name, in the order help texts list them.
REWARD_PRESETS: dict[str, RewardPreset] = _table(
    RewardPreset("binary", -1.0, (-1.0, 1.0), _binary,
                 "execution error -1, executed but wrong 0, correct 1 (the env's default)"),
    RewardPreset("paper", -100.0, (-100.0, 1101.0), _paper,
                 "error -100, else 1 + 100 x the relaxed match, + 1000 for an exact match"),
    RewardPreset("partial", -1.0, (-1.0, 1.0), _partial,
                 "error -1, executed but wrong its answer items' F1 (at most 0.99), correct 1"),
    RewardPreset("arctic", 0.0, (0.0, 1.0), _arctic,
                 "error 0, executed but wrong 0.1, correct 1 (correctness dominates)"),
    RewardPreset("arctic-nofloor", 0.0, (0.0, 1.0), _arctic_nofloor,
                 "arctic, but a wrong answer that is 0, empty or NULL earns 0"),
)


def reward_preset(name: Any) -> RewardPreset:
    """The preset called ``name``; a ValueError naming the field and the choices if there is none.

    >>> reward_preset("arctic").range
    (0.0, 1.0)
    """
    try:
        return REWARD_PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"reward={name!r} is not a reward preset; choose one of {list(REWARD_PRESETS)}"
        ) from None


def preset_help() -> str:
    """Every preset with its summary, for a ``--reward`` help text ("binary: ...; paper: ...")."""
    return "; ".join(f"{p.name}: {p.summary}" for p in REWARD_PRESETS.values())


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
    entry = reward_preset(preset)
    if result.error is not None:
        return entry.error_reward
    if match is None:
        raise ValueError("reward needs a MatchResult for a query that executed (error is None)")
    return entry.score(result, match)


def reward_range(preset: str) -> tuple[float, float]:
    """The (lowest, highest) reward ``preset`` can give.

    >>> reward_range("paper")
    (-100.0, 1101.0)
    """
    return reward_preset(preset).range
