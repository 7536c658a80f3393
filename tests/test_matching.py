"""sqlenv.matching: rendering, the dataset's EMS/REMS, the normalised matcher and F1.

One rule per test; the traps (COUNT 0 vs "No", every-row answers) have their own tests.
"""

import csv
import random
import re
import sqlite3

import pytest

from sqlenv.matching import (
    MatchResult,
    ems,
    f1,
    match_answer,
    normalize_item,
    rems,
    result_to_answer,
)

TEMPLATE_CSV = (
    "Dataset_Creation/Questions_Answers_with_SQL_Logic/One_Sample_Per_Question_Template.csv"
)


def correct(rows, gold):
    return match_answer(rows, gold).correct


# ----------------------------------------------------------------------------- result_to_answer


def test_render_single_value():
    assert result_to_answer(((2,),)) == "2"
    assert result_to_answer((("Yes",),)) == "Yes"


def test_render_integral_float_drops_point_zero():
    assert result_to_answer(((2.0,),)) == "2"
    assert result_to_answer(((1.5,),)) == "1.5"


def test_render_rows_joined_by_comma_and_columns_by_space():
    rows = (("World Championships", 2023), ("World Games", 2022))
    assert result_to_answer(rows) == "World Championships 2023, World Games 2022"


def test_render_medal_type_as_gold_answers_write_it():
    assert result_to_answer((("MedalGold",),)) == "Gold"
    assert result_to_answer((("MedalBronze",),)) == "Bronze"


def test_render_null_empty_and_whitespace():
    assert result_to_answer(((None,),)) == "None"
    assert result_to_answer(()) == ""
    assert result_to_answer(((" 2014",), ("Men's team ",))) == "2014, Men's team"


def test_render_keeps_order_and_duplicates():
    assert result_to_answer((("Cairo",), ("Doha",), ("Cairo",))) == "Cairo, Doha, Cairo"


# ----------------------------------------------------------------------------- EMS / REMS


def test_ems_items_in_any_order():
    assert ems("Kuala Lumpur, Rio de Janeiro", "Rio de Janeiro, Kuala Lumpur") == 1.0


def test_ems_gold_item_inside_a_predicted_item_as_whole_word():
    assert ems("World Championships 2023", "2023") == 1.0
    assert ems("2023 medals", "2023") == 1.0
    assert ems("20234", "2023") == 0.0  # not a whole word


def test_ems_ignores_extra_predicted_items_as_the_dataset_script_does():
    assert ems("Cairo, Doha, Lima, Oslo", "Cairo") == 1.0


def test_ems_needs_every_gold_item():
    assert ems("2015, 2013", "2015, 2013, 2014") == 0.0


def test_rems_is_the_fraction_found_rounded_to_two_places():
    assert rems("2015, 2013", "2015, 2013, 2014") == 0.67
    assert rems("Lima", "Cairo") == 0.0


def test_ems_strips_items():
    assert ems("2014", " 2014") == 1.0
    assert ems("Team ,Singles", "Team, Singles") == 1.0


def test_ems_is_case_sensitive_like_the_dataset_script_unless_asked():
    assert ems("yes", "Yes") == 0.0
    assert ems("yes", "Yes", case_sensitive=False) == 1.0
    assert rems("team, SINGLES", "Team, Singles", case_sensitive=False) == 1.0


# ----------------------------------------------------------------------------- normalised matcher


def test_numbers_equal_across_types_and_formats():
    for value in (2, 2.0, "2", "2.00", " 2 "):
        assert correct(((value,),), "2"), value
    assert correct(((1987,),), "1987")


def test_different_numbers_are_wrong():
    assert not correct(((3,),), "2")
    assert not correct(((2.5,),), "2")


def test_float_noise_is_ignored():
    assert correct(((0.1 + 0.2,),), "0.3")


def test_yes_no_case_insensitive():
    assert correct((("Yes",),), "yes")
    assert correct((("yes",),), "Yes")
    assert correct((("NO",),), "No")


def test_true_false_words_are_yes_no():
    assert correct((("true",),), "Yes")
    assert correct((("False",),), "No")


def test_count_zero_is_not_no():
    """The measured reward hack: an unrelated COUNT(*) returning 0 must not answer "No"."""
    assert not correct(((0,),), "No")
    assert not correct(((1,),), "Yes")
    assert not correct((("0",),), "No")
    assert not correct(((0.0,),), "No")


def test_yes_is_not_no():
    assert not correct((("Yes",),), "No")


def test_case_and_whitespace_insensitive():
    assert correct((("rio de  janeiro",), ("KUALA LUMPUR ",)), "Rio de Janeiro, Kuala Lumpur")


def test_unicode_forms_compare_equal():
    assert correct((("Spe\u0301cial dressage",),), "Sp\u00e9cial dressage")


def test_lists_are_order_insensitive():
    assert correct(((2013,), (2014,), (2015,)), "2015, 2013, 2014")


def test_missing_or_extra_list_item_is_wrong():
    assert not correct(((2013,), (2014,)), "2015, 2013, 2014")
    assert not correct(((2013,), (2014,), (2015,), (2016,)), "2015, 2013, 2014")


def test_duplicate_predicted_items_count():
    assert not correct((("Cairo",), ("Cairo",)), "Cairo")


def test_duplicates_in_both_match_as_multisets():
    assert correct((("Team",), ("Team",), ("Singles",)), "Team, Singles, Team")


def test_gold_with_repeated_items_compares_as_a_set():
    """37 gold lists repeat a format name (trailing-space variants in the source)."""
    gold = "Mixed team, Men's singles , Men's team, Men's singles, Men's team , Mixed team"
    assert correct((("Mixed team",), ("Men's singles",), ("Men's team",)), gold)
    assert not correct((("Mixed team",), ("Men's singles",)), gold)


def test_medal_type_matches_gold_colour():
    assert correct((("MedalGold",),), "Gold")
    assert correct((("medalsilver",),), "Silver")
    assert not correct((("MedalSilver",),), "Gold")


def test_multi_column_row_matches_values_joined_by_space():
    rows = (("World Championships", 2023), ("World Games", 2022))
    assert correct(rows, "World Championships 2023, World Games 2022")
    assert correct(rows[::-1], "World Championships 2023, World Games 2022")


def test_multi_column_row_in_other_column_order():
    assert correct(((2023, "World Championships"),), "World Championships 2023")


def test_multi_column_row_with_wrong_value_is_wrong():
    assert not correct((("World Championships", 2022),), "World Championships 2023")
    assert not correct((("World Championships", 2023, "Doha"),), "World Championships 2023")


def test_rows_are_flattened_into_values():
    assert correct((("Individual", "Team"),), "Individual, Team")


def test_extra_column_is_wrong():
    assert not correct((("Cairo", 3),), "Cairo")


def test_group_concat_string_is_split_on_commas():
    assert correct((("Team, Singles",),), "Team, Singles")
    assert correct((("Singles,Team",),), "Team, Singles")


def test_empty_result_is_wrong_for_a_non_empty_gold():
    for gold in ("0", "No", "Cairo", "2015, 2013"):
        assert not correct((), gold), gold


def test_null_is_not_zero():
    assert not correct(((None,),), "0")
    assert not correct(((None,),), "No")


def test_null_matches_none():
    assert correct(((None,),), "None")
    assert not correct(((None,),), "Cairo")


def test_negative_sentence_gold_matches_empty_or_null_result():
    gold = "Zhang Jike has not won any Bronze Medals in Team World Championships"
    assert correct((), gold)
    assert correct(((None,),), gold)
    assert not correct(((2012,),), gold)
    assert not correct((("Doha",),), gold)


def test_format_template_gold_matches_the_medal_rows():
    """Type 39: "<year>  <location> <tournament> in <format> format" (the SQL adds the medal)."""
    gold = (
        "2010  New Delhi Commonwealth Games in Team recurve format, "
        "2010  Guangzhou Asian Games in Recurve team format"
    )
    rows = (
        ("MedalGold", 2010, "New Delhi", "Team recurve", "Commonwealth Games"),
        ("MedalBronze", 2010, "Guangzhou", "Recurve team", "Asian Games"),
    )
    assert correct(rows, gold)
    assert correct(tuple(row[1:] for row in rows), gold)  # without the medal column
    assert not correct(rows[:1], gold)
    wrong_place = (rows[0], ("MedalBronze", 2010, "Doha", "Recurve team", "Asian Games"))
    assert not correct(wrong_place, gold)


def test_format_template_with_doubled_spaces_from_the_source():
    gold = "2024  Chengdu Thomas Cup in Men's team  format"
    assert correct((("MedalSilver", 2024, "Chengdu", "Men's team ", "Thomas Cup"),), gold)


def test_normalize_item_forms():
    assert normalize_item("2.00") == normalize_item(2) == "2"
    assert normalize_item(True) == normalize_item("Yes") == "yes"
    assert normalize_item(0) != normalize_item("No")
    assert normalize_item(None) == normalize_item("None")
    assert normalize_item(b"Cairo") == "cairo"


# ----------------------------------------------------------------------------- F1


def test_f1_is_one_exactly_when_correct():
    assert f1(((2013,), (2014,), (2015,)), "2015, 2013, 2014") == 1.0
    assert f1(((2013,), (2014,)), "2015, 2013, 2014") < 1.0


def test_f1_every_row_answer_scores_low_while_ems_gives_full_marks():
    cities = [f"City{i}" for i in range(30)] + ["Cairo"]
    rows = tuple((c,) for c in cities)
    result = match_answer(rows, "Cairo")
    assert not result.correct
    assert result.exact == 1.0 and result.relaxed == 1.0  # the dataset's EMS ignores extra items
    assert result.f1 == pytest.approx(2 * (1 / 31) / (1 + 1 / 31))
    assert result.f1 < 0.1


def test_f1_partial_list():
    # 2 of 3 gold found, 2 predicted: P = 1, R = 2/3
    assert f1(((2013,), (2014,)), "2015, 2013, 2014") == pytest.approx(0.8)


def test_f1_duplicates_lower_precision():
    assert f1((("Cairo",), ("Cairo",)), "Cairo") == pytest.approx(2 * 0.5 / 1.5)


def test_f1_extra_column_gets_partial_credit():
    assert f1((("Cairo", 3),), "Cairo") == pytest.approx(2 * 0.5 / 1.5)


def test_f1_zero_for_the_yes_no_trap_and_empty_result():
    assert f1(((0,),), "No") == 0.0
    assert f1((), "2") == 0.0


def test_f1_credits_multi_column_rows():
    rows = (("World Championships", 2023), ("Olympic Games", 2012))
    assert f1(rows, "World Championships 2023, World Games 2022") == pytest.approx(0.5)


# ----------------------------------------------------------------------------- match_answer


def test_match_answer_fields():
    result = match_answer(((2.0,),), "2")
    assert result == MatchResult(correct=True, exact=1.0, relaxed=1.0, f1=1.0)


def test_match_answer_exact_uses_the_rendered_result_case_sensitively():
    result = match_answer((("yes",),), "Yes")
    assert result.correct and result.f1 == 1.0
    assert result.exact == 0.0  # the dataset's script is case-sensitive


def test_match_answer_accepts_lists_and_generators():
    assert match_answer([[2015], [2013]], "2013, 2015").correct
    assert match_answer((row for row in [(1,)]), "1").correct


def test_large_result_is_fast():
    rows = tuple((f"City{i}", i) for i in range(10_000))
    result = match_answer(rows, "City5 5, City7 7")
    assert not result.correct and 0 < result.f1 < 0.01


# ----------------------------------------------------------------------------- ordered=True (issue 11)


def test_ordered_needs_the_gold_order():
    gold = "Bronze, Silver, Gold"
    in_order = [("MedalBronze",), ("MedalSilver",), ("MedalGold",)]
    reversed_rows = list(reversed(in_order))
    assert match_answer(in_order, gold, ordered=True) == MatchResult(True, 1.0, 1.0, 1.0)
    wrong = match_answer(reversed_rows, gold, ordered=True)
    # longest common subsequence of a reversed 3-list: 1 item -> F1 = 2 * 1 / (3 + 3)
    assert (wrong.correct, wrong.exact, wrong.relaxed) == (False, 0.0, 1.0)
    assert wrong.f1 == pytest.approx(1 / 3)
    assert correct(reversed_rows, gold)  # by default order is ignored, as before


def test_ordered_needs_every_repeated_item():
    gold = "Gold, Silver, Gold"
    assert match_answer([("Gold",), ("Silver",), ("Gold",)], gold, ordered=True).correct
    assert not match_answer([("Gold",), ("Gold",), ("Silver",)], gold, ordered=True).correct
    # the set comparison for repeated gold items (TempTabQA-C's whitespace duplicates) is off
    distinct = match_answer([("Gold",), ("Silver",)], gold, ordered=True)
    assert not distinct.correct and distinct.f1 == pytest.approx(0.8)
    assert correct([("Gold",), ("Silver",)], gold)  # unordered: compared as sets


def test_ordered_readings_group_concat_and_multi_column_rows():
    assert match_answer([("Gold,Silver",)], "Gold, Silver", ordered=True).correct
    assert not match_answer([("Silver,Gold",)], "Gold, Silver", ordered=True).correct
    gold = "World Games 2022, World Championships 2023"
    rows = [(2022, "World Games"), ("World Championships", 2023)]  # any column order
    assert match_answer(rows, gold, ordered=True).correct
    assert not match_answer(list(reversed(rows)), gold, ordered=True).correct


def test_ordered_ems_needs_the_items_in_order():
    assert ems("Silver, Gold", "Gold, Silver") == 1.0
    assert ems("Silver, Gold", "Gold, Silver", ordered=True) == 0.0
    assert ems("Gold, Bronze, Silver", "Gold, Silver", ordered=True) == 1.0  # extras ignored


def test_ordered_f1_below_one_when_wrong_and_fast_on_large_results():
    gold = ", ".join(f"City{i}" for i in range(300))
    rotated = [(f"City{i}",) for i in list(range(1, 300)) + [0]]
    result = match_answer(rotated, gold, ordered=True)
    assert not result.correct and result.f1 == pytest.approx(0.99)  # 299/300, capped
    big = tuple((f"City{i}",) for i in range(10_000))
    assert match_answer(big, "City5, City7", ordered=True).f1 < 0.01
    assert f1(rotated, gold, ordered=True) == pytest.approx(0.99)


# ----------------------------------------------------------------------------- the 47 gold answers


def _template_rows(data_dir):
    with open(data_dir / TEMPLATE_CSV, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _medals_in(context):
    """(medal, year, location, format, tournament) rows of an infobox, as the gold SQL joins."""
    medals, tournament = [], None
    lines = context.split("Country Representing", 1)[-1].splitlines()[1:]
    for line in lines:
        if "\tMedal" in line:
            fmt, cells = line.split("\t", 1)
            for cell in cells.split(", "):
                parts = [p.strip() for p in cell.split(" | ")]
                if len(parts) == 3 and parts[1].isdigit():
                    medals.append((parts[0], int(parts[1]), parts[2], fmt, tournament))
        elif line.strip():
            tournament = line.strip()
    return medals


def _plausible_rows(qtype, answer, context):
    """Rows the way a gold query of this type would return them (not just the gold string split)."""
    items = [item.strip() for item in answer.split(",")]
    if qtype == "39":  # the latest medals, rebuilt from the infobox itself
        medals = _medals_in(context)
        latest = max(m[1] for m in medals)
        return tuple(m for m in medals if m[1] == latest)
    if qtype in ("21", "22"):  # tournament name, year
        return tuple((name, int(year)) for name, year in (i.rsplit(" ", 1) for i in items))
    if qtype == "71":
        return (("Medal" + answer.strip(),),)
    if answer in ("Yes", "No"):
        return ((answer,),)
    if all(re.fullmatch(r"-?\d+", i) for i in items):
        as_float = qtype == "55"  # ROUND(AVG(...)) is a REAL in SQLite
        return tuple(((float(i) if as_float else int(i)),) for i in items)
    return tuple((i,) for i in items)


def test_the_47_template_answers_match_plausible_rows(data_dir):
    examples = _template_rows(data_dir)
    assert len(examples) == 47
    for ex in examples:
        rows = _plausible_rows(ex["Types"], ex["Answers"], ex["Context"])
        shuffled = list(rows)
        random.Random(0).shuffle(shuffled)
        for candidate in (rows, tuple(shuffled)):
            result = match_answer(candidate, ex["Answers"])
            assert result.correct and result.f1 == 1.0, (ex["Types"], candidate, ex["Answers"])
        if ex["Types"] == "39":
            continue  # the gold's "... in <format> format" wording: see the next test
        rendered = result_to_answer(rows)
        expected = ", ".join(" ".join(item.split()) for item in ex["Answers"].split(","))
        assert rendered == expected, ex["Types"]
        assert ems(rendered, ex["Answers"]) == 1.0


def test_type_39_template_is_matched_but_not_rendered(data_dir):
    """A known gap: the rendered row is not the gold's wording, so the dataset's EMS is 0 for it."""
    (ex,) = [e for e in _template_rows(data_dir) if e["Types"] == "39"]
    rows = _plausible_rows("39", ex["Answers"], ex["Context"])
    result = match_answer(rows, ex["Answers"])
    assert result.correct and result.exact == 0.0


# Gold SQL whose result, on a database rebuilt from the infobox, differs from the gold answer in
# value (not in form): 55 (ROUND(AVG) gives 2, gold 1), 75 (the gold SQL joins format_id to
# athlete_id, so its answer depends on MySQL's ids), 95 (22 vs 24) and 1006 (0 vs 2).
VALUE_MISMATCHES = {"55", "75", "95", "1006"}


def test_the_47_gold_sql_results_match_their_answers(data_dir, tmp_path):
    """End to end: run each gold SQL (transpiled to SQLite) on its infobox; match the answer."""
    sqlglot = pytest.importorskip("sqlglot")
    infobox = pytest.importorskip("sqlenv.infobox")
    mismatched = set()
    for i, ex in enumerate(_template_rows(data_dir)):
        db = infobox.build_database(ex["Context"], tmp_path / f"{i}.sqlite")
        sql = sqlglot.transpile(ex["SQL"], read="mysql", write="sqlite")[0]
        with sqlite3.connect(db) as conn:
            rows = conn.execute(sql).fetchall()
        if not match_answer(rows, ex["Answers"]).correct:
            mismatched.add(ex["Types"])
    assert mismatched <= VALUE_MISMATCHES
