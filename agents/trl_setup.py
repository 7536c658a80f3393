"""What sqlenv hands TRL besides the env: the LoRA, the ``GRPOConfig`` and the ``GRPOTrainer`` its TRL paths share.

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
                save_steps: int = 0, **trl_fields: Any):
    """TRL's ``GRPOConfig`` with these settings, on the GPU where CUDA is there (bf16 where supported) and on the
    CPU otherwise, a log line every step, a checkpoint every ``save_steps`` (adapter, optimizer, schedule and
    random states, for ``resume_from_checkpoint``; 0: none), no reporting service; ``trl_fields`` (tool calls,
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
        save_strategy="steps" if save_steps else "no",
        **({"save_steps": save_steps} if save_steps else {}),
        dataloader_num_workers=0,
        **trl_fields,
    )


def eval_generation_kwargs(generation_kwargs: dict[str, Any], temperature: float) -> dict[str, Any]:
    """TRL's ``generation_kwargs`` for an evaluation at ``temperature``: greedy at 0 (the sampling settings
    dropped), else sampled at that temperature; the other settings (token budget, ``sequence_bias``) kept."""
    if temperature < 0:
        raise ValueError(f"eval temperature {temperature}: must be >= 0 (0: greedy)")
    if temperature > 0:
        return {**generation_kwargs, "do_sample": True, "temperature": temperature}
    sampling = ("temperature", "top_p", "top_k", "min_p")
    return {**{k: v for k, v in generation_kwargs.items() if k not in sampling}, "do_sample": False}


def resume_learning_rate(optimizer, scheduler) -> list[float] | None:
    """Set ``optimizer``'s learning rates to what ``scheduler``'s schedule gives at the step it was loaded at; return
    them (None: not a ``LambdaLR``, left as loaded). A checkpoint's optimizer holds the rate its own schedule set
    after its last step: a finished run gone on with a larger ``max_steps`` had decayed it to 0 (linear), so its
    first resumed step would not learn. transformers' schedules are ``LambdaLR``s whose lambdas the checkpoint
    does not hold, so this run's lambda at the loaded step gives the rate (the same one when ``max_steps`` is)."""
    from torch.optim.lr_scheduler import LambdaLR

    scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
    if not isinstance(scheduler, LambdaLR):
        return None
    rates = [base * rate(scheduler.last_epoch) for base, rate in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, rates):
        group["lr"] = lr
    scheduler._last_lr = list(rates)  # what the trainer logs as the step's learning rate
    return rates


def grpo_trainer(eval_temperature: float | None = None, eval_seed: int | None = None, **trainer_kwargs):
    """TRL's ``GRPOTrainer(**trainer_kwargs)``, resumed at its schedule's learning rate (:func:`resume_learning_rate`),
    whose evaluations decode at ``eval_temperature`` (0: greedy; None: at the training temperature, as TRL does) and
    play the held-out rows in the order ``eval_seed`` shuffles them to (None: the config's seed, as TRL does). Greedy
    evaluations score the policy, not one draw of it: the same questions give the same rollouts, before and after
    training alike, and with one ``eval_seed`` in runs of other seeds too (the same rows batched together).
    Training samples as configured. transformers generation only (``use_vllm`` is refused with an eval
    temperature)."""
    from transformers import GenerationConfig
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class EvalTemperatureGRPOTrainer(GRPOTrainer):
        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is not None:
                resume_learning_rate(self.optimizer, self.lr_scheduler)

        def _get_eval_sampler(self, eval_dataset):
            if eval_seed is None:
                return super()._get_eval_sampler(eval_dataset)
            return RepeatSampler(data_source=eval_dataset, mini_repeat_count=self.num_generations_eval, seed=eval_seed)

        def evaluate(self, *args, **kwargs):
            if eval_temperature is None:
                return super().evaluate(*args, **kwargs)
            saved = self.generation_config, self.generation_kwargs
            self.generation_kwargs = eval_generation_kwargs(saved[1], eval_temperature)
            self.generation_config = GenerationConfig(**self.generation_kwargs, disable_compile=True)
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                self.generation_config, self.generation_kwargs = saved

    args = trainer_kwargs.get("args")
    if eval_temperature is not None and getattr(args, "use_vllm", False):
        raise ValueError("eval_temperature needs transformers generation; with use_vllm, TRL's vLLM client "
                         "samples at the training temperature")
    if eval_temperature is not None and eval_temperature < 0:
        raise ValueError(f"eval_temperature {eval_temperature}: must be >= 0 (0: greedy)")
    return EvalTemperatureGRPOTrainer(**trainer_kwargs)
