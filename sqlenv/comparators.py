"""Result-set comparators: is a predicted query's result the gold query's result?

Three comparators, selected by name (:data:`COMPARATORS`):

``"bird"``
    BIRD's evaluator (``evaluation.py``: ``set(predicted) == set(gold)``): rows compared as a
    *set*, so row order and duplicate rows are ignored; each row is a tuple, so column order
    and column count matter.
``"spider"``
    The Spider test-suite evaluator (``exec_eval.py``, ``result_eq``): rows compared as a
    *multiset* (duplicates count), in order only when the gold SQL contains ``ORDER BY``;
    the prediction's columns may be any permutation of the gold columns.
``"ordered"``
    Exact sequence: same rows, same order, same columns.

Values compare with Python ``==`` on the values SQLite returns (``normalize=True``, the
default), which is what the official evaluators do: ``1 == 1.0``, ``-0.0 == 0.0``, NULL equal
only to NULL, and a BLOB (``bytes``) never equal to a TEXT (``str``); two BLOBs are equal when
their bytes are. Beyond ``==``, ``True`` counts as ``1`` and NaN equals NaN (SQLite itself
returns neither). ``normalize=False`` is type-strict (``1 != 1.0``). ``float_tol``
additionally accepts floats within ``float_tol`` (absolute or relative) of each other.

The official Spider evaluator first rejects a pair of results unless each row's values, sorted
by their string form followed by their type's (``str(x) + str(type(x))``), agree (as a sequence
of rows with ``ORDER BY``, as a set of rows without). Because ``'1'`` and ``'1.0'`` sort
differently against other values, that test makes ``(1, 1.5)`` and ``(1.0, 1.5)`` unequal while
``(1, 2.5)`` and ``(1.0, 2.5)`` stay equal (likewise ``-0.0`` vs ``0.0`` next to a negative
number). With ``official_quirks=True`` (the default) the ``spider`` comparator applies the same
test, so its verdicts are the official ones; ``official_quirks=False`` compares by value only.
The test is skipped when ``float_tol`` is set (a tolerance is not official anyway).

Differences from the official evaluators, on purpose:

* Empty-vs-empty: both evaluators count an empty prediction against an empty gold result as
  correct. That pays a policy for any query that returns nothing, so here it is off by default
  (``empty_match=False``); turn it on to reproduce the published numbers.
* Spider's ``ORDER BY`` test is a case-insensitive regex (``order\\s+by``) rather than the
  literal substring ``'order by'``, so a gold query written over several lines still counts.
* Spider prunes column permutations by sampling rows; here the pruning is deterministic (a
  gold column can only map to a predicted column holding the same multiset of values) and
  the search stops after :data:`MAX_PERMUTATIONS` candidates. Pruning never changes a verdict
  (neither prunes a permutation that works) except past that limit.
* Spider strips ``DISTINCT`` from both queries and plugs gold values into the prediction
  before executing; a comparator sees only rows, so neither is done.

Every comparator returns a :class:`sqlenv.matching.MatchResult` with ``exact = relaxed =
float(correct)`` and ``f1`` the F1 of the rows: multiset overlap (set overlap for ``bird``)
where row order does not count, and the longest common subsequence of rows where it does
(``ordered``; ``spider`` with ``ORDER BY``), so an answer in the wrong order gets less. A
rejected answer's ``f1`` is at most :data:`MAX_REJECTED_F1`, so it never earns the reward of a
correct one.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlenv.matching import MatchResult

COMPARATORS = ("bird", "spider", "ordered")
#: Column permutations the ``spider`` comparator tries before giving up.
MAX_PERMUTATIONS = 5_000
#: The highest ``f1`` a rejected answer gets (the ``partial`` reward pays 1.0 only when correct).
MAX_REJECTED_F1 = 0.99
#: Matching row pairs the order-aware F1 examines before falling back to the multiset F1.
MAX_LCS_PAIRS = 2_000_000

_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)

Row = tuple


def order_matters(gold_sql: str | None) -> bool:
    """Spider's rule: row order counts when the gold query has an ``ORDER BY`` (anywhere)."""
    return bool(gold_sql) and _ORDER_BY.search(gold_sql) is not None


@dataclass(frozen=True)
class Comparator:
    """A result-set comparator; call it as ``comparator(predicted_rows, gold_rows, gold_sql)``.

    Arguments:
        name: one of :data:`COMPARATORS`.
        empty_match: whether an empty prediction matches an empty gold result (official
            evaluators: yes; default here: no, because it rewards queries that return nothing).
        normalize: compare values with Python ``==`` (``1 == 1.0``; default); ``False``
            compares types strictly. Bytes are never decoded: a BLOB never equals a TEXT.
        float_tol: when set, floats within this absolute or relative tolerance are equal.
        official_quirks: ``spider`` only: also apply the official evaluator's type-sensitive
            row-sort test, so that verdicts are the official ones (default; see the module
            docstring); ``False`` compares by value only.
    """

    name: str = "bird"
    empty_match: bool = False
    normalize: bool = True
    float_tol: float | None = None
    official_quirks: bool = True

    def __post_init__(self):
        if self.name not in COMPARATORS:
            raise ValueError(
                f"comparator={self.name!r} is unknown; choose one of {list(COMPARATORS)}"
            )
        if self.float_tol is not None and not (self.float_tol >= 0):
            raise ValueError(f"float_tol={self.float_tol!r} must be a number >= 0 or None")

    def __call__(
        self,
        predicted: Iterable[Sequence[Any]],
        gold: Iterable[Sequence[Any]],
        gold_sql: str | None = None,
    ) -> MatchResult:
        return compare(
            predicted,
            gold,
            self.name,
            gold_sql=gold_sql,
            empty_match=self.empty_match,
            normalize=self.normalize,
            float_tol=self.float_tol,
            official_quirks=self.official_quirks,
        )


def get_comparator(comparator: str | Comparator, **options) -> Comparator:
    """A :class:`Comparator` from a name (plus options) or an existing comparator."""
    if isinstance(comparator, Comparator):
        if options:
            raise ValueError("pass options either in the Comparator or as keywords, not both")
        return comparator
    return Comparator(comparator, **options)


def compare(
    predicted: Iterable[Sequence[Any]],
    gold: Iterable[Sequence[Any]],
    comparator: str = "bird",
    *,
    gold_sql: str | None = None,
    empty_match: bool = False,
    normalize: bool = True,
    float_tol: float | None = None,
    official_quirks: bool = True,
) -> MatchResult:
    """Compare two result sets with comparator ``comparator`` (see the module docstring)."""
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator={comparator!r} is unknown; choose one of {list(COMPARATORS)}")
    raw_pred = [_as_tuple(r) for r in predicted]
    raw_gold = [_as_tuple(r) for r in gold]
    pred = [_row(r, normalize) for r in raw_pred]
    gold_rows = [_row(r, normalize) for r in raw_gold]
    if not pred or not gold_rows:
        correct = empty_match and not pred and not gold_rows
        return _result(correct, 1.0 if correct else 0.0)

    ordered = comparator == "ordered" or (comparator == "spider" and order_matters(gold_sql))
    if comparator == "bird":
        correct = _set_equal(pred, gold_rows, float_tol)
    elif comparator == "ordered":
        correct = _sequence_equal(pred, gold_rows, float_tol)
    else:
        correct = _spider_equal(pred, gold_rows, ordered, float_tol)
        if correct and official_quirks and float_tol is None:
            correct = _spider_sorted_rows_agree(raw_gold, raw_pred, ordered)
    if correct:
        return _result(True, 1.0)
    if ordered:
        return _result(False, _ordered_row_f1(pred, gold_rows))
    return _result(False, _row_f1(pred, gold_rows, distinct=comparator == "bird"))


# ---------------------------------------------------------------------- normalisation
class _NaN:
    """NaN as one value equal to itself (``float('nan') != float('nan')``) and to nothing else."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NaN"

    def __reduce__(self):
        return "_NAN"


_NAN = _NaN()


def _value(v: Any, normalize: bool) -> Any:
    if isinstance(v, (bytearray, memoryview)):
        v = bytes(v)  # a BLOB stays bytes: never equal to TEXT, as in both evaluators
    if not normalize:
        # Type-tagged so that 1, 1.0 and True stay distinct in sets and comparisons.
        return (type(v).__name__, v)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        if v == 0.0:
            return 0.0  # -0.0
        if math.isnan(v):
            return _NAN  # NaN != NaN would make identical results differ
        return v
    return v


def _as_tuple(row: Any) -> Row:
    if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
        return (row,)  # a bare scalar is a one-column row
    return tuple(row)


def _row(row: Sequence[Any], normalize: bool) -> Row:
    return tuple(_value(v, normalize) for v in _as_tuple(row))


def _official_sort_key(v: Any) -> str:
    """The key Spider's evaluator sorts a row's values by: the value's text, then its type's."""
    return str(v) + str(type(v))


def _spider_sorted_rows_agree(gold: list[Row], pred: list[Row], ordered: bool) -> bool:
    """The official evaluator's first test, on the values as returned (not normalised).

    Each row's values are sorted by :func:`_official_sort_key`; the sorted rows must be equal
    (``==``) in sequence when order matters, as sets otherwise. ``1`` and ``1.0`` are equal but
    sort differently (``'1<class...'`` vs ``'1.0<class...'``), which is why ``(1, 1.5)`` and
    ``(1.0, 1.5)`` fail this test.
    """
    g = [tuple(sorted(row, key=_official_sort_key)) for row in gold]
    p = [tuple(sorted(row, key=_official_sort_key)) for row in pred]
    if ordered:
        return g == p
    try:
        return set(g) == set(p)
    except TypeError:  # an unhashable value (only from hand-written gold rows)
        return True


def _sort_key(v: Any):
    """A total order over mixed SQLite values: NULL < numbers < text < anything else."""
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):  # type-tagged value
        return (v[0],) + (_sort_key(v[1]),)
    if v is None:
        return (0, 0)
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    return (3, repr(v))


def _row_key(row: Row):
    return tuple(_sort_key(v) for v in row)


def _close(a: Any, b: Any, tol: float) -> bool:
    if a == b:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == 2 == len(b):  # type-tagged
        return a[0] == b[0] and _close(a[1], b[1], tol)
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    return False


def _rows_close(a: Row, b: Row, tol: float) -> bool:
    return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))


# ---------------------------------------------------------------------- the three comparisons
def _sequence_equal(pred: list[Row], gold: list[Row], tol: float | None) -> bool:
    if len(pred) != len(gold):
        return False
    if tol is None:
        return pred == gold
    return all(_rows_close(p, g, tol) for p, g in zip(pred, gold))


def _multiset_equal(pred: list[Row], gold: list[Row], tol: float | None) -> bool:
    if len(pred) != len(gold):
        return False
    if Counter(pred) == Counter(gold):
        return True
    if tol is None:
        return False
    # Tolerant fallback: sort both and compare row by row (rows within tolerance sort alike).
    return _sequence_equal(sorted(pred, key=_row_key), sorted(gold, key=_row_key), tol)


def _set_equal(pred: list[Row], gold: list[Row], tol: float | None) -> bool:
    if set(pred) == set(gold):
        return True
    if tol is None:
        return False
    return _sequence_equal(_distinct_sorted(pred, tol), _distinct_sorted(gold, tol), tol)


def _distinct_sorted(rows: list[Row], tol: float) -> list[Row]:
    out: list[Row] = []
    for row in sorted(set(rows), key=_row_key):
        if not out or not _rows_close(out[-1], row, tol):
            out.append(row)
    return out


def _spider_equal(pred: list[Row], gold: list[Row], ordered: bool, tol: float | None) -> bool:
    width = len(gold[0])
    if len(pred) != len(gold) or any(len(r) != width for r in pred):
        return False
    if (_sequence_equal if ordered else _multiset_equal)(pred, gold, tol):
        return True  # identity permutation, the common case
    if width == 1:
        return False
    # Which predicted columns could stand for each gold column: same multiset of values.
    gold_cols = [_column_signature(gold, i, tol) for i in range(width)]
    pred_cols = [_column_signature(pred, j, tol) for j in range(width)]
    candidates = [
        [j for j in range(width) if _signatures_match(pred_cols[j], gold_cols[i], tol)]
        for i in range(width)
    ]
    if any(not c for c in candidates):
        return False
    tried = 0
    for perm in _permutations(candidates):
        tried += 1
        if tried > MAX_PERMUTATIONS:
            return False
        if list(perm) == list(range(width)):
            continue
        permuted = [tuple(row[j] for j in perm) for row in pred]
        if (_sequence_equal if ordered else _multiset_equal)(permuted, gold, tol):
            return True
    return False


def _column_signature(rows: list[Row], i: int, tol: float | None):
    values = [r[i] for r in rows]
    return Counter(values) if tol is None else sorted(values, key=_sort_key)


def _signatures_match(a, b, tol: float | None) -> bool:
    if tol is None:
        return a == b
    return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))


def _permutations(candidates: list[list[int]]):
    """Injective assignments gold column i -> predicted column perm[i], from ``candidates``."""
    width = len(candidates)
    chosen: list[int] = []
    used: set[int] = set()

    def walk(i: int):
        if i == width:
            yield tuple(chosen)
            return
        for j in candidates[i]:
            if j in used:
                continue
            used.add(j)
            chosen.append(j)
            yield from walk(i + 1)
            chosen.pop()
            used.discard(j)

    yield from walk(0)


# ---------------------------------------------------------------------- scores
def _f1(common: int, n_pred: int, n_gold: int) -> float:
    if common == 0:
        return 0.0
    precision, recall = common / n_pred, common / n_gold
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[Row], b: list[Row]) -> int | None:
    """Length of the longest common subsequence of ``a`` and ``b`` (Hunt-Szymanski).

    None when the pairs of equal rows exceed :data:`MAX_LCS_PAIRS` (too slow to be worth it).
    """
    positions: dict[Row, list[int]] = defaultdict(list)
    for j, row in enumerate(b):
        positions[row].append(j)
    if sum(len(positions.get(row, ())) for row in a) > MAX_LCS_PAIRS:
        return None
    tails: list[int] = []  # tails[k]: smallest end (in b) of a common subsequence of length k+1
    for row in a:
        for j in reversed(positions.get(row, ())):
            k = bisect_left(tails, j)
            if k == len(tails):
                tails.append(j)
            else:
                tails[k] = j
    return len(tails)


def _ordered_row_f1(pred: list[Row], gold: list[Row]) -> float:
    """F1 where the common rows are the longest common subsequence: rows in the gold's order."""
    common = _lcs_length(pred, gold)
    if common is None:
        return _row_f1(pred, gold, distinct=False)
    return _f1(common, len(pred), len(gold))


def _row_f1(pred: list[Row], gold: list[Row], distinct: bool) -> float:
    if distinct:
        p, g = set(pred), set(gold)
        common = len(p & g)
        n_pred, n_gold = len(p), len(g)
    else:
        common = sum((Counter(pred) & Counter(gold)).values())
        n_pred, n_gold = len(pred), len(gold)
    return _f1(common, n_pred, n_gold)


def _result(correct: bool, f1: float) -> MatchResult:
    value = 1.0 if correct else 0.0
    if not correct:
        f1 = min(f1, MAX_REJECTED_F1)  # e.g. same rows, but the official row-sort test fails
    return MatchResult(correct=bool(correct), exact=value, relaxed=value, f1=float(f1))
