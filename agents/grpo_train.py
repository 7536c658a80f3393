"""Fine-tune a LoRA policy with GRPO on the Text-to-SQL environment, from execution rewards.

    python agents/grpo_train.py                        # CPU preset: SmolLM2-135M, warm-up, then G=8, 4 questions a step
    python agents/grpo_train.py --preset gpu           # bf16 on CUDA, G=8, 16 questions a step
    python agents/grpo_train.py --help                 # every option, with its meaning and default
    torchrun --nproc_per_node 4 agents/grpo_train.py --preset gpu   # data-parallel on 4 GPUs

One step, top to bottom (``train`` below):
  1. pick ``batch_size`` questions (seeded), reset the env on each to get its observation;
  2. sample G completions per question (``policy.generate``), extract the SQL;
  3. score each group through the env's group path (``env.score_group``) -> rewards, errors, matches;
  4. group-relative advantages (``agents.grpo``); optionally drop groups whose rewards are all equal;
  5. ``num_iterations`` times: log-probs with grad in micro-batches, clipped GRPO loss, backward,
     gradient clipping, AdamW step on the LoRA parameters only (a non-finite loss skips the step);
  6. log metrics to ``<output_dir>/metrics.jsonl``; every ``eval_every`` steps greedy accuracy on
     held-out questions; every ``save_every`` steps a checkpoint that ``--resume`` continues exactly.

Before the first step the untuned policy is probed on a few training questions: the share of groups
with mixed rewards is the share that will carry any learning signal (a group whose samples are all
wrong, or all right, has advantage 0). If it is near 0, GRPO cannot learn; pick another model, prompt,
temperature or reward first.

Metrics (metrics.jsonl, one object per line with "step"): probe/* (step 0: mixed_frac, accuracy,
error shares of the untuned policy); train/reward_mean, accuracy, exact, f1, error_frac, error/<kind>,
frac_zero_std, groups_kept, skipped_update, skipped_nonfinite, loss, grad_norm, clip_frac (clip_low,
clip_high), ratio_mean, adv_abs_mean, completion_len, truncated_frac, kl (only when beta > 0: the
reference pass is skipped otherwise); eval/* (greedy, held-out); perf/gen_s, score_s, update_s, step_s,
eval_s, tokens_per_s (sampled completion tokens per second of generation).

Data parallel (``torchrun``, WORLD_SIZE > 1; a plain run never touches torch.distributed): every rank
draws the same ``batch_size`` questions and takes its share (``batch[rank::world_size]``), samples
(its own seed) and scores its groups; advantages are per group, so they stay local, except that
``scale_rewards="batch"`` uses the std of the whole batch (all-reduced). After each backward pass the
LoRA gradients are summed across ranks with one all-reduce, the loss being normalised by the global
number of sequences, so every rank applies the gradient of the whole batch and all ranks keep identical
adapters. Rank 0 alone logs, probes, evaluates, plots and writes checkpoints (with every rank's RNG
state); the others wait at a barrier. Backend: nccl on CUDA (one GPU per rank, LOCAL_RANK), else gloo.
See ``World`` and docs/training.md.

What is kept from PPO/GRPO and why: see the docstring of ``agents/grpo.py``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import json
import math
import os
import random
import shutil
import sys
import textwrap
import time
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a file: make `agents` and `sqlenv` importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import grpo  # noqa: E402  (pure torch math; torch itself is imported on first use)

SCHEMAS = ("tables", "flat")
REWARDS = ("binary", "paper", "partial")
PRESET_NAMES = ("cpu", "gpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and says what to set."""


@dataclass(frozen=True)
class Config:
    # ---------------------------------------------------------------- model and policy
    model: str = "smollm2-135m"
    """Base model: "smollm2-135m", "qwen2.5-coder-0.5b", a local Hugging Face folder or a hub id."""
    device: str = "auto"
    """Torch device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ..."""
    dtype: str = "auto"
    """Weights' dtype: "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16" or "float16"."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch (keep 0 for exact resumes and ratio 1 on the first iteration)."""
    few_shot: int = 2
    """Worked examples in the prompt (0 = zero-shot)."""
    max_completion_length: int = 64
    """Most tokens sampled per completion; also the constant of the "dr_grpo" loss."""
    temperature: float = 0.8
    """Sampling temperature of the G training samples (evaluation is greedy)."""
    warmup_adapter: str | None = None
    """LoRA adapter folder to start from, e.g. runs/sft_warmup/adapter from agents/sft_warmup.py (its
    rank and alpha win over lora_r / lora_alpha); none = a fresh adapter. --resume takes precedence."""
    warmup_examples: int = 320
    """Warm-up stage before GRPO (when no warmup_adapter is given): a supervised pass of agents/sft_warmup.py
    on this many questions of the built-in generated benchmark with their own gold SQL (never the training
    dataset's SQL), written to <output_dir>/warmup/; GRPO starts from its adapter. 0 = no warm-up stage."""

    # ---------------------------------------------------------------- data and environment
    dataset: str = "temptabqa-c"
    """Benchmark; "temptabqa-c" falls back to "generated" (with a notice) when its files are absent and no
    data dir was given."""
    split: str = "train"
    """Split the policy trains on."""
    eval_split: str = "dev"
    """Held-out split for the periodic greedy evaluation."""
    data_dir: str | None = None
    """Folder holding the dataset's files (default: $SQLENV_DATA_DIR)."""
    schema: str = "flat"
    """Database layout shown to the model: "flat" (one table; easiest for a small model) or "tables"
    (the benchmark's five tables)."""
    reward: str = "binary"
    """Reward preset of the env: "binary" (-1 error / 0 wrong / 1 right), "partial" or "paper"."""
    sample_rows: int = 3
    """Rows per table shown in the observation (0 = none)."""
    workers: int = 0
    """Executor worker processes scoring a group in parallel (0 = in this process)."""

    # ---------------------------------------------------------------- GRPO
    num_generations: int = 8
    """G: completions sampled per question (a group)."""
    batch_size: int = 4
    """Questions per step (the step trains on batch_size * G completions)."""
    micro_batch_size: int = 8
    """Completions per forward/backward pass (gradients accumulate over micro-batches)."""
    num_iterations: int = 1
    """Updates per batch of rollouts (mu); above 1 the PPO ratio and clipping come into play."""
    learning_rate: float = 5e-5
    """AdamW learning rate of the LoRA parameters."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (0 = no clipping)."""
    epsilon: float = 0.2
    """Lower clip range of the ratio (1 - epsilon); also the upper one unless epsilon_high is set."""
    epsilon_high: float | None = None
    """Upper clip range of the ratio (1 + epsilon_high), e.g. 0.28 for DAPO's clip-higher; none = epsilon."""
    beta: float = 0.1
    """Weight of the k3 KL penalty to the model the run started from: the base model (adapter off), or the
    warmup_adapter's weights when given; 0 skips the reference pass."""
    scale_rewards: str = "group"
    """Advantage scaling: "group" (divide by the group's std), "batch" (by the batch's std) or "none"."""
    loss_type: str = "dr_grpo"
    """Aggregation: "grpo" (token mean per sequence, then mean) or "dr_grpo" (token sum / (N * max_completion_length))."""
    skip_zero_std: bool = True
    """Dynamic filtering: leave groups whose rewards are all equal out of the update (they have advantage 0)."""

    # ---------------------------------------------------------------- loop, evaluation, checkpoints
    steps: int = 20
    """Optimizer steps (batches of rollouts) to train for, counting those of a resumed run."""
    eval_every: int = 10
    """Greedy evaluation on the eval split every this many steps (0 = only at the end)."""
    eval_limit: int = 20
    """Eval questions (a fixed seeded sample, the same for every run; 0 = skip evaluation)."""
    eval_batch_size: int = 8
    """Questions per greedy generation call during evaluation."""
    probe_questions: int = 8
    """Training questions on which the untuned policy's share of mixed-reward groups is measured (0 = skip)."""
    save_every: int = 10
    """Checkpoint (adapter + optimizer + RNG + step) every this many steps (0 = only at the end)."""
    output_dir: str = ""
    """Run folder (metrics.jsonl, checkpoints/, curves.png); default runs/grpo__<dataset>__<seed>__<time>,
    or the resumed run's folder."""
    resume: str | None = None
    """Checkpoint folder to continue from, or a run folder (its latest checkpoint)."""
    seed: int = 0
    """Seed of question sampling, LoRA initialisation and token sampling."""
    threads: int | None = 1
    """Torch CPU threads (none = torch's choice). 1 by default: on a shared 2-core machine 2 threads
    sampled up to 40x slower than 1 whenever another process was busy."""
    plot: bool = True
    """Write curves.png (matplotlib) at the end."""
    preset: str = "cpu"
    """Defaults for a machine: "cpu" (the values above) or "gpu" (bf16 on CUDA, G=8, 16 questions a step,
    longer completions, a larger eval); flags given explicitly win over the preset."""

    def __post_init__(self):
        for name, choices in (("schema", SCHEMAS), ("reward", REWARDS), ("preset", PRESET_NAMES),
                              ("dtype", DTYPES), ("scale_rewards", grpo.SCALE_REWARDS),
                              ("loss_type", grpo.LOSS_TYPES)):
            if getattr(self, name) not in choices:
                _bad(name, getattr(self, name), f"must be one of {', '.join(choices)}")
        for name in ("lora_r", "lora_alpha", "max_completion_length", "batch_size", "micro_batch_size",
                     "num_iterations", "steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                _bad(name, getattr(self, name), "must be >= 1")
        for name in ("few_shot", "warmup_examples", "sample_rows", "workers", "eval_every", "eval_limit", "save_every",
                     "probe_questions", "learning_rate", "weight_decay", "max_grad_norm", "beta"):
            if getattr(self, name) < 0:
                _bad(name, getattr(self, name), "must be >= 0")
        if self.num_generations < 2:
            _bad("num_generations", self.num_generations,
                 "must be >= 2: GRPO compares samples of the same question")
        if not 0 < self.epsilon < 1:
            _bad("epsilon", self.epsilon, "must be in (0, 1)")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            _bad("epsilon_high", self.epsilon_high, "must be > 0 (or none)")
        if not self.temperature > 0:
            _bad("temperature", self.temperature, "must be > 0 (evaluation is already greedy)")
        if not 0 <= self.lora_dropout < 1:
            _bad("lora_dropout", self.lora_dropout, "must be in [0, 1)")
        if self.threads is not None and self.threads < 1:
            _bad("threads", self.threads, "must be >= 1 (or none)")
        if not self.dataset:
            _bad("dataset", self.dataset, "must name a dataset, e.g. temptabqa-c or generated")


def _bad(name: str, value: Any, what: str):
    raise ConfigError(f"{name}={value!r} (--{name.replace('_', '-')}) {what}")


PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": dict(device="cuda", dtype="bfloat16", num_generations=8, batch_size=16, micro_batch_size=32,
                max_completion_length=128, learning_rate=5e-5, steps=200, eval_every=25, save_every=25,
                eval_limit=200, eval_batch_size=32, probe_questions=32, threads=None),
}


# ====================================================================================== CLI
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (as CleanRL/tyro read them), joined to one line."""
    docs: dict[str, str] = {}
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _converter(tp: Any, name: str):
    """argparse type for a field annotation: int, float, str, or X | None ("none" -> None)."""
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if args else tp

    def convert(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} expects {base.__name__}, got {text!r}") from None

    convert.__name__ = base.__name__  # argparse's "invalid <name> value" message
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python agents/grpo_train.py",
        usage="%(prog)s [options]   (--help lists every option)",
        description=__doc__.split("\n\n")[0],
    )
    docs = field_docs(Config)
    hints = typing.get_type_hints(Config)
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = docs.get(f.name, "")
        overrides = {p: v[f.name] for p, v in PRESETS.items() if f.name in v}
        if overrides:
            help_text += " [" + "; ".join(f"{p} preset: {v}" for p, v in overrides.items()) + "]"
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text + f" (default: {f.default})")
        else:
            parser.add_argument(flag, dest=f.name, type=_converter(hints[f.name], f.name),
                                default=argparse.SUPPRESS, metavar=f.name.upper(),
                                help=help_text + f" (default: {f.default})")
    return parser


def make_config(preset: str = "cpu", **overrides: Any) -> Config:
    """A Config from a preset's defaults and explicit values (explicit wins)."""
    if preset not in PRESETS:
        _bad("preset", preset, f"must be one of {', '.join(PRESETS)}")
    return Config(**{**PRESETS[preset], **overrides, "preset": preset})


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """CLI -> Config; an invalid value exits with status 2 and a message naming the field."""
    parser = build_parser()
    explicit = vars(parser.parse_args(argv))
    try:
        return make_config(**explicit)
    except ConfigError as error:
        parser.error(str(error))


# ====================================================================================== data
def resolve_dataset(cfg: Config) -> str:
    """The dataset to train on: TempTabQA-C when its files are found, else the generated benchmark."""
    if cfg.dataset != "temptabqa-c" or cfg.data_dir:
        return cfg.dataset
    from sqlenv.datasets.base import DatasetError, resolve_data_dir

    try:
        resolve_data_dir(None, cfg.dataset)
        return cfg.dataset
    except DatasetError as error:
        print(f"notice: {error}.\nnotice: TempTabQA-C not found; training on the built-in 'generated' "
              "dataset instead (pass --data-dir or set SQLENV_DATA_DIR to use TempTabQA-C).", flush=True)
        return "generated"


def make_env(cfg: Config, dataset: str, split: str):
    from sqlenv.env import TextToSQLEnv

    return TextToSQLEnv(dataset=dataset, split=split, data_dir=cfg.data_dir, reward=cfg.reward,
                        schema=cfg.schema, sample_rows=cfg.sample_rows, workers=cfg.workers)


def observations(env, indices: Sequence[int]) -> list[dict]:
    """Each question's observation, through the env's own reset (pinning the question)."""
    return [env.reset(options={"index": int(i)})[0] for i in indices]


def score_groups(env, indices: Sequence[int], sqls: Sequence[str], group_size: int,
                 workers: int | None = None) -> tuple[list[float], list[dict]]:
    """Score len(indices) groups of group_size SQL strings (grouped by question) via env.score_group."""
    assert len(sqls) == len(indices) * group_size, (len(sqls), len(indices), group_size)
    rewards: list[float] = []
    infos: list[dict] = []
    for k, index in enumerate(indices):
        env.reset(options={"index": int(index)})
        for reward, info in env.score_group(list(sqls[k * group_size:(k + 1) * group_size]), workers=workers):
            rewards.append(float(reward))
            infos.append(info)
    return rewards, infos


def error_kinds() -> tuple[str, ...]:
    try:
        from sqlenv.executor import ERROR_KINDS
    except ImportError:  # pragma: no cover - the executor is part of the package
        return ()
    return tuple(ERROR_KINDS)


def outcome_metrics(prefix: str, rewards: Sequence[float], infos: Sequence[dict]) -> dict[str, float]:
    """Reward, accuracy and error shares of scored samples, under ``prefix/`` (one key per error kind)."""
    n = max(len(infos), 1)
    out = {
        f"{prefix}/reward_mean": float(np.mean(rewards)) if rewards else 0.0,
        f"{prefix}/reward_std": float(np.std(rewards)) if rewards else 0.0,
        f"{prefix}/accuracy": sum(bool(i["correct"]) for i in infos) / n,
        f"{prefix}/exact": sum(float(i.get("exact", 0.0)) for i in infos) / n,
        f"{prefix}/f1": sum(float(i.get("f1", 0.0)) for i in infos) / n,
        f"{prefix}/error_frac": sum(i["error"] is not None for i in infos) / n,
    }
    kinds = list(error_kinds()) + sorted({i["error"] for i in infos if i["error"]} - set(error_kinds()))
    for kind in kinds:
        out[f"{prefix}/error/{kind}"] = sum(i["error"] == kind for i in infos) / n
    return out


# ====================================================================================== rollouts
def sample_questions(rng: np.random.Generator, num_questions: int, batch_size: int) -> list[int]:
    """batch_size distinct question indices (all of them, shuffled, when there are fewer)."""
    return [int(i) for i in rng.choice(num_questions, size=min(batch_size, num_questions), replace=False)]


def generate_groups(policy, env, indices: Sequence[int], group_size: int, chunk: int,
                    greedy: bool = False) -> list:
    """Rollouts for each question (group_size each, grouped by question), chunk questions per call."""
    rollouts = []
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        prompts = [policy.prompt(obs) for obs in observations(env, part)]
        rollouts += policy.generate(prompts, group_size, greedy=greedy)
    return rollouts


def probe_mixed_share(policy, env, indices: Sequence[int], cfg: Config) -> dict[str, float]:
    """Share of groups with mixed rewards for the current policy: the groups GRPO can learn from."""
    rollouts = generate_groups(policy, env, indices, cfg.num_generations, cfg.batch_size)
    rewards, infos = score_groups(env, indices, [r.sql for r in rollouts], cfg.num_generations)
    metrics = outcome_metrics("probe", rewards, infos)
    metrics["probe/mixed_frac"] = 1.0 - grpo.frac_zero_std(_tensor(rewards), cfg.num_generations)
    metrics["probe/questions"] = len(indices)
    return metrics


def evaluate(policy, env, indices: Sequence[int], cfg: Config) -> dict[str, float]:
    """Greedy accuracy, reward and error shares on held-out questions (one sample each)."""
    if not indices:
        return {}
    start = time.perf_counter()
    rollouts = generate_groups(policy, env, indices, 1, cfg.eval_batch_size, greedy=True)
    rewards, infos = score_groups(env, indices, [r.sql for r in rollouts], 1)
    metrics = outcome_metrics("eval", rewards, infos)
    metrics["eval/completion_len"] = float(np.mean([len(r.completion_ids) for r in rollouts]))
    metrics["eval/questions"] = len(indices)
    metrics["perf/eval_s"] = time.perf_counter() - start
    return metrics


# ====================================================================================== update
def _tensor(values, dtype=None):
    import torch

    return torch.as_tensor(values, dtype=dtype or torch.float32)


def pad_right(seqs: Sequence, length: int, value: float = 0.0, device=None):
    """Stack 1-D tensors into [N, length], right-padded with value (truncated when longer)."""
    import torch

    out = torch.full((len(seqs), length), value, dtype=torch.float32, device=device)
    for row, seq in enumerate(seqs):
        seq = torch.as_tensor(seq, dtype=torch.float32).flatten()[:length]
        out[row, :seq.numel()] = seq.to(device)
    return out


def _logprobs_no_grad(policy, rollouts, chunks, disable_adapter: bool = False, weights=None) -> list:
    """Per-rollout 1-D log-probs without grad: under the current policy, the base model
    (``disable_adapter``) or the adapter with ``weights`` (one tensor per trainable parameter)."""
    import torch

    out = []
    with torch.no_grad(), swapped_adapter(policy, weights):
        for chunk in chunks:
            logp, mask = policy.sequence_logprobs([rollouts[i].prompt_ids for i in chunk],
                                                  [rollouts[i].completion_ids for i in chunk],
                                                  disable_adapter=disable_adapter)
            for row in range(len(chunk)):
                out.append(logp[row][mask[row].bool()].detach().float().cpu())
    return out


@contextlib.contextmanager
def swapped_adapter(policy, weights):
    """Temporarily give the trainable LoRA parameters ``weights`` (None: leave them); restored exactly."""
    if weights is None:
        yield
        return
    import torch

    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    if len(params) != len(weights) or any(p.shape != w.shape for p, w in zip(params, weights)):
        raise ValueError("reference weights do not match the policy's adapter")
    with torch.no_grad():
        current = [p.detach().clone() for p in params]
        for p, w in zip(params, weights):
            p.copy_(w)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, c in zip(params, current):
                p.copy_(c)


def reference_weights(policy, cfg: Config):
    """The KL reference as adapter weights: a copy of the warm-start adapter, or None when the run
    starts from a fresh adapter (its B matrices are 0, so the reference is the base model: adapter off)."""
    if cfg.beta <= 0 or not cfg.warmup_adapter:
        return None
    return [p.detach().clone() for p in policy.trainable_parameters() if p.requires_grad]


UPDATE_METRICS = ("clip_frac", "clip_low", "clip_high", "ratio_mean")  # from grpo.grpo_loss (+ "kl")


def grpo_update(policy, optimizer, rollouts: Sequence, advantages, cfg: Config,
                world: World | None = None, reference=None) -> dict[str, float]:
    """num_iterations optimizer steps on these rollouts; returns averaged metrics.

    old log-probs: the sampling ones when the rollouts are used once (num_iterations == 1), else one
    no-grad pass before the first update. Reference log-probs only when beta > 0: the adapter off, or
    the adapter with the ``reference`` weights (``reference_weights``: the model the run started from).
    A non-finite loss or gradient norm skips that optimizer step (counted in "skipped_nonfinite").

    With a distributed ``world`` every rank calls this (with its own rollouts, possibly none): the
    loss is normalised by the number of sequences on all ranks, the gradients are summed across
    ranks before clipping (so each rank steps with the gradient of the whole batch), a non-finite
    loss on any rank skips the step on all of them, and the returned metrics are global.
    """
    import torch

    distributed = world is not None and world.distributed
    n = len(rollouts)
    total = int(world.sum([n])[0]) if distributed else n
    # a micro-batch holds whole groups when it can: a group's prompt then runs once (policy.sequence_logprobs)
    size = cfg.micro_batch_size
    if size >= cfg.num_generations and n % cfg.num_generations == 0:
        size -= size % cfg.num_generations
    chunks = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    if cfg.num_iterations == 1:
        old = [r.logprobs for r in rollouts]
    else:
        old = _logprobs_no_grad(policy, rollouts, chunks)
    ref = (_logprobs_no_grad(policy, rollouts, chunks, disable_adapter=reference is None, weights=reference)
           if cfg.beta > 0 else None)
    advantages = _tensor(advantages)

    totals: dict[str, float] = {}
    weight_total = 0.0
    skipped = 0
    for _ in range(cfg.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        finite = True
        loss_sum = 0.0
        for chunk in chunks:
            logp, mask = policy.sequence_logprobs([rollouts[i].prompt_ids for i in chunk],
                                                  [rollouts[i].completion_ids for i in chunk])
            logp = logp.float()
            length = logp.shape[1]
            old_logp = pad_right([old[i] for i in chunk], length, device=logp.device)
            ref_logp = None if ref is None else pad_right([ref[i] for i in chunk], length, device=logp.device)
            loss, metrics = grpo.grpo_loss(
                logp, old_logp, advantages[chunk].to(logp.device), mask, ref_logp=ref_logp, beta=cfg.beta,
                epsilon_low=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
                max_completion_length=cfg.max_completion_length, num_sequences=total)
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            loss_sum += float(loss.detach())
            tokens = float(mask.sum())
            weight_total += tokens
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value * tokens
        if distributed:  # one all-reduce: the summed gradients, any rank's non-finite flag, the loss
            finite, loss_sum = world.reduce_gradients(params, finite, loss_sum)
        grad_norm = float("nan")
        if finite:
            if cfg.max_grad_norm > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            else:
                grad_norm = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))
            finite = math.isfinite(grad_norm)
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            continue
        optimizer.step()
        totals["loss"] = totals.get("loss", 0.0) + loss_sum
        totals["grad_norm"] = totals.get("grad_norm", 0.0) + grad_norm
    if distributed:  # token-weighted metric sums of all ranks (loss and grad_norm are global already)
        keys = UPDATE_METRICS + (("kl",) if cfg.beta > 0 else ())
        sums = world.sum([weight_total] + [totals.get(key, 0.0) for key in keys])
        weight_total = sums[0]
        totals.update(zip(keys, sums[1:]))
    done = cfg.num_iterations - skipped
    out = {key: value / max(weight_total, 1.0) for key, value in totals.items()
           if key not in ("loss", "grad_norm")}
    if done:
        out["loss"] = totals["loss"] / done
        out["grad_norm"] = totals["grad_norm"] / done
    out["skipped_nonfinite"] = skipped
    return out


# ====================================================================================== data parallel
DIST_TIMEOUT_S = 3600  # how long ranks wait at a collective (rank 0 may be evaluating or saving)
BATCH_STD_EPS = 1e-4  # as grpo.group_advantages' eps


@dataclass
class World:
    """This process's place in a data-parallel run; rank 0 of 1 (no torch.distributed) when run plainly.

    Every collective is a method here, and each one is a no-op (or the identity) in a plain run, so the
    training loop reads the same either way. ``device`` is the device of this rank's policy ("cuda:<local
    rank>" under torchrun on GPUs), ``comm_device`` where collective tensors live (nccl needs CUDA).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str | None = None
    comm_device: str = "cpu"
    initialised: bool = False  # this process called init_process_group (and destroys it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence) -> list:
        """This rank's share of a list that is the same on every rank (strided: rank, rank + size, ...)."""
        return list(items[self.rank::self.size]) if self.distributed else list(items)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj: Any) -> list:
        """Every rank's (picklable) object, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def on_main(self, fn):
        """Run ``fn`` on rank 0 only and hand its result to every rank; its error is raised on every rank."""
        if not self.distributed:
            return fn()
        import torch.distributed as dist

        result = error = None
        if self.main:
            try:
                result = fn()
            except Exception as exc:  # re-raised below, on every rank, after the broadcast
                error = exc
        box = [(result, None if error is None else (isinstance(error, ConfigError), str(error)))]
        dist.broadcast_object_list(box, src=0)
        result, failure = box[0]
        if error is not None:
            raise error
        if failure is not None:
            raise (ConfigError if failure[0] else RuntimeError)(failure[1] if failure[0] else
                                                                f"rank 0 failed: {failure[1]}")
        return result

    def broadcast_parameters(self, params: Sequence):
        """Copy rank 0's values of ``params`` to every rank (as DDP does when it wraps a model)."""
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for param in params:
                buffer = param.data.to(self.comm_device)
                dist.broadcast(buffer, src=0)
                if buffer is not param.data:
                    param.data.copy_(buffer)

    def reduce_gradients(self, params: Sequence, finite: bool, loss_sum: float) -> tuple[bool, float]:
        """Sum the gradients of ``params`` over ranks in place (one flat float32 all-reduce).

        A rank without gradients (no rollouts kept, or a non-finite loss) contributes zeros. Returns
        (every rank was finite, the summed loss); when some rank was not, the gradients are left as
        they are and the caller skips the step, on every rank alike.
        """
        import torch
        import torch.distributed as dist

        sizes = [p.numel() for p in params]
        flat = torch.zeros(sum(sizes) + 2, dtype=torch.float32, device=self.comm_device)
        offset = 0
        for param, size in zip(params, sizes):
            if finite and param.grad is not None:
                flat[offset:offset + size] = param.grad.detach().reshape(-1).to(flat.device, torch.float32)
            offset += size
        flat[-2] = 0.0 if finite else 1.0
        flat[-1] = loss_sum if finite else 0.0
        dist.all_reduce(flat)
        if float(flat[-2]) > 0:
            return False, float("nan")
        offset = 0
        for param, size in zip(params, sizes):
            grad = flat[offset:offset + size].view_as(param).to(param.device, param.dtype)
            if param.grad is None:
                param.grad = grad.clone()
            else:
                param.grad.copy_(grad)
            offset += size
        return True, float(flat[-1])


def setup_world(cfg: Config) -> World:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU); else World()."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    import datetime

    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = cfg.device
    if device in ("auto", "cuda"):
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu" if device == "auto" else device
    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(torch.device(device))
    initialised = False
    if not dist.is_initialized():
        kwargs = {}
        if on_cuda and "device_id" in inspect.signature(dist.init_process_group).parameters:
            kwargs["device_id"] = torch.device(device)  # binds NCCL to this rank's GPU (torch >= 2.3)
        dist.init_process_group("nccl" if on_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=DIST_TIMEOUT_S), **kwargs)
        initialised = True
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, device=device,
                 comm_device=device if on_cuda else "cpu", initialised=initialised)


def teardown_world(world: World):
    if world.initialised:
        import torch.distributed as dist

        dist.destroy_process_group()


def seed_rank(seed: int, world: World, step: int = 0):
    """Give ranks other than 0 their own token-sampling streams (rank 0 keeps the plain run's)."""
    if world.rank == 0:
        return
    import torch

    python_seed, torch_seed = np.random.SeedSequence([seed, world.rank, step]).generate_state(2)
    random.seed(int(python_seed))
    torch.manual_seed(int(torch_seed))


def batch_advantages(rewards, cfg: Config, world: World):
    """``grpo.group_advantages``; with several ranks and scale_rewards="batch" the std is the whole batch's."""
    if not (world.distributed and cfg.scale_rewards == "batch"):
        return grpo.group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)
    count, total, squares = world.sum([rewards.numel(), float(rewards.double().sum()),
                                       float((rewards.double() ** 2).sum())])
    variance = (squares - total * total / count) / (count - 1) if count > 1 else 0.0
    std = math.sqrt(max(variance, 0.0))
    return grpo.group_advantages(rewards, cfg.num_generations, "none") / (std + BATCH_STD_EPS)


def rng_state(world: World) -> dict:
    """This process's token-sampling RNG states (saved per rank in a distributed checkpoint)."""
    import torch

    on_cuda = str(world.device or "").startswith("cuda")
    return {"python_rng": random.getstate(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if on_cuda else None}


# ====================================================================================== checkpoints
def save_checkpoint(path: Path, policy, optimizer, step: int, rng: np.random.Generator, cfg: Config,
                    rank_rng: list[dict] | None = None):
    """adapter/ (PEFT format) + state.pt (optimizer, RNG states, step, config), written atomically.

    ``rank_rng``: every rank's ``rng_state()`` in a distributed run (the top-level RNG states are then
    rank 0's, so a plain run can resume a distributed checkpoint).
    """
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.save(tmp / "adapter")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "config": asdict(cfg),
    }
    if rank_rng is not None:
        state.update(world_size=len(rank_rng), rank_rng=rank_rng)
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or the latest one under <run>/checkpoints/."""
    path = Path(path)
    if (path / "state.pt").is_file():
        return path
    candidates = sorted((path / "checkpoints").glob("step_*[0-9]"))
    candidates = [c for c in candidates if (c / "state.pt").is_file()]
    if not candidates:
        raise ConfigError(f"resume={str(path)!r} (--resume) holds no checkpoint (state.pt, or "
                          "checkpoints/step_*/state.pt)")
    return candidates[-1]


def load_checkpoint(path: Path, policy, cfg: Config) -> dict:
    """Load the adapter into the policy and return the trainer state (restore RNGs after building)."""
    import torch

    state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
    saved = state.get("config", {})
    for name in ("model", "lora_r", "lora_alpha"):
        if name in saved and saved[name] != getattr(cfg, name):
            _bad(name, getattr(cfg, name), f"differs from the checkpoint's {saved[name]!r}; resume with the same value")
    policy.load(Path(path) / "adapter")
    return state


def restore_rng(state: dict, rng: np.random.Generator, world: World | None = None, seed: int = 0):
    """Restore the question RNG (shared by all ranks) and this process's token-sampling RNGs.

    Distributed: each rank takes its own saved state when the checkpoint has one per rank of this
    world size; otherwise rank 0 takes the top-level one and the others get fresh streams.
    """
    import torch

    rng.bit_generator.state = state["numpy_rng"]
    if world is not None and world.distributed:
        ranks = state.get("rank_rng")
        if ranks and len(ranks) == world.size:
            mine = ranks[world.rank]
            random.setstate(mine["python_rng"])
            torch.set_rng_state(mine["torch_rng"])
            if mine.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(mine["cuda_rng"])
            return
        if not world.main:
            seed_rank(seed, world, int(state["step"]))
            return
    random.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


# ====================================================================================== logging
class JsonlLogger:
    """One JSON object per line: {"step": n, "train/...": ...}; flushed every line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]):
        record = {"step": step, "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def _jsonable(value: Any):
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def truncate_metrics(path: Path, step: int):
    """Drop the records logged after ``step`` (resuming a run that had gone on past its checkpoint)."""
    path = Path(path)
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


PLOTS = (("train/reward_mean", "eval/reward_mean"), ("train/accuracy", "eval/accuracy"),
         ("train/error_frac", "eval/error_frac"), ("train/frac_zero_std",), ("train/loss",),
         ("train/completion_len",), ("train/kl",), ("train/clip_frac",))


SMOOTH = 5  # steps in the running mean drawn over each training curve


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """Training curves (one panel per metric family) from metrics.jsonl to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    panels = [keys for keys in PLOTS if any(k in r and r[k] is not None for r in records for k in keys)]
    if not panels:
        return None
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, keys in zip(axes.flat, panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                if key.startswith("eval/") or len(ys) < 2 * SMOOTH:
                    ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, markersize=3, label=key)
                else:  # a step sees a few questions: the raw line is noise, its running mean the trend
                    line, = ax.plot(xs, ys, alpha=0.3, linewidth=0.8)
                    ax.plot(xs, running_mean(ys, SMOOTH), color=line.get_color(),
                            label=f"{key} ({SMOOTH}-step mean)")
        ax.set_title(keys[0].split("/", 1)[1])
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


# ====================================================================================== the loop
def default_output_dir(cfg: Config, dataset: str) -> Path:
    return Path("runs") / f"grpo__{dataset}__{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def build_policy(cfg: Config):
    from agents.policy import LoRAPolicy, PolicyConfig

    return LoRAPolicy(PolicyConfig(
        model=cfg.model, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        device=cfg.device, dtype=cfg.dtype, threads=cfg.threads, few_shot=cfg.few_shot,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
        adapter=cfg.warmup_adapter))


def run_warmup(cfg: Config, out: Path) -> str:
    """The warm-up stage: ``agents/sft_warmup.py`` on ``cfg.warmup_examples`` generated questions, into
    ``<out>/warmup/``; returns its adapter folder (an existing one is reused, as on --resume)."""
    from agents import sft_warmup

    folder = out / "warmup"
    adapter = folder / "adapter"
    if not (adapter / "adapter_config.json").exists():
        print(f"warm-up stage: supervised pass on {cfg.warmup_examples} generated questions -> {folder}",
              flush=True)
        sft_warmup.train(sft_warmup.Config(
            model=cfg.model, device=cfg.device, schema=cfg.schema, few_shot=cfg.few_shot,
            examples=cfg.warmup_examples, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, threads=cfg.threads,
            max_completion_length=cfg.max_completion_length, seed=cfg.seed, output_dir=str(folder)))
    return str(adapter)


def train(cfg: Config) -> dict[str, Any]:
    """Run GRPO as configured; returns a summary (output_dir, last step, final eval metrics).

    Under torchrun (WORLD_SIZE > 1) this joins the process group first and leaves it at the end.
    """
    world = setup_world(cfg)
    try:
        return _train(cfg, world)
    finally:
        teardown_world(world)


def _train(cfg: Config, world: World) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    main = world.main

    def say(text: str):
        if main:
            print(text, flush=True)

    # ---- setup: seeds, data, env, policy, optimizer, output folder (folders and files: rank 0 only)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the same on every rank: the same LoRA initialisation
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    checkpoint = world.on_main(lambda: find_checkpoint(cfg.resume)) if cfg.resume else None
    dataset = world.on_main(lambda: resolve_dataset(cfg))

    def make_output_dir() -> Path:
        if cfg.output_dir:
            out = Path(cfg.output_dir)
        elif checkpoint is not None:
            out = checkpoint.parent.parent
        else:
            out = default_output_dir(cfg, dataset)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        return out

    out = world.on_main(make_output_dir)
    if cfg.warmup_examples and not cfg.warmup_adapter:  # the warm-up stage (rank 0; reused on --resume)
        cfg = replace(cfg, warmup_adapter=world.on_main(lambda: run_warmup(cfg, out)))
        torch.manual_seed(cfg.seed)
    world.on_main(lambda: (out / "config.json").write_text(
        json.dumps({**asdict(cfg), "resolved_dataset": dataset}, indent=2)))

    env = make_env(cfg, dataset, cfg.split)
    evaluating = bool(cfg.eval_limit)
    eval_env = make_env(cfg, dataset, cfg.eval_split) if evaluating and main else None
    eval_indices = ([] if eval_env is None else
                    sorted(np.random.default_rng(0).permutation(len(eval_env.dataset))[:cfg.eval_limit].tolist()))
    policy = build_policy(cfg if world.device in (None, cfg.device) else replace(cfg, device=world.device))
    reference = reference_weights(policy, cfg)  # taken before a resume overwrites the adapter
    rng = np.random.default_rng(cfg.seed)  # question sampling: the same stream on every rank
    start_step = 0
    state = (world.on_main(lambda: load_checkpoint(checkpoint, policy, cfg))
             if checkpoint is not None else None)
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    world.broadcast_parameters(params)  # every rank starts from rank 0's adapter (fresh or resumed)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if state is not None and main:  # records past the checkpoint belong to the abandoned continuation
        truncate_metrics(out / "metrics.jsonl", int(state["step"]))
    logger = JsonlLogger(out / "metrics.jsonl") if main else None
    ranks = (f", data-parallel over {world.size} processes ({world.device or cfg.device})"
             if world.distributed else "")
    say(f"GRPO on {dataset}/{cfg.split} ({len(env.dataset)} questions), {cfg.model}, "
        f"{sum(p.numel() for p in params):,} trainable LoRA parameters{ranks} -> {out}")
    if world.distributed and cfg.batch_size % world.size:
        say(f"notice: batch_size={cfg.batch_size} is not a multiple of {world.size} processes; "
            "some ranks get one question fewer each step")

    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state, rng, world, cfg.seed)
        start_step = int(state["step"])
        say(f"resumed from {checkpoint} at step {start_step}")
    else:
        seed_rank(cfg.seed, world)  # ranks sample different completions of their own questions
        if cfg.probe_questions:
            # ---- before training: can GRPO learn at all? (groups with mixed rewards carry the signal)
            if main:
                probe_rng = np.random.default_rng(cfg.seed + 1)
                probe = probe_mixed_share(policy, env, sample_questions(probe_rng, len(env.dataset),
                                                                        cfg.probe_questions), cfg)
                logger.log(0, probe)
                print(f"starting policy: {probe['probe/mixed_frac']:.0%} of {probe['probe/questions']} groups "
                      f"have mixed rewards (accuracy {probe['probe/accuracy']:.1%}, errors "
                      f"{probe['probe/error_frac']:.1%})", flush=True)
                if probe["probe/mixed_frac"] == 0:
                    print("warning: no group had mixed rewards; GRPO gets no signal from such batches", flush=True)
            world.barrier()

    def save(step: int) -> Path:
        rank_rng = world.gather(rng_state(world)) if world.distributed else None
        return world.on_main(lambda: save_checkpoint(out / "checkpoints" / f"step_{step:06d}", policy,
                                                     optimizer, step, rng, cfg, rank_rng=rank_rng))

    summary: dict[str, Any] = {"output_dir": str(out), "dataset": dataset, "start_step": start_step}
    eval_metrics: dict[str, float] = {}
    if evaluating and checkpoint is None and cfg.eval_every:
        # ---- the starting point of the curves: the untuned policy on the held-out questions
        if main:
            eval_metrics = evaluate(policy, eval_env, eval_indices, cfg)
            logger.log(0, eval_metrics)
            print(f"step 0: eval accuracy {eval_metrics['eval/accuracy']:.1%}, "
                  f"errors {eval_metrics['eval/error_frac']:.1%}", flush=True)
        world.barrier()
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="grpo",
               dynamic_ncols=True, disable=not main)
    for step in bar:
        step_start = time.perf_counter()
        # ---- 1-2. questions (the same batch on every rank; each takes its share) -> G samples each
        indices = world.shard(sample_questions(rng, len(env.dataset), cfg.batch_size))
        t0 = time.perf_counter()
        rollouts = generate_groups(policy, env, indices, cfg.num_generations, cfg.batch_size)
        gen_s = time.perf_counter() - t0
        # ---- 3. execute and score each group through the env
        t0 = time.perf_counter()
        rewards, infos = score_groups(env, indices, [r.sql for r in rollouts], cfg.num_generations)
        score_s = time.perf_counter() - t0
        # ---- 4. group-relative advantages; dynamic filtering of groups without signal
        rewards_t = _tensor(rewards)
        advantages = batch_advantages(rewards_t, cfg, world)
        zero = grpo.zero_std_mask(rewards_t, cfg.num_generations)
        keep_groups = ~zero if cfg.skip_zero_std else torch.ones_like(zero)
        keep = keep_groups.repeat_interleave(cfg.num_generations).tolist()
        kept = [r for r, k in zip(rollouts, keep) if k]
        kept_total = int(world.sum([len(kept)])[0]) if world.distributed else len(kept)
        # ---- 5. the update (every rank joins it while any rank kept a group)
        t0 = time.perf_counter()
        update = (grpo_update(policy, optimizer, kept, advantages[torch.tensor(keep, dtype=torch.bool)], cfg,
                              world, reference) if kept_total else {})
        update_s = time.perf_counter() - t0

        # ---- 6. metrics (of the whole batch: gathered from every rank), evaluation, checkpoint
        lengths = [len(r.completion_ids) for r in rollouts]
        if world.distributed:
            parts = world.gather(dict(
                rewards=rewards, lengths=lengths, zero=zero.tolist(), advantages=advantages.tolist(),
                infos=[{k: i.get(k) for k in ("correct", "exact", "f1", "error")} for i in infos],
                gen_s=gen_s, score_s=score_s, update_s=update_s))
            rewards = [x for part in parts for x in part["rewards"]]
            infos = [x for part in parts for x in part["infos"]]
            lengths = [x for part in parts for x in part["lengths"]]
            zero = torch.tensor([x for part in parts for x in part["zero"]], dtype=torch.bool)
            keep_groups = ~zero if cfg.skip_zero_std else torch.ones_like(zero)
            advantages = _tensor([x for part in parts for x in part["advantages"]])
            gen_s, score_s, update_s = (max(part[key] for part in parts) for key in ("gen_s", "score_s", "update_s"))
        done = step + 1
        if main:
            metrics = outcome_metrics("train", rewards, infos)
            metrics.update({f"train/{k}": v for k, v in update.items()})
            metrics.update({
                "train/frac_zero_std": float(zero.float().mean()) if zero.numel() else 0.0,
                "train/groups_kept": int(keep_groups.sum()),
                "train/skipped_update": int(not kept_total),
                "train/adv_abs_mean": float(advantages.abs().mean()) if advantages.numel() else 0.0,
                "train/completion_len": float(np.mean(lengths)),
                "train/truncated_frac": float(np.mean([n >= cfg.max_completion_length for n in lengths])),
                "perf/gen_s": gen_s, "perf/score_s": score_s, "perf/update_s": update_s,
                "perf/tokens_per_s": sum(lengths) / max(gen_s, 1e-9),
            })
            if update.get("skipped_nonfinite"):
                tqdm.write(f"step {step + 1}: non-finite loss or gradient, skipped "
                           f"{update['skipped_nonfinite']}/{cfg.num_iterations} optimizer step(s)")
        if evaluating and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            if main:
                eval_metrics = evaluate(policy, eval_env, eval_indices, cfg)
                metrics.update(eval_metrics)
                tqdm.write(f"step {done}: eval accuracy {eval_metrics['eval/accuracy']:.1%}, "
                           f"errors {eval_metrics['eval/error_frac']:.1%}")
            world.barrier()
        if main:
            metrics["perf/step_s"] = time.perf_counter() - step_start
            logger.log(done, metrics)
            bar.set_postfix(reward=f"{metrics['train/reward_mean']:.2f}", acc=f"{metrics['train/accuracy']:.2f}",
                            mixed=f"{1 - metrics['train/frac_zero_std']:.2f}")
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            save(done)
    bar.close()

    # ---- the end: final checkpoint, final evaluation, curves (rank 0; the others wait)
    last = max(cfg.steps, start_step)
    summary["checkpoint"] = str(save(last))
    if main:
        if eval_env is not None:
            eval_metrics = evaluate(policy, eval_env, eval_indices, cfg)
            logger.log(last, eval_metrics)
            print(f"final eval on {len(eval_indices)} {cfg.eval_split} questions: accuracy "
                  f"{eval_metrics['eval/accuracy']:.1%}, errors {eval_metrics['eval/error_frac']:.1%}", flush=True)
        logger.close()
        if cfg.plot:
            png = plot_curves(out / "metrics.jsonl", out / "curves.png")
            if png:
                print(f"curves: {png}", flush=True)
    env.close()
    if eval_env is not None:
        eval_env.close()
    world.barrier()
    summary.update(step=last, eval=eval_metrics)
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return train(parse_config(argv))


if __name__ == "__main__":
    main()
