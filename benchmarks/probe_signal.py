"""How much learning signal does an untuned policy give GRPO? Measured per prompt/sampling setting.

    .venv/bin/python benchmarks/probe_signal.py --data-dir ../shared/data/temptabqa-c --questions 16

GRPO learns only from groups whose rewards differ: a group whose G samples all fail, or are all
wrong, has advantage 0 everywhere. For each setting (schema variant x few-shot examples x
temperature) this samples G completions for the same training questions and reports, per setting:
the execution-error share, accuracy, the share of groups with mixed ``binary`` rewards
(error -1 / wrong 0 / right +1), the share with mixed ``partial`` rewards, and the share of
questions with at least one correct sample (the correctness signal). The model is loaded once.
Writes a Markdown table (stdout and --out) that docs/results.md quotes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="temptabqa-c")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--schemas", default="flat,tables", help="comma-separated schema variants")
    parser.add_argument("--few-shot", default="0,2", help="comma-separated few-shot counts")
    parser.add_argument("--temperatures", default="0.8", help="comma-separated temperatures")
    parser.add_argument("--sample-rows", type=int, default=3)
    parser.add_argument("--num-generations", type=int, default=8, help="G, samples per question")
    parser.add_argument("--questions", type=int, default=16, help="training questions per setting")
    parser.add_argument("--max-completion-length", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/probe_signal.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from agents.policy import LoRAPolicy, PolicyConfig
    from sqlenv.env import TextToSQLEnv

    torch.manual_seed(args.seed)
    policy = LoRAPolicy(PolicyConfig(model=args.model, threads=args.threads,
                                     max_completion_length=args.max_completion_length))
    G = args.num_generations
    rows = []
    settings = list(itertools.product(args.schemas.split(","), [int(k) for k in args.few_shot.split(",")],
                                      [float(t) for t in args.temperatures.split(",")]))
    for schema, few_shot, temperature in settings:
        env = TextToSQLEnv(dataset=args.dataset, split=args.split, data_dir=args.data_dir, schema=schema,
                           sample_rows=args.sample_rows, reward="partial")
        indices = np.random.default_rng(args.seed).choice(len(env.dataset), size=args.questions, replace=False)
        policy.config.few_shot = few_shot
        start, tokens = time.perf_counter(), 0
        stats = {"errors": 0, "correct": 0, "mixed_binary": 0, "mixed_partial": 0, "any_correct": 0}
        for i in tqdm(indices, desc=f"{schema} few_shot={few_shot} T={temperature}", leave=False):
            obs, _ = env.reset(options={"index": int(i)})
            rollouts = policy.generate([policy.prompt(obs)], G, temperature=temperature)
            tokens += sum(len(r.completion_ids) for r in rollouts)
            scored = env.score_group([r.sql for r in rollouts])
            binary = [-1.0 if info["error"] else float(info["correct"]) for _, info in scored]
            partial = [reward for reward, _ in scored]
            stats["errors"] += sum(info["error"] is not None for _, info in scored)
            stats["correct"] += sum(info["correct"] for _, info in scored)
            stats["mixed_binary"] += len(set(binary)) > 1
            stats["mixed_partial"] += len(set(partial)) > 1
            stats["any_correct"] += any(info["correct"] for _, info in scored)
        n, q = len(indices) * G, len(indices)
        rows.append({
            "schema": schema, "few_shot": few_shot, "temperature": temperature,
            "error_share": stats["errors"] / n, "accuracy": stats["correct"] / n,
            "mixed_binary": stats["mixed_binary"] / q, "mixed_partial": stats["mixed_partial"] / q,
            "any_correct": stats["any_correct"] / q, "tokens_per_s": tokens / (time.perf_counter() - start),
        })
        print(json.dumps(rows[-1]), flush=True)
    header = ("| schema | few-shot | T | error share | accuracy | mixed groups (binary) | "
              "mixed groups (partial) | questions with a right sample | tokens/s |")
    lines = [f"{args.dataset}/{args.split}, {args.questions} questions x G={G}, {args.model}, "
             f"max {args.max_completion_length} new tokens, {args.sample_rows} sample rows", "",
             header, "|" + " --- |" * 9]
    for r in rows:
        lines.append(f"| {r['schema']} | {r['few_shot']} | {r['temperature']:g} | {r['error_share']:.0%} | "
                     f"{r['accuracy']:.1%} | {r['mixed_binary']:.0%} | {r['mixed_partial']:.0%} | "
                     f"{r['any_correct']:.0%} | {r['tokens_per_s']:.0f} |")
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
