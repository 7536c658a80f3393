"""The GRPO update: steps 4-5 of a step, from scored rollouts to one or more AdamW steps on the LoRA weights.

``batch_advantages`` turns a batch's rewards into group-relative advantages (the math is
``agents.grpo``; under torchrun, ``scale_rewards="batch"`` takes the std of the whole batch).
``grpo_update`` then runs ``num_iterations`` optimizer steps: log-probs with grad in micro-batches,
the clipped loss (``grpo.grpo_loss``), backward, one all-reduce of the gradients under torchrun,
gradient clipping, AdamW. A non-finite loss or gradient norm skips that step, on every rank alike.

The KL reference (``beta`` > 0) is the model the run started from, without a second copy of it: the
adapter switched off (a fresh adapter's B is 0, so that is the start), or the warm-start adapter's
weights swapped in for one no-grad pass (``reference_weights``, ``swapped_adapter``).

Multi-turn episodes (``agents.multiturn``) carry a ``loss_mask``: their "completion" is every token after
the first prompt, the environment's text included, and the mask keeps only the policy's own tokens.
``loss_weights`` folds it into the padding mask, and the log-probs of every masked token are set to 0
before the loss, so environment tokens get exactly zero gradient and count in no token total, KL or
clip fraction. Rollouts without a mask (the single-step default) take the same path as before.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agents import grpo
from agents.distributed import World
from agents.models import resolve_device, resolve_lower_precision

if TYPE_CHECKING:
    from agents.grpo_config import Config

BATCH_STD_EPS = 1e-4  # as grpo.group_advantages' eps


def batch_advantages(rewards, cfg: Config, world: World):
    """``grpo.group_advantages``; with several ranks and scale_rewards="batch" the std is the whole batch's."""
    if not (world.distributed and cfg.scale_rewards == "batch"):
        return grpo.group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)
    count, total, squares = world.sum([rewards.numel(), float(rewards.double().sum()),
                                       float((rewards.double() ** 2).sum())])
    variance = (squares - total * total / count) / (count - 1) if count > 1 else 0.0
    std = math.sqrt(max(variance, 0.0))
    return grpo.group_advantages(rewards, cfg.num_generations, "none") / (std + BATCH_STD_EPS)


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


def loss_weights(rollouts: Sequence, mask, device=None):
    """The padding mask ``[B, T]`` times each rollout's ``loss_mask`` (1 = a token the policy sampled);
    the padding mask itself when no rollout has one."""
    masks = [getattr(r, "loss_mask", None) for r in rollouts]
    if all(m is None for m in masks):
        return mask
    length = mask.shape[1]
    own = pad_right([m if m is not None else _ones(len(r.completion_ids)) for r, m in zip(rollouts, masks)],
                    length, device=device if device is not None else mask.device)
    return mask * own


def _ones(n: int):
    import torch

    return torch.ones(n)


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


def update_precision(policy, cfg: Config):
    """Autocast in ``cfg.update_dtype`` on the policy's device for one of the update's forwards; a no-op
    context when unset. The backward runs outside it, each op in its forward's dtype."""
    dtype = resolve_lower_precision(getattr(cfg, "update_dtype", None), cfg.device, cfg.dtype)
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    device = getattr(policy, "device", None) or torch.device(resolve_device(cfg.device))
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


UPDATE_METRICS = ("clip_frac", "clip_low", "clip_high", "ratio_mean")  # from grpo.grpo_loss (+ "kl")


def micro_batches(n: int, cfg: Config) -> list[list[int]]:
    """The indices of ``n`` rollouts in micro-batches of ``cfg.micro_batch_size``, whole groups when it can
    (a group's prompt then runs once in ``policy.sequence_logprobs``)."""
    size = cfg.micro_batch_size
    if size >= cfg.num_generations and n % cfg.num_generations == 0:
        size -= size % cfg.num_generations
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def corrects_precision(cfg: Config) -> bool:
    """Whether the rollouts were sampled in another precision than the update's forward (rollout_dtype or
    update_dtype): the old log-probs are then the training forward's, each token importance-weighted."""
    rollout_dtype = resolve_lower_precision(cfg.rollout_dtype, cfg.device, cfg.dtype)
    update_dtype = resolve_lower_precision(getattr(cfg, "update_dtype", None), cfg.device, cfg.dtype)
    return rollout_dtype is not None or update_dtype is not None


def old_logprobs(policy, rollouts: Sequence, chunks: list, cfg: Config, corrected: bool) -> list | None:
    """Per-rollout old log-probs. Used once (num_iterations == 1): the sampling ones, or None when the
    precision is corrected (the one pass's own values: same weights, so no extra forward); else a no-grad pass."""
    if cfg.num_iterations == 1:
        return None if corrected else [r.logprobs for r in rollouts]
    with update_precision(policy, cfg):
        return _logprobs_no_grad(policy, rollouts, chunks)


def reference_logprobs(policy, rollouts: Sequence, chunks: list, cfg: Config, reference) -> list | None:
    """Per-rollout log-probs of the KL reference, None when beta is 0: the adapter off (``reference`` None)
    or the adapter with the ``reference`` weights."""
    with update_precision(policy, cfg):
        return (_logprobs_no_grad(policy, rollouts, chunks, disable_adapter=reference is None, weights=reference)
                if cfg.beta > 0 else None)


class _Totals:
    """What an update sums: token-weighted loss metrics and their tokens, the loss and grad norm of each step
    taken, the steps skipped, and |log pi_old - log pi_rollout| over the sampled tokens with their count."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.tokens = 0.0
        self.skipped = 0
        self.mismatch = [0.0, 0.0]

    def add_chunk(self, metrics: dict, tokens: float) -> None:
        self.tokens += tokens
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * tokens

    def add_step(self, loss_sum: float, grad_norm: float) -> None:
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss_sum
        self.sums["grad_norm"] = self.sums.get("grad_norm", 0.0) + grad_norm

    def sum_ranks(self, world: World, cfg: Config, corrected: bool) -> None:
        """Replace the token-weighted sums with those of all ranks (loss and grad_norm are global already)."""
        keys = UPDATE_METRICS + (("kl",) if cfg.beta > 0 else ()) + (("is_weight_mean",) if corrected else ())
        sums = world.sum([self.tokens] + [self.sums.get(key, 0.0) for key in keys])
        self.tokens = sums[0]
        self.sums.update(zip(keys, sums[1:]))

    def averages(self, steps: int, world: World | None, corrected: bool) -> dict[str, float]:
        """Per-token means of the loss metrics, per-step means of loss and grad_norm (absent when no step was
        taken), "skipped_nonfinite", and "rollout_mismatch" per sampled token over all ranks when corrected."""
        out = {key: value / max(self.tokens, 1.0) for key, value in self.sums.items()
               if key not in ("loss", "grad_norm")}
        done = steps - self.skipped
        if done:
            out["loss"] = self.sums["loss"] / done
            out["grad_norm"] = self.sums["grad_norm"] / done
        out["skipped_nonfinite"] = self.skipped
        if corrected:
            total_abs, count = world.sum(self.mismatch) if world is not None else self.mismatch
            out["rollout_mismatch"] = total_abs / max(count, 1.0)
        return out


def _chunk_loss(policy, rollouts: Sequence, chunk: list, old, ref, advantages, cfg: Config, total: int,
                corrected: bool, mismatch: list | None):
    """One micro-batch's loss with grad, its metrics and its token weights ``[B, T]``. ``mismatch`` (the first
    iteration of a corrected update) gets sum |log pi_old - log pi_rollout| and the token count added."""
    with update_precision(policy, cfg):
        logp, mask = policy.sequence_logprobs([rollouts[i].prompt_ids for i in chunk],
                                              [rollouts[i].completion_ids for i in chunk])
    logp = logp.float()
    length = logp.shape[1]
    mask = loss_weights([rollouts[i] for i in chunk], mask)
    logp = logp * mask  # masked tokens: log-prob 0 with no gradient, equal in every term below
    old_logp = (logp.detach() if old is None else
                pad_right([old[i] for i in chunk], length, device=logp.device) * mask)
    ref_logp = None if ref is None else pad_right([ref[i] for i in chunk], length, device=logp.device) * mask
    is_weights = None
    if corrected:
        rollout_logp = pad_right([rollouts[i].logprobs for i in chunk], length, device=logp.device) * mask
        is_weights = grpo.truncated_importance_weights(old_logp, rollout_logp, cfg.tis_cap)
        if mismatch is not None:
            mismatch[0] += float(((old_logp - rollout_logp).abs() * mask).sum())
            mismatch[1] += float(mask.sum())
    loss, metrics = grpo.grpo_loss(
        logp, old_logp, advantages[chunk].to(logp.device), mask, is_weights=is_weights,
        ref_logp=ref_logp, beta=cfg.beta,
        epsilon_low=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
        max_completion_length=cfg.max_completion_length * getattr(cfg, "max_turns", 1),
        num_sequences=total)
    return loss, metrics, mask


def _backward(policy, rollouts: Sequence, chunks: list, old, ref, advantages, cfg: Config, total: int,
              corrected: bool, totals: _Totals, first: bool) -> tuple[bool, float]:
    """Loss and backward of each micro-batch in turn (the gradients add up); stops at a non-finite loss.
    Returns (every loss was finite, the sum of the losses backpropagated)."""
    import torch

    loss_sum = 0.0
    for chunk in chunks:
        loss, metrics, mask = _chunk_loss(policy, rollouts, chunk, old, ref, advantages, cfg, total, corrected,
                                          totals.mismatch if first else None)
        if not torch.isfinite(loss):
            return False, loss_sum
        loss.backward()
        loss_sum += float(loss.detach())
        totals.add_chunk(metrics, float(mask.sum()))
    return True, loss_sum


def _grad_norm(params: list, cfg: Config) -> float:
    """The gradients' global norm, clipped in place to ``cfg.max_grad_norm`` first when that is > 0."""
    import torch

    if cfg.max_grad_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
    return float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))


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
    distributed = world is not None and world.distributed
    n = len(rollouts)
    total = int(world.sum([n])[0]) if distributed else n
    chunks = micro_batches(n, cfg)
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    corrected = corrects_precision(cfg)
    old = old_logprobs(policy, rollouts, chunks, cfg, corrected)
    ref = reference_logprobs(policy, rollouts, chunks, cfg, reference)
    advantages = _tensor(advantages)

    totals = _Totals()
    for iteration in range(cfg.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        finite, loss_sum = _backward(policy, rollouts, chunks, old, ref, advantages, cfg, total, corrected,
                                     totals, first=iteration == 0)
        if distributed:  # one all-reduce: the summed gradients, any rank's non-finite flag, the loss
            finite, loss_sum = world.reduce_gradients(params, finite, loss_sum)
        grad_norm = _grad_norm(params, cfg) if finite else float("nan")
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            totals.skipped += 1
            continue
        optimizer.step()
        totals.add_step(loss_sum, grad_norm)
    if distributed:
        totals.sum_ranks(world, cfg, corrected)
    return totals.averages(cfg.num_iterations, world if distributed else None, corrected)
