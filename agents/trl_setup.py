"""What sqlenv hands TRL besides the env: the LoRA and the ``GRPOConfig`` its TRL paths share.

``examples/trl_grpo.py``, ``examples/trl_environment.py`` and ``agents/tool_warmup.py`` (whose adapter
``trl_environment.py --warmup-adapter`` goes on training) build these here, so a run and its warm-up
adapt the same modules. peft, torch and trl are imported only when called: a script's ``--help`` stays fast.
"""

from __future__ import annotations

from typing import Any

from agents.models import LORA_TARGETS


def lora_config(r: int, token_rows: dict[str, list[int]] | None = None):
    """peft's ``LoraConfig``: rank ``r``, alpha ``2r``, no dropout, on ``LORA_TARGETS``; ``token_rows`` (module
    name -> token ids, from ``agents.tool_warmup.tool_tag_rows``) are trained as whole rows besides."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=list(LORA_TARGETS),
                      trainable_token_indices=token_rows or None)


def grpo_config(output_dir: str, *, num_generations: int, max_completion_length: int, temperature: float,
                max_steps: int, batch_size: int, learning_rate: float, seed: int, beta: float = 0.0,
                **trl_fields: Any):
    """TRL's ``GRPOConfig`` with these settings, on the GPU where CUDA is there (bf16 where supported) and on the
    CPU otherwise, a log line every step, no checkpoints, no reporting service; ``trl_fields`` (tool calls,
    evaluation, sampling) are passed to it as they are."""
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    return GRPOConfig(
        output_dir=output_dir,
        # generation
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        # training
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        beta=beta,
        seed=seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        # logging
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
        **trl_fields,
    )
