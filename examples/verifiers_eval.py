"""A real verifiers evaluation of sqlenv (``vf-eval``), offline, against a scripted policy.

    pip install -e '.[verifiers]'
    python examples/verifiers_eval.py                                  # gold SQL, TextToSQL-v0, 5 questions
    python examples/verifiers_eval.py --policy explore --env TextToSQLAgent-v0
    python examples/verifiers_eval.py --policy garbage -n 3
    python examples/verifiers_eval.py --schema flat --max-instructions 1000000   # the env's options

Starts ``ChatServer`` (an OpenAI-compatible endpoint on localhost answering with the scripted policy:
``gold`` replies with the question's gold SQL, ``explore`` runs one ``<sql>`` query and then answers
with the gold SQL, ``garbage`` replies "I don't know") and runs the real ``vf-eval`` CLI on the
``sqlenv-verifiers`` taskset against it. Every rollout is verifiers' chat program (``SQLChatHarness``)
talking to the endpoint through verifiers' interception proxy; the reward is sqlenv's. For a real
model, serve it (e.g. ``vllm serve``) and run the printed ``vf-eval`` command with its URL and name.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import sqlenv
from sqlenv.integrations.chat_server import ChatServer


def scripted_policy(name: str, dataset: str, schema: str = "tables"):
    gold = {ex.question: ex.gold_sql for ex in sqlenv.load_dataset(dataset, schema=schema)}

    def policy(messages: list[dict]) -> str:
        question = messages[1]["content"].rsplit("Question: ", 1)[1].strip()
        if name == "garbage":
            return "I don't know"
        if name == "explore" and not any(m["role"] == "assistant" for m in messages):
            return "<sql>SELECT name FROM sqlite_master WHERE type = 'table'</sql>"
        return f"<answer>{gold[question]}</answer>" if name == "explore" else f"```sql\n{gold[question]}\n```"

    return policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", choices=["gold", "explore", "garbage"], default="gold")
    parser.add_argument("--env", choices=[sqlenv.ENV_ID, sqlenv.AGENT_ENV_ID], default=sqlenv.ENV_ID)
    parser.add_argument("-n", "--limit", type=int, default=5, help="the first N questions")
    parser.add_argument("--max-turns", type=int, default=3, help="moves per episode (TextToSQLAgent-v0)")
    parser.add_argument("--schema", choices=["tables", "flat"], default="tables",
                        help="the env's schema variant")
    parser.add_argument("--max-instructions", type=int, default=None,
                        help="each query's budget in SQLite VM instructions (the env's)")
    args = parser.parse_args()
    budget = [] if args.max_instructions is None else [
        "--env.taskset.max-instructions", str(args.max_instructions)]
    policy = scripted_policy(args.policy, "generated", args.schema)
    with ChatServer(policy) as server, tempfile.TemporaryDirectory() as out:
        command = [str(Path(sys.executable).with_name("vf-eval")), "sqlenv-verifiers",
                   "--model", f"scripted-{args.policy}",
                   "--client.base-url", server.base_url, "--env.taskset.env", args.env,
                   "--env.taskset.max-turns", str(args.max_turns),
                   "--env.taskset.schema", args.schema,
                   *budget, "-n", str(args.limit), "--no-push", "--no-rich", "-o", out]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        episodes = [json.loads(line) for line in next(Path(out).glob("*/traces.jsonl")).read_text().splitlines()]
    rows = sorted((e["task"]["data"]["index"], e["traces"][0]) for e in episodes)
    for index, trace in rows:
        turns = sum(node["sampled"] for node in trace["nodes"])
        print(f"question {index}: reward {trace['rewards']['sqlenv']['score']:+.1f}  turns {turns}  "
              f"correct {trace['metrics']['correct']:.0f}")
    mean = sum(t["rewards"]["sqlenv"]["score"] for _, t in rows) / len(rows)
    print(f"mean reward {mean:+.2f} over {len(rows)} questions ({args.env}, policy {args.policy}, "
          f"{server.request_count} model requests)")


if __name__ == "__main__":
    main()
