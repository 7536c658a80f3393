"""Greedy evaluation batches with and without the engine's shared-prefix prefill, side by side.

    .venv/bin/python benchmarks/bench_shared_prefill.py --data-dir ../shared/data/temptabqa-c --split original

A batch of ``--questions`` questions of a TempTabQA-C split, asked database by database as
``benchmarks/evaluate.py`` asks them (so one database's questions share a batch), is decoded greedily by
the rollout engine with ``share_prefixes`` on and off, alternating ``--repeats`` times in one process.
Prints the prompts' token counts, how many shared prefixes the engine found, each mode's best time, their
ratio, and whether the greedy completions are identical (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path



def database_order(db_keys):
    """benchmarks/evaluate.py's order (scripts are not a package: loaded from the file beside this one)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sqlenv_benchmarks_evaluate", Path(__file__).with_name("evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.database_order(db_keys)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data-dir", default=None, help="TempTabQA-C folder (default: $SQLENV_DATA_DIR)")
    parser.add_argument("--split", default="original", help="TempTabQA-C split (default: original)")
    parser.add_argument("--questions", type=int, default=48, help="questions in the batch (default: 48)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per mode, alternating (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--max-completion-length", type=int, default=64)
    args = parser.parse_args(argv)

    import torch

    from agents.baselines import make_policy
    from agents.engine import _common_prefix, _shared_groups
    from sqlenv.spec import EnvSpec

    torch.set_num_threads(args.threads)
    data_dir = args.data_dir or os.environ.get("SQLENV_DATA_DIR")
    env = EnvSpec(dataset="temptabqa-c", split=args.split, data_dir=data_dir, schema="flat").make()
    base = env.unwrapped
    order = database_order([base.dataset[i].db_key for i in range(len(base.dataset))])[:args.questions]
    observations = [base.reset(options={"index": i})[0] for i in order]
    env.close()
    policy = make_policy("few-shot", threads=args.threads, max_completion_length=args.max_completion_length,
                         batch_size=args.questions).lm
    prompts = [policy.prompt(o) for o in observations]
    ids = [policy.encode(p) for p in prompts]
    common = _common_prefix(ids)
    groups = _shared_groups([p[common:] for p in ids], 16)
    shared = len(groups[1]) if groups else 0
    print(f"{len(ids)} questions over {len({base.dataset[i].db_key for i in order})} databases; "
          f"{sum(map(len, ids)) / len(ids):.0f} prompt tokens each, {common} common to all; "
          f"{shared} shared prefixes found")
    policy.generate(prompts[:1], 1, greedy=True)  # builds the engine
    engine = policy._engine
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, list] = {}
    for _ in range(args.repeats):
        for share in (True, False):
            engine.min_shared = 16 if share else None
            start = time.perf_counter()
            result = policy.generate(prompts, 1, greedy=True)
            times[share].append(time.perf_counter() - start)
            outputs[share] = [r.completion_ids.tolist() for r in result]
    on, off = min(times[True]), min(times[False])
    same = outputs[True] == outputs[False]
    print(f"| shared prefill | best of {args.repeats} (s) |\n|---|---|\n| on | {on:.1f} |\n| off | {off:.1f} |")
    print(f"off / on: {off / on:.2f}x; greedy completions identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
