"""Publish a trained adapter: a portable copy of its folder with a model card, for docs/runs/<run>/adapter/.

    python -m agents.publish runs/x/checkpoints/step_000020/adapter docs/runs/x/adapter \\
        --title "SmolLM2-135M, 20 GRPO steps" --command "python agents/grpo_train.py --seed 2" \\
        --result runs/x/eval_final/*.json

A saved adapter (``LoRAPolicy.save``) names this machine: PEFT writes the base model's local path into
``adapter_config.json`` and a boilerplate ``README.md``, and ``env_config.json`` holds the data folder it
was trained with. The published copy keeps the weights, ``policy_config.json`` and ``env_config.json``
with no machine path (``data_dir`` null: an evaluation then reads ``$SQLENV_DATA_DIR`` or
``--data-dir``), names the base model by its sqlenv name, and gets a card (``README.md``) saying what
it is, how it was made, what it scored and how to evaluate it. :func:`read_card` reads the card's
front matter back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from agents.adapter_card import ENV_FILE, POLICY_FILE

__all__ = ["CARD_FILE", "FILES", "publish", "read_card", "main"]

CARD_FILE = "README.md"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_FILE = "adapter_config.json"
FILES = (WEIGHTS_FILE, PEFT_FILE, POLICY_FILE, ENV_FILE, CARD_FILE)
BASE_MODELS = {  # sqlenv model name -> the model it is a copy of (the card's base_model)
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "qwen2.5-coder-0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
}


class PublishError(ValueError):
    """The adapter folder cannot be published as it is (names the file)."""


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PublishError(f"{path}: missing (is {path.parent} an adapter saved by sqlenv?)") from None
    except ValueError as exc:
        raise PublishError(f"{path}: not JSON ({exc})") from None


def _result_rows(results: Sequence[str | Path]) -> list[str]:
    rows = []
    for path in results:
        result = _json(Path(path))
        config, metrics = result.get("config", {}), result.get("metrics", {})
        if "execution_accuracy" not in metrics:
            raise PublishError(f"{path}: not a benchmarks/evaluate.py result (no metrics.execution_accuracy)")
        low, high = metrics.get("execution_accuracy_ci95", (float("nan"), float("nan")))
        rows.append(f"| {config.get('dataset')} | {config.get('split')} | {config.get('schema')} | {metrics.get('n')} "
                    f"| {metrics['execution_accuracy']:.2f} | {low:.1f}-{high:.1f} | {metrics['error_rate']:.2f} |")
    return rows


def evaluate_command(folder: str | Path, env: dict, results: Sequence[str | Path]) -> str:
    """The evaluate.py command that reproduces the card's first result (else: the adapter's held-out split)."""
    folder = Path(folder)
    if folder.is_absolute():  # a machine path is not shown: relative to here, else a placeholder
        folder = folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else "<this folder>"
    command = f"python benchmarks/evaluate.py --policy {folder}"
    if not results:
        return f"{command} --split {env.get('eval_split') or 'dev'}"
    config = _json(Path(results[0])).get("config", {})
    command += f" --dataset {config.get('dataset')} --split {config.get('split')} --schema {config.get('schema')}"
    return command + (f" --limit {config['limit']}" if config.get("limit") else "")


def card_text(title: str, policy: dict, env: dict, peft: dict, *, command: str | None, results: Sequence[str | Path],
              notes: str | None, evaluate: str, shown: Sequence[str] = ()) -> str:
    """The model card (front matter + Markdown) of a published adapter; ``shown``: the result files as
    paths relative to the folder above the adapter's (front matter ``results``, for re-checking)."""
    model = policy.get("model") or "smollm2-135m"
    base = BASE_MODELS.get(model, model)
    lines = ["---", "library_name: peft", f"base_model: {base}", f"sqlenv_model: {model}",
             "tags: [lora, text-to-sql, grpo, sqlenv]", *([f"results: {', '.join(shown)}"] if shown else []),
             "---", "", f"# {title}", "",
             f"A LoRA adapter (rank {peft.get('r')}, alpha {peft.get('lora_alpha')}, on "
             f"{', '.join(sorted(peft.get('target_modules') or []))}) for {base}, the sqlenv model `{model}`. "
             "It writes one SQLite query for a question about a database, as sqlenv's prompts ask "
             f"({policy.get('few_shot')} worked examples, at most {policy.get('max_completion_length')} tokens).", "",
             "## Trained on", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items() if key != "data_dir"]
    if command:
        lines += ["", "## How it was made", "", "```bash", command, "```"]
    if results:
        lines += ["", "## Results (greedy, `benchmarks/evaluate.py`)", "",
                  "| dataset | split | schema | N | accuracy (%) | 95% CI | failing queries (%) |",
                  "|---|---|---|---|---|---|---|", *_result_rows(results)]
    if notes:
        lines += ["", notes]
    lines += ["", "## Evaluate it", "", "```bash", f"SQLENV_DATA_DIR=../shared/data/temptabqa-c {evaluate}", "```",
              "", "The folder's `env_config.json` and `policy_config.json` give evaluate.py the environment "
              "and prompt it was trained with; any flag overrides them.", ""]
    return "\n".join(lines)


def publish(adapter: str | Path, dest: str | Path, *, title: str, command: str | None = None,
            results: Sequence[str | Path] = (), notes: str | None = None) -> Path:
    """Copy the adapter at ``adapter`` to ``dest`` without machine paths and with a card; returns ``dest``.

    ``dest`` must not exist or be an earlier publication (it is replaced); ``results`` are evaluate.py
    JSON results shown in the card."""
    adapter, dest = Path(adapter), Path(dest)
    if not (adapter / WEIGHTS_FILE).is_file():
        raise PublishError(f"{adapter / WEIGHTS_FILE}: missing (is {adapter} an adapter saved by sqlenv?)")
    policy, env, peft = (_json(adapter / name) for name in (POLICY_FILE, ENV_FILE, PEFT_FILE))
    if dest.exists() and not (dest / CARD_FILE).is_file():
        raise PublishError(f"{dest}: exists and is not a published adapter; choose another folder")
    model = policy.get("model") or "smollm2-135m"
    policy = {**policy, "adapter": None}
    env = {**env, "data_dir": None}
    peft = {**peft, "base_model_name_or_path": model}
    shown = [os.path.relpath(Path(r).resolve(), dest.parent.resolve()) for r in results]
    card = card_text(title, policy, env, peft, command=command, results=results, notes=notes,
                     evaluate=evaluate_command(dest, env, results), shown=shown)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(adapter / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
    for name, content in ((POLICY_FILE, policy), (ENV_FILE, env), (PEFT_FILE, peft)):
        (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
    (tmp / CARD_FILE).write_text(card)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def read_card(folder: str | Path) -> dict[str, Any]:
    """The front matter of a published adapter's card (``base_model``, ``sqlenv_model``, ``results``: the
    evaluate.py results it shows, relative to the folder above, ...) and its ``title``; a folder without a
    card is a PublishError naming it."""
    path = Path(folder) / CARD_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PublishError(f"{path}: missing (not a published adapter)") from None
    head, _, body = text.partition("\n---\n")
    if not head.startswith("---\n"):
        raise PublishError(f"{path}: no front matter")
    fields: dict[str, Any] = {}
    for line in head.splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    fields["title"] = next((line[2:] for line in body.splitlines() if line.startswith("# ")), "")
    return fields


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.publish", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example:\n  python -m agents.publish runs/x/checkpoints/step_000020/"
                                            "adapter docs/runs/x/adapter --title 'SmolLM2-135M, 20 GRPO steps' "
                                            "--result runs/x/eval_final/*.json")
    parser.add_argument("adapter", help="saved adapter folder (a checkpoint's adapter/, or a warm-up's)")
    parser.add_argument("dest", help="folder to write (replaced when it is an earlier publication)")
    parser.add_argument("--title", required=True, help="the card's title")
    parser.add_argument("--command", default=None, help="the command that trained it, shown in the card")
    parser.add_argument("--result", nargs="*", default=[], metavar="JSON",
                        help="benchmarks/evaluate.py results to show in the card")
    parser.add_argument("--notes", default=None, help="a paragraph for the card")
    args = parser.parse_args(argv)
    try:
        dest = publish(args.adapter, args.dest, title=args.title, command=args.command, results=args.result,
                       notes=args.notes)
    except PublishError as exc:
        parser.error(str(exc))
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"wrote {dest} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
