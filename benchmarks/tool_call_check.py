"""Does a model's first turn hold a tool call that TRL can parse? Before/after the worked call in the tool prompt.

    python benchmarks/tool_call_check.py --help
    SQLENV_DATA_DIR=../shared/data/temptabqa-c \\
        python benchmarks/tool_call_check.py --dataset temptabqa-c --split dev --limit 8 --threads 1

No training. For each of the first ``--limit`` questions and each prompt (``before``: the tool prompt without
a worked call, as it was up to commit 3b9af3f; ``after``: ``sqlenv.prompts``' current one, which ends with one
literal ``<tool_call>`` example; ``demo``: the current one plus a worked tool episode as chat turns before the
question, ``sqlenv.prompts.tools_demo_messages``), the script builds the first-turn prompt exactly as
``examples/trl_environment.py`` has TRL build it: the row of ``SQLEnvironmentFactory.train_dataset``,
``reset``'s text appended to its user turn, rendered by ``apply_chat_template`` with the environment's public
methods as ``tools`` (after ``ensure_tool_chat_template`` and TRL's ``add_response_schema``, as
``GRPOTrainer`` does). It then generates greedily (``--max-new-tokens``) and parses the completion with TRL's
own ``parse_response``, which is what decides whether a tool runs during training. A call counts when its name
is one of the tools and its arguments hold a string ``query``. With ``--lenient`` each completion is also parsed
with the template ``sqlenv.integrations.trl_env.accept_json_tool_calls`` installs (TRL's, plus a fenced or bare
one-line JSON call naming a tool), the parser ``examples/trl_environment.py`` uses unless ``--strict-tool-calls``.
The first call's query (as the run's parser reads it: lenient with ``--lenient``) is also scored as the answer
by the environment (``score_sqls``): the table says how many ran without an error and how many were right.
Each record keeps the first token's three likeliest choices, and the run prints the median probability of
``<tool_call>`` as the first token (where the tokenizer has it as one token, as Qwen2.5's does).

``--model qwen2.5-coder-0.5b`` (the default) needs the opt-in extra: ``pip install -e '.[qwen]'``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlenv import prompts  # noqa: E402

#: The tool prompts before the worked call was added (sqlenv/prompts.py at commit 3b9af3f).
BEFORE = {
    "agent": (
        "You are an expert in SQLite. Answer the user's question about the database below. Call run_sql to "
        "explore the data (it returns the result rows or the error), then call submit_answer once with the "
        "single SQLite query whose result answers the question. Only the submitted query is scored."
    ),
    "answer": (
        "You are an expert in SQLite. Answer the user's question about the database below: call "
        "submit_answer once with the single SQLite query whose result answers the question."
    ),
}
AFTER = {"agent": prompts.TOOLS_AGENT_SYSTEM_PROMPT, "answer": prompts.TOOLS_ANSWER_SYSTEM_PROMPT}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/tool_call_check.py",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b",
                        help="an agents.models name (qwen2.5-coder-0.5b needs pip install -e '.[qwen]') or a folder")
    parser.add_argument("--dataset", default="temptabqa-c", help="sqlenv dataset")
    parser.add_argument("--split", default="dev", help="split")
    parser.add_argument("--data-dir", default=None, help="the dataset's folder (else $SQLENV_DATA_DIR)")
    parser.add_argument("--limit", type=int, default=8, help="the first N questions")
    parser.add_argument("--single-step", action="store_true",
                        help="the submit_answer-only prompt and tool (TextToSQL-v0) instead of run_sql + submit_answer")
    parser.add_argument("--max-turns", type=int, default=5, help="moves per episode (multi-turn)")
    parser.add_argument("--no-echo-moves", dest="echo_moves", action="store_false",
                        help="multi-turn tool results without the echoed query (as examples/trl_environment.py's flag)")
    parser.add_argument("--schema", default="tables", help="how the prompt shows the database (tables, flat)")
    parser.add_argument("--column-values", type=int, default=0, help="distinct values listed per text column")
    parser.add_argument("--adapter", default=None,
                        help="a LoRA adapter folder on the model (agents/tool_warmup.py's adapter/)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="greedy tokens per completion")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="transformers' repetition penalty in generate (1.0: off), as TRL's GRPOConfig passes it")
    parser.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--prompts", default="before,after,demo", help="which prompts, comma-separated")
    parser.add_argument("--lenient", action="store_true",
                        help="also parse each completion with accept_json_tool_calls' template (a second column)")
    parser.add_argument("--json", default=None, help="write every completion and its parse here")
    return parser


def check_model_available(name: str) -> None:
    """Exit with a message naming the extra when the opt-in model's packages are missing."""
    from agents.models import QWEN_NAME, ModelNotFoundError, check_model

    try:
        check_model(name)
    except ModelNotFoundError as exc:
        hint = " Install the opt-in extra: pip install -e '.[qwen]'." if name == QWEN_NAME else ""
        raise SystemExit(f"tool_call_check: {exc}{hint}") from None


def count_call(parsed: dict, tool_names: set[str]) -> tuple[int, int]:
    """(tool calls TRL parsed, those naming a tool with a string ``query``)."""
    calls = parsed.get("tool_calls") or []
    valid = sum(1 for c in calls if c.get("function", {}).get("name") in tool_names
                and isinstance((c.get("function", {}).get("arguments") or {}).get("query"), str))
    return len(calls), valid


def first_query(parsed: dict, tool_names: set[str]) -> str | None:
    """The query of the first call that names a tool with a string ``query`` (None: no such call)."""
    for call in parsed.get("tool_calls") or []:
        function = call.get("function", {})
        query = (function.get("arguments") or {}).get("query")
        if function.get("name") in tool_names and isinstance(query, str):
            return query
    return None


def first_token_odds(tokenizer, scores) -> dict:
    """The first generated token's distribution (``scores``: its logits): the three likeliest tokens with their
    probabilities, and the probability of ``<tool_call>`` where it is one token (None where it is several)."""
    probs = scores.float().softmax(-1)
    top = probs.topk(3)
    ids = tokenizer.encode("<tool_call>", add_special_tokens=False)
    return {"first_token_top": [[tokenizer.convert_ids_to_tokens(int(i)), round(float(p), 4)]
                                for p, i in zip(top.values, top.indices)],
            "p_tool_call_first": float(probs[ids[0]]) if len(ids) == 1 else None}


def parse_with(tokenizer, template: dict, completion_ids: list, prompt_ids: list, tools: list) -> dict:
    """TRL's ``parse_response`` with ``template`` as the tokenizer's ``response_template`` (restored after)."""
    from trl.chat_template_utils import parse_response

    saved = tokenizer.response_template
    tokenizer.response_template = template
    try:
        return parse_response(tokenizer, completion_ids, prefix=list(prompt_ids), tools=tools)
    finally:
        tokenizer.response_template = saved


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.repetition_penalty > 0:
        parser.error(f"--repetition-penalty {args.repetition_penalty}: must be > 0 (1.0: off)")
    check_model_available(args.model)
    import torch
    from trl.chat_template_utils import add_response_schema

    from agents.models import load_model_and_tokenizer
    from sqlenv.datasets import load_dataset
    from sqlenv.integrations.trl_env import (
        SQLEnvironmentFactory,
        accept_json_tool_calls,
        ensure_tool_chat_template,
        environment_tools,
        first_turn_messages,
    )

    kind = "answer" if args.single_step else "agent"
    variants = {"before": (BEFORE[kind], False), "after": (AFTER[kind], False), "demo": (AFTER[kind], True)}
    chosen = [v.strip() for v in args.prompts.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        raise SystemExit(f"--prompts: unknown {unknown}; choose from {sorted(variants)}")

    dataset = load_dataset(args.dataset, split=args.split, data_dir=args.data_dir, schema=args.schema)
    turns = {} if args.single_step else {"max_turns": args.max_turns}
    factory = SQLEnvironmentFactory(dataset, multi_turn=not args.single_step, schema=args.schema,
                                    column_values=args.column_values, echo_moves=args.echo_moves, **turns)
    indices = list(range(min(args.limit, len(dataset))))
    environment = factory()
    scorer = environment.env.unwrapped
    tools = environment_tools(environment)
    tool_names = {t.__name__ for t in tools}

    start = time.time()
    model, tokenizer = load_model_and_tokenizer(args.model, device="cpu", dtype=args.dtype, threads=args.threads)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).eval()
    ensure_tool_chat_template(tokenizer)
    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        add_response_schema(tokenizer)  # as GRPOTrainer does for tools
    strict = tokenizer.response_template
    lenient = None
    if args.lenient:
        lenient = accept_json_tool_calls(tokenizer, sorted(tool_names)).response_template
        tokenizer.response_template = strict
    print(f"loaded {args.model} in {time.time() - start:.0f} s; {len(indices)} questions of {args.dataset} "
          f"{args.split}; tools {sorted(tool_names)}", flush=True)

    records, table = [], {}
    for variant in chosen:
        system, demo = variants[variant]
        rows = factory.train_dataset(indices=indices, system_prompt=system)
        demo_turns = prompts.tools_demo_messages(not args.single_step, args.max_turns, args.echo_moves) if demo else []
        opened_n = parsed_n = valid_n = lenient_n = runs_n = right_n = 0
        tool_call_p = []
        for row in rows:
            prompt = first_turn_messages(dict(row), environment)
            prompt = prompt[:-1] + demo_turns + prompt[-1:]
            prompt_ids = tokenizer.apply_chat_template([prompt], tools=tools, add_generation_prompt=True,
                                                       tokenize=True, return_dict=True)["input_ids"][0]
            t0 = time.time()
            with torch.no_grad():
                out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                                                                                            dtype=torch.long),
                                     max_new_tokens=args.max_new_tokens, do_sample=False,
                                     repetition_penalty=args.repetition_penalty, output_scores=True,
                                     return_dict_in_generate=True,
                                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            completion_ids = out.sequences[0, len(prompt_ids):].tolist()
            first_token = first_token_odds(tokenizer, out.scores[0][0])
            parsed = parse_with(tokenizer, strict, completion_ids, prompt_ids, tools)
            calls, valid = count_call(parsed, tool_names)
            parsed_n += calls > 0
            valid_n += valid > 0
            extra = {}
            if lenient is not None:
                relaxed = parse_with(tokenizer, lenient, completion_ids, prompt_ids, tools)
                lenient_valid = count_call(relaxed, tool_names)[1]
                lenient_n += lenient_valid > 0
                extra = {"lenient_tool_calls": relaxed.get("tool_calls") or [], "lenient_valid_calls": lenient_valid}
            query = first_query(relaxed if lenient is not None else parsed, tool_names)
            score = {"first_query": query, "first_query_error": None, "first_query_correct": False}
            if query is not None:
                (_, info), = scorer.score_sqls(row["index"], [query])
                score.update(first_query_error=info.get("error"), first_query_correct=bool(info.get("correct")))
                runs_n += info.get("error") is None
                right_n += score["first_query_correct"]
            text = tokenizer.decode(completion_ids, skip_special_tokens=False)
            opened_n += "<tool_call>" in text
            records.append({"prompt": variant, "index": row["index"], "id": row["id"], "prompt_tokens": len(prompt_ids),
                            "completion": text, "tool_calls": parsed.get("tool_calls") or [], "valid_calls": valid,
                            **extra, **score, **first_token, "seconds": round(time.time() - t0, 1)})
            tool_call_p.append(first_token["p_tool_call_first"])
            more = f", lenient valid {extra['lenient_valid_calls']}" if extra else ""
            print(f"[{variant}] q{row['index']} {len(prompt_ids)} prompt tokens, {time.time() - t0:.0f} s, "
                  f"parsed calls {calls} (valid {valid}{more}): {text[:160]!r}", flush=True)
        table[variant] = {"questions": len(rows), "with_opened_call": opened_n, "with_parsed_call": parsed_n,
                          "with_valid_call": valid_n}
        if lenient is not None:
            table[variant]["with_valid_call_lenient"] = lenient_n
        table[variant].update(first_query_runs=runs_n, first_query_right=right_n)
        if None not in tool_call_p:
            table[variant]["p_tool_call_first_median"] = statistics.median(tool_call_p)

    adapter = f" + adapter {args.adapter}" if args.adapter else ""
    penalty = f" (repetition penalty {args.repetition_penalty:g})" if args.repetition_penalty != 1.0 else ""
    print(f"\n{args.model}{adapter}, {args.dataset} {args.split} ({args.schema} schema), first {len(indices)} "
          f"questions, greedy{penalty}, "
          f"{args.max_new_tokens} new tokens, {'single-step' if args.single_step else 'multi-turn'} tool prompt")
    print(markdown_table(table))
    for variant, row in table.items():
        if "p_tool_call_first_median" in row:
            print(f"[{variant}] P(<tool_call>) as the first token, median over the questions: "
                  f"{row['p_tool_call_first_median']:.3g}")
    result = {"args": vars(args), "table": table, "records": records}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return result


def markdown_table(table: dict) -> str:
    """The summary table; a ``lenient`` column when the rows hold ``with_valid_call_lenient``, and the first
    call's query scored when they hold ``first_query_runs``. "opening <tool_call>": completions that write the
    tag at all (a call cut at --max-new-tokens is not parsed)."""
    lenient = any("with_valid_call_lenient" in row for row in table.values())
    scored = any("first_query_runs" in row for row in table.values())
    head = ("| prompt | questions | opening `<tool_call>` | completions with a tool call TRL parses "
            "| ... naming a tool with a query |")
    lines = [head + (" ... with accept_json_tool_calls |" if lenient else "")
             + (" first call's query runs | ... right as the answer |" if scored else ""),
             "| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if lenient else "")
             + (" ---: | ---: |" if scored else "")]
    for variant, row in table.items():
        line = (f"| {variant} | {row['questions']} | {row.get('with_opened_call', '')} | {row['with_parsed_call']} "
                f"| {row['with_valid_call']} |")
        line += f" {row.get('with_valid_call_lenient', '')} |" if lenient else ""
        line += f" {row.get('first_query_runs', '')} | {row.get('first_query_right', '')} |" if scored else ""
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
