"""agents/grpo.py against numbers computed by hand; its switches' values (agents/grpo_choices.py) stay torch-free."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from agents import grpo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # two groups of G=4


def close(actual, expected, tol=1e-5):
    assert torch.allclose(torch.as_tensor(actual, dtype=torch.float32),
                          torch.as_tensor(expected, dtype=torch.float32), atol=tol), (actual, expected)


# --- advantages -------------------------------------------------------------------------------------

def test_group_advantages_group_std():
    # Group 1: mean 0.25, deviations (.75, -.25, -.25, -.25), unbiased var = .75/3 = .25, std = .5.
    adv = grpo.group_advantages(REWARDS, 4, "group", eps=0.0)
    close(adv[:4], [1.5, -0.5, -0.5, -0.5])


def test_group_advantages_default_eps():
    adv = grpo.group_advantages(REWARDS, 4, "group")
    close(adv[:4], [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001])


def test_zero_variance_group_gets_zero_advantage():
    for scale in grpo.SCALE_REWARDS:
        adv = grpo.group_advantages(REWARDS, 4, scale)
        assert torch.equal(adv[4:], torch.zeros(4)), scale
        assert torch.isfinite(adv).all()
    all_zero = grpo.group_advantages(torch.zeros(6), 3, "group")
    assert torch.equal(all_zero, torch.zeros(6))


def test_group_advantages_batch_std():
    # Batch: mean 5/8, squared deviations 5 * .375^2 + 3 * .625^2 = 1.875, var = 1.875/7.
    std = math.sqrt(1.875 / 7)
    adv = grpo.group_advantages(REWARDS, 4, "batch", eps=0.0)
    close(adv, [0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0, 0, 0, 0])


def test_group_advantages_none():
    adv = grpo.group_advantages(REWARDS, 4, "none")
    close(adv, [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])


def test_group_advantages_two_dim_input_keeps_shape():
    adv = grpo.group_advantages(REWARDS.view(2, 4), 4, "none")
    assert adv.shape == (2, 4)
    close(adv[0], [0.75, -0.25, -0.25, -0.25])


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo.group_advantages(REWARDS, 4, "mean")
    with pytest.raises(ValueError, match="G=3"):
        grpo.group_advantages(REWARDS, 3)
    with pytest.raises(ValueError, match="num_generations"):
        grpo.group_advantages(REWARDS.view(2, 4), 2)


def test_zero_std_mask_and_fraction():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, -1.0, -1.0])  # G=2: mixed, equal, equal
    assert grpo.zero_std_mask(rewards, 2).tolist() == [False, True, True]
    assert grpo.frac_zero_std(rewards, 2) == pytest.approx(2 / 3)
    assert grpo.frac_zero_std(REWARDS, 4) == pytest.approx(0.5)


# --- KL -----------------------------------------------------------------------------------------------

def test_per_token_kl_k3():
    logp = torch.log(torch.tensor([0.5, 0.3]))
    ref = torch.log(torch.tensor([0.25, 0.3]))
    # delta = ln(.25/.5) = -ln 2: exp(delta) - delta - 1 = .5 + ln 2 - 1
    close(grpo.per_token_kl(logp, ref), [0.5 + math.log(2) - 1, 0.0])
    assert (grpo.per_token_kl(torch.randn(50), torch.randn(50)) >= 0).all()


# --- clipped surrogate ----------------------------------------------------------------------------

# Four tokens of one sequence each, ratios 1.5 / 0.5 / 0.5 / 1.5 with advantages +1 / +1 / -1 / -1.
RATIOS = torch.tensor([[1.5], [0.5], [0.5], [1.5]])
ADV = torch.tensor([1.0, 1.0, -1.0, -1.0])
OLD = torch.zeros(4, 1)
LOGP = torch.log(RATIOS)
MASK = torch.ones(4, 1)


def test_clipped_surrogate_both_sides():
    loss = grpo.clipped_surrogate(LOGP, OLD, ADV, 0.2)
    # +1 @ 1.5 -> clipped to 1.2; +1 @ 0.5 -> 0.5 (unclipped, the min); -1 @ 0.5 -> clipped to 0.8;
    # -1 @ 1.5 -> 1.5 (unclipped, the min).
    close(loss.squeeze(1), [-1.2, -0.5, 0.8, 1.5])


def test_clipped_surrogate_asymmetric_clip_higher():
    loss = grpo.clipped_surrogate(LOGP, OLD, ADV, epsilon_low=0.2, epsilon_high=0.28)
    close(loss.squeeze(1), [-1.28, -0.5, 0.8, 1.5])


def test_clipped_tokens_have_no_gradient():
    logp = LOGP.clone().requires_grad_(True)
    grpo.clipped_surrogate(logp, OLD, ADV, 0.2).sum().backward()
    # d(-ratio*A)/dlogp = -ratio*A for the unclipped tokens, 0 for the clipped ones.
    close(logp.grad.squeeze(1), [0.0, -0.5, 0.0, 1.5])


def test_ratio_one_gives_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss = grpo.clipped_surrogate(logp, logp.detach(), torch.tensor([2.0]), 0.2)
    close(loss, [[-2.0, -2.0]])
    loss.sum().backward()
    close(logp.grad, [[-2.0, -2.0]])


def test_clip_fraction():
    clip = grpo.clip_fraction(LOGP, OLD, ADV, MASK, 0.2)
    assert (clip.low, clip.high, clip.region) == pytest.approx((0.25, 0.25, 0.5))
    # Padding is not counted: mask out the two clipped tokens.
    clip = grpo.clip_fraction(LOGP, OLD, ADV, torch.tensor([[0.0], [1.0], [0.0], [1.0]]), 0.2)
    assert clip.region == 0.0
    clip = grpo.clip_fraction(LOGP, OLD, ADV, MASK, 0.2, epsilon_high=0.6)
    assert (clip.low, clip.high) == pytest.approx((0.25, 0.0))


# --- aggregation -------------------------------------------------------------------------------------

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])  # 100 = padding
PAD_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


def test_aggregate_grpo_masks_padding():
    # Sequence means 2 and 4, then mean over sequences.
    close(grpo.aggregate(PER_TOKEN, PAD_MASK, "grpo"), 3.0)


def test_aggregate_dr_grpo_constant_denominator():
    # (1+2+3+4) / (2 sequences * max_completion_length 4)
    close(grpo.aggregate(PER_TOKEN, PAD_MASK, "dr_grpo", max_completion_length=4), 1.25)
    close(grpo.aggregate(PER_TOKEN, PAD_MASK, "dr_grpo", max_completion_length=10), 0.5)
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo.aggregate(PER_TOKEN, PAD_MASK, "dr_grpo")


def test_aggregate_micro_batches_add_up():
    for loss_type in grpo.LOSS_TYPES:
        full = grpo.aggregate(PER_TOKEN, PAD_MASK, loss_type, 4)
        parts = sum(grpo.aggregate(PER_TOKEN[i:i + 1], PAD_MASK[i:i + 1], loss_type, 4, num_sequences=2)
                    for i in range(2))
        close(parts, full)


def test_aggregate_empty_sequence_contributes_zero():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    close(grpo.aggregate(PER_TOKEN, mask, "grpo"), 1.0)  # (2 + 0) / 2


def test_aggregate_rejects_unknown_type():
    with pytest.raises(ValueError, match="loss_type"):
        grpo.aggregate(PER_TOKEN, PAD_MASK, "dapo")


# --- full loss ---------------------------------------------------------------------------------------

def test_grpo_loss_with_kl_and_padding():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.9, 0.9]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.1], [0.25, 0.1, 0.1]]))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([1.0, -1.0])
    kl0 = 0.5 + math.log(2) - 1  # k3 at ratio ref/p = 1/2
    loss, metrics = grpo.grpo_loss(logp, logp.detach(), adv, mask, ref_logp=ref, beta=0.1,
                                   loss_type="grpo")
    # Seq 1: tokens (-1 + .1*kl0, -1 + 0) -> mean -1 + .05*kl0; seq 2: 1 + .1*kl0. Mean over seqs.
    expected = ((-1 + 0.05 * kl0) + (1 + 0.1 * kl0)) / 2
    close(loss, expected)
    assert metrics["kl"] == pytest.approx((kl0 + 0 + kl0) / 3, abs=1e-6)
    assert metrics["clip_frac"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0)

    loss, _ = grpo.grpo_loss(logp, logp.detach(), adv, mask, ref_logp=ref, beta=0.1,
                             loss_type="dr_grpo", max_completion_length=3)
    close(loss, ((-2 + 0.1 * kl0) + (1 + 0.1 * kl0)) / 6)


def test_grpo_loss_beta_needs_reference():
    with pytest.raises(ValueError, match="ref_logp"):
        grpo.grpo_loss(LOGP, OLD, ADV, MASK, beta=0.1)
    _, metrics = grpo.grpo_loss(LOGP, OLD, ADV, MASK)
    assert "kl" not in metrics
    assert metrics["clip_frac"] == pytest.approx(0.5)


def test_truncated_importance_weights_by_hand():
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    rollout = torch.tensor([[-1.0, -2.5, -2.0]])
    weights = grpo.truncated_importance_weights(old, rollout, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, math.exp(0.5), 2.0]]))
    with pytest.raises(ValueError, match="cap"):
        grpo.truncated_importance_weights(old, rollout, cap=0.0)


def test_grpo_loss_scales_each_token_by_its_importance_weight():
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    mask = torch.ones(1, 2)
    weights = torch.tensor([[0.5, 2.0]])
    loss, metrics = grpo.grpo_loss(logp, logp.detach(), torch.tensor([1.0]), mask, is_weights=weights)
    # ratio 1: per token -A * w, mean over the sequence's tokens
    assert float(loss) == pytest.approx(-(0.5 + 2.0) / 2)
    assert metrics["is_weight_mean"] == pytest.approx(1.25)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -1.0]]))


# --- the switches' values, without torch (agents/grpo_choices.py) -----------------------------------

def test_trainer_config_and_its_help_import_no_torch():
    """agents.grpo_config checks scale_rewards and loss_type against agents.grpo_choices, not agents.grpo."""
    code = ("import contextlib, io, sys\n"
            "import agents.grpo_config as config\n"
            "assert 'torch' not in sys.modules, 'importing agents.grpo_config imported torch'\n"
            "config.make_config(scale_rewards='none', loss_type='grpo')\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "    config.parse_config(['--help'])\n"
            "assert '--loss-type' in out.getvalue(), out.getvalue()\n"
            "assert 'torch' not in sys.modules, 'parsing --help imported torch'\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr


def test_config_accepts_exactly_the_choices_grpo_implements():
    from agents.cli import ConfigError
    from agents.grpo_config import make_config

    for scale in grpo.SCALE_REWARDS:
        assert make_config(scale_rewards=scale).scale_rewards == scale
    for loss_type in grpo.LOSS_TYPES:
        assert make_config(loss_type=loss_type).loss_type == loss_type
    with pytest.raises(ConfigError, match=r"loss_type='bnpo' \(--loss-type\) must be one of grpo, dr_grpo"):
        make_config(loss_type="bnpo")
