"""One GRPO configuration, run by our trainer's step and by TRL's GRPOTrainer, side by side.

    .venv/bin/python benchmarks/bench_train.py                       # both sides, defaults below
    .venv/bin/python benchmarks/bench_train.py --steps 3 --num-generations 8
    .venv/bin/python benchmarks/bench_train.py --side ours --profile prof.txt   # cProfile of our step
    .venv/bin/python benchmarks/bench_train.py --sweep scaling.json  # our cost vs G, prompt, questions

Both sides get the same configuration: the model (default SmolLM2-135M from the GGUF, through
``agents.models``), LoRA rank/alpha/target modules, the same prompt text (``LoRAPolicy.prompt``:
``sqlenv.prompts`` with the chat template, ending with ``PREFILL``), G completions per question,
``--batch-size`` questions per optimizer step in micro-batches of ``--micro-batch-size``
completions, the same ``--max-completion-length``, temperature, loss ("dr_grpo", group-scaled
advantages, beta 0, one iteration), float32 on CPU with ``--threads`` torch threads, and the same
questions (``warmup + steps`` batches drawn once; TRL shuffles them within its single epoch).

  ours  the functions agents/grpo_train.py calls (agents/rollouts.py, agents/grpo_update.py):
        ``generate_groups`` (``LoRAPolicy.generate``, shared-prefill sampling that stops at the end
        of the SQL statement), ``score_groups`` (``env.score_group``), ``grpo.group_advantages``
        and ``grpo_update``. ``skip_zero_std`` is off by default here, so both sides update on every
        completion (``--skip-zero-std`` turns our dynamic filtering back on).
  trl   ``trl.GRPOTrainer`` with ``sqlenv.integrations.trl.SQLReward`` (our executor) on the
        ``to_trl_dataset`` rows; transformers ``generate`` stops at EOS or the length cap.
        TRL's own defaults that would change the work are set to ours: ``bf16=False`` (``--bf16``: both
        sides in bfloat16, ours through its rollout and update dtypes, TRL through autocast),
        ``gradient_checkpointing=False`` (``--trl-gradient-checkpointing`` turns it on).

Each side runs in its own subprocess (separate peak memory). Per measured step (after
``--warmup`` steps): seconds split into generation / scoring / update (+ other), completion tokens
and completions per second of the whole step, completion tokens per second of generation, CPU
seconds (process time: less disturbed than wall time on a shared machine), and
memory: ``ru_maxrss`` of the process (includes loading the model) and the peak RSS sampled every
20 ms during the measured steps (the training peak). Prints a Markdown table and ratios ours/TRL.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ====================================================================================== CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", choices=["both", "ours", "trl"], default="both",
                   help="run both sides (each in a subprocess) or one side in this process (default: both)")
    p.add_argument("--model", default="smollm2-135m", help="agents.models name, local folder or hub id")
    p.add_argument("--dataset", default="temptabqa-c",
                   help="sqlenv dataset (temptabqa-c falls back to generated when its files are absent)")
    p.add_argument("--data-dir", default=os.environ.get("SQLENV_DATA_DIR"),
                   help="dataset folder (default: $SQLENV_DATA_DIR)")
    p.add_argument("--split", default="train")
    p.add_argument("--schema", default="flat", choices=["tables", "flat"])
    p.add_argument("--num-generations", type=int, default=4, help="G, completions per question")
    p.add_argument("--batch-size", type=int, default=4, help="questions per optimizer step")
    p.add_argument("--micro-batch-size", type=int, default=4, help="completions per forward/backward")
    p.add_argument("--max-completion-length", type=int, default=96)
    p.add_argument("--few-shot", type=int, default=2, help="worked examples in the prompt")
    p.add_argument("--sample-rows", type=int, default=3, help="sample rows per table in the prompt")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--steps", type=int, default=2, help="measured optimizer steps")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-zero-std", action="store_true",
                   help="ours: leave all-equal-reward groups out of the update (grpo_train's default)")
    p.add_argument("--bf16", action="store_true",
                   help="both sides in bfloat16 where they allow it: ours samples with --rollout-dtype bfloat16 "
                        "and updates with --update-dtype bfloat16 (autocast, importance-weighted); TRL gets "
                        "bf16=True (autocast over its generation and update); weights and LoRA stay float32")
    p.add_argument("--trl-gradient-checkpointing", action="store_true",
                   help="trl: keep TRL's default gradient checkpointing (less memory, more time)")
    p.add_argument("--profile", default=None, metavar="PATH",
                   help="ours: cProfile the measured steps; top functions by cumulative and own time to PATH")
    p.add_argument("--sweep", default=None, metavar="JSON",
                   help="instead of the comparison: our step across G, few-shot, sample rows and "
                        "questions per step (one model load), results to JSON (plot: plot_scaling.py)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result(s) as JSON too")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each side's subprocess")
    return p


# ====================================================================================== shared
class PeakRSS:
    """Peak resident memory of this process, sampled every ``interval`` seconds while running."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def resolve_dataset(args) -> str:
    from agents.grpo_config import make_config
    from agents.preflight import resolve_dataset as resolve

    dataset, _, notice = resolve(make_config(dataset=args.dataset, data_dir=args.data_dir))
    if notice:
        print(notice, flush=True)
    return dataset


def make_env(cfg, dataset: str):
    """The env agents/grpo_train.py builds for this configuration (its EnvSpec, on ``dataset``)."""
    from agents.preflight import env_spec

    return env_spec(cfg, dataset, cfg.data_dir).make(workers=cfg.workers)


def question_plan(args, num_questions: int, steps: int | None = None) -> list[list[int]]:
    """The questions of each step, drawn once with --seed (the same on both sides)."""
    import numpy as np

    from agents.rollouts import sample_questions

    rng = np.random.default_rng(args.seed)
    steps = args.warmup + args.steps if steps is None else steps
    flat = sample_questions(rng, num_questions, steps * args.batch_size)
    return [flat[k * args.batch_size:(k + 1) * args.batch_size] for k in range(steps)]


def make_cfg(args, dataset: str, **overrides):
    from agents.grpo_config import make_config

    values = dict(model=args.model, dataset=dataset, data_dir=args.data_dir, split=args.split,
                  schema=args.schema, sample_rows=args.sample_rows, few_shot=args.few_shot,
                  num_generations=args.num_generations, batch_size=args.batch_size,
                  micro_batch_size=args.micro_batch_size, max_completion_length=args.max_completion_length,
                  temperature=args.temperature, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                  learning_rate=args.learning_rate, threads=args.threads, seed=args.seed,
                  skip_zero_std=args.skip_zero_std, device="cpu", dtype="float32", beta=0.0,
                  num_iterations=1, loss_type="dr_grpo", scale_rewards="group", probe_questions=0,
                  eval_limit=0, plot=False, rollout_dtype=None, update_dtype=None)  # float32, like TRL's side
    if args.bf16:
        values.update(rollout_dtype="bfloat16", update_dtype="bfloat16")
    values.update(overrides)
    return make_config(**values)


def summarize(side: str, steps: list[dict], extra: dict) -> dict:
    """Medians over the measured steps, and throughput over their sums."""
    total = sum(s["step_s"] for s in steps)
    tokens = sum(s["tokens"] for s in steps)
    completions = sum(s["completions"] for s in steps)
    gen = sum(s["gen_s"] for s in steps)
    out = {"side": side, "measured_steps": len(steps), "steps": steps,
           "step_s": total / len(steps),
           **{k: sum(s[k] for s in steps) / len(steps)
              for k in ("gen_s", "score_s", "update_s", "other_s", "step_cpu_s", "gen_cpu_s", "score_cpu_s",
                        "update_cpu_s")},
           "tokens_per_step": tokens / len(steps),
           "mean_completion_len": tokens / max(completions, 1),
           "tokens_per_s": tokens / total, "completions_per_s": completions / total,
           "gen_tokens_per_s": tokens / gen if gen else 0.0,
           "tokens_per_cpu_s": tokens / sum(s["step_cpu_s"] for s in steps),
           "maxrss_mib": maxrss_mib(), **extra}
    out["step_s_median"] = statistics.median(s["step_s"] for s in steps)
    return out


# ====================================================================================== ours
def ours_step(policy, env, optimizer, cfg, indices) -> dict:
    """One step of agents/grpo_train.py's loop (the same calls, in the same order), timed."""
    import torch

    from agents import grpo
    from agents.grpo_update import _tensor, grpo_update
    from agents.rollouts import generate_groups, score_groups

    start, c_start = time.perf_counter(), time.process_time()
    rollouts = generate_groups(policy, env, indices, cfg.num_generations, cfg.batch_size)
    t_gen, c_gen = time.perf_counter(), time.process_time()
    rewards, _ = score_groups(env, indices, [r.sql for r in rollouts], cfg.num_generations)
    t_score, c_score = time.perf_counter(), time.process_time()
    rewards_t = _tensor(rewards)
    advantages = grpo.group_advantages(rewards_t, cfg.num_generations, cfg.scale_rewards)
    zero = grpo.zero_std_mask(rewards_t, cfg.num_generations)
    keep_groups = ~zero if cfg.skip_zero_std else torch.ones_like(zero)
    keep = keep_groups.repeat_interleave(cfg.num_generations).tolist()
    kept = [r for r, k in zip(rollouts, keep) if k]
    t_adv, c_adv = time.perf_counter(), time.process_time()
    if kept:
        grpo_update(policy, optimizer, kept, advantages[torch.tensor(keep)], cfg)
    end, c_end = time.perf_counter(), time.process_time()
    return {"step_s": end - start, "gen_s": t_gen - start, "score_s": t_score - t_gen,
            "update_s": end - t_adv, "other_s": t_adv - t_score,
            "step_cpu_s": c_end - c_start, "gen_cpu_s": c_gen - c_start, "score_cpu_s": c_score - c_gen,
            "update_cpu_s": c_end - c_adv,
            "tokens": sum(len(r.completion_ids) for r in rollouts), "completions": len(rollouts),
            "prompt_tokens": policy.stats.prompt_tokens, "kept": len(kept),
            "reward_mean": float(rewards_t.mean())}


def build_ours(args):
    import torch

    from agents.grpo_train import build_policy

    dataset = resolve_dataset(args)
    cfg = make_cfg(args, dataset)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    env = make_env(cfg, dataset)
    t0 = time.perf_counter()
    policy = build_policy(cfg)
    load_s = time.perf_counter() - t0
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return dataset, cfg, env, policy, optimizer, load_s


def run_ours(args) -> dict:
    dataset, cfg, env, policy, optimizer, load_s = build_ours(args)
    plan = question_plan(args, len(env.dataset))
    for indices in plan[:args.warmup]:
        ours_step(policy, env, optimizer, cfg, indices)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    steps = []
    with PeakRSS() as peak:
        for indices in plan[args.warmup:]:
            if profiler:
                profiler.enable()
            steps.append(ours_step(policy, env, optimizer, cfg, indices))
            if profiler:
                profiler.disable()
    if profiler:
        write_profile(profiler, args.profile)
    env.close()
    return summarize("ours", steps, {"dataset": dataset, "load_s": load_s,
                                     "train_peak_rss_mib": peak.peak / 2**20,
                                     "prompt_tokens_mean": steps[-1]["prompt_tokens"] / len(plan[-1])})


def write_profile(profiler, path: str):
    import io
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer).strip_dirs()
    buffer.write("== by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(45)
    buffer.write("\n== by own time ==\n")
    stats.sort_stats("tottime").print_stats(30)
    Path(path).write_text(buffer.getvalue())


# ====================================================================================== TRL
def run_trl(args) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import load_model_and_tokenizer
    from agents.policy import LoRAPolicy, PolicyConfig
    from sqlenv.prompts import PREFILL
    from sqlenv.integrations.trl import SQLReward, to_trl_dataset

    dataset = resolve_dataset(args)
    cfg = make_cfg(args, dataset)
    torch.manual_seed(cfg.seed)
    env = make_env(cfg, dataset)
    t0 = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(cfg.model, "cpu", "float32", cfg.threads)
    load_s = time.perf_counter() - t0
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The GGUF weights are de-quantized to float32 at load, but transformers keeps the GGUF
    # "quantizer" on the model, and Trainer refuses to train it ("quantized with
    # QuantizationMethod.GGUF ... do not support training"); examples/trl_grpo.py hits the same.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.train()

    shim = SimpleNamespace(config=cfg, tokenizer=tokenizer)  # all that LoRAPolicy.prompt reads

    def prompt_text(observation, _example=None) -> str:
        return LoRAPolicy.prompt(shim, observation)

    plan = question_plan(args, len(env.dataset))
    indices = [i for step in plan for i in step]
    train = to_trl_dataset(env.dataset, conversational=False, sample_rows=cfg.sample_rows,
                           prompt_fn=prompt_text, indices=indices)
    env_prompts = [prompt_text(env.reset(options={"index": i})[0]) for i in indices]
    same_prompts = list(train["prompt"]) == env_prompts
    reward = SQLReward(env.dataset, reward=cfg.reward, prefix=PREFILL)

    completions_per_step = cfg.batch_size * cfg.num_generations
    if completions_per_step % cfg.micro_batch_size:
        raise SystemExit("batch_size * num_generations must be a multiple of micro_batch_size")
    out_dir = tempfile.mkdtemp(prefix="bench-trl-")
    config = GRPOConfig(
        output_dir=out_dir, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_p=1.0,
        max_steps=args.warmup + args.steps, per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=completions_per_step // cfg.micro_batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        beta=0.0, num_iterations=1, epsilon=cfg.epsilon, loss_type="dr_grpo", scale_rewards="group",
        seed=cfg.seed, use_cpu=True, bf16=args.bf16, fp16=False,
        gradient_checkpointing=args.trl_gradient_checkpointing,
        logging_steps=1, report_to="none", save_strategy="no", dataloader_num_workers=0,
        log_completions=False, lr_scheduler_type="constant", warmup_steps=0,
    )
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(PolicyConfig().target_modules), task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=reward,
                          train_dataset=train, args=config, peft_config=lora)
    torch.set_num_threads(cfg.threads)

    timers = {"gen_s": 0.0, "score_s": 0.0, "prep_s": 0.0, "gen_cpu_s": 0.0, "score_cpu_s": 0.0,
              "prep_cpu_s": 0.0, "tokens": 0, "completions": 0}

    def timed(name, fn, count=False):
        def wrapper(*a, **kw):
            t, c = time.perf_counter(), time.process_time()
            result = fn(*a, **kw)
            timers[name] += time.perf_counter() - t
            timers[name.replace("_s", "_cpu_s")] += time.process_time() - c
            if count:  # _generate returns (prompt_ids, completion_ids, ...)
                timers["tokens"] += sum(len(ids) for ids in result[1])
                timers["completions"] += len(result[1])
            return result
        return wrapper

    trainer._generate = timed("gen_s", trainer._generate, count=True)
    trainer._calculate_rewards = timed("score_s", trainer._calculate_rewards)
    trainer._generate_and_score_completions = timed("prep_s", trainer._generate_and_score_completions)

    steps: list[dict] = []
    peak = PeakRSS()

    class StepTimer(TrainerCallback):
        started = False

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup and not self.started:
                self.started = True
                peak.__enter__()
            for key in timers:
                timers[key] = 0
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, a, state, control, **kw):
            elapsed, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu
            if state.global_step > args.warmup:
                update = elapsed - timers["prep_s"]
                steps.append({"step_s": elapsed, "gen_s": timers["gen_s"], "score_s": timers["score_s"],
                              "update_s": update, "other_s": timers["prep_s"] - timers["gen_s"] - timers["score_s"],
                              "step_cpu_s": cpu, "gen_cpu_s": timers["gen_cpu_s"],
                              "score_cpu_s": timers["score_cpu_s"], "update_cpu_s": cpu - timers["prep_cpu_s"],
                              "tokens": timers["tokens"], "completions": timers["completions"]})

    trainer.add_callback(StepTimer())
    trainer.train()
    peak.__exit__(None, None, None)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    env.close()
    return summarize("trl", steps, {"dataset": dataset, "load_s": load_s, "same_prompts": same_prompts,
                                    "train_peak_rss_mib": peak.peak / 2**20,
                                    "reward_mean_last": rewards[-1] if rewards else None,
                                    "gradient_checkpointing": args.trl_gradient_checkpointing})


# ====================================================================================== sweep
SWEEP = (  # (name, overrides of the base configuration); the base is the CLI's configuration
    ("G", "num_generations", (2, 4, 8)),
    ("few_shot", "few_shot", (0, 2)),
    ("sample_rows", "sample_rows", (0, 3)),
    ("questions", "batch_size", (1, 2, 4)),
)


def run_sweep(args) -> dict:
    """Our step across one factor at a time (the others at the CLI's values); one model load.

    One warm-up step of the base configuration first, then ``--warmup`` + ``--steps`` per point.
    """
    import torch


    dataset, base_cfg, base_env, policy, optimizer, load_s = build_ours(args)
    ours_step(policy, base_env, optimizer, base_cfg, question_plan(args, len(base_env.dataset), 1)[0])
    base_env.close()  # one warm-up step of the base configuration before everything
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    results = []
    for label, field, values in SWEEP:
        for value in values:
            over = {field: value}
            if field == "num_generations":
                over["micro_batch_size"] = max(args.micro_batch_size, 1)
            cfg = make_cfg(args, dataset, **over)
            policy.config.few_shot = cfg.few_shot
            env = make_env(cfg, dataset)
            sub = argparse.Namespace(**{**vars(args), "batch_size": cfg.batch_size})
            plan = question_plan(sub, len(env.dataset), steps=args.warmup + args.steps)
            torch.manual_seed(cfg.seed)
            for indices in plan[:args.warmup]:
                ours_step(policy, env, optimizer, cfg, indices)
            if profiler:
                profiler.enable()
            steps = [ours_step(policy, env, optimizer, cfg, indices) for indices in plan[args.warmup:]]
            if profiler:
                profiler.disable()
            env.close()
            row = summarize("ours", steps, {})
            row.update(factor=label, value=value, G=cfg.num_generations, few_shot=cfg.few_shot,
                       sample_rows=cfg.sample_rows, questions=cfg.batch_size,
                       prompt_tokens_mean=steps[-1]["prompt_tokens"] / cfg.batch_size)
            row.pop("steps")
            results.append(row)
            print(f"{label}={value}: step {row['step_s']:.1f}s (gen {row['gen_s']:.1f}, score "
                  f"{row['score_s']:.2f}, update {row['update_s']:.1f}); prompt {row['prompt_tokens_mean']:.0f} "
                  f"tok; completion {row['mean_completion_len']:.1f} tok", flush=True)
    if profiler:
        write_profile(profiler, args.profile)
    return {"dataset": dataset, "load_s": load_s, "base": {k: v for k, v in vars(args).items()},
            "machine": machine(), "results": results}


# ====================================================================================== report
def machine() -> dict:
    import platform

    import torch

    return {"nproc": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "python": platform.python_version()}


def run_side(side: str, argv: list[str], timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--side", side, "--json", path]
    start = time.perf_counter()
    proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{side} side failed with exit status {proc.returncode}")
    result = json.loads(Path(path).read_text())
    result["wall_s"] = time.perf_counter() - start
    os.unlink(path)
    return result


def strip_side_args(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in ("--side", "--json"):
            skip = True
            continue
        if item.startswith(("--side=", "--json=")):
            continue
        out.append(item)
    return out


def table(results: dict[str, dict]) -> str:
    ours, trl = results["ours"], results["trl"]
    rows = [
        ("seconds per step", "step_s", "{:.1f}", False),
        ("  generation", "gen_s", "{:.1f}", False),
        ("  scoring (execute + match)", "score_s", "{:.3f}", False),
        ("  update (forward + backward + AdamW)", "update_s", "{:.1f}", False),
        ("  other (advantages, padding, logging)", "other_s", "{:.3f}", False),
        ("CPU seconds per step (process time)", "step_cpu_s", "{:.1f}", False),
        ("  generation", "gen_cpu_s", "{:.1f}", False),
        ("  scoring", "score_cpu_s", "{:.3f}", False),
        ("  update", "update_cpu_s", "{:.1f}", False),
        ("completion tokens per step", "tokens_per_step", "{:.0f}", False),
        ("mean completion length (tokens)", "mean_completion_len", "{:.1f}", False),
        ("completion tokens / s (whole step)", "tokens_per_s", "{:.1f}", True),
        ("completions / s (whole step)", "completions_per_s", "{:.3f}", True),
        ("completion tokens / s (generation only)", "gen_tokens_per_s", "{:.1f}", True),
        ("completion tokens / CPU second (whole step)", "tokens_per_cpu_s", "{:.1f}", True),
        ("peak RSS during the measured steps (MiB)", "train_peak_rss_mib", "{:.0f}", False),
        ("peak RSS of the process, incl. model load (MiB)", "maxrss_mib", "{:.0f}", False),
    ]
    lines = ["| | ours | TRL GRPOTrainer | ours / TRL |", "| --- | ---: | ---: | ---: |"]
    for name, key, fmt, _higher in rows:
        a, b = ours[key], trl[key]
        ratio = f"{a / b:.2f}" if b else ""
        lines.append(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.sweep:
        result = run_sweep(args)
        Path(args.sweep).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.sweep}")
        return 0
    if args.side != "both":
        result = (run_ours if args.side == "ours" else run_trl)(args)
        result["machine"] = machine()
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
        return 0
    before = machine()
    sides = strip_side_args(argv)
    results = {side: run_side(side, sides, args.timeout) for side in ("ours", "trl")}
    after = machine()
    ours, trl = results["ours"], results["trl"]
    print(f"model={args.model} dataset={ours['dataset']}/{args.split} schema={args.schema} "
          f"G={args.num_generations} questions/step={args.batch_size} micro-batch={args.micro_batch_size} "
          f"max_completion_length={args.max_completion_length} few_shot={args.few_shot} "
          f"sample_rows={args.sample_rows} lora_r={args.lora_r} threads={args.threads} "
          f"precision={'bfloat16 (--bf16)' if args.bf16 else 'float32'} "
          f"steps={args.steps} (+{args.warmup} warm-up)")
    print(f"machine: nproc={before['nproc']} load average {before['load_avg']} before, {after['load_avg']} after; "
          f"torch {before['torch']}; prompt tokens per question {ours['prompt_tokens_mean']:.0f}; "
          f"TRL prompts identical to ours: {trl['same_prompts']}\n")
    print(table(results))
    speed = ours["tokens_per_s"] / trl["tokens_per_s"]
    step_speed = trl["step_s"] / ours["step_s"]
    mem = ours["train_peak_rss_mib"] / trl["train_peak_rss_mib"]
    cpu_speed = ours["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
    print(f"\nthroughput ours/TRL: {speed:.2f}x completion tokens/s ({cpu_speed:.2f}x per CPU second), "
          f"{step_speed:.2f}x steps/s "
          f"(target >= 1.5x); training peak RSS ours/TRL {mem:.2f} (target <= 1.00)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine_before": before,
                                               "machine_after": after, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
