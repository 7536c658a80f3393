"""curves.png: the training curves of a run, one panel per metric family, drawn from metrics.jsonl.

A step sees a few questions, so each raw training line is drawn faintly under its ``SMOOTH``-step
running mean; evaluation points are drawn as markers. Two panels show the collapse monitors
(``agents/monitors.py``) of the training samples and of the held-out evaluations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from agents.metrics_log import read_metrics
from agents.monitors import MONITORS, REFERENCE_LEVELS

COLLAPSE = tuple(name for name in MONITORS if name not in REFERENCE_LEVELS)  # the signs of collapse, plotted
PLOTS = (("train/reward_mean", "eval/reward_mean"), ("train/accuracy", "eval/accuracy"),
         ("train/error_frac", "eval/error_frac"), ("train/frac_zero_std",), ("train/loss",),
         ("train/completion_len",), ("train/kl",), ("train/clip_frac",),
         tuple(f"train/collapse/{m}" for m in COLLAPSE), tuple(f"eval/collapse/{m}" for m in COLLAPSE),
         # multi-turn runs only (agents/multiturn.py)
         ("train/turns_mean", "eval/turns_mean"),
         ("train/explore_error_frac", "train/no_answer_frac", "train/malformed_frac"),
         ("train/explore_found_frac", "train/found_then_lost_frac", "eval/found_then_lost_frac"),
         ("train/explore_floor_frac", "train/floor_kept_frac", "eval/floor_kept_frac"))
TITLES = {"train/collapse/floor": "collapse signs, train samples", "eval/collapse/floor": "collapse signs, held-out",
          "train/explore_error_frac": "failed moves, train episodes",
          "train/explore_found_frac": "an exploration was right (then lost)",
          "train/explore_floor_frac": "an exploration came back 0 / empty (then kept)"}
SMOOTH = 5  # steps in the running mean drawn over each training curve


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def present_panels(records: Sequence[dict]) -> list[tuple[str, ...]]:
    """The panels of ``PLOTS`` that have at least one value in ``records``."""
    return [keys for keys in PLOTS if any(r.get(k) is not None for r in records for k in keys)]


def plot_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """Training curves (one panel per metric family) from metrics.jsonl to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    panels = present_panels(records)
    if not panels:
        return None
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, keys in zip(axes.flat, panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                if key.startswith("eval/") or len(ys) < 2 * SMOOTH:
                    ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, markersize=3, label=key)
                else:  # a step sees a few questions: the raw line is noise, its running mean the trend
                    line, = ax.plot(xs, ys, alpha=0.3, linewidth=0.8)
                    ax.plot(xs, running_mean(ys, SMOOTH), color=line.get_color(),
                            label=f"{key} ({SMOOTH}-step mean)")
        ax.set_title(TITLES.get(keys[0], keys[0].split("/", 1)[1]))
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path

