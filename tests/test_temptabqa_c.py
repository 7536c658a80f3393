"""The TempTabQA-C loader: splits, examples, answer corrections, databases, errors, MySQL -> SQLite."""

import csv
import sqlite3

import pytest

from sqlenv import infobox
from sqlenv.datasets import DatasetError, available_datasets, load_dataset
from sqlenv.datasets.temptabqa_c import (
    ANSWER_CORRECTIONS,
    SPLIT_FILES,
    load_gold_sql,
    load_temptabqa_c,
    mysql_to_sqlite,
)

ROWS = {"train": 2961, "dev": 282, "original": 578, "counterfactual": 699, "small": 855, "large": 538,
        "easy": 732, "medium": 507, "hard": 719, "gold-sql": 47}
CONTEXT = "Ann Lee\n\nCountry Representing: X\nCup\nSolo\tMedalGold | 2020 | Oslo\n"
HEADER = "Types\tQuestions\tAnswers\tPlayerName\tSportCategory\tContext\tPopularity\tUnnamed: 0\n"


def good_row(question="How many Cup medals did Ann Lee win ?", context=CONTEXT):
    return f'1\t{question}\t1\tAnn Lee\tSwimming\t"{context}"\tNeutral\t\n'


def write_dev(tmp_path, text):
    (tmp_path / "Dev_set").mkdir(exist_ok=True)
    (tmp_path / "Dev_set" / "dev_set.tsv").write_text(text, encoding="utf-8")
    return tmp_path


def test_registered_with_every_split():
    assert available_datasets()["temptabqa-c"] == (*SPLIT_FILES, "gold-sql")


@pytest.mark.parametrize("split", list(ROWS))
def test_every_split_loads_with_its_row_count(data_dir, split):
    dataset = load_dataset("temptabqa-c", split, data_dir=data_dir)
    assert len(dataset) == ROWS[split]
    assert dataset.name == "temptabqa-c" and dataset.split == split and dataset.schema == "tables"
    assert len({e.id for e in dataset}) == len(dataset)
    for example in dataset:
        assert example.question and example.context and example.answer
        assert example.db_key == infobox.context_key(example.context)
        assert example.metadata["question"].strip() == example.question
        assert example.metadata["player_name"] and example.metadata["row"] >= 1
        assert example.question_type == example.metadata["question_type"]
    if split in ("easy", "medium", "hard"):
        assert {e.difficulty for e in dataset} == {split.capitalize()}
        assert {e.metadata["difficulty_source"] for e in dataset} == {"column", "file"}
    else:
        assert {e.difficulty for e in dataset} == {None}
    assert all((e.gold_sql is not None) == (split == "gold-sql") for e in dataset)


def test_examples_keep_the_row_metadata(data_dir):
    first = load_temptabqa_c("dev", data_dir)[0]
    assert first.id == "dev-1"
    assert first.question == "How many European Games Silver Medals did Linda Efler win ?"
    assert first.answer == "0" and first.question_type == "1"
    assert first.metadata["player_name"] == "Linda Efler"
    assert first.metadata["sport_category"] == "Badminton" and first.metadata["popularity"] == "Neutral"
    assert first.metadata["file"].endswith("Dev_set/dev_set.tsv") and first.metadata["line"] == 2


@pytest.mark.parametrize("schema, table", [("tables", "Athlete"), ("flat", "Medals")])
def test_database_is_built_from_the_context(data_dir, schema, table):
    dataset = load_temptabqa_c("dev", data_dir, schema=schema)
    example = dataset[0]
    path = dataset.database(example)
    assert path == infobox.database_for_context(example.context, schema)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert table in names


def test_gold_sql_split_exposes_sqlite_gold(data_dir):
    tables = load_gold_sql(data_dir)
    assert all(e.gold_sql and e.metadata["gold_sql_mysql"] for e in tables)
    assert {e.question_type for e in tables if e.metadata["gold_sql_correction"]} == {"55", "66", "75", "77"}
    flat = load_dataset("temptabqa-c", "gold-sql", data_dir=data_dir, schema="flat")
    assert all(e.gold_sql is None and e.metadata["gold_sql_tables"] for e in flat)


def test_no_data_dir_names_the_argument_and_the_variable(monkeypatch):
    monkeypatch.delenv("SQLENV_DATA_DIR", raising=False)
    with pytest.raises(DatasetError, match="data_dir.*SQLENV_DATA_DIR"):
        load_dataset("temptabqa-c", "dev")


def test_environment_variable_is_used(data_dir, monkeypatch):
    monkeypatch.setenv("SQLENV_DATA_DIR", str(data_dir))
    assert len(load_dataset("temptabqa-c", "dev")) == 282


def test_missing_file_names_the_file_and_both_sources(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_temptabqa_c("hard", tmp_path)
    message = str(error.value)
    assert "Test_Dataset_with_Splits/Hard.tsv" in message
    assert "data_dir" in message and "SQLENV_DATA_DIR" in message


def test_row_with_missing_columns_names_file_and_row(tmp_path):
    write_dev(tmp_path, HEADER + good_row() + "1\tHow many ?\t2\n")
    with pytest.raises(DatasetError, match=r"dev_set\.tsv, row 2 \(line \d+\).*missing"):
        load_temptabqa_c("dev", tmp_path)


@pytest.mark.parametrize("row, column", [
    (good_row(question="  "), "Questions"),
    (good_row(context=""), "Context"),
])
def test_empty_question_or_context_names_file_row_and_column(tmp_path, row, column):
    write_dev(tmp_path, HEADER + good_row() + row)
    with pytest.raises(DatasetError, match=rf"dev_set\.tsv, row 2 .*{column}"):
        load_temptabqa_c("dev", tmp_path)


def test_missing_header_column_and_empty_file(tmp_path):
    write_dev(tmp_path, HEADER.replace("Context", "Ctx") + good_row())
    with pytest.raises(DatasetError, match=r"dev_set\.tsv: header lacks.*Context"):
        load_temptabqa_c("dev", tmp_path)
    write_dev(tmp_path, "")
    with pytest.raises(DatasetError, match="empty"):
        load_temptabqa_c("dev", tmp_path)


def test_good_rows_load_and_blank_lines_are_skipped(tmp_path):
    dataset = load_temptabqa_c("dev", write_dev(tmp_path, HEADER + good_row() + "\n" + good_row()))
    assert [e.id for e in dataset] == ["dev-1", "dev-2"]
    assert dataset[1].metadata["line"] == 9  # the first row spans lines 2-7 (a quoted multi-line context), 8 is blank


def test_unknown_split_and_schema(tmp_path):
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset("temptabqa-c", "test", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="schema"):
        load_temptabqa_c("dev", write_dev(tmp_path, HEADER + good_row()), schema="wide")


def _run(sql, setup=""):
    conn = sqlite3.connect(":memory:")
    conn.executescript(setup)
    return conn.execute(sql).fetchall()


@pytest.mark.parametrize("mysql, expected", [
    ("SELECT CONCAT('a', '-', 1)", [("a-1",)]),
    ("SELECT YEAR('2021-03-04'), MONTH('2021-03-04'), DAY('2021-03-04')", [(2021, 3, 4)]),
    ("SELECT TIMESTAMPDIFF(YEAR, '1995-09-23', '2015-09-22'), TIMESTAMPDIFF(YEAR, '1995-09-23', '2015-09-23')",
     [(19, 20)]),
    ("SELECT TIMESTAMPDIFF(MONTH, '2020-01-31', '2020-03-01'), TIMESTAMPDIFF(DAY, '2020-01-01', '2020-03-01')",
     [(1, 60)]),
    ("SELECT STR_TO_DATE('2020-01-05', '%Y-%m-%d')", [("2020-01-05",)]),
    ("SELECT 7 / 2, 7 DIV 2", [(3.5, 3)]),
    ("SELECT IF(1 > 0, 'Yes', 'No')", [("Yes",)]),
])
def test_mysql_functions_are_rewritten_for_sqlite(mysql, expected):
    assert _run(mysql_to_sqlite(mysql)) == expected


def test_mysql_to_sqlite_keeps_the_benchmark_query_shape():
    sql = mysql_to_sqlite("SELECT t.name AS tournament_name, m.year FROM Medal m JOIN Tournament t "
                          "ON m.format_id = t.tournament_id WHERE a.name = 'Rubén' LIMIT 1, 2;\r\n", pretty=False)
    assert sql == ("SELECT t.name AS tournament_name, m.year FROM Medal AS m JOIN Tournament AS t "
                   "ON m.format_id = t.tournament_id WHERE a.name = 'Rubén' LIMIT 2 OFFSET 1")
    with pytest.raises(ValueError, match="one SQL statement"):
        mysql_to_sqlite("SELECT 1; SELECT 2")


# Issue 11 (6): does any TempTabQA-C question ask for an order? Of the 102 templates
# (Dataset_Creation/Questions/Questions_Templates.tsv) only type 41 ("List all the cities ... in the
# order of the most medals won") and type 67 ("How many International Bronze, Silver and Gold
# medals ...", counts in a stated order) do, and neither occurs in any split. Multi-item answers
# of the other list types are written in no fixed order ("1972, 1956, 1968" for type 38), so the
# benchmark's matching keeps ignoring order.
ORDER_ASKING_TYPES = {"41", "67"}


def test_no_split_holds_a_question_type_that_asks_for_an_order(data_dir):
    types = set()
    for split in SPLIT_FILES:
        types |= {e.question_type for e in load_dataset("temptabqa-c", split, data_dir=data_dir)}
    assert types and not types & ORDER_ASKING_TYPES


def test_list_answers_match_in_any_order(data_dir):
    dataset = load_dataset("temptabqa-c", "dev", data_dir=data_dir)
    lists = [e for e in dataset if e.question_type == "38" and e.answer.count(",") >= 2]
    assert lists
    example = lists[0]
    years = [int(item) for item in example.answer.split(",")]
    assert years != sorted(years) and years != sorted(years, reverse=True)  # no order in the gold
    for rows in ([(y,) for y in years], [(y,) for y in sorted(years)], [(y,) for y in years][::-1]):
        assert dataset.match(example, rows).correct
    assert not example.metadata.get("ordered")


# Answer cells that run into another template's question (ANSWER_CORRECTIONS): (split, line) -> the answer.
RUN_ON_ANSWERS = {("small", 2441): "No international medals found.",
                  ("small", 14055): "No international medals found.",
                  ("hard", 16840): "No international medals found.", ("hard", 17768): "Atlanta",
                  ("hard", 18162): "Budapest", ("hard", 18265): "Nassau", ("hard", 18492): "Birmingham"}


def raw_answers(path):
    """The file's answer cells, read with the csv module alone, stripped."""
    csv.field_size_limit(2**31 - 1)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return [row["Answers"].strip() for row in csv.DictReader(handle, delimiter="\t")
                if any(cell.strip() for cell in row.values() if cell)]


@pytest.mark.parametrize(("line", "answer", "run_on"), [
    (17768, "Atlanta", "Type12: How many International medals did Christophe Lemaitre win throughout his/her career?"),
    (18162, "Budapest", "Type13: How many International Bronze Medals did Li Bingjie win throughout his/her career?"),
    (18265, "Nassau", "Type14: How many times has Andre De Grasse won medals in Pan American Games ?"),
])
def test_hard_answers_that_run_into_a_question_are_corrected(data_dir, line, answer, run_on):
    dataset = load_temptabqa_c("hard", data_dir)
    [example] = [e for e in dataset if e.metadata["line"] == line]
    defective = "No international medals found." + run_on
    assert example.metadata["answer"].strip() == defective  # the raw cell, as the file has it
    assert example.answer == answer
    assert example.metadata["answer_corrected_from"] == defective
    assert example.metadata["answer_correction"].startswith("the cell runs into a type-")
    assert dataset.match(example, [(answer,)]).correct
    assert not dataset.match(example, [("No international medals found.",)]).correct


def test_tim_harden_and_isiah_young_get_the_small_splits_answer(data_dir):
    small = {(e.question, e.context): e.answer for e in load_temptabqa_c("small", data_dir)}
    corrected = [e for e in load_temptabqa_c("hard", data_dir) if e.metadata.get("answer_corrected_from")]
    shared = [e for e in corrected if (e.question, e.context) in small]
    assert [(e.question.split(" did ")[1].split(" win ")[0], e.answer) for e in shared] == [
        ("Dennis Mitchell", "No international medals found."), ("Tim Harden", "Atlanta"), ("Isiah Young", "Nassau")]
    assert all(small[(e.question, e.context)] == e.answer for e in shared)


def test_every_correction_applies_exactly_once(data_dir):
    applied = {}
    for split in SPLIT_FILES:
        for example in load_temptabqa_c(split, data_dir):
            if "answer_corrected_from" in example.metadata:
                key = (split, example.question, example.metadata["answer_corrected_from"])
                assert key not in applied
                applied[key] = example.answer
                assert RUN_ON_ANSWERS[(split, example.metadata["line"])] == example.answer
    assert len(applied) == len(ANSWER_CORRECTIONS) == len(RUN_ON_ANSWERS) == 7
    assert applied == {key: answer for key, (answer, _why) in ANSWER_CORRECTIONS.items()}


@pytest.mark.parametrize("split", ["dev", "original", "counterfactual", "easy"])
def test_a_clean_split_keeps_the_files_answers(data_dir, split):
    dataset = load_temptabqa_c(split, data_dir)
    assert [e.answer for e in dataset] == raw_answers(data_dir / SPLIT_FILES[split])
    assert not any("answer_corrected_from" in e.metadata or "answer_correction" in e.metadata for e in dataset)


def write_test_split(tmp_path, answer, file="Hard.tsv"):
    question = "In which city did Tim Harden win his/her first International medal ?"
    context = "Tim Harden\n\nCountry Representing: USA\nOlympic Games\n4x100 m relay\tMedalSilver | 1996 | Atlanta\n"
    folder = tmp_path / "Test_Dataset_with_Splits"
    folder.mkdir(exist_ok=True)
    (folder / file).write_text(HEADER + f'77\t{question}\t{answer}\tTim Harden\tAthletics\t"{context}"\t\t\n',
                               encoding="utf-8")
    return tmp_path


def test_a_correction_applies_only_where_the_defective_text_is(tmp_path):
    defective = ("No international medals found.Type12: How many International medals did Christophe Lemaitre "
                 "win throughout his/her career?")
    [example] = load_temptabqa_c("hard", write_test_split(tmp_path, defective))
    assert example.answer == "Atlanta" and example.metadata["answer_corrected_from"] == defective
    for fixed_upstream in ("Atlanta", "No international medals found.", "Lisbon"):
        [example] = load_temptabqa_c("hard", write_test_split(tmp_path, fixed_upstream))
        assert example.answer == fixed_upstream and "answer_corrected_from" not in example.metadata
    # the same cell in a split the table does not name is left as it is
    [example] = load_temptabqa_c("easy", write_test_split(tmp_path, defective, "Easy.tsv"))
    assert example.answer == defective and "answer_corrected_from" not in example.metadata
