"""Multi-turn episodes with and without reusing each move's context (the engine's ``reusing_prompts``).

    .venv/bin/python benchmarks/bench_multiturn.py --data-dir ../shared/data/temptabqa-c --questions 16

``--questions`` TempTabQA-C questions of ``--split`` are played as ``agents.multiturn.run_episodes`` plays
them in training and in ``evaluate.py --max-turns``: ``-G`` episodes each of at most ``--max-turns`` moves
(greedy for G = 1, sampled from one seed otherwise), once with the engine keeping every move's context for
the next move (the default) and once prefilling every context whole, alternating ``--repeats`` times in one
process. Prints each mode's best time, the prompt tokens the reuse spared from prefilling, the ratio, and
whether the episodes are identical (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data-dir", default=None, help="TempTabQA-C folder (default: $SQLENV_DATA_DIR)")
    parser.add_argument("--split", default="dev", help="TempTabQA-C split (default: dev)")
    parser.add_argument("--policy", default="few-shot", help="few-shot, zero-shot or an adapter folder")
    parser.add_argument("--questions", type=int, default=16, help="questions played together (default: 16)")
    parser.add_argument("-G", "--num-generations", type=int, default=1, help="episodes per question (default: 1)")
    parser.add_argument("--max-turns", type=int, default=3, help="moves per episode at most (default: 3)")
    parser.add_argument("--max-completion-length", type=int, default=96, help="tokens per move (default: 96)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per mode, alternating (default: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)

    import torch

    from agents.baselines import make_policy
    from agents.multiturn import EnvPool, run_episodes
    from sqlenv.spec import EnvSpec

    torch.set_num_threads(args.threads)
    data_dir = args.data_dir or os.environ.get("SQLENV_DATA_DIR")
    env = EnvSpec(dataset="temptabqa-c", split=args.split, data_dir=data_dir, schema="flat",
                  max_turns=args.max_turns).make()
    policy = make_policy(args.policy, threads=args.threads, max_completion_length=args.max_completion_length,
                         batch_size=args.questions).lm
    greedy = args.num_generations == 1
    reusing = policy.reusing_prompts
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, list] = {}
    reused_tokens: dict[bool, int] = {}
    for _ in range(args.repeats):
        for reuse in (True, False):
            caches = []

            @contextlib.contextmanager
            def watched():
                with reusing() as cache:
                    caches.append(cache)
                    yield cache

            policy.reusing_prompts = watched if reuse else contextlib.nullcontext
            torch.manual_seed(0)
            start = time.perf_counter()
            episodes = run_episodes(policy, EnvPool(env.unwrapped), list(range(args.questions)),
                                    args.num_generations, greedy=greedy)
            times[reuse].append(time.perf_counter() - start)
            outputs[reuse] = [(e.text, e.reward) for e in episodes]
            reused_tokens[reuse] = sum(c.reused_tokens for c in caches)
            turns = sum(e.turns for e in episodes)
    env.close()
    on, off = min(times[True]), min(times[False])
    same = outputs[True] == outputs[False]
    print(f"{args.questions} questions x G={args.num_generations}, at most {args.max_turns} moves of "
          f"{args.max_completion_length} tokens; {turns} moves played; prompt tokens not prefilled again: "
          f"{reused_tokens[True]}")
    print(f"| contexts | best of {args.repeats} (s) |\n|---|---|\n| reused | {on:.1f} |\n"
          f"| prefilled whole | {off:.1f} |")
    print(f"whole / reused: {off / on:.2f}x; episodes identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
