"""benchmarks/heldout_table.py: the held-out report's numbers are those of the evaluate.py results it reads and of
agents/paired.py's paired_comparison; splits are read from the results' configs; its errors name what is wrong."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

from agents.paired import load_result, paired_comparison

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "heldout_table.py"
RESAMPLES = 2000


ht = load_script(SCRIPT, "sqlenv_benchmarks_heldout_table")
ev = load_script(REPO / "benchmarks" / "evaluate.py", "sqlenv_benchmarks_evaluate_for_heldout")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three policies evaluated by evaluate.py on the generated benchmark, 12 questions a split, as a run's
    folders: untuned = constant (SELECT 0) on dev and test, start = template on dev only, grpo = oracle on
    dev and test."""
    from agents.baselines import ConstantPolicy, OraclePolicy, TemplatePolicy
    from sqlenv.env import TextToSQLEnv

    root = tmp_path_factory.mktemp("run")
    folders = {}
    for split in ("dev", "test"):
        env = TextToSQLEnv(dataset="generated", split=split)
        try:
            for label, policy in (("untuned", ConstantPolicy()), ("start", TemplatePolicy()),
                                  ("grpo", OraclePolicy())):
                if label == "start" and split == "test":
                    continue
                folders[label] = root / f"eval_{label}"
                ev.write_result(ev.evaluate(policy, env, limit=12, seed=0), folders[label])
        finally:
            env.close()
    return folders


def _files(folder):
    return {load_result(p)["config"]["split"]: p for p in sorted(Path(folder).glob("*.json"))}


def _rows(text, section):
    """The table rows (lists of cells) under the Markdown heading ``section``."""
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def _report(runs, capsys, *extra):
    args = [f"{label}={runs[label]}" for label in ("untuned", "start", "grpo")]
    assert ht.main([*args, "--resamples", str(RESAMPLES), *extra]) == 0
    return capsys.readouterr()


def test_table_1_shows_each_results_metrics(runs, capsys):
    text = _report(runs, capsys).out
    rows = {row[0]: row for row in _rows(text, "Accuracy, failing queries and collapse monitors by split")}
    assert list(rows) == ["dev", "test"]
    for split, row in rows.items():
        assert row[1] == "12"
        for k, label in enumerate(("untuned", "start", "grpo")):
            cells = row[2 + 4 * k: 6 + 4 * k]
            path = _files(runs[label]).get(split)
            if path is None:
                assert (label, split, cells) == ("start", "test", ["—"] * 4)
                continue
            m = json.loads(path.read_text())["metrics"]
            lo, hi = m["execution_accuracy_ci95"]
            assert cells == [f"{m['execution_accuracy']:.2f} ({lo:.1f}-{hi:.1f})", f"{m['error_rate']:.2f}",
                             f"{100 * m['collapse']['floor']:.2f}", f"{100 * m['collapse']['literal']:.2f}"]
    # by hand: SELECT 0 reads no table and answers the floor 0 on every question; the oracle's gold SQL
    # always executes, is right, reads a table
    assert rows["dev"][4:6] == ["100.00", "100.00"] and rows["test"][4:6] == ["100.00", "100.00"]
    assert rows["dev"][10:14] == ["100.00 (75.7-100.0)", "0.00", rows["dev"][12], "0.00"]
    assert "floor: Floor answers (0, empty, None); literal: Reads no table (literal answer)" in text


def test_table_2_equals_paired_comparison(runs, capsys):
    text = _report(runs, capsys).out
    rows = _rows(text, "Paired comparisons")
    assert [(r[0], r[1]) for r in rows] == [("dev", "start vs untuned"), ("dev", "grpo vs start"),
                                            ("dev", "grpo vs untuned"), ("test", "grpo vs untuned")]
    for row in rows:
        label_b, label_a = row[1].split(" vs ")
        file_a, file_b = _files(runs[label_a])[row[0]], _files(runs[label_b])[row[0]]
        c = paired_comparison(load_result(file_a), load_result(file_b), resamples=RESAMPLES, seed=0)
        p = f"{c['p_mcnemar']:.3f}" if c["p_mcnemar"] >= 0.001 else f"{c['p_mcnemar']:.1e}"
        assert row[2:] == [str(c["n"]), f"{c['accuracy_a']:.2f}", f"{c['accuracy_b']:.2f}", f"{c['diff']:+.2f}",
                           f"{c['diff_ci95'][0]:+.1f} to {c['diff_ci95'][1]:+.1f}", p, str(c["a_only"]),
                           str(c["b_only"])]
        assert c["n"] == 12
        if label_b == "grpo":  # the oracle is right on all 12: no question is right only in A
            assert row[8] == "0" and int(row[9]) == 12 - round(12 * float(row[3]) / 100)
    # by hand: SELECT 0 is right on one dev question (its gold is 0), the oracle on all 12, so 11 flips one way:
    # McNemar p = 2 * 0.5**11
    assert rows[2][3:10] == ["8.33", "100.00", "+91.67", "+75.0 to +100.0", f"{2 * 0.5 ** 11:.1e}", "0", "11"]
    assert ("Skipped: test: no result for start, so start vs untuned, grpo vs start are skipped.") in text


def test_footer_lists_the_files_read_and_out_writes_the_report(runs, capsys, tmp_path):
    out = tmp_path / "report" / "heldout.md"
    captured = _report(runs, capsys, "--out", str(out))
    assert out.read_text() == captured.out and f"wrote {out}" in captured.err
    footer = captured.out.split("## Files read\n", 1)[1]
    listed = [line.split("`")[1] for line in footer.splitlines() if line.startswith("- ")]
    expected = [str(_files(runs[label])[split]) for label in ("untuned", "start", "grpo")
                for split in ("dev", "test") if split in _files(runs[label])]
    assert listed == expected
    assert "- start: `" + str(_files(runs["start"])["dev"]) + "` (generated/dev, tables schema, 12 questions, " \
           "policy template)" in footer


def _copy_real(tmp_path, source, folder, splits):
    """A real result of docs/runs copied once per split, its config's split changed (the file name kept: the
    split is read from the config)."""
    result = json.loads((REPO / source).read_text())
    (tmp_path / folder).mkdir()
    for split in splits:
        copy = dict(result, config=dict(result["config"], split=split))
        (tmp_path / folder / f"{split[::-1]}_{Path(source).name}").write_text(json.dumps(copy))
    return tmp_path / folder


def test_real_results_with_other_split_names(tmp_path, capsys):
    untuned = _copy_real(tmp_path, "docs/runs/cpu-qwen-grpo/eval_untuned/few-shot_temptabqa-c_dev_flat.json",
                         "untuned", ["hard", "original"])
    grpo = _copy_real(tmp_path, "docs/runs/cpu-qwen-grpo/eval_final/adapter_temptabqa-c_dev_flat.json", "grpo",
                      ["original", "hard"])
    assert ht.main([f"untuned={untuned}", f"grpo={grpo}"]) == 0
    text = capsys.readouterr().out
    table_1 = _rows(text, "Accuracy, failing queries and collapse monitors by split")
    # the results predate the literal monitor: n/a, not 0
    expected = ["282", "24.11 (19.5-29.4)", "17.73", "39.01", "n/a", "32.98 (27.8-38.7)", "1.06", "31.56", "n/a"]
    # these results predate the records' question text: pooled, no two records are known to be one question
    assert table_1[:2] == [["original"] + expected, ["hard"] + expected] and table_1[2][:2] == ["test, pooled", "564"]
    table_2 = _rows(text, "Paired comparisons")
    row = ["grpo vs untuned", "282", "24.11", "32.98", "+8.87", "+4.6 to +13.1", "7.0e-05", "7", "32"]
    assert table_2[:2] == [["original"] + row, ["hard"] + row] and table_2[2][:3] == ["test, pooled", row[0], "564"]
    c = paired_comparison(load_result(next(untuned.glob("*.json"))), load_result(next(grpo.glob("*.json"))))
    assert (c["n"], c["a_only"], c["b_only"], f"{c['p_mcnemar']:.1e}") == (282, 7, 32, "7.0e-05")


def test_pooled_test_splits_count_each_question_once(tmp_path, capsys):
    """Two test splits sharing part of their questions: the pooled row is the union, each question once, as its
    first split (in SPLIT_ORDER) scored it; its comparison is paired_comparison over that union."""
    source = json.loads((REPO / "docs/runs/cpu-qwen-warm-seed0/eval_step40/adapter_temptabqa-c_dev_flat.json")
                        .read_text())
    untuned = json.loads((REPO / "docs/runs/cpu-qwen-cv-seed0/eval_untuned/few-shot_temptabqa-c_dev_flat.json")
                         .read_text())

    def split_result(result, split, records):
        return dict(result, config=dict(result["config"], split=split),
                    records=[dict(r, index=i) for i, r in enumerate(records)])

    first, second = slice(0, 150), slice(100, 282)  # questions 100-149 in both splits
    folders = {}
    for label, result in (("untuned", untuned), ("grpo", source)):
        folders[label] = tmp_path / label
        folders[label].mkdir()
        records = result["records"]
        hard = [dict(r) for r in records[second]]
        if label == "grpo":  # a shared question scored otherwise in the later split: the earlier one counts
            hard[0]["correct"] = not hard[0]["correct"]
        for split, recs in (("original", records[first]), ("hard", hard)):
            (folders[label] / f"{split}.json").write_text(json.dumps(split_result(result, split, recs)))
    assert ht.main([f"untuned={folders['untuned']}", f"grpo={folders['grpo']}", "--resamples", str(RESAMPLES)]) == 0
    text = capsys.readouterr().out
    pooled = {row[0]: row for row in _rows(text, "Accuracy, failing queries and collapse monitors by split")}
    whole_u, whole_g = untuned["metrics"], source["metrics"]
    assert pooled["test, pooled"][1] == "282"
    assert pooled["test, pooled"][2] == (f"{whole_u['execution_accuracy']:.2f} "
                                          f"({whole_u['execution_accuracy_ci95'][0]:.1f}-"
                                          f"{whole_u['execution_accuracy_ci95'][1]:.1f})")
    assert pooled["test, pooled"][6].startswith(f"{whole_g['execution_accuracy']:.2f} ")
    assert pooled["test, pooled"][7] == f"{whole_g['error_rate']:.2f}"
    assert "(332 records; a question in several splits counts once, as its first split scored it; repeats " \
           "scored otherwise in a later split: untuned 0, grpo 1)" in text
    row = [r for r in _rows(text, "Paired comparisons") if r[0] == "test, pooled"][0]
    c = paired_comparison(untuned, source, resamples=RESAMPLES, seed=0)
    assert row[2:] == [str(c["n"]), f"{c['accuracy_a']:.2f}", f"{c['accuracy_b']:.2f}", f"{c['diff']:+.2f}",
                       f"{c['diff_ci95'][0]:+.1f} to {c['diff_ci95'][1]:+.1f}", f"{c['p_mcnemar']:.1e}",
                       str(c["a_only"]), str(c["b_only"])]


def test_one_test_split_is_not_pooled(runs, capsys):
    assert "test, pooled" not in _report(runs, capsys).out  # the generated benchmark: one split named test


# ------------------------------------------------------------------ errors
def _error(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        ht.main([str(a) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_folder_without_results_is_an_error_naming_it(runs, tmp_path, capsys):
    empty = tmp_path / "eval_empty"
    empty.mkdir()
    err = _error(capsys, f"untuned={runs['untuned']}", f"grpo={empty}")
    assert f"benchmarks/heldout_table.py: error: grpo={empty}: no result JSONs in this folder" in err
    err = _error(capsys, f"grpo={tmp_path / 'nowhere'}")
    assert f"grpo={tmp_path / 'nowhere'}: no such folder" in err


def test_two_results_for_one_split_is_an_error_naming_folder_split_and_files(runs, tmp_path, capsys):
    from agents.baselines import ConstantPolicy
    from sqlenv.env import TextToSQLEnv

    folder = tmp_path / "eval_twice"
    shutil.copytree(runs["untuned"], folder)
    env = TextToSQLEnv(dataset="generated", split="dev")
    try:
        extra, _ = ev.write_result(ev.evaluate(ConstantPolicy(), env, limit=5, seed=0), folder)
    finally:
        env.close()
    first = folder / _files(runs["untuned"])["dev"].name
    err = _error(capsys, f"untuned={folder}")
    assert f"untuned={folder}: two results for split 'dev': " in err
    assert str(first) in err and str(extra) in err


def test_results_on_different_questions_are_an_error_naming_both_files(runs, tmp_path, capsys):
    from agents.baselines import OraclePolicy
    from sqlenv.env import TextToSQLEnv

    folder = tmp_path / "eval_other"
    env = TextToSQLEnv(dataset="generated", split="dev")
    try:
        other, _ = ev.write_result(ev.evaluate(OraclePolicy(), env, limit=12, seed=5), folder)
    finally:
        env.close()
    untuned_dev = _files(runs["untuned"])["dev"]
    err = _error(capsys, f"untuned={runs['untuned']}", f"grpo={folder}")
    assert f"split 'dev': cannot pair grpo ({other}) with untuned ({untuned_dev}): " in err
    assert "questions differ" in err


def test_bad_policy_arguments(runs, capsys):
    assert "write LABEL=FOLDER" in _error(capsys, str(runs["untuned"]))
    assert "label 'a' given twice" in _error(capsys, f"a={runs['untuned']}", f"a={runs['grpo']}")


def test_help_and_an_error_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "python benchmarks/heldout_table.py untuned=runs/x/eval_untuned start=runs/x/eval_warm " \
           "grpo=runs/x/eval_final" in proc.stdout
    assert "LABEL=FOLDER" in proc.stdout and "--out FILE.md" in proc.stdout
    proc = subprocess.run([sys.executable, str(SCRIPT), f"x={tmp_path}"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and f"error: x={tmp_path}: no result JSONs in this folder" in proc.stderr
