"""agents/multiturn.py and the multi-turn path of the trainer: episodes on TextToSQLAgent-v0, the loss mask
on a real tokenised episode (no environment token gets gradient), a scripted episode through the env, the
prompt, and real --max-turns runs of agents/grpo_train.py on the tiny Llama."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from agents import grpo_train, metrics_log  # noqa: E402
from agents import grpo_update as update  # noqa: E402
from agents.cli import ConfigError  # noqa: E402
from agents.grpo_config import make_config, parse_config  # noqa: E402
from agents.multiturn import EnvPool, episode_metrics, move_finished, run_episodes  # noqa: E402
from agents.policy import LoRAPolicy, PolicyConfig  # noqa: E402
from sqlenv import prompts  # noqa: E402
from sqlenv.spec import EnvSpec  # noqa: E402
from tests.tiny_llama import save_tiny_llama  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# ChatML with the tokenizer's own EOS closing each turn, so that a move ending on EOS is exercised
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<eos>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture()
def policy(tiny_model):
    torch.manual_seed(0)
    return LoRAPolicy(PolicyConfig(model=tiny_model, device="cpu", max_completion_length=6, threads=1,
                                   temperature=1.0, few_shot=1))


@pytest.fixture()
def agent_env():
    env = EnvSpec(dataset="generated", split="dev", max_turns=3).make()
    yield env
    env.close()


class Scripted:
    """Make ``policy.sample_ids`` return these moves in turn (the same for every live episode)."""

    def __init__(self, policy, moves):
        self.policy, self.moves, self.calls = policy, list(moves), []

    def __call__(self, prompt_ids_list, num_generations=1, *, greedy=False, temperature=None, finished=None):
        self.calls.append(len(prompt_ids_list))
        ids = self.policy.encode(self.moves[len(self.calls) - 1])
        return [[(ids.clone(), torch.full((len(ids),), -0.5))] * num_generations for _ in prompt_ids_list]


def test_move_finished_and_the_envs_reply(agent_env):
    assert move_finished("think <sql>SELECT 1</sql>") and move_finished("<ANSWER>x</Answer>")
    assert not move_finished("<sql>SELECT 1") and not move_finished("SELECT 1;")
    agent_env.reset(options={"index": 0})  # the reply is the entry without the head echoing the move
    info = agent_env.step("<sql>SELECT COUNT(*)\nFROM Athlete</sql>")[4]
    table = "1 row\n| COUNT(*) |\n|----------|\n| 1        |"  # one athlete per database
    assert (info["reply"], info["result"]) == (table, f"Turn 1/3 <sql>SELECT COUNT(*)\nFROM Athlete</sql>\n{table}")
    info = agent_env.step("SELECT 1 </sql>\n")[4]  # a move whose text looks like the end of an echo
    malformed = ("Malformed move: no <sql> or <answer> block. Write exactly one <sql>QUERY</sql> "
                 "(explore) or <answer>QUERY</answer> (submit).")
    assert info["reply"] == malformed and info["result"].endswith("\n" + malformed)
    info = agent_env.step("<answer>SELECT 1</answer>")[4]
    assert (info["reply"], info["result"]) == ("Answer submitted.",
                                               "Turn 3/3 <answer>SELECT 1</answer>\nAnswer submitted.")


def test_agent_prompt_explains_both_tags_with_a_worked_episode(agent_env):
    obs, _ = agent_env.reset(options={"index": 0})
    messages = prompts.build_agent_messages(obs, max_turns=3, few_shot=1)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert "in up to 3 turns" in system and "<sql>QUERY</sql>" in system and "<answer>QUERY</answer>" in system
    assert obs["schema"].strip() in system
    example = prompts.AGENT_EXAMPLES["tables"][0]
    assert messages[2]["content"] == f"<sql>{example.explore}</sql>"
    assert messages[3]["content"] == f"Result:\n{example.result}\n\n2 turns left."
    assert messages[4]["content"] == f"<answer>{example.answer}</answer>"
    assert messages[-1]["content"] == f"Question: {obs['question'].strip()}"
    last = prompts.agent_result_message("0 rows", 1)
    assert last.endswith("This is your last turn: submit <answer>QUERY</answer> now.")
    with pytest.raises(ValueError, match="max_turns"):
        prompts.build_agent_messages(obs, max_turns=1)


def test_feedback_follows_the_chat_template(policy):
    plain = policy.agent_feedback("1 row", 2)
    assert plain == "\n\nUser: Result:\n1 row\n\n2 turns left.\n\nAssistant: "
    policy.tokenizer.chat_template = CHAT_TEMPLATE
    assert policy.agent_feedback("1 row", 2) == ("<eos>\n<|im_start|>user\nResult:\n1 row\n\n2 turns left.<eos>\n"
                                                 "<|im_start|>assistant\n")
    # a move that ended on EOS already closed the assistant turn
    assert policy.agent_feedback("1 row", 1, after_eos=True).startswith("\n<|im_start|>user\nResult:\n1 row\n\nThis")


def test_scripted_episode_through_the_env(policy, agent_env, monkeypatch):
    """Explore, see the env's real result in the context, answer with the gold query: reward 1."""
    index = 2
    gold = agent_env.example(index).gold_sql
    explore = "<sql>SELECT name FROM Athlete</sql>"
    script = Scripted(policy, [explore, f"<answer>{gold}</answer>"])
    monkeypatch.setattr(policy, "sample_ids", script)
    pool = EnvPool(agent_env)
    (a, b) = run_episodes(policy, pool, [index], 2)
    assert script.calls == [1, 2]  # turn 1: one prompt for the group; turn 2: each live episode
    reference = EnvSpec(dataset="generated", split="dev", max_turns=3).make()
    reference.reset(options={"index": index})
    obs, _, _, _, info = reference.step(explore)
    reference.close()
    result = obs["transcript"].split("</sql>\n", 1)[1]
    feedback = policy.agent_feedback(result, 2)
    for episode in (a, b):
        assert (episode.turns, episode.reward, episode.info["correct"], episode.sql) == (2, 1.0, True, gold)
        assert episode.move_errors == [None, None] and episode.move_kinds == ["sql", "answer"]
        assert episode.text == explore + feedback + f"<answer>{gold}</answer>"
        move_ids = [policy.encode(explore), policy.encode(f"<answer>{gold}</answer>")]
        expected = torch.cat([move_ids[0], policy.encode(feedback), move_ids[1]])
        assert torch.equal(episode.completion_ids, expected)
        assert episode.loss_mask.tolist() == [1.0] * len(move_ids[0]) + [0.0] * len(policy.encode(feedback)) \
            + [1.0] * len(move_ids[1])
        assert episode.logprobs[episode.loss_mask == 0].abs().sum() == 0
        assert episode.move_tokens == [len(m) for m in move_ids]
    metrics = episode_metrics("eval", [a, b])
    assert metrics == {"eval/turns_mean": 2.0, "eval/no_answer_frac": 0.0, "eval/explore_error_frac": 0.0,
                       "eval/explore_moves_mean": 1.0, "eval/malformed_frac": 0.0,
                       "eval/policy_tokens": float(sum(a.move_tokens)), "eval/explore_found_frac": 0.0,
                       "eval/found_then_lost_frac": 0.0, "eval/explore_floor_frac": 0.0,
                       "eval/floor_kept_frac": 0.0, "eval/answer_explored_frac": 0.0}
    assert (a.explore_correct, a.explore_floor, a.answer_explored) == ([False, False], [False, False], False)
    pool.close()


def test_episode_metrics_count_a_right_exploration_answered_wrong(policy, agent_env, monkeypatch):
    """The trainer's per-step metrics: an exploration that would have been a right answer, then a wrong answer."""
    gold = agent_env.example(2).gold_sql
    script = Scripted(policy, [f"<sql>{gold}</sql>", "<answer>SELECT COUNT(*) FROM Athlete</answer>"])
    monkeypatch.setattr(policy, "sample_ids", script)
    episodes = run_episodes(policy, EnvPool(agent_env), [2], 2)
    assert all((e.explore_correct, e.answer_explored, e.info["correct"]) == ([True, False], False, False)
               for e in episodes)
    metrics = episode_metrics("train", episodes)
    assert (metrics["train/explore_found_frac"], metrics["train/found_then_lost_frac"],
            metrics["train/answer_explored_frac"]) == (1.0, 1.0, 0.0)
    from agents.curves import present_panels  # a multi-turn run's curves.png draws them

    panels = present_panels([{"step": 1, **metrics}])
    assert ("train/explore_found_frac", "train/found_then_lost_frac", "eval/found_then_lost_frac") in panels
    assert ("train/turns_mean", "eval/turns_mean") in panels


def test_episode_metrics_count_a_floor_explored_and_kept(policy, agent_env, monkeypatch):
    """An exploration whose filter matched nothing (a count of 0), then that count submitted: a wrong floor kept."""
    zero = "SELECT COUNT(*) FROM Athlete WHERE name = 'Nobody'"
    monkeypatch.setattr(policy, "sample_ids", Scripted(policy, [f"<sql>{zero}</sql>", f"<answer>{zero}</answer>"]))
    (episode,) = run_episodes(policy, EnvPool(agent_env), [1], 1)
    assert (episode.explore_floor, episode.info["prediction"], episode.info["correct"]) == ([True, False], "0", False)
    metrics = episode_metrics("train", [episode])
    assert (metrics["train/explore_floor_frac"], metrics["train/floor_kept_frac"]) == (1.0, 1.0)
    from agents.curves import present_panels

    assert ("train/explore_floor_frac", "train/floor_kept_frac", "eval/floor_kept_frac") in present_panels(
        [{"step": 1, **metrics}])


def test_turns_run_out_without_an_answer(policy, agent_env, monkeypatch):
    script = Scripted(policy, ["<sql>SELECT nope FROM Athlete</sql>", "no tags", "<sql>SELECT 1</sql>"])
    monkeypatch.setattr(policy, "sample_ids", script)
    (episode,) = run_episodes(policy, EnvPool(agent_env), [0], 1)
    assert (episode.turns, episode.reward, episode.info["error"], episode.sql) == (3, -1.0, "no_answer", "")
    assert episode.move_errors == ["no_such_column", "no_tag", None]
    assert (episode.explore_correct, episode.answer_explored) == ([False, False, False], None)
    metrics = episode_metrics("train", [episode])
    assert metrics["train/no_answer_frac"] == 1.0
    assert metrics["train/explore_error_frac"] == pytest.approx(2 / 3)
    assert metrics["train/malformed_frac"] == pytest.approx(1 / 3)


def test_loss_mask_gives_environment_tokens_exactly_zero_gradient(policy, agent_env):
    """A real tokenised episode of the tiny Llama (sampled moves, the env's text between them) through the
    real update: the gradient of the loss with respect to every environment token's log-prob is exactly 0,
    and the policy's tokens do get gradient; with the KL term and with two iterations too."""
    policy.tokenizer.chat_template = CHAT_TEMPLATE
    episodes = run_episodes(policy, EnvPool(agent_env), [0, 1], 2)
    assert all((e.loss_mask == 0).any() and (e.loss_mask == 1).any() for e in episodes)
    for e in episodes:  # the masked-out tokens are exactly the env's text
        env_text = policy.tokenizer.decode(e.completion_ids[e.loss_mask == 0])
        assert "Result:\n" in env_text and "<|im_start|>user" in env_text
        assert e.policy_tokens == sum(e.move_tokens) and len(e.move_tokens) == e.turns
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    for overrides in (dict(beta=0.0), dict(beta=0.1), dict(beta=0.1, num_iterations=2)):
        grads = []
        original = policy.sequence_logprobs

        def recording(prompt_ids_list, completion_ids_list, disable_adapter=False, **kwargs):
            logp, mask = original(prompt_ids_list, completion_ids_list, disable_adapter=disable_adapter, **kwargs)
            if logp.requires_grad:
                logp.register_hook(lambda g: grads.append(g.detach().clone()))
            return logp, mask

        policy.sequence_logprobs = recording
        cfg = make_config(max_completion_length=6, max_turns=3, micro_batch_size=8, max_grad_norm=0, **overrides)
        optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=0.0)
        metrics = update.grpo_update(policy, optimizer, episodes, advantages, cfg)
        policy.sequence_logprobs = original
        assert len(grads) == cfg.num_iterations and all(torch.isfinite(g).all() for g in grads)
        for grad in grads:
            for row, e in enumerate(episodes):
                n = len(e.completion_ids)
                assert torch.all(grad[row, :n][e.loss_mask == 0] == 0), overrides
                assert (grad[row, :n][e.loss_mask == 1] != 0).any(), overrides
        assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # old log-probs: the sampled ones
        if cfg.beta > 0:
            assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # a fresh adapter is the reference


def test_loss_weights_fold_the_mask_into_padding():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    single = [type("R", (), {"completion_ids": torch.zeros(3)})(), type("R", (), {"completion_ids": torch.zeros(4)})()]
    assert update.loss_weights(single, mask) is mask  # single-step rollouts: the padding mask as is
    episode = type("E", (), {"completion_ids": torch.zeros(4), "loss_mask": torch.tensor([1.0, 0.0, 0.0, 1.0])})()
    assert update.loss_weights([single[0], episode], mask).tolist() == [[1, 1, 1, 0], [1, 0, 0, 1]]


def test_max_turns_flag_is_validated():
    assert parse_config([]).max_turns == 1
    assert parse_config(["--max-turns", "3"]).max_turns == 3
    with pytest.raises(ConfigError, match=r"max_turns=0 \(--max-turns\) must be an integer >= 1"):
        make_config(max_turns=0)


def test_held_out_episodes_are_recorded_and_monitored(policy, agent_env, monkeypatch, tmp_path):
    """The trainer's multi-turn evaluation returns each episode's submitted query, its prediction and the gold
    (its last step's info), so eval/collapse/* and <run>/eval/step_NNNNNN.json are filled as in single-step runs."""
    from agents.eval_records import held_out_records
    from agents.rollouts import evaluate

    pool = EnvPool(agent_env)
    script = Scripted(policy, ["<sql>SELECT name FROM Athlete</sql>", "<answer>SELECT 0</answer>"])
    monkeypatch.setattr(policy, "sample_ids", script)
    metrics, infos = evaluate(policy, agent_env, [1, 3], make_config(eval_batch_size=2, max_turns=3), pool)
    assert [info["index"] for info in infos] == [1, 3]
    result = held_out_records(agent_env, infos, metrics, tmp_path, 0)
    records = [{k: r[k] for k in ("index", "sql", "error", "correct", "prediction", "answer", "reward")}
               for r in result["records"]]
    assert records == [
        {"index": 1, "sql": "SELECT 0", "error": None, "correct": False, "prediction": "0", "answer": "3",
         "reward": 0.0},
        {"index": 3, "sql": "SELECT 0", "error": None, "correct": False, "prediction": "0", "answer": "2009",
         "reward": 0.0}]
    assert [r["question"] for r in result["records"]] == [agent_env.example(i).question for i in (1, 3)]
    # SELECT 0 for both: a constant floor, the same query for two questions, one template, a literal answer
    expected = {"eval/collapse/floor": 1.0, "eval/collapse/floor_text": 0.0, "eval/collapse/floor_gold": 0.0,
                "eval/collapse/repeated": 1.0, "eval/collapse/top_template": 1.0, "eval/collapse/example_entity": 0.0,
                "eval/collapse/list_for_one": 0.0, "eval/collapse/literal": 1.0}
    assert {k: v for k, v in metrics.items() if k.startswith("eval/collapse/")} == expected
    assert [r["reads_table"] for r in result["records"]] == [False, False]
    assert json.loads((tmp_path / "eval" / "step_000000.json").read_text())["records"] == result["records"]
    assert metrics["eval/turns_mean"] == 2.0
    pool.close()


def test_unanswered_episodes_are_no_repeated_query():
    """Episodes that never answered all record sql "": not one query repeated across their questions (on 40
    dev questions of the untuned model, 10 of them read as 25 points of repeats)."""
    from agents.monitors import collapse_monitors

    unanswered = [dict(index=i, question=f"q{i}", sql="", error="no_answer", prediction="", answer="3")
                  for i in range(3)]
    answered = [dict(index=3, question="q3", sql="SELECT 0", error=None, prediction="0", answer="3"),
                dict(index=4, question="q4", sql="select 0;", error=None, prediction="0", answer="1")]
    found = collapse_monitors(unanswered + answered, entities=())
    assert (found["repeated"], found["top_template"], found["floor"]) == (2 / 5, 2 / 5, 2 / 5)
    assert collapse_monitors(unanswered, entities=())["repeated"] == 0.0


def fake_checkpoint(run: Path, **config) -> Path:
    """A run folder whose one checkpoint's state.pt holds the configuration a real run saves (no weights)."""
    from dataclasses import asdict

    from agents.grpo_config import Config

    checkpoint = run / "checkpoints" / "step_000002"
    checkpoint.mkdir(parents=True)
    saved = {**asdict(Config()), "dataset": "generated", "warmup_adapter": None, "resolved_dataset": "generated",
             "resolved_data_dir": None, **config}
    torch.save({"step": 2, "config": saved}, checkpoint / "state.pt")
    (run / "config.json").write_text(json.dumps(saved))
    return run


def test_a_resume_keeps_the_turns_per_episode(tmp_path):
    from agents import preflight

    run = fake_checkpoint(tmp_path / "run", max_turns=3)
    base = dict(dataset="generated", resume=str(run), warmup_examples=0)
    with pytest.raises(ConfigError) as error:
        preflight.plan_run(make_config(**base))
    assert "max_turns: the run used 3, this command 1; pass --max-turns 3" in str(error.value)
    assert preflight.plan_run(make_config(**base, max_turns=3)).checkpoint == run / "checkpoints" / "step_000002"
    # a checkpoint written before max_turns existed was trained on one query per question
    old = fake_checkpoint(tmp_path / "old")
    state = torch.load(old / "checkpoints" / "step_000002" / "state.pt", weights_only=False)
    del state["config"]["max_turns"]
    torch.save(state, old / "checkpoints" / "step_000002" / "state.pt")
    with pytest.raises(ConfigError, match="max_turns: the run used 1, this command 2; pass --max-turns 1"):
        preflight.plan_run(make_config(dataset="generated", resume=str(old), warmup_examples=0, max_turns=2))
    assert preflight.plan_run(make_config(dataset="generated", resume=str(old), warmup_examples=0)).checkpoint


def test_the_adapter_card_records_max_turns(tmp_path):
    from agents.adapter_card import read_env_config, write_env_config

    env = dict(dataset="generated", data_dir=None, split="train", eval_split="dev", schema="tables", sample_rows=3,
               reward="binary")
    write_env_config(tmp_path, **env, max_turns=3)
    legacy = {"timeout": 1.0, "max_instructions": None,  # the query budget every run before it had,
              "literal_answers": "score", "column_values": 0,  # literal answers scored, no column values,
              "filter_hints": False}  # no filter hints
    assert json.loads((tmp_path / "env_config.json").read_text()) == {**env, **legacy, "max_turns": 3}
    write_env_config(tmp_path, **env)  # a single-step writer (the warm-up stage) may leave it out
    assert read_env_config(tmp_path)["max_turns"] == 1
    (tmp_path / "env_config.json").write_text(json.dumps(env))  # written before max_turns existed
    assert read_env_config(tmp_path) == {**env, **legacy, "max_turns": 1}
    with pytest.raises(ValueError, match="unknown env setting 'turns'"):
        write_env_config(tmp_path, **env, max_turns=2, turns=2)


TINY = dict(dataset="generated", num_generations=2, batch_size=2, micro_batch_size=4, max_completion_length=6,
            temperature=1.0, few_shot=1, eval_limit=2, eval_every=1, eval_batch_size=2, probe_questions=1,
            save_every=0, plot=False, threads=1, seed=1, learning_rate=1e-2, warmup_examples=0, max_turns=2)


def test_a_multi_turn_step_updates_the_lora_weights(tiny_model, tmp_path, monkeypatch):
    """One real --max-turns 2 step in process: real episodes, and (the tiny model never answers, so every
    reward is -1) a deterministic tie-break added to the rewards so that the update really runs."""
    real = grpo_train.collect_groups

    def with_signal(*args, **kwargs):
        rollouts, rewards, infos, gen_s, score_s = real(*args, **kwargs)
        return rollouts, [r + 0.5 * (k % 2) for k, r in enumerate(rewards)], infos, gen_s, score_s

    monkeypatch.setattr(grpo_train, "collect_groups", with_signal)
    before = {}
    original = grpo_train.build_policy

    def build(cfg):
        built = original(cfg)
        before.update({n: p.detach().clone() for n, p in built.model.named_parameters() if p.requires_grad})
        build.policy = built
        return built

    monkeypatch.setattr(grpo_train, "build_policy", build)
    grpo_train.train(make_config(steps=1, output_dir=str(tmp_path / "run"), model=tiny_model, **TINY))
    changed = [n for n, p in build.policy.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)
    records = metrics_log.read_metrics(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if "train/reward_mean" in r][0]
    assert train["train/groups_kept"] == 2 and train["train/skipped_update"] == 0
    assert 1 <= train["train/turns_mean"] <= 2 and train["train/policy_tokens"] <= 2 * 6
    assert train["train/completion_len"] == train["train/policy_tokens"]


def test_script_runs_multi_turn_end_to_end(tiny_model, tmp_path):
    """python agents/grpo_train.py --max-turns 2 on the tiny Llama: probe, eval, one step, all multi-turn."""
    run = tmp_path / "run"
    flags = {k: v for k, v in TINY.items() if k not in ("plot",)}
    argv = [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    env = {k: v for k, v in os.environ.items() if k != "SQLENV_DATA_DIR"}
    out = subprocess.run([sys.executable, str(REPO / "agents" / "grpo_train.py"), *argv, "--no-plot", "--steps", "1",
                          "--model", tiny_model, "--output-dir", str(run)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["max_turns"] == 2
    records = metrics_log.read_metrics(run / "metrics.jsonl")
    probe = [r for r in records if "probe/mixed_frac" in r][0]
    train = [r for r in records if "train/reward_mean" in r][0]
    evals = [r for r in records if "eval/accuracy" in r]
    assert 1 <= probe["probe/turns_mean"] <= 2
    assert 1 <= train["train/turns_mean"] <= 2 and 0 <= train["train/no_answer_frac"] <= 1
    assert len(evals) == 2 and all(1 <= r["eval/turns_mean"] <= 2 and r["eval/questions"] == 2 for r in evals)
    # monitored like a single-step run: collapse monitors of the batch and of each held-out evaluation, whose
    # records (each episode's final query, prediction and gold) are kept, and the paired comparison at the end
    from agents.monitors import MONITORS, collapse_monitors

    assert all(f"train/collapse/{name}" in train for name in MONITORS)
    held_out = []
    for step, metrics in zip((0, 1), evals):
        kept = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())["records"]
        held_out.append([r["index"] for r in kept])
        assert all(r["error"] == "no_answer" or r["sql"] for r in kept)
        found = collapse_monitors(kept)
        assert {name: metrics[f"eval/collapse/{name}"] for name in MONITORS} == {n: found[n] for n in MONITORS}
    assert len(held_out[0]) == 2 and held_out[0] == held_out[1]  # the same two questions at each evaluation
    assert "paired/diff" in evals[-1] and (run / "eval" / "paired.md").is_file()
    # the adapter records its turns per episode, so evaluate.py plays it as it was trained
    card = json.loads((run / "checkpoints" / "step_000001" / "adapter" / "env_config.json").read_text())
    assert card["max_turns"] == 2


# ====================================================================================== benchmarks/evaluate.py
def test_evaluate_max_turns_with_the_oracle(tmp_path):
    """--max-turns with a one-query policy: it answers in turn 1, scored by the env's step."""
    from benchmarks import evaluate

    assert evaluate.main(["--policy", "oracle", "--dataset", "generated", "--max-turns", "3", "--limit", "6",
                          "--no-progress", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "oracle_generated_dev_tables_n6_t3.json").read_text())
    assert result["config"]["max_turns"] == 3
    assert result["metrics"]["execution_accuracy"] == 100.0
    assert result["metrics"]["multi_turn"] == {"max_turns": 3, "turns_mean": 1.0, "no_answer_rate": 0.0,
                                               "answer_error_rate": 0.0, "explore_moves_mean": 0.0,
                                               "explore_error_rate": 0.0, "malformed_rate": 0.0,
                                               "explore_found_rate": 0.0, "found_then_lost_rate": 0.0,
                                               "answer_explored_rate": 0.0, "explore_floor_rate": 0.0,
                                               "floor_kept_rate": 0.0}
    assert all(r["turns"] == 1 and r["move_kinds"] == ["answer"] for r in result["records"])
    assert all(r["explore_correct"] == [False] and r["answer_explored"] is False for r in result["records"])
    report = (tmp_path / "oracle_generated_dev_tables_n6_t3.md").read_text()
    assert "## Multi-turn episodes" in report and "## Collapse monitors" in report
    # the collapse monitors read each episode's submitted query, its prediction and the question
    from agents.monitors import collapse_monitors
    from sqlenv.env import TextToSQLEnv

    env = TextToSQLEnv(dataset="generated", split="dev")
    assert [(r["sql"], r["question"]) for r in result["records"]] == [
        (env.example(r["index"]).gold_sql, env.example(r["index"]).question) for r in result["records"]]
    assert all(r["prediction"] == r["answer"] for r in result["records"])
    env.close()
    assert result["metrics"]["collapse"] == collapse_monitors(result["records"])


@pytest.fixture(scope="module")
def multi_turn_adapter(tiny_model, tmp_path_factory):
    """An adapter of the tiny Llama as a --max-turns 3 run saves it (env_config.json: max_turns 3)."""
    from agents.adapter_card import write_env_config

    policy = LoRAPolicy(PolicyConfig(model=tiny_model, few_shot=1, max_completion_length=6, threads=1, device="cpu"))
    adapter = policy.save(tmp_path_factory.mktemp("adapter") / "adapter")
    write_env_config(adapter, dataset="generated", data_dir=None, split="train", eval_split="dev", schema="tables",
                     sample_rows=3, reward="binary", max_turns=3)
    return str(adapter)


def test_evaluate_plays_an_adapter_in_the_episodes_it_was_trained_in(multi_turn_adapter, tmp_path, capsys):
    from benchmarks import evaluate

    common = ["--policy", multi_turn_adapter, "--limit", "2", "--threads", "1", "--device", "cpu", "--no-progress"]
    assert evaluate.main([*common, "--out", str(tmp_path / "a")]) == 0
    (path,) = (tmp_path / "a").glob("*.json")
    result = json.loads(path.read_text())
    assert path.name.endswith("_n2_t3.json") and result["config"]["max_turns"] == 3
    assert result["metrics"]["multi_turn"]["max_turns"] == 3 and result["config"]["trained_env"]["max_turns"] == 3
    assert all(1 <= r["turns"] <= 3 for r in result["records"])
    assert "notice" not in capsys.readouterr().out
    # an explicit flag wins, and is said
    assert evaluate.main([*common, "--max-turns", "1", "--out", str(tmp_path / "b")]) == 0
    assert "notice: evaluating with max_turns=1 although" in capsys.readouterr().out
    (path,) = (tmp_path / "b").glob("*.json")
    result = json.loads(path.read_text())
    assert "max_turns" not in result["config"] and "multi_turn" not in result["metrics"]
    assert "turns" not in result["records"][0]
    # --samples needs one query per question: the error names where the turns came from
    with pytest.raises(SystemExit) as stop:
        evaluate.main([*common, "--samples", "2", "--out", str(tmp_path / "c")])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert f"--samples 2 with {multi_turn_adapter} (trained in 3-move episodes; pass --max-turns 1" in message


def test_turn_metrics_by_hand():
    from benchmarks.evaluate import turn_metrics

    records = [dict(turns=3, error="no_answer", move_kinds=["sql", "malformed", "sql"],
                    move_errors=[None, "no_tag", "syntax"]),
               dict(turns=2, error="syntax", move_kinds=["sql", "answer"], move_errors=[None, "syntax"]),
               dict(turns=1, error=None, move_kinds=["answer"], move_errors=[None])]
    assert turn_metrics(records, 3) == {"max_turns": 3, "turns_mean": 2.0, "no_answer_rate": pytest.approx(100 / 3),
                                        "answer_error_rate": pytest.approx(100 / 3), "explore_moves_mean": 4 / 3,
                                        "explore_error_rate": 50.0, "malformed_rate": pytest.approx(100 / 6)}


@pytest.mark.parametrize("moves, explore_correct, answer_explored, rates", [
    # explored the right query, then submitted another: found, then lost
    (["<sql>{gold}</sql>", "<answer>SELECT COUNT(*) FROM Athlete</answer>"], [True, False], False, (100, 100, 0)),
    # explored the right query and resubmitted it (whitespace aside)
    (["<sql>{gold}</sql>", "<answer>  {gold}\n</answer>"], [True, False], True, (100, 0, 100)),
    # a failed exploration and a malformed move are never a right answer; no answer: not counted as answered
    (["<sql>SELECT nope FROM Athlete</sql>", "no tags", "<sql>SELECT name FROM Athlete</sql>"],
     [False, False, False], None, (0, 0, 0)),
    # a filter that matched nothing, looked at again, then its empty result submitted: a floor kept
    (["<sql>SELECT name FROM Athlete WHERE name = 'Nobody'</sql>", "<sql>SELECT 0</sql>",
      "<answer>SELECT name FROM Athlete WHERE name = 'Nobody'</answer>"], [False, False, False], True, (0, 0, 100)),
])
def test_evaluate_episodes_scores_what_the_explorations_found(tiny_model, agent_env, monkeypatch, moves,
                                                              explore_correct, answer_explored, rates):
    from agents.baselines import make_policy
    from benchmarks.evaluate import evaluate_episodes, turn_metrics, turn_table

    index = 2
    gold = agent_env.example(index).gold_sql
    policy = make_policy("few-shot", model=tiny_model, device="cpu", threads=1, max_completion_length=6)
    monkeypatch.setattr(policy.lm, "sample_ids", Scripted(policy.lm, [m.format(gold=gold) for m in moves]))
    (record,) = evaluate_episodes(policy, agent_env, indices=[index])["records"]
    assert (record["explore_correct"], record["answer_explored"]) == (explore_correct, answer_explored)
    floor = moves[0].endswith("'Nobody'</sql>")
    assert record["correct"] is (answer_explored is True and not floor)
    turns = turn_metrics([record], 3)
    assert (turns["explore_found_rate"], turns["found_then_lost_rate"], turns["answer_explored_rate"]) == rates
    assert record["explore_floor"] == [floor, floor, False][:len(moves)]
    assert (turns["explore_floor_rate"], turns["floor_kept_rate"]) == ((100, 100) if floor else (0, 0))
    assert "| Explored a right answer (%) | ... then answered wrong (%) | Answer is an exploration (%) " \
        "| Explored a floor: 0, empty, None (%) | ... then answered a wrong floor (%) |" in turn_table(turns)


def test_explorations_script_rescores_an_older_result(tiny_model, agent_env, monkeypatch, tmp_path):
    """benchmarks/explorations.py, in a process, on a result written without the exploration fields: it puts
    back what evaluate_episodes records now; a single-step result is refused with the flag to use."""
    from agents.baselines import make_policy
    from benchmarks.evaluate import evaluate_episodes, write_result

    gold = agent_env.example(2).gold_sql
    policy = make_policy("few-shot", model=tiny_model, device="cpu", threads=1, max_completion_length=6)
    monkeypatch.setattr(policy.lm, "sample_ids", Scripted(policy.lm, [f"<sql>{gold}</sql>", "<sql>SELECT 0</sql>",
                                                                      f"<answer>{gold};</answer>"]))
    result = evaluate_episodes(policy, agent_env, indices=[2, 3])
    assert [r["explore_correct"] for r in result["records"]] == [[True, False, False], [False, False, False]]
    assert [r["answer_explored"] for r in result["records"]] == [True, True]  # question 2's gold, twice
    older = json.loads(json.dumps(result))
    for record in older["records"]:
        del record["explore_correct"], record["explore_floor"], record["answer_explored"]
    for key in ("explore_found_rate", "found_then_lost_rate", "answer_explored_rate", "explore_floor_rate",
                "floor_kept_rate"):
        del older["metrics"]["multi_turn"][key]
    older["config"]["split"] = "dev"
    old_json, _ = write_result(older, tmp_path / "old")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "explorations.py"), str(old_json),
                          "--out", str(tmp_path / "new")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [r["explore_floor"] for r in result["records"]] == [[False, True, False]] * 2  # SELECT 0
    assert "| 3 | 3.00 | 0.00 | 0.00 | 2.00 | 0.00 | 0.00 | 50.00 | 0.00 | 100.00 | 100.00 | 0.00 |" in out.stdout
    assert "| 100.00 | 0.00 | 0 | 0 | 2 | 2 |" in out.stdout  # both explored twice, the first no floor
    # SELECT 0 is a floor but filters on nothing: no hint
    assert "Episodes whose floor exploration would have got (with --filter-hints) a filter hint: 0 of 2" in out.stdout
    rescored = json.loads((tmp_path / "new" / old_json.name).read_text())
    assert rescored["records"] == json.loads(json.dumps(result["records"]))
    assert rescored["metrics"]["multi_turn"] == result["metrics"]["multi_turn"]
    single = dict(older, config=dict(older["config"], max_turns=1))
    single_json = tmp_path / "single.json"
    single_json.write_text(json.dumps(single))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "explorations.py"), str(single_json)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a multi-turn result (config.max_turns 1)" in out.stderr, out.stderr


def test_hinted_explorations_are_the_floors_filter_hints_name(agent_env):
    """A floor exploration filtering on a value no row holds is one the hints would name; a floor without a text
    filter, a result that is no floor and a non-exploration are not."""
    env = agent_env.unwrapped
    moves = ["<sql>SELECT name FROM Athlete WHERE name = 'Nobody'</sql>", "<sql>SELECT 0</sql>",
             "<sql>SELECT name FROM Athlete</sql>", "<answer>SELECT name FROM Athlete WHERE name = 'Nobody'</answer>"]
    kinds, errors = ["sql", "sql", "sql", "answer"], [None] * 4
    floor = env.score_explorations(2, moves, kinds, errors).floor
    assert floor == [True, True, False, False]
    assert env.hinted_explorations(2, moves, floor) == [True, False, False, False]
    assert env.filter_hints is None  # counted without the env showing hints


def test_second_looks_count_what_came_before_a_second_exploration():
    from benchmarks.explorations import second_looks

    floor, look = "<sql>SELECT COUNT(*) FROM t WHERE x = 'Gold'</sql>", "<sql>SELECT DISTINCT x FROM t</sql>"
    records = [  # moves as evaluate.py writes them (a repr) or as a list
        {"moves": repr([floor, look, "<answer>A</answer>"]), "move_kinds": ["sql", "sql", "answer"],
         "explore_floor": [True, False, False]},
        {"moves": [look, look, "<answer>A</answer>"], "move_kinds": ["sql", "sql", "answer"],
         "explore_floor": [False, False, False]},
        {"moves": [look, "<answer>A</answer>"], "move_kinds": ["sql", "answer"], "explore_floor": [False, False]},
        {"moves": [floor, "<answer>A</answer>"], "move_kinds": ["sql", "answer"], "explore_floor": [True, False]},
        {"moves": ["<answer>A</answer>"], "move_kinds": ["answer"], "explore_floor": [False]},
    ]
    assert second_looks(records) == {"explored_twice_pct": 40.0, "second_repeats_first_pct": 20.0,
                                     "first_floor": 2, "first_floor_explored_again": 1,
                                     "first_other": 2, "first_other_explored_again": 1}


def test_evaluate_episodes_with_a_language_model(tiny_model, agent_env):
    from agents.baselines import make_policy
    from benchmarks.evaluate import evaluate_episodes, turn_metrics

    policy = make_policy("few-shot", model=tiny_model, device="cpu", threads=1, max_completion_length=6)
    result = evaluate_episodes(policy, agent_env, limit=3, batch_size=2)
    records = result["records"]
    assert len(records) == 3 and all(1 <= r["turns"] <= 3 and len(r["moves"]) == r["turns"] for r in records)
    assert result["metrics"]["multi_turn"] == turn_metrics(records, 3)
    assert result["metrics"]["error_rate"] == pytest.approx(
        100 * sum(r["error"] is not None for r in records) / 3)


@pytest.mark.parametrize("argv, fragment", [(["--max-turns", "0"], "--max-turns 0: must be >= 1"),
                                            (["--max-turns", "2", "--samples", "4"], "--samples 4 with --max-turns 2")])
def test_evaluate_refuses_bad_turn_flags(argv, fragment, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "evaluate.py"), "--dataset", "generated", *argv,
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and fragment in out.stderr, out.stderr


def test_episodes_reuse_each_moves_context_and_play_as_without_it(policy, agent_env, monkeypatch):
    """run_episodes plays inside ``policy.reusing_prompts()``: each later move's context extends the last one,
    whose keys and values the engine kept, and the episodes come out as when every context is prefilled."""
    import contextlib

    caches = []
    reusing = policy.reusing_prompts

    @contextlib.contextmanager
    def watched():
        with reusing() as cache:
            caches.append(cache)
            yield cache

    monkeypatch.setattr(policy, "reusing_prompts", watched)
    reused = run_episodes(policy, EnvPool(agent_env), [0, 1, 2], 2, greedy=True)
    assert len(caches) == 1 and caches[0].reused_tokens > 0
    assert max(e.turns for e in reused) >= 2  # later moves happened, so contexts were extended
    monkeypatch.setattr(policy, "reusing_prompts", contextlib.nullcontext)
    plain = run_episodes(policy, EnvPool(agent_env), [0, 1, 2], 2, greedy=True)
    for a, b in zip(reused, plain):
        assert a.text == b.text and torch.equal(a.completion_ids, b.completion_ids) and a.reward == b.reward
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


def test_prompt_cache_tokens_bounds_what_the_episodes_keep(policy, agent_env, monkeypatch):
    """``PolicyConfig.prompt_cache_tokens`` (the trainer's ``--prompt-cache-tokens``) caps the kept tokens, and 0
    keeps none; the episodes are the same either way."""
    monkeypatch.setattr(policy.config, "prompt_cache_tokens", 0)
    with policy.reusing_prompts() as cache:
        assert cache is None
    plain = run_episodes(policy, EnvPool(agent_env), [0, 1], 2, greedy=True)
    monkeypatch.setattr(policy.config, "prompt_cache_tokens", 300)
    with policy.reusing_prompts() as cache:
        assert cache.max_tokens == 300
        capped = run_episodes(policy, EnvPool(agent_env), [0, 1], 2, greedy=True)
        assert cache.tokens <= 300
    assert [e.text for e in capped] == [e.text for e in plain]
    with pytest.raises(ValueError, match="prompt_cache_tokens must be an integer >= 0, got -1"):
        PolicyConfig(prompt_cache_tokens=-1)
