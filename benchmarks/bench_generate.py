"""Sampling speed against the machine's memory-bandwidth bound: the plain Hugging Face path and the engine.

    .venv/bin/python benchmarks/bench_generate.py --data-dir ../shared/data/temptabqa-c --prompts 4 -G 8
    .venv/bin/python benchmarks/bench_generate.py --data-dir ../shared/data/temptabqa-c --model qwen2.5-coder-0.5b

One run, one process, the same prompts (TempTabQA-C training questions, the trainer's prompt):

1. **The bound.** Every weight matrix the decoder reads per token is multiplied by one vector, timed:
   that is the time to stream the weights once (the floor of one decode step at any batch size), and
   their bytes over it the measured bandwidth. A step of the engine also reads each prompt's KV cache
   once per group, so ``bound = rows / (weight time + KV bytes / bandwidth)`` tokens/s. On a CPU the
   arithmetic of ``rows`` rows can take longer than streaming the weights, so the same products with
   all the batch's rows are timed too: the compute floor of a step (attention not counted).
2. **Greedy identity.** ``--check-prompts`` prompts decoded greedily by both paths: the SQL must be
   identical (exit status 1 otherwise).
3. **Sampling.** ``--prompts`` x ``G`` samples of up to ``--max-completion-length`` tokens, the plain
   path (``LoRAPolicy`` with ``engine="hf"``: left-padded batch, the prompt's KV cache copied G times,
   a growing cache) and the engine (``agents/engine.py``) alternating ``--repeats`` times; tokens/s of
   each, their ratio, and the engine's fraction of the bound. Completions stop as in training (EOS,
   end of statement), so both paths sample the same kind of work; tokens are counted as sampled.
4. ``--rollout-dtype bfloat16``: the engine once more with bfloat16 weights, activations and cache
   (float32 logits), its tokens/s, its greedy SQL against float32's, and the policy mismatch it
   causes: the log-probs of its sampled tokens against the float32 training forward's
   (``sequence_logprobs``), per token and per sequence, which an importance-sampling correction
   would have to absorb.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def weight_stream_seconds(model, repeats: int = 5, rows: int = 1) -> tuple[float, int]:
    """Seconds to multiply every decoder weight matrix (and the output head) by ``rows`` vectors, and
    their bytes. One row: the memory-bandwidth floor of a decode step; the batch's rows: its compute floor."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    weights = [m.weight for name, m in base.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in name]
    if base.get_output_embeddings() is not None and all(
            w is not base.get_output_embeddings().weight for w in weights):
        weights.append(base.get_output_embeddings().weight)
    vectors = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            synchronize(weights[0].device)
            start = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(vectors[w.shape[1]], w)
            synchronize(weights[0].device)
            best = min(best, time.perf_counter() - start)
    return best, sum(w.numel() * w.element_size() for w in weights)


def synchronize(device) -> None:
    """Wait for the device's queued kernels (CUDA runs them asynchronously), so a timer sees their end."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def kv_bytes_per_step(model, prompt_lengths) -> int:
    """Bytes of the prompts' KV caches one engine decode step reads (each prompt's cache once)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = next(base.parameters()).element_size()
    return sum(prompt_lengths) * config.num_hidden_layers * 2 * kv_heads * head_dim * element


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="built-in model name or local folder")
    parser.add_argument("--dataset", default="temptabqa-c")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-dir", default=None, help="TempTabQA-C folder (default: $SQLENV_DATA_DIR)")
    parser.add_argument("--schema", default="flat")
    parser.add_argument("--few-shot", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4, help="questions per generate call (a GRPO step's batch)")
    parser.add_argument("-G", "--num-generations", type=int, default=8, help="samples per question")
    parser.add_argument("--max-completion-length", type=int, default=64)
    parser.add_argument("--check-prompts", type=int, default=16, help="prompts decoded greedily by both paths")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per path (alternating)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rollout-dtype", default=None, choices=["bfloat16", "float16"],
                        help="also time the engine in this dtype and measure the log-prob mismatch")
    args = parser.parse_args(argv)

    import torch

    from agents.policy import LoRAPolicy, PolicyConfig
    from sqlenv.env import TextToSQLEnv

    config = PolicyConfig(model=args.model, threads=args.threads, few_shot=args.few_shot, device=args.device,
                          max_completion_length=args.max_completion_length, engine="hf")
    policy = LoRAPolicy(config)
    env = TextToSQLEnv(dataset=args.dataset, split=args.split, data_dir=args.data_dir, schema=args.schema)
    count = max(args.prompts, args.check_prompts)
    stride = max(1, len(env.dataset) // count)
    prompts = [policy.prompt(env.reset(options={"index": i * stride})[0]) for i in range(count)]
    env.close()
    lengths = [len(policy.encode(p)) for p in prompts[:args.prompts]]
    G = args.num_generations

    weight_s, weight_bytes = weight_stream_seconds(policy.model)
    bandwidth = weight_bytes / weight_s
    kv_bytes = kv_bytes_per_step(policy.model, lengths)
    rows = args.prompts * G
    bound = rows / (weight_s + kv_bytes / bandwidth)
    compute_s, _ = weight_stream_seconds(policy.model, rows=rows)
    compute_bound = rows / compute_s

    def run(engine: str, batch, n, greedy=False):
        policy.config.engine = engine
        return policy.generate(batch, n, greedy=greedy)

    checked = prompts[:args.check_prompts]
    greedy = {name: [r.sql for r in run(name, checked, 1, greedy=True)] for name in ("hf", "engine")}
    identical = sum(a == b for a, b in zip(greedy["hf"], greedy["engine"]))

    tokens = {"hf": 0, "engine": 0}
    seconds = {"hf": 0.0, "engine": 0.0}
    for repeat in range(args.repeats):
        for name in ("hf", "engine"):
            torch.manual_seed(repeat)
            start = time.perf_counter()
            rollouts = run(name, prompts[:args.prompts], G)
            seconds[name] += time.perf_counter() - start
            tokens[name] += sum(len(r.completion_ids) for r in rollouts)

    speed = {name: tokens[name] / seconds[name] for name in tokens}
    print(f"{args.model}, {args.prompts} prompts x G={G}, up to {args.max_completion_length} new tokens, "
          f"{torch.get_num_threads()} thread(s), device {policy.device}, {args.repeats} repeats, "
          f"prompt lengths {lengths}")
    print(f"weights streamed once: {weight_bytes / 1e6:.0f} MB in {weight_s * 1e3:.1f} ms "
          f"({bandwidth / 1e9:.1f} GB/s); prompts' KV per step {kv_bytes / 1e6:.0f} MB; "
          f"bound {bound:.0f} tokens/s for {rows} rows")
    print(f"the same products for {rows} rows: {compute_s * 1e3:.1f} ms a step, compute floor "
          f"{compute_bound:.0f} tokens/s")
    print("| path | tokens | seconds | tokens/s | of the memory bound | of the compute floor |\n|---|---|---|---|---|---|")
    for name, label in (("hf", "plain (Hugging Face forward, cache copied G times)"), ("engine", "engine")):
        print(f"| {label} | {tokens[name]} | {seconds[name]:.1f} | {speed[name]:.1f} | {speed[name] / bound:.0%} "
              f"| {speed[name] / compute_bound:.0%} |")
    print(f"engine / plain tokens/s: {speed['engine'] / speed['hf']:.2f}x; "
          f"greedy SQL identical on {identical}/{len(checked)} prompts")
    if args.rollout_dtype:
        low_precision(policy, prompts, checked, greedy["engine"], args, speed["engine"], bound)
    return 0 if identical == len(checked) else 1


def low_precision(policy, prompts, checked, greedy_sql, args, fp32_speed, bound) -> None:
    """The engine in ``args.rollout_dtype``: speed, greedy agreement and the log-prob mismatch."""
    import torch

    from agents.engine import RolloutEngine

    dtype = getattr(torch, args.rollout_dtype)
    policy.config.engine = "engine"
    policy._engine = RolloutEngine(policy.model, policy.eos_token_ids, policy.tokenizer.pad_token_id or 0,
                                   dtype=dtype)
    same = sum(a == r.sql for a, r in zip(greedy_sql, policy.generate(checked, 1, greedy=True)))
    tokens, seconds, rollouts = 0, 0.0, []
    for repeat in range(args.repeats):
        torch.manual_seed(repeat)
        start = time.perf_counter()
        batch = policy.generate(prompts[:args.prompts], args.num_generations)
        seconds += time.perf_counter() - start
        tokens += sum(len(r.completion_ids) for r in batch)
        rollouts += batch
    with torch.no_grad():
        train, mask = policy.sequence_logprobs([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts])
    rollout = torch.zeros_like(train)
    for row, r in enumerate(rollouts):
        rollout[row, :len(r.logprobs)] = r.logprobs
    delta = (train - rollout)[mask.bool()]
    per_sequence = ((train - rollout) * mask).sum(-1)
    speed = tokens / seconds
    print(f"| engine, {args.rollout_dtype} | {tokens} | {seconds:.1f} | {speed:.1f} | {speed / bound:.0%} | |")
    print(f"{args.rollout_dtype} / float32 engine tokens/s: {speed / fp32_speed:.2f}x; greedy SQL as float32's on "
          f"{same}/{len(checked)} prompts")
    print(f"log-prob mismatch (float32 training forward - {args.rollout_dtype} rollout) over {len(delta)} sampled "
          f"tokens: mean |d| {delta.abs().mean():.4f}, max |d| {delta.abs().max():.3f}, tokens with |d| > 0.1: "
          f"{(delta.abs() > 0.1).float().mean():.1%}; per sequence: mean |sum d| {per_sequence.abs().mean():.3f}, "
          f"max {per_sequence.abs().max():.3f} (importance ratio exp(sum d) in "
          f"[{per_sequence.exp().min():.2f}, {per_sequence.exp().max():.2f}])")


if __name__ == "__main__":
    sys.exit(main())
