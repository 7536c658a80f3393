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
from sqlenv.env import TextToSQLEnv  # noqa: E402
from sqlenv.prompts import PREFILL  # noqa: E402
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


def test_update_dtype_runs_the_forward_under_bfloat16_autocast(tokenizer, env, tmp_path):
    """--update-dtype bfloat16: the step's forward runs in bfloat16 (its loss within bfloat16 rounding of the
    float32 one, and not equal to it); the LoRA weights stay float32; unset, the step is float32 as before."""
    policy = make_policy(tokenizer)
    items, _ = sft_warmup.build_examples(config(tmp_path), policy, env)
    batch = items[:3]
    with torch.no_grad():
        exact = float(sft_warmup.nll_loss(policy, batch))
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=0.0)
    low = sft_warmup.train_step(policy, optimizer, batch, cfg=config(tmp_path, update_dtype="bfloat16", device="cpu"))
    assert low == pytest.approx(exact, rel=3e-2) and low != exact
    assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())
    assert sft_warmup.train_step(policy, optimizer, batch, cfg=config(tmp_path)) == pytest.approx(exact, rel=1e-6)


def test_update_dtype_rejects_other_precisions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sft_warmup.parse_config(["--update-dtype", "int8"])
    assert exit_info.value.code == 2
    assert "--update-dtype" in capsys.readouterr().err


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
    from agents import grpo_train
    from agents import policy as policy_module

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
    assert seen.max_turns == 1
    grpo_train.run_warmup(grpo_train.parse_config(["--max-turns", "3"]), tmp_path / "multi")
    assert calls[-1].max_turns == 3  # a multi-turn run warms up on multi-turn episodes


def test_an_unknown_model_exits_2_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--model", "nonexistent-model", "--output-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "python agents/sft_warmup.py: error: model='nonexistent-model' (--model)" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


# ====================================================================================== multi-turn (--max-turns)
from agents import agent_warmup, multiturn  # noqa: E402
from sqlenv.agent_env import TextToSQLAgentEnv  # noqa: E402


@pytest.fixture(scope="module")
def agent_env():
    env = TextToSQLAgentEnv(dataset="generated", split="train", schema="flat", max_turns=3)
    yield env
    env.close()


@pytest.fixture(scope="module")
def episodes(tokenizer, agent_env, tmp_path_factory):
    policy = make_policy(tokenizer)
    cfg = config(tmp_path_factory.mktemp("mt"), examples=24, max_turns=3)
    items, counts = sft_warmup.build_examples(cfg, policy, agent_env)
    return policy, items, counts


def runs(mask) -> list[tuple[int, int, int]]:
    """(start, end, value) of the runs of equal values in a 0/1 mask."""
    out, start = [], 0
    values = [int(v) for v in mask]
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append((start, i, values[start]))
            start = i
    return out


def test_exploration_candidates_come_from_the_gold_sql():
    gold = "SELECT COUNT(*)\nFROM Medals\nWHERE athlete = 'Anna Berg' AND medal = 'MedalSilver' AND year = 2006"
    assert agent_warmup.exploration_candidates(gold) == [
        "SELECT DISTINCT year FROM Medals", "SELECT DISTINCT athlete FROM Medals", "SELECT DISTINCT medal FROM Medals",
        "SELECT COUNT(*) FROM Medals",
        "SELECT COUNT(*)\nFROM Medals\nWHERE athlete = 'Anna Berg' AND medal = 'MedalSilver' AND year = 2006"]
    joined = ("SELECT COUNT(*)\nFROM Medal m\nJOIN Format f ON f.format_id = m.format_id\n"
              "JOIN Tournament t ON t.tournament_id = f.tournament_id\nWHERE t.name = 'World Championships'")
    candidates = agent_warmup.exploration_candidates(joined)
    assert candidates[:2] == ["SELECT DISTINCT name FROM Tournament", "SELECT COUNT(*) FROM Medal"]
    assert candidates[2] == "SELECT COUNT(*)\n" + joined.split("\n", 1)[1]
    assert agent_warmup.exploration_candidates("SELECT (") == []


def test_multiturn_episodes_vary_the_explorations_and_end_with_the_gold_answer(episodes, agent_env):
    _, items, counts = episodes
    assert len(items) == 24 - counts["skipped_too_long"] - counts["skipped_not_correct"] > 0
    assert counts["skipped_not_correct"] == 0
    assert {item["explorations"] for item in items} == {0, 1, 2}  # answering early is shown too
    assert sum(counts[f"explorations_{n}"] for n in range(3)) == len(items)
    for item in items:
        episode = item["episode"]
        gold = agent_env.example(item["index"]).gold_sql.strip().rstrip(";").rstrip()
        assert episode.moves[-1] == f"<answer>{gold}</answer>"
        assert len(episode.moves) == item["explorations"] + 1 <= agent_env.max_turns
        assert all(move.startswith("<sql>") and move.endswith("</sql>") for move in episode.moves[:-1])
        assert episode.move_errors == [None] * len(episode.moves)  # explorations that fail are never shown
        if f"<sql>{gold}</sql>" in episode.moves:  # the answer run as a check comes last, then is resubmitted
            assert episode.moves[-2] == f"<sql>{gold}</sql>"
    checked = [item for item in items if item["episode"].moves[-2:-1]
               == [item["episode"].moves[-1].replace("<answer>", "<sql>").replace("</answer>", "</sql>")]]
    assert 0 < len(checked) < len(items)  # some episodes check their answer first, as the prompt's example does


def test_the_gold_answer_move_scores_one_through_the_env(episodes):
    _, items, _ = episodes
    fresh = TextToSQLAgentEnv(dataset="generated", split="train", schema="flat", max_turns=3)
    try:
        for item in items:
            assert item["episode"].reward == 1.0 and item["episode"].info["correct"] is True
            fresh.reset(options={"index": item["index"]})
            for move in item["episode"].moves[:-1]:
                assert fresh.step(move)[1] == 0.0
            _, reward, terminated, _, info = fresh.step(item["episode"].moves[-1])
            assert (reward, terminated, info["correct"]) == (1.0, True, True)
    finally:
        fresh.close()


def test_the_env_text_is_what_the_env_returns_for_those_moves(episodes):
    policy, items, _ = episodes
    fresh = TextToSQLAgentEnv(dataset="generated", split="train", schema="flat", max_turns=3)
    try:
        for item in items:
            episode = item["episode"]
            obs, _ = fresh.reset(options={"index": item["index"]})
            assert torch.equal(item["prompt_ids"], policy.encode(policy.agent_prompt(obs, 3)))
            env_runs = [(s, e) for s, e, v in runs(item["loss_mask"]) if v == 0]
            assert len(env_runs) == len(episode.moves) - 1
            for move, (start, end) in zip(episode.moves, env_runs):
                _, _, _, _, info = fresh.step(move)
                text = policy.tokenizer.decode(item["target_ids"][start:end])
                assert text == policy.agent_feedback(info["reply"], info["turns_left"])
                assert info["reply"].strip() in text  # the result table itself, as the env wrote it
    finally:
        fresh.close()


def test_the_loss_mask_covers_exactly_the_policys_moves(episodes):
    policy, items, _ = episodes
    for item in items:
        episode = item["episode"]
        assert len(item["loss_mask"]) == len(item["target_ids"])
        move_runs = [(s, e) for s, e, v in runs(item["loss_mask"]) if v == 1]
        assert len(move_runs) == len(episode.moves)
        for move, (start, end) in zip(episode.moves, move_runs):
            assert torch.equal(item["target_ids"][start:end], policy.encode(move))
    # the loss averages the moves' tokens only: unmasking the env's text changes it
    batch = [item for item in items if item["explorations"] > 0][:2]
    with torch.no_grad():
        masked = float(sft_warmup.nll_loss(policy, batch))
        logprobs, pad = policy.sequence_logprobs([b["prompt_ids"] for b in batch], [b["target_ids"] for b in batch])
        moves = torch.stack([torch.nn.functional.pad(b["loss_mask"], (0, pad.shape[1] - len(b["loss_mask"])))
                             for b in batch])
        assert masked == pytest.approx(float(-(logprobs * moves).sum() / moves.sum()), rel=1e-5)
        unmasked = [{**b, "episode": multiturn.Episode(0, b["prompt_ids"], b["target_ids"],
                                                       torch.ones(len(b["target_ids"])), b["loss_mask"])}
                    for b in batch]
        every = float(sft_warmup.nll_loss(policy, unmasked))
        assert every == pytest.approx(float(-(logprobs * pad).sum() / pad.sum()), rel=1e-5) and every != masked


class ScriptedPolicy:
    """The real policy, except that its 'samples' are the warm-up episodes' moves (for run_episodes)."""

    def __init__(self, policy, items):
        self.policy, self.items, self.played = policy, items, {}

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def sample_ids(self, contexts, num_generations=1, **_):
        out = []
        for context in contexts:
            (k, item), = [(k, it) for k, it in enumerate(self.items)
                          if torch.equal(context[:len(it["prompt_ids"])], it["prompt_ids"])]
            move = item["episode"].moves[self.played.get(k, 0)]
            self.played[k] = self.played.get(k, 0) + 1
            ids = self.policy.encode(move)
            out.append([(ids, torch.zeros(len(ids)))] * num_generations)
        return out


def test_episodes_are_laid_out_as_multiturn_grpo_lays_out_sampled_ones(episodes, agent_env):
    policy, items, _ = episodes
    pool = multiturn.EnvPool(agent_env)
    try:
        played = multiturn.run_episodes(ScriptedPolicy(policy, items), pool, [it["index"] for it in items], 1)
    finally:
        pool.close()
    for item, episode in zip(items, played):
        assert torch.equal(episode.prompt_ids, item["prompt_ids"])
        assert torch.equal(episode.completion_ids, item["target_ids"])
        assert torch.equal(episode.loss_mask, item["loss_mask"])
        assert episode.reward == 1.0 and episode.moves == item["episode"].moves


def test_max_turns_1_builds_the_same_examples_as_before(tokenizer, env, tmp_path):
    """The digest of the single-step examples as the code before --max-turns built them (seed 0, 40 drawn)."""
    import hashlib

    items, counts = sft_warmup.build_examples(config(tmp_path, examples=40, max_turns=1), make_policy(tokenizer), env)
    digest = hashlib.sha256()
    for it in items:
        digest.update(json.dumps([it["index"], it["prompt"], it["target"], it["prompt_ids"].tolist(),
                                  it["target_ids"].tolist()]).encode())
    assert counts == {"skipped_not_select": 1, "skipped_too_long": 0}
    assert digest.hexdigest() == "7820e25abfba1114bb98a3ea9bb53d72bc91732377b25c0a8e18ed24e924433d"
    assert all("loss_mask" not in it for it in items)


def test_multiturn_train_records_max_turns_for_evaluate(tokenizer, agent_env, tmp_path):
    cfg = config(tmp_path, examples=4, batch_size=2, max_turns=3)
    summary = sft_warmup.train(cfg, policy=make_policy(tokenizer), env=agent_env)
    assert summary["steps"] >= 1 and summary["explorations_0"] + summary["explorations_1"] + summary[
        "explorations_2"] == summary["examples"]
    env_config = json.loads((Path(cfg.output_dir) / "adapter" / "env_config.json").read_text())
    assert (env_config["max_turns"], env_config["schema"], env_config["eval_split"]) == (3, "flat", "dev")
    lines = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert all(line["loss"] > 0 and line["tokens"] > 0 for line in lines)


def test_max_turns_needs_a_matching_agent_env(tokenizer, env, tmp_path):
    with pytest.raises(ValueError, match="max_turns=3 needs a TextToSQLAgentEnv"):
        sft_warmup.build_examples(config(tmp_path, max_turns=3), make_policy(tokenizer), env)
    with pytest.raises(SystemExit):
        sft_warmup.parse_config(["--max-turns", "0"])


def test_recovery_candidates_mistake_one_text_value_and_look_its_column_up():
    gold = "SELECT COUNT(*)\nFROM Medals\nWHERE athlete = 'Anna Berg' AND medal = 'MedalSilver' AND year = 2006"
    assert agent_warmup.recovery_candidates(gold) == [
        (gold.replace("'Anna Berg'", "'Anna Bergs'"), "SELECT DISTINCT athlete FROM Medals"),
        (gold.replace("'MedalSilver'", "'Silver'"), "SELECT DISTINCT medal FROM Medals")]
    joined = ("SELECT COUNT(*)\nFROM Medal m\nJOIN Format f ON f.format_id = m.format_id\n"
              "JOIN Tournament t ON t.tournament_id = f.tournament_id\nWHERE t.name = 'World Championships'")
    assert agent_warmup.recovery_candidates(joined) == [
        (joined.replace("Championships'", "Championship'"), "SELECT DISTINCT name FROM Tournament")]
    assert [agent_warmup.mistaken_literal(v) for v in ("MedalGold", "Team", "Medal")] == ["Gold", "Teams", "Medals"]
    assert agent_warmup.recovery_candidates("SELECT (") == []


@pytest.fixture(scope="module")
def recovery_episodes(tokenizer, agent_env, tmp_path_factory):
    policy = make_policy(tokenizer)
    cfg = config(tmp_path_factory.mktemp("rec"), examples=24, max_turns=3, recovery=1.0)
    items, counts = sft_warmup.build_examples(cfg, policy, agent_env)
    return policy, items, counts


def test_recovery_episodes_see_a_floor_look_the_values_up_and_answer_right(recovery_episodes, agent_env):
    """Played through the env: the mistaken query comes back 0 or empty, the look-up lists the column's values
    (the gold's literal among them), the gold answer scores, and the mistake is out of the loss."""
    policy, items, counts = recovery_episodes
    recovered = [item for item in items if item["recovery"]]
    assert counts["recoveries"] == len(recovered) > len(items) // 2
    for item in recovered:
        episode = item["episode"]
        found = agent_env.score_explorations(item["index"], episode.moves, episode.move_kinds, episode.move_errors)
        assert found.floor[0] and not found.floor[1] and episode.info["correct"]
        assert episode.move_errors == [None, None, None] and episode.move_kinds == ["sql", "sql", "answer"]
        mistaken, lookup = (move[len("<sql>"):-len("</sql>")] for move in episode.moves[:2])
        assert lookup.startswith("SELECT DISTINCT ") and mistaken != episode.sql
        (start, end, value), *rest = runs(item["loss_mask"])
        assert (start, value) == (0, 0) and end >= len(policy.encode(episode.moves[0]))  # the mistake: no loss
        assert [value for _, _, value in rest] == [1, 0, 1]  # the look-up, the env's reply, the answer
    assert sum(counts[f"explorations_{n}"] for n in range(3)) == len(items)


def test_recovery_is_off_by_default_and_needs_three_turns(episodes):
    _, items, counts = episodes
    assert counts["recoveries"] == 0 and not any(item["recovery"] for item in items)
    with pytest.raises(SystemExit):
        sft_warmup.parse_config(["--max-turns", "2", "--recovery", "0.5"])
    with pytest.raises(SystemExit):
        sft_warmup.parse_config(["--max-turns", "3", "--recovery", "1.5"])
