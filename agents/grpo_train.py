"""Fine-tune a LoRA policy with GRPO on the Text-to-SQL environment, from execution rewards.

    python agents/grpo_train.py                        # CPU preset: SmolLM2-135M, warm-up, then G=8, 4 questions a step
    python agents/grpo_train.py --preset gpu           # bf16 on CUDA, G=8, 16 questions a step
    python agents/grpo_train.py --help                 # every option, with its meaning and default
    torchrun --nproc_per_node 4 agents/grpo_train.py --preset gpu   # data-parallel on 4 GPUs

The run, top to bottom (``train``):
  0. check the model, the data, the output folder and the run to resume (``agents/preflight.py``); a
     run that cannot work stops here, with exit status 2 and a message naming the flag, having
     created nothing;
  1. the warm-up stage (``agents/sft_warmup.py``), unless a warm-start adapter is given or this is
     a resume;
  2. the envs (built from the run's ``sqlenv.spec.EnvSpec``), the policy and its optimizer; a resume
     loads its checkpoint: the adapter, the optimizer and the RNG states;
  3. before training (not on a resume): probe the starting policy, evaluate it on held-out questions
     (step 0);
  4. the loop, one GRPO step each:
     1. pick ``batch_size`` questions (seeded), reset the env on each to get its observation;
     2. sample G completions per question (``policy.generate``), extract the SQL;
     3. score each group through the env's group path (``env.score_group``) -> rewards, errors, matches;
     4. group-relative advantages (``agents.grpo``); optionally drop groups whose rewards are all equal,
        and (``--drop-unsolved-groups``) groups with no right sample;
     5. ``num_iterations`` times: log-probs with grad in micro-batches, clipped GRPO loss, backward,
        gradient clipping, AdamW step on the LoRA parameters only (a non-finite loss skips the step);
     6. log metrics to ``<output_dir>/metrics.jsonl``; every ``eval_every`` steps greedy accuracy on
        held-out questions; every ``save_every`` steps a checkpoint that ``--resume`` continues exactly;
  5. the end: final checkpoint, final evaluation, curves.png, and the command that evaluates the adapter.

The probe: the share of groups with mixed rewards is the share that will carry any learning signal
(a group whose samples are all wrong, or all right, has advantage 0). If it is near 0, GRPO cannot
learn; pick another model, prompt, temperature or reward first.

Metrics (metrics.jsonl, one object per line with "step"): probe/* (step 0: mixed_frac, accuracy,
error shares of the untuned policy); train/reward_mean, accuracy, exact, f1, error_frac, error/<kind>,
frac_zero_std, groups_kept, groups_unsolved (share of groups with no right sample),
skipped_update, skipped_nonfinite, loss, grad_norm, clip_frac (clip_low,
clip_high), ratio_mean, adv_abs_mean, completion_len, truncated_frac, kl (only when beta > 0: the
reference pass is skipped otherwise), is_weight_mean and rollout_mismatch (lower --rollout-dtype or --update-dtype);
eval/* (greedy, held-out); train/collapse/* and eval/collapse/* (agents/monitors.py: floor, floor_text,
floor_gold, repeated, top_template, example_entity, list_for_one, literal); paired/* (final evaluation against
step 0, agents/eval_records.py: diff, diff_ci_low/high, p_mcnemar, a_only, b_only; each evaluation's
records in <output_dir>/eval/step_NNNNNN.json); perf/gen_s, score_s, update_s, step_s, eval_s,
tokens_per_s (sampled completion tokens per second of generation).

Where each part lives (one job a module):
  agents/grpo_config.py   the Config dataclass, its presets and command line (agents/cli.py)
  agents/preflight.py     the checks before any work
  agents/sft_warmup.py    the supervised warm-up stage
  sqlenv/spec.py          EnvSpec: the env's settings, which build the envs and travel with the adapter
  agents/rollouts.py      questions -> observations -> completions -> scored groups; probe; held-out eval
  agents/eval_records.py  HeldOut: the run's held-out evaluations, their records and the paired comparison
  agents/multiturn.py     multi-turn episodes (--max-turns > 1)
  agents/grpo_update.py   advantages and the optimizer step(s) (the tensor math: agents/grpo.py)
  agents/distributed.py   World: this process's rank and every collective (torchrun)
  agents/run_outputs.py   RunOutputs: what rank 0 alone prints and writes (config, metrics, checkpoints, curves)
  agents/checkpoints.py   save, find, resume checks, resume restore
  agents/metrics_log.py   metrics.jsonl;  agents/curves.py: curves.png
  agents/adapter_card.py  what an adapter folder carries so that evaluation matches training

Data parallel (``torchrun``, WORLD_SIZE > 1; a plain run never touches torch.distributed): every rank
draws the same ``batch_size`` questions and takes its share (``batch[rank::world_size]``), samples
(its own seed) and scores its groups; advantages are per group, so they stay local, except that
``scale_rewards="batch"`` uses the std of the whole batch (all-reduced). After each backward pass the
LoRA gradients are summed across ranks with one all-reduce, the loss being normalised by the global
number of sequences, so every rank applies the gradient of the whole batch and all ranks keep identical
adapters. Rank 0 alone checks, probes and evaluates (``world.on_main``: the others wait for its result),
and prints, logs, plots and writes checkpoints (``RunOutputs``: a checkpoint holds every rank's RNG
state). See ``agents/distributed.py`` and docs/training.md.

What is kept from PPO/GRPO and why: see the docstring of ``agents/grpo.py``.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file: make `agents` and `sqlenv` importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import grpo  # noqa: E402  (the GRPO tensor math)
from agents.checkpoints import load_resume, restore  # noqa: E402
from agents.cli import ConfigError, exit_with  # noqa: E402
from agents.distributed import World, setup_world, teardown_world  # noqa: E402
from agents.eval_records import HeldOut  # noqa: E402
from agents.grpo_config import Config, parse_config  # noqa: E402
from agents.grpo_update import batch_advantages, grpo_update, reference_weights  # noqa: E402
from agents.models import resolve_lower_precision  # noqa: E402
from agents.monitors import RECORD_FIELDS, monitor_metrics, with_questions  # noqa: E402
from agents.multiturn import EnvPool, counts_metrics, episode_counts  # noqa: E402
from agents.preflight import RunPlan, plan_run  # noqa: E402
from agents.rollouts import (  # noqa: E402  (generate_groups, score_groups: the seams tests replace here)
    collect_groups, generate_groups, outcome_metrics, policy_tokens, probe_mixed_share, sample_questions,
    score_groups)
from agents.run_outputs import RunOutputs  # noqa: E402

PROG = "python agents/grpo_train.py"
# What each rank sends of its samples' infos under torchrun: what the train/* outcome metrics and the collapse
# monitors read (the question's text is added after the gather, from its index).
GATHERED_INFO = ("correct", "exact", "f1") + tuple(name for name in RECORD_FIELDS if name != "question")


def build_policy(cfg: Config):
    from agents.policy import LoRAPolicy, PolicyConfig

    return LoRAPolicy(PolicyConfig(
        model=cfg.model, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        device=cfg.device, dtype=cfg.dtype, threads=cfg.threads, few_shot=cfg.few_shot,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
        adapter=cfg.warmup_adapter, rollout_dtype=resolve_lower_precision(cfg.rollout_dtype, cfg.device, cfg.dtype),
        stop_check_every=cfg.stop_check_every, compile=cfg.compile_rollouts,
        **({} if cfg.prompt_cache_tokens is None else {"prompt_cache_tokens": cfg.prompt_cache_tokens})))


def run_warmup(cfg: Config, out: Path) -> str:
    """The warm-up stage: ``agents/sft_warmup.py`` on ``cfg.warmup_examples`` generated questions, into
    ``<out>/warmup/``; returns its adapter folder (a finished one in that folder is reused). With
    ``max_turns`` > 1 it trains on multi-turn episodes (``agents/agent_warmup.py``)."""
    from agents import sft_warmup

    folder = out / "warmup"
    adapter = folder / "adapter"
    if not (adapter / "adapter_config.json").exists():
        kind = f"{cfg.max_turns}-move episodes of " if cfg.max_turns > 1 else ""
        print(f"warm-up stage: supervised pass on {kind}{cfg.warmup_examples} generated questions -> {folder}",
              flush=True)
        sft_warmup.train(sft_warmup.Config(
            model=cfg.model, device=cfg.device, dtype=cfg.dtype, schema=cfg.schema, few_shot=cfg.few_shot,
            column_values=cfg.column_values,
            examples=cfg.warmup_examples, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, threads=cfg.threads,
            max_completion_length=cfg.max_completion_length, seed=cfg.seed, max_turns=cfg.max_turns,
            output_dir=str(folder)))
    return str(adapter)


def train(cfg: Config) -> dict[str, Any]:
    """Run GRPO as configured; returns a summary (output_dir, last step, final eval metrics, adapter).

    Under torchrun (WORLD_SIZE > 1) this joins the process group first and leaves it at the end. A
    configuration that cannot work raises ``ConfigError`` before any work, having created nothing.
    """
    world = setup_world(cfg.device)
    try:
        # ---- 0. before any work: model, data, output folder, the run to resume (rank 0 checks, all get the plan)
        plan = world.on_main(lambda: plan_run(cfg))
        created = world.on_main(lambda: make_run_folder(plan.output_dir))
        try:
            return _train(replace(cfg, warmup_adapter=plan.warmup_adapter), plan, world)
        except BaseException:
            if world.main and created:
                remove_if_empty(plan.output_dir)  # a start that failed before writing anything leaves no folder
            raise
    finally:
        teardown_world(world)


def _train(cfg: Config, plan: RunPlan, world: World) -> dict[str, Any]:
    out = RunOutputs(world, plan.output_dir)  # rank 0 prints and writes; the other ranks' calls do nothing
    out.say(plan.notice)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the same on every rank: the same LoRA initialisation
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # ---- 1. the warm-up stage (rank 0; a finished one is reused)
    if plan.warmup_stage:
        cfg = replace(cfg, warmup_adapter=world.on_main(lambda: run_warmup(cfg, plan.output_dir)))
        torch.manual_seed(cfg.seed)
    run_config = {**asdict(cfg), "resolved_dataset": plan.dataset, "resolved_data_dir": plan.data_dir}

    # ---- 2. envs, policy, optimizer; a resume loads the adapter, the optimizer and the RNG states
    env = plan.env.make(workers=cfg.workers)  # the env's settings: sqlenv/spec.py, from the Config
    held_out = (HeldOut(plan.env.make(cfg.eval_split, cfg.workers), cfg, plan.output_dir)  # rank 0 evaluates
                if cfg.eval_limit and world.main else None)
    pool = EnvPool(env) if cfg.max_turns > 1 else None  # multi-turn: each live episode on its own copy
    policy = build_policy(cfg if world.device in (None, cfg.device) else replace(cfg, device=world.device))
    reference = reference_weights(policy, cfg)  # taken before a resume overwrites the adapter
    rng = np.random.default_rng(cfg.seed)  # question sampling: the same stream on every rank
    state = load_resume(plan.checkpoint, policy, world)
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    world.broadcast_parameters(params)  # every rank starts from rank 0's adapter (fresh or resumed)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    start_step = restore(state, optimizer, rng, world, cfg.seed)
    out.begin(run_config, plan.env, cfg.eval_split, resumed_step=start_step if state is not None else None)
    out.say(run_banner(cfg, plan, world, env, policy, params))
    if world.distributed and cfg.batch_size % world.size:
        out.say(f"notice: batch_size={cfg.batch_size} is not a multiple of {world.size} processes; "
                "some ranks get one question fewer each step")
    if state is not None:
        out.say(f"resumed from {plan.checkpoint} at step {start_step}")

    # ---- 3. before training (a fresh run): can GRPO learn at all? and the held-out starting point
    if state is None and cfg.probe_questions:  # groups with mixed rewards carry the signal
        questions = sample_questions(np.random.default_rng(cfg.seed + 1), len(env.dataset), cfg.probe_questions)
        probe = world.on_main(lambda: probe_mixed_share(policy, env, questions, cfg, pool))
        out.log(0, probe)
        out.say(f"starting policy: {probe['probe/mixed_frac']:.0%} of {probe['probe/questions']} groups have "
                f"mixed rewards (accuracy {probe['probe/accuracy']:.1%}, errors {probe['probe/error_frac']:.1%})")
        if probe["probe/mixed_frac"] == 0:
            out.say("warning: no group had mixed rewards; GRPO gets no signal from such batches")
    eval_metrics: dict[str, float] = {}
    if state is None and cfg.eval_limit:  # the first point of the curves and of the final paired comparison
        eval_metrics = world.on_main(lambda: held_out(policy, 0))
        out.log(0, eval_metrics)
        out.say(f"step 0: {eval_line(eval_metrics)}")

    # ---- 4. the loop
    bar = out.progress(start_step, cfg.steps)
    for step in bar:
        step_start = time.perf_counter()
        # 1-3. questions (the same batch on every rank; each takes its share) -> G samples each -> scored by
        # the env (multi-turn: G episodes per question in lockstep, scored by their own steps)
        indices = world.shard(sample_questions(rng, len(env.dataset), cfg.batch_size))
        rollouts, rewards, infos, gen_s, score_s = collect_groups(
            policy, env, indices, cfg.num_generations, cfg.batch_size, pool=pool, generate=generate_groups,
            score=score_groups)
        # 4. group-relative advantages; dynamic filtering of groups without signal
        rewards_t = torch.as_tensor(rewards, dtype=torch.float32)
        advantages = batch_advantages(rewards_t, cfg, world)
        zero = grpo.zero_std_mask(rewards_t, cfg.num_generations)
        keep = kept_groups(zero, infos, cfg).repeat_interleave(cfg.num_generations).tolist()
        kept = [r for r, k in zip(rollouts, keep) if k]
        kept_total = int(world.sum([len(kept)])[0]) if world.distributed else len(kept)
        # 5. the update (every rank joins it while any rank kept a group)
        t0 = time.perf_counter()
        update = (grpo_update(policy, optimizer, kept, advantages[torch.tensor(keep, dtype=torch.bool)], cfg,
                              world, reference) if kept_total else {})
        update_s = time.perf_counter() - t0
        # 6. metrics of the whole batch (gathered from every rank), evaluation, checkpoint
        batch = gather_batch(world, cfg, rewards=rewards, infos=infos, zero=zero, advantages=advantages,
                             lengths=[policy_tokens(r) for r in rollouts],
                             truncated=[truncated(r, cfg) for r in rollouts],
                             times=dict(gen_s=gen_s, score_s=score_s, update_s=update_s),
                             turns=episode_counts(rollouts) if cfg.max_turns > 1 else None)
        done = step + 1
        metrics = step_metrics(batch, update, kept_total, cfg, env)
        if update.get("skipped_nonfinite"):
            out.note(f"step {done}: non-finite loss or gradient, skipped {update['skipped_nonfinite']}/"
                     f"{cfg.num_iterations} optimizer step(s)")
        if cfg.eval_limit and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            metrics.update(world.on_main(lambda: held_out(policy, done)))
            out.note(f"step {done}: {eval_line(metrics)}")
        metrics["perf/step_s"] = time.perf_counter() - step_start
        out.log(done, metrics)
        bar.set_postfix(reward=f"{metrics['train/reward_mean']:.2f}", acc=f"{metrics['train/accuracy']:.2f}",
                        mixed=f"{1 - metrics['train/frac_zero_std']:.2f}")
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            out.checkpoint(done, policy, optimizer, rng)
    bar.close()

    # ---- 5. the end: final checkpoint, final evaluation, curves (rank 0; the others wait)
    last = max(cfg.steps, start_step)
    final = out.checkpoint(last, policy, optimizer, rng)
    if cfg.eval_limit:
        eval_metrics, paired_table = world.on_main(lambda: held_out.final(policy, last))
        out.log(last, eval_metrics)
        if paired_table:
            out.say(f"held-out questions, paired against the starting policy (step 0):\n{paired_table}")
        out.say(f"final eval on {eval_metrics['eval/questions']} {cfg.eval_split} questions: accuracy "
                f"{eval_metrics['eval/accuracy']:.1%}, errors {eval_metrics['eval/error_frac']:.1%}")
    out.finish(cfg.plot)
    out.say(f"adapter: {final / 'adapter'}\nevaluate it: {evaluate_command(final / 'adapter', cfg)}")
    for each in (pool, env, held_out):
        if each is not None:
            each.close()
    world.barrier()
    return {"output_dir": str(plan.output_dir), "dataset": plan.dataset, "start_step": start_step,
            "checkpoint": str(final), "adapter": str(final / "adapter"), "step": last, "eval": eval_metrics}


def run_banner(cfg: Config, plan: RunPlan, world: World, env, policy, params) -> str:
    """The line that says what is trained on what, with how many parameters, where."""
    ranks = (f", data-parallel over {world.size} processes ({world.device or cfg.device})"
             if world.distributed else "")
    weights = next(policy.model.parameters())
    rollouts = (f", {policy.config.rollout_dtype} rollouts (--rollout-dtype {cfg.rollout_dtype})"
                if policy.config.rollout_dtype else "")
    update_dtype = resolve_lower_precision(cfg.update_dtype, cfg.device, cfg.dtype)
    rollouts += f", {update_dtype} update (--update-dtype {cfg.update_dtype})" if update_dtype else ""
    return (f"GRPO on {plan.dataset}/{cfg.split} ({len(env.dataset)} questions, {cfg.schema} schema), {cfg.model} "
            f"({str(weights.dtype).removeprefix('torch.')} on {weights.device}{rollouts}), "
            f"{sum(p.numel() for p in params):,} trainable LoRA parameters{ranks} -> {plan.output_dir}")


def eval_line(metrics: dict[str, Any]) -> str:
    return f"eval accuracy {metrics['eval/accuracy']:.1%}, errors {metrics['eval/error_frac']:.1%}"


def truncated(rollout, cfg: Config) -> bool:
    """Whether a completion, or any move of a multi-turn episode, ran to max_completion_length tokens."""
    moves = getattr(rollout, "move_tokens", None)
    lengths = moves if moves is not None else [len(rollout.completion_ids)]
    return any(n >= cfg.max_completion_length for n in lengths)


def kept_groups(zero, infos: list[dict], cfg: Config):
    """[num_groups] bool: the groups the update uses (``skip_zero_std``, ``drop_unsolved_groups``)."""
    keep = ~zero if cfg.skip_zero_std else torch.ones_like(zero)
    if cfg.drop_unsolved_groups:
        keep = keep & grpo.solved_mask([bool(i["correct"]) for i in infos], cfg.num_generations)
    return keep


def gather_batch(world: World, cfg: Config, *, rewards: list[float], infos: list[dict], zero, advantages,
                 lengths: list[int], truncated: list[bool], times: dict[str, float],
                 turns: dict[str, float] | None = None) -> dict[str, Any]:
    """This step's outcome for the logs: of the whole batch, gathered from every rank (timings: the slowest;
    ``turns``, multi-turn episodes' ``episode_counts``: summed)."""
    batch = dict(rewards=rewards, infos=infos, zero=zero, advantages=advantages, lengths=lengths,
                 truncated=truncated, turns=turns, **times)
    if not world.distributed:
        return batch
    parts = world.gather(dict(
        rewards=rewards, lengths=lengths, truncated=truncated, zero=zero.tolist(), advantages=advantages.tolist(),
        infos=[{k: i.get(k) for k in GATHERED_INFO} for i in infos], turns=turns, **times))
    batch = {key: [x for part in parts for x in part[key]] for key in ("rewards", "infos", "lengths", "truncated")}
    batch["zero"] = torch.tensor([x for part in parts for x in part["zero"]], dtype=torch.bool)
    batch["advantages"] = torch.as_tensor([x for part in parts for x in part["advantages"]], dtype=torch.float32)
    batch.update({key: max(part[key] for part in parts) for key in times})
    batch["turns"] = None if turns is None else {key: sum(part["turns"][key] for part in parts) for key in turns}
    return batch


def step_metrics(batch: dict[str, Any], update: dict[str, float], kept_total: int, cfg: Config, env) -> dict[str, Any]:
    """The train/* and perf/* metrics of one step (see the module docstring), with the collapse monitors and,
    multi-turn, the turn metrics of the whole batch (every rank's episodes)."""
    zero, advantages, lengths = batch["zero"], batch["advantages"], batch["lengths"]
    keep_groups = kept_groups(zero, batch["infos"], cfg)
    solved = grpo.solved_mask([bool(i["correct"]) for i in batch["infos"]], cfg.num_generations)
    metrics = outcome_metrics("train", batch["rewards"], batch["infos"])
    metrics.update({f"train/{k}": v for k, v in update.items()})
    metrics.update({
        "train/frac_zero_std": float(zero.float().mean()) if zero.numel() else 0.0,
        "train/groups_kept": int(keep_groups.sum()),
        "train/groups_unsolved": float((~solved).float().mean()) if solved.numel() else 0.0,
        "train/skipped_update": int(not kept_total),
        "train/adv_abs_mean": float(advantages.abs().mean()) if advantages.numel() else 0.0,
        "train/completion_len": float(np.mean(lengths)),
        "train/truncated_frac": float(np.mean(batch["truncated"])),
        "perf/gen_s": batch["gen_s"], "perf/score_s": batch["score_s"], "perf/update_s": batch["update_s"],
        "perf/tokens_per_s": sum(lengths) / max(batch["gen_s"], 1e-9),
    })
    metrics.update(monitor_metrics("train", with_questions(batch["infos"], env)))
    if batch.get("turns") is not None:
        metrics.update(counts_metrics("train", batch["turns"]))
    return metrics


def evaluate_command(adapter: Path, cfg: Config) -> str:
    """The command that evaluates a saved adapter on its held-out split (its env_config.json says which),
    as it can be pasted here: paths relative to the working directory when below it, else absolute."""
    def shown(path) -> str:
        relative = os.path.relpath(path)
        return shlex.quote(relative if not relative.startswith("..") else os.path.abspath(path))

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluate.py"
    threads = f" --threads {cfg.threads}" if cfg.threads else ""
    return f"{shown(sys.executable)} {shown(script)} --policy {shown(adapter)}{threads}"


# ====================================================================================== the run folder
def make_run_folder(out: Path) -> bool:
    """Create ``<out>/checkpoints``; True when ``out`` itself did not exist before."""
    created = not out.exists()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return created


def remove_if_empty(out: Path):
    """Remove a run folder this run created, when nothing but empty folders is in it."""
    if out.is_dir() and not any(p.is_file() or p.is_symlink() for p in out.rglob("*")):
        shutil.rmtree(out, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(argv)
    try:
        return train(cfg)
    except ConfigError as error:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops; rank 0 says why
            exit_with(PROG, error)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
