"""agents/sft_warmup.py: targets, batching, one NLL step, adapter hand-off, CLI.

Uses the tiny random Llama of tests/test_policy.py; the real model is never loaded here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from agents import sft_warmup  # noqa: E402
from agents.policy import LoRAPolicy, PolicyConfig  # noqa: E402
from agents.prompts import PREFILL  # noqa: E402
from sqlenv.env import TextToSQLEnv  # noqa: E402
from tests.test_policy import tiny_model, tiny_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "agents" / "sft_warmup.py"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def env():
    env = TextToSQLEnv(dataset="generated", split="train", schema="flat")
    yield env
    env.close()


def make_policy(tokenizer, adapter=None):
    return LoRAPolicy(PolicyConfig(few_shot=0, adapter=adapter), model=tiny_model(tokenizer), tokenizer=tokenizer)


def config(tmp_path, **overrides):
    values = dict(examples=6, batch_size=3, few_shot=0, max_target_tokens=10_000, output_dir=str(tmp_path / "run"))
    return sft_warmup.Config(**{**values, **overrides})


def test_target_is_the_gold_sql_after_its_select():
    gold = "SELECT COUNT(*)\nFROM Medals\nWHERE athlete = 'Anna Berg'"
    assert sft_warmup.target_text(gold) == " COUNT(*)\nFROM Medals\nWHERE athlete = 'Anna Berg';\n```"
    assert PREFILL.endswith("SELECT") and (PREFILL + sft_warmup.target_text(gold)).endswith(gold + ";\n```")
    assert sft_warmup.target_text("SELECT 1;") == " 1;\n```"
    assert sft_warmup.target_text("WITH x AS (SELECT 1) SELECT * FROM x") is None
    assert sft_warmup.target_text("SELECTED FROM t") is None


def test_examples_use_the_generated_gold_sql_of_the_schema(tokenizer, env, tmp_path):
    policy = make_policy(tokenizer)
    items, counts = sft_warmup.build_examples(config(tmp_path, examples=40), policy, env)
    assert len(items) + counts["skipped_not_select"] + counts["skipped_too_long"] == 40
    assert counts["skipped_too_long"] == 0
    for item in items:
        gold = env.example(item["index"]).gold_sql
        assert item["target"] == gold[len("SELECT"):] + ";\n```"
        assert item["prompt"].endswith(PREFILL)
        assert torch.equal(item["target_ids"], policy.encode(item["target"]))


def test_too_long_targets_are_skipped_and_counted(tokenizer, env, tmp_path):
    policy = make_policy(tokenizer)
    items, counts = sft_warmup.build_examples(config(tmp_path, max_target_tokens=1), policy, env)
    assert items == [] and counts["skipped_too_long"] + counts["skipped_not_select"] == 6


def test_batches_never_share_a_prompt():
    items = [{"prompt": p} for p in "aabacdd"]
    batches = sft_warmup.make_batches(items, 3)
    assert sorted(i["prompt"] for b in batches for i in b) == sorted("aabacdd")
    for batch in batches:
        assert len(batch) <= 3 and len({i["prompt"] for i in batch}) == len(batch)


def test_one_step_lowers_the_loss_and_changes_only_lora(tokenizer, env, tmp_path):
    policy = make_policy(tokenizer)
    items, _ = sft_warmup.build_examples(config(tmp_path), policy, env)
    batch = items[:3]
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    with torch.no_grad():
        start = float(sft_warmup.nll_loss(policy, batch))
    assert sft_warmup.train_step(policy, optimizer, batch) == pytest.approx(start, rel=1e-5)
    with torch.no_grad():
        assert float(sft_warmup.nll_loss(policy, batch)) < start
    for name, param in policy.model.named_parameters():
        changed = not torch.equal(param.detach(), before[name])
        if "lora_B" in name:
            assert changed, name  # lora_A gets no gradient on the first step (lora_B starts at 0)
        if "lora_" not in name:
            assert not changed, name


def test_train_writes_metrics_and_an_adapter_that_loads(tokenizer, env, tmp_path):
    policy = make_policy(tokenizer)
    cfg = config(tmp_path, epochs=2)
    summary = sft_warmup.train(cfg, policy=policy, env=env)
    out = Path(cfg.output_dir)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == summary["steps"] >= 2 and all(line["loss"] > 0 for line in lines)
    assert json.loads((out / "config.json").read_text())["examples"] == 6
    # the adapter records the environment it was trained on, for benchmarks/evaluate.py
    env_config = json.loads((out / "adapter" / "env_config.json").read_text())
    assert (env_config["dataset"], env_config["schema"], env_config["eval_split"]) == ("generated", "flat", "dev")

    prompts, completions = [torch.tensor([3, 4, 5, 6])], [torch.tensor([7, 8, 9])]
    expected, _ = policy.sequence_logprobs(prompts, completions)
    loaded = make_policy(tokenizer, adapter=summary["adapter"])
    torch.testing.assert_close(loaded.sequence_logprobs(prompts, completions)[0], expected)
    assert loaded.num_trainable_parameters() == policy.num_trainable_parameters()


def test_grpo_train_builds_its_policy_from_the_warmup_adapter(monkeypatch):
    from agents import grpo_train, policy as policy_module

    seen = {}
    monkeypatch.setattr(policy_module, "LoRAPolicy", lambda config: seen.setdefault("config", config))
    cfg = grpo_train.parse_config(["--warmup-adapter", "runs/w/adapter"])
    grpo_train.build_policy(cfg)
    assert seen["config"].adapter == "runs/w/adapter"
    assert grpo_train.parse_config([]).warmup_adapter is None


def test_invalid_value_names_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sft_warmup.parse_config(["--schema", "star"])
    assert exit_info.value.code == 2
    assert "--schema" in capsys.readouterr().err


def test_help_lists_every_field():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("--model", "--schema", "--few-shot", "--examples", "--epochs", "--batch-size",
                 "--learning-rate", "--lora-r", "--lora-alpha", "--threads", "--seed", "--output-dir",
                 "--max-target-tokens"):
        assert name in out.stdout


def test_grpo_train_warmup_stage_runs_once_and_hands_over_its_adapter(monkeypatch, tmp_path):
    from agents import grpo_train

    calls = []

    def fake_train(cfg):
        calls.append(cfg)
        adapter = Path(cfg.output_dir) / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(sft_warmup, "train", fake_train)
    cfg = grpo_train.parse_config(["--warmup-examples", "48", "--schema", "tables", "--few-shot", "1",
                                   "--lora-r", "8", "--seed", "3", "--max-completion-length", "80"])
    adapter = grpo_train.run_warmup(cfg, tmp_path)
    assert adapter == str(tmp_path / "warmup" / "adapter")
    (seen,) = calls
    assert (seen.examples, seen.schema, seen.few_shot, seen.lora_r, seen.seed, seen.max_completion_length) == (
        48, "tables", 1, 8, 3, 80)
    assert grpo_train.run_warmup(cfg, tmp_path) == adapter and len(calls) == 1  # reused (e.g. on --resume)
    assert grpo_train.parse_config([]).warmup_examples == 320  # the CPU default: a warm-up stage


def test_an_unknown_model_exits_2_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--model", "nonexistent-model", "--output-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "python agents/sft_warmup.py: error: model='nonexistent-model' (--model)" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()
