"""Held-out report of a training run: each policy on each split, and paired comparisons between them.

    python benchmarks/heldout_table.py untuned=runs/x/eval_untuned start=runs/x/eval_warm grpo=runs/x/eval_final
    python benchmarks/heldout_table.py untuned=runs/x/eval_untuned grpo=runs/x/eval_final --out docs/heldout.md

Each ``LABEL=FOLDER`` names a policy and the folder of its ``benchmarks/evaluate.py`` results, one JSON per
split (``evaluate.py --split test --out FOLDER``); the split is read from each result's config, not from its
file name. Policies are given in order (the untuned model, then each stage of training). The report:

* Table 1, one row per split (dev, original, counterfactual, small, large, easy, medium, hard, then any
  other, whichever are present; then ``test, pooled`` where every policy has two test splits or more: their
  distinct questions, each once): for each policy its execution accuracy with the 95 % Wilson interval,
  its failing queries, and two collapse monitors (``agents/monitors.py``): floor answers and literal
  answers, % of questions, as evaluate.py stored them in the result's metrics (``n/a``: a result written
  before that monitor existed);
* Table 2, per split, paired comparisons (``agents/paired.py``: paired bootstrap interval of the difference,
  McNemar's exact test) of each policy against the one before it and, with three policies or more, of the
  last against the first. A split that one of the pair lacks is skipped, with a note;
* the files read.

A folder without result JSONs, or with two results for one split, is an error naming the folder (and the
split); so is a pair of results on different questions, naming both files.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: make `agents` importable
    sys.path.insert(0, str(REPO))

from agents.monitors import LABELS  # noqa: E402  (no torch)
from agents.paired import RESAMPLES, PairingError, format_p, load_result, paired_comparison  # noqa: E402
from benchmarks.evaluate import compute_metrics, test_splits  # noqa: E402  (no torch)

PROG = "benchmarks/heldout_table.py"
#: The test splits pooled into one row (TempTabQA-C's seven: ``evaluate.py --split test``).
TEST_SPLITS = test_splits("temptabqa-c")
#: The splits' order in the tables (TempTabQA-C's dev, then its test splits); any other split follows, sorted.
SPLIT_ORDER = ("dev", *TEST_SPLITS)
#: The row of the test splits pooled: their distinct questions, each counted once (:func:`pooled_result`).
POOLED = "test, pooled"
#: The collapse monitors shown per policy (their labels: agents/monitors.py's LABELS).
MONITORS_SHOWN = ("floor", "literal")
MISSING = "—"


class HeldoutError(ValueError):
    """Results that cannot be tabulated; the message names the folder, split or files at fault."""


class PolicyResults:
    """One policy's results: ``by_split`` maps a split to ``(file, result)``, read from ``folder``."""

    def __init__(self, label: str, folder: Path, by_split: dict[str, tuple[Path, dict]] | None = None):
        self.label, self.folder = label, folder
        self.by_split: dict[str, tuple[Path, dict]] = dict(by_split or {})


# ---------------------------------------------------------------------------------------- reading
def read_folder(label: str, folder: str | Path) -> PolicyResults:
    """The evaluate.py results in ``folder`` (``*.json``), one per split; HeldoutError naming the folder when
    there are none, or naming the folder, the split and both files when one split has two."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HeldoutError(f"{label}={folder}: no such folder")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise HeldoutError(f"{label}={folder}: no result JSONs in this folder (write them with "
                           f"benchmarks/evaluate.py --split SPLIT --out {folder})")
    policy = PolicyResults(label, folder)
    for path in files:
        try:
            result = load_result(path)
        except PairingError as exc:
            raise HeldoutError(f"{label}={folder}: {exc}") from None
        split = result.get("config", {}).get("split")
        if not split:
            raise HeldoutError(f"{label}={folder}: {path} records no split in its config")
        if split in policy.by_split:
            raise HeldoutError(f"{label}={folder}: two results for split {split!r}: {policy.by_split[split][0]} "
                               f"and {path}; keep one per split in the folder")
        policy.by_split[split] = (path, result)
    return policy


def ordered_splits(policies: Sequence[PolicyResults]) -> list[str]:
    """Every split present in any policy: those of SPLIT_ORDER in its order, then the others sorted."""
    present = {split for p in policies for split in p.by_split}
    others = sorted(present - set(SPLIT_ORDER) - {POOLED})
    return [s for s in SPLIT_ORDER if s in present] + others + ([POOLED] if POOLED in present else [])


def question_keys(records: Sequence[dict], split: str) -> list[tuple]:
    """What makes records of two test splits the same question: its text, its gold answer and which occurrence
    of that pair in its split it is (a split that asks one question twice keeps both); a record without its
    text stays its split's own."""
    seen: Counter = Counter()
    keys = []
    for record in records:
        question = record.get("question")
        if not question:
            keys.append(("record", split, record["index"]))
            continue
        pair = (question, str(record.get("answer")))
        keys.append(("question", *pair, seen[pair]))
        seen[pair] += 1
    return keys


def pooled_splits(policies: Sequence[PolicyResults]) -> list[str]:
    """The test splits every policy has, in SPLIT_ORDER; pooled only when there are two or more."""
    shared = [s for s in TEST_SPLITS if all(s in p.by_split for p in policies)]
    return shared if len(shared) > 1 else []


def pooled_result(policy: PolicyResults, splits: Sequence[str]) -> dict:
    """One evaluate.py-like result over the distinct questions (:func:`question_keys`) of ``splits``: each
    question's first record in split order, re-indexed in order of first appearance (so two policies evaluated
    on the same questions pair by question; paired_comparison checks their ids), metrics as evaluate.py
    computes them; ``pooled`` says which splits, how many records they hold, and how many records repeating a
    question of an earlier split scored otherwise there."""
    first: dict[tuple, dict] = {}
    disagreements = 0
    for split in splits:
        records = sorted(policy.by_split[split][1]["records"], key=lambda r: int(r["index"]))
        for key, record in zip(question_keys(records, split), records):
            if key in first:
                disagreements += bool(first[key]["correct"]) != bool(record["correct"])
            else:
                first[key] = record
    records = [dict(record, index=i) for i, record in enumerate(first.values())]
    config = dict(policy.by_split[splits[0]][1].get("config", {}), split=POOLED, limit=None)
    pooled = {"splits": list(splits), "records": sum(len(policy.by_split[s][1]["records"]) for s in splits),
              "scored_otherwise": disagreements}
    return {"config": config, "metrics": compute_metrics(records), "records": records, "pooled": pooled}


def comparison_pairs(count: int) -> list[tuple[int, int]]:
    """(A, B) policy positions compared: each with the one before it, and the last with the first when there
    are three or more (with two, that is the one consecutive pair)."""
    pairs = [(i - 1, i) for i in range(1, count)]
    if count > 2:
        pairs.append((0, count - 1))
    return pairs


# ---------------------------------------------------------------------------------------- tables
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def policy_cells(result: dict | None) -> list[str]:
    """Table 1's cells of one policy on one split: accuracy (95 % CI), failing, floor, literal (%)."""
    if result is None:
        return [MISSING] * (2 + len(MONITORS_SHOWN))
    m = result["metrics"]
    ci = m.get("execution_accuracy_ci95")
    acc = f"{m['execution_accuracy']:.2f}" + (f" ({ci[0]:.1f}-{ci[1]:.1f})" if ci else "")
    collapse = m.get("collapse", {})
    monitors = [f"{100.0 * collapse[name]:.2f}" if name in collapse else "n/a" for name in MONITORS_SHOWN]
    return [acc, f"{m['error_rate']:.2f}"] + monitors


def accuracy_table(policies: Sequence[PolicyResults], splits: Sequence[str]) -> str:
    """Table 1: a row per split, each policy's accuracy, failing share and monitors."""
    header = ["Split", "N"]
    for p in policies:
        header += [f"{p.label} acc. (%) (95% CI)", f"{p.label} failing (%)"]
        header += [f"{p.label} {name} (%)" for name in MONITORS_SHOWN]
    rows = []
    for split in splits:
        results = [p.by_split.get(split, (None, None))[1] for p in policies]
        sizes = [str(r["metrics"]["n"]) if r is not None else MISSING for r in results]
        present = {size for size in sizes if size != MISSING}
        n = present.pop() if len(present) == 1 else " / ".join(sizes)  # one N, or each policy's when they differ
        rows.append([split, n] + [cell for r in results for cell in policy_cells(r)])
    return _table(header, rows)


def comparisons(policies: Sequence[PolicyResults], splits: Sequence[str], *, resamples: int = RESAMPLES,
                seed: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """Table 2's paired comparisons (agents/paired.py's ``paired_comparison``, each with ``split``, ``label_a``
    and ``label_b`` added) and the notes on the pairs skipped; HeldoutError naming both files when a pair's
    questions differ."""
    found, notes = [], []
    for split in splits:
        skipped = []
        for i, j in comparison_pairs(len(policies)):
            a, b = policies[i], policies[j]
            if split not in a.by_split or split not in b.by_split:
                skipped.append(f"{b.label} vs {a.label}")
                continue
            (file_a, result_a), (file_b, result_b) = a.by_split[split], b.by_split[split]
            try:
                c = paired_comparison(result_a, result_b, (str(file_a), str(file_b)), resamples=resamples, seed=seed)
            except PairingError as exc:
                raise HeldoutError(f"split {split!r}: cannot pair {b.label} ({file_b}) with {a.label} ({file_a}): "
                                   f"{exc}") from None
            found.append(dict(c, split=split, label_a=a.label, label_b=b.label))
        if skipped:
            missing = [p.label for p in policies if split not in p.by_split]
            notes.append(f"{split}: no result for {', '.join(missing)}, so {', '.join(skipped)} "
                         f"{'is' if len(skipped) == 1 else 'are'} skipped.")
    return found, notes


def comparison_table(found: Sequence[dict[str, Any]]) -> str:
    """Table 2: a row per (split, pair), B against A."""
    header = ["Split", "B vs A", "N", "Acc. A (%)", "Acc. B (%)", "Diff. (points)", "95% CI (bootstrap)",
              "McNemar p", "A only", "B only"]
    rows = [[c["split"], f"{c['label_b']} vs {c['label_a']}", str(c["n"]), f"{c['accuracy_a']:.2f}",
             f"{c['accuracy_b']:.2f}", f"{c['diff']:+.2f}", f"{c['diff_ci95'][0]:+.1f} to {c['diff_ci95'][1]:+.1f}",
             format_p(c["p_mcnemar"]), str(c["a_only"]), str(c["b_only"])] for c in found]
    return _table(header, rows)


def pooled_note(policies: Sequence[PolicyResults]) -> str:
    """What the pooled row holds: the splits, the records and the distinct questions, and per policy how many
    repeated questions scored otherwise than in the earlier split that counts."""
    info = [p.by_split[POOLED][1]["pooled"] for p in policies]
    n = policies[0].by_split[POOLED][1]["metrics"]["n"]
    otherwise = ", ".join(f"{p.label} {i['scored_otherwise']}" for p, i in zip(policies, info))
    return (f"{POOLED}: the {n} distinct questions (same text and gold answer) of {', '.join(info[0]['splits'])} "
            f"({info[0]['records']} records; a question in several splits counts once, as its first split scored "
            f"it; repeats scored otherwise in a later split: {otherwise}).")


def format_report(policies: Sequence[PolicyResults], *, resamples: int = RESAMPLES, seed: int = 0,
                  command: str | None = None) -> str:
    """The Markdown report: Table 1, Table 2 (with a note per skipped pair) and the files read."""
    pooled = pooled_splits(policies)
    if pooled:
        policies = [PolicyResults(p.label, p.folder, dict(p.by_split, **{POOLED: (p.folder, pooled_result(p, pooled))}))
                    for p in policies]
    splits = ordered_splits(policies)
    found, notes = comparisons(policies, splits, resamples=resamples, seed=seed)
    out = [f"# Held-out evaluation: {', '.join(p.label for p in policies)}", ""]
    if command:
        out += ["```", command, "```", ""]
    out += ["## Accuracy, failing queries and collapse monitors by split", "", accuracy_table(policies, splits), ""]
    out += ["Accuracy: execution accuracy, its 95% Wilson interval in brackets (benchmarks/evaluate.py); failing: "
            "queries that failed to execute; "
            + "; ".join(f"{name}: {LABELS[name]}" for name in MONITORS_SHOWN)
            + " (agents/monitors.py). All in % of the questions; n/a: the result was written before that monitor "
              f"existed; {MISSING}: no result for that split.", ""]
    if pooled:
        out += [pooled_note(policies), ""]
    out += ["## Paired comparisons", ""]
    if found:
        out += [comparison_table(found), ""]
        out += [f"Diff.: accuracy of B minus A, in points; interval: paired bootstrap, {resamples} resamples, "
                f"seed {seed}; p: McNemar's exact test (two-sided); A only / B only: questions only A / only B "
                "answered right (agents/paired.py).", ""]
    else:
        out += ["No pair of policies shares a split." if len(policies) > 1 else "One policy: nothing to compare.",
                ""]
    out += [f"Skipped: {note}" for note in notes] + ([""] if notes else [])
    out += ["## Files read", ""]
    for p in policies:
        for split in ordered_splits([p]):
            if split == POOLED:
                continue
            path, result = p.by_split[split]
            c = result.get("config", {})
            out.append(f"- {p.label}: `{path}` ({c.get('dataset', '?')}/{split}, {c.get('schema', '?')} schema, "
                       f"{len(result['records'])} questions, policy {c.get('policy', '?')})")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------- CLI
def _policy_arg(text: str) -> tuple[str, str]:
    label, sep, folder = text.partition("=")
    label = label.strip()
    if not sep or not label or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: write LABEL=FOLDER, e.g. grpo=runs/x/eval_final")
    if "|" in label:
        raise argparse.ArgumentTypeError(f"{text!r}: a label cannot hold '|' (it would break the Markdown tables)")
    return label, folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Held-out report of benchmarks/evaluate.py results: accuracy (95% CI), failing queries and\n"
                    "collapse monitors per split and policy, then paired comparisons (bootstrap interval, McNemar's\n"
                    "exact test) of each policy with the one before it and of the last with the first.",
        epilog="example:\n  python benchmarks/heldout_table.py untuned=runs/x/eval_untuned start=runs/x/eval_warm "
               "grpo=runs/x/eval_final --out runs/x/heldout.md\n\nEach folder holds one result JSON per split "
               "(benchmarks/evaluate.py --split SPLIT --out FOLDER); the split is read from each result's config.")
    parser.add_argument("policies", nargs="+", type=_policy_arg, metavar="LABEL=FOLDER",
                        help="a policy's label and the folder of its result JSONs, in order (untuned first)")
    parser.add_argument("--out", default=None, metavar="FILE.md", help="also write the report to this file")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help=f"bootstrap resamples (default: {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples {args.resamples}: must be >= 1")
    labels = [label for label, _ in args.policies]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        parser.error(f"label {repeated[0]!r} given twice; give each policy its own label")
    try:
        policies = [read_folder(label, folder) for label, folder in args.policies]
        report = format_report(policies, resamples=args.resamples, seed=args.seed,
                               command=f"python {PROG} " + shlex.join(argv))
    except HeldoutError as exc:
        parser.error(str(exc))
    print(report, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
