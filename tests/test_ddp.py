"""agents/grpo_train.py under data parallelism: 2 CPU processes, the gloo backend.

Fast: the update step on a toy policy, split over two ranks, equals one process's update on the
whole batch (uneven shards, a rank with nothing to train on, a non-finite loss on one rank, the
batch-wide std). Slow: ``train`` on two ranks with a tiny random Llama (real policy, env, executor,
generated dataset) ends with identical adapters on both ranks and resumes exactly; ``torchrun`` runs
the script itself.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
mp = pytest.importorskip("torch.multiprocessing")
dist = pytest.importorskip("torch.distributed")

from agents import distributed, grpo, grpo_train, metrics_log, rollouts  # noqa: E402
from agents import grpo_update as update  # noqa: E402
from agents.distributed import World  # noqa: E402
from agents.grpo_config import make_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "agents" / "grpo_train.py"
WORLD = 2

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join(rank: int, port: int):
    """Environment of a torchrun rank on this machine (agents.distributed.setup_world reads it)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)


def spawn(fn, *args):
    """Run fn(rank, *args) on WORLD processes; a failure on any rank fails the test with its traceback."""
    mp.start_processes(fn, args=args, nprocs=WORLD, join=True, start_method="spawn")


# ====================================================================================== plain runs
def test_plain_run_stays_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup_world(make_config().device) == World()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1
    world = distributed.setup_world(make_config().device)
    assert world == World() and not dist.is_initialized()
    assert world.shard([5, 6, 7]) == [5, 6, 7] and world.sum([1, 2.5]) == [1.0, 2.5]
    assert world.gather("x") == ["x"] and world.on_main(lambda: 3) == 3


def test_shards_split_the_batch():
    batch = list(range(7))
    shards = [World(rank=r, size=3).shard(batch) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shards, [])) == batch


# ====================================================================================== the update (toy)
class ToyPolicy:
    """A bigram 'language model': frozen base logits + a trainable 'adapter' (as in test_grpo_train)."""

    def __init__(self, vocab=7):
        gen = torch.Generator().manual_seed(0)
        self.base = torch.randn(vocab, vocab, generator=gen)
        self.lora = torch.nn.Parameter(0.1 * torch.randn(vocab, vocab, generator=gen))

    def trainable_parameters(self):
        return [self.lora]

    def sequence_logprobs(self, prompt_ids_list, completion_ids_list, disable_adapter=False):
        steps = max(len(c) for c in completion_ids_list)
        rows, masks = [], []
        for p, c in zip(prompt_ids_list, completion_ids_list):
            prev = torch.cat([p[-1:], c[:-1]])
            logits = self.base[prev] + (0 if disable_adapter else self.lora[prev])
            lp = torch.log_softmax(logits, -1).gather(-1, c[:, None])[:, 0]
            rows.append(torch.cat([lp, torch.zeros(steps - len(c))]))
            masks.append(torch.cat([torch.ones(len(c)), torch.zeros(steps - len(c))]))
        return torch.stack(rows), torch.stack(masks)


def toy_rollouts(policy, lengths=(3, 1, 4, 2, 2, 3)):
    gen = torch.Generator().manual_seed(1)
    rollouts = []
    for k, n in enumerate(lengths):
        prompt = torch.randint(0, 7, (2,), generator=gen)
        completion = torch.randint(0, 7, (n,), generator=gen)
        with torch.no_grad():
            logp, _ = policy.sequence_logprobs([prompt], [completion])
        rollouts.append(SimpleNamespace(prompt_ids=prompt, completion_ids=completion,
                                        logprobs=logp[0, :n].clone()))
    return rollouts


ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
# name -> (config overrides, the rollouts of rank 0 and of rank 1)
CASES = {
    "even_dr_grpo": (dict(loss_type="dr_grpo"), [0, 2, 4], [1, 3, 5]),
    "uneven_grpo": (dict(loss_type="grpo"), [0, 1, 2, 3, 4], [5]),
    "rank1_idle_iterations_kl": (dict(num_iterations=2, beta=0.1, max_grad_norm=0.5), [0, 1, 2, 3, 4, 5], []),
}


def run_toy(rollouts, advantages, world=None, **overrides):
    policy = ToyPolicy()
    cfg = make_config(max_completion_length=4, micro_batch_size=2, **{"beta": 0.0, **overrides})
    optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=0.5)  # Adam would amplify float noise
    metrics = update.grpo_update(policy, optimizer, rollouts, advantages, cfg, world)
    return policy.lora.detach().clone(), metrics


def toy_worker(rank: int, port: int, out: str):
    join(rank, port)
    dist.init_process_group("gloo")
    world = World(rank=rank, size=WORLD)
    results = {}
    try:
        rollouts = toy_rollouts(ToyPolicy())
        for name, (overrides, *shards) in CASES.items():
            mine = shards[rank]
            results[name] = run_toy([rollouts[i] for i in mine], ADVANTAGES[mine], world, **overrides)
        # A NaN on rank 1 only: both ranks skip the step and keep the initial adapter.
        broken = [SimpleNamespace(**vars(r)) for r in rollouts]
        broken[5].logprobs = torch.full_like(broken[5].logprobs, float("nan"))
        mine = [[0, 2, 4], [1, 3, 5]][rank]
        results["nan_on_rank1"] = run_toy([broken[i] for i in mine], ADVANTAGES[mine], world)
        # scale_rewards="batch": the std of the whole batch, not of this rank's half.
        rewards = torch.tensor([[0.0, 1.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 5.0]][rank])
        results["batch_advantages"] = update.batch_advantages(
            rewards, make_config(num_generations=2, scale_rewards="batch"), world)
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(out) / f"rank{rank}.pt")


def test_update_on_two_ranks_equals_one_process(tmp_path):
    spawn(toy_worker, free_port(), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    rollouts = toy_rollouts(ToyPolicy())
    for name, (overrides, *_) in CASES.items():
        single, single_metrics = run_toy(rollouts, ADVANTAGES, **overrides)
        (lora0, metrics0), (lora1, metrics1) = ranks[0][name], ranks[1][name]
        assert torch.equal(lora0, lora1), f"{name}: the ranks' adapters differ"
        assert not torch.equal(lora0, ToyPolicy().lora.detach()), f"{name}: no update happened"
        assert torch.allclose(lora0, single, atol=1e-6), f"{name}: differs from one process on the whole batch"
        assert metrics0 == metrics1
        for key, value in single_metrics.items():
            assert metrics0[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
    for rank in ranks:
        lora, metrics = rank["nan_on_rank1"]
        assert metrics["skipped_nonfinite"] == 1 and "loss" not in metrics
        assert torch.equal(lora, ToyPolicy().lora.detach())
    whole = grpo.group_advantages(torch.tensor([0.0, 1.0, 1.0, 1.0, -1.0, 0.0, 0.0, 5.0]), 2, "batch")
    got = torch.cat([ranks[0]["batch_advantages"], ranks[1]["batch_advantages"]])
    assert torch.allclose(got, whole, atol=1e-5)


# ====================================================================================== real training (slow)
TINY = dict(dataset="generated", num_generations=2, batch_size=2, micro_batch_size=4, max_completion_length=4,
            temperature=1.0, few_shot=0, sample_rows=0, eval_limit=1, eval_every=1, eval_batch_size=1,
            probe_questions=1, save_every=1, plot=False, threads=1, seed=1, learning_rate=1e-2, device="cpu",
            warmup_examples=0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A random 1-layer Llama with a 300-token byte-level BPE tokenizer, saved as a local HF folder."""
    pytest.importorskip("transformers")
    from tests.tiny_llama import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def with_signal(score_groups):
    """Real scoring + 0.5 * (position in the group): every group has mixed rewards, so updates run."""

    def scored(env, indices, sqls, group_size, workers=None):
        rewards, infos = score_groups(env, indices, sqls, group_size, workers)
        return [r + 0.5 * (k % group_size) for k, r in enumerate(rewards)], infos

    return scored


def lora_state(policy) -> dict:
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}


def train_worker(rank: int, ports: tuple[int, int], model: str, out: str):
    join(rank, ports[0])
    record = {"batches": [], "probe": False}
    grpo_train.score_groups = with_signal(grpo_train.score_groups)
    build, generate, probe = grpo_train.build_policy, grpo_train.generate_groups, grpo_train.probe_mixed_share

    def capture(cfg):
        record["policy"] = policy = build(cfg)
        record.setdefault("initial", lora_state(policy))
        return policy

    def recording(policy, env, indices, group_size, chunk, greedy=False):
        if not greedy and not record["in_probe"]:
            record["batches"].append(list(indices))
        return generate(policy, env, indices, group_size, chunk, greedy)

    def probing(*args):
        record["probe"] = record["in_probe"] = True
        try:
            return probe(*args)
        finally:
            record["in_probe"] = False

    record["in_probe"] = False
    grpo_train.build_policy, grpo_train.generate_groups = capture, recording
    grpo_train.probe_mixed_share = probing
    root = Path(out)
    # Run A: two steps on two ranks, a checkpoint after each.
    summary = grpo_train.train(make_config(model=model, steps=2, output_dir=str(root / "a"), **TINY))
    final_a = lora_state(record["policy"])
    sampling_seed = torch.initial_seed()
    # Run B: resume A's first checkpoint under the same world; its second step must be A's.
    os.environ["MASTER_PORT"] = str(ports[1])
    resumed = grpo_train.train(make_config(model=model, steps=2, output_dir=str(root / "b"),
                                           resume=str(root / "a" / "checkpoints" / "step_000001"),
                                           **{**TINY, "eval_limit": 0}))
    torch.save({"initial": record["initial"], "final_a": final_a, "final_b": lora_state(record["policy"]),
                "batches": record["batches"], "probe": record["probe"], "seed": sampling_seed,
                "summary": summary, "resumed": resumed}, root / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_ranks_train_identical_adapters_and_resume(tmp_path, tiny_model):
    spawn(train_worker, (free_port(), free_port()), tiny_model, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    r0, r1 = ranks
    # Both ranks end with the same adapter, and it moved (every LoRA tensor, after two steps).
    assert r0["final_a"].keys() == r1["final_a"].keys() and r0["final_a"]
    for name in r0["final_a"]:
        assert torch.equal(r0["final_a"][name], r1["final_a"][name]), f"{name} differs between ranks"
        assert not torch.equal(r0["final_a"][name], r0["initial"][name]), f"{name} did not change"
    # The same seeded batch on both ranks, split between them; different sampling seeds.
    from sqlenv.datasets import load_dataset

    size = len(load_dataset("generated", "train"))
    rng = np.random.default_rng(TINY["seed"])
    expected = [rollouts.sample_questions(rng, size, TINY["batch_size"]) for _ in range(2)]
    run_a = [r["batches"][:2] for r in ranks]
    assert [run_a[0][s] + run_a[1][s] for s in range(2)] == [b[0::2] + b[1::2] for b in expected]
    assert r0["seed"] != r1["seed"]
    assert r0["probe"] and not r1["probe"]  # rank 0 alone probes (and evaluates, logs, saves)
    # Resume: B's second step equals A's, on both ranks.
    assert r0["resumed"]["start_step"] == 1 and r1["batches"][2:] == run_a[1][1:]
    for rank in ranks:
        for name, value in rank["final_a"].items():
            assert torch.allclose(rank["final_b"][name], value, atol=1e-6), name
    # Rank 0's files: one metrics log with the whole batch's groups, checkpoints with both ranks' RNGs.
    records = metrics_log.read_metrics(tmp_path / "a" / "metrics.jsonl")
    train = [r for r in records if "train/reward_mean" in r]
    assert [r["step"] for r in train] == [1, 2] and all(r["train/groups_kept"] == 2 for r in train)
    assert "probe/mixed_frac" in records[0] and any("eval/accuracy" in r for r in records)
    state = torch.load(tmp_path / "a" / "checkpoints" / "step_000002" / "state.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    resumed = [r for r in metrics_log.read_metrics(tmp_path / "b" / "metrics.jsonl") if "train/reward_mean" in r]
    assert [r["step"] for r in resumed] == [2]
    for key, value in train[1].items():
        if key.startswith("train/"):
            assert resumed[0][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_torchrun_runs_the_script_and_resumes(tmp_path, tiny_model):
    run = tmp_path / "run"
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
            str(SCRIPT), "--model", tiny_model, "--device", "cpu", "--dataset", "generated",
            "--num-generations", "2", "--batch-size", "2", "--max-completion-length", "4", "--few-shot", "0",
            "--eval-limit", "1", "--probe-questions", "1", "--threads", "1", "--no-plot",
            "--output-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for steps in (1, 2):
        args = base + ["--steps", str(steps)] + (["--resume", str(run)] if steps == 2 else [])
        out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
        assert out.returncode == 0, out.stderr[-4000:]
        assert out.stdout.count("GRPO on generated") == 1, out.stdout  # rank 0 alone prints
        assert "data-parallel over 2 processes" in out.stdout
    assert "resumed from" in out.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/reward_mean" in r] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
