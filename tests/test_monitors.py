"""agents.monitors: each collapse monitor on hand-made records, counted by hand."""

import subprocess
import sys

import pytest

from agents.monitors import (
    LABELS,
    MONITORS,
    REFERENCE_LEVELS,
    answer_items,
    collapse_monitors,
    example_entities,
    monitor_metrics,
    normalize_sql,
    sql_template,
    with_questions,
)
from sqlenv import prompts

Q1 = "How many gold medals did Ivo Kent win?"
Q2 = "In which year did Mia Ross win her first medal?"
Q3 = "Which cities did Ivo Kent win medals in?"
Q4 = "Has Lea Dorn ever won a silver medal?"


def rec(question, sql, prediction, answer, error=None):
    return dict(question=question, sql=sql, prediction=prediction, answer=answer, error=error)


# Eight records of four questions, each monitor's count written beside them.
RECORDS = [
    rec(Q1, "SELECT COUNT(*) FROM Medals WHERE athlete = 'Ivo Kent'", "0", "3"),          # floor; template A
    rec(Q1, "select count(*)  from medals where athlete = 'Ivo Kent';", "0", "3"),        # floor; template A
    rec(Q2, "SELECT COUNT(*) FROM Medals WHERE athlete = 'Mia Ross'", "0", "2011"),       # floor; template A
    rec(Q2, "SELECT MIN(year) FROM Medals WHERE athlete = 'Anna Berg'", "None", "2011"),  # floor; entity
    rec(Q3, "SELECT DISTINCT location FROM Medals", "Oslo, Rome, Lima", "Oslo, Rome"),   # a list, but 2 asked
    rec(Q3, "SELECT 0", "0", "Oslo, Rome"),                                                # floor; repeated
    rec(Q4, "SELECT 0", "0", "No"),                                                        # floor; repeated
    rec(Q4, "SELECT location FROM Medals WHERE athlete = 'Anna Berg'", "", "No", error="syntax"),  # entity only
]


def test_each_monitor_counted_by_hand():
    m = collapse_monitors(RECORDS, entities=("Anna Berg",))
    assert m["floor"] == pytest.approx(6 / 8)          # rows 1, 2, 3, 4 ("None"), 6, 7; row 8 failed
    assert m["floor_text"] == pytest.approx(2 / 8)     # rows 6 and 7: 0 for "Oslo, Rome" and for "No"
    assert m["floor_gold"] == 0.0
    assert m["repeated"] == pytest.approx(2 / 8)       # SELECT 0 for Q3 and Q4; rows 1-2 are both Q1
    assert m["top_template"] == pytest.approx(3 / 8)   # COUNT(*) ... athlete = ? for Q1, Q1, Q2
    assert m["top_template_sql"] == "select count(*) from medals where athlete = ?"
    assert m["example_entity"] == pytest.approx(2 / 8)  # rows 4 and 8 name Anna Berg; failed ones count
    assert m["list_for_one"] == 0.0                    # row 5's gold has two items


def test_list_for_one_value_and_the_gold_floor():
    records = [rec(Q3, "SELECT location FROM Medals", "Oslo, Rome, Lima", "Oslo"),
               rec(Q1, "SELECT COUNT(*) FROM Medals", "0", "0"),
               rec(Q2, "SELECT year FROM Medals", "2011", "2011"),
               rec(Q4, "SELECT year FROM Medals", "2011, 2014", "2011", error="timeout")]
    m = collapse_monitors(records, entities=())
    assert m["list_for_one"] == pytest.approx(1 / 4)   # the failed one's prediction does not count
    assert m["floor"] == pytest.approx(1 / 4) and m["floor_gold"] == pytest.approx(1 / 4)
    assert m["repeated"] == pytest.approx(2 / 4)       # SELECT year FROM Medals for Q2 and Q4
    assert m["example_entity"] == 0.0


def test_an_entity_the_question_names_is_not_copied():
    asked = "How many medals did Anna Berg win?"
    m = collapse_monitors([rec(asked, "SELECT COUNT(*) FROM Medals WHERE athlete = 'Anna Berg'", "2", "2")],
                          entities=("Anna Berg",))
    assert m["example_entity"] == 0.0


def test_samples_of_one_question_are_not_repeats_across_questions():
    same = [rec(Q1, "SELECT 0", "0", "3")] * 8
    m = collapse_monitors(same, entities=())
    assert m["repeated"] == 0.0 and m["top_template"] == 0.0 and m["top_template_sql"] == ""
    assert m["floor"] == 1.0


def test_question_identity_falls_back_to_the_index():
    records = [dict(index=4, sql="SELECT 0", prediction="0", answer="1", error=None),
               dict(index=9, sql="SELECT 0", prediction="0", answer="1", error=None)]
    assert collapse_monitors(records, entities=())["repeated"] == 1.0


def test_entities_come_from_the_worked_examples():
    assert example_entities() == ("Anna Berg",)
    assert all("Anna Berg" in ex.sql for examples in prompts.WORKED_EXAMPLES.values() for ex in examples)


def test_empty_batch_and_flat_metrics():
    assert collapse_monitors([]) == {**{name: 0.0 for name in LABELS}, "top_template_sql": ""}
    flat = monitor_metrics("eval", RECORDS, entities=("Anna Berg",))
    assert sorted(flat) == sorted(f"eval/collapse/{name}" for name in LABELS)
    assert MONITORS == tuple(LABELS) and "literal" in MONITORS
    assert flat["eval/collapse/floor"] == pytest.approx(0.75)


def test_the_curves_plot_every_sign_of_collapse():
    """agents/curves.py draws each monitor but the golds' own level, literal included, from the metrics."""
    from agents import curves

    assert curves.COLLAPSE == tuple(name for name in MONITORS if name not in REFERENCE_LEVELS)
    assert "literal" in curves.COLLAPSE and "floor_gold" not in curves.COLLAPSE
    records = [{"step": 1, "eval/collapse/literal": 0.5}]
    assert curves.present_panels(records) == [tuple(f"eval/collapse/{name}" for name in curves.COLLAPSE)]


def test_helpers():
    assert normalize_sql("SELECT  COUNT(*)\nFROM Medals ;") == "select count(*) from medals"
    assert sql_template("SELECT year FROM Medals WHERE athlete = 'O''Neil' AND year > 2010") == \
        "select year from medals where athlete = ? and year > #"
    assert answer_items("Oslo, Rome") == ["Oslo", "Rome"] and answer_items("") == [] and answer_items(None) == []


def test_with_questions_reads_the_env():
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(split="dev")
    env.reset(options={"index": 3})
    _, info = env.score_group(["SELECT 0"])[0]
    (record,) = with_questions([info], env)
    assert record["question"] == env.example(3).question and record["sql"] == "SELECT 0"


def test_no_torch():
    code = "import sys, agents.monitors as m; m.example_entities(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_curves_draw_the_collapse_panels(tmp_path):
    pytest.importorskip("matplotlib")
    from agents import curves, metrics_log

    path = tmp_path / "metrics.jsonl"
    logger = metrics_log.JsonlLogger(path)
    for step in range(1, 13):
        logger.log(step, {"train/reward_mean": 0.1 * step, **monitor_metrics("train", RECORDS[:step % 8 + 1])})
    logger.log(12, monitor_metrics("eval", RECORDS))
    logger.close()
    panels = curves.present_panels(metrics_log.read_metrics(path))
    assert ("train/reward_mean", "eval/reward_mean") in panels
    assert tuple(f"train/collapse/{m}" for m in curves.COLLAPSE) in panels
    assert tuple(f"eval/collapse/{m}" for m in curves.COLLAPSE) in panels
    assert curves.plot_curves(path, tmp_path / "curves.png").stat().st_size > 1000


def test_literal_counted_by_hand():
    records = [dict(rec(Q1, "SELECT 3", "3", "3"), reads_table=False),                          # literal
               dict(rec(Q2, "SELECT 2011", "", "2011", error="literal"), reads_table=False),     # literal, unanswered
               dict(rec(Q3, "SELECT location FROM Medals", "Oslo", "Oslo"), reads_table=True),
               dict(rec(Q4, "SELEC 'No'", "", "No", error="syntax"), reads_table=False),         # failed: no answer
               rec(Q4, "SELECT 'No'", "No", "No")]                                                # no field: reads
    m = collapse_monitors(records, entities=())
    assert m["literal"] == pytest.approx(2 / 5)
    assert monitor_metrics("train", records, entities=())["train/collapse/literal"] == pytest.approx(2 / 5)


@pytest.mark.parametrize("literal_answers", ["score", "unanswered"])
def test_literal_from_the_envs_info(literal_answers):
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(split="dev", literal_answers=literal_answers)
    i = next(k for k, ex in enumerate(env.dataset) if ex.gold_sql)
    env.reset(options={"index": i})
    sqls = [env.example(i).gold_sql, "SELECT 0", "WITH c(x) AS (SELECT 1) SELECT x FROM c", "SELEC 0",
            "SELECT COUNT(*) FROM Medal", "SELECT 'FROM Medal'"]
    records = with_questions([info for _, info in env.score_group(sqls)], env)
    assert collapse_monitors(records, entities=())["literal"] == pytest.approx(3 / 6)
    env.close()
