"""GRPO's math as pure tensor functions: advantages, the clipped surrogate, the KL penalty, aggregation.

No model, tokenizer or environment code lives here; `agents/grpo_update.py` feeds these functions
log-probabilities and rewards, and `tests/test_grpo.py` checks each one against numbers computed by hand.

What we keep from PPO / GRPO, what we drop, and why (a Text-to-SQL episode is one step: one prompt,
one completion, one execution reward at the end):

- Kept: group-relative advantages (GRPO). For each question we sample G completions and use
  ``reward - mean(group rewards)`` as the advantage of every token of a completion. The group mean is
  the baseline, so there is no value network and no GAE (there is nothing to bootstrap in a one-step
  episode). Dividing by the group standard deviation is optional (``scale_rewards``): "group" is the
  original GRPO; "batch" (one std for the whole batch) and "none" (Dr. GRPO) avoid up-weighting
  questions whose rewards barely differ.
- Kept: groups whose rewards are all equal get advantage exactly 0 and so no gradient; the trainer can
  drop them before the update (``zero_std_mask``, DAPO's dynamic filtering) and logs how many there were.
- Kept: PPO's clipped ratio ``-min(r*A, clip(r, 1-eps_low, 1+eps_high)*A)``. With one update per batch
  (``num_iterations == 1``) the ratio is 1 at the update, clipping never fires and the loss's gradient
  equals the plain policy gradient; it starts to matter when the same rollouts are reused
  (``num_iterations > 1``). Separate low/high bounds allow DAPO's "clip-higher".
- Optional: a KL penalty to the model the run started from, with the k3 estimator (``beta``, default
  0.1 in the trainer; 0, as in Dr. GRPO / DAPO and TRL's current default, skips it): with a LoRA adapter
  the reference is the same network with the adapter switched off, or with the warm-start adapter's
  weights swapped in (``agents/grpo_update.py``), so it costs one extra forward pass and no second model.
- Dropped: entropy bonus, value loss, reward whitening across steps, advantage normalisation per batch
  beyond ``scale_rewards``.

Aggregation (``loss_type``):
- "grpo": mean over the completion tokens of each sequence, then mean over sequences (the original paper;
  biased toward short completions for positive advantages and long ones for negative).
- "dr_grpo": sum over all completion tokens divided by a constant, ``num_sequences * max_completion_length``
  (Dr. GRPO), so every token counts the same whatever its sequence's length.

Both accept ``num_sequences`` so that losses of micro-batches sum to the loss of the full batch: pass the
size of the full batch and call ``backward`` on each micro-batch's loss.

Shapes: B = number of sequences (questions x G), T = padded completion length. Masks are 1 for real
completion tokens and 0 for padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.grpo_choices import LOSS_TYPES, SCALE_REWARDS


def _grouped(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Rewards as [num_groups, G] (accepts [B*G] or [B, G])."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    if rewards.dim() == 2:
        if rewards.shape[1] != num_generations:
            raise ValueError(
                f"rewards has shape {tuple(rewards.shape)} but num_generations={num_generations}"
            )
        return rewards
    if rewards.dim() != 1 or rewards.numel() % num_generations:
        raise ValueError(
            f"rewards must be [B*G] or [B, G] with G={num_generations}, got shape {tuple(rewards.shape)}"
        )
    return rewards.view(-1, num_generations)


def group_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    scale_rewards: str = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantage of each completion: its reward minus its group's mean, optionally divided by a std.

    rewards: [B*G] (grouped by question, G consecutive entries per question) or [B, G].
    scale_rewards: "group" divides by each group's std, "batch" by the std of all rewards in the batch,
    "none" does not divide. Stds are unbiased (Bessel-corrected, as ``torch.std``); ``eps`` is added to
    the std so that a group whose rewards are all equal gets advantage 0 rather than 0/0.
    Returns advantages with the shape of ``rewards``.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    shape = torch.as_tensor(rewards).shape
    grouped = _grouped(rewards, num_generations)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        std = grouped.std(dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(grouped[:, :1])
        advantages = advantages / (std + eps)
    elif scale_rewards == "batch":
        std = grouped.std() if grouped.numel() > 1 else torch.zeros(())
        advantages = advantages / (std + eps)
    return advantages.reshape(shape)


def zero_std_mask(rewards: torch.Tensor, num_generations: int, atol: float = 1e-6) -> torch.Tensor:
    """[num_groups] bool: True for groups whose G rewards are all equal (no learning signal)."""
    grouped = _grouped(rewards, num_generations)
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values
    return spread.abs() <= atol


def solved_mask(correct: torch.Tensor, num_generations: int) -> torch.Tensor:
    """[num_groups] bool: True for groups with at least one right sample (``correct``: [B*G] or [B, G] bools).

    A group with none carries no "be right" signal: its advantages only rank executing above failing
    (and under ``scale_rewards="group"`` as strongly as a solved group ranks the answer above the rest).
    """
    return (_grouped(torch.as_tensor(correct, dtype=torch.float32), num_generations) > 0).any(dim=1)


def frac_zero_std(rewards: torch.Tensor, num_generations: int, atol: float = 1e-6) -> float:
    """Share of groups whose rewards are all equal (0.0 for an empty batch)."""
    mask = zero_std_mask(rewards, num_generations, atol)
    return float(mask.float().mean()) if mask.numel() else 0.0


def per_token_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(policy || reference) per token: exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> torch.Tensor:
    """Per-token PPO loss -min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A), ratio = exp(logp - old).

    logp, old_logp: [B, T]; advantages: [B] (one per sequence, broadcast over tokens) or [B, T].
    epsilon_high defaults to epsilon_low (symmetric clipping).
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    advantages = _per_token(advantages, logp)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    return -torch.min(ratio * advantages, clipped * advantages)


def aggregate(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_sequences: int | None = None,
) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar (see the module docstring for the two types).

    num_sequences: the size of the full batch when this is one micro-batch of it (default B); the losses
    of the micro-batches then add up to the loss of the whole batch. max_completion_length is required
    for "dr_grpo". A sequence with no real tokens contributes 0.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    mask = mask.to(per_token_loss.dtype)
    n = per_token_loss.shape[0] if num_sequences is None else num_sequences
    masked = per_token_loss * mask
    if loss_type == "grpo":
        per_sequence = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_sequence.sum() / max(n, 1)
    if max_completion_length is None or max_completion_length < 1:
        raise ValueError("loss_type='dr_grpo' needs max_completion_length >= 1")
    return masked.sum() / (max(n, 1) * max_completion_length)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over the positions where mask is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass
class ClipFractions:
    """Share of real tokens whose ratio was clipped in a way that removed their gradient."""

    low: float  # ratio < 1 - eps_low with A < 0
    high: float  # ratio > 1 + eps_high with A > 0
    region: float  # either


def clip_fraction(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> ClipFractions:
    """How often the clip was active (the min picked the clipped term), over real tokens.

    A token counts as clipped low when ratio < 1-eps_low and A < 0, high when ratio > 1+eps_high and
    A > 0: exactly the cases where the clipped term wins the min and the gradient is zero.
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    with torch.no_grad():
        advantages = _per_token(advantages, logp)
        ratio = torch.exp(logp - old_logp)
        low = (ratio < 1.0 - epsilon_low) & (advantages < 0)
        high = (ratio > 1.0 + epsilon_high) & (advantages > 0)
        return ClipFractions(
            low=float(masked_mean(low.float(), mask)),
            high=float(masked_mean(high.float(), mask)),
            region=float(masked_mean((low | high).float(), mask)),
        )


def truncated_importance_weights(old_logp: torch.Tensor, rollout_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token ``min(pi_old / pi_rollout, cap)`` (truncated importance sampling, TIS).

    When the tokens were sampled by a rollout engine whose numerics differ from the training forward
    (lower precision, another kernel), ``old_logp`` is the training forward's log-prob of each token
    before the update and ``rollout_logp`` the sampler's; the weight corrects the surrogate for sampling
    from the rollout distribution, truncated at ``cap`` to bound its variance. No gradient flows through it.
    """
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap!r}")
    with torch.no_grad():
        return torch.exp(old_logp - rollout_logp).clamp(max=cap)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    is_weights: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_sequences: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The full GRPO loss of a (micro-)batch and its metrics.

    Per token: clipped surrogate (times ``is_weights`` when given: see
    :func:`truncated_importance_weights`) + beta * k3 KL (the KL term needs ref_logp when beta > 0),
    then ``aggregate``. Metrics: "kl" (masked mean of the per-token KL, when ref_logp is given),
    "clip_frac" / "clip_low" / "clip_high", "ratio_mean", and "is_weight_mean" with ``is_weights``.
    """
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (reference log-probabilities)")
    per_token = clipped_surrogate(logp, old_logp, advantages, epsilon_low, epsilon_high)
    metrics: dict[str, float] = {}
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
        metrics["is_weight_mean"] = float(masked_mean(is_weights.detach(), mask))
    if ref_logp is not None:
        kl = per_token_kl(logp, ref_logp)
        if beta > 0:
            per_token = per_token + beta * kl
        metrics["kl"] = float(masked_mean(kl.detach(), mask))
    loss = aggregate(per_token, mask, loss_type, max_completion_length, num_sequences)
    clip = clip_fraction(logp, old_logp, advantages, mask, epsilon_low, epsilon_high)
    metrics.update(clip_frac=clip.region, clip_low=clip.low, clip_high=clip.high)
    metrics["ratio_mean"] = float(masked_mean(torch.exp(logp - old_logp).detach(), mask))
    return loss, metrics


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    advantages = torch.as_tensor(advantages, dtype=like.dtype, device=like.device)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    return advantages
