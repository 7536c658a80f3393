"""Warm start for GRPO: a short supervised pass on the generated benchmark's own gold SQL.

    python agents/sft_warmup.py --output-dir runs/warmup          # 64 questions, 1 epoch, flat schema
    python agents/grpo_train.py --warmup-adapter runs/warmup/adapter
    python agents/sft_warmup.py --help                            # every option, with its meaning and default

A small untuned model rarely writes a query that runs against our schema, so most GRPO groups start
with all-equal rewards and carry no signal. This pass teaches the LoRA adapter the schema's column
names and value formats first. It trains only on the built-in ``generated`` benchmark's train split and
its gold SQL (``Example.gold_sql`` for the chosen schema); TempTabQA-C's SQL is never used.

For each question: the observation comes from ``TextToSQLEnv(dataset="generated", split="train")``
(``reset(options={"index": i})``); the prompt is ``policy.prompt(obs)``, which ends with
``PREFILL`` ("```sql\\nSELECT"); the target is the rest of the gold SQL after its leading "SELECT",
then ";\\n```". Gold queries that do not start with SELECT (CTEs) cannot follow the prefill and are
skipped, as are targets longer than ``max_target_tokens``; both are counted. The loss is the mean
negative log-likelihood of the target tokens (``policy.sequence_logprobs``), minimised with AdamW
on the LoRA weights only. Writes ``config.json``, ``metrics.jsonl`` (one line per step:
"step", "epoch", "loss", "tokens") and ``adapter/`` (``policy.save``).

``--max-turns N`` (N > 1): multi-turn episodes on ``TextToSQLAgent-v0`` instead (``agents.agent_warmup``):
0, 1 or 2 explorations built from the gold SQL (seeded), then ``<answer>GOLD</answer>``, each played
through the env so the results between the moves are the env's real observations, laid out as multi-turn
GRPO lays out a sampled episode; the loss covers the moves' tokens only (the env's text is masked), and
the adapter's ``env_config.json`` records ``max_turns`` (evaluate.py then plays N-move episodes).
``max_target_tokens`` then bounds each move. ``--max-turns 1`` is the single-step warm-up above.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file: make `agents` and `sqlenv` importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.adapter_card import write_env_config  # noqa: E402
from agents.cli import ConfigError, bad, dataclass_parser, exit_with  # noqa: E402
from agents.grpo_config import SCHEMAS  # noqa: E402
from agents.preflight import check_model  # noqa: E402

DATASET = "generated"
SPLIT = "train"
EVAL_SPLIT = "dev"
SAMPLE_ROWS = 3  # the env's default: rows per table shown in the prompt
TARGET_END = ";\n```"


@dataclass(frozen=True)
class Config:
    model: str = "smollm2-135m"
    """Base model: "smollm2-135m", "qwen2.5-coder-0.5b", a local Hugging Face folder or a hub id."""
    device: str = "auto"
    """Torch device: "auto" (CUDA when available), "cpu", "cuda", ..."""
    dtype: str = "auto"
    """Weights' dtype: "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16" or "float16"."""
    schema: str = "flat"
    """Database layout of the prompts and gold SQL: "flat" or "tables" (use the one GRPO will train on)."""
    few_shot: int = 2
    """Worked examples in the prompt (use the value GRPO will train with)."""
    column_values: int = 0
    """Most frequent text values listed per column in the prompt's schema (use the value GRPO will train with)."""
    examples: int = 64
    """Generated train questions drawn (seeded); skipped ones (CTE gold SQL, too long) are not replaced."""
    epochs: int = 1
    """Passes over the drawn questions."""
    batch_size: int = 4
    """Questions per optimizer step (no two in a batch share a prompt)."""
    learning_rate: float = 2e-4
    """AdamW learning rate of the LoRA parameters."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (0 = no clipping)."""
    lora_r: int = 16
    """LoRA rank (grpo_train continues with the adapter's own rank)."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    max_target_tokens: int = 96
    """Targets longer than this many tokens are skipped (and counted); with --max-turns > 1, episodes with a
    move longer than this."""
    max_turns: int = 1
    """1: the single-step warm-up (prefilled SELECT); N > 1: multi-turn episodes of up to N moves on
    TextToSQLAgent-v0 (0-2 explorations from the gold SQL, then the gold answer); use grpo_train's value."""
    recovery: float = 0.0
    """With --max-turns >= 3: the share of questions whose episode recovers from a mistake (the gold with one
    text value guessed wrong, its 0 or empty result, the column's distinct values, then the gold answer)."""
    max_completion_length: int = 64
    """Completion length saved with the adapter (policy_config.json), what benchmarks/evaluate.py then
    samples with; use grpo_train's --max-completion-length."""
    update_dtype: str | None = None
    """Autocast precision of the training forward: none (the weights' dtype), "auto" (bfloat16 where the
    weights are float32 on a CPU with native bfloat16 products, as grpo_train's --update-dtype), "bfloat16"
    or "float16". The LoRA weights and AdamW stay in the weights' dtype."""
    threads: int | None = 1
    """Torch CPU threads (none = torch's choice)."""
    seed: int = 0
    """Seed of the question draw, the batch order and the LoRA initialisation."""
    output_dir: str = "runs/sft_warmup"
    """Run folder: config.json, metrics.jsonl and adapter/ (pass adapter/ to grpo_train --warmup-adapter)."""

    def __post_init__(self):
        if self.schema not in SCHEMAS:
            bad("schema", self.schema, f"must be one of {', '.join(SCHEMAS)}")
        for name in ("examples", "epochs", "batch_size", "lora_r", "lora_alpha", "max_target_tokens",
                     "max_completion_length", "max_turns"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), "must be >= 1")
        for name in ("few_shot", "column_values", "learning_rate", "max_grad_norm"):
            if getattr(self, name) < 0:
                bad(name, getattr(self, name), "must be >= 0")
        if self.threads is not None and self.threads < 1:
            bad("threads", self.threads, "must be >= 1 (or none)")
        if not 0 <= self.recovery <= 1:
            bad("recovery", self.recovery, "must be between 0 and 1")
        if self.recovery and self.max_turns < 3:
            bad("recovery", self.recovery, "needs --max-turns >= 3 (a mistake, a look-up, the answer)")
        if self.update_dtype not in (None, "auto", "bfloat16", "float16"):
            bad("update_dtype", self.update_dtype, "must be auto, bfloat16, float16 or none")


PROG = "python agents/sft_warmup.py"


def build_parser() -> argparse.ArgumentParser:
    return dataclass_parser(Config, prog=PROG, description=__doc__.split("\n\n")[0])


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """CLI -> Config; an invalid value exits with status 2 and a message naming the field."""
    parser = build_parser()
    try:
        return Config(**vars(parser.parse_args(argv)))
    except ConfigError as error:
        parser.error(str(error))


# ====================================================================================== data
def target_text(gold_sql: str) -> str | None:
    """What the model writes after the prompt's PREFILL: the gold SQL minus its leading "SELECT",
    then ";\\n```"; None when the gold SQL does not start with SELECT (it cannot follow the prefill)."""
    sql = gold_sql.strip().rstrip(";").rstrip()
    if sql[:6].upper() != "SELECT" or (len(sql) > 6 and (sql[6].isalnum() or sql[6] == "_")):
        return None
    return sql[6:] + TARGET_END


def make_batches(items: Sequence[dict], batch_size: int) -> list[list[dict]]:
    """Consecutive batches of at most ``batch_size`` items, no two in a batch with the same prompt;
    an item whose prompt is already in the open batch goes to the next batch that lacks it."""
    batches: list[list[dict]] = []
    for item in items:
        for batch in batches:
            if len(batch) < batch_size and all(other["prompt"] != item["prompt"] for other in batch):
                batch.append(item)
                break
        else:
            batches.append([item])
    return batches


def build_env(cfg: Config):
    """The warm-up's env: ``TextToSQLEnv`` on the generated train split, ``TextToSQLAgentEnv`` with
    ``max_turns`` > 1."""
    if cfg.max_turns > 1:
        from sqlenv.agent_env import TextToSQLAgentEnv

        return TextToSQLAgentEnv(dataset=DATASET, split=SPLIT, schema=cfg.schema, sample_rows=SAMPLE_ROWS,
                                 column_values=cfg.column_values, max_turns=cfg.max_turns)
    from sqlenv.env import TextToSQLEnv

    return TextToSQLEnv(dataset=DATASET, split=SPLIT, schema=cfg.schema, sample_rows=SAMPLE_ROWS,
                        column_values=cfg.column_values)


def build_examples(cfg: Config, policy, env=None) -> tuple[list[dict], dict[str, int]]:
    """Tokenised (prompt, target) items of ``cfg.examples`` seeded generated train questions, and counts
    of the skipped ones ("skipped_not_select", "skipped_too_long"); with ``max_turns`` > 1 multi-turn
    episodes (``agents.agent_warmup.build_episodes``: items also carry ``loss_mask``)."""
    if env is None:
        env = build_env(cfg)
    indices = list(range(len(env.dataset)))
    random.Random(cfg.seed).shuffle(indices)
    if cfg.max_turns > 1:
        from agents.agent_warmup import build_episodes

        if getattr(env, "max_turns", None) != cfg.max_turns:
            raise ValueError(f"max_turns={cfg.max_turns} needs a TextToSQLAgentEnv with max_turns={cfg.max_turns}, "
                             f"got {type(env).__name__} with max_turns={getattr(env, 'max_turns', None)}")
        return build_episodes(indices[:cfg.examples], policy, env, seed=cfg.seed,
                              max_move_tokens=cfg.max_target_tokens, recovery=cfg.recovery)
    items, counts = [], {"skipped_not_select": 0, "skipped_too_long": 0}
    for index in indices[:cfg.examples]:
        obs, _ = env.reset(options={"index": index})
        target = target_text(env.example(index).gold_sql)
        if target is None:
            counts["skipped_not_select"] += 1
            continue
        target_ids = policy.encode(target)
        if len(target_ids) > cfg.max_target_tokens:
            counts["skipped_too_long"] += 1
            continue
        prompt = policy.prompt(obs)
        items.append({"index": index, "prompt": prompt, "prompt_ids": policy.encode(prompt),
                      "target": target, "target_ids": target_ids})
    return items, counts


# ====================================================================================== training
def nll_loss(policy, batch: Sequence[dict]):
    """Mean negative log-likelihood of the batch's target tokens (all tokens weigh the same); for multi-turn
    episodes only the moves' tokens (``agents.grpo_update.loss_weights``, as multi-turn GRPO masks them)."""
    logprobs, mask = policy.sequence_logprobs([b["prompt_ids"] for b in batch], [b["target_ids"] for b in batch])
    if "episode" in batch[0]:
        from agents.grpo_update import loss_weights

        mask = loss_weights([b["episode"] for b in batch], mask)
    return -(logprobs * mask).sum() / mask.sum().clamp(min=1.0)


def train_step(policy, optimizer, batch: Sequence[dict], max_grad_norm: float = 0.0,
               cfg: Config | None = None) -> float:
    """One AdamW step on the batch's NLL (its forward under ``cfg.update_dtype``'s autocast); returns the
    loss before the step."""
    import contextlib

    import torch

    from agents.grpo_update import update_precision

    policy.model.train()
    optimizer.zero_grad(set_to_none=True)
    with update_precision(policy, cfg) if cfg is not None else contextlib.nullcontext():
        loss = nll_loss(policy, batch)
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), max_grad_norm)
    optimizer.step()
    policy.model.eval()
    return float(loss.detach())


def build_policy(cfg: Config):
    from agents.policy import LoRAPolicy, PolicyConfig

    return LoRAPolicy(PolicyConfig(model=cfg.model, device=cfg.device, dtype=cfg.dtype, lora_r=cfg.lora_r,
                                   lora_alpha=cfg.lora_alpha, threads=cfg.threads, few_shot=cfg.few_shot,
                                   max_completion_length=cfg.max_completion_length))


def train(cfg: Config, policy=None, env=None) -> dict[str, Any]:
    """Run the warm-up; returns a summary (adapter path, steps, first/last loss, skipped counts).

    ``policy`` and ``env`` default to ones built from ``cfg`` (tests pass a tiny model)."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    policy = policy if policy is not None else build_policy(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    items, counts = build_examples(cfg, policy, env)
    if not items:
        raise ValueError(f"no usable examples among {cfg.examples} drawn ({counts}); raise --examples "
                         "or --max-target-tokens")
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    order_rng = random.Random(cfg.seed + 1)
    epochs = [make_batches(order_rng.sample(items, len(items)), cfg.batch_size) for _ in range(cfg.epochs)]
    losses: list[float] = []
    start = time.perf_counter()
    with (out / "metrics.jsonl").open("w") as log:
        bar = tqdm(total=sum(len(e) for e in epochs), desc="sft-warmup", dynamic_ncols=True)
        for epoch, batches in enumerate(epochs):
            for batch in batches:
                loss = train_step(policy, optimizer, batch, cfg.max_grad_norm, cfg)
                losses.append(loss)
                tokens = sum(len(b["target_ids"]) if "loss_mask" not in b else int(b["loss_mask"].sum())
                             for b in batch)
                log.write(json.dumps({"step": len(losses), "epoch": epoch, "loss": loss, "tokens": tokens}) + "\n")
                log.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        bar.close()
    adapter = policy.save(out / "adapter")
    write_env_config(adapter, dataset=DATASET, data_dir=None, split=SPLIT, eval_split=EVAL_SPLIT, schema=cfg.schema,
                     sample_rows=SAMPLE_ROWS, column_values=cfg.column_values, reward="binary", max_turns=cfg.max_turns)
    summary = {"adapter": str(adapter), "examples": len(items), **counts, "steps": len(losses),
               "first_loss": losses[0], "last_loss": losses[-1],
               "seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(argv)
    try:
        check_model(cfg.model)
        return train(cfg)
    except ConfigError as error:
        exit_with(PROG, error)


if __name__ == "__main__":
    main()
