"""sqlenv.rewards: the five presets, their ranges, the error for an unknown name, the one table."""

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import load_script

from sqlenv.comparators import compare
from sqlenv.matching import MatchResult, match_answer
from sqlenv.rewards import (
    ARCTIC_EXECUTES,
    PARTIAL_WRONG_MAX,
    REWARD_PRESETS,
    RewardPreset,
    reward,
    reward_preset,
    reward_range,
)


@dataclass(frozen=True)
class Result:
    """Stands in for executor.ExecutionResult: rewards read ``.error`` (and ``.rows`` for arctic-nofloor)."""

    error: str | None = None
    rows: tuple = (("Cairo",),)


OK, FAILED = Result(), Result(error="syntax")
RIGHT = MatchResult(correct=True, exact=1.0, relaxed=1.0, f1=1.0)
WRONG = MatchResult(correct=False, exact=0.0, relaxed=0.0, f1=0.0)
PARTLY = MatchResult(correct=False, exact=0.0, relaxed=0.67, f1=0.8)


def test_presets():
    assert tuple(REWARD_PRESETS) == ("binary", "paper", "partial", "arctic", "arctic-nofloor")


def test_arctic_is_one_right_a_tenth_executes_zero_fails():
    assert ARCTIC_EXECUTES == 0.1
    assert reward("arctic", FAILED, None) == 0.0
    assert reward("arctic", OK, WRONG) == 0.1
    assert reward("arctic", OK, PARTLY) == 0.1  # no partial credit
    assert reward("arctic", OK, RIGHT) == 1.0
    assert reward_range("arctic") == (0.0, 1.0)


def test_arctic_pays_a_list_holding_the_gold_item_what_any_wrong_answer_earns():
    rows = (("Cairo",), ("Doha",), ("Lima",), ("Oslo",))
    match = match_answer(rows, "Cairo")  # EMS and REMS accept it; the matcher does not
    assert match.exact == 1.0 and match.relaxed == 1.0 and not match.correct
    assert reward("arctic", OK, match) == 0.1
    assert reward("paper", OK, match) == 1101.0  # the hole arctic closes


def test_arctic_through_the_env():
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(split="dev", reward="arctic")
    index = next(i for i in range(len(env.dataset)) if env.example(i).gold_sql)
    env.reset(options={"index": index})
    scored = env.score_group([env.example(index).gold_sql, "SELECT 'not the answer'", "SELEC", ""])
    assert [r for r, _ in scored] == [1.0, 0.1, 0.0, 0.0]
    assert env.reward_range == (0.0, 1.0)


@pytest.mark.parametrize("rows,rendered", [(((0,),), "0"), ((), ""), (((None,),), "None"), (((0.0,),), "0")])
def test_arctic_nofloor_pays_nothing_for_a_wrong_floor_answer(rows, rendered):
    from sqlenv.matching import result_to_answer

    assert result_to_answer(rows) == rendered
    floor = Result(rows=rows)
    assert reward("arctic", floor, WRONG) == 0.1  # what the drift collected
    assert reward("arctic-nofloor", floor, WRONG) == 0.0
    assert reward("arctic-nofloor", floor, RIGHT) == 1.0  # the gold is itself a floor


def test_arctic_nofloor_keeps_the_tenth_for_a_query_that_found_something():
    for rows in (((2,),), (("Cairo",), ("Doha",)), (("None of them",),)):
        assert reward("arctic-nofloor", Result(rows=rows), WRONG) == 0.1
    assert reward("arctic-nofloor", FAILED, None) == 0.0
    assert reward_range("arctic-nofloor") == (0.0, 1.0)


def test_arctic_nofloor_needs_rows():
    @dataclass(frozen=True)
    class Bare:
        error: str | None = None

    with pytest.raises(ValueError, match="result.rows"):
        reward("arctic-nofloor", Bare(), WRONG)


def test_arctic_nofloor_through_the_env():
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(split="dev", reward="arctic-nofloor")
    index = next(i for i in range(len(env.dataset)) if env.example(i).gold_sql and env.example(i).answer != "0")
    env.reset(options={"index": index})
    queries = [env.example(index).gold_sql, "SELECT 'not the answer'", "SELECT 0", "SELECT 1 WHERE 0", "SELEC"]
    scored = env.score_group(queries)
    assert [r for r, _ in scored] == [1.0, 0.1, 0.0, 0.0, 0.0]
    assert [i["prediction"] for _, i in scored][1:4] == ["not the answer", "0", ""]


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


# ---------------------------------------------------------------------- issue 11 (6): order counts
SINGERS = [("Ana",), ("Eli",), ("Chen",), ("Bo",)]
BY_AGE = "SELECT name FROM singer ORDER BY age DESC"
# (case, the rejected answer's match, the right answer's match): same items, wrong order or
# rejected by the official row-sort test
REJECTED_SAME_ITEMS = [
    ("spider ORDER BY, reversed",
     compare(SINGERS[::-1], SINGERS, "spider", gold_sql=BY_AGE),
     compare(SINGERS, SINGERS, "spider", gold_sql=BY_AGE)),
    ("ordered comparator, reversed",
     compare(SINGERS[::-1], SINGERS, "ordered"), compare(SINGERS, SINGERS, "ordered")),
    ("spider official row-sort test",
     compare([(1, 1.5)], [(1.0, 1.5)], "spider"), compare([(1.0, 1.5)], [(1.0, 1.5)], "spider")),
    ("answer asked in year order, reversed",
     match_answer([("MedalGold",), ("MedalSilver",), ("MedalBronze",)], "Bronze, Silver, Gold",
                  ordered=True),
     match_answer([("MedalBronze",), ("MedalSilver",), ("MedalGold",)], "Bronze, Silver, Gold",
                  ordered=True)),
]


@pytest.mark.parametrize("preset", REWARD_PRESETS)
@pytest.mark.parametrize("case,rejected,right", REJECTED_SAME_ITEMS,
                         ids=[c[0] for c in REJECTED_SAME_ITEMS])
def test_rejected_answer_with_the_same_items_earns_less_than_the_right_one(
        preset, case, rejected, right):
    assert not rejected.correct and right.correct
    assert reward(preset, OK, rejected) < reward(preset, OK, right)
    assert reward(preset, OK, right) == reward_range(preset)[1]
    if preset == "partial":
        assert reward(preset, OK, rejected) < 1.0


def test_rejected_rewards_have_the_expected_values():
    spider_reversed, _ = REJECTED_SAME_ITEMS[0][1:]
    # longest common subsequence of a reversed 4-list is 1 row: F1 = 2 * 1 / (4 + 4)
    assert reward("partial", OK, spider_reversed) == pytest.approx(0.25)
    assert reward("binary", OK, spider_reversed) == 0.0
    assert reward("paper", OK, spider_reversed) == 1.0  # exact = relaxed = 0 for comparators
    year_order, _ = REJECTED_SAME_ITEMS[3][1:]
    assert reward("partial", OK, year_order) == pytest.approx(1 / 3)
    assert reward("paper", OK, year_order) == pytest.approx(101.0)  # REMS 1, EMS 0 (order)


def test_partial_caps_any_rejected_match_below_one():
    inconsistent = MatchResult(correct=False, exact=0.0, relaxed=0.0, f1=1.0)
    assert reward("partial", OK, inconsistent) == PARTIAL_WRONG_MAX == 0.99
    assert reward("partial", OK, MatchResult(False, 0.0, 0.0, 0.995)) == 0.99
    assert reward("partial", OK, PARTLY) == pytest.approx(0.8)  # below the cap: unchanged


# ------------------------------------------------------------- issue 22: one preset table
REPO = Path(__file__).resolve().parents[1]


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of any level."""
    body = text.split(heading, 1)[1]
    return re.split(r"\n\s*#+ ", body, maxsplit=1)[0]


def test_every_preset_is_named_in_the_env_docstring_and_in_docs_env_md():
    from sqlenv.env import TextToSQLEnv

    docstring = _section(TextToSQLEnv.__doc__, "## Rewards")
    rows = _section((REPO / "docs" / "env.md").read_text(), "## Reward presets")
    listed = re.findall(r"^\| `([^`]+)`", rows, flags=re.M)
    assert sorted(listed) == sorted(REWARD_PRESETS)
    for name in REWARD_PRESETS:
        assert f'``"{name}"``' in docstring, name


def test_the_one_check_names_the_field_and_the_choices_for_any_value():
    for bad in ("dense", ["binary"], None):
        expected = r"reward=.* is not a reward preset; choose one of \['binary'"
        with pytest.raises(ValueError, match=expected):
            reward_preset(bad)
    assert reward_preset("paper").range == reward_range("paper") == (-100.0, 1101.0)


HALFWAY = RewardPreset("halfway", 0.0, (0.0, 1.0),
                       lambda result, match: 1.0 if match.correct else 0.5,
                       "error 0, executed but wrong 0.5, correct 1")


def _load(path: Path):
    return load_script(path, f"rewards_test_{path.stem}")


def _example_help(path: Path, capsys) -> str:
    with pytest.raises(SystemExit):
        _load(path).parse_args(["--help"])
    return capsys.readouterr().out


def _helps(capsys) -> dict[str, str]:
    """The --reward help each command line shows, whitespace folded."""
    import argparse

    from sqlenv.__main__ import _env_args

    sqlenv_cli = argparse.ArgumentParser()
    _env_args(sqlenv_cli)
    helps = {"python -m sqlenv": sqlenv_cli.format_help(),
             "evaluate.py": _load(REPO / "benchmarks" / "evaluate.py").build_parser().format_help()}
    for example in ("trl_grpo.py", "trl_environment.py"):
        helps[example] = _example_help(REPO / "examples" / example, capsys)
    if importlib.util.find_spec("torch"):
        from agents.grpo_config import build_parser

        helps["grpo_train.py"] = build_parser().format_help()
    if importlib.util.find_spec("openenv"):
        from sqlenv.integrations.openenv.server import _parser

        helps["openenv server"] = _parser().format_help()
    return {name: " ".join(text.split()) for name, text in helps.items()}


def test_one_table_entry_is_all_a_new_preset_takes(monkeypatch, capsys):
    from sqlenv.env import TextToSQLEnv
    from sqlenv.integrations.trl import SQLReward

    monkeypatch.setitem(REWARD_PRESETS, "halfway", HALFWAY)
    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps at this width: no name split at its hyphen
    env = TextToSQLEnv(split="dev", reward="halfway")
    index = next(i for i in range(len(env.dataset)) if env.example(i).gold_sql)
    env.reset(options={"index": index})
    scored = env.score_group([env.example(index).gold_sql, "SELECT 'not the answer'", "SELEC"])
    assert [r for r, _ in scored] == [1.0, 0.5, 0.0]
    assert env.reward_range == (0.0, 1.0)
    assert SQLReward(env.dataset, reward="halfway").__name__ == "sqlenv_halfway"
    if importlib.util.find_spec("torch"):
        from agents.grpo_config import make_config

        assert make_config(reward="halfway").reward == "halfway"
    helps = _helps(capsys)
    assert len(helps) >= 4
    for name, text in helps.items():
        assert "halfway: error 0, executed but wrong 0.5, correct 1" in text, name
        assert all(f"{preset}:" in text for preset in REWARD_PRESETS), name
