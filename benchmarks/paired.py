"""Paired comparison of two evaluations of the same questions: is B's accuracy really different from A's?

    python benchmarks/paired.py BEFORE.json AFTER.json                 # a Markdown table
    python benchmarks/paired.py BEFORE.json AFTER.json --resamples 20000 --seed 1
    python benchmarks/paired.py WHOLE_SPLIT.json SUBSET.json --common  # on the questions both hold

Both files are ``benchmarks/evaluate.py`` results (their per-question ``records``), on the same
questions: matched by question index (and id, where recorded); a file whose questions differ is
refused with an error naming it. What is reported, A being the first file and B the second:

* accuracy of each, and the difference B - A in points;
* its 95 % interval from a paired bootstrap: questions resampled with replacement (the same draw for
  both policies), ``--resamples`` times, seeded, percentile interval;
* McNemar's exact test: only the discordant questions carry evidence (A-only right, B-only right);
  under "no difference" each is A-only or B-only with probability 1/2, so the two-sided p-value is
  ``min(1, 2 * P(X <= min(A-only, B-only)))``, X ~ Binomial(A-only + B-only, 1/2);
* the failing-query share of each and its relative change (B - A) / A.

The statistics live in ``agents/paired.py`` (the trainer's final evaluation uses them too); this
script is its command line, and ``benchmarks/evaluate.py --compare-to`` imports it.

Small differences need many questions: with 282 questions and 10 % accuracy, +5 points reaches
p < 0.05 only when few questions flip the other way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from agents.paired import (  # noqa: F401  (re-exported: benchmarks/evaluate.py imports them from here)
    RESAMPLES,
    PairingError,
    compare_files,
    format_paired,
    load_result,
    mcnemar_exact,
    pair_records,
    paired_bootstrap,
    paired_comparison,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/paired.py",
                                     description="Paired comparison (McNemar's exact test, paired bootstrap) of two "
                                                 "benchmarks/evaluate.py results on the same questions.")
    parser.add_argument("before", help="result JSON of policy A (e.g. the starting policy)")
    parser.add_argument("after", help="result JSON of policy B, on the same questions")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help=f"bootstrap resamples (default: {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--common", action="store_true",
                        help="compare on the questions both results hold (e.g. a --limit 100 run against a whole "
                             "split: evaluate.py's seeded subsets keep each question's index) instead of refusing "
                             "results whose questions differ")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples {args.resamples}: must be >= 1")
    try:
        comparison = compare_files(args.before, args.after, resamples=args.resamples, seed=args.seed,
                                   common=args.common)
    except PairingError as exc:
        parser.error(str(exc))
    print(format_paired(comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
