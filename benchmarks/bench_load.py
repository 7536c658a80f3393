"""Cold against warm model loads: converting the GGUF file, then reading the converted-model cache.

Each load runs in a fresh Python process (what an evaluation, the trainer or a test pays), against a
cache folder that starts empty: the first load converts the GGUF file and writes the cache ("cold"),
the next ones read it ("warm"). ``load`` is the time inside ``load_model_and_tokenizer`` (imports
excluded); ``process`` is the whole child process, imports included.

    .venv/bin/python benchmarks/bench_load.py --threads 1
    .venv/bin/python benchmarks/bench_load.py --model qwen2.5-coder-0.5b --warm 1

The cache folder is a temporary one unless ``--cache-dir`` is given (then it is used as
``SQLENV_CACHE_DIR``, and a cache already there makes the first load warm too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(model: str, threads: int, dtype: str) -> None:
    """One load in this process; prints a JSON line."""
    import torch  # noqa: F401  (imported before the clock starts, as in any real process)
    import transformers  # noqa: F401

    from agents.models import load_model_and_tokenizer

    start = time.perf_counter()
    loaded, _ = load_model_and_tokenizer(model, device="cpu", dtype=dtype, threads=threads)
    seconds = time.perf_counter() - start
    print(json.dumps({"load_s": round(seconds, 2), "cache": loaded.sqlenv_load_info.cache}))


def run_one(args, cache_dir: str) -> dict:
    env = dict(os.environ, SQLENV_CACHE_DIR=cache_dir, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads),
               TQDM_DISABLE="1")
    env.pop("SQLENV_MODEL_CACHE", None)
    env.pop("SQLENV_MODEL_CACHE_DIR", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--threads", str(args.threads),
                          "--dtype", args.dtype], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    record = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(record, process_s=round(wall, 2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="a model name, .gguf path or folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each load (default 1)")
    parser.add_argument("--dtype", default="float32", help="dtype to load in (default float32)")
    parser.add_argument("--warm", type=int, default=2, help="warm loads after the cold one (default 2)")
    parser.add_argument("--cache-dir", help="SQLENV_CACHE_DIR for the runs (default: a new temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.model, args.threads, args.dtype)
        return
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        cache_dir = args.cache_dir or tmp
        runs = [dict(run_one(args, cache_dir), load="cold")]
        runs += [dict(run_one(args, cache_dir), load=f"warm {i}") for i in range(1, args.warm + 1)]
    print(f"model {args.model}, dtype {args.dtype}, {args.threads} thread(s), a fresh process per load")
    print(f"{'load':<8} {'cache':<12} {'load s':>8} {'process s':>10}")
    for run in runs:
        print(f"{run['load']:<8} {run['cache']:<12} {run['load_s']:>8.2f} {run['process_s']:>10.2f}")
    warm = [r["load_s"] for r in runs[1:]]
    if warm:
        print(f"cold / best warm: {runs[0]['load_s'] / min(warm):.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "dtype": args.dtype, "threads": args.threads,
                                               "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
