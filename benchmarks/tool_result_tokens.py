"""Tokens a TRL run's tool results spend of each rollout's ``--max-completion-length``, with the echoed query
(the default) and without it (``--no-echo-moves``): every logged tool call replayed in ``TextToSQLAgentTools`` of
both forms on its question; the replay in the run's form must give the logged text back.

    python benchmarks/tool_result_tokens.py docs/runs/trl-smol-tool-warmup/grpo_arctic_batch_steps1-7/rollouts.jsonl \
        --dataset temptabqa-c --schema flat --max-completion-length 384
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def tool_calls(completion: list[dict]) -> list[tuple[str, dict, str]]:
    """``(tool name, the call's function, the tool message TRL appended)`` for each call of a rollout, in order."""
    pending, calls = [], []
    for message in completion or []:
        if message.get("role") == "assistant":
            pending += [call["function"] for call in message.get("tool_calls") or []]
        elif message.get("role") == "tool" and pending:
            call = pending.pop(0)
            calls.append((call["name"], call, message.get("content") or ""))
    return calls


def replayed(rows: list[dict], dataset: str, schema: str, max_turns: int, data_dir: str | None = None,
             where: str = "rollouts") -> list[dict]:
    """Per rollout: the same calls' results with the echo (``echoed``) and without it (``without``), the log written
    in either form. A call TRL could not make (``call_query`` finds no query) keeps its logged message in both
    forms."""
    from sqlenv.datasets import load_dataset
    from sqlenv.integrations.trl_env import SQLEnvironmentFactory, call_query

    factories, out = {}, []
    for number, row in enumerate(rows, start=1):
        if row["split"] not in factories:
            split = load_dataset(dataset, row["split"], data_dir=data_dir, schema=schema)
            positions = {example.id: i for i, example in enumerate(split)}
            factories[row["split"]] = [SQLEnvironmentFactory(split, max_turns=max_turns, echo_moves=echo)()
                                       for echo in (True, False)], positions
        (echoed, bare), positions = factories[row["split"]]
        if row.get("id") not in positions:
            raise ValueError(f"{where}:{number}: question {row.get('id')!r} is not in {dataset}/{row['split']}")
        for tools in (echoed, bare):
            tools.reset(index=positions[row["id"]])
        with_echo, without = [], []
        for name, function, message in tool_calls(row.get("completion")):
            query = call_query(function)
            if query is None or name not in ("run_sql", "submit_answer"):
                with_echo.append(message)
                without.append(message)
                continue
            again = getattr(echoed, name)(query), getattr(bare, name)(query)
            if message not in again:
                raise ValueError(f"{where}:{number}: {name}({query!r}) now returns {again[0]!r} (without the echo "
                                 f"{again[1]!r}), the log has {message!r} (--dataset, --schema and --max-turns name "
                                 "the run's)")
            with_echo.append(again[0])
            without.append(again[1])
        out.append({"submitted": bool(row.get("submitted")), "echoed": with_echo, "without": without})
    return out


def summary(rollouts: list[dict], count, budget: int) -> dict:
    """Mean tool-result tokens per rollout, both forms, over all rollouts and over those that never answered."""
    def tokens(texts):
        return sum(count(text) for text in texts)

    def means(group):
        if not group:
            return {"rollouts": 0}
        echoed = statistics.fmean(tokens(r["echoed"]) for r in group)
        bare = statistics.fmean(tokens(r["without"]) for r in group)
        return {"rollouts": len(group), "calls": round(statistics.fmean(len(r["echoed"]) for r in group), 2),
                "with_echo": round(echoed, 1), "without_echo": round(bare, 1), "saved": round(echoed - bare, 1),
                "saved_share_of_budget": round((echoed - bare) / budget, 3)}

    return {"all": means(rollouts), "never_answered": means([r for r in rollouts if not r["submitted"]]),
            "max_completion_length": budget}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/tool_result_tokens.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", help="rollouts.jsonl files SQLEnvReward wrote (examples/trl_environment.py)")
    parser.add_argument("--dataset", default="generated", help="the dataset the run played")
    parser.add_argument("--schema", default="tables", help="the run's --schema")
    parser.add_argument("--data-dir", default=None, help="the dataset's files (default: SQLENV_DATA_DIR)")
    parser.add_argument("--max-turns", type=int, default=5, help="the run's --max-turns")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer counts (an agents.models name)")
    parser.add_argument("--max-completion-length", type=int, default=384, help="the run's token budget per rollout")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from agents.models import resolve_model

    path = Path(resolve_model(args.model))
    tokenizer = (AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name) if path.suffix == ".gguf"
                 else AutoTokenizer.from_pretrained(str(path)))
    rollouts = []
    for log in args.logs:
        rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
        rollouts += replayed(rows, args.dataset, args.schema, args.max_turns, args.data_dir, where=log)
    figures = summary(rollouts, lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
                      args.max_completion_length)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
