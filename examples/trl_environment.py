"""GRPO with TRL's GRPOTrainer(environment_factory=...): the model calls sqlenv's SQL tools, sqlenv scores.

    pip install -e '.[agents,trl]'
    python examples/trl_environment.py                                 # built-in benchmark, SmolLM2, CPU
    python examples/trl_environment.py --single-step                   # submit_answer only (TextToSQL-v0)
    python examples/trl_environment.py --dataset spider --data-dir ~/data/spider --model qwen2.5-coder-0.5b
    python agents/tool_warmup.py --output-dir runs/tool_warmup && \
        python examples/trl_environment.py --warmup-adapter runs/tool_warmup/adapter   # calls tools from step 1
    python examples/trl_environment.py --max-steps 20 --eval-split dev --eval-limit 32   # held-out reward before/after
    python examples/trl_environment.py --eval-only --eval-split dev --eval-temperature 0 \
        --warmup-adapter runs/trl_environment --output-dir runs/trl_eval   # a saved adapter, greedy, held out
    python examples/trl_environment.py --max-steps 40 --save-steps 5   # stopped? the same command + --resume last
    python examples/trl_environment.py --num-generations 4 --gradient-accumulation-steps 4   # 4 questions a step

What sqlenv provides: the environment TRL instantiates once per rollout
(``SQLEnvironmentFactory``: ``reset`` pins the row's question and returns its schema, sample rows
and question; the tools ``run_sql`` and ``submit_answer`` are moves of ``TextToSQLAgent-v0``, or
``submit_answer`` alone is the step of ``TextToSQL-v0`` with ``--single-step``), the prompts
(``factory.train_dataset()``) and the reward (``SQLEnvReward``: each rollout's episode return under
the preset). TRL does the rest: it renders the tools into the prompt, parses the model's tool calls,
runs them, feeds the results back until the model stops or ``--max-tool-calls`` is reached, then
computes advantages and the clipped loss. TRL runs only calls written as Qwen2.5's template writes
them, ``<tool_call>`` + one JSON line + ``</tool_call>``, so the system prompt
(``sqlenv.prompts.TOOLS_AGENT_SYSTEM_PROMPT``) ends with one such call, written out; without it
Qwen2.5-Coder-0.5B writes its calls as a ```json fence that TRL does not parse
(``benchmarks/tool_call_check.py`` counts both). So the example also makes TRL's parser accept a fenced
or bare one-line JSON call naming one of the tools (``accept_json_tool_calls``, which sets the tokenizer's
``response_template`` before ``GRPOTrainer`` is built; ``--strict-tool-calls`` keeps TRL's parser), and
stop TRL's tool loop for a rollout whose episode is over (``end_tool_loop_at_episode_end``: a call after the
answer would cost a generation round and change nothing; ``--calls-after-end`` runs them as TRL does).
SmolLM2's own chat template cannot show tools, so
``ensure_tool_chat_template`` swaps in a ChatML tool template (see docs/integrations.md). The tiny
defaults (1 step, 2 questions x 2 completions, 64 new tokens) run on a laptop CPU; raise them for
real training on a GPU. ``--warmup-adapter`` starts from ``agents/tool_warmup.py``'s adapter (supervised
tool-call episodes), so the model calls the tools in TRL's format from the first step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from agents.cli import dataclass_parser, registry_help
from agents.grpo_choices import SCALE_REWARDS


@dataclass
class Args:
    dataset: str = "generated"
    """sqlenv dataset (generated is built in, the others need --data-dir), one of:"""
    data_dir: str | None = None
    """Folder of the download (else $SQLENV_DATA_DIR); not needed for generated."""
    split: str = "train"
    """Split to train on."""
    limit: int | None = None
    """Use only the first N questions."""
    eval_split: str | None = None
    """Held-out split played through TRL's own tool loop (GRPOTrainer.evaluate: TRL's eval_reward and our
    eval_sqlenv_env/* metrics) before training, every --eval-steps and after the last step (none: no evaluation)."""
    eval_limit: int | None = 32
    """Questions of --eval-split: a seeded subset (--eval-seed; benchmarks/evaluate.py --limit's subsets) or, none,
    all."""
    eval_seed: int | None = None
    """Seed of the held-out subset and of the order TRL plays it in (none: --seed): runs of other seeds, or a run
    that goes on from another's adapter under a new --seed, are evaluated on the same questions in the same batches."""
    eval_steps: int = 0
    """Evaluate every N optimizer steps too (0: only before and after training)."""
    eval_generations: int = 1
    """Rollouts per held-out question (1 with --eval-temperature 0: greedy rollouts are all the same)."""
    eval_temperature: float | None = None
    """Temperature of the held-out rollouts (0: greedy, so the same questions give the same rollouts before and
    after training; none: --temperature, as TRL does)."""
    eval_before: bool = True
    """Evaluate before the first step too (TRL's eval_on_start); --no-eval-before skips it when the start's greedy
    figures are already measured (an --eval-only run, or an earlier run's evaluation before training)."""
    eval_only: bool = False
    """Only play --eval-split with the starting policy (--warmup-adapter, else the base model) and train nothing:
    a trained adapter's held-out figures, or its start's, from saved adapters."""
    single_step: bool = False
    """Only the submit_answer tool (TextToSQL-v0) instead of run_sql + submit_answer (TextToSQLAgent-v0)."""
    max_turns: int = 5
    """Moves per episode, the answer included (multi-turn only)."""
    echo_moves: bool = True
    """run_sql/submit_answer results start with the move's query (the env's transcript entry); --no-echo-moves:
    "Turn t/N" and the result alone, since the tool call already holds the query: fewer of --max-completion-length's
    tokens spent on tool results (multi-turn only; the warm-up's --no-echo-moves shows the model that form)."""
    filter_hints: bool = False
    """run_sql: a result that is empty, 0 or NULL also names each text value the query filters on that matches no
    row, with that column's values (multi-turn only; sqlenv/filter_hints.py)."""
    schema: str = "tables"
    """How the prompt shows the database: "tables" (the five tables) or "flat" (one joined view, as our trainer)."""
    column_values: int = 0
    """Distinct values listed per text column in the prompt (0: none)."""
    model: str = "smollm2-135m"
    """A local model folder or an agents.models name:"""
    reward: str = "binary"
    """Reward preset (sqlenv.rewards):"""
    max_instructions: int | None = None
    """Each query's budget in SQLite VM instructions (the env's; same rewards on every machine)."""
    lora_r: int = 16
    """LoRA rank (0: train every weight)."""
    warmup_adapter: str | None = None
    """Start from this LoRA adapter (agents/tool_warmup.py's adapter/, trained further; its rank wins over
    --lora-r) instead of a fresh one."""
    max_steps: int = 1
    """Optimizer steps."""
    num_generations: int = 2
    """Rollouts per question (the GRPO group size G)."""
    batch_size: int = 4
    """Rollouts per device step (a multiple of num_generations)."""
    gradient_accumulation_steps: int = 1
    """Batches of --batch-size rollouts per optimizer step (TRL's; it samples them as one generation batch): a step
    sees N x batch_size / num_generations questions at the update memory of one batch."""
    max_completion_length: int = 64
    """Tokens per rollout, tool results included."""
    max_tool_calls: int = 4
    """Tool-calling rounds per rollout."""
    strict_tool_calls: bool = False
    """Run only <tool_call>-tagged calls (TRL's parser); by default a fenced or bare one-line JSON call naming a
    tool runs too (accept_json_tool_calls)."""
    calls_after_end: bool = False
    """Let TRL run the tool calls a rollout writes after its episode ended (each costs a generation round, changes
    no reward; runs before 2026-12-07 did); by default its loop stops there (end_tool_loop_at_episode_end)."""
    learning_rate: float = 1e-5
    """AdamW learning rate."""
    scale_rewards: str = "group"
    """How TRL divides the advantages: by each group's reward std ("group", TRL's default), by the batch's ("batch",
    our trainer's default) or not at all ("none"). Under "group" a group with no right answer that tells a query that
    ran from one that failed pushes toward running as hard as a solved group pushes toward the answer."""
    temperature: float = 0.8
    """Sampling temperature."""
    repetition_penalty: float = 1.0
    """Divide the logits of tokens already in the prompt or completion by this (TRL's; 1.0: off); against a
    small model looping inside its query."""
    output_dir: str = "runs/trl_environment"
    """Where TRL writes logs (and result.json, and rollouts.jsonl: each rollout's tool calls and reward)."""
    seed: int = 0
    """Random seed."""
    threads: int | None = None
    """Torch CPU threads (none = torch's choice; on a busy CPU, 1 is often fastest)."""
    save: bool = False
    """Save the trained adapter to output_dir at the end."""
    save_steps: int = 0
    """Also save a checkpoint every N steps (output_dir/checkpoint-N: the adapter, optimizer, learning-rate
    schedule and random states; 0: none), so a stopped run can go on with --resume."""
    resume: str | None = None
    """Go on from a checkpoint of this run (a checkpoint-N folder, or last: the latest in --output-dir) with its
    optimizer, schedule and random states, the other flags as the run had them; rollouts.jsonl keeps the
    checkpoint's steps and drops the rest, and the evaluation before the first step is not played again."""


def build_parser():
    """The command line of ``Args`` (``agents.cli``, the trainer's builder): a field's docstring is its
    help, followed by the registered datasets, models and reward presets as they are now."""
    return dataclass_parser(Args, prog="python examples/trl_environment.py", description=__doc__.split("\n\n")[0],
                            extra_help=registry_help())


def parse_args(argv=None) -> Args:
    """``Args`` from the command line (unset flags keep the field defaults); a warm-up adapter whose episodes
    were played with other env settings than this run's is refused (its config.json says which)."""
    parser = build_parser()
    args = Args(**vars(parser.parse_args(argv)))
    for name in ("eval_limit", "eval_generations", "gradient_accumulation_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} {value}: must be >= 1")
    if args.eval_temperature is not None and args.eval_temperature < 0:
        parser.error(f"--eval-temperature {args.eval_temperature}: must be >= 0 (0: greedy)")
    if args.eval_temperature == 0 and args.eval_generations > 1:
        parser.error(f"--eval-generations {args.eval_generations} with --eval-temperature 0: greedy rollouts of one "
                     "question are all the same; pass 1")
    if args.eval_only and not args.eval_split:
        parser.error("--eval-only needs --eval-split (the split to evaluate on)")
    if args.scale_rewards not in SCALE_REWARDS:
        parser.error(f"--scale-rewards {args.scale_rewards!r}: choose one of {', '.join(SCALE_REWARDS)}")
    if args.eval_steps < 0:
        parser.error(f"--eval-steps {args.eval_steps}: must be >= 0 (0: before and after training only)")
    if args.save_steps < 0:
        parser.error(f"--save-steps {args.save_steps}: must be >= 0 (0: no checkpoints)")
    if args.resume and args.eval_only:
        parser.error("--resume with --eval-only: an evaluation trains nothing to go on with")
    if args.resume:
        try:
            resume_checkpoint(args)
        except ValueError as exc:
            parser.error(str(exc))
    if not args.repetition_penalty > 0:
        parser.error(f"--repetition-penalty {args.repetition_penalty}: must be > 0 (1.0: off)")
    if args.warmup_adapter:
        config = Path(args.warmup_adapter).parent / "config.json"
        if not (Path(args.warmup_adapter) / "adapter_config.json").is_file():
            parser.error(f"--warmup-adapter {args.warmup_adapter}: no adapter_config.json there "
                         "(pass the adapter/ folder agents/tool_warmup.py wrote)")
        if config.is_file():
            warmup = json.loads(config.read_text())
            warmup = {"echo_moves": True, "single_step": False, **warmup}  # as warm-ups before these settings
            turns = () if warmup["single_step"] else ("max_turns", "echo_moves")
            for name in ("model", "schema", "column_values", "single_step", *turns):
                if name in warmup and warmup[name] != getattr(args, name):
                    flag = name.replace("_", "-")
                    flag = (f"--{flag}" if warmup[name] else f"--no-{flag}") if isinstance(warmup[name], bool) \
                        else f"--{flag} {warmup[name]}"
                    parser.error(f"--warmup-adapter was trained with {name}={warmup[name]!r} ({config}), "
                                 f"this run has {name}={getattr(args, name)!r}: pass {flag}")
    return args


def resume_checkpoint(args: Args) -> Path | None:
    """The checkpoint ``--resume`` names (``last``: the highest ``checkpoint-N`` in ``--output-dir``), or None;
    a folder that is not a checkpoint TRL wrote is an error naming it."""
    if not args.resume:
        return None
    if args.resume == "last":
        steps = {int(p.name.removeprefix("checkpoint-")): p for p in Path(args.output_dir).glob("checkpoint-*")
                 if p.name.removeprefix("checkpoint-").isdigit()}
        if not steps:
            raise ValueError(f"--resume last: no checkpoint-N folder in --output-dir {args.output_dir} "
                             "(a run writes them with --save-steps)")
        return steps[max(steps)]
    checkpoint = Path(args.resume)
    if not (checkpoint / "trainer_state.json").is_file():
        raise ValueError(f"--resume {args.resume}: no trainer_state.json there (pass a checkpoint-N folder a run "
                         "wrote with --save-steps, or last)")
    return checkpoint


def grpo_config(args: Args):
    """TRL's ``GRPOConfig`` for this run (``agents.trl_setup.grpo_config``): our flags, no KL term, tool calls,
    the held-out evaluation where ``--eval-split`` asks for one."""
    from agents.trl_setup import grpo_config as trl_grpo_config

    evaluation = {} if not args.eval_split else {
        "eval_strategy": "steps",
        "eval_steps": args.eval_steps or args.max_steps,  # after the last step; before the first: eval_on_start
        "eval_on_start": args.eval_before and not args.resume,  # a resumed run's start was evaluated, or skipped
        "num_generations_eval": args.eval_generations,
        "per_device_eval_batch_size": args.eval_generations * max(1, args.batch_size // args.eval_generations),
    }
    return trl_grpo_config(args.output_dir, num_generations=args.num_generations,
                           max_completion_length=args.max_completion_length, temperature=args.temperature,
                           max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.seed, gradient_accumulation_steps=args.gradient_accumulation_steps,
                           max_tool_calling_iterations=args.max_tool_calls,
                           repetition_penalty=args.repetition_penalty, scale_rewards=args.scale_rewards,
                           save_steps=args.save_steps, **evaluation)


def eval_seed(args: Args) -> int:
    """The seed of the held-out questions and their order: ``--eval-seed``, else ``--seed``."""
    return args.seed if args.eval_seed is None else args.eval_seed


def environment_factory(args: Args, eval_split: str | None = None):
    """The factory TRL calls, over ``--split`` (its first ``--limit`` questions) or ``eval_split`` (a subset of
    ``--eval-limit`` seeded by ``--eval-seed``), loaded with ``--schema`` (its databases are built for it)."""
    from sqlenv.datasets import load_dataset, select_indices
    from sqlenv.integrations.trl_env import SQLEnvironmentFactory

    dataset = load_dataset(args.dataset, split=eval_split or args.split, data_dir=args.data_dir, schema=args.schema)
    if eval_split:
        dataset = dataset.subset(select_indices(len(dataset), args.eval_limit, eval_seed(args)))
    elif args.limit:
        dataset = dataset.subset(range(min(args.limit, len(dataset))))
    turns = {} if args.single_step else {"max_turns": args.max_turns, "filter_hints": args.filter_hints,
                                         "echo_moves": args.echo_moves}
    return SQLEnvironmentFactory(dataset, multi_turn=not args.single_step, reward=args.reward,
                                 max_instructions=args.max_instructions, schema=args.schema,
                                 column_values=args.column_values, **turns)


def main(args: Args) -> dict:
    from functools import partial

    from agents.models import load_model_and_tokenizer
    from agents.monitors import monitor_metrics
    from agents.trl_setup import grpo_trainer
    from sqlenv.integrations.trl_env import (
        EVAL_ENVIRONMENT,
        SQLEnvReward,
        accept_json_tool_calls,
        end_tool_loop_at_episode_end,
        ensure_tool_chat_template,
    )

    start = time.time()
    factory = environment_factory(args)
    print(getattr(factory.dataset, "summary", factory.dataset))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    rollout_log = Path(args.output_dir) / "rollouts.jsonl"
    reward = SQLEnvReward(rollout_log=rollout_log, monitors=partial(monitor_metrics, ""),
                          max_completion_length=args.max_completion_length, max_tool_calls=args.max_tool_calls)
    checkpoint = resume_checkpoint(args)
    if checkpoint:
        step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        print(f"resuming from {checkpoint} (after step {step}); {reward.resume(step)} rollouts of {rollout_log} kept")
    else:
        rollout_log.unlink(missing_ok=True)

    model, tokenizer = load_model_and_tokenizer(args.model, threads=args.threads)
    model.train()
    ensure_tool_chat_template(tokenizer)
    if not args.strict_tool_calls:  # before GRPOTrainer, which then keeps this response_template
        accept_json_tool_calls(tokenizer, ["submit_answer"] if args.single_step else ["run_sql", "submit_answer"])
    if not args.calls_after_end:
        end_tool_loop_at_episode_end(tokenizer)
    peft_config = None
    if args.warmup_adapter:
        from peft import PeftModel

        from agents.tool_warmup import expose_head_bias

        model = PeftModel.from_pretrained(model, args.warmup_adapter, is_trainable=True)
        expose_head_bias(model)  # an adapter that trains the tool-call tags' rows keeps training them here
    elif args.lora_r > 0:
        from agents.trl_setup import lora_config

        peft_config = lora_config(args.lora_r)
    config = grpo_config(args)
    data = {"train_dataset": factory.train_dataset(), "environment_factory": factory}
    if args.eval_split:  # TRL's multi-environment mode: each row's "environment" names its split's factory
        held_out = environment_factory(args, args.eval_split)
        print(f"held out: {len(held_out.dataset)} questions of {args.dataset}/{args.eval_split}")
        data = {"train_dataset": factory.train_dataset(environment="train"),
                "eval_dataset": held_out.train_dataset(environment=EVAL_ENVIRONMENT),
                "environment_factory": {"train": factory, EVAL_ENVIRONMENT: held_out}}
    trainer = grpo_trainer(
        eval_temperature=args.eval_temperature,
        eval_seed=eval_seed(args),
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward,
        args=config,
        peft_config=peft_config,
        **data,
    )
    if args.eval_only:
        trainer.evaluate()
    else:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if args.save and not args.eval_only:
        trainer.save_model(args.output_dir)
    history = [h for h in trainer.state.log_history if "reward" in h]
    last = history[-1] if history else {}
    result = {
        "steps": trainer.state.global_step,
        "seconds": round(time.time() - start, 1),
        "last_reward": last.get("reward"),
        "tool_call_frequency": last.get("tools/call_frequency"),
        "rewards": [h["reward"] for h in history],
        "eval": [{"step": h["step"], "reward": h["eval_reward"], "correct": h.get("eval_sqlenv_env/correct")}
                 for h in trainer.state.log_history if "eval_reward" in h],
        "eval_seed": eval_seed(args) if args.eval_split else None,
        "eval_temperature": None if not args.eval_split else (
            args.temperature if args.eval_temperature is None else args.eval_temperature),
        "tool_calls_per_rollout": [h.get("sqlenv_env/tool_calls") for h in history],
        "rollouts": reward.last_infos,
        "reward_call": reward.summary(),
    }
    print(json.dumps(result))
    (Path(args.output_dir) / "result.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(parse_args())
