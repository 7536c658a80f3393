"""Spider, BIRD and JSONL loaders on the fixtures in tests/fixtures (built by their build.py)."""

import json
import shutil
import sqlite3
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from sqlenv.datasets import DatasetError, available_datasets, load_dataset, resultset
from sqlenv.datasets.resultset import MissingDatabaseWarning
from sqlenv.executor import Executor

FIXTURES = Path(__file__).parent / "fixtures"
SPIDER = FIXTURES / "spider"
BIRD = FIXTURES / "bird"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty gold cache (disk and memory) for this test."""
    monkeypatch.setenv("SQLENV_CACHE_DIR", str(tmp_path / "cache"))
    resultset.clear_memory_cache()
    yield tmp_path / "cache"
    resultset.clear_memory_cache()


@pytest.fixture
def count_gold_runs(monkeypatch):
    calls = []
    original = Executor.execute_group

    def counting(self, db_path, sqls, *args, **kwargs):
        calls.extend(sqls)
        return original(self, db_path, sqls, *args, **kwargs)

    monkeypatch.setattr(Executor, "execute_group", counting)
    return calls


def by_question(dataset, text):
    return next(e for e in dataset if e.question.startswith(text))


# ---------------------------------------------------------------------- Spider
def test_registered():
    datasets = available_datasets()
    assert datasets["spider"] == ("train", "dev", "test")
    assert datasets["bird"] == ("train", "dev")
    assert "jsonl" in datasets


def test_spider_dev_loads_and_excludes_invalid_gold():
    ds = load_dataset("spider", split="dev", data_dir=SPIDER)
    assert ds.name == "spider" and ds.split == "dev" and len(ds) == 11
    summary = ds.summary
    assert (summary.read, summary.kept) == (13, 11)
    assert summary.counts == {"empty": 1, "no_such_column": 1}
    assert {p.id for p in summary.excluded} == {"spider-dev-00007", "spider-dev-00008"}
    assert summary.flagged == []
    text = str(summary)
    assert (
        "13 questions read, 11 kept" in text
        and "excluded 2" in text
        and "empty gold result" in text
    )
    assert all(e.metadata["gold_status"] == "ok" for e in ds)


def test_spider_example_fields():
    ds = load_dataset("spider", split="dev", data_dir=SPIDER)
    e = by_question(ds, "What is the country of each singer?")
    assert e.db_key == "concert_singer"
    assert ds.database(e) == SPIDER / "database" / "concert_singer" / "concert_singer.sqlite"
    assert e.gold_sql == "SELECT country FROM singer"
    assert (
        e.answer == "France, Sweden, France, Ireland, None, Sweden"
    )  # result_to_answer of the gold rows
    assert e.metadata["db_id"] == "concert_singer" and e.metadata["source"] == "dev.json"
    assert e.metadata["gold_columns"] == ["country"]


def test_spider_train_reads_both_files():
    ds = load_dataset("spider", split="train", data_dir=SPIDER)
    assert len(ds) == 8
    assert {e.metadata["source"] for e in ds} == {"train_spider.json", "train_others.json"}
    assert load_dataset("spider", data_dir=SPIDER).split == "train"  # the default split


def test_spider_match_uses_spider_semantics():
    ds = load_dataset("spider", split="dev", data_dir=SPIDER)
    countries = by_question(ds, "What is the country of each singer?")
    gold = [("France",), ("Sweden",), ("France",), ("Ireland",), (None,), ("Sweden",)]
    assert ds.match(countries, list(reversed(gold))).correct  # no ORDER BY: any row order
    distinct = ds.match(countries, [("France",), ("Sweden",), ("Ireland",), (None,)])
    assert not distinct.correct and distinct.f1 == pytest.approx(0.8)  # bag semantics

    ordered = by_question(ds, "Show the names of singers sorted by age")
    names = ["Ana", "Eli", "Chen", "Bo", "Fay", "Dara"]
    assert ds.match(ordered, [(n,) for n in names]).correct
    assert not ds.match(ordered, [(n,) for n in sorted(names)]).correct  # gold has ORDER BY

    concerts = by_question(ds, "Show the name and year of each concert held in 2015.")
    assert ds.match(
        concerts, [(2015, "Autumn Tour"), (2015, "Summer Nights")]
    ).correct  # columns permuted

    average = by_question(ds, "What is the average net worth")
    assert ds.match(average, [(1.75,)]).correct
    assert not ds.match(average, [(1.7500001,)]).correct
    tolerant = load_dataset("spider", split="dev", data_dir=SPIDER, float_tol=1e-3)
    assert tolerant.match(
        by_question(tolerant, "What is the average net worth"), [(1.7500001,)]
    ).correct

    null = by_question(ds, "What is the country of the singer named Eli?")
    assert ds.match(null, [(None,)]).correct and not ds.match(null, [("None",)]).correct


def test_flag_mode_keeps_invalid_gold_but_never_pays_for_it():
    ds = load_dataset("spider", split="dev", data_dir=SPIDER, on_invalid="flag")
    assert len(ds) == 13 and len(ds.summary.flagged) == 2 and "flagged 2" in str(ds.summary)
    empty = by_question(ds, "Which singers are older than 200?")
    broken = by_question(ds, "What is the genre of each singer?")
    assert empty.metadata["gold_status"] == "empty" and empty.answer == ""
    assert broken.metadata["gold_status"] == "no_such_column"
    assert not ds.match(empty, []).correct  # empty-vs-empty is off by default
    assert not ds.match(broken, []).correct and not ds.match(broken, [("pop",)]).correct
    lenient = load_dataset(
        "spider", split="dev", data_dir=SPIDER, on_invalid="flag", empty_match=True
    )
    assert lenient.match(by_question(lenient, "Which singers are older than 200?"), []).correct
    assert not lenient.match(by_question(lenient, "What is the genre of each singer?"), []).correct


def test_raise_mode():
    with pytest.raises(DatasetError, match="gold validation failed"):
        load_dataset("spider", split="dev", data_dir=SPIDER, on_invalid="raise")
    with pytest.raises(ValueError, match="on_invalid"):
        load_dataset("spider", split="dev", data_dir=SPIDER, on_invalid="ignore")


def test_gold_runs_once_and_is_cached_on_disk(fresh_cache, count_gold_runs):
    ds = load_dataset("spider", split="dev", data_dir=SPIDER)
    assert len(count_gold_runs) == 13 and ds.summary.executed == 13
    for e in ds:  # scoring never re-runs the gold query
        ds.match(e, [(1,)])
    assert len(count_gold_runs) == 13
    again = load_dataset("spider", split="dev", data_dir=SPIDER)  # memory cache
    assert len(count_gold_runs) == 13 and again.summary.cached == 13
    resultset.clear_memory_cache()
    from_disk = load_dataset("spider", split="dev", data_dir=SPIDER)  # disk cache
    assert len(count_gold_runs) == 13 and from_disk.summary.cached == 13
    assert (fresh_cache / "gold.sqlite").is_file()
    assert [e.answer for e in from_disk] == [e.answer for e in ds]
    assert [ds.gold_result(e) for e in ds] == [from_disk.gold_result(e) for e in from_disk]


def test_cache_is_keyed_by_database_content(fresh_cache, count_gold_runs, tmp_path):
    data = tmp_path / "spider"
    shutil.copytree(SPIDER, data)
    first = load_dataset("spider", split="dev", data_dir=data)
    db = data / "database" / "concert_singer" / "concert_singer.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO singer VALUES (7, 'Gus', 'Peru', 60, 9.5)")
    conn.commit()
    conn.close()
    resultset.clear_memory_cache()
    second = load_dataset("spider", split="dev", data_dir=data)
    assert second.summary.executed == 9  # the concert_singer questions, not school's
    count = "How many singers do we have?"
    assert by_question(first, count).answer == "6" and by_question(second, count).answer == "7"


def test_layout_options(tmp_path):
    (tmp_path / "spider").symlink_to(SPIDER, target_is_directory=True)
    assert len(load_dataset("spider", split="dev", data_dir=tmp_path)) == 11  # the folder above
    ds = load_dataset(
        "spider",
        split="dev",
        data_dir=SPIDER,
        questions_file="train_others.json",
        db_dir=SPIDER / "database",
    )
    assert len(ds) == 2
    assert len(load_dataset("spider", split="dev", data_dir=SPIDER, limit=3)) == 3
    with pytest.raises(DatasetError, match="test.json"):
        load_dataset("spider", split="test", data_dir=SPIDER)
    with pytest.raises(DatasetError, match="data_dir"):
        load_dataset("spider", split="dev", data_dir=tmp_path / "missing")
    with pytest.raises(DatasetError, match="schema"):
        load_dataset("spider", split="dev", data_dir=SPIDER, schema="flat")
    with pytest.raises(TypeError, match="unknown options"):
        load_dataset("spider", split="dev", data_dir=SPIDER, comparitor="bird")


def test_missing_database_is_reported(tmp_path):
    data = tmp_path / "spider"
    shutil.copytree(SPIDER, data)
    shutil.rmtree(data / "database" / "school")
    with pytest.warns(MissingDatabaseWarning, match="'school' \\(4\\)"):
        ds = load_dataset("spider", split="dev", data_dir=data)
    assert ds.summary.counts["missing_db"] == 4
    assert ds.summary.missing_databases == {"school": 4}
    assert all(e.db_key == "concert_singer" for e in ds)


# ---------------------------------------------------------------------- BIRD
def test_bird_dev_layout_and_evidence():
    ds = load_dataset("bird", split="dev", data_dir=BIRD)  # files under dev_20240627/
    assert (ds.summary.read, len(ds)) == (11, 9)
    assert ds.summary.counts == {"empty": 1, "no_such_column": 1}
    e = ds[0]
    assert e.id == "bird-dev-0" and e.difficulty == "simple"
    assert e.question == "How many orders did acme place?\nHint: acme refers to customer = 'acme'"
    assert e.metadata["evidence"] == "acme refers to customer = 'acme'"
    assert ds.database(e) == BIRD / "dev_20240627" / "dev_databases" / "shop" / "shop.sqlite"
    no_evidence = by_question(ds, "List the product ids of all orders.")
    assert no_evidence.question == "List the product ids of all orders."  # BIRD's "False" = none
    plain = load_dataset("bird", split="dev", data_dir=BIRD, evidence_in_question=False)
    assert plain[0].question == "How many orders did acme place?"
    assert plain[0].metadata["evidence"] == "acme refers to customer = 'acme'"


def test_bird_match_uses_set_semantics():
    ds = load_dataset("bird", split="dev", data_dir=BIRD)
    ids = by_question(ds, "List the product ids of all orders.")
    assert ds.match(ids, [(4,), (3,), (2,), (1,)]).correct  # duplicates and order ignored
    pair = by_question(ds, "What is the total quantity ordered per customer?")
    assert ds.match(pair, [("acme", 21), ("globex", 8), ("initech", 2)]).correct
    assert not ds.match(
        pair, [(21, "acme"), (8, "globex"), (2, "initech")]
    ).correct  # column order counts
    spider_rules = load_dataset("bird", split="dev", data_dir=BIRD, comparator="spider")
    pair = by_question(spider_rules, "What is the total quantity ordered per customer?")
    assert spider_rules.match(pair, [(21, "acme"), (8, "globex"), (2, "initech")]).correct


def test_bird_train_split_and_nested_databases(tmp_path):
    assert len(load_dataset("bird", split="train", data_dir=BIRD)) == 3  # train/train.json
    # BIRD's zip of zips often unpacks to dev_databases/dev_databases/<db_id>/
    data = tmp_path / "bird"
    data.mkdir()
    shutil.copy(BIRD / "dev_20240627" / "dev.json", data / "dev.json")
    shutil.copytree(
        BIRD / "dev_20240627" / "dev_databases", data / "dev_databases" / "dev_databases"
    )
    assert len(load_dataset("bird", split="dev", data_dir=data)) == 9


# ---------------------------------------------------------------------- JSONL
def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_gold_sql_rows_and_answers(tmp_path):
    db = tmp_path / "my.sqlite"
    shutil.copy(SPIDER / "database" / "school" / "school.sqlite", db)
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"question": "How many students?", "sql": "SELECT count(*) FROM student"},
            {
                "id": "q-rows",
                "question": "Name the departments.",
                "answer": [["Physics"], ["History"], ["Music"]],
            },
            {"question": "Who has the best GPA?", "answer": "Ines"},
            {"question": "Empty?", "query": "SELECT name FROM student WHERE gpa > 10"},
            {"question": "Broken?", "sql": "SELEC name"},
            {"question": "Nothing?", "answer": " "},
        ],
    )
    ds = load_dataset("jsonl", split="train", data_dir=tmp_path, db="my.sqlite")
    assert ds.summary.read == 6 and len(ds) == 3
    assert ds.summary.counts == {"empty": 2, "syntax": 1}
    count, rows, answer = ds
    assert count.answer == "5" and count.gold_sql == "SELECT count(*) FROM student"
    assert ds.database(count) == db
    assert ds.match(count, [(5,)]).correct
    assert (
        rows.id == "q-rows" and rows.answer == "Physics, History, Music" and rows.gold_sql is None
    )
    assert ds.match(
        rows, [("Music",), ("History",), ("Physics",)]
    ).correct  # spider comparator (bag)
    assert ds.match(answer, [("Ines",)]).correct and not ds.match(answer, [("Jon",)]).correct


def test_jsonl_database_per_line_and_errors(tmp_path):
    shutil.copytree(SPIDER / "database", tmp_path / "database")
    path = write_jsonl(
        tmp_path / "qs.jsonl",
        [
            {
                "question": "How many singers?",
                "sql": "SELECT count(*) FROM singer",
                "db_id": "concert_singer",
            },
            {
                "question": "How many courses?",
                "sql": "SELECT count(*) FROM course",
                "db": "database/school/school.sqlite",
                "evidence": "course table",
                "difficulty": "easy",
            },
            {"question": "Where?", "sql": "SELECT 1", "db_id": "nowhere"},
        ],
    )
    with pytest.warns(MissingDatabaseWarning, match="'nowhere'"):
        ds = load_dataset("jsonl", split="dev", data_dir=tmp_path, file="qs.jsonl")
    assert [e.answer for e in ds] == ["6", "4"]
    assert ds.summary.counts == {"missing_db": 1}
    assert ds[1].difficulty == "easy" and ds[1].metadata["evidence"] == "course table"
    assert ds.database(ds[1]).name == "school.sqlite" and ds[0].db_key != ds[1].db_key
    with pytest.warns(MissingDatabaseWarning):
        absolute = load_dataset("jsonl", file=str(path.resolve()))  # no data_dir needed
    assert len(absolute) == 2

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "No gold", "db_id": "concert_singer"}])
    with pytest.raises(DatasetError, match="line 1"):
        load_dataset("jsonl", data_dir=tmp_path, file=bad.name)
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match="not JSON"):
        load_dataset("jsonl", data_dir=tmp_path, file="broken.jsonl")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("jsonl", data_dir=tmp_path)  # train.jsonl absent


def test_gold_timeout_is_reported(tmp_path):
    db = tmp_path / "t.sqlite"
    shutil.copy(SPIDER / "database" / "school" / "school.sqlite", db)
    slow = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT count(*) FROM (SELECT x FROM c LIMIT 100000000)"
    )
    write_jsonl(
        tmp_path / "train.jsonl",
        [{"question": "Slow", "sql": slow}, {"question": "Fast", "sql": "SELECT 1"}],
    )
    ds = load_dataset("jsonl", data_dir=tmp_path, db=db, gold_timeout=1.0, use_cache=False)
    assert len(ds) == 1 and ds.summary.counts == {"timeout": 1}
    assert "gold timeout" in str(ds.summary)


# ---------------------------------------------------------------------- the environment
def test_gym_make_spider():
    env = gym.make("sqlenv:TextToSQL-v0", dataset="spider", split="dev", data_dir=str(SPIDER))
    obs, info = env.reset(seed=0, options={"index": 1})
    assert obs["question"].startswith("Show the names of singers sorted by age")
    assert "CREATE TABLE singer" in obs["schema"] and "FOREIGN KEY" in obs["schema"]
    assert "singer: singer_id | name" in obs["sample_rows"]
    gold_sql = env.unwrapped.dataset[info["index"]].gold_sql  # reset's info hides it by default
    assert gold_sql.startswith("SELECT name FROM singer ORDER BY")
    _, reward, terminated, _, info = env.step("SELECT name FROM singer ORDER BY age DESC, name")
    assert reward == 1.0 and terminated and info["correct"]
    env.reset(options={"index": 1})
    _, reward, *_ = env.step("SELECT name FROM singer ORDER BY age ASC")
    assert reward == 0.0
    env.reset(options={"index": 1})
    _, reward, *_ = env.step("SELECT name FROM singer WHERE 1 = 0")  # empty result never pays
    assert reward == 0.0
    env.reset(options={"index": 0})
    rewards = [
        r
        for r, _ in env.unwrapped.score_group(
            ["SELECT count(*) FROM singer", "SELECT 7", "nonsense"]
        )
    ]
    assert rewards == [1.0, 0.0, -1.0]
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_gym_make_bird_flagged_empty_gold_pays_nothing():
    flagged = load_dataset("bird", split="dev", data_dir=BIRD, on_invalid="flag")
    env = gym.make("sqlenv:TextToSQL-v0", dataset=flagged, reward="partial").unwrapped
    index = next(i for i, e in enumerate(env.dataset) if e.metadata["gold_status"] == "empty")
    env.reset(options={"index": index})
    _, reward, _, _, info = env.step("SELECT order_id FROM orders WHERE order_date LIKE '2022%'")
    assert reward == 0.0 and not info["correct"]
    env.close()


def test_subset_keeps_databases_and_gold():
    ds = load_dataset("spider", split="dev", data_dir=SPIDER)
    sub = ds.subset([0, 3])
    assert len(sub) == 2 and sub.summary is ds.summary
    assert sub.match(sub[0], [(6,)]).correct and sub.database(sub[1]) == ds.database(ds[3])


# ---------------------------------------------------------------------- issue 11 (8): real layout
def official_dev_layout(root: Path) -> Path:
    """Spider's dev release as unzipped (dev.json, tables.json, database/<db_id>/<db_id>.sqlite),
    with the database of ``world_1`` missing and one question whose gold result is empty."""
    data = root / "spider"
    (data / "database" / "concert_singer").mkdir(parents=True)
    shutil.copy(
        SPIDER / "database" / "concert_singer" / "concert_singer.sqlite",
        data / "database" / "concert_singer" / "concert_singer.sqlite",
    )
    (data / "database" / "world_1").mkdir()  # the folder is there, its .sqlite is not
    (data / "tables.json").write_text("[]", encoding="utf-8")
    questions = [
        ("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer"),
        ("world_1", "How many countries are there?", "SELECT count(*) FROM country"),
        ("concert_singer", "Which singers are older than 200?",
         "SELECT name FROM singer WHERE age > 200"),
        ("world_1", "What is the capital of France?",
         "SELECT capital FROM country WHERE name = 'France'"),
        ("concert_singer", "Show the names of singers sorted by age from oldest to youngest.",
         "SELECT name FROM singer ORDER BY age DESC, name ASC"),
    ]
    records = [{"db_id": db, "question": q, "query": sql, "query_toks": [], "sql": {}}
               for db, q, sql in questions]
    (data / "dev.json").write_text(json.dumps(records), encoding="utf-8")
    return data


def ids(ds):
    return [e.id for e in ds]


@pytest.mark.parametrize("empty_match", [False, True])
@pytest.mark.parametrize("on_invalid", ["exclude", "flag", "raise"])
def test_missing_database_excluded_and_empty_gold_kept_with_empty_match(
        tmp_path, fresh_cache, on_invalid, empty_match):
    data = official_dev_layout(tmp_path)
    options = dict(split="dev", data_dir=data, on_invalid=on_invalid, empty_match=empty_match)
    if on_invalid == "raise" and not empty_match:
        # the empty gold is a gold problem under this setting; the message names both
        with pytest.raises(DatasetError, match="gold validation failed") as info:
            load_dataset("spider", **options)
        assert "'world_1' (2)" in str(info.value) and "spider-dev-00002" in str(info.value)
        return
    with pytest.warns(MissingDatabaseWarning, match="1 database\\(s\\) missing, 2 question"):
        ds = load_dataset("spider", **options)
    summary = ds.summary
    # the world_1 questions are never in the dataset, whatever on_invalid says
    assert "spider-dev-00001" not in ids(ds) and "spider-dev-00003" not in ids(ds)
    assert summary.missing_databases == {"world_1": 2}
    assert {p.id for p in summary.excluded if p.status == "missing_db"} == {
        "spider-dev-00001", "spider-dev-00003"}
    assert "missing 1 database(s), 2 question(s) excluded: 'world_1' (2)" in str(summary)
    empty_kept = empty_match or on_invalid == "flag"
    expected = ["spider-dev-00000"] + (["spider-dev-00002"] if empty_kept else []) + [
        "spider-dev-00004"]
    assert ids(ds) == expected and summary.kept == len(expected) and summary.read == 5
    if empty_match:  # scoreable: not a problem, not flagged; only an empty prediction matches
        assert summary.empty_kept == ["spider-dev-00002"] and summary.flagged == []
        assert summary.counts == {"missing_db": 2}
        assert "kept 1 with an empty gold result" in str(summary)
    elif on_invalid == "flag":
        assert [p.id for p in summary.flagged] == ["spider-dev-00002"]
    else:
        assert summary.counts == {"missing_db": 2, "empty": 1}
    # every kept question can be asked and scored: no DatasetError in the middle of a run
    env = gym.make("sqlenv:TextToSQL-v0", dataset=ds, reward="binary").unwrapped
    for index in range(len(ds)):
        obs, info = env.reset(options={"index": index})
        assert "CREATE TABLE singer" in obs["schema"]
    if empty_kept:
        index = ids(ds).index("spider-dev-00002")
        env.reset(options={"index": index})
        _, nothing, *_ = env.step("SELECT name FROM singer WHERE age > 500")
        env.reset(options={"index": index})
        _, something, *_ = env.step("SELECT name FROM singer")
        assert (nothing, something) == ((1.0 if empty_match else 0.0), 0.0)
    for _ in range(20):  # random resets too
        env.reset()
    env.close()


def test_missing_database_under_raise_is_excluded_not_raised(tmp_path, fresh_cache):
    data = official_dev_layout(tmp_path)
    with pytest.warns(MissingDatabaseWarning):
        ds = load_dataset("spider", split="dev", data_dir=data, on_invalid="raise",
                          empty_match=True)
    assert ids(ds) == ["spider-dev-00000", "spider-dev-00002", "spider-dev-00004"]


# ---------------------------------------------------------------------- issue 11 (6): ORDER BY
REVERSED_BY_AGE = "SELECT name FROM singer ORDER BY age ASC, name DESC"


def test_reversed_order_by_answer_is_not_paid_as_correct_on_spider():
    ds = load_dataset("spider", split="dev", data_dir=SPIDER)
    env = gym.make("sqlenv:TextToSQL-v0", dataset=ds, reward="partial").unwrapped
    index = ids(ds).index("spider-dev-00001")  # "... sorted by age from oldest to youngest."
    gold_sql = ds[index].gold_sql
    (right, right_info), (backwards, info) = env.score_sqls(index, [gold_sql, REVERSED_BY_AGE])
    assert right == 1.0 and right_info["correct"]
    # 6 distinct names reversed: the longest common subsequence is 1 name -> F1 = 2 / 12
    assert not info["correct"] and backwards == pytest.approx(1 / 6)
    env.close()


def test_reversed_order_by_answer_is_not_paid_as_correct_on_jsonl(tmp_path):
    db = tmp_path / "singers.sqlite"
    shutil.copy(SPIDER / "database" / "concert_singer" / "concert_singer.sqlite", db)
    write_jsonl(tmp_path / "train.jsonl", [
        {"question": "Names by age, oldest first.",
         "sql": "SELECT name FROM singer ORDER BY age DESC, name ASC"},
        {"question": "Names.", "sql": "SELECT name FROM singer"},
    ])
    ds = load_dataset("jsonl", data_dir=tmp_path, db=db)
    for preset in ("partial", "binary", "paper"):
        env = gym.make("sqlenv:TextToSQL-v0", dataset=ds, reward=preset).unwrapped
        scores = env.score_sqls(0, [ds[0].gold_sql, REVERSED_BY_AGE])
        (right, _), (backwards, info) = scores
        assert not info["correct"] and backwards < right
        if preset == "partial":
            assert backwards == pytest.approx(1 / 6)
        # without ORDER BY in the gold, any row order is right
        (unordered, info), = env.score_sqls(1, [REVERSED_BY_AGE])
        assert info["correct"] and unordered == right
        env.close()
