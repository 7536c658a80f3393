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
4. **Host overhead** (first, unless ``--no-host-overhead``). A random Llama of the model's depth and
   heads but tiny width (head size 4, vocabulary 512), so the arithmetic is negligible and a decode
   step's time is what the host spends launching it: milliseconds per decode step of the engine at
   1, 32 and 128 rows (1 x 1, 4 x 8, 16 x 8 prompts x samples, no stop), eager and compiled
   (``compile=True``) alternating in one process, and each figure over the 1-row one.
5. ``--compile``: the engine with its compiled decode step is timed beside the others in 3 (its first
   call, which compiles, is not timed).
6. ``--rollout-dtype bfloat16``: the engine once more with bfloat16 weights, activations and cache
   (float32 logits), its tokens/s, its greedy SQL against float32's, and the policy mismatch it
   causes: the log-probs of its sampled tokens against the float32 training forward's
   (``sequence_logprobs``), per token and per sequence, which an importance-sampling correction
   would have to absorb.
7. ``--step-against REV`` (alone): the model's decode step on these prompts, this engine against the
   engine of git revision REV, alternating, with the largest difference of their logits: a change to
   the step, measured side by side in one process.
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


def engine_at(revision: str):
    """``agents/engine.py`` as committed at a git ``revision``, imported as a module of its own (a baseline)."""
    import importlib.util
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "show", f"{revision}:agents/engine.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "engine_baseline.py")
    with open(path, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("engine_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def host_overhead(config, rows_list=((1, 1), (4, 8), (16, 8)), steps: int = 32, repeats: int = 3,
                  stop_check_every: int = 8, device: str = "cpu", compiled: bool = True,
                  against: str | None = None) -> dict[tuple[str, int], float]:
    """Seconds per decode step of the engine on a random tiny-width Llama of ``config``'s depth and heads.

    Per (mode, rows): the median over ``repeats`` of (time of ``steps + 1`` new tokens - time of 1) /
    ``steps``, which leaves out the prefill and the set-up; the modes' calls alternate. Modes: "eager",
    "compiled" (``compiled``), and "baseline": the engine of git revision ``against`` (one from before
    e660054 takes ``choose(logits)`` and draws one uniform number per live slot).
    """
    import torch
    import transformers

    from agents.engine import RolloutEngine
    from agents.sampling import Chooser, sample_tokens

    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tiny = transformers.LlamaConfig(vocab_size=512, hidden_size=4 * heads, intermediate_size=16,
                                    num_hidden_layers=config.num_hidden_layers, num_attention_heads=heads,
                                    num_key_value_heads=kv_heads, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny).eval().to(device)
    engines = {"eager": RolloutEngine(model, [], stop_check_every=stop_check_every)}
    if compiled:
        engines["compiled"] = RolloutEngine(model, [], stop_check_every=stop_check_every, compile=True)
    old_chooser = False
    if against:
        baseline = engine_at(against)
        old_chooser = not hasattr(baseline, "DecodeRows")  # the engine before e660054: choose(logits)
        engines["baseline"] = baseline.RolloutEngine(model, [], stop_check_every=stop_check_every) \
            if not old_chooser else baseline.RolloutEngine(model, [])
    common = torch.randint(0, 512, (64,))
    result: dict[tuple[str, int], list[float]] = {}
    for prompts, samples in rows_list:
        batch = [torch.cat([common, torch.randint(0, 512, (8 + 2 * i,))]) for i in range(prompts)]

        def timed(engine, new_tokens, batch=batch, samples=samples):
            chooser = Chooser(len(batch) * samples, greedy=False)
            if old_chooser and engine is engines.get("baseline"):  # the engine before issue 25: choose(logits)
                def chooser(logits):
                    return sample_tokens(logits, 1.0)
            synchronize(device)
            start = time.perf_counter()
            engine.sample(batch, samples, max_new_tokens=new_tokens, choose=chooser)
            synchronize(device)
            return time.perf_counter() - start

        for engine in engines.values():
            timed(engine, steps + 1)  # warm-up (the compiled engine compiles here)
        for _ in range(repeats):
            for mode, engine in engines.items():
                per_step = (timed(engine, steps + 1) - timed(engine, 1)) / steps
                result.setdefault((mode, prompts * samples), []).append(per_step)
    return {key: sorted(values)[len(values) // 2] for key, values in result.items()}


def print_host_overhead(config, device, args) -> None:
    import torch

    rows_list = ((1, 1), (4, 8), (16, 8))
    seconds = host_overhead(config, rows_list, steps=args.host_steps, repeats=args.host_repeats, device=device,
                            stop_check_every=args.stop_check_every, compiled=args.host_compile,
                            against=args.against)
    modes = [m for m in ("baseline", "eager", "compiled") if (m, 1) in seconds]
    names = {"baseline": f"engine at {args.against}", "eager": "eager", "compiled": "compiled"}
    print(f"host overhead per decode step: random Llama of {config.num_hidden_layers} layers, "
          f"{config.num_attention_heads}/{getattr(config, 'num_key_value_heads', None)} heads, head size 4, "
          f"vocabulary 512; {args.host_steps} steps, median of {args.host_repeats}, {torch.get_num_threads()} "
          f"thread(s), stop_check_every={args.stop_check_every}, load average before {os.getloadavg()[0]:.1f}")
    head = " | ".join(f"{names[m]} ms/step" for m in modes) + " | " + " | ".join(
        f"{names[m]} / eager" for m in modes if m != "eager") + " | " + " | ".join(
        f"{names[m]} / its 1 row" for m in modes)
    print(f"| rows | {head} |\n|---|" + "---|" * (3 * len(modes) - 1))
    for prompts, samples in rows_list:
        rows = prompts * samples
        cells = [f"{seconds[(m, rows)] * 1e3:.2f}" for m in modes]
        cells += [f"{seconds[(m, rows)] / seconds[('eager', rows)]:.2f}" for m in modes if m != "eager"]
        cells += [f"{seconds[(m, rows)] / seconds[(m, 1)]:.2f}" for m in modes]
        print(f"| {rows} ({prompts} x {samples}) | " + " | ".join(cells) + " |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def step_against(model, prompts, samples: int, revision: str, repeats: int, dtype=None, position: int = 32) -> dict:
    """One decode step of the real model, this engine against the engine of git ``revision``: each prefills
    ``prompts`` x ``samples`` once, then its decode step at generated position ``position`` (the cache read
    up to the next window of 8) is timed ``repeats`` times, the two alternating. Medians in seconds, and
    the largest difference between their logits."""
    import statistics

    import torch

    from agents.engine import RolloutEngine, _common_prefix

    engines = {"baseline": engine_at(revision).RolloutEngine(model, [], dtype=dtype),
               "now": RolloutEngine(model, [], dtype=dtype)}
    state = {}
    with torch.no_grad():
        for name, engine in engines.items():
            engine._dtype = dtype or engine.head.weight.dtype
            engine._weights, engine._head = engine._gather_weights(), engine.head.weight.to(engine._dtype)
            levels, logits = engine._prefill(prompts, _common_prefix(prompts), samples, position + 16)
            tokens = logits.argmax(-1).repeat_interleave(samples)
            where = torch.tensor([len(p) for p in prompts], device=tokens.device).repeat_interleave(samples)[:, None]
            state[name] = (engine, levels, tokens, where + position)
        times: dict[str, list[float]] = {name: [] for name in engines}
        logits = {}
        for _ in range(repeats):
            for name, (engine, levels, tokens, positions) in state.items():
                step = torch.tensor([position], device=tokens.device)
                synchronize(tokens.device)
                start = time.perf_counter()
                logits[name] = engine._forward(levels, tokens, positions, step, position + 8)
                synchronize(tokens.device)
                times[name].append(time.perf_counter() - start)
        for engine in engines.values():
            engine._weights = engine._head = None
    return {**{name: statistics.median(values) for name, values in times.items()},
            "max_logit_diff": float((logits["baseline"] - logits["now"]).abs().max())}


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
    parser.add_argument("--stop-check-every", type=int, default=8, help="the engine's host check interval (k)")
    parser.add_argument("--compile", action="store_true", help="also time the engine with its compiled decode step")
    parser.add_argument("--no-host-overhead", dest="host_overhead", action="store_false",
                        help="skip the host-overhead table (tiny-width model)")
    parser.add_argument("--host-steps", type=int, default=32, help="decode steps timed per host-overhead call")
    parser.add_argument("--host-repeats", type=int, default=3, help="host-overhead calls per mode and row count")
    parser.add_argument("--host-only", action="store_true", help="print the host-overhead table and stop")
    parser.add_argument("--no-host-compile", dest="host_compile", action="store_false",
                        help="host-overhead table without the compiled column (compiling takes minutes)")
    parser.add_argument("--against", default=None, metavar="REV",
                        help="host-overhead table: also the engine of this git revision (e.g. e660054~1)")
    parser.add_argument("--step-against", default=None, metavar="REV",
                        help="only: the model's decode step at --prompts x G on the benchmark's prompts, this "
                             "engine against the engine of git revision REV, alternating --step-repeats times "
                             "(float32, and --rollout-dtype's too when given)")
    parser.add_argument("--step-repeats", type=int, default=12, help="timed decode steps per engine (--step-against)")
    args = parser.parse_args(argv)

    import torch

    from agents.policy import LoRAPolicy, PolicyConfig
    from sqlenv.env import TextToSQLEnv

    config = PolicyConfig(model=args.model, threads=args.threads, few_shot=args.few_shot, device=args.device,
                          max_completion_length=args.max_completion_length, engine="hf",
                          stop_check_every=args.stop_check_every)
    policy = LoRAPolicy(config)
    if (args.host_overhead and not args.step_against) or args.host_only:
        print_host_overhead(policy.model.get_base_model().config, policy.device, args)
        if args.host_only:
            return 0
    env = TextToSQLEnv(dataset=args.dataset, split=args.split, data_dir=args.data_dir, schema=args.schema)
    count = max(args.prompts, args.check_prompts)
    stride = max(1, len(env.dataset) // count)
    prompts = [policy.prompt(env.reset(options={"index": i * stride})[0]) for i in range(count)]
    env.close()
    lengths = [len(policy.encode(p)) for p in prompts[:args.prompts]]
    G = args.num_generations
    if args.step_against:
        batch = [policy.encode(p).to(policy.device) for p in prompts[:args.prompts]]
        print(f"decode step of {args.model}, {args.prompts} prompts x G={G} ({sum(lengths) // len(lengths)} prompt "
              f"tokens on average), the engine at {args.step_against} against this one, medians of "
              f"{args.step_repeats} alternating, {torch.get_num_threads()} thread(s), load average before "
              f"{os.getloadavg()[0]:.1f}")
        print(f"| dtype | engine at {args.step_against} ms | now ms | before / now | max abs. logit difference |")
        print("|---|---|---|---|---|")
        for name in ["float32"] + ([args.rollout_dtype] if args.rollout_dtype else []):
            dtype = None if name == "float32" else getattr(torch, name)
            result = step_against(policy.model, batch, G, args.step_against, args.step_repeats, dtype)
            print(f"| {name} | {result['baseline'] * 1e3:.1f} | {result['now'] * 1e3:.1f} | "
                  f"{result['baseline'] / result['now']:.2f} | {result['max_logit_diff']:.2e} |")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return 0

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

    paths = ["hf", "engine"] + (["compiled"] if args.compile else [])
    engines = {"engine": policy._engine}
    if args.compile:
        from agents.engine import RolloutEngine

        engines["compiled"] = RolloutEngine(policy.model, policy.eos_token_ids, policy.tokenizer.pad_token_id or 0,
                                            stop_check_every=args.stop_check_every, compile=True)
        policy._engine = engines["compiled"]
        start = time.perf_counter()
        run("engine", prompts[:args.prompts], G)  # compiles (not timed)
        print(f"compiled engine: first call (compiling) {time.perf_counter() - start:.0f} s")
        compiled_sql = [r.sql for r in run("engine", checked, 1, greedy=True)]
        print(f"compiled engine: greedy SQL as the eager engine's on "
              f"{sum(a == b for a, b in zip(greedy['engine'], compiled_sql))}/{len(checked)} prompts")

    def run_path(name):
        if name == "hf":
            return run("hf", prompts[:args.prompts], G)
        policy._engine = engines[name]
        return run("engine", prompts[:args.prompts], G)

    tokens = dict.fromkeys(paths, 0)
    seconds = dict.fromkeys(paths, 0.0)
    for repeat in range(args.repeats):
        for name in paths:
            torch.manual_seed(repeat)
            synchronize(policy.device)
            start = time.perf_counter()
            rollouts = run_path(name)
            synchronize(policy.device)
            seconds[name] += time.perf_counter() - start
            tokens[name] += sum(len(r.completion_ids) for r in rollouts)
    policy._engine = engines["engine"]

    speed = {name: tokens[name] / seconds[name] for name in tokens}
    print(f"{args.model}, {args.prompts} prompts x G={G}, up to {args.max_completion_length} new tokens, "
          f"{torch.get_num_threads()} thread(s), device {policy.device}, {args.repeats} repeats, "
          f"prompt lengths {lengths}")
    print(f"weights streamed once: {weight_bytes / 1e6:.0f} MB in {weight_s * 1e3:.1f} ms "
          f"({bandwidth / 1e9:.1f} GB/s); prompts' KV per step {kv_bytes / 1e6:.0f} MB; "
          f"bound {bound:.0f} tokens/s for {rows} rows")
    print(f"the same products for {rows} rows: {compute_s * 1e3:.1f} ms a step, compute floor "
          f"{compute_bound:.0f} tokens/s")
    print("| path | tokens | seconds | tokens/s | of the memory bound | of the compute floor |")
    print("|---|---|---|---|---|---|")
    labels = {"hf": "plain (Hugging Face forward, cache copied G times)", "engine": "engine (eager)",
              "compiled": "engine (compiled decode step)"}
    for name in paths:
        label = labels[name]
        print(f"| {label} | {tokens[name]} | {seconds[name]:.1f} | {speed[name]:.1f} | {speed[name] / bound:.0%} "
              f"| {speed[name] / compute_bound:.0%} |")
    print(f"engine / plain tokens/s: {speed['engine'] / speed['hf']:.2f}x; "
          f"greedy SQL identical on {identical}/{len(checked)} prompts")
    if args.compile:
        print(f"compiled / eager engine tokens/s: {speed['compiled'] / speed['engine']:.2f}x")
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
                                   dtype=dtype, stop_check_every=args.stop_check_every)
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
