"""GRPO on a Spider / BIRD / JSONL dataset with TRL's GRPOTrainer and sqlenv's execution reward.

    pip install -e '.[agents,trl]'
    python examples/trl_grpo.py --dataset spider --data-dir ~/data/spider --split train
    python examples/trl_grpo.py --dataset bird --data-dir ~/data/bird --split dev --model qwen2.5-coder-0.5b
    python examples/trl_grpo.py --dataset spider --data-dir tests/fixtures/spider --model tiny-random --max-steps 1

What sqlenv provides: the prompts (``to_trl_dataset``: schema, sample rows, question as chat
messages) and the reward (``SQLReward``: extract the SQL with the trainer's extractor and score it
through the env's own scoring: read-only execution with a time and ``--max-instructions`` budget,
comparison with the cached gold result, a preset of sqlenv.rewards). Everything else
(sampling, advantages, the clipped loss, LoRA through ``peft_config``) is TRL's. ``--model
tiny-random`` is a randomly initialised two-layer Llama with SmolLM2's tokenizer, for smoke tests;
the named models load offline through ``agents.models`` (any local folder or hub id works too). The
tiny defaults (2 steps, 2 questions x 2 completions, 48 new tokens) run on a laptop CPU; raise them
for real training (``--max-steps 500 --num-generations 8 --batch-size 16`` on a GPU).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from agents.cli import dataclass_parser, registry_help


@dataclass
class Args:
    dataset: str = "spider"
    """sqlenv dataset (generated is built in, the others need --data-dir), one of:"""
    data_dir: str | None = None
    """Folder of the download (else $SQLENV_DATA_DIR)."""
    split: str = "train"
    """Split to train on."""
    limit: int | None = None
    """Use only the first N questions."""
    model: str = "smollm2-135m"
    """A local model folder, a hub id, 'tiny-random' (a random two-layer Llama, for smoke tests) or an
    agents.models name:"""
    reward: str = "binary"
    """Reward preset (sqlenv.rewards):"""
    max_instructions: int | None = None
    """Each query's budget in SQLite VM instructions (the env's; same rewards on every machine)."""
    lora_r: int = 16
    """LoRA rank (0: train every weight)."""
    max_steps: int = 2
    """Optimizer steps."""
    num_generations: int = 2
    """Completions per question (the GRPO group size G)."""
    batch_size: int = 4
    """Completions per device step (a multiple of num_generations)."""
    max_completion_length: int = 48
    """New tokens per completion."""
    learning_rate: float = 1e-5
    """AdamW learning rate."""
    beta: float = 0.0
    """KL coefficient (0: no reference model, as in recent GRPO practice)."""
    temperature: float = 0.8
    """Sampling temperature."""
    output_dir: str = "runs/trl_grpo"
    """Where TRL writes logs and the final adapter."""
    seed: int = 0
    """Random seed."""
    save: bool = False
    """Save the trained model/adapter to output_dir at the end."""


def build_parser():
    """The command line of ``Args`` (``agents.cli``, the trainer's builder): a field's docstring is its
    help, followed by the registered datasets, models and reward presets as they are now."""
    return dataclass_parser(Args, prog="python examples/trl_grpo.py", description=__doc__.split("\n\n")[0],
                            extra_help=registry_help())


def parse_args(argv=None) -> Args:
    """``Args`` from the command line (unset flags keep the field defaults)."""
    return Args(**vars(build_parser().parse_args(argv)))


def tiny_random_model():
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer (offline, seconds to build)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agents.models import smollm2_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config), tokenizer


def main(args: Args) -> dict:
    from trl import GRPOTrainer

    from agents.trl_setup import grpo_config, lora_config
    from sqlenv.datasets import load_dataset
    from sqlenv.integrations.trl import SQLReward, to_trl_dataset

    start = time.time()
    kwargs = {"limit": args.limit} if args.limit else {}
    dataset = load_dataset(args.dataset, split=args.split, data_dir=args.data_dir, **kwargs)
    summary = getattr(dataset, "summary", None)
    print(summary if summary is not None else dataset)
    train = to_trl_dataset(dataset)
    reward = SQLReward(dataset, reward=args.reward, max_instructions=args.max_instructions)

    if args.model == "tiny-random":
        model, tokenizer = tiny_random_model()
    else:
        from agents.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.model)
        model.train()
    peft_config = lora_config(args.lora_r) if args.lora_r > 0 else None
    config = grpo_config(args.output_dir, num_generations=args.num_generations,
                         max_completion_length=args.max_completion_length, temperature=args.temperature,
                         max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         beta=args.beta, seed=args.seed)
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward,
        train_dataset=train,
        args=config,
        peft_config=peft_config,
    )
    trainer.train()
    if args.save:
        trainer.save_model(args.output_dir)
    history = [h for h in trainer.state.log_history if "reward" in h]
    result = {
        "steps": trainer.state.global_step,
        "seconds": round(time.time() - start, 1),
        "last_reward": history[-1]["reward"] if history else None,
        "reward_call": reward.summary(),
    }
    print(json.dumps(result))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "result.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(parse_args())
