"""What rank 0 alone does in a run folder: print, write config.json and metrics.jsonl, checkpoints, curves.

``RunOutputs`` holds the trainer's rank-only side effects, so that ``agents/grpo_train.py`` calls each
one on every rank and reads the same in a plain and a data-parallel run: on the other ranks a print or
a write is a no-op, and a checkpoint first gathers every rank's RNG states (a collective they all join)
before rank 0 writes it. A plain run is rank 0 of 1 (``agents/distributed.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from agents.checkpoints import save_checkpoint
from agents.curves import plot_curves
from agents.distributed import World, rng_state
from agents.metrics_log import JsonlLogger, truncate_metrics
from sqlenv.spec import EnvSpec


class RunOutputs:
    """The run folder ``out`` and the console, written by rank 0; every method may be called on every rank."""

    def __init__(self, world: World, out: Path):
        self.world, self.out = world, Path(out)
        self.logger: JsonlLogger | None = None
        self.run_config: dict[str, Any] = {}
        self.env: EnvSpec | None = None
        self.eval_split: str | None = None

    def say(self, text: str):
        """Print a line (nothing when ``text`` is empty)."""
        if self.world.main and text:
            print(text, flush=True)

    def note(self, text: str):
        """Print a line while the progress bar runs."""
        if self.world.main:
            tqdm.write(text)

    def progress(self, start: int, total: int) -> tqdm:
        """The progress bar over steps ``start`` .. ``total`` - 1 (silent on the other ranks)."""
        return tqdm(range(start, total), initial=start, total=total, desc="grpo", dynamic_ncols=True,
                    disable=not self.world.main)

    def begin(self, run_config: Mapping[str, Any], env: EnvSpec, eval_split: str, resumed_step: int | None):
        """The run's first files, once everything is built: metrics logged past a resumed checkpoint (by the
        abandoned continuation) dropped, config.json written, metrics.jsonl opened. ``env`` and
        ``eval_split`` are what each checkpoint's adapter records (``agents/adapter_card.py``)."""
        self.run_config, self.env, self.eval_split = dict(run_config), env, eval_split
        if not self.world.main:
            return
        if resumed_step is not None:
            truncate_metrics(self.out / "metrics.jsonl", resumed_step)
        (self.out / "config.json").write_text(json.dumps(self.run_config, indent=2))
        self.logger = JsonlLogger(self.out / "metrics.jsonl")

    def log(self, step: int, metrics: Mapping[str, Any]):
        """One record of metrics.jsonl."""
        if self.logger is not None:
            self.logger.log(step, dict(metrics))

    def checkpoint(self, step: int, policy, optimizer, rng) -> Path:
        """``checkpoints/step_NNNNNN`` (``agents/checkpoints.py``), with every rank's RNG states; every rank
        must call it, and gets its path."""
        rank_rng = self.world.gather(rng_state(self.world)) if self.world.distributed else None
        path = self.out / "checkpoints" / f"step_{step:06d}"
        return self.world.on_main(lambda: save_checkpoint(path, policy, optimizer, step, rng, self.run_config,
                                                          env=self.env, eval_split=self.eval_split,
                                                          rank_rng=rank_rng))

    def finish(self, plot: bool):
        """Close metrics.jsonl; with ``plot``, draw curves.png from it."""
        if self.logger is None:
            return
        self.logger.close()
        if plot:
            png = plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
            if png:
                print(f"curves: {png}", flush=True)
