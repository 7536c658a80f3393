"""Rollouts through the environment: questions -> observations -> G completions -> scored groups.

Steps 1-3 of a GRPO step, and the two measurements built from them: the probe of the starting policy
(the share of groups with mixed rewards, the only ones that carry a learning signal) and the greedy
evaluation on held-out questions. Everything is scored by the env itself (``env.score_group``); the
policy only writes SQL.

``generate_groups`` is the seam for an external rollout engine (vLLM): see docs/training.md.

With ``max_turns`` > 1 the env is ``TextToSQLAgent-v0`` and a "rollout" is a whole multi-turn episode
(``agents.multiturn.run_episodes``, played on an ``EnvPool`` of copies of the env): ``collect_groups``
returns either kind with its rewards and infos, so the trainer's loop, the probe and the evaluation
are the same for both.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

from agents import grpo

if TYPE_CHECKING:
    from agents.grpo_config import Config


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


def collect_groups(policy, env, indices: Sequence[int], group_size: int, chunk: int, *, pool=None, greedy: bool = False,
                   generate=None, score=None) -> tuple[list, list[float], list[dict], float, float]:
    """``(rollouts, rewards, infos, generation seconds, scoring seconds)`` for group_size samples of each
    question: single-step completions scored by ``score_groups``, or, with an ``EnvPool`` (``pool``),
    multi-turn episodes (``agents.multiturn``) whose rewards come from their own steps (time all counted
    as generation), chunk questions at a time. An episode's info is its last step's (the submitted query,
    its prediction and the gold, or ``no_answer``). ``generate``/``score``: replacements of
    ``generate_groups``/``score_groups`` with their signatures (the trainer passes its own names, the
    seams an external engine or a test replaces)."""
    start = time.perf_counter()
    if pool is None:
        rollouts = (generate or generate_groups)(policy, env, indices, group_size, chunk, greedy=greedy)
        gen_s = time.perf_counter() - start
        start = time.perf_counter()
        rewards, infos = (score or score_groups)(env, indices, [r.sql for r in rollouts], group_size)
        return rollouts, rewards, infos, gen_s, time.perf_counter() - start
    from agents.multiturn import run_episodes

    episodes = []
    for first in range(0, len(indices), chunk):
        episodes += run_episodes(policy, pool, indices[first:first + chunk], group_size, greedy=greedy)
    return episodes, [e.reward for e in episodes], [e.info for e in episodes], time.perf_counter() - start, 0.0


def turn_metrics(prefix: str, rollouts: Sequence) -> dict[str, float]:
    """``agents.multiturn.episode_metrics`` for episodes; nothing for single-step rollouts."""
    if not rollouts or not hasattr(rollouts[0], "move_kinds"):
        return {}
    from agents.multiturn import episode_metrics

    return episode_metrics(prefix, rollouts)


def probe_mixed_share(policy, env, indices: Sequence[int], cfg: "Config", pool=None) -> dict[str, float]:
    """Share of groups with mixed rewards for the current policy: the groups GRPO can learn from."""
    import torch

    rollouts, rewards, infos, _, _ = collect_groups(policy, env, indices, cfg.num_generations, cfg.batch_size,
                                                    pool=pool)
    metrics = outcome_metrics("probe", rewards, infos)
    metrics.update(turn_metrics("probe", rollouts))
    rewards_t = torch.as_tensor(rewards, dtype=torch.float32)
    metrics["probe/mixed_frac"] = 1.0 - grpo.frac_zero_std(rewards_t, cfg.num_generations)
    metrics["probe/questions"] = len(indices)
    return metrics


def evaluate(policy, env, indices: Sequence[int], cfg: "Config", pool=None) -> tuple[dict[str, float], list[dict]]:
    """``(metrics, infos)``: greedy accuracy, reward and error shares on held-out questions (one sample each),
    and each question's info (``agents.eval_records`` keeps them); with an ``EnvPool``, of greedy
    multi-turn episodes, with their turn metrics."""
    if not indices:
        return {}, []
    start = time.perf_counter()
    rollouts, rewards, infos, _, _ = collect_groups(policy, env, indices, 1, cfg.eval_batch_size, pool=pool,
                                                    greedy=True)
    metrics = outcome_metrics("eval", rewards, infos)
    metrics.update(turn_metrics("eval", rollouts))
    metrics["eval/completion_len"] = float(np.mean([policy_tokens(r) for r in rollouts]))
    metrics["eval/questions"] = len(indices)
    metrics["perf/eval_s"] = time.perf_counter() - start
    return metrics, infos


def policy_tokens(rollout) -> int:
    """Tokens the policy sampled in a rollout: its completion, or an episode's moves (not the env's text)."""
    mask = getattr(rollout, "loss_mask", None)
    return len(rollout.completion_ids) if mask is None else int(mask.sum())
