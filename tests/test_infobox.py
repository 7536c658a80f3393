"""sqlenv.infobox: parsing TempTabQA-C infobox text, building both schemas, and the database cache."""

import csv
import re
import sqlite3
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from sqlenv import infobox
from sqlenv.datasets import Dataset
from sqlenv.infobox import Medal, build_database, database_for_context, parse_infobox

SAMPLE = (
    "Linda Efler\n\nPersonal Information\nBirth Date\n1995-1-23\t\n\nBirth Place\nEmsdetten\t\n\n"
    "Height\n\nWeight\n\nCoach\n\t\n\n"
    "Country Representing: GER\n"
    "European Games\nWomen's doubles\tMedalBronze | 2023 | Kraków\n\n"
    "European Mixed Team Championships\n"
    "Mixed team \tMedalSilver | 2019 | Copenhagen, MedalBronze | 2017 | Lubin, MedalBronze | 2021 | Vantaa\n\n"
)


def rows(path, sql):
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_parses_name_birth_date_tournaments_formats_and_medals():
    box = parse_infobox(SAMPLE)
    assert box.name == "Linda Efler"
    assert (box.birth_year, box.birth_month, box.birth_day) == (1995, 1, 23)
    assert box.tournaments == ["European Games", "European Mixed Team Championships"]
    assert box.formats == [("European Games", "Women's doubles"), ("European Mixed Team Championships", "Mixed team")]
    assert box.medals == [
        Medal("European Games", "Women's doubles", "MedalBronze", 2023, "Kraków"),
        Medal("European Mixed Team Championships", "Mixed team", "MedalSilver", 2019, "Copenhagen"),
        Medal("European Mixed Team Championships", "Mixed team", "MedalBronze", 2017, "Lubin"),
        Medal("European Mixed Team Championships", "Mixed team", "MedalBronze", 2021, "Vantaa"),
    ]


def test_commas_inside_locations_do_not_split_medals():
    text = ("A\n\nCountry Representing: X\nWorld Cup\n"
            "Singles\tMedalGold | 2021 | Kuala Lumpur, Malaysia, MedalSilver | 2019 | Washington, D.C.,"
            " MedalBronze | 2018 | Rio de Janeiro\n")
    medals = parse_infobox(text).medals
    assert [(m.medal, m.year, m.location) for m in medals] == [
        ("MedalGold", 2021, "Kuala Lumpur, Malaysia"),
        ("MedalSilver", 2019, "Washington, D.C."),
        ("MedalBronze", 2018, "Rio de Janeiro"),
    ]


def test_missing_years_and_locations_are_tolerated():
    text = ("A\n\nCountry Representing: X\nGames\n"
            "Relay\tMedalGold |  | Vantaa, MedalSilver | 2019, MedalBronze, MedalGold | Oslo, MedalSilver 2015 Rome\n")
    assert [(m.medal, m.year, m.location) for m in parse_infobox(text).medals] == [
        ("MedalGold", None, "Vantaa"), ("MedalSilver", 2019, ""), ("MedalBronze", None, ""),
        ("MedalGold", None, "Oslo"), ("MedalSilver", 2015, "Rome"),
    ]


@pytest.mark.parametrize("block, expected", [
    ("Birth Date\n\nBirth Place\nOslo\t\n", (None, None, None)),      # key without a value
    ("Birth Date\n2003-6-27        \n", (2003, 6, 27)),              # spaces instead of a tab
    ("Birth Date\n1980-06-02\t\n", (1980, 6, 2)),                     # zero-padded
    ("Birth Date\n1971\t\n", (1971, None, None)),                     # year only
    ("Birth Place\nOslo\t\n", (None, None, None)),                    # no Birth Date line at all
])
def test_birth_dates_missing_or_odd(block, expected):
    box = parse_infobox(f"A\n\nPersonal Information\n{block}\n"
                        "Country Representing: X\nCup\nSolo\tMedalGold | 2020 | Oslo\n")
    assert (box.birth_year, box.birth_month, box.birth_day) == expected
    assert len(box.medals) == 1


def test_personal_information_after_the_medals_and_no_personal_block():
    late = ("A\n\nCountry Representing: X\nCup\nSolo\tMedalGold | 2020 | Oslo\n\n"
            "Personal Information\nBirth Date\n1990-2-3\t\n\n")
    box = parse_infobox(late)
    assert (box.birth_year, box.birth_month, box.birth_day) == (1990, 2, 3)
    assert box.tournaments == ["Cup"] and len(box.medals) == 1
    assert parse_infobox("No context available") == infobox.Infobox(name="No context available")
    assert parse_infobox("B\n\nPersonal Information\n").medals == []


def test_space_separated_event_lines_and_events_without_medals():
    text = ("A\n\nCountry Representing: X\nWorld Indoor Championships\n60 m\t\n\n"
            "Asian Games\nTeam        MedalBronze | 2020 | Tokyo, MedalGold | 2022 | Hangzhou\n")
    box = parse_infobox(text)
    assert box.formats == [("World Indoor Championships", "60 m"), ("Asian Games", "Team")]
    assert [(m.tournament, m.format, m.year) for m in box.medals] == [("Asian Games", "Team", 2020),
                                                                     ("Asian Games", "Team", 2022)]


def test_repeated_tournaments_and_trailing_spaces_merge_by_name(tmp_path):
    text = ("A\n\nCountry Representing: X\nWorld Championships \nTeam \tMedalGold | 2010 | Rome\n\n"
            "Country Representing: Y\nWorld Championships\nTeam\tMedalSilver | 2014 | Oslo\n")
    box = parse_infobox(text)
    assert box.tournaments == ["World Championships"]
    assert box.formats == [("World Championships", "Team")]
    path = build_database(box, tmp_path / "m.sqlite")
    assert rows(path, "SELECT COUNT(*) FROM Tournament") == [(1,)]
    assert rows(path, "SELECT COUNT(DISTINCT format_id) FROM Medal") == [(1,)]


def test_tables_schema_matches_the_benchmark(tmp_path):
    path = build_database(SAMPLE, tmp_path / "t.sqlite")
    columns = {t: [c[1] for c in rows(path, f"PRAGMA table_info({t})")]
               for (t,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert columns == {
        "Athlete": ["athlete_id", "name"],
        "Tournament": ["tournament_id", "athlete_id", "name"],
        "Format": ["format_id", "tournament_id", "name"],
        "Medal": ["medal_id", "format_id", "type", "year", "location"],
        "PersonalInformation": ["info_id", "athlete_id", "birth_year", "birth_month", "birth_day"],
    }
    assert rows(path, "SELECT name FROM Athlete") == [("Linda Efler",)]
    assert rows(path, "SELECT birth_year, birth_month, birth_day FROM PersonalInformation") == [(1995, 1, 23)]
    assert rows(path, "PRAGMA foreign_key_check") == []


def _facts_from_tables(path):
    return Counter(rows(path, """
        SELECT a.name, t.name, f.name, m.type, m.year, m.location, p.birth_year, p.birth_month, p.birth_day
        FROM Medal m JOIN Format f ON m.format_id = f.format_id
        JOIN Tournament t ON f.tournament_id = t.tournament_id JOIN Athlete a ON t.athlete_id = a.athlete_id
        JOIN PersonalInformation p ON p.athlete_id = a.athlete_id"""))


def _facts_from_flat(path):
    return Counter(rows(path, "SELECT athlete, tournament, format, medal, year, location, birth_year, "
                              "birth_month, birth_day FROM Medals"))


def test_flat_and_tables_hold_the_same_facts(tmp_path):
    tables = build_database(SAMPLE, tmp_path / "t.sqlite", "tables")
    flat = build_database(SAMPLE, tmp_path / "f.sqlite", "flat")
    assert _facts_from_tables(tables) == _facts_from_flat(flat)
    assert sum(_facts_from_flat(flat).values()) == 4


def _all_contexts(data_dir: Path) -> set[str]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    files = list(data_dir.glob("*_set/*.tsv")) + list(data_dir.glob("Test_Dataset_with_Splits/*.tsv"))
    assert len(files) == 9
    contexts = set()
    for path in files:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            contexts |= {row["Context"] for row in csv.DictReader(handle, delimiter="\t")}
    return contexts


def test_every_medal_of_every_split_is_parsed(data_dir):
    """Parsed medals equal the 'Medal(Gold|Silver|Bronze)' occurrences in every context of every split."""
    contexts = _all_contexts(data_dir)
    assert len(contexts) > 600
    leftovers = {}
    for text in contexts:
        box = parse_infobox(text)
        expected = len(re.findall(r"Medal(?:Gold|Silver|Bronze)", text))
        if len(box.medals) != expected:
            leftovers[box.name] = (expected, len(box.medals))
        assert all(m.medal in infobox.MEDAL_TYPES and m.format and m.tournament for m in box.medals)
    assert leftovers == {}


def test_flat_and_tables_agree_on_real_contexts(data_dir):
    for text in sorted(_all_contexts(data_dir))[:60]:
        assert _facts_from_tables(database_for_context(text, "tables")) == \
            _facts_from_flat(database_for_context(text, "flat"))


def test_observation_texts_of_a_built_database(tmp_path):
    path = build_database(SAMPLE, tmp_path / "t.sqlite")
    text, none = Dataset([]).describe(path, 0)
    assert text.count("CREATE TABLE") == 5 and "FOREIGN KEY (format_id) REFERENCES Format(format_id)" in text
    assert none == ""
    assert Dataset([]).describe(path, 2)[0] == text
    sample = Dataset([]).describe(path, 2)[1]
    assert "Medal: medal_id | format_id | type | year | location" in sample
    assert "1 | 1 | MedalBronze | 2023 | Kraków\n2 | 2 | MedalSilver | 2019 | Copenhagen" in sample
    assert "Lubin" not in sample  # 2 rows per table
    assert "PersonalInformation: info_id | athlete_id | birth_year | birth_month | birth_day" in sample


def test_unknown_schema_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="schema"):
        build_database(SAMPLE, tmp_path / "x.sqlite", "wide")
    with pytest.raises(ValueError, match="schema"):
        database_for_context(SAMPLE, "wide")


def test_failed_build_leaves_no_file(tmp_path, monkeypatch):
    def boom(db, box):
        raise RuntimeError("disk full")

    monkeypatch.setattr(infobox, "_insert_tables", boom)
    with pytest.raises(RuntimeError):
        build_database(SAMPLE, tmp_path / "x.sqlite")
    assert list(tmp_path.iterdir()) == []


def test_cache_reuses_the_file_per_context_and_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLENV_CACHE_DIR", str(tmp_path))
    calls = []
    real = infobox.build_database
    monkeypatch.setattr(infobox, "build_database", lambda *a: calls.append(a) or real(*a))
    first = database_for_context(SAMPLE)
    assert database_for_context(SAMPLE) == first and len(calls) == 1
    assert first.parent == tmp_path / "db" and first.suffix == ".sqlite"
    flat = database_for_context(SAMPLE, "flat")
    assert flat != first and len(calls) == 2
    infobox._BUILT.clear()  # a fresh process: found on disk, not rebuilt
    assert database_for_context(SAMPLE) == first and len(calls) == 2
    first.unlink()  # deleted behind our back: rebuilt
    assert database_for_context(SAMPLE) == first and first.exists() and len(calls) == 3
    assert [p.name for p in (tmp_path / "db").iterdir() if p.suffix != ".sqlite"] == []


def _build_in_child(args):
    cache, text = args
    import os

    os.environ["SQLENV_CACHE_DIR"] = cache
    from sqlenv import infobox as child_infobox

    path = child_infobox.database_for_context(text)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return str(path), conn.execute("SELECT COUNT(*) FROM Medal").fetchone()[0]
    finally:
        conn.close()


def test_concurrent_processes_build_the_same_database_safely(tmp_path):
    texts = [SAMPLE.replace("Linda Efler", f"Player {i}") for i in range(6)] * 4
    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_build_in_child, [(str(tmp_path), t) for t in texts]))
    assert {count for _, count in results} == {4}
    assert len({path for path, _ in results}) == 6
    assert sorted(p.suffix for p in (tmp_path / "db").iterdir()) == [".sqlite"] * 6  # no temp files left
