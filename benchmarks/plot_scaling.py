"""Plot our GRPO step's cost against G, prompt length and questions per step (from bench_train --sweep).

    .venv/bin/python benchmarks/bench_train.py --sweep scaling.json ...
    .venv/bin/python benchmarks/plot_scaling.py scaling.json docs/img/scaling.png

One panel per factor of the sweep; each bar is seconds per step split into generation, scoring
and update, labelled with the prompt tokens per question and the completion tokens per step.
``--clock cpu`` (default) plots process CPU seconds, which a busy shared machine disturbs far less
than wall time; ``--clock wall`` plots wall seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FACTORS = (("G", "G (completions per question)"), ("few_shot", "few-shot examples in the prompt"),
           ("sample_rows", "sample rows per table in the prompt"), ("questions", "questions per step"))
PARTS = (("gen_s", "generation"), ("score_s", "scoring"), ("update_s", "update"))


def plot(sweep: dict, png: Path, clock: str = "cpu") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sweep["results"]
    factors = [(key, title) for key, title in FACTORS if any(r["factor"] == key for r in rows)]
    fig, axes = plt.subplots(1, len(factors), figsize=(3.6 * len(factors), 3.6), squeeze=False)
    colors = {"gen_s": "#4c72b0", "score_s": "#dd8452", "update_s": "#55a868"}
    for ax, (key, title) in zip(axes[0], factors):
        points = [r for r in rows if r["factor"] == key]
        labels = [str(r["value"]) for r in points]
        bottom = [0.0] * len(points)
        for part, name in PARTS:
            values = [r[part.replace("_s", "_cpu_s") if clock == "cpu" else part] for r in points]
            ax.bar(labels, values, bottom=bottom, color=colors[part], label=name)
            bottom = [b + v for b, v in zip(bottom, values)]
        for x, (r, top) in enumerate(zip(points, bottom)):
            ax.text(x, top, f"{r['prompt_tokens_mean']:.0f} p-tok\n{r['tokens_per_step']:.0f} c-tok",
                    ha="center", va="bottom", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("CPU seconds per step" if clock == "cpu" else "seconds per step")
        ax.set_ylim(0, max(bottom) * 1.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    base = sweep.get("base", {})
    fig.suptitle(f"our GRPO step on CPU ({base.get('threads', 1)} thread), base: G={base.get('num_generations')}, "
                 f"{base.get('batch_size')} question(s), few_shot={base.get('few_shot')}, "
                 f"sample_rows={base.get('sample_rows')}, max {base.get('max_completion_length')} new tokens",
                 fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="JSON written by bench_train.py --sweep")
    parser.add_argument("png", nargs="?", default="docs/img/scaling.png")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args(argv)
    print(plot(json.loads(Path(args.sweep).read_text()), Path(args.png), args.clock))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
