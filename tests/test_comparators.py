"""Result-set comparators against the documented behaviour of the official evaluators.

BIRD (``evaluation.py``, ``compute_execution_accuracy``): ``set(predicted) == set(gold)``.
Spider test-suite (``exec_eval.py``, ``result_eq``): bag semantics, row order only when the gold
SQL has ORDER BY, any column permutation. Both count empty-vs-empty as correct; we do not by default.
"""

import pytest

from sqlenv.comparators import COMPARATORS, Comparator, compare, get_comparator, order_matters
from sqlenv.matching import MatchResult


def ok(pred, gold, name, **kw) -> bool:
    return compare(pred, gold, name, **kw).correct


# ---------------------------------------------------------------------- BIRD: set(pred) == set(gold)
def test_bird_ignores_row_order():
    assert ok([(1,), (2,)], [(2,), (1,)], "bird")


def test_bird_ignores_duplicate_rows():
    # set() collapses duplicates, so a prediction missing DISTINCT still matches.
    assert ok([("a",), ("a",), ("b",)], [("a",), ("b",)], "bird")


def test_bird_column_order_matters():
    # rows are tuples: (1, 'x') != ('x', 1)
    assert not ok([("x", 1)], [(1, "x")], "bird")


def test_bird_extra_column_is_wrong():
    assert not ok([(1, "x")], [(1,)], "bird")


def test_bird_int_equals_float_like_python_sets():
    # hash(1) == hash(1.0) and 1 == 1.0, so BIRD's set comparison accepts 1 for 1.0.
    assert ok([(1,)], [(1.0,)], "bird")
    assert not ok([(1,)], [(1.0,)], "bird", normalize=False)


def test_bird_null_equals_null_only():
    assert ok([(None,)], [(None,)], "bird")
    assert not ok([(0,)], [(None,)], "bird")
    assert not ok([("None",)], [(None,)], "bird")


def test_bird_ignores_order_by():
    assert ok([(2,), (1,)], [(1,), (2,)], "bird", gold_sql="SELECT x FROM t ORDER BY x")


# ---------------------------------------------------------------------- Spider: result_eq
def test_spider_bag_semantics_duplicates_count():
    assert not ok([(1,), (2,)], [(1,), (1,), (2,)], "spider")
    # same length, same set, different multiplicities
    assert not ok([(1,), (1,), (2,)], [(1,), (2,), (2,)], "spider")
    assert ok([(1,), (2,), (1,)], [(1,), (1,), (2,)], "spider")


def test_spider_row_order_ignored_without_order_by():
    assert ok([(2,), (1,)], [(1,), (2,)], "spider", gold_sql="SELECT x FROM t")


def test_spider_row_order_counts_with_order_by():
    gold_sql = "SELECT x FROM t ORDER BY x"
    assert not ok([(2,), (1,)], [(1,), (2,)], "spider", gold_sql=gold_sql)
    assert ok([(1,), (2,)], [(1,), (2,)], "spider", gold_sql=gold_sql)


def test_spider_column_permutation_allowed():
    gold = [(1, "a"), (2, "b")]
    assert ok([("a", 1), ("b", 2)], gold, "spider")
    # with ORDER BY the permutation must also keep the row order
    assert ok([("a", 1), ("b", 2)], gold, "spider", gold_sql="SELECT id, name FROM t ORDER BY id")
    assert not ok(
        [("b", 2), ("a", 1)], gold, "spider", gold_sql="SELECT id, name FROM t ORDER BY id"
    )


def test_spider_permutation_must_be_one_for_all_rows():
    # each row is a permutation of a gold row, but no single column permutation works
    assert not ok([(1, 2), (3, 4)], [(1, 2), (4, 3)], "spider")
    # quick_rej passes (unordered rows equal) yet no permutation matches: the full search decides
    assert not ok([(1, 2, 3), (1, 3, 2)], [(1, 2, 3), (2, 1, 3)], "spider")


def test_spider_column_count_must_match():
    assert not ok([(1, "a")], [(1,)], "spider")


def test_spider_many_columns_permutation():
    gold = [tuple(range(i, i + 6)) for i in range(5)]
    pred = [tuple(reversed(r)) for r in gold]
    assert ok(pred, gold, "spider")


def test_spider_int_equals_float():
    assert ok([(3,)], [(3.0,)], "spider")


def test_order_matters_detection():
    assert order_matters("SELECT a FROM t ORDER BY a")
    assert order_matters("select a from t order  by a")
    assert order_matters("SELECT a FROM t\nORDER\n  BY a DESC LIMIT 1")
    assert not order_matters("SELECT a FROM t")
    assert not order_matters(None)
    assert not order_matters("SELECT border_by FROM t")


# ---------------------------------------------------------------------- ordered
def test_ordered_is_exact_sequence():
    assert ok([(1,), (2,)], [(1,), (2,)], "ordered")
    assert not ok([(2,), (1,)], [(1,), (2,)], "ordered")
    assert not ok([(1,), (1,), (2,)], [(1,), (2,)], "ordered")
    assert not ok([("a", 1)], [(1, "a")], "ordered")


# ---------------------------------------------------------------------- shared behaviour
@pytest.mark.parametrize("name", COMPARATORS)
def test_empty_vs_empty_is_off_by_default(name):
    # Both official evaluators return True here; as a training reward that pays for any query
    # that returns nothing (e.g. WHERE 1=0), so we refuse unless asked.
    assert not ok([], [], name)
    assert ok([], [], name, empty_match=True)
    assert compare([], [], name, empty_match=True).f1 == 1.0


@pytest.mark.parametrize("name", COMPARATORS)
def test_empty_vs_nonempty_never_matches(name):
    assert not ok([], [(1,)], name, empty_match=True)
    assert not ok([(1,)], [], name, empty_match=True)


@pytest.mark.parametrize("name", COMPARATORS)
def test_float_tolerance(name):
    assert not ok([(0.1 + 0.2,)], [(0.3,)], name)
    assert ok([(0.1 + 0.2,)], [(0.3,)], name, float_tol=1e-9)
    assert not ok([(0.31,)], [(0.3,)], name, float_tol=1e-9)


def test_float_tolerance_multiset_and_set():
    gold = [(1.0, "a"), (2.0, "b"), (2.0, "b")]
    pred = [(2.0000000001, "b"), (1.0000000001, "a"), (2.0, "b")]
    assert ok(pred, gold, "spider", float_tol=1e-6)
    assert ok(pred[:2], gold, "bird", float_tol=1e-6)
    assert not ok(pred[:2], gold, "spider", float_tol=1e-6)


@pytest.mark.parametrize("name", COMPARATORS)
def test_bytes_and_bool_normalised(name):
    assert ok([(b"abc",)], [("abc",)], name)
    assert ok([(True,)], [(1,)], name)
    assert not ok([(True,)], [(1,)], name, normalize=False)


def test_match_result_fields():
    right = compare([(1,)], [(1,)], "bird")
    assert right == MatchResult(correct=True, exact=1.0, relaxed=1.0, f1=1.0)
    wrong = compare([(1,), (2,), (3,), (4,)], [(1,)], "spider")
    assert (wrong.correct, wrong.exact, wrong.relaxed) == (False, 0.0, 0.0)
    assert wrong.f1 == pytest.approx(0.4)  # precision 1/4, recall 1
    # bird's F1 is over distinct rows
    assert compare([(1,), (1,), (2,)], [(1,), (3,)], "bird").f1 == pytest.approx(0.5)
    assert compare([(9,)], [(1,)], "ordered").f1 == 0.0


def test_comparator_object_and_errors():
    cmp = get_comparator("spider", empty_match=True)
    assert isinstance(cmp, Comparator) and cmp([], []).correct
    assert get_comparator(cmp) is cmp
    with pytest.raises(ValueError, match="choose one of"):
        Comparator("exact")
    with pytest.raises(ValueError, match="choose one of"):
        compare([], [], "nope")
    with pytest.raises(ValueError):
        Comparator("bird", float_tol=-1)


def test_scalar_rows_accepted():
    assert ok(["a", "b"], [("a",), ("b",)], "bird")
