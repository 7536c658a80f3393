"""--update-dtype: the update's forwards run under autocast, the LoRA weights and AdamW stay float32,
and the rollout log-probs are corrected as for --rollout-dtype."""

from __future__ import annotations

import pytest
import torch

from agents import grpo_train, metrics_log
from agents.cli import ConfigError
from agents.grpo_config import make_config
from agents.policy import LoRAPolicy
from tests.test_grpo_train import TINY, with_signal
from tests.tiny_llama import save_tiny_llama


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_update_dtype_runs_the_update_forwards_under_bfloat16_autocast(tiny_model, tmp_path, monkeypatch):
    seen = []  # (grad enabled, autocast on, autocast dtype) of each scoring forward
    original = LoRAPolicy.sequence_logprobs

    def spy(self, *args, **kwargs):
        seen.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LoRAPolicy, "sequence_logprobs", spy)
    monkeypatch.setattr(grpo_train, "score_groups", with_signal(grpo_train.score_groups))
    cfg = make_config(steps=1, output_dir=str(tmp_path / "run"), model=tiny_model, update_dtype="bfloat16",
                      beta=0.1, **{**TINY, "eval_limit": 0, "probe_questions": 0})
    grpo_train.train(cfg)
    # the KL reference pass (no grad) and the training pass (grad), both in bfloat16 autocast
    assert seen == [(False, True, torch.bfloat16), (True, True, torch.bfloat16)]
    record = [r for r in metrics_log.read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/reward_mean" in r][0]
    assert record["train/ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # old log-probs: the update's own forward
    assert 0 < record["train/is_weight_mean"] <= cfg.tis_cap
    assert record["train/rollout_mismatch"] > 0  # float32 sampling against a bfloat16 forward
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "checkpoints" / "step_000001" / "adapter" / "adapter_model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}  # the LoRA weights stay float32


@pytest.mark.parametrize("update_dtype, native_bf16, autocast", [
    (None, True, False), ("auto", False, False), ("auto", True, True)])
def test_update_dtype_none_or_auto_without_native_bfloat16_means_no_autocast(
        tiny_model, tmp_path, monkeypatch, update_dtype, native_bf16, autocast):
    """The default "auto" autocasts the update in bfloat16 only where the CPU multiplies it natively."""
    seen = []
    original = LoRAPolicy.sequence_logprobs

    def spy(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LoRAPolicy, "sequence_logprobs", spy)
    monkeypatch.setattr(grpo_train, "score_groups", with_signal(grpo_train.score_groups))
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": native_bf16, "amx_bf16": False})
    cfg = make_config(steps=1, output_dir=str(tmp_path / "run"), model=tiny_model, device="cpu",
                      update_dtype=update_dtype, **{**TINY, "eval_limit": 0, "probe_questions": 0})
    assert make_config().update_dtype == "auto"
    grpo_train.train(cfg)
    assert seen and set(seen) == {autocast}


def test_update_dtype_is_validated():
    with pytest.raises(ConfigError, match="update_dtype"):
        make_config(update_dtype="int8")
