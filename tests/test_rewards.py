"""sqlenv.rewards: the three presets, their ranges and the error for an unknown preset."""

from dataclasses import dataclass

import pytest

from sqlenv.matching import MatchResult, match_answer
from sqlenv.rewards import REWARD_PRESETS, reward, reward_range


@dataclass(frozen=True)
class Result:
    """Stands in for executor.ExecutionResult: rewards only read ``.error``."""

    error: str | None = None


OK, FAILED = Result(), Result(error="syntax")
RIGHT = MatchResult(correct=True, exact=1.0, relaxed=1.0, f1=1.0)
WRONG = MatchResult(correct=False, exact=0.0, relaxed=0.0, f1=0.0)
PARTLY = MatchResult(correct=False, exact=0.0, relaxed=0.67, f1=0.8)


def test_presets():
    assert REWARD_PRESETS == ("binary", "paper", "partial")


def test_binary():
    assert reward("binary", FAILED, None) == -1.0
    assert reward("binary", OK, WRONG) == 0.0
    assert reward("binary", OK, PARTLY) == 0.0
    assert reward("binary", OK, RIGHT) == 1.0


def test_partial_is_f1_and_one_when_correct():
    assert reward("partial", FAILED, None) == -1.0
    assert reward("partial", OK, WRONG) == 0.0
    assert reward("partial", OK, PARTLY) == pytest.approx(0.8)
    assert reward("partial", OK, RIGHT) == 1.0


def test_paper():
    assert reward("paper", FAILED, None) == -100.0
    assert reward("paper", OK, WRONG) == 1.0  # valid SQL
    assert reward("paper", OK, PARTLY) == pytest.approx(1 + 67)
    assert reward("paper", OK, RIGHT) == 1101.0


def test_paper_bonus_follows_ems_not_the_normalised_matcher():
    yes_lowercase = match_answer((("yes",),), "Yes")  # correct, but EMS is case-sensitive
    assert yes_lowercase.correct
    assert reward("paper", OK, yes_lowercase) == 1.0
    assert reward("binary", OK, yes_lowercase) == 1.0


def test_error_ignores_any_match():
    for preset in REWARD_PRESETS:
        assert reward(preset, FAILED, RIGHT) == reward_range(preset)[0]


@pytest.mark.parametrize("preset", REWARD_PRESETS)
def test_rewards_stay_in_range(preset):
    low, high = reward_range(preset)
    values = [reward(preset, FAILED, None)]
    values += [reward(preset, OK, m) for m in (RIGHT, WRONG, PARTLY)]
    assert all(low <= v <= high for v in values)
    assert min(values) == low and max(values) == high


def test_every_row_answer_scores_low_under_partial_and_binary():
    rows = tuple((f"City{i}",) for i in range(30)) + (("Cairo",),)
    match = match_answer(rows, "Cairo")
    assert reward("binary", OK, match) == 0.0
    assert reward("partial", OK, match) < 0.1


def test_count_zero_on_a_yes_no_question_earns_nothing():
    match = match_answer(((0,),), "No")
    assert reward("binary", OK, match) == 0.0
    assert reward("partial", OK, match) == 0.0


def test_executed_query_needs_a_match():
    with pytest.raises(ValueError, match="MatchResult"):
        reward("binary", OK, None)


@pytest.mark.parametrize(
    "call", [lambda: reward("dense", OK, RIGHT), lambda: reward_range("dense")]
)
def test_unknown_preset_names_the_field_and_the_choices(call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "reward" in message and "'dense'" in message
    assert all(preset in message for preset in REWARD_PRESETS)


def test_works_with_the_real_execution_result_when_present():
    executor = pytest.importorskip("sqlenv.executor")
    result = executor.ExecutionResult(
        rows=((1,),), columns=("n",), error=None, message="", elapsed=0.0
    )
    assert reward("binary", result, match_answer(result.rows, "1")) == 1.0
