"""benchmarks/evaluate.py: the metrics on hand-made results, the evaluate loop, the CLI in a subprocess."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "evaluate.py"


def _load_module():
    return load_script(SCRIPT, "sqlenv_benchmarks_evaluate")


ev = _load_module()


def _rec(correct, error=None, qtype="1", difficulty=None, exact=None, relaxed=None, num_samples=None,
         num_correct=None, reward=0.0):
    r = {"correct": correct, "error": error, "question_type": qtype, "difficulty": difficulty,
         "exact": float(correct) if exact is None else exact,
         "relaxed": float(correct) if relaxed is None else relaxed, "f1": float(correct), "reward": reward}
    if num_samples is not None:
        r.update(num_samples=num_samples, num_correct=num_correct, num_errors=0)
    return r


# ------------------------------------------------------------------ pass@k
def test_pass_at_k_matches_the_combinatorial_definition():
    for n, c, k in [(10, 3, 1), (10, 3, 5), (8, 0, 4), (8, 8, 2), (5, 2, 4), (20, 7, 10)]:
        expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
        assert ev.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_1_is_the_fraction_correct():
    assert ev.pass_at_k(8, 3, 1) == pytest.approx(3 / 8)


def test_pass_at_k_is_one_when_too_few_wrong_samples():
    assert ev.pass_at_k(4, 3, 2) == 1.0
    assert ev.pass_at_k(4, 0, 4) == 0.0


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        ev.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        ev.pass_at_k(4, 1, 5)


def test_wilson_interval_brackets_the_proportion():
    lo, hi = ev.wilson_interval(1, 30)
    assert lo == pytest.approx(0.59, abs=0.01) and hi == pytest.approx(16.67, abs=0.01)
    assert ev.wilson_interval(0, 10)[0] == 0.0 and ev.wilson_interval(10, 10)[1] == 100.0
    assert ev.wilson_interval(0, 0) == (0.0, 0.0)


def test_pass_ks_are_powers_of_two_then_k():
    assert ev.pass_ks(1) == [1]
    assert ev.pass_ks(8) == [1, 2, 4, 8]
    assert ev.pass_ks(6) == [1, 2, 4, 6]


# ------------------------------------------------------------------ aggregation
def test_compute_metrics_on_hand_made_results():
    records = [
        _rec(True, qtype="1", difficulty="easy", reward=1.0),
        _rec(False, qtype="1", difficulty="easy", exact=0.0, relaxed=0.5),
        _rec(False, error="syntax", qtype="2", difficulty="hard", reward=-1.0),
        _rec(False, error="no_such_column", qtype="2", difficulty=None, reward=-1.0),
    ]
    m = ev.compute_metrics(records)
    assert m["n"] == 4
    assert m["execution_accuracy"] == pytest.approx(25.0)
    assert m["ems"] == pytest.approx(25.0)
    assert m["rems"] == pytest.approx(100 * 1.5 / 4)
    assert m["error_rate"] == pytest.approx(50.0)
    assert m["errors"]["syntax"] == {"count": 1, "percent": 25.0}
    assert m["errors"]["no_such_column"]["count"] == 1
    assert m["errors"]["timeout"]["count"] == 0
    assert m["mean_reward"] == pytest.approx(-0.25)
    assert "pass_at_k" not in m

    by_type = m["by_question_type"]
    assert list(by_type) == ["1", "2"]
    assert by_type["1"] == {"n": 2, "accuracy": 50.0, "ems": 50.0, "rems": 75.0, "error_rate": 0.0}
    assert by_type["2"]["error_rate"] == 100.0
    by_diff = m["by_difficulty"]
    assert set(by_diff) == {"easy", "hard", ev.UNKNOWN}
    assert by_diff["easy"]["accuracy"] == 50.0 and by_diff[ev.UNKNOWN]["n"] == 1


def test_question_types_sort_numerically():
    records = [_rec(True, qtype=t) for t in ["10", "2", "1", "b", "a"]]
    assert list(ev.compute_metrics(records)["by_question_type"]) == ["1", "2", "10", "a", "b"]


def test_compute_metrics_pass_at_k_averages_the_estimator():
    records = [_rec(True, num_samples=4, num_correct=4), _rec(False, num_samples=4, num_correct=1),
               _rec(False, num_samples=4, num_correct=0)]
    m = ev.compute_metrics(records, samples=4)
    assert set(m["pass_at_k"]) == {"1", "2", "4"}
    assert m["pass_at_k"]["1"] == pytest.approx(100 * (1 + 0.25 + 0) / 3)
    assert m["pass_at_k"]["2"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert m["pass_at_k"]["4"] == pytest.approx(100 * 2 / 3)


def test_empty_results_do_not_divide_by_zero():
    m = ev.compute_metrics([])
    assert m["n"] == 0 and m["execution_accuracy"] == 0.0


def test_select_indices_is_seeded_sorted_and_bounded():
    a = ev.select_indices(100, limit=10, seed=3)
    assert a == ev.select_indices(100, limit=10, seed=3)
    assert a == sorted(a) and len(set(a)) == 10
    assert a != ev.select_indices(100, limit=10, seed=4)
    assert ev.select_indices(5, limit=None) == [0, 1, 2, 3, 4]
    assert ev.select_indices(5, limit=50) == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------ evaluate through the env
@pytest.fixture(scope="module")
def generated_env():
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(dataset="generated", split="dev")
    yield env
    env.close()


class _Scripted:
    """A stochastic test policy: greedy = the gold SQL, samples = gold once then SELECT 0."""

    name = "scripted"
    stochastic = True
    needs_gold = True

    def act_batch(self, observations, infos, n=1, greedy=True):
        if greedy:
            return [[info["gold_sql"]] * n for info in infos]
        return [[info["gold_sql"]] + ["SELECT 0"] * (n - 1) for info in infos]


def test_evaluate_counts_samples_for_pass_at_k(generated_env):
    result = ev.evaluate(_Scripted(), generated_env, limit=6, samples=4, seed=0)
    m = result["metrics"]
    assert m["n"] == 6 and m["execution_accuracy"] == 100.0
    assert all(r["num_samples"] == 4 and r["num_correct"] >= 1 for r in result["records"])
    assert m["pass_at_k"]["4"] == 100.0
    assert m["pass_at_k"]["1"] < 100.0


def test_evaluate_result_round_trips_to_files(generated_env, tmp_path):
    from agents.baselines import ConstantPolicy

    result = ev.evaluate(ConstantPolicy(), generated_env, limit=5, seed=1)
    assert result["config"]["policy"] == "constant" and result["config"]["dataset"] == "generated"
    json_path, md_path = ev.write_result(result, tmp_path, command="python benchmarks/evaluate.py --policy constant")
    assert json_path.name == "constant_generated_dev_tables_n5.json"
    loaded = json.loads(json_path.read_text())
    assert loaded["metrics"]["n"] == 5 and len(loaded["records"]) == 5
    text = md_path.read_text()
    assert "Exec. acc. (%)" in text and "By question type" in text and "--policy constant" in text
    assert "constant" in ev.summarize([tmp_path])


class _LiteralOnSome:
    """The oracle, except that every third question (index % 3 == 0) gets the literal answer SELECT 0."""

    name = "literal-on-some"
    needs_gold = True

    def act_batch(self, observations, infos, n=1, greedy=True):
        return [["SELECT 0" if info["index"] % 3 == 0 else info["gold_sql"]] * n for info in infos]


@pytest.mark.parametrize("option", ["score", "unanswered"])
def test_the_literal_share_in_the_report_and_json(tmp_path, monkeypatch, option):
    """evaluate.py's main on the generated benchmark with a policy that answers a literal for a third of the
    questions: each record says whether its query read a table, the JSON's collapse monitors and the report's
    table give the literal share; under --literal-answers unanswered those answers are errors of kind literal."""
    import agents.baselines

    monkeypatch.setattr(agents.baselines, "make_policy", lambda name, **kwargs: _LiteralOnSome())
    flags = ["--literal-answers", option] if option == "unanswered" else []
    assert ev.main(["--policy", "oracle", "--limit", "12", "--no-progress", "--out", str(tmp_path), *flags]) == 0
    result = json.loads((tmp_path / "literal-on-some_generated_dev_tables_n12.json").read_text())
    records = result["records"]
    literal = [r for r in records if r["index"] % 3 == 0]
    assert len(records) == 12 and 0 < len(literal) < 12
    assert [r["reads_table"] for r in records] == [r["index"] % 3 != 0 for r in records]
    share = len(literal) / len(records)
    assert result["metrics"]["collapse"]["literal"] == pytest.approx(share)
    assert result["config"]["literal_answers"] == option
    report = (tmp_path / "literal-on-some_generated_dev_tables_n12.md").read_text()
    assert f"| Reads no table (literal answer) | {100 * share:.2f} |" in report
    from agents.monitors import LABELS

    assert all(f"| {label} | " in report for label in LABELS.values())
    if option == "unanswered":
        assert result["metrics"]["errors"]["literal"]["count"] == len(literal)
        assert all(r["error"] == "literal" and not r["correct"] for r in literal)
        assert result["metrics"]["execution_accuracy"] == pytest.approx(100 * (1 - share))
    else:
        assert result["metrics"]["error_rate"] == 0.0 and "literal" not in result["metrics"]["errors"]


def test_literal_answers_flag_in_a_subprocess(tmp_path):
    """--policy constant answers SELECT 0 everywhere: every answer is literal; under unanswered, every one fails."""
    proc = _run("--policy", "constant", "--limit", "4", "--literal-answers", "unanswered", "--no-progress",
                "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "constant_generated_dev_tables_n4.json").read_text())
    assert result["metrics"]["collapse"]["literal"] == 1.0 and result["metrics"]["errors"]["literal"]["count"] == 4
    report = (tmp_path / "constant_generated_dev_tables_n4.md").read_text()
    assert "| Reads no table (literal answer) | 100.00 |" in report
    proc = _run("--policy", "constant", "--literal-answers", "drop", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "argument --literal-answers: invalid choice: 'drop'" in proc.stderr


def test_literal_answers_default_to_the_adapters_then_the_spec(tmp_path):
    """An adapter's env_config.json gives --literal-answers' default; a flag that differs wins, with a notice;
    an env_config.json written before the option existed reads as "score"."""
    from agents.adapter_card import write_env_config
    from sqlenv.spec import EnvSpec

    write_env_config(tmp_path, EnvSpec(literal_answers="unanswered"), eval_split="dev")

    def settings(*flags):
        return ev.env_settings(ev.build_parser().parse_args(["--policy", str(tmp_path), *flags]), tmp_path)

    assert settings()[0]["literal_answers"] == "unanswered" and settings()[1] == []
    chosen, notices = settings("--literal-answers", "score")
    assert chosen["literal_answers"] == "score"
    assert notices == [(f"notice: evaluating with literal_answers='score' although {tmp_path} was trained with "
                        "'unanswered'")]
    card = tmp_path / "env_config.json"
    card.write_text(json.dumps({k: v for k, v in json.loads(card.read_text()).items() if k != "literal_answers"}))
    assert settings()[0]["literal_answers"] == "score"
    assert ev.env_settings(ev.build_parser().parse_args([]), None)[0]["literal_answers"] == "score"


def test_column_values_default_to_the_adapters(tmp_path):
    """An adapter trained with column values is evaluated with them; one saved before the option, without."""
    from agents.adapter_card import write_env_config
    from sqlenv.spec import EnvSpec

    write_env_config(tmp_path, EnvSpec(column_values=8), eval_split="dev")
    settings = ev.env_settings(ev.build_parser().parse_args(["--policy", str(tmp_path)]), tmp_path)[0]
    env = EnvSpec(**settings).make()
    assert settings["column_values"] == 8 and env.column_values == 8
    assert "-- type: 'Medal" in env.reset(seed=0)[0]["schema"]
    env.close()
    card = tmp_path / "env_config.json"
    card.write_text(json.dumps({k: v for k, v in json.loads(card.read_text()).items() if k != "column_values"}))
    assert ev.env_settings(ev.build_parser().parse_args(["--policy", str(tmp_path)]), tmp_path)[0]["column_values"] == 0


def test_evaluate_rejects_bad_samples(generated_env):
    from agents.baselines import ConstantPolicy

    with pytest.raises(ValueError, match="samples"):
        ev.evaluate(ConstantPolicy(), generated_env, samples=0)


# ------------------------------------------------------------------ CLI
def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_help_runs():
    proc = _run("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--policy", "--dataset", "--split", "--schema", "--limit", "--samples", "--seed", "--out",
                 "--gold-sql", "--threads", "--model", "--adapter"):
        assert flag in proc.stdout


def test_help_does_not_import_torch():
    code = (f"import sys; sys.argv=['evaluate.py', '--help']; sys.path.insert(0, {str(REPO)!r});\n"
            f"import runpy\ntry:\n    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_tiny_subprocess_run_writes_reports(tmp_path):
    proc = _run("--policy", "template", "--dataset", "generated", "--split", "dev", "--limit", "4",
                "--out", str(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["template_generated_dev_tables_n4.json", "template_generated_dev_tables_n4.md"]
    assert json.loads((tmp_path / files[0]).read_text())["metrics"]["n"] == 4


def test_unknown_policy_is_a_clear_error(tmp_path):
    proc = _run("--policy", "nonesuch", "--limit", "1", "--out", str(tmp_path), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "benchmarks/evaluate.py: error: --policy nonesuch: unknown policy" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_an_unknown_model_is_a_clear_error(tmp_path):
    proc = _run("--policy", "zero-shot", "--model", "nonexistent-model", "--limit", "1", "--out", str(tmp_path),
                "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "--model nonexistent-model" in proc.stderr and "neither a built-in model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_oracle_on_a_split_without_gold_sql_exits_2_before_evaluating(tmp_path, data_dir):
    proc = _run("--policy", "oracle", "--dataset", "temptabqa-c", "--split", "dev", "--data-dir", str(data_dir),
                "--out", str(tmp_path), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "--policy oracle:" in proc.stderr and "have no gold SQL" in proc.stderr and "--gold-sql" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_help_states_each_default_once():
    proc = _run("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "(default: None)" not in proc.stdout
    options = re.split(r"\n\s+(?=--?[a-z])", proc.stdout.split("options:", 1)[1])
    assert len(options) > 15
    for option in options:
        assert option.count("(default") <= 1, option


def test_report_command_can_be_run_again_as_written(tmp_path, data_dir):
    """The data folder came from $SQLENV_DATA_DIR: the recorded command says so, and runs without it."""
    env = {k: v for k, v in os.environ.items() if k != "SQLENV_DATA_DIR"}
    args = ["--policy", "template", "--dataset", "temptabqa-c", "--limit", "2", "--out", str(tmp_path / "a"),
            "--no-progress"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**env, "SQLENV_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    (report,) = (tmp_path / "a").glob("*.json")
    command = json.loads(report.read_text())["command"]
    assert command.startswith(f"SQLENV_DATA_DIR={data_dir} python benchmarks/evaluate.py --policy template")
    assert command in (tmp_path / "a" / report.name.replace(".json", ".md")).read_text()
    again = command.replace(" python ", f" {sys.executable} ", 1).replace(str(tmp_path / "a"), str(tmp_path / "b"))
    proc = subprocess.run(["bash", "-c", again], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "b").glob("*.json")] == [report.name]


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """An adapter of the tiny Llama trained (nominally) on the flat schema, as a checkpoint saves it."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from agents.adapter_card import write_env_config
    from agents.policy import LoRAPolicy, PolicyConfig
    from tests.tiny_llama import save_tiny_llama

    root = tmp_path_factory.mktemp("adapter")
    model = save_tiny_llama(root / "model")
    policy = LoRAPolicy(PolicyConfig(model=model, few_shot=0, max_completion_length=4, threads=1, device="cpu"))
    adapter = policy.save(root / "adapter")
    write_env_config(adapter, dataset="generated", data_dir=None, split="train", eval_split="test", schema="flat",
                     sample_rows=0, reward="partial")
    old = policy.save(root / "old_adapter")  # as saved before env_config.json existed
    return adapter, old


def test_an_adapter_is_evaluated_on_the_environment_it_was_trained_on(tmp_path, tiny_adapter):
    adapter, _ = tiny_adapter
    proc = _run("--policy", str(adapter), "--limit", "2", "--threads", "1", "--device", "cpu", "--out", str(tmp_path),
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (report,) = tmp_path.glob("*.json")
    config = json.loads(report.read_text())["config"]
    assert (config["dataset"], config["split"], config["schema"], config["reward"]) == (
        "generated", "test", "flat", "partial")
    assert config["trained_env"]["schema"] == "flat" and "notice" not in proc.stdout
    # a flag that differs from the training environment is honoured, and said
    proc = _run("--policy", str(adapter), "--schema", "tables", "--limit", "1", "--threads", "1", "--device", "cpu",
                "--out", str(tmp_path / "tables"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "notice: evaluating with schema='tables' although" in proc.stdout and "'flat'" in proc.stdout


def test_an_adapter_without_its_environment_says_what_is_assumed(tmp_path, tiny_adapter):
    _, old = tiny_adapter
    proc = _run("--policy", str(old), "--limit", "1", "--threads", "1", "--device", "cpu", "--out", str(tmp_path),
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "records no training environment" in proc.stdout and "'tables' schema" in proc.stdout


@pytest.fixture(scope="module")
def budget_adapter(tiny_adapter, tmp_path_factory):
    """The tiny adapter as a run under an instruction budget saves it (--max-instructions 5000 --query-timeout 3)."""
    import shutil

    from agents.adapter_card import write_env_config
    from sqlenv.spec import EnvSpec

    adapter = shutil.copytree(tiny_adapter[0], tmp_path_factory.mktemp("budget") / "adapter")
    write_env_config(adapter, EnvSpec(dataset="generated", split="train", schema="flat", sample_rows=0,
                                      timeout=3.0, max_instructions=5000), eval_split="test")
    return adapter


def _report_config(folder: Path) -> dict:
    (report,) = folder.glob("*.json")
    return json.loads(report.read_text())["config"]


def test_an_adapter_is_evaluated_under_the_query_budget_it_was_trained_with(tmp_path, budget_adapter):
    common = ("--policy", str(budget_adapter), "--limit", "1", "--threads", "1", "--device", "cpu", "--no-progress")
    proc = _run(*common, "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    config = _report_config(tmp_path / "a")
    assert (config["timeout"], config["max_instructions"]) == (3.0, 5000) and "notice" not in proc.stdout
    assert config["trained_env"]["max_instructions"] == 5000
    # a flag wins, with the notice; "none" lifts the instruction budget
    proc = _run(*common, "--max-instructions", "none", "--timeout", "2", "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    config = _report_config(tmp_path / "b")
    assert (config["timeout"], config["max_instructions"]) == (2.0, None)
    assert "notice: evaluating with max_instructions=None although" in proc.stdout and "5000" in proc.stdout
    assert "notice: evaluating with timeout=2.0 although" in proc.stdout


def test_without_an_adapter_the_budget_is_the_spec_default_or_the_flags(tmp_path):
    proc = _run("--policy", "oracle", "--limit", "2", "--no-progress", "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    config = _report_config(tmp_path / "a")
    assert (config["timeout"], config["max_instructions"]) == (1.0, None)
    proc = _run("--policy", "oracle", "--limit", "2", "--no-progress", "--max-instructions", "100000000",
                "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    assert _report_config(tmp_path / "b")["max_instructions"] == 100000000
    for flag, value in (("--max-instructions", "0"), ("--timeout", "-1")):
        proc = _run("--policy", "oracle", flag, value, "--out", str(tmp_path / "c"))
        assert proc.returncode == 2 and f"argument {flag}: " in proc.stderr, proc.stderr


def test_an_old_or_bad_env_config_is_read_or_named(tmp_path, tiny_adapter):
    """An env_config.json written before the budget existed reads as those runs were (1 s, no instruction
    budget, one query); a bad field stops the script naming the field and the file."""
    import shutil

    adapter = Path(shutil.copytree(tiny_adapter[0], tmp_path / "adapter"))
    card = adapter / "env_config.json"
    old = {k: v for k, v in json.loads(card.read_text()).items()
           if k not in ("timeout", "max_instructions", "max_turns", "literal_answers")}
    card.write_text(json.dumps(old))
    proc = _run("--policy", "template", "--adapter", str(adapter), "--limit", "1", "--no-progress",
                "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    config = _report_config(tmp_path / "a")
    assert (config["timeout"], config["max_instructions"], config["schema"]) == (1.0, None, "flat")
    assert config["trained_env"] == {**old, "timeout": 1.0, "max_instructions": None, "max_turns": 1,
                                     "literal_answers": "score"}
    assert config["literal_answers"] == "score"
    card.write_text(json.dumps({**old, "max_instructions": "lots"}))
    proc = _run("--policy", "template", "--adapter", str(adapter), "--limit", "1", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2, proc.stderr
    assert f"{card}: max_instructions='lots' must be an integer >= 1" in proc.stderr


# ------------------------------------------------------------------ batching by database, several splits
class _GoldOnEven:
    """Deterministic: the gold SQL on even indices, SELECT 0 on odd ones; records each batch it was asked."""

    name = "gold-on-even"
    needs_gold = True

    def __init__(self):
        self.batches = []

    def act_batch(self, observations, infos, n=1, greedy=True):
        self.batches.append([info["index"] for info in infos])
        return [[info["gold_sql"] if info["index"] % 2 == 0 else "SELECT 0"] * n for info in infos]


def test_evaluate_batches_by_database_and_returns_records_in_index_order(generated_env):
    """Indices that interleave three databases: the policy is asked database by database (in order of each
    database's first question), the records come back in the order of the indices, each one what evaluating
    that question alone gives."""
    indices = [0, 6, 12, 1, 7, 13, 2, 8]
    keys = [generated_env.example(i).db_key for i in indices]
    assert len(set(keys)) == 3 and keys[0] == keys[3] != keys[1]
    policy = _GoldOnEven()
    result = ev.evaluate(policy, generated_env, indices=indices, batch_size=3)
    assert policy.batches == [[0, 1, 2], [6, 7, 8], [12, 13]]
    assert [r["index"] for r in result["records"]] == indices
    alone = [ev.evaluate(_GoldOnEven(), generated_env, indices=[i])["records"][0] for i in indices]
    assert result["records"] == alone
    assert [r["correct"] for r in result["records"]] == [i % 2 == 0 for i in indices]
    assert result["metrics"] == ev.compute_metrics(alone)
    assert ev.database_order(["b", "a", "b", "c", "a"]) == [0, 2, 1, 4, 3]


def _comparable(result: dict) -> dict:
    """A result JSON without what differs between runs of the same questions: times, command, shared_run."""
    config = {k: v for k, v in result["config"].items()
              if k not in ("elapsed_s", "seconds_per_question", "shared_run")}
    return {"config": config, "metrics": result["metrics"], "records": result["records"]}


def _markdown_body(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if not line.startswith(("Questions:", "python ", "SQLENV_DATA_DIR="))]


def test_several_splits_write_what_separate_runs_write(tmp_path, data_dir):
    """--split original,hard --limit 15 in one process: each split's JSON and Markdown hold what a run on that
    split alone writes (its seeded subset, its indices and ids, its metrics), times and command aside."""
    env = {**os.environ, "SQLENV_DATA_DIR": str(data_dir)}
    common = ["--policy", "template", "--dataset", "temptabqa-c", "--limit", "15", "--threads", "1", "--no-progress"]

    def run(split, out):
        proc = subprocess.run([sys.executable, str(SCRIPT), *common, "--split", split, "--out", str(out)],
                              capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    stdout = run("original,hard", tmp_path / "both")
    for split in ("original", "hard"):
        run(split, tmp_path / split)
        name = f"template_temptabqa-c_{split}_tables_n15"
        together = json.loads((tmp_path / "both" / f"{name}.json").read_text())
        alone = json.loads((tmp_path / split / f"{name}.json").read_text())
        assert _comparable(together) == _comparable(alone)
        assert together["records"][0]["id"].startswith(f"{split}-") and len(together["records"]) == 15
        assert together["config"]["shared_run"] == {"splits": ["original", "hard"], "distinct_questions": 30}
        assert _markdown_body(tmp_path / "both" / f"{name}.md") == _markdown_body(tmp_path / split / f"{name}.md")
    rows = [line for line in stdout.splitlines() if line.startswith("| template | temptabqa-c |")]
    assert [row.split(" | ")[2] for row in rows] == ["original", "hard"]
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == sorted(
        f"template_temptabqa-c_{s}_tables_n15.{ext}" for s in ("hard", "original") for ext in ("json", "md"))


class _CountingTemplate:
    """The template policy, counting the questions it is asked."""

    def __init__(self):
        from agents.baselines import TemplatePolicy

        self.inner, self.asked = TemplatePolicy(), 0
        self.name = self.inner.name

    def act_batch(self, observations, infos, n=1, greedy=True):
        self.asked += len(observations)
        return self.inner.act_batch(observations, infos, n=n, greedy=greedy)

    def __repr__(self):
        return repr(self.inner)


@pytest.mark.parametrize("turns", ["1", "2"])
def test_questions_shared_by_splits_are_answered_once(tmp_path, monkeypatch, data_dir, turns):
    """small and hard share 97 questions (same text, database and gold answer) of their 855 + 719: one run
    asks the policy 1,477 questions and writes for each split what a run on it alone writes. Four more
    question/database pairs are in both with different gold answers (hard says 3 or 4 medals, small 0 or 1):
    they are different questions, each scored against its own split's answer. Multi-turn episodes alike."""
    import agents.baselines

    policies = []

    def make_policy(name, **kwargs):
        policies.append(_CountingTemplate())
        return policies[-1]

    monkeypatch.setattr(agents.baselines, "make_policy", make_policy)
    common = ["--policy", "template", "--dataset", "temptabqa-c", "--data-dir", str(data_dir), "--no-progress",
              "--max-turns", turns]
    assert ev.main([*common, "--split", "small,hard", "--out", str(tmp_path / "both")]) == 0
    assert policies[-1].asked == 855 + 719 - 97  # 95 before the answer corrections (73e1e6d) made 2 more agree
    suffix = "_t2" if turns == "2" else ""
    results = {}
    for split, size in (("small", 855), ("hard", 719)):
        assert ev.main([*common, "--split", split, "--out", str(tmp_path / split)]) == 0
        assert policies[-1].asked == size
        name = f"template_temptabqa-c_{split}_tables{suffix}.json"
        together = json.loads((tmp_path / "both" / name).read_text())
        assert _comparable(together) == _comparable(json.loads((tmp_path / split / name).read_text()))
        results[split] = {(r["question"], r["prediction"]): r for r in together["records"]}
    answers = {key: (results["small"][key]["answer"], results["hard"][key]["answer"])
               for key in results["small"].keys() & results["hard"].keys()
               if results["small"][key]["answer"] != results["hard"][key]["answer"]}
    assert ("0", "3") in answers.values() and ("1", "4") in answers.values()


def test_split_lists_in_help_and_their_errors(tmp_path, capsys):
    proc = _run("--help", timeout=120)
    assert "--split" in proc.stdout and "test is its 7 test splits (original, counterfactual, small, large, " \
        "easy, medium, hard)" in " ".join(proc.stdout.split())
    assert ev.split_list("temptabqa-c", "test") == ["original", "counterfactual", "small", "large", "easy",
                                                    "medium", "hard"]
    assert ev.split_list("temptabqa-c", "hard,test,dev")[:2] == ["hard", "original"]
    assert ev.split_list("generated", "test") == ["test"]  # the generated benchmark's own test split
    with pytest.raises(SystemExit) as exit_:
        ev.main(["--policy", "template", "--dataset", "temptabqa-c", "--split", "original,nonesuch"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: --split original,nonesuch: unknown split 'nonesuch' for dataset 'temptabqa-c'" in err
    assert ", or test (all of original, counterfactual" in err
    assert ev.main(["--policy", "constant", "--limit", "3", "--no-progress", "--out", str(tmp_path)]) == 0
    (before,) = tmp_path.glob("*.json")
    with pytest.raises(SystemExit) as exit_:
        ev.main(["--policy", "template", "--dataset", "temptabqa-c", "--split", "test", "--compare-to", str(before)])
    assert exit_.value.code == 2
    assert f"error: --compare-to {before}: pairs one result with one earlier result, and --split test names 7 " \
        "splits" in capsys.readouterr().err


def test_rollout_dtype_generates_in_that_precision_and_is_refused_for_a_non_lm_policy(tmp_path, tiny_adapter):
    adapter, _ = tiny_adapter
    proc = _run("--policy", str(adapter), "--limit", "2", "--threads", "1", "--device", "cpu", "--rollout-dtype",
                "bfloat16", "--out", str(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (report,) = tmp_path.glob("*.json")
    result = json.loads(report.read_text())
    assert result["metrics"]["n"] == 2 and "--rollout-dtype bfloat16" in result["command"]
    proc = _run("--policy", "template", "--dataset", "generated", "--limit", "1", "--rollout-dtype", "bfloat16",
                "--out", str(tmp_path / "t"), "--no-progress")
    assert proc.returncode == 2 and "--rollout-dtype bfloat16: --policy template is not a language model" in proc.stderr
