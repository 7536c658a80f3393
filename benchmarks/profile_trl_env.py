"""Where one step of ``examples/trl_environment.py`` (TRL ``GRPOTrainer(environment_factory=...)``) spends
its time and memory: a wall-clock and peak-RSS breakdown by part, ours (sqlenv) apart from TRL's.

    python benchmarks/profile_trl_env.py --help
    python benchmarks/profile_trl_env.py -- --output-dir /tmp/prof --max-completion-length 48
    python benchmarks/profile_trl_env.py --cprofile /tmp/prof/step.pstats -- --model qwen2.5-coder-0.5b

Everything after ``--`` goes to ``examples/trl_environment.py`` unchanged (same defaults: 1 step, 2
questions x 2 completions). The script wraps, without changing what they do, the functions a step calls:

* ours: the factory call (one environment), ``reset``, the tools ``run_sql`` / ``submit_answer``,
  the reward ``SQLEnvReward``, ``ensure_tool_chat_template``, the dataset load;
* TRL / transformers / torch: ``generate`` (sampling, prefill included), ``apply_chat_template``
  (prompt and tool-result rendering), ``parse_response`` (tool-call parsing), the log-prob forward,
  ``backward``, the optimizer step; the model load and the trainer's construction.

A part called inside another (``apply_chat_template`` inside our template check) is counted in both;
"share" is of TRL's ``training_step`` (generation, tools, reward, log-prob forward, backward; the
optimizer step runs outside it); the glue row is that step minus its parts. Peak RSS is sampled every
50 ms by a thread and attributed to the part running at that moment (the innermost), so a part's
"peak RSS" is the process's largest resident size seen while it ran. Timings are wall-clock on a shared machine: compare
runs made one after the other.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))


def rss_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Profile:
    """Per-part call count, wall seconds and peak RSS; a sampler thread tracks RSS by the running part."""

    def __init__(self, interval: float = 0.05):
        self.calls: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak: dict[str, int] = defaultdict(int)
        self.owner: dict[str, str] = {}
        self.stack: list[str] = []
        self.depth: dict[str, int] = defaultdict(int)
        self.max_rss = 0
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(self.interval):
            rss = rss_bytes()
            self.max_rss = max(self.max_rss, rss)
            part = self.stack[-1] if self.stack else "(outside)"
            self.peak[part] = max(self.peak[part], rss)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    @contextmanager
    def part(self, name: str):
        """Time ``name``; a re-entrant call of the same part (peft's generate calling the base's) counts once."""
        self.depth[name] += 1
        if self.depth[name] > 1:
            try:
                yield
            finally:
                self.depth[name] -= 1
            return
        self.stack.append(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1
            self.stack.pop()
            self.depth[name] -= 1
            rss = rss_bytes()
            self.peak[name] = max(self.peak[name], rss)

    def wrap(self, owner: object, attribute: str, name: str, side: str):
        """Replace ``owner.attribute`` by a timed wrapper (same arguments, same result)."""
        original = getattr(owner, attribute)
        self.owner[name] = side
        profile = self

        def timed(*args, **kwargs):
            with profile.part(name):
                return original(*args, **kwargs)

        functools.update_wrapper(timed, original)  # name, docstring, annotations: TRL's tool schema
        setattr(owner, attribute, timed)


def instrument(profile: Profile, module) -> None:
    """Wrap the parts listed in the module docstring (``module`` is examples/trl_environment.py)."""
    import accelerate
    import torch
    import transformers
    import trl.trainer.grpo_trainer as grpo
    from transformers import GenerationMixin, PreTrainedTokenizerBase

    import agents.models
    import sqlenv.datasets
    import sqlenv.integrations.trl_env as trl_env

    # ours: wrap the methods on the classes TRL sees (the tools keep their names and docstrings, so the
    # tool schema TRL renders is unchanged; TRL reads the signature through __wrapped__)
    profile.wrap(trl_env.SQLEnvironmentFactory, "__call__", "sqlenv: factory() (build one env)", "ours")
    profile.wrap(trl_env._SQLTools, "reset", "sqlenv: reset", "ours")
    profile.wrap(trl_env.TextToSQLAgentTools, "run_sql", "sqlenv: run_sql", "ours")
    profile.wrap(trl_env.TextToSQLAgentTools, "submit_answer", "sqlenv: submit_answer", "ours")
    profile.wrap(trl_env.TextToSQLTools, "submit_answer", "sqlenv: submit_answer", "ours")
    profile.wrap(trl_env.SQLEnvReward, "__call__", "sqlenv: reward", "ours")
    profile.wrap(trl_env, "ensure_tool_chat_template", "sqlenv: ensure_tool_chat_template", "ours")
    profile.wrap(sqlenv.datasets, "load_dataset", "sqlenv: load_dataset", "ours")
    # theirs
    profile.wrap(agents.models, "load_model_and_tokenizer", "model load (agents.models)", "model")
    profile.wrap(GenerationMixin, "generate", "transformers: generate", "trl")
    profile.wrap(PreTrainedTokenizerBase, "apply_chat_template", "transformers: apply_chat_template", "trl")
    profile.wrap(grpo, "parse_response", "transformers: parse_response (tool calls)", "trl")
    profile.wrap(grpo.GRPOTrainer, "__init__", "trl: GRPOTrainer.__init__", "trl")
    profile.wrap(grpo.GRPOTrainer, "_get_per_token_logps_and_entropies", "trl: log-prob forward", "trl")
    profile.wrap(grpo.GRPOTrainer, "training_step", "trl: training_step (all)", "trl")
    profile.wrap(accelerate.Accelerator, "backward", "torch: backward", "trl")
    profile.wrap(torch.optim.AdamW, "step", "torch: optimizer step", "trl")
    del transformers, module


def table(profile: Profile, total: float) -> str:
    """The breakdown as a text table, largest time first."""
    gib = 1 << 30
    rows = [f"{'part':46} {'side':6} {'calls':>6} {'seconds':>9} {'share':>6} {'peak RSS GiB':>13}"]
    step = profile.seconds.get("trl: training_step (all)", 0.0)
    inside = ("transformers: generate", "trl: log-prob forward", "torch: backward",
              "sqlenv: factory() (build one env)", "sqlenv: reset", "sqlenv: run_sql", "sqlenv: submit_answer",
              "sqlenv: reward", "transformers: parse_response (tool calls)")
    for name in sorted(profile.seconds, key=lambda n: -profile.seconds[n]):
        share = f"{100 * profile.seconds[name] / step:5.1f}%" if step and name in inside else ""
        rows.append(f"{name:46} {profile.owner.get(name, ''):6} {profile.calls[name]:6d} "
                    f"{profile.seconds[name]:9.2f} {share:>6} {profile.peak[name] / gib:13.2f}")
    if step:
        other = step - sum(profile.seconds.get(n, 0.0) for n in inside)
        rows.append(f"{'training_step minus the parts above (TRL glue)':46} {'trl':6} {'':6} {other:9.2f} "
                    f"{100 * other / step:5.1f}%")
    ours = sum(s for n, s in profile.seconds.items() if profile.owner.get(n) == "ours" and "load_dataset" not in n
               and "ensure_tool" not in n)
    rows.append(f"{'sqlenv inside the run (factory, reset, tools, reward)':46} {'ours':6} {'':6} {ours:9.2f}")
    rows.append(f"{'whole run (load, build, train)':46} {'':6} {'':6} {total:9.2f} {'':6} "
                f"{profile.max_rss / gib:13.2f}")
    return "\n".join(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/profile_trl_env.py", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to examples/trl_environment.py (see its --help).")
    parser.add_argument("--cprofile", metavar="PATH", help="Also run cProfile over the whole run and write its "
                        "pstats here; prints the 25 functions of largest cumulative time.")
    parser.add_argument("--json", metavar="PATH", help="Write the breakdown (seconds, calls, peak RSS) as JSON.")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then examples/trl_environment.py's arguments")
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    import trl_environment

    profile = Profile()
    instrument(profile, trl_environment)
    example_args = trl_environment.parse_args(rest)
    profiler = cProfile.Profile() if args.cprofile else None
    profile.start()
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    result = trl_environment.main(example_args)
    if profiler:
        profiler.disable()
    total = time.perf_counter() - start
    profile.stop()
    print(table(profile, total))
    if profiler:
        Path(args.cprofile).parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(args.cprofile)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    report = {"seconds": dict(profile.seconds), "calls": dict(profile.calls),
              "peak_rss_bytes": dict(profile.peak), "side": profile.owner, "total_seconds": total,
              "max_rss_bytes": profile.max_rss, "args": rest, "result": {k: v for k, v in result.items()
                                                                         if k != "rollouts"}}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
