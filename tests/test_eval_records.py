"""The trainer's side of issue 16: held-out records, collapse monitors per step and per evaluation, the
final paired comparison against step 0, and --drop-unsolved-groups (by hand, then a tiny real run)."""

import json

import pytest

torch = pytest.importorskip("torch")

from agents import grpo, grpo_train, metrics_log  # noqa: E402
from agents.eval_records import compare_with_start, eval_file, held_out_records  # noqa: E402
from agents.grpo_config import make_config, parse_config  # noqa: E402
from sqlenv.env import TextToSQLEnv  # noqa: E402
from tests.tiny_llama import save_tiny_llama  # noqa: E402


def infos(*correct):
    return [{"correct": c} for c in correct]


def test_solved_mask_by_hand():
    assert grpo.solved_mask([False, True, False, False, False, False], 3).tolist() == [True, False]
    assert grpo.solved_mask(torch.tensor([[1, 1], [0, 0], [0, 1]]), 2).tolist() == [True, False, True]


@pytest.mark.parametrize("skip,drop,kept", [(True, False, [True, False, True]), (True, True, [True, False, False]),
                                            (False, True, [True, False, False]), (False, False, [True, True, True])])
def test_kept_groups(skip, drop, kept):
    zero = torch.tensor([False, True, False])  # group 2 has mixed rewards but no right sample (0 vs 0.1)
    cfg = make_config(num_generations=2, skip_zero_std=skip, drop_unsolved_groups=drop)
    assert grpo_train.kept_groups(zero, infos(True, False, False, False, False, False), cfg).tolist() == kept


def test_flag_and_the_arctic_reward_parse():
    cfg = parse_config(["--drop-unsolved-groups", "--reward", "arctic", "--scale-rewards", "batch"])
    assert (cfg.drop_unsolved_groups, cfg.reward, cfg.scale_rewards) == (True, "arctic", "batch")
    assert parse_config([]).drop_unsolved_groups is False


def test_arctic_group_scaling_is_why_unsolved_groups_are_dropped():
    # one unsolved group (2 execute, 2 fail) and one solved group (1 right, 3 execute), G = 4
    rewards = torch.tensor([0.1, 0.1, 0.0, 0.0, 1.0, 0.1, 0.1, 0.1])
    group = grpo.group_advantages(rewards, 4, "group", eps=0.0)
    none = grpo.group_advantages(rewards, 4, "none")
    # "group": the unsolved group's +-0.05 becomes +-0.866, more than the solved group's wrong samples' -0.5
    assert group[0].item() == pytest.approx(0.05 / 0.057735, rel=1e-4)
    assert group[5].item() == pytest.approx(-0.225 / 0.45, rel=1e-4)
    # "none": the unsolved group moves 0.05, the right sample 0.675
    assert none[0].item() == pytest.approx(0.05) and none[4].item() == pytest.approx(0.675)


def _recorded_eval(tmp_path, sqls, step):
    """One query for each of questions 0-2, scored by the env; the infos an evaluation returns, recorded."""
    env = TextToSQLEnv(split="dev")
    infos = []
    for index, sql in zip((0, 1, 2), sqls):
        env.reset(options={"index": index})
        infos += [info for _, info in env.score_group([sql])]
    metrics = {}
    return env, metrics, held_out_records(env, infos, metrics, tmp_path, step)


def test_held_out_records_monitors_and_file(tmp_path):
    env, metrics, result = _recorded_eval(tmp_path, ["SELECT 0", "SELECT 0", "SELEC"], 0)
    assert [r["index"] for r in result["records"]] == [0, 1, 2]
    assert result["records"][0]["question"] == env.example(0).question
    assert result["config"]["split"] == "dev" and result["config"]["step"] == 0
    assert metrics["eval/collapse/floor"] == pytest.approx(2 / 3)   # two executed SELECT 0
    assert metrics["eval/collapse/repeated"] == pytest.approx(2 / 3)
    assert metrics["eval/collapse/literal"] == pytest.approx(2 / 3)  # SELECT 0 reads no table; SELEC failed
    assert [r["reads_table"] for r in result["records"]] == [False, False, False]
    assert json.loads(eval_file(tmp_path, 0).read_text())["records"][2]["error"] == "syntax"
    assert compare_with_start(result, metrics, tmp_path) is None  # step 0 has nothing to compare with
    assert held_out_records(env, [], {}, tmp_path, 1) is None and not eval_file(tmp_path, 1).exists()


def test_final_evaluation_is_paired_with_step_0(tmp_path):
    env = TextToSQLEnv(split="dev")
    gold = [env.example(i).gold_sql for i in (0, 1, 2)]
    _recorded_eval(tmp_path, ["SELECT 0", "SELEC", "SELECT 0"], 0)
    _, metrics, result = _recorded_eval(tmp_path, [gold[0], gold[1], "SELECT 0"], 5)
    table = compare_with_start(result, metrics, tmp_path)
    a = [r["correct"] for r in json.loads(eval_file(tmp_path, 0).read_text())["records"]]
    b = [r["correct"] for r in result["records"]]
    assert b[:2] == [True, True] and a[1] is False  # the gold queries are right; SELEC fails
    assert metrics["paired/a_only"] == 0  # question 2 gets SELECT 0 both times, question 0 gold vs SELECT 0
    assert metrics["paired/b_only"] == (not a[0]) + 1
    assert metrics["paired/diff"] == pytest.approx(100 * (sum(b) - sum(a)) / 3)
    assert table in (tmp_path / "eval" / "paired.md").read_text() and "step 5" in table


def test_a_tiny_real_run_logs_monitors_and_pairs_its_final_evaluation(tmp_path):
    model = save_tiny_llama(tmp_path / "tiny")
    cfg = make_config(model=model, dataset="generated", num_generations=2, batch_size=2, micro_batch_size=4,
                      max_completion_length=8, temperature=1.0, few_shot=0, eval_limit=3, eval_every=0,
                      eval_batch_size=3, probe_questions=0, save_every=0, plot=False, threads=1, seed=1,
                      warmup_examples=0, steps=1, drop_unsolved_groups=True, reward="arctic",
                      output_dir=str(tmp_path / "run"))
    grpo_train.train(cfg)
    run = tmp_path / "run"
    records = metrics_log.read_metrics(run / "metrics.jsonl")
    step0 = [r for r in records if r["step"] == 0 and "eval/accuracy" in r]
    assert step0, "eval_every=0 still evaluates the starting policy (the paired comparison's A)"
    train = [r for r in records if "train/reward_mean" in r]
    assert all(f"train/collapse/{m}" in train[0] for m in ("floor", "repeated", "example_entity", "list_for_one"))
    assert 0.0 <= train[0]["train/groups_unsolved"] <= 1.0
    # a random tiny model never answers right: every group is unsolved, so the update is skipped
    assert train[0]["train/groups_unsolved"] == 1.0 and train[0]["train/groups_kept"] == 0
    assert train[0]["train/skipped_update"] == 1
    final = [r for r in records if r["step"] == 1 and "eval/accuracy" in r][-1]
    assert "eval/collapse/floor" in step0[0] and "eval/collapse/floor" in final
    a = json.loads(eval_file(run, 0).read_text())
    b = json.loads(eval_file(run, 1).read_text())
    assert [r["index"] for r in a["records"]] == [r["index"] for r in b["records"]] and len(a["records"]) == 3
    assert final["paired/a_only"] == sum(x["correct"] and not y["correct"] for x, y in zip(a["records"], b["records"]))
    assert final["paired/p_mcnemar"] == 1.0 and (run / "eval" / "paired.md").exists()
