"""What ``end_tool_loop_at_episode_end`` adds to TRL's parse of a reply: SmolLM2's tokenizer with the ChatML tool
template and the lenient parser, parsing a ``submit_answer`` call after an answered episode's chat of about
``--prefix-tokens`` tokens, without and then with the check (which decodes the prefix to read its last tool reply).

    python benchmarks/bench_end_check.py
    python benchmarks/bench_end_check.py --prefix-tokens 3000 --repeats 500
"""

from __future__ import annotations

import argparse
import time


def parse_ms(tokenizer, reply: list[int], prefix: list[int], repeats: int) -> tuple[float, dict]:
    """Milliseconds per ``tokenizer.parse_response(reply, prefix=prefix)``, and its last result."""
    start = time.perf_counter()
    for _ in range(repeats):
        parsed = tokenizer.parse_response(reply, prefix=prefix)
    return (time.perf_counter() - start) / repeats * 1e3, parsed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_end_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix-tokens", type=int, default=1000,
                        help="about this many tokens of chat before the reply")
    parser.add_argument("--repeats", type=int, default=200, help="parses timed for each setting")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from agents.models import smollm2_gguf
    from sqlenv.integrations.trl_env import (
        accept_json_tool_calls,
        end_tool_loop_at_episode_end,
        ensure_tool_chat_template,
    )

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    accept_json_tool_calls(ensure_tool_chat_template(tokenizer))
    call = {"type": "function", "function": {"name": "submit_answer", "arguments": {"query": "SELECT 1"}}}
    filler = " ".join(["word"] * max(0, args.prefix_tokens - 60))
    chat = [{"role": "system", "content": "You answer with SQL."}, {"role": "user", "content": filler},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "submit_answer",
             "content": "Turn 1/5 <answer>SELECT 1</answer>\nAnswer submitted."}]
    prefix = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
    reply = tokenizer.encode('<tool_call>\n{"name": "submit_answer", "arguments": {"query": "SELECT 1"}}\n'
                             "</tool_call><|im_end|>", add_special_tokens=False)
    plain, parsed = parse_ms(tokenizer, reply, prefix, args.repeats)
    assert "tool_calls" in parsed
    end_tool_loop_at_episode_end(tokenizer)
    checked, parsed = parse_ms(tokenizer, reply, prefix, args.repeats)
    assert "ignored_tool_calls" in parsed and "tool_calls" not in parsed
    result = {"prefix_tokens": len(prefix), "parse_ms": round(plain, 3), "parse_with_end_check_ms": round(checked, 3),
              "added_ms": round(checked - plain, 3)}
    print(f"{len(prefix)}-token prefix: parse {plain:.3f} ms, with the end check {checked:.3f} ms "
          f"(+{checked - plain:.3f} ms a parsed reply)")
    return result


if __name__ == "__main__":
    main()
