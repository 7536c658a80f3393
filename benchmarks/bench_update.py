"""The GRPO update alone, in float32 and under bfloat16 autocast, side by side in one process.

    .venv/bin/python benchmarks/bench_update.py --data-dir ../shared/data/temptabqa-c --prompts 4 -G 8

One batch of rollouts (``--prompts`` TempTabQA-C training questions x ``G``, sampled once by the
engine in float32 and scored by the env) is updated ``--repeats`` times per precision, alternating,
each time from the same adapter and optimizer state, by the trainer's own ``grpo_update`` (one
iteration, "dr_grpo", ``--beta`` KL to the base model). Printed per precision: seconds of the whole
update, of the KL reference pass alone (the same no-grad forward the update runs first), and of the
rest (training forward, backward, clipping, AdamW); the speed-up over float32; and the precision's
log-prob gap to the float32 training forward over the sampled tokens (what ``--update-dtype``'s
importance correction absorbs). On a GPU ``--device cuda`` times the same (bfloat16 weights there
make autocast a no-op).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="built-in model name or local folder")
    p.add_argument("--dataset", default="temptabqa-c")
    p.add_argument("--split", default="train")
    p.add_argument("--data-dir", default=None, help="TempTabQA-C folder (default: $SQLENV_DATA_DIR)")
    p.add_argument("--schema", default="flat")
    p.add_argument("--few-shot", type=int, default=2)
    p.add_argument("--prompts", type=int, default=4, help="questions in the batch")
    p.add_argument("-G", "--num-generations", type=int, default=8, help="samples per question")
    p.add_argument("--max-completion-length", type=int, default=64)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--beta", type=float, default=0.1, help="KL weight (0 skips the reference pass)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="update precisions to compare, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="timed updates per precision (alternating)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p


def synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch

    from agents import grpo
    from agents.grpo_config import make_config
    from agents.grpo_train import build_policy
    from agents.grpo_update import _logprobs_no_grad, grpo_update, update_precision
    from agents.preflight import env_spec
    from agents.rollouts import generate_groups, sample_questions, score_groups

    dtypes = [None if d == "float32" else d for d in args.dtypes.split(",")]
    cfg = make_config(model=args.model, device=args.device, dtype="float32" if args.device == "cpu" else "auto",
                      threads=args.threads, few_shot=args.few_shot, schema=args.schema, seed=args.seed,
                      dataset=args.dataset, split=args.split, data_dir=args.data_dir,
                      num_generations=args.num_generations, batch_size=args.prompts, beta=args.beta,
                      micro_batch_size=args.micro_batch_size, max_completion_length=args.max_completion_length,
                      warmup_examples=0, rollout_dtype=None)  # sampled in float32, as the docstring says
    torch.manual_seed(args.seed)
    env = env_spec(cfg).make()  # the trainer's env for this configuration (sqlenv.spec.EnvSpec)
    policy = build_policy(cfg)
    indices = sample_questions(np.random.default_rng(args.seed), len(env.dataset), args.prompts)
    rollouts = generate_groups(policy, env, indices, cfg.num_generations, cfg.batch_size)
    rewards, _ = score_groups(env, indices, [r.sql for r in rollouts], cfg.num_generations)
    advantages = grpo.group_advantages(torch.tensor(rewards), cfg.num_generations, cfg.scale_rewards)
    tokens = sum(len(r.completion_ids) for r in rollouts)
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    start_weights = [p.detach().clone() for p in params]
    chunks = [list(range(i, min(i + cfg.micro_batch_size, len(rollouts))))
              for i in range(0, len(rollouts), cfg.micro_batch_size)]

    def timed(fn):
        synchronize(policy.device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(policy.device)
        return time.perf_counter() - t0, out

    times = {d: {"update": [], "reference": []} for d in dtypes}
    logps = {}
    for _ in range(args.repeats):
        for dtype in dtypes:
            run_cfg = dataclasses.replace(cfg, update_dtype=dtype)
            with torch.no_grad():
                for p, w in zip(params, start_weights):
                    p.copy_(w)
            optimizer = torch.optim.AdamW(params, lr=run_cfg.learning_rate)
            with update_precision(policy, run_cfg):
                ref_s, ref = timed(lambda: _logprobs_no_grad(policy, rollouts, chunks, disable_adapter=True))
            logps[dtype] = ref
            update_s, _ = timed(lambda: grpo_update(policy, optimizer, rollouts, advantages, run_cfg))
            times[dtype]["update"].append(update_s)
            times[dtype]["reference"].append(ref_s)
    with torch.no_grad():
        for p, w in zip(params, start_weights):
            p.copy_(w)

    print(f"{args.model}, {args.prompts} questions x G={cfg.num_generations} ({tokens} completion tokens, prompts "
          f"{sorted({len(r.prompt_ids) for r in rollouts})} tokens), micro-batch {cfg.micro_batch_size}, beta "
          f"{cfg.beta}, {torch.get_num_threads()} thread(s), device {policy.device}, {args.repeats} repeats "
          f"(median)")
    print("| update precision | update s | KL reference pass s | forward+backward+AdamW s | speed-up | "
          "mean abs. d log p vs float32 | max |\n|---|---|---|---|---|---|---|")
    base = statistics.median(times[dtypes[0]]["update"])
    reference = torch.cat(logps[dtypes[0]])
    for dtype in dtypes:
        update = statistics.median(times[dtype]["update"])
        ref = statistics.median(times[dtype]["reference"])
        gap = (torch.cat(logps[dtype]) - reference).abs()
        print(f"| {dtype or 'float32'} | {update:.2f} | {ref:.2f} | {update - ref:.2f} | {base / update:.2f}x | "
              f"{float(gap.mean()):.4f} | {float(gap.max()):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
