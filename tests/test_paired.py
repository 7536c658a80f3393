"""agents/paired.py and its command line benchmarks/paired.py: McNemar's exact p by hand, the paired
bootstrap, pairing and its refusals, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "paired.py"


def _load():
    return load_script(SCRIPT, "sqlenv_benchmarks_paired")


paired = _load()


def result(correct, errors=(), split="dev", ids=None, indices=None):
    indices = list(range(len(correct))) if indices is None else indices
    records = [dict(index=i, id=(ids[k] if ids else f"q{i}"), correct=bool(c),
                    error=("syntax" if k in errors else None)) for k, (i, c) in enumerate(zip(indices, correct))]
    return dict(config=dict(dataset="temptabqa-c", split=split, policy="p"), records=records)


@pytest.mark.parametrize("a_only,b_only,p", [
    (1, 6, 2 * (1 + 7) / 2 ** 7),                       # 0.125
    (3, 12, 2 * (1 + 15 + 105 + 455) / 2 ** 15),       # 0.03515625
    (0, 5, 2 / 2 ** 5),                                 # 0.0625: five flips one way are not enough
    (0, 6, 2 / 2 ** 6),                                 # 0.03125
    (5, 5, 1.0), (0, 0, 1.0), (2, 3, 1.0),              # 2 * P(X <= 2 | 5) = 2 * 16/32, capped at 1
])
def test_mcnemar_exact_by_hand(a_only, b_only, p):
    assert paired.mcnemar_exact(a_only, b_only) == pytest.approx(p, rel=1e-12)
    assert paired.mcnemar_exact(b_only, a_only) == pytest.approx(p, rel=1e-12)


def test_bootstrap_holds_the_observed_difference_and_is_seeded():
    a = [1] * 10 + [0] * 30 + [1] * 2 + [0] * 58   # 12 % right
    b = [1] * 10 + [1] * 8 + [0] * 22 + [0] * 60   # 18 %: 8 questions B only, 2 A only
    low, high = paired.paired_bootstrap(a, b, resamples=4000, seed=3)
    assert low < 6.0 < high
    assert (low, high) == paired.paired_bootstrap(a, b, resamples=4000, seed=3)
    # by hand: per-question differences +1 (8), -1 (2), 0 (90): sd 0.31, standard error 3.1 points,
    # so the interval is about 6 +- 6.1 points
    assert -1.0 <= low <= 1.0 and 11.0 <= high <= 13.0


def test_bootstrap_of_identical_outcomes_is_a_point():
    assert paired.paired_bootstrap([1, 0, 1], [1, 0, 1], resamples=50) == (0.0, 0.0)
    assert paired.paired_bootstrap([0, 0], [1, 1], resamples=50) == (100.0, 100.0)


def test_comparison_counts_and_failing_shares():
    a = result([1, 1, 0, 0, 0, 1, 0, 0, 0, 0], errors=(2, 3, 4, 8))
    b = result([1, 0, 1, 1, 1, 1, 1, 0, 0, 0], errors=(9,))
    c = paired.paired_comparison(a, b, ("before.json", "after.json"), resamples=500)
    assert (c["n"], c["a_only"], c["b_only"], c["both"]) == (10, 1, 4, 2)
    assert c["accuracy_a"] == 30.0 and c["accuracy_b"] == 60.0 and c["diff"] == 30.0
    assert c["p_mcnemar"] == pytest.approx(2 * (1 + 5) / 2 ** 5)
    assert c["error_a"] == 40.0 and c["error_b"] == 10.0 and c["error_rel_change"] == pytest.approx(-0.75)
    table = paired.format_paired(c)
    assert "| 10 | 30.00 | 60.00 | +30.00 |" in table and "| 0.375 | 1 | 4 | 40.00 | 10.00 | -75 % |" in table
    assert "A: before.json; B: after.json" in table


def test_records_are_matched_by_index_not_position():
    a = result([1, 0, 0], indices=[5, 7, 9])
    b = result([1, 0, 0], indices=[9, 5, 7], ids=["q9", "q5", "q7"])
    c = paired.paired_comparison(a, b, resamples=10)
    assert (c["a_only"], c["b_only"], c["both"]) == (1, 1, 0)  # q5 right only in A, q9 only in B


def test_different_questions_are_refused_naming_the_file(tmp_path):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(result([1, 0, 1])))
    after.write_text(json.dumps(result([1, 0, 1, 1])))
    with pytest.raises(paired.PairingError, match="after.json: its 4 questions differ from .*before.json's 3"):
        paired.compare_files(before, after)
    after.write_text(json.dumps(result([1, 0, 1], split="test")))
    with pytest.raises(paired.PairingError, match="after.json: split 'test' differs"):
        paired.compare_files(before, after)
    after.write_text(json.dumps(result([1, 0, 1], ids=["q0", "x", "q2"])))
    with pytest.raises(paired.PairingError, match="after.json: question 1 is 'x'"):
        paired.compare_files(before, after)
    after.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(paired.PairingError, match="after.json: no per-question 'records'"):
        paired.compare_files(before, after)


def test_cli_prints_the_table_and_exits_2_on_a_mismatch(tmp_path):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(result([1, 0, 0, 0])))
    after.write_text(json.dumps(result([1, 1, 1, 0], errors=(3,))))
    out = subprocess.run([sys.executable, str(SCRIPT), str(before), str(after), "--resamples", "200"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| 4 | 25.00 | 75.00 | +50.00 |" in out.stdout and "| 0.500 | 0 | 2 | 0.00 | 25.00 | n/a |" in out.stdout
    after.write_text(json.dumps(result([1, 1])))
    out = subprocess.run([sys.executable, str(SCRIPT), str(before), str(after)], capture_output=True, text=True)
    assert out.returncode == 2 and "after.json: its 2 questions differ" in out.stderr


def test_common_compares_the_questions_both_hold(tmp_path):
    whole = result([1, 0, 1, 1, 0, 0, 1, 0])                          # questions 0-7
    subset = result([0, 1, 0], indices=[2, 5, 6], ids=["q2", "q5", "q6"])
    c = paired.paired_comparison(whole, subset, resamples=100, common=True)
    # by hand, on questions 2, 5, 6: A right on 2 and 6, B on 5
    assert (c["n"], c["n_a"], c["n_b"], c["a_only"], c["b_only"], c["both"]) == (3, 8, 3, 2, 1, 0)
    assert "On the 3 questions both hold (A has 8, B 3)." in paired.format_paired(c)
    assert "both hold" not in paired.format_paired(paired.paired_comparison(whole, whole, resamples=10))
    with pytest.raises(paired.PairingError, match="question 5 is 'x'"):   # ids are still checked
        paired.paired_comparison(whole, result([0, 1], indices=[2, 5], ids=["q2", "x"]), common=True)
    with pytest.raises(paired.PairingError, match="no question in common"):
        paired.paired_comparison(whole, result([1], indices=[9]), common=True)
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(whole))
    after.write_text(json.dumps(subset))
    out = subprocess.run([sys.executable, str(SCRIPT), str(before), str(after), "--resamples", "100"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "benchmarks/paired.py --common" in out.stderr
    out = subprocess.run([sys.executable, str(SCRIPT), str(before), str(after), "--resamples", "100", "--common"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "| 3 | 66.67 | 33.33 | -33.33 |" in out.stdout


EVALUATE = REPO / "benchmarks" / "evaluate.py"


def _evaluate(*args, cwd):
    return subprocess.run([sys.executable, str(EVALUATE), "--dataset", "generated", "--split", "dev",
                           "--no-progress", "--out", "out", *args], capture_output=True, text=True, cwd=cwd)


def test_evaluate_compare_to_appends_the_paired_table_and_monitors(tmp_path):
    first = _evaluate("--policy", "constant", "--limit", "40", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = tmp_path / "out" / "constant_generated_dev_tables_n40.json"
    second = _evaluate("--policy", "oracle", "--limit", "40", "--compare-to", str(before), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    after = tmp_path / "out" / "oracle_generated_dev_tables_n40.json"
    saved = json.loads(after.read_text())
    expected = paired.paired_comparison(paired.load_result(before), saved, (str(before), "this run"))
    assert saved["paired"] == json.loads(json.dumps(expected))
    assert saved["paired"]["accuracy_b"] == 100.0 and saved["paired"]["b_only"] == 40 - saved["paired"]["both"]
    report = after.with_suffix(".md").read_text()
    assert "## Paired comparison" in report and paired.format_paired(expected) in report
    assert "## Collapse monitors" in report
    constant = json.loads(before.read_text())["metrics"]["collapse"]
    assert constant["floor"] == 1.0 and constant["repeated"] == 1.0 and constant["top_template_sql"] == "select #"
    assert all(r["question"] for r in saved["records"])


def test_evaluate_compare_to_other_questions_exits_2_naming_the_file(tmp_path):
    assert _evaluate("--policy", "constant", "--limit", "20", cwd=tmp_path).returncode == 0
    before = tmp_path / "out" / "constant_generated_dev_tables_n20.json"
    out = _evaluate("--policy", "constant", "--limit", "30", "--compare-to", str(before), cwd=tmp_path)
    assert out.returncode == 2 and f"--compare-to {before}" not in out.stderr  # the error names B, this run
    assert "this run: its 30 questions differ from" in out.stderr and str(before) in out.stderr
    missing = _evaluate("--policy", "constant", "--compare-to", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.json: cannot read" in missing.stderr


def test_the_script_is_the_command_line_of_agents_paired():
    import agents.paired

    for name in ("mcnemar_exact", "paired_bootstrap", "load_result", "paired_comparison", "format_paired"):
        assert getattr(paired, name) is getattr(agents.paired, name)
    assert paired.PairingError is agents.paired.PairingError
