"""The GRPO trainer's settings: the ``Config`` dataclass, its presets and its command line.

Configuration flows one way: command line -> ``parse_config`` -> ``Config`` (frozen, validated in
``__post_init__``) -> the constructors in ``agents/grpo_train.py``. Every field is a flag with the
docstring under it as its help (``agents/cli.py``); ``--preset gpu`` changes the defaults in
``PRESETS["gpu"]``, and a flag given explicitly always wins. An invalid value raises ``ConfigError``,
whose message names the flag; the script turns it into exit status 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.cli import ConfigError, bad, dataclass_parser
from agents.grpo_choices import LOSS_TYPES, SCALE_REWARDS
from sqlenv.literal import LITERAL_ANSWERS
from sqlenv.rewards import REWARD_PRESETS, preset_help, reward_preset

SCHEMAS = ("tables", "flat")
REWARDS = REWARD_PRESETS  # the table of sqlenv.rewards, keyed by preset name
PRESET_NAMES = ("cpu", "gpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Config:
    # ---------------------------------------------------------------- model and policy
    model: str = "smollm2-135m"
    """Base model: "smollm2-135m", "qwen2.5-coder-0.5b", a local Hugging Face folder or a hub id."""
    device: str = "auto"
    """Torch device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ..."""
    dtype: str = "auto"
    """Weights' dtype: "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16" or "float16"."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch (keep 0 for exact resumes and ratio 1 on the first iteration)."""
    few_shot: int = 2
    """Worked examples in the prompt (0 = zero-shot)."""
    max_completion_length: int = 64
    """Most tokens sampled per completion; also the constant of the "dr_grpo" loss."""
    temperature: float = 0.8
    """Sampling temperature of the G training samples (evaluation is greedy)."""
    rollout_dtype: str | None = "auto"
    """Sample in this lower precision ("bfloat16"; none = the weights' dtype; "auto" = bfloat16 where the
    weights are float32 on a CPU with native bfloat16 products, AVX512-BF16 or AMX, else none): the
    rollout engine runs faster (1.56x in training, docs/performance.md), and the update recomputes the old
    log-probs with the training forward and weights each token by min(pi_old / pi_rollout, tis_cap).
    Paired against float32 rollouts on two seeds, no accuracy loss was measured (docs/results.md)."""
    tis_cap: float = 2.0
    """Truncation of the importance weight correcting rollout_dtype's sampling mismatch."""
    stop_check_every: int = 8
    """The rollout engine tests end-of-sequence on the device every step and each completion's
    statement end on the host every this many decode steps, compacting its batch then; completions
    do not depend on it (each ends at its first stop)."""
    prompt_cache_tokens: int | None = None
    """Multi-turn episodes (max_turns > 1): the most prompt tokens whose keys and values the rollout engine
    keeps between moves, so a move's context prefills only the move and the env's reply (0 = keep none;
    none = the policy's default, agents.prompt_cache.DEFAULT_MAX_TOKENS, 1.5 GB for SmolLM2-135M in float32).
    Episodes are the same at any value."""
    compile_rollouts: bool = False
    """torch.compile the rollout engine's decode step (CUDA graphs on CUDA; eager, with a warning,
    where compiling fails). Off by default: on a CPU it measured slower (docs/performance.md)."""
    update_dtype: str | None = "auto"
    """Run the update's forward and backward under autocast in this precision ("bfloat16"; none = the
    weights' dtype; "auto" = bfloat16 where rollout_dtype's "auto" would be); the LoRA weights, their
    gradients and AdamW stay in the weights' dtype. On CPUs with native bfloat16 products (AVX512-BF16,
    AMX) the update is 1.7x faster (docs/performance.md); the old log-probs then come from the update's
    own forward and the rollout log-probs are corrected as with rollout_dtype (tis_cap). Paired against
    a float32 update on two seeds, no accuracy loss was measured (docs/results.md)."""
    warmup_adapter: str | None = None
    """LoRA adapter folder to start from, e.g. runs/sft_warmup/adapter from agents/sft_warmup.py (its
    rank and alpha win over lora_r / lora_alpha); none = a fresh adapter. --resume takes precedence."""
    warmup_examples: int = 320
    """Warm-up stage before GRPO (when no warmup_adapter is given): a supervised pass of agents/sft_warmup.py
    on this many questions of the built-in generated benchmark with their own gold SQL (never the training
    dataset's SQL), written to <output_dir>/warmup/; GRPO starts from its adapter. 0 = no warm-up stage. A
    resume never repeats it."""

    # ---------------------------------------------------------------- data and environment
    dataset: str = "temptabqa-c"
    """Benchmark; "temptabqa-c" falls back to "generated" (with a notice) when neither --data-dir nor
    $SQLENV_DATA_DIR is set (a folder that is given but wrong is an error)."""
    split: str = "train"
    """Split the policy trains on."""
    eval_split: str = "dev"
    """Held-out split for the periodic greedy evaluation."""
    data_dir: str | None = None
    """Folder holding the dataset's files (default: $SQLENV_DATA_DIR)."""
    schema: str = "flat"
    """Database layout shown to the model: "flat" (one table; easiest for a small model) or "tables"
    (the benchmark's five tables)."""
    reward: str = "arctic"
    """Reward preset of the env. Default arctic: with
    batch scaling it gained +6.0 and +7.1 (CPU, two seeds) and +5.0 (GPU) points over the warm
    start on the full dev split where binary with group scaling gained nothing (docs/results.md);
    pair it with scale_rewards "batch" or "none", or with drop_unsolved_groups, since "group"
    scaling turns a group's 0-vs-0.1 into -1-vs-+1. arctic-nofloor measured worse: it moves the
    hack to counts with the filters dropped."""
    sample_rows: int = 3
    """Rows per table shown in the observation (0 = none)."""
    column_values: int = 0
    """Most frequent text values of each column listed under its table in the observation, as SQL literals
    (0 = none; sqlenv/schema.py), so filters can copy a value's spelling instead of guessing it."""
    workers: int = 0
    """Executor worker processes scoring a group in parallel (0 = in this process)."""
    query_timeout: float = 1.0
    """Wall-clock seconds a query may run; with max_instructions, the hard backstop (make it several times
    what the instruction budget takes, e.g. 10)."""
    max_instructions: int | None = None
    """SQLite VM instructions a query may run: the same on every machine, so rewards are reproducible
    (docs/env.md, "Reproducible rewards"; e.g. 100000000 with --query-timeout 10). None = wall clock only."""
    max_turns: int = 1
    """Moves per episode: 1 = single-step (TextToSQL-v0, one query per question); N > 1 = multi-turn
    episodes on TextToSQLAgent-v0 (explore with <sql>, see the result, submit with <answer>; at most N
    moves, each of at most max_completion_length tokens), whose loss covers only the policy's own tokens
    (agents/multiturn.py, docs/agent_env.md)."""
    filter_hints: bool = False
    """Multi-turn only: an exploration whose result is empty, 0 or NULL also names each text value it filters on
    that matches no row of its column, with that column's values, closest first (sqlenv/filter_hints.py)."""
    literal_answers: str = "unanswered"
    """An answer that reads no table of the database (SELECT '16', SELECT 0; sqlenv/literal.py): "score"
    rewards it like any other, "unanswered" as no answer (the preset's error reward, error "literal";
    docs/env.md, "Literal answers"). The collapse monitor train/ and eval/collapse/literal counts them either
    way. Default "unanswered": the README command with either option gave bit-identical adapters (seed 2,
    docs/results.md), so it costs nothing there and closes the shortcut. Runs from before this default
    resume with --literal-answers score."""

    # ---------------------------------------------------------------- GRPO
    num_generations: int = 8
    """G: completions sampled per question (a group)."""
    batch_size: int = 4
    """Questions per step (the step trains on batch_size * G completions)."""
    micro_batch_size: int = 8
    """Completions per forward/backward pass (gradients accumulate over micro-batches)."""
    num_iterations: int = 1
    """Updates per batch of rollouts (mu); above 1 the PPO ratio and clipping come into play."""
    learning_rate: float = 5e-5
    """AdamW learning rate of the LoRA parameters."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (0 = no clipping)."""
    epsilon: float = 0.2
    """Lower clip range of the ratio (1 - epsilon); also the upper one unless epsilon_high is set."""
    epsilon_high: float | None = None
    """Upper clip range of the ratio (1 + epsilon_high), e.g. 0.28 for DAPO's clip-higher; none = epsilon."""
    beta: float = 0.1
    """Weight of the k3 KL penalty to the model the run started from: the base model (adapter off), or the
    warmup_adapter's weights when given; 0 skips the reference pass."""
    scale_rewards: str = "batch"
    """Advantage scaling: "batch" (divide by the batch's std), "group" (by the group's std) or "none"."""
    loss_type: str = "dr_grpo"
    """Aggregation: "grpo" (token mean per sequence, then mean) or "dr_grpo" (token sum / (N *
    max_completion_length))."""
    skip_zero_std: bool = True
    """Dynamic filtering: leave groups whose rewards are all equal out of the update (they have advantage 0)."""
    drop_unsolved_groups: bool = False
    """Leave groups with no right sample out of the update: their advantages only say "execute" (or, under
    "group" scaling, push as hard toward executing as a solved group pushes toward the answer)."""

    # ---------------------------------------------------------------- loop, evaluation, checkpoints
    steps: int = 20
    """Optimizer steps (batches of rollouts) to train for, counting those of a resumed run."""
    eval_every: int = 10
    """Greedy evaluation on the eval split every this many steps (0 = only at the start and the end, the two that the
    final paired comparison needs)."""
    eval_limit: int = 20
    """Eval questions (a fixed seeded sample, the same for every run; 0 = skip evaluation)."""
    eval_batch_size: int = 8
    """Questions per greedy generation call during evaluation."""
    probe_questions: int = 8
    """Training questions on which the untuned policy's share of mixed-reward groups is measured (0 = skip)."""
    save_every: int = 10
    """Checkpoint (adapter + optimizer + RNG + step) every this many steps (0 = only at the end)."""
    output_dir: str = ""
    """Run folder (metrics.jsonl, checkpoints/, curves.png); default runs/grpo__<dataset>__<seed>__<time>,
    or the resumed run's folder. It must not hold another run."""
    resume: str | None = None
    """Checkpoint folder to continue from, or a run folder (its latest checkpoint). The run must stay the same:
    its env (dataset, split, schema, sample_rows, column_values, reward, query_timeout, max_instructions, max_turns,
    literal_answers, filter_hints), few_shot, model, lora_r and lora_alpha (a difference is an error naming its
    flag)."""
    seed: int = 0
    """Seed of question sampling, LoRA initialisation and token sampling."""
    threads: int | None = 1
    """Torch CPU threads (none = torch's choice). 1 by default: on a shared 2-core machine 2 threads
    sampled up to 40x slower than 1 whenever another process was busy."""
    plot: bool = True
    """Write curves.png (matplotlib) at the end."""
    preset: str = "cpu"
    """Defaults for a machine: "cpu" (the values above) or "gpu" (bf16 on CUDA, G=8, 16 questions a step,
    longer completions, a larger eval); flags given explicitly win over the preset."""

    def __post_init__(self):
        try:
            reward_preset(self.reward)
        except ValueError:
            bad("reward", self.reward, f"must be one of {', '.join(REWARDS)}")
        for name, choices in (("schema", SCHEMAS), ("preset", PRESET_NAMES),
                              ("dtype", DTYPES), ("scale_rewards", SCALE_REWARDS),
                              ("loss_type", LOSS_TYPES), ("literal_answers", LITERAL_ANSWERS)):
            if getattr(self, name) not in choices:
                bad(name, getattr(self, name), f"must be one of {', '.join(choices)}")
        for name in ("lora_r", "lora_alpha", "max_completion_length", "batch_size", "micro_batch_size",
                     "num_iterations", "steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), "must be >= 1")
        for name in ("few_shot", "warmup_examples", "sample_rows", "column_values", "workers",
                     "eval_every", "eval_limit", "save_every",
                     "probe_questions", "learning_rate", "weight_decay", "max_grad_norm", "beta"):
            if getattr(self, name) < 0:
                bad(name, getattr(self, name), "must be >= 0")
        if self.num_generations < 2:
            bad("num_generations", self.num_generations,
                 "must be >= 2: GRPO compares samples of the same question")
        if not 0 < self.epsilon < 1:
            bad("epsilon", self.epsilon, "must be in (0, 1)")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            bad("epsilon_high", self.epsilon_high, "must be > 0 (or none)")
        if not self.temperature > 0:
            bad("temperature", self.temperature, "must be > 0 (evaluation is already greedy)")
        if not 0 <= self.lora_dropout < 1:
            bad("lora_dropout", self.lora_dropout, "must be in [0, 1)")
        if self.threads is not None and self.threads < 1:
            bad("threads", self.threads, "must be >= 1 (or none)")
        if self.prompt_cache_tokens is not None and (
                isinstance(self.prompt_cache_tokens, bool) or not isinstance(self.prompt_cache_tokens, int)
                or self.prompt_cache_tokens < 0):
            bad("prompt_cache_tokens", self.prompt_cache_tokens, "must be an integer >= 0")
        if self.rollout_dtype not in (None, "auto", "bfloat16", "float16"):
            bad("rollout_dtype", self.rollout_dtype, "must be auto, bfloat16, float16 or none")
        if self.update_dtype not in (None, "auto", "bfloat16", "float16"):
            bad("update_dtype", self.update_dtype, "must be auto, bfloat16, float16 or none")
        if not self.tis_cap > 0:
            bad("tis_cap", self.tis_cap, "must be > 0")
        if isinstance(self.stop_check_every, bool) or not isinstance(self.stop_check_every, int) \
                or self.stop_check_every < 1:
            bad("stop_check_every", self.stop_check_every, "must be an integer >= 1")
        if not self.query_timeout > 0:
            bad("query_timeout", self.query_timeout, "must be > 0 seconds")
        if self.max_instructions is not None and self.max_instructions < 1:
            bad("max_instructions", self.max_instructions, "must be >= 1 (or none)")
        if isinstance(self.max_turns, bool) or not isinstance(self.max_turns, int) or self.max_turns < 1:
            bad("max_turns", self.max_turns, "must be an integer >= 1 (1 = single-step; N > 1 = multi-turn "
                "episodes of at most N moves)")
        if self.filter_hints and self.max_turns < 2:
            bad("filter_hints", self.filter_hints, "needs --max-turns N > 1 (hints come with exploration results)")
        if not self.dataset:
            bad("dataset", self.dataset, "must name a dataset, e.g. temptabqa-c or generated")


PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": dict(device="cuda", dtype="bfloat16", num_generations=8, batch_size=16, micro_batch_size=32,
                max_completion_length=128, learning_rate=5e-5, steps=200, eval_every=25, save_every=25,
                eval_limit=200, eval_batch_size=32, probe_questions=32, threads=None,
                prompt_cache_tokens=131072),  # 128 multi-turn episodes of ~900 tokens: 3 GB in bfloat16
}


def build_parser():
    parser = dataclass_parser(Config, prog="python agents/grpo_train.py",
                              usage="%(prog)s [options]   (--help lists every option)",
                              description="Fine-tune a LoRA policy with GRPO on the Text-to-SQL "
                                          "environment, from execution rewards.", presets=PRESETS,
                              extra_help={"reward": f"Presets: {preset_help()}."})
    return parser


def make_config(preset: str = "cpu", **overrides: Any) -> Config:
    """A Config from a preset's defaults and explicit values (explicit wins)."""
    if preset not in PRESETS:
        bad("preset", preset, f"must be one of {', '.join(PRESETS)}")
    return Config(**{**PRESETS[preset], **overrides, "preset": preset})


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """CLI -> Config; an invalid value exits with status 2 and a message naming the field."""
    parser = build_parser()
    explicit = vars(parser.parse_args(argv))
    try:
        return make_config(**explicit)
    except ConfigError as error:
        parser.error(str(error))
