"""agents/grpo_train.py: the CLI, config validation, the update step on a toy policy, the failures that
must stop a run at once with exit status 2 and a message naming the flag, the gpu preset's code path on
a tiny model, and (slow) a tiny real run with the real model and env, including an exact resume."""

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from agents import checkpoints, curves, grpo_train, metrics_log, preflight, rollouts  # noqa: E402
from agents import grpo_update as update  # noqa: E402
from agents.cli import ConfigError, field_docs  # noqa: E402
from agents.grpo_config import Config, make_config, parse_config  # noqa: E402
from sqlenv.spec import EnvSpec  # noqa: E402
from tests.tiny_llama import save_tiny_llama  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "agents" / "grpo_train.py"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def run_script(*args, cwd=REPO, data_dir_env: str | None = None, timeout=300) -> subprocess.CompletedProcess:
    """The script in a subprocess; $SQLENV_DATA_DIR is unset unless ``data_dir_env`` is given."""
    env = {k: v for k, v in os.environ.items() if k != "SQLENV_DATA_DIR"}
    if data_dir_env is not None:
        env["SQLENV_DATA_DIR"] = data_dir_env
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def assert_usage_error(out: subprocess.CompletedProcess, *fragments: str):
    """Exit status 2, the script's name and every fragment in one error line, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "python agents/grpo_train.py: error:" in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr)


# ====================================================================================== CLI
def test_help_lists_every_field():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    for f in fields(Config):
        assert "--" + f.name.replace("_", "-") in out.stdout, f.name
    assert "num_generations" not in out.stdout.split("options:")[0]  # flags use dashes
    assert "G: completions sampled per question" in out.stdout


def test_every_field_has_a_docstring():
    docs = field_docs(Config)
    assert set(docs) == {f.name for f in fields(Config)}
    assert all(len(doc) > 5 for doc in docs.values())


def test_defaults_and_flags():
    cfg = parse_config([])
    assert cfg == Config()
    assert (cfg.dataset, cfg.schema, cfg.preset, cfg.num_generations) == ("temptabqa-c", "flat", "cpu", 8)
    assert (cfg.warmup_examples, cfg.warmup_adapter, cfg.beta) == (320, None, 0.1)
    cfg = parse_config(["--num-generations", "6", "--epsilon-high", "0.28", "--no-skip-zero-std",
                        "--data-dir", "/x", "--threads", "none", "--loss-type", "grpo"])
    assert (cfg.num_generations, cfg.epsilon_high, cfg.skip_zero_std, cfg.data_dir, cfg.threads,
            cfg.loss_type) == (6, 0.28, False, "/x", None, "grpo")


def test_gpu_preset_and_explicit_flags_win():
    cfg = parse_config(["--preset", "gpu"])
    assert (cfg.dtype, cfg.device, cfg.num_generations, cfg.batch_size) == ("bfloat16", "cuda", 8, 16)
    cfg = parse_config(["--preset", "gpu", "--num-generations", "4"])
    assert (cfg.num_generations, cfg.batch_size) == (4, 16)


@pytest.mark.parametrize("argv, field", [
    (["--num-generations", "1"], "num_generations"),
    (["--loss-type", "dapo"], "loss_type"),
    (["--scale-rewards", "std"], "scale_rewards"),
    (["--schema", "star"], "schema"),
    (["--reward", "dense"], "reward"),
    (["--epsilon", "1.5"], "epsilon"),
    (["--steps", "0"], "steps"),
    (["--beta", "-0.1"], "beta"),
    (["--temperature", "0"], "temperature"),
    (["--preset", "tpu"], "preset"),
    (["--learning-rate", "fast"], "learning_rate"),
    (["--batch-size", "2.5"], "batch_size"),
])
def test_invalid_values_exit_with_the_field_name(argv, field, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert field in err or "--" + field.replace("_", "-") in err, err


def test_config_error_names_the_flag():
    with pytest.raises(ConfigError, match=r"micro_batch_size=0 \(--micro-batch-size\) must be >= 1"):
        make_config(micro_batch_size=0)


def test_invalid_value_from_the_command_line():
    out = subprocess.run([sys.executable, str(SCRIPT), "--num-generations", "1"], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2
    assert "num_generations=1 (--num-generations) must be >= 2" in out.stderr


def test_temptabqa_falls_back_to_generated_only_without_any_data_dir(monkeypatch):
    monkeypatch.delenv("SQLENV_DATA_DIR", raising=False)
    dataset, data_dir, notice = preflight.resolve_dataset(make_config())
    assert (dataset, data_dir) == ("generated", None) and "'generated'" in notice
    assert preflight.resolve_dataset(make_config(dataset="generated")) == ("generated", None, "")
    # A data dir that is given, by flag or variable, is never silently replaced: it is an error
    with pytest.raises(ConfigError, match=r"data_dir='/nonexistent' \(--data-dir\).*not a directory"):
        preflight.resolve_dataset(make_config(data_dir="/nonexistent"))
    monkeypatch.setenv("SQLENV_DATA_DIR", "/nonexistent")
    with pytest.raises(ConfigError, match=r"\$SQLENV_DATA_DIR='/nonexistent' \(or --data-dir\)"):
        preflight.resolve_dataset(make_config())


# ====================================================================================== helpers
def test_outcome_metrics():
    infos = [
        {"correct": True, "exact": 1.0, "f1": 1.0, "error": None},
        {"correct": False, "exact": 0.0, "f1": 0.5, "error": None},
        {"correct": False, "exact": 0.0, "f1": 0.0, "error": "syntax"},
        {"correct": False, "exact": 0.0, "f1": 0.0, "error": "syntax"},
    ]
    m = rollouts.outcome_metrics("train", [1.0, 0.0, -1.0, -1.0], infos)
    assert m["train/reward_mean"] == pytest.approx(-0.25)
    assert m["train/accuracy"] == 0.25 and m["train/error_frac"] == 0.5 and m["train/f1"] == 0.375
    assert m["train/error/syntax"] == 0.5


def test_the_gathered_batch_keeps_what_the_metrics_and_monitors_read():
    """Under torchrun each rank ships its infos to the others (gather_batch): the train/* outcome and collapse
    metrics of the gathered batch are those of the ranks' own infos, literal answers included. Two ranks that
    scored the same samples stand in for the collective (every share is then unchanged)."""
    from agents.distributed import World
    from agents.monitors import MONITORS, monitor_metrics, with_questions
    from sqlenv.env import TextToSQLEnv

    class TwoRanks(World):
        def gather(self, obj):
            return [obj, obj]

    env = TextToSQLEnv(split="dev")
    try:
        sqls = [env.example(0).gold_sql, "SELECT 0", "SELECT 'Yes'", "SELEC"]
        rewards, infos = rollouts.score_groups(env, [0, 1], sqls, 2)
        cfg = make_config(num_generations=2)
        kwargs = {"rewards": rewards, "infos": infos, "zero": torch.tensor([False, False]),
                  "advantages": torch.zeros(4), "lengths": [3, 3, 3, 3], "truncated": [False] * 4,
                  "times": {"gen_s": 1.0, "score_s": 1.0, "update_s": 1.0}}
        mine, gathered = grpo_train.gather_batch(World(), cfg, **kwargs), grpo_train.gather_batch(TwoRanks(size=2),
                                                                                                   cfg, **kwargs)
        assert len(gathered["infos"]) == 8

        def metrics(batch):
            return {**rollouts.outcome_metrics("train", batch["rewards"], batch["infos"]),
                    **monitor_metrics("train", with_questions(batch["infos"], env))}

        assert metrics(gathered) == metrics(mine)
        assert metrics(mine)["train/collapse/literal"] == pytest.approx(2 / 4)  # SELECT 0, SELECT 'Yes'
        assert set(MONITORS) <= {key.split("/")[-1] for key in metrics(mine)}
    finally:
        env.close()


def test_turn_metrics_of_a_step_cover_every_ranks_episodes():
    """Multi-turn under torchrun: each rank ships its episodes' counts (gather_batch), so train/turns_mean and
    the other turn metrics are those of all the step's episodes, not of rank 0's alone."""
    import torch

    from agents.distributed import World
    from agents.multiturn import Episode, episode_metrics

    def episode(kinds, errors, answered):
        e = Episode(0, torch.zeros(1), torch.zeros(1), torch.ones(1), torch.zeros(1))
        e.moves, e.move_kinds, e.move_errors = ["m"] * len(kinds), kinds, errors
        e.move_tokens = [5] * len(kinds)
        e.info = {"error": None if answered else "no_answer"}
        return e

    mine = [episode(["answer"], [None], True), episode(["sql", "answer"], ["syntax", None], True)]
    theirs = [episode(["sql", "malformed", "sql"], [None, "no_tag", None], False)] * 3
    counts = grpo_train.episode_counts(theirs)

    class RankZeroOfTwo(World):
        def gather(self, obj):
            return [obj, {**obj, "turns": counts}]

    cfg = make_config(num_generations=2, max_turns=3)
    kwargs = {"rewards": [1.0, 1.0], "infos": [{}, {}], "zero": torch.tensor([True]),
              "advantages": torch.zeros(2), "lengths": [5, 10], "truncated": [False, False],
              "times": {"gen_s": 1.0, "score_s": 1.0, "update_s": 1.0}, "turns": grpo_train.episode_counts(mine)}
    batch = grpo_train.gather_batch(RankZeroOfTwo(size=2), cfg, **kwargs)
    summed = grpo_train.counts_metrics("train", batch["turns"])
    assert summed == episode_metrics("train", mine + theirs) != episode_metrics("train", mine)
    assert summed["train/turns_mean"] == (1 + 2 + 3 * 3) / 5 and summed["train/no_answer_frac"] == 3 / 5
    assert summed["train/explore_error_frac"] == 4 / 10 and summed["train/malformed_frac"] == 3 / 12
    assert grpo_train.gather_batch(World(), cfg, **kwargs)["turns"] == grpo_train.episode_counts(mine)


def test_sample_questions_is_seeded_and_distinct():
    a = rollouts.sample_questions(__import__("numpy").random.default_rng(3), 100, 8)
    b = rollouts.sample_questions(__import__("numpy").random.default_rng(3), 100, 8)
    assert a == b and len(set(a)) == 8
    assert sorted(rollouts.sample_questions(__import__("numpy").random.default_rng(0), 3, 8)) == [0, 1, 2]


def test_pad_right():
    out = update.pad_right([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0, 6.0])], 3)
    assert out.tolist() == [[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]]


def test_find_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="--resume"):
        checkpoints.find_checkpoint(tmp_path)
    for step in (2, 10):
        (tmp_path / "checkpoints" / f"step_{step:06d}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"step_{step:06d}" / "state.pt").write_bytes(b"")
    assert checkpoints.find_checkpoint(tmp_path).name == "step_000010"
    assert checkpoints.find_checkpoint(tmp_path / "checkpoints" / "step_000002").name == "step_000002"


def test_plot_curves(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = metrics_log.JsonlLogger(path)
    logger.log(0, {"probe/mixed_frac": 0.5})
    for step in (1, 2, 3):
        logger.log(step, {"train/reward_mean": step / 3, "train/loss": float("nan"), "train/accuracy": 0.1})
    logger.log(3, {"eval/accuracy": 0.2})
    logger.close()
    records = metrics_log.read_metrics(path)
    assert records[2]["train/loss"] is None  # NaN is logged as null, keeping the file valid JSON
    assert curves.plot_curves(path, tmp_path / "curves.png").stat().st_size > 1000
    metrics_log.truncate_metrics(path, 2)
    assert [r["step"] for r in metrics_log.read_metrics(path)] == [0, 1, 2]
    logger = metrics_log.JsonlLogger(path)
    for step in range(3, 40):  # long enough for the running-mean overlay
        logger.log(step, {"train/reward_mean": (-1) ** step})
    logger.close()
    assert curves.plot_curves(path, tmp_path / "long.png").stat().st_size > 1000


def test_running_mean():
    assert curves.running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert curves.running_mean([], 5) == []


# ====================================================================================== update (toy policy)
class ToyPolicy:
    """A bigram 'language model': frozen base logits per previous token + a trainable 'adapter'."""

    def __init__(self, vocab=7):
        gen = torch.Generator().manual_seed(0)
        self.base = torch.randn(vocab, vocab, generator=gen)  # frozen
        self.lora = torch.nn.Parameter(0.1 * torch.randn(vocab, vocab, generator=gen))
        self.calls = []

    def trainable_parameters(self):
        return [self.lora]

    def sequence_logprobs(self, prompt_ids_list, completion_ids_list, disable_adapter=False):
        self.calls.append(disable_adapter)
        steps = max(len(c) for c in completion_ids_list)
        rows, masks = [], []
        for p, c in zip(prompt_ids_list, completion_ids_list):
            prev = torch.cat([p[-1:], c[:-1]])
            logits = self.base[prev] + (0 if disable_adapter else self.lora[prev])
            lp = torch.log_softmax(logits, -1).gather(-1, c[:, None])[:, 0]
            rows.append(torch.cat([lp, torch.zeros(steps - len(c))]))
            masks.append(torch.cat([torch.ones(len(c)), torch.zeros(steps - len(c))]))
        return torch.stack(rows), torch.stack(masks)


def toy_rollouts(policy, lengths=(3, 1, 4, 2)):
    gen = torch.Generator().manual_seed(1)
    rollouts = []
    for k, n in enumerate(lengths):
        prompt = torch.randint(0, 7, (2,), generator=gen)
        completion = torch.randint(0, 7, (n,), generator=gen)
        with torch.no_grad():
            logp, mask = policy.sequence_logprobs([prompt], [completion])
        rollouts.append(SimpleNamespace(prompt_index=k // 2, prompt_ids=prompt, completion_ids=completion,
                                        logprobs=logp[0, :n].clone(), sql="SELECT 1"))
    policy.calls.clear()
    return rollouts


ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.5])


def run_update(policy, rollouts, lr=0.1, **overrides):
    cfg = make_config(max_completion_length=4, max_grad_norm=0, **{"beta": 0.0, **overrides})
    optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=lr)
    return update.grpo_update(policy, optimizer, rollouts, ADVANTAGES, cfg)


def test_update_changes_only_trainable_parameters():
    policy = ToyPolicy()
    base, lora = policy.base.clone(), policy.lora.detach().clone()
    metrics = run_update(policy, toy_rollouts(policy))
    assert torch.equal(policy.base, base)
    assert not torch.equal(policy.lora.detach(), lora)
    assert metrics["ratio_mean"] == pytest.approx(1.0) and metrics["clip_frac"] == 0.0
    assert metrics["skipped_nonfinite"] == 0 and math.isfinite(metrics["loss"])
    assert policy.calls == [False]  # beta = 0: no reference pass, and the sampling log-probs are reused


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_micro_batches_give_the_same_update(loss_type):
    results = []
    for micro in (1, 3, 4):
        policy = ToyPolicy()
        run_update(policy, toy_rollouts(policy), micro_batch_size=micro, loss_type=loss_type)
        results.append(policy.lora.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)
    assert torch.allclose(results[0], results[2], atol=1e-6)


def test_update_matches_hand_computed_loss():
    # At ratio 1 the "grpo" loss is -mean_seq(A * mean_tokens(logp)) in value (ratio = 1 -> -A per token).
    policy = ToyPolicy()
    rollouts = toy_rollouts(policy)
    metrics = run_update(policy, rollouts, lr=0.0, loss_type="grpo")
    assert metrics["loss"] == pytest.approx(-float(ADVANTAGES.mean()))
    policy = ToyPolicy()
    metrics = run_update(policy, rollouts, lr=0.0, loss_type="dr_grpo")
    tokens = torch.tensor([3.0, 1.0, 4.0, 2.0])
    assert metrics["loss"] == pytest.approx(-float((ADVANTAGES * tokens).sum()) / (4 * 4))


def test_nonfinite_loss_skips_the_step():
    policy = ToyPolicy()
    rollouts = toy_rollouts(policy)
    rollouts[2].logprobs = torch.full_like(rollouts[2].logprobs, float("nan"))
    lora = policy.lora.detach().clone()
    metrics = run_update(policy, rollouts, micro_batch_size=2)
    assert metrics["skipped_nonfinite"] == 1 and "loss" not in metrics
    assert torch.equal(policy.lora.detach(), lora)
    assert policy.lora.grad is None


def test_beta_adds_reference_pass_and_kl():
    policy = ToyPolicy()
    metrics = run_update(policy, toy_rollouts(policy), beta=0.1, micro_batch_size=4)
    assert policy.calls == [True, False]
    assert metrics["kl"] > 0  # the adapter starts non-zero in the toy, so policy != base


def test_reference_weights_are_the_warm_start_and_are_swapped_back():
    """With a warm start the KL reference is the adapter the run started from, not the base model."""
    policy = ToyPolicy()
    rollouts = toy_rollouts(policy)
    start = [policy.lora.detach().clone()]
    cfg = make_config(max_completion_length=4, max_grad_norm=0, beta=0.1, micro_batch_size=4)
    assert update.reference_weights(policy, cfg) is None  # fresh adapter: reference = adapter off
    warm = update.reference_weights(policy, replace(cfg, warmup_adapter="runs/warm/adapter"))
    assert torch.equal(warm[0], start[0]) and warm[0].data_ptr() != policy.lora.data_ptr()
    optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=0.0)
    metrics = update.grpo_update(policy, optimizer, rollouts, ADVANTAGES, cfg, reference=warm)
    assert policy.calls == [False, False]  # the reference pass runs with the adapter on (its weights swapped)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == its starting point
    other = [start[0] + torch.randn(start[0].shape, generator=torch.Generator().manual_seed(3))]
    metrics = update.grpo_update(policy, optimizer, rollouts, ADVANTAGES, cfg, reference=other)
    assert metrics["kl"] > 0
    assert torch.equal(policy.lora.detach(), start[0])  # the policy's own weights are back, bit for bit


def test_several_iterations_recompute_old_logprobs_and_clip():
    policy = ToyPolicy()
    rollouts = toy_rollouts(policy)
    metrics = run_update(policy, rollouts, lr=5.0, num_iterations=3, micro_batch_size=4)
    assert policy.calls == [False, False, False, False]  # one no-grad pass + three updates
    assert metrics["skipped_nonfinite"] == 0
    assert metrics["clip_frac"] > 0  # a large step moves the ratio out of [0.8, 1.2]


# ====================================================================================== real run (slow)
def _has_real_stack():
    try:
        import sqlenv.datasets.generated  # noqa: F401
        import sqlenv.env  # noqa: F401
        import sqlenv.executor  # noqa: F401
        from agents import policy  # noqa: F401
        from sqlenv.datasets import available_datasets

        return "generated" in available_datasets()
    except ImportError:
        return False


TINY = dict(dataset="generated", num_generations=2, batch_size=2, micro_batch_size=4, max_completion_length=8,
            temperature=1.0, few_shot=0, eval_limit=1, eval_every=1, eval_batch_size=1, probe_questions=1,
            save_every=1, plot=False, threads=1, seed=1, learning_rate=1e-3, warmup_examples=0)


def with_signal(score_groups):
    """The real env scoring plus 0.5 * (position in the group).

    An untuned 135M model with 8 tokens never finishes a valid query, so every real reward is -1 and
    every group would be dropped; this deterministic tie-break gives each group mixed rewards so that
    the update really runs. Sampling, execution and scoring are the real ones.
    """

    def scored(env, indices, sqls, group_size, workers=None):
        rewards, infos = score_groups(env, indices, sqls, group_size, workers)
        return [r + 0.5 * (k % group_size) for k, r in enumerate(rewards)], infos

    return scored


@pytest.mark.slow
def test_tiny_real_run_updates_lora_only_and_resumes_exactly(tmp_path, monkeypatch):
    if not _has_real_stack():
        pytest.skip("the policy, env, executor or generated dataset is not there yet")
    captured = {}
    build = grpo_train.build_policy

    def capture(cfg):
        policy = build(cfg)
        captured["policy"] = policy
        captured["before"] = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
        return policy

    monkeypatch.setattr(grpo_train, "build_policy", capture)
    monkeypatch.setattr(grpo_train, "score_groups", with_signal(grpo_train.score_groups))

    # Run A: two steps straight through, a checkpoint after each.
    run_a = tmp_path / "a"
    summary = grpo_train.train(make_config(steps=2, output_dir=str(run_a), **TINY))
    assert summary["step"] == 2
    records = metrics_log.read_metrics(run_a / "metrics.jsonl")
    train_records = [r for r in records if "train/reward_mean" in r]
    assert [r["step"] for r in train_records] == [1, 2]
    assert "probe/mixed_frac" in records[0] and any("eval/accuracy" in r for r in records)
    assert all(r["train/groups_kept"] == 2 for r in train_records)
    assert all(r["train/skipped_nonfinite"] == 0 for r in train_records)
    policy, before = captured["policy"], captured["before"]
    after = dict(policy.model.named_parameters())
    lora = [n for n, p in after.items() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    # LoRA's B starts at zero, so A first moves on the second step: after two, every LoRA tensor moved.
    for name in lora:
        assert not torch.equal(after[name].detach(), before[name]), f"LoRA parameter {name} did not change"
    for name, param in after.items():
        if not param.requires_grad:
            assert torch.equal(param.detach(), before[name]), f"base parameter {name} changed"
    final_a = {n: after[n].detach().clone() for n in lora}

    # Run B: resume from A's first checkpoint; its second step must be A's second step.
    run_b = tmp_path / "b"
    checkpoint = run_a / "checkpoints" / "step_000001"
    assert (checkpoint / "adapter").is_dir() and (checkpoint / "state.pt").is_file()
    state = checkpoints.load_state(checkpoint)  # what a resume checks, and what evaluation reads
    assert (state["config"]["resolved_dataset"], state["config"]["resolved_data_dir"]) == ("generated", None)
    assert json.loads((checkpoint / "adapter" / "env_config.json").read_text())["schema"] == TINY.get("schema", "flat")
    summary = grpo_train.train(make_config(steps=2, output_dir=str(run_b), resume=str(checkpoint),
                                           **{**TINY, "eval_limit": 0}))
    assert summary["start_step"] == 1
    resumed = [r for r in metrics_log.read_metrics(run_b / "metrics.jsonl") if "train/reward_mean" in r]
    assert [r["step"] for r in resumed] == [2]
    for key, value in train_records[1].items():
        if key.startswith("train/"):
            assert resumed[0][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    after_b = dict(captured["policy"].model.named_parameters())
    for name in lora:
        assert torch.allclose(after_b[name].detach(), final_a[name], atol=1e-6), name


@pytest.mark.slow
def test_script_runs_a_warmup_stage_and_one_step_end_to_end(tmp_path):
    if not _has_real_stack():
        pytest.skip("the policy, env, executor or generated dataset is not there yet")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset", "generated", "--steps", "1", "--num-generations", "2",
         "--batch-size", "2", "--max-completion-length", "8", "--eval-limit", "1", "--probe-questions", "1",
         "--threads", "1", "--warmup-examples", "2", "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mixed rewards" in out.stdout and "final eval" in out.stdout and "warm-up stage" in out.stdout
    warm = tmp_path / "run" / "warmup" / "adapter"
    assert (warm / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["warmup_adapter"] == str(warm)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in records if "train/reward_mean" in r)
    for key in ("train/accuracy", "train/error_frac", "train/frac_zero_std", "train/completion_len",
                "perf/tokens_per_s", "perf/gen_s", "perf/score_s", "perf/update_s"):
        assert key in step, key
    assert (tmp_path / "run" / "curves.png").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step_000001" / "adapter").is_dir()
    adapter = tmp_path / "run" / "checkpoints" / "step_000001" / "adapter"
    evaluate = f"{os.path.relpath(sys.executable, REPO)} benchmarks/evaluate.py --policy {adapter} --threads 1"
    assert f"adapter: {adapter}\nevaluate it: {evaluate}" in out.stdout  # run from the repo, it reads as the README
    assert "FutureWarning" not in out.stderr


# ====================================================================================== loud failures (issue 15)
def fake_run(folder: Path, step: int = 4, **config) -> Path:
    """A run folder with one checkpoint whose state.pt holds what a real run saves in it (no weights)."""
    checkpoint = folder / "checkpoints" / f"step_{step:06d}"
    checkpoint.mkdir(parents=True)
    saved = {**asdict(Config()), "warmup_adapter": None, "resolved_dataset": "temptabqa-c",
             "resolved_data_dir": "/data/temptabqa-c", **config}
    torch.save({"step": step, "config": saved}, checkpoint / "state.pt")
    (folder / "metrics.jsonl").write_text(json.dumps({"step": step, "train/reward_mean": 0.5}) + "\n")
    (folder / "config.json").write_text(json.dumps({**saved, "data_dir": None}, indent=2))
    return folder


def test_resume_without_the_data_refuses_instead_of_switching_dataset(tmp_path):
    """1. The run trained on TempTabQA-C (its path from $SQLENV_DATA_DIR); a resume without it must not
    continue on the generated benchmark, and must leave the run's files as they were."""
    run = fake_run(tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in ("metrics.jsonl", "config.json")}
    out = run_script("--resume", run)
    assert_usage_error(out, "--resume", "would not continue the same run",
                       "dataset: the run trained on 'temptabqa-c', this command would train on 'generated'",
                       "pass --data-dir /data/temptabqa-c")
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl"]


def test_resume_names_every_difference_and_its_flag(tmp_path):
    """1. Split, schema, model and reward must be the checkpoint's too; each difference is named with its flag."""
    run = fake_run(tmp_path / "run", resolved_dataset="generated", resolved_data_dir=None, schema="tables",
                   reward="partial", split="dev")
    with pytest.raises(ConfigError) as error:
        preflight.plan_run(make_config(dataset="generated", resume=str(run), warmup_examples=0))
    message = str(error.value)
    assert "schema: the run used 'tables', this command 'flat'; pass --schema tables" in message
    assert "reward: the run used 'partial', this command 'arctic'; pass --reward partial" in message
    assert "split: the run used 'dev', this command 'train'; pass --split dev" in message
    assert "model" not in message.split("would not continue")[1]  # the same model is not listed
    plan = preflight.plan_run(make_config(dataset="generated", resume=str(run), schema="tables", reward="partial",
                                          split="dev"))
    assert plan.checkpoint == run / "checkpoints" / "step_000004" and plan.output_dir == run
    assert not plan.warmup_stage  # a resume never runs the warm-up stage again
    with pytest.raises(ConfigError, match=r"model: the run used 'smollm2-135m', this command '.*tiny"):
        preflight.plan_run(make_config(dataset="generated", resume=str(run), schema="tables", reward="partial",
                                       split="dev", model=str(save_tiny_llama(tmp_path / "tiny"))))


@pytest.mark.parametrize("flags, message", [
    (dict(max_instructions=5000),
     "max_instructions: the run used None, this command 5000; pass --max-instructions none"),
    (dict(query_timeout=7.0), "query_timeout: the run used 1.0, this command 7.0; pass --query-timeout 1.0"),
    ({"literal_answers": "score"},
     "literal_answers: the run used 'unanswered', this command 'score'; pass --literal-answers unanswered"),
])
def test_resume_refuses_another_query_budget(tmp_path, flags, message):
    """A resume that changes the query budget would not continue the same run (its rewards change)."""
    run = fake_run(tmp_path / "run", resolved_dataset="generated", resolved_data_dir=None)
    with pytest.raises(ConfigError) as error:
        preflight.plan_run(make_config(dataset="generated", resume=str(run), warmup_examples=0, **flags))
    assert message in str(error.value)
    assert preflight.plan_run(make_config(dataset="generated", resume=str(run), warmup_examples=0)).checkpoint


def test_resume_of_a_checkpoint_without_the_budget_reads_the_old_defaults(tmp_path):
    """Checkpoints saved before the budget was in the identity were trained with 1 s a query, no instruction cap."""
    run = fake_run(tmp_path / "run", resolved_dataset="generated", resolved_data_dir=None, max_instructions=5000)
    state_pt = run / "checkpoints" / "step_000004" / "state.pt"
    state = torch.load(state_pt, weights_only=False)
    del state["config"]["query_timeout"], state["config"]["max_instructions"], state["config"]["literal_answers"]
    torch.save(state, state_pt)
    plan = preflight.plan_run(make_config(dataset="generated", resume=str(run), warmup_examples=0,
                                          literal_answers="score"))
    assert (plan.env.timeout, plan.env.max_instructions, plan.env.literal_answers) == (1.0, None, "score")
    with pytest.raises(ConfigError, match="literal_answers: the run used 'score', this command 'unanswered'; "
                                          "pass --literal-answers score"):
        preflight.plan_run(make_config(dataset="generated", resume=str(run), warmup_examples=0))
    with pytest.raises(ConfigError, match="max_instructions: the run used None, this command 9"):
        preflight.plan_run(make_config(dataset="generated", resume=str(run), warmup_examples=0, max_instructions=9,
                                       literal_answers="score"))


def test_resume_with_the_data_continues(tmp_path, data_dir):
    """1. The same run found again through --data-dir (or the variable) is resumed, wherever the data lives."""
    run = fake_run(tmp_path / "run", resolved_data_dir=str(data_dir))
    plan = preflight.plan_run(make_config(resume=str(run), data_dir=str(data_dir)))
    assert (plan.dataset, plan.data_dir, plan.output_dir) == ("temptabqa-c", str(data_dir.resolve()), run)


@pytest.mark.parametrize("data_dir, fragments", [
    ("nonexistent", ["data_dir='", "(--data-dir)", "is not a directory"]),
    ("empty", ["(--data-dir)", "cannot load temptabqa-c/train", "file not found"]),
])
def test_a_wrong_data_dir_stops_before_the_warm_up(tmp_path, data_dir, fragments):
    """2. The data is checked before the (25-minute) warm-up stage, and nothing is created."""
    (tmp_path / "empty").mkdir()
    out = run_script("--data-dir", tmp_path / data_dir, cwd=tmp_path)
    assert_usage_error(out, *fragments)
    assert "warm-up stage" not in out.stdout
    assert not (tmp_path / "runs").exists()


def test_a_wrong_eval_split_or_data_variable_names_its_source(tmp_path):
    """2. The eval split is loaded too; a wrong $SQLENV_DATA_DIR is an error, not a silent fallback."""
    out = run_script("--dataset", "generated", "--eval-split", "bogus", cwd=tmp_path)
    assert_usage_error(out, "eval_split='bogus' (--eval-split)", "unknown split 'bogus'")
    out = run_script(cwd=tmp_path, data_dir_env=str(tmp_path / "nowhere"))
    assert_usage_error(out, "$SQLENV_DATA_DIR=", "(or --data-dir)", "is not a directory")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", ["resume_without_checkpoint", "resume_missing", "output_dir_is_a_file",
                                  "unknown_model", "output_dir_holds_a_run", "warmup_adapter_missing"])
def test_bad_starts_exit_2_naming_the_flag(tmp_path, case):
    """3. What docs/training.md promises: status 2 and a message naming the flag, at once, no traceback."""
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "a_file").write_text("x")
    fake_run(tmp_path / "old_run", resolved_dataset="generated")
    args, fragments = {
        "resume_without_checkpoint": (["--resume", tmp_path / "empty_run"], ["(--resume) holds no checkpoint"]),
        "resume_missing": (["--resume", tmp_path / "nowhere"], ["(--resume) does not exist"]),
        "output_dir_is_a_file": (["--output-dir", tmp_path / "a_file"], ["(--output-dir) is a file"]),
        "unknown_model": (["--model", "nonexistent-model"],
                          ["model='nonexistent-model' (--model)", "neither a built-in model ('smollm2-135m'",
                           "nor a local folder", "hf download OWNER/NAME --local-dir"]),
        "output_dir_holds_a_run": (["--output-dir", tmp_path / "old_run"],
                                   ["(--output-dir) already holds a run", f"--resume {tmp_path / 'old_run'}"]),
        "warmup_adapter_missing": (["--warmup-adapter", tmp_path / "empty_run"],
                                   ["(--warmup-adapter) is not an adapter folder"]),
    }[case]
    out = run_script("--dataset", "generated", *args, cwd=tmp_path)
    assert_usage_error(out, *fragments)
    assert not (tmp_path / "runs").exists()  # 4. and no run folder left behind


def test_a_start_that_fails_after_the_checks_leaves_no_folder(tmp_path, monkeypatch):
    """4. A failure after the run folder was made (here: building the policy) removes it while it is empty."""
    def broken(cfg):
        raise RuntimeError("no policy today")

    monkeypatch.setattr(grpo_train, "build_policy", broken)
    cfg = make_config(dataset="generated", warmup_examples=0, eval_limit=0, output_dir=str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="no policy today"):
        grpo_train.train(cfg)
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()  # a folder that existed before the run is never removed
    with pytest.raises(RuntimeError):
        grpo_train.train(replace(cfg, output_dir=str(tmp_path / "mine")))
    assert (tmp_path / "mine").is_dir()


def test_checkpoint_adapter_records_its_environment(tmp_path):
    """5. Everything evaluation needs is saved with the adapter (agents/adapter_card.py)."""
    from agents.adapter_card import read_env_config

    class Saving:
        def save(self, path):
            Path(path).mkdir(parents=True)
            (Path(path) / "adapter_config.json").write_text("{}")

    param = torch.nn.Parameter(torch.zeros(2))
    spec = EnvSpec(dataset="temptabqa-c", data_dir="/data/t", split="train", schema="flat", reward="binary",
                   timeout=10.0, max_instructions=5000)
    path = checkpoints.save_checkpoint(tmp_path / "step_000001", Saving(), torch.optim.SGD([param], lr=0.1), 1,
                                       __import__("numpy").random.default_rng(0),
                                       {"model": "m", "resolved_dataset": "temptabqa-c"}, env=spec, eval_split="dev")
    assert read_env_config(path / "adapter") == {**spec.to_dict(), "eval_split": "dev"}
    state = checkpoints.load_state(path)
    assert state["config"]["resolved_dataset"] == "temptabqa-c"


def test_docs_state_the_code_defaults():
    """6. docs/training.md's tables and prose give the defaults the code has (beta was documented as 0)."""
    text = (REPO / "docs" / "training.md").read_text()
    defaults = {f.name: f.default for f in fields(Config)}
    rows = re.findall(r"^\| `--([a-z-]+)` \| `([^`]*)` \|", text, flags=re.M)
    assert {name.replace("-", "_") for name, _ in rows} == set(defaults)
    for name, shown in rows:
        assert shown == repr(defaults[name.replace("-", "_")]), name
    beta = re.search(r"`beta`, default ([0-9.]+)", text)
    assert beta and float(beta.group(1)) == Config().beta


def test_gpu_preset_runs_one_step_on_cpu_in_bf16(tmp_path, tiny_model):
    """7. The gpu preset's code path (bf16 weights, its batch and eval sizes, torch's threads) on a CPU."""
    run = tmp_path / "run"
    out = run_script("--preset", "gpu", "--device", "cpu", "--model", tiny_model, "--dataset", "generated",
                     "--steps", "1", "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "4",
                     "--eval-limit", "2", "--probe-questions", "1", "--warmup-examples", "0", "--no-plot",
                     "--output-dir", run, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(bfloat16 on cpu)" in out.stdout and "final eval on 2 dev questions" in out.stdout
    config = json.loads((run / "config.json").read_text())
    assert (config["preset"], config["dtype"], config["device"], config["threads"]) == ("gpu", "bfloat16", "cpu", None)
    assert (config["micro_batch_size"], config["eval_batch_size"], config["learning_rate"]) == (32, 32, 5e-5)
    adapter = run / "checkpoints" / "step_000001" / "adapter"
    assert json.loads((adapter / "env_config.json").read_text())["schema"] == "flat"
    assert "FutureWarning" not in out.stderr  # 6. no transformers deprecation noise at model load
    # 6. the end of a run names the adapter and the command that evaluates it; that command runs as printed
    assert f"adapter: {adapter}" in out.stdout
    command = out.stdout.split("evaluate it: ", 1)[1].splitlines()[0]
    evaluate_py = REPO / "benchmarks" / "evaluate.py"
    assert command == f"{sys.executable} {evaluate_py} --policy run/checkpoints/step_000001/adapter"
    evaluated = subprocess.run(command.split() + ["--limit", "1", "--no-progress", "--out", str(tmp_path / "eval")],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (report,) = (tmp_path / "eval").glob("*.json")
    assert json.loads(report.read_text())["config"]["schema"] == "flat"


def test_query_budget_flags_reach_the_training_and_eval_envs(tiny_model, tmp_path, monkeypatch):
    cfg = parse_config(["--max-instructions", "5000", "--query-timeout", "7", "--model", tiny_model,
                        "--literal-answers", "unanswered", "--column-values", "4",
                        "--dataset", "generated", "--warmup-examples", "0", "--output-dir", str(tmp_path / "run")])
    assert (cfg.max_instructions, cfg.query_timeout, cfg.literal_answers) == (5000, 7.0, "unanswered")
    assert parse_config([]).literal_answers == "unanswered"
    built, literal = [], []
    make = EnvSpec.make

    def recording_make(spec, *args, **kwargs):
        env = make(spec, *args, **kwargs)
        built.append(env.executor.config)
        literal.append((env.literal_answers, env.column_values))
        if len(built) == 2:
            raise KeyboardInterrupt  # both envs built: enough
        return env

    monkeypatch.setattr(EnvSpec, "make", recording_make)
    with pytest.raises(KeyboardInterrupt):
        grpo_train.train(cfg)
    assert [(c.max_instructions, c.timeout) for c in built] == [(5000, 7.0), (5000, 7.0)]
    assert literal == [("unanswered", 4), ("unanswered", 4)]
    with pytest.raises(ConfigError, match="max_instructions"):
        make_config(max_instructions=0)
    with pytest.raises(ConfigError, match=r"literal_answers='drop' \(--literal-answers\) must be one of score, "):
        make_config(literal_answers="drop")


def test_resume_help_names_every_identity_field():
    """--resume's help (and so docs/training.md's row) lists everything a resume must keep."""
    help_text = " ".join(field_docs(Config)["resume"].split())
    assert [name for name in checkpoints.RUN_IDENTITY if name not in help_text] == []


def test_rollout_dtype_recomputes_old_logprobs_and_weights_tokens():
    """Rollouts sampled in another precision: the old log-probs come from the training forward (so the
    ratio is 1 before the step, not exp(train - rollout)), and each token carries min(pi_old/pi_rollout, cap).
    With num_iterations=2 they come from a no-grad pass before the first update, with the same values."""
    policy = ToyPolicy()
    rollouts = toy_rollouts(policy)
    shifts = [0.3, -0.2, 0.0, 1.5]  # the sampler's log-probs off by these (the last beyond the cap)
    for rollout, shift in zip(rollouts, shifts):
        rollout.logprobs = rollout.logprobs - shift
    metrics = run_update(policy, rollouts, lr=0.0, rollout_dtype="bfloat16", tis_cap=2.0, loss_type="grpo")
    assert policy.calls == [False]  # one pass: its own detached values are the old log-probs
    assert metrics["ratio_mean"] == pytest.approx(1.0)
    assert metrics["rollout_mismatch"] == pytest.approx((0.3 * 3 + 0.2 * 1 + 0.0 * 4 + 1.5 * 2) / 10)
    weights = [min(math.exp(s), 2.0) for s in shifts]
    # at ratio 1 the "grpo" loss is -mean over sequences of A * w (every token of a sequence has weight w)
    assert metrics["loss"] == pytest.approx(-float(sum(a * w for a, w in zip(ADVANTAGES.tolist(), weights))) / 4,
                                            rel=1e-5)
    tokens = [3, 1, 4, 2]
    token_weighted_mean = sum(w * n for w, n in zip(weights, tokens)) / sum(tokens)
    assert metrics["is_weight_mean"] == pytest.approx(token_weighted_mean, rel=1e-5)
    policy = ToyPolicy()
    rollouts = toy_rollouts(policy)
    for rollout, shift in zip(rollouts, shifts):
        rollout.logprobs = rollout.logprobs - shift
    twice = run_update(policy, rollouts, lr=0.0, rollout_dtype="bfloat16", tis_cap=2.0, loss_type="grpo",
                       num_iterations=2)
    assert policy.calls[0] is False and len(policy.calls) == 3  # the no-grad pass, then one pass per iteration
    assert twice["rollout_mismatch"] == pytest.approx(metrics["rollout_mismatch"])
    assert twice["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
    with pytest.raises(ConfigError, match="rollout_dtype"):
        make_config(rollout_dtype="int8")


def test_rollout_dtype_auto_is_bfloat16_on_a_cpu_that_multiplies_it_natively(tiny_model, monkeypatch):
    """The default --rollout-dtype auto: bfloat16 rollouts (with the correction) where float32 weights run on a
    CPU with AVX512-BF16 or AMX, the weights' dtype elsewhere; "none" keeps float32."""
    from agents.grpo_train import build_policy
    from agents.grpo_update import corrects_precision
    from agents.models import resolve_lower_precision

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": False})
    cfg = parse_config(["--model", tiny_model, "--device", "cpu", "--warmup-examples", "0"])
    assert cfg.rollout_dtype == "auto" and corrects_precision(cfg)
    assert build_policy(cfg).config.rollout_dtype == "bfloat16"
    assert resolve_lower_precision("auto", "cpu", "bfloat16") is None  # the weights are bfloat16 already
    assert resolve_lower_precision("auto", "cuda") is None  # a GPU run's weights are bfloat16 (the gpu preset)
    assert resolve_lower_precision("float16", "cpu") == "float16"
    plain = parse_config(["--model", tiny_model, "--device", "cpu", "--rollout-dtype", "none",
                          "--update-dtype", "none"])
    assert plain.rollout_dtype is None and not corrects_precision(plain)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": False})
    assert resolve_lower_precision("auto", "cpu") is None and not corrects_precision(cfg)
    assert build_policy(cfg).config.rollout_dtype is None


def test_a_bfloat16_rollout_run_logs_its_correction(tiny_model, tmp_path, monkeypatch):
    """One real step of the script's loop with --rollout-dtype bfloat16 on the tiny Llama."""
    monkeypatch.setattr(grpo_train, "score_groups", with_signal(grpo_train.score_groups))
    cfg = make_config(steps=1, output_dir=str(tmp_path / "run"), model=tiny_model, rollout_dtype="bfloat16",
                      **{**TINY, "eval_limit": 0})
    grpo_train.train(cfg)
    record = [r for r in metrics_log.read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/reward_mean" in r][0]
    assert 0 < record["train/is_weight_mean"] <= 2.0 and record["train/rollout_mismatch"] > 0
    assert record["train/ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # old log-probs from the training forward


def test_rollout_engine_settings_reach_the_policy(tiny_model, capsys):
    """--stop-check-every, --prompt-cache-tokens and --compile-rollouts are the policy's engine settings; bad
    values are named."""
    from agents.grpo_train import build_policy
    from agents.prompt_cache import DEFAULT_MAX_TOKENS

    cfg = parse_config(["--model", tiny_model, "--device", "cpu", "--stop-check-every", "3", "--warmup-examples",
                        "0", "--prompt-cache-tokens", "500"])
    policy = build_policy(cfg)
    assert (policy.config.stop_check_every, policy.config.compile, policy.config.prompt_cache_tokens) == (3, False, 500)
    assert build_policy(parse_config(["--model", tiny_model, "--device", "cpu"])).config.prompt_cache_tokens \
        == DEFAULT_MAX_TOKENS
    with pytest.raises(SystemExit):
        parse_config(["--stop-check-every", "0"])
    assert "stop_check_every=0 (--stop-check-every) must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--prompt-cache-tokens", "-1"])
    assert "prompt_cache_tokens=-1 (--prompt-cache-tokens) must be an integer >= 0" in capsys.readouterr().err
