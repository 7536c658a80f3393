"""Filter hints (sqlenv/filter_hints.py): an empty, 0 or NULL exploration names the filter values that match
no row, with their column's values; read through the env a policy plays."""

import copy
import pickle
import re

import gymnasium as gym
import pytest
from conftest import write_city_dataset

from sqlenv import AGENT_ENV_ID, filter_hints
from sqlenv.filter_hints import Filter, FilterHints, literal_filters
from sqlenv.spec import EnvSpec

CITIES = [("Kraków", "Polska", 779), ("Zürich", "Schweiz", 421), ("Basel", "Schweiz", 178),
          ("Plain", "ASCII", 1), ("It's", "Quote", 2)]
QUESTIONS = [{"id": "q-swiss", "question": "How many Swiss cities are listed?",
              "sql": "SELECT COUNT(*) FROM city WHERE country = 'Schweiz'"}]


@pytest.fixture(scope="module")
def kwargs(tmp_path_factory):
    return write_city_dataset(tmp_path_factory.mktemp("hints"), CITIES, QUESTIONS)


@pytest.fixture
def db(kwargs):
    return f"{kwargs['data_dir']}/{kwargs['db']}"


def hint_lines(transcript: str) -> list[str]:
    return [line for line in transcript.splitlines() if line.startswith("No row of")]


# ---------------------------------------------------------------------- reading a query's filters
@pytest.mark.parametrize("sql,expected", [
    ("SELECT COUNT(*) FROM city WHERE country = 'Swiss'", [Filter(("city",), "country", "=", ("Swiss",))]),
    ("SELECT 1 FROM city c WHERE 'Swiss' = c.country", [Filter(("city",), "country", "=", ("Swiss",))]),
    ("SELECT 1 FROM city WHERE name IN ('Bern', 'Basel') AND name LIKE 'z%'",
     [Filter(("city",), "name", "IN", ("Bern", "Basel")), Filter(("city",), "name", "LIKE", ("z%",))]),
    ("SELECT 1 FROM city WHERE NOT country = 'Swiss' AND population = 3", []),   # negated; a number
    ("SELECT 1 FROM city WHERE country = name", []),                            # no literal
    ("SELECT 1 FROM city WHERE name LIKE 'a!%' ESCAPE '!'", []),                # ESCAPE: not read
    ("SELEC nothing (", []),
    ("SELECT 1 FROM city WHERE name = '" + "x" * filter_hints.MAX_SQL_CHARS + "'", []),
])
def test_literal_filters(sql, expected):
    assert literal_filters(sql) == expected


def test_at_most_max_filters_are_read():
    sql = "SELECT 1 FROM city WHERE " + " OR ".join(f"name = 'n{i}'" for i in range(10))
    assert len(literal_filters(sql)) == filter_hints.MAX_FILTERS


# ---------------------------------------------------------------------- what a hint says
def test_a_missing_value_is_named_with_the_columns_values_closest_first(db):
    hints = FilterHints().hints(db, "SELECT COUNT(*) FROM city WHERE country = 'Schwiez' AND name = 'Basel'")
    assert hints == ["No row of city has country = 'Schwiez'; country's values, closest first: 'Schweiz', "
                     "'ASCII', 'Quote', 'Polska'."]


def test_a_value_of_another_column_is_named_with_that_column(db):
    hints = FilterHints()
    assert hints.hints(db, "SELECT COUNT(*) FROM city WHERE country = 'Basel'") == [
        "No row of city has country = 'Basel'; 'Basel' is a value of name."]
    assert hints.hints(db, "SELECT COUNT(*) FROM city WHERE name LIKE 'schw%'") == [
        "No row of city has name LIKE 'schw%'; 'schw%' matches values of country."]


def test_in_like_and_quotes(db):
    hints = FilterHints().hints(db, "SELECT 1 FROM city WHERE name IN ('Basel', 'Its') OR name LIKE 'z_rich'")
    assert hints[0].startswith("No row of city has name = 'Its'; name's values, closest first: 'It''s', ")
    assert len(hints) == 1  # LIKE 'z_rich' matches 'Zürich': _ is any one character, ASCII case folded
    assert FilterHints().hints(db, "SELECT 1 FROM city WHERE name LIKE '%ZURICH%'") == [
        "No row of city has name LIKE '%ZURICH%'; name's values, closest first: 'Zürich', 'It''s', 'Plain', "
        "'Kraków', 'Basel'."]


def test_no_hint_when_every_value_exists_or_the_query_cannot_be_read(db, tmp_path):
    hints = FilterHints()
    assert hints.hints(db, "SELECT COUNT(*) FROM city WHERE country = 'Schweiz' AND population > 1000") == []
    assert hints.hints(db, "SELECT COUNT(*) FROM town WHERE country = 'Swiss'") == []  # no such table
    assert hints.hints(db, "SELECT COUNT(*) FROM city WHERE colour = 'red'") == []     # no such column
    assert hints.hints(str(tmp_path / "missing.sqlite"), "SELECT 1 FROM city WHERE name = 'x'") == []


def test_a_table_too_large_to_know_every_value_gets_no_hint(db, monkeypatch):
    monkeypatch.setattr(filter_hints, "SCAN_ROWS", 4)  # the city table has 5 rows
    assert FilterHints().hints(db, "SELECT 1 FROM city WHERE country = 'Swiss'") == []


# ---------------------------------------------------------------------- through the env
def test_an_empty_or_zero_exploration_gets_the_hint_only_with_filter_hints(kwargs):
    plain, hinted = (gym.make(AGENT_ENV_ID, **kwargs, filter_hints=flag) for flag in (False, True))
    try:
        for env in (plain, hinted):
            env.reset(options={"index": 0})
        move = "<sql>SELECT COUNT(*) FROM city WHERE country = 'Switzerland'</sql>"
        plain_obs, *_ = plain.step(move)
        obs, reward, terminated, truncated, info = hinted.step(move)
        assert hint_lines(plain_obs["transcript"]) == []
        assert obs["transcript"] == plain_obs["transcript"] + (
            "\nNo row of city has country = 'Switzerland'; country's values, closest first: 'Schweiz', 'ASCII', "
            "'Quote', 'Polska'.")
        assert (reward, terminated, truncated) == (0.0, False, False) and info["move_errors"] == [None]
        # an empty result too; a result with rows does not get one, nor does an error
        obs, *_, info = hinted.step("<sql>SELECT name FROM city WHERE country = 'Swiss'</sql>")
        assert info["result"].startswith("Turn 2/5") and len(hint_lines(info["result"])) == 1
        obs, *_, info = hinted.step("<sql>SELECT name FROM city WHERE country <> 'Swiss'</sql>")
        assert hint_lines(info["result"]) == []
        obs, *_, info = hinted.step("<sql>SELECT nme FROM city WHERE country = 'Swiss'</sql>")
        assert hint_lines(info["result"]) == [] and info["move_errors"][-1] == "no_such_column"
        # the answer is scored as ever: hints change what an exploration shows, never a reward
        *_, reward, terminated, _, info = hinted.step("<answer>SELECT COUNT(*) FROM city WHERE country = 'Schweiz'"
                                                      "</answer>")
        assert (reward, terminated, info["correct"]) == (1.0, True, True)
    finally:
        plain.close()
        hinted.close()


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_copied_env_still_hints(kwargs, how):
    env = gym.make(AGENT_ENV_ID, **kwargs, filter_hints=True).unwrapped
    env.reset(options={"index": 0})
    twin = pickle.loads(pickle.dumps(env)) if how == "pickle" else copy.deepcopy(env)
    try:
        obs, *_ = twin.step("<sql>SELECT COUNT(*) FROM city WHERE name = 'Zurich'</sql>")
        assert re.search(r"No row of city has name = 'Zurich'; name's values, closest first: 'Zürich', ",
                         obs["transcript"])
    finally:
        twin.close()
        env.close()


def test_filter_hints_is_a_setting_of_multi_turn_envs_only(kwargs):
    with pytest.raises(ValueError, match=r"filter_hints='yes' must be True or False"):
        gym.make(AGENT_ENV_ID, **kwargs, filter_hints="yes")
    with pytest.raises(ValueError, match=r"filter_hints=True needs max_turns > 1"):
        EnvSpec(dataset="generated", filter_hints=True)
    spec = EnvSpec(dataset="generated", split="dev", max_turns=3, filter_hints=True)
    assert EnvSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in spec.to_dict().items() if k != "filter_hints"}  # written before the setting existed
    assert EnvSpec.from_dict(old).filter_hints is False
    env = spec.make()
    try:
        assert env.filter_hints is not None
    finally:
        env.close()


def test_a_columns_values_are_read_once(db):
    hints = FilterHints()
    sql = "SELECT COUNT(*) FROM city WHERE country = 'Swiss'"
    assert hints.hints(db, sql) != []
    (key,) = [key for key in hints._values if key[-1] == "country"]
    hints._values[key] = ("Swiss",)  # what the cache holds is what the second call reads, not the file
    assert hints.hints(db, sql) == []
