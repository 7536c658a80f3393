"""Soak the environment: many steps in one process, a vector env, killed workers; print leaks.

    nice -n 10 .venv/bin/python benchmarks/soak.py                    # 100,000 steps, 10,000 vector steps
    nice -n 10 .venv/bin/python benchmarks/soak.py --steps 10000 --vector-steps 500 --kills 20

Three phases, each printing open file descriptors (/proc/self/fd), threads (Python and OS), child
processes and RSS before and after (after a warm-up, so caches and pools are already full):
  steps    env.reset + env.step with a mix of queries (gold SQL, wrong answers, syntax errors, writes,
           huge blobs, row-cap blow-ups, runaway CTEs that time out), plus a score_group with 2
           worker processes every 100 steps
  vector   gym.make_vec("TextToSQL-v0", num_envs=8, vector_mode="async") (SAME_STEP autoreset, the default);
           also the 8 subprocesses' RSS
  kills    score_group with one worker SIGKILLed mid-query, again and again: the sample must come
           back "other" with reward -1, the others scored, the pool replaced
tests/test_reliability.py runs the same functions with bounded counts.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUNAWAY = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r"
FIXED_QUERIES = [
    ("wrong", "SELECT name FROM Athlete"),
    ("syntax", "SELEC name FROM"),
    ("no_such_table", "SELECT * FROM Nope"),
    ("forbidden", "DROP TABLE Medal"),
    ("multiple_statements", "SELECT 1; DELETE FROM Medal"),
    ("too_large", "SELECT randomblob(1000000000)"),
    ("rows", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 20000) SELECT n FROM r"),
    ("unicode", "SELECT 'Kraków 東京 \U0001f600', x'00ff'"),
    ("bytes", b"SELECT 1"),
    ("runaway", RUNAWAY),
]


@dataclass(frozen=True)
class Snapshot:
    fds: int
    threads: int
    os_threads: int
    children: int
    rss_kb: int

    def __str__(self) -> str:
        return (f"fds {self.fds}, threads {self.threads} (OS {self.os_threads}), children {self.children}, "
                f"RSS {self.rss_kb / 1024:.1f} MiB")


def _status(pid="self") -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def child_pids(pid: int | None = None) -> list[int]:
    """Live child processes of `pid` (default: this one), by scanning /proc."""
    pid = os.getpid() if pid is None else pid
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(name))
    return found


def rss_kb(pid="self") -> int:
    return int(_status(pid)["VmRSS"].split()[0])


def snapshot() -> Snapshot:
    gc.collect()  # envs dropped earlier (e.g. by other tests) release their worker pools now, not mid-measurement
    status = _status()
    return Snapshot(
        fds=len(os.listdir("/proc/self/fd")),
        threads=threading.active_count(),
        os_threads=int(status["Threads"]),
        children=len(child_pids()),
        rss_kb=int(status["VmRSS"].split()[0]),
    )


def step_mix(env, steps: int, rng: random.Random, group_every: int = 100, runaway_share: float = 0.01) -> dict:
    """`steps` env.reset + env.step calls with a seeded mix of queries; a score_group with 2 workers every
    `group_every` steps. Returns {error kind or "ok": count} and the rewards seen; raises on a broken
    promise (a reward outside -1/0/1, or -1 without an error)."""
    from collections import Counter

    kinds, rewards = Counter(), Counter()
    n = len(env.dataset)
    for step in range(steps):
        index = rng.randrange(n)
        env.reset(options={"index": index})
        roll = rng.random()
        if roll < runaway_share:
            sql = RUNAWAY
        elif roll < 0.4:
            sql = env.example(index).gold_sql
        else:
            sql = rng.choice(FIXED_QUERIES[:-1])[1]
        _, reward, terminated, _, info = env.step(sql)
        if reward not in (-1.0, 0.0, 1.0) or (reward == -1.0) != (info["error"] is not None) or not terminated:
            raise AssertionError(f"step {step}: reward {reward} with {info['error']!r} for {sql!r}")
        kinds[info["error"] or "ok"] += 1
        rewards[reward] += 1
        if group_every and step % group_every == group_every - 1:
            sqls = [env.example(index).gold_sql, "SELEC", "SELECT 1", RUNAWAY if rng.random() < 0.1 else "SELECT 2"]
            scored = env.score_group(sqls, workers=2)
            if scored[0][0] != 1.0 or scored[1][0] != -1.0:
                raise AssertionError(f"group at step {step}: {[r for r, _ in scored]}")
    return {"kinds": kinds, "rewards": rewards}


def vector_run(steps: int, num_envs: int = 8, seed: int = 0, warmup: int = 20,
               shared_memory: bool = True) -> dict:
    """`steps` steps of an async vector env with SAME_STEP autoreset. Returns the rewards seen and the
    parent's snapshots (before make_vec, after warm-up, after the run, after close) and the workers'
    total RSS after warm-up and at the end."""
    import gymnasium as gym

    import sqlenv  # registers TextToSQL-v0

    dataset = sqlenv.load_dataset("generated")  # the env's default: reset info names the index, not the gold
    rng = random.Random(seed)
    before = snapshot()
    earlier_children = set(child_pids())  # e.g. worker pools of other envs in the same process
    envs = gym.make_vec("TextToSQL-v0", num_envs=num_envs, vector_mode="async", shared_memory=shared_memory)
    rewards: dict[float, int] = {}
    try:
        _, infos = envs.reset(seed=seed)
        workers = [p for p in child_pids() if p not in earlier_children]
        warm = after = None
        worker_rss_warm = worker_rss_end = 0
        for step in range(warmup + steps):
            if step == warmup:
                warm = snapshot()
                worker_rss_warm = sum(rss_kb(p) for p in workers)
            gold = [dataset[int(i)].gold_sql for i in infos["index"]]
            actions = [
                (gold[i] if gold[i] and rng.random() < 0.5 else rng.choice(FIXED_QUERIES[:-2])[1])
                for i in range(num_envs)
            ]
            _, reward, terminated, truncated, infos = envs.step(actions)
            if not terminated.all() or truncated.any():
                raise AssertionError(f"vector step {step}: terminated {terminated}, truncated {truncated}")
            for value in reward.tolist():
                if value not in (-1.0, 0.0, 1.0):
                    raise AssertionError(f"vector step {step}: reward {value}")
                rewards[value] = rewards.get(value, 0) + 1
        after = snapshot()
        worker_rss_end = sum(rss_kb(p) for p in workers)
    finally:
        envs.close()
    closed = snapshot()
    return {"rewards": rewards, "before": before, "warm": warm, "after": after, "closed": closed,
            "workers": len(workers), "worker_rss_warm_kb": worker_rss_warm, "worker_rss_end_kb": worker_rss_end}


def kill_mid_query(env, index: int, delay: float = 0.3) -> list:
    """score_group([RUNAWAY, gold], workers=1) with the worker SIGKILLed `delay` s into the runaway.
    The env's time budget must be well above `delay`. Returns the scored group and the seconds it took."""
    env.reset(options={"index": index})
    gold = env.example(index).gold_sql
    env.score_group(["SELECT 1"], workers=1)  # make sure the worker is up
    pid = env.executor._pool.pids[0]
    killer = threading.Timer(delay, os.kill, (pid, signal.SIGKILL))
    killer.start()
    start = time.perf_counter()
    try:
        scored = env.score_group([RUNAWAY, gold], workers=1)
    finally:
        killer.join()
    return scored, time.perf_counter() - start, pid


def _print_phase(name: str, before: Snapshot, after: Snapshot, seconds: float, extra: str = "") -> None:
    print(f"{name}: {seconds:.0f} s{extra}")
    print(f"  before: {before}")
    print(f"  after:  {after}")
    print(f"  growth: fds {after.fds - before.fds:+d}, threads {after.threads - before.threads:+d}, "
          f"children {after.children - before.children:+d}, RSS {(after.rss_kb - before.rss_kb) / 1024:+.1f} MiB",
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000, help="env.step calls in one process")
    parser.add_argument("--vector-steps", type=int, default=10_000, help="steps of the 8-env async vector env")
    parser.add_argument("--kills", type=int, default=50, help="workers killed mid-query")
    parser.add_argument("--warmup", type=int, default=1000, help="steps before the 'before' snapshot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("SQLENV_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "sqlenv-soak"))
    import tqdm as tqdm_module
    from tqdm import tqdm

    from sqlenv.env import TextToSQLEnv

    tqdm_module.tqdm.monitor_interval = 0  # no tqdm monitor thread: it would count as a thread leak

    rng = random.Random(args.seed)
    env = TextToSQLEnv(timeout=0.05)
    print(f"start: {snapshot()}")
    if args.steps:
        step_mix(env, args.warmup, rng)
        before, start = snapshot(), time.perf_counter()
        totals: dict = {"kinds": {}, "rewards": {}}
        chunk = 1000
        for done in tqdm(range(0, args.steps, chunk), unit="k steps"):
            stats = step_mix(env, min(chunk, args.steps - done), rng)
            for key in totals:
                for k, v in stats[key].items():
                    totals[key][k] = totals[key].get(k, 0) + v
        _print_phase(f"steps ({args.steps:,} env.step, a 4-query score_group with 2 workers every 100)",
                     before, snapshot(), time.perf_counter() - start)
        print(f"  kinds: {totals['kinds']}\n  rewards: {totals['rewards']}")
    env.close()
    if args.vector_steps:
        start = time.perf_counter()
        result = vector_run(args.vector_steps, seed=args.seed)
        _print_phase(f"vector ({args.vector_steps:,} steps x 8 async envs)", result["warm"], result["after"],
                     time.perf_counter() - start,
                     f"; workers' RSS {result['worker_rss_warm_kb'] / 1024:.1f} -> "
                     f"{result['worker_rss_end_kb'] / 1024:.1f} MiB over {result['workers']} processes")
        print(f"  after close: {result['closed']} (before make_vec: {result['before']})")
        print(f"  rewards: {result['rewards']}")
    if args.kills:
        killed = TextToSQLEnv(timeout=5.0)
        kill_mid_query(killed, 0)  # warm-up
        before, start, survived = snapshot(), time.perf_counter(), 0
        for i in range(args.kills):
            scored, took, _ = kill_mid_query(killed, rng.randrange(len(killed.dataset)))
            (r0, i0), (r1, _) = scored
            survived += r0 == -1.0 and i0["error"] == "other" and r1 == 1.0
        after = snapshot()
        killed.close()
        _print_phase(f"kills ({args.kills} workers SIGKILLed mid-query)", before, after, time.perf_counter() - start,
                     f"; {survived}/{args.kills} groups came back with the killed sample -1 ('other') and gold +1")
        print(f"  after close: {snapshot()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
