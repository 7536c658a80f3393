"""Sampling speed: one prompt per decode loop against all prompts of a step in one loop.

    .venv/bin/python benchmarks/bench_generate.py --data-dir ../shared/data/temptabqa-c --prompts 4 -G 8

``LoRAPolicy.generate`` decodes up to ``max_batch_rows`` sequences together: the prompts of one call
are left-padded, prefilled as one batch, and each prompt's KV cache is copied G times. This script
loads the model once and, on the same training prompts, alternates ``max_batch_rows = G`` (one prompt
per decode loop, the old path) and ``max_batch_rows = prompts x G`` (all together), ``--repeats``
times each, reporting sampled tokens per second side by side and their ratio. It also checks that
greedy decoding gives the same SQL both ways (padding must not change what the model writes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="temptabqa-c")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--schema", default="flat")
    parser.add_argument("--few-shot", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4, help="questions per generate call (a GRPO step's batch)")
    parser.add_argument("-G", "--num-generations", type=int, default=8, help="samples per question")
    parser.add_argument("--max-completion-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per setting (alternating)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from agents.policy import LoRAPolicy, PolicyConfig
    from sqlenv.env import TextToSQLEnv

    policy = LoRAPolicy(PolicyConfig(model=args.model, threads=args.threads, few_shot=args.few_shot,
                                     max_completion_length=args.max_completion_length))
    env = TextToSQLEnv(dataset=args.dataset, split=args.split, data_dir=args.data_dir, schema=args.schema)
    step = max(1, len(env.dataset) // args.prompts)
    prompts = [policy.prompt(env.reset(options={"index": i * step})[0]) for i in range(args.prompts)]
    env.close()
    G = args.num_generations
    settings = {"one prompt per loop": G, "all prompts in one loop": G * args.prompts}

    greedy = {}
    for name, rows in settings.items():
        policy.config.max_batch_rows = rows
        greedy[name] = [r.sql for r in policy.generate(prompts, 1, greedy=True)]
    same = len(set(map(tuple, greedy.values()))) == 1

    tokens = {name: 0 for name in settings}
    seconds = {name: 0.0 for name in settings}
    for repeat in range(args.repeats):
        for name, rows in settings.items():
            policy.config.max_batch_rows = rows
            torch.manual_seed(repeat)
            start = time.perf_counter()
            rollouts = policy.generate(prompts, G)
            seconds[name] += time.perf_counter() - start
            tokens[name] += sum(len(r.completion_ids) for r in rollouts)

    print(f"{args.model}, {args.prompts} prompts x G={G}, {args.threads} thread(s), {args.repeats} repeats, "
          f"prompt lengths {[len(policy.encode(p)) for p in prompts]}")
    print("| setting | max_batch_rows | tokens | seconds | tokens/s |\n|---|---|---|---|---|")
    for name, rows in settings.items():
        print(f"| {name} | {rows} | {tokens[name]} | {seconds[name]:.1f} | {tokens[name] / seconds[name]:.1f} |")
    names = list(settings)
    ratio = (tokens[names[1]] / seconds[names[1]]) / (tokens[names[0]] / seconds[names[0]])
    print(f"batched / one-at-a-time tokens/s: {ratio:.2f}x; greedy SQL identical both ways: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
