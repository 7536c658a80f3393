"""agents/engine.py: the rollout engine against the plain Hugging Face path, on tiny random models.

Greedy completions must be identical token for token, the log-probs equal to the training forward's
(``sequence_logprobs``) within 1e-5, LoRA updates and ``disable_adapter`` seen by the next call, and
the shared-prefix, dropped-group and unsupported-model paths right. ``slow`` tests check the real
default model.
"""

import pytest
import torch
import transformers
from test_policy import OBSERVATION, perturb_adapter, tiny_model, tiny_tokenizer

from agents.engine import RolloutEngine, _common_prefix, sample_tokens, supports
from agents.policy import LoRAPolicy, PolicyConfig
from agents.sampling import Chooser

QUESTIONS = ("How many gold medals did Anna Berg win?", "When?", "In which year did she win her first medal?",
             "Which tournament?", "How many silver medals did Anna Berg win in 2012 and in 2016 together?",
             "Name every format.", "Count the bronze medals.", "What was her latest medal?")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def make_policy(tokenizer, engine, model=None, **config):
    config = PolicyConfig(max_completion_length=10, few_shot=1, temperature=1.0, engine=engine, **config)
    return LoRAPolicy(config, model=model if model is not None else tiny_model(tokenizer), tokenizer=tokenizer)


@pytest.fixture
def pair(tokenizer):
    """A policy with a non-trivial adapter; ``generate(policy, "engine"|"hf", ...)`` picks the path."""
    policy = make_policy(tokenizer, "engine")
    perturb_adapter(policy)
    return policy


def prompts_of(policy, questions=QUESTIONS):
    return [policy.prompt({**OBSERVATION, "question": q}) for q in questions]


def generate(policy, engine, prompts, n, greedy):
    policy.config.engine = engine
    return policy.generate(prompts, n, greedy=greedy)


def test_the_engine_is_used_for_llama_models(pair):
    assert supports(pair.model) and pair.uses_engine()
    pair.config.engine = "hf"
    assert not pair.uses_engine()


def test_greedy_is_identical_to_the_plain_path(pair):
    prompts = prompts_of(pair)
    assert len({len(pair.encode(p)) for p in prompts}) > 4  # prompts of many lengths
    engine = generate(pair, "engine", prompts, 1, greedy=True)
    plain = generate(pair, "hf", prompts, 1, greedy=True)
    assert [r.completion_ids.tolist() for r in engine] == [r.completion_ids.tolist() for r in plain]
    for a, b in zip(engine, plain):
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


def test_finished_groups_leave_without_changing_the_others(pair):
    """Prompts that stop at different steps: each row equals its unstopped run cut at its stop."""
    prompts = [pair.encode(p) for p in prompts_of(pair)]
    engine = RolloutEngine(pair.model, [], pair.tokenizer.pad_token_id)
    greedy = lambda logits, row: logits.argmax(-1)  # noqa: E731
    full = engine.sample(prompts, 2, max_new_tokens=12, choose=greedy)
    stop = lambda tokens: any(t % 5 == 0 for t in tokens)  # noqa: E731  (monotone, as the text rules)
    stopped = engine.sample(prompts, 2, max_new_tokens=12, choose=greedy, stop=stop)
    lengths = set()
    for group_full, group_stopped in zip(full, stopped):
        for (ids, logprobs), (cut_ids, cut_logprobs) in zip(group_full, group_stopped):
            ends = [i + 1 for i, t in enumerate(ids.tolist()) if t % 5 == 0]
            n = ends[0] if ends else len(ids)
            assert cut_ids.tolist() == ids[:n].tolist()
            torch.testing.assert_close(cut_logprobs, logprobs[:n], atol=1e-5, rtol=0)
            lengths.add(n)
    assert len(lengths) >= 3  # groups really left at different steps


def test_greedy_identical_without_stopping_for_many_rows(pair):
    prompts = [pair.encode(p) for p in prompts_of(pair)]
    kwargs = dict(temperature=1.0, top_p=1.0, greedy=True, max_new_tokens=12)
    plain = pair._sample_many(prompts, 3, stop=False, **kwargs)
    engine = RolloutEngine(pair.model, [], pair.tokenizer.pad_token_id)
    ours = engine.sample(prompts, 3, max_new_tokens=12, choose=lambda logits, row: logits.argmax(-1))
    for group_a, group_b in zip(plain, ours):
        for (a_ids, a_lp), (b_ids, b_lp) in zip(group_a, group_b):
            assert a_ids.tolist() == b_ids.tolist() and len(b_ids) == 12
            torch.testing.assert_close(a_lp, b_lp, atol=1e-5, rtol=0)


def test_sampled_logprobs_equal_the_training_forward(pair):
    torch.manual_seed(0)
    rollouts = generate(pair, "engine", prompts_of(pair)[:3], 4, greedy=False)
    logprobs, mask = pair.sequence_logprobs([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts])
    for row, r in enumerate(rollouts):
        n = len(r.completion_ids)
        torch.testing.assert_close(logprobs[row, :n].detach(), r.logprobs, atol=1e-5, rtol=0)
    assert len({tuple(r.completion_ids.tolist()) for r in rollouts}) > 3  # really sampled


def test_finished_samples_leave_their_group_and_the_rest_stay_exact(pair, monkeypatch):
    """Samples of one prompt stopping at different steps: the finished ones leave the batch (the group
    narrows), and every remaining sample's log-probs still equal the training forward's, so no sample
    continued from another's cache."""
    prompts = [pair.encode(p) for p in prompts_of(pair)[:3]]
    engine = RolloutEngine(pair.model, [], pair.tokenizer.pad_token_id)
    widths = []
    compact = engine._compact
    monkeypatch.setattr(engine, "_compact", lambda levels, chosen, keep, alive, width, new_width: (
        widths.append((width, new_width)), compact(levels, chosen, keep, alive, width, new_width))[1])
    generator = torch.Generator().manual_seed(3)
    stop = lambda tokens: any(t % 4 == 0 for t in tokens)  # noqa: E731  (a quarter of the tokens end a sample)
    groups = engine.sample(prompts, 6, max_new_tokens=12, stop=stop,
                           choose=Chooser(len(prompts) * 6, greedy=False, generator=generator))
    assert any(new < old for old, new in widths)  # a group narrowed, not only whole groups leaving
    assert any(len({len(ids) for ids, _ in group}) > 2 for group in groups)
    rollout_prompts = [p for p, group in zip(prompts, groups) for _ in group]
    completions = [ids for group in groups for ids, _ in group]
    logprobs, _ = pair.sequence_logprobs(rollout_prompts, completions)
    for row, (ids, sampled) in enumerate([sample for group in groups for sample in group]):
        torch.testing.assert_close(logprobs[row, :len(ids)].detach(), sampled, atol=1e-5, rtol=0)
        first_end = next((i for i, t in enumerate(ids.tolist()) if t % 4 == 0), None)
        assert first_end == len(ids) - 1 or (first_end is None and len(ids) == 12)  # stopped at its own end


def test_a_lora_update_is_used_by_the_next_rollout(pair):
    prompts = prompts_of(pair)[:4]
    before = [r.completion_ids.tolist() for r in generate(pair, "engine", prompts, 1, greedy=True)]
    perturb_adapter(pair, seed=7)  # in place, as an optimizer step
    after = generate(pair, "engine", prompts, 1, greedy=True)
    plain = generate(pair, "hf", prompts, 1, greedy=True)
    assert [r.completion_ids.tolist() for r in after] == [r.completion_ids.tolist() for r in plain]
    assert [r.completion_ids.tolist() for r in after] != before


def test_disable_adapter_gives_the_base_model(pair):
    prompts = prompts_of(pair)[:4]
    with pair.model.disable_adapter():
        engine = [r.completion_ids.tolist() for r in generate(pair, "engine", prompts, 1, greedy=True)]
        plain = [r.completion_ids.tolist() for r in generate(pair, "hf", prompts, 1, greedy=True)]
    with_adapter = [r.completion_ids.tolist() for r in generate(pair, "engine", prompts, 1, greedy=True)]
    assert engine == plain and engine != with_adapter


def test_common_prefix_is_found_and_used(pair):
    prompts = [pair.encode(p) for p in prompts_of(pair)]
    common = _common_prefix(prompts)
    assert common > 10 and all(torch.equal(p[:common], prompts[0][:common]) for p in prompts)
    assert not all(len(p) > common and p[common] == prompts[0][common] for p in prompts)
    engine = RolloutEngine(pair.model, [], 0)
    shared = engine.sample(prompts[:3], 2, max_new_tokens=5, choose=lambda logits, row: logits.argmax(-1))
    alone = [engine.sample([p], 2, max_new_tokens=5, choose=lambda logits, row: logits.argmax(-1))[0]
             for p in prompts[:3]]
    for group_a, group_b in zip(shared, alone):
        for (a_ids, a_lp), (b_ids, b_lp) in zip(group_a, group_b):
            assert a_ids.tolist() == b_ids.tolist()
            torch.testing.assert_close(a_lp, b_lp, atol=1e-5, rtol=0)


def test_qwen2_style_model_with_projection_biases(tokenizer):
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = transformers.Qwen2ForCausalLM(config).eval()
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    policy = make_policy(tokenizer, "engine", model=model)
    perturb_adapter(policy)
    prompts = prompts_of(policy)[:5]
    engine = [r.completion_ids.tolist() for r in generate(policy, "engine", prompts, 1, greedy=True)]
    plain = [r.completion_ids.tolist() for r in generate(policy, "hf", prompts, 1, greedy=True)]
    assert engine == plain


def test_unsupported_models_fall_back_or_are_refused_clearly(tokenizer):
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=4096,
                                     eos_token_id=tokenizer.eos_token_id)
    model = transformers.GPT2LMHeadModel(config).eval()
    policy = make_policy(tokenizer, "auto", model=model, target_modules=("c_attn",))
    assert not policy.uses_engine()
    assert len(policy.generate(prompts_of(policy)[:2], 2)) == 4  # the plain path serves it
    with pytest.raises(ValueError, match="Llama-style"):
        RolloutEngine(policy.model, [0])


def test_config_rejects_an_unknown_engine():
    with pytest.raises(ValueError, match="engine"):
        PolicyConfig(engine="vllm")


def test_sample_tokens_follows_the_tempered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(20_000, 1)
    generator = torch.Generator().manual_seed(0)
    for temperature in (1.0, 0.5):
        drawn = sample_tokens(logits, temperature, generator=generator)
        frequencies = torch.bincount(drawn, minlength=5).float() / len(drawn)
        expected = torch.softmax(logits[0] / temperature, dim=-1)
        torch.testing.assert_close(frequencies, expected, atol=0.015, rtol=0)
        assert frequencies[4] == 0
    nucleus = sample_tokens(logits, 1.0, top_p=0.5, generator=generator)
    assert set(nucleus.tolist()) == {0}  # the top token alone holds more than half the mass


def test_bfloat16_rollout_runs_and_stays_close_to_float32(pair):
    prompts = [pair.encode(p) for p in prompts_of(pair)[:4]]
    greedy = lambda logits, row: logits.argmax(-1)  # noqa: E731
    full = RolloutEngine(pair.model, [], 0).sample(prompts, 2, max_new_tokens=6, choose=greedy)
    half = RolloutEngine(pair.model, [], 0, dtype=torch.bfloat16).sample(prompts, 2, max_new_tokens=6, choose=greedy)
    assert next(pair.model.parameters()).dtype == torch.float32  # the model itself is untouched
    first_full = torch.stack([group[0][1][0] for group in full])
    first_half = torch.stack([group[0][1][0] for group in half])
    assert first_half.dtype == torch.float32
    assert not torch.equal(first_full, first_half)  # really computed in another precision
    torch.testing.assert_close(first_half, first_full, atol=0.1, rtol=0)  # the first token's log-prob, same context


# --------------------------------------------------------------------------- host checks every k steps, one sampler


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """tests/tiny_llama.py's 1-layer Llama as a policy with a non-trivial adapter, 40 new tokens at most."""
    from tiny_llama import save_tiny_llama

    folder = save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
    torch.manual_seed(0)
    policy = LoRAPolicy(PolicyConfig(model=folder, device="cpu", dtype="float32", max_completion_length=40,
                                     few_shot=0, temperature=1.0))
    perturb_adapter(policy)
    return policy


def run_with(policy, prompts, n, greedy, engine="engine", every=8, compile=False, seed=0):
    policy.config.engine, policy.config.stop_check_every, policy.config.compile = engine, every, compile
    policy._engine = None
    torch.manual_seed(seed)
    return policy.generate(prompts, n, greedy=greedy)


def test_stop_check_every_does_not_change_completions(tiny_llama):
    """The host looks every k steps; each completion still ends at its first stop, greedy or sampled."""
    from agents.policy import _finished

    prompts = prompts_of(tiny_llama)
    stopped = []
    for greedy, n in ((True, 1), (False, 4)):
        every_step = run_with(tiny_llama, prompts, n, greedy, every=1)
        every_8 = run_with(tiny_llama, prompts, n, greedy, every=8)
        assert [r.text for r in every_step] == [r.text for r in every_8]
        for a, b in zip(every_step, every_8):
            assert torch.equal(a.completion_ids, b.completion_ids)
            torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-6, rtol=0)
        stopped += [r for r in every_8 if len(r.completion_ids) < 40]
    assert any(len(r.completion_ids) % 8 for r in stopped)  # some cut between two host checks
    decode = tiny_llama.tokenizer.decode
    for r in stopped:  # each ends at its first stop: nothing generated after it leaked in
        ids = r.completion_ids.tolist()
        assert ids[-1] in tiny_llama.eos_token_ids or _finished(decode(ids))
        assert not _finished(decode(ids[:-1])) and not set(ids[:-1]) & set(tiny_llama.eos_token_ids)


def test_one_seed_gives_the_same_samples_on_the_engine_and_the_plain_path(tiny_llama):
    prompts = prompts_of(tiny_llama)[:5]
    """Both paths draw row r's t-th token from the same uniform number. Their float32 logits differ in
    the last bits (other summation orders), which can move a draw that falls within ~1e-6 of a CDF
    boundary to the neighbouring token; so: nearly every row identical, any other row equal up to a
    step where the two picks are neighbours."""
    prompts = prompts_of(tiny_llama)[:5]
    engine = run_with(tiny_llama, prompts, 4, False, engine="engine", seed=5)
    plain = run_with(tiny_llama, prompts, 4, False, engine="hf", seed=5)
    same = 0
    for a, b in zip(engine, plain):
        ids_a, ids_b = a.completion_ids.tolist(), b.completion_ids.tolist()
        first = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), None)
        if first is None:
            same += 1
            assert ids_a == ids_b
            torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
        else:
            assert abs(ids_a[first] - ids_b[first]) == 1, (first, ids_a[first], ids_b[first])
    assert same >= 18  # of 20 (multinomial against the inverse CDF: none would be)
    assert len({tuple(r.completion_ids.tolist()) for r in engine}) > 10  # really sampled
    other_seed = run_with(tiny_llama, prompts, 4, False, engine="engine", seed=6)
    assert [r.completion_ids.tolist() for r in other_seed] != [r.completion_ids.tolist() for r in engine]


def test_the_host_synchronises_once_per_k_steps(pair, monkeypatch):
    """DecodeRows.check (the one .tolist() of a window) runs every k steps and once at the end."""
    from agents import sampling

    calls = []
    check = sampling.DecodeRows.check
    monkeypatch.setattr(sampling.DecodeRows, "check", lambda self: (calls.append(self.steps), check(self))[1])
    prompts = [pair.encode(p) for p in prompts_of(pair)[:3]]
    engine = RolloutEngine(pair.model, [], pair.tokenizer.pad_token_id, stop_check_every=4)
    groups = engine.sample(prompts, 2, max_new_tokens=12, choose=lambda logits, row: logits.argmax(-1))
    assert calls == [4, 8, 12] and all(len(ids) == 12 for group in groups for ids, _ in group)


def test_a_failing_compile_falls_back_to_the_eager_step_with_one_warning(pair, monkeypatch):
    prompts = prompts_of(pair)[:4]
    eager = [r.completion_ids.tolist() for r in run_with(pair, prompts, 1, True)]

    def broken(*args, **kwargs):
        def step(*a, **k):
            raise RuntimeError("no C++ compiler\nsecond line")
        return step

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match=r"torch.compile unavailable \(RuntimeError: no C\+\+ compiler\); "
                                            r"decoding eagerly") as caught:
        fallback = [r.completion_ids.tolist() for r in run_with(pair, prompts, 1, True, compile=True)]
        pair.generate(prompts, 1, greedy=True)  # the same engine: no second warning
    assert fallback == eager and len([w for w in caught if "torch.compile" in str(w.message)]) == 1


@pytest.mark.slow
def test_the_compiled_step_gives_the_eager_greedy_output(tiny_llama):
    import warnings

    prompts = prompts_of(tiny_llama)
    eager = run_with(tiny_llama, prompts, 1, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would fail the test
        compiled = run_with(tiny_llama, prompts, 1, True, compile=True)
    assert tiny_llama._engine._compiled is not None and not tiny_llama._engine._compile_failed
    assert [r.text for r in compiled] == [r.text for r in eager]
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


# Two databases asked several questions each: their prompts' own parts share the database's rows and
# worked examples, which the engine prefills once per database (RolloutEngine.share_prefixes).
DATABASES = ("Athlete: (1, 'Anna Berg')\nMedal: (1, 'Gold', 2012, 'London', 'Women''s singles')",
             "Athlete: (7, 'Carl Olsen')\nMedal: (3, 'Bronze', 1996, 'Atlanta', 'Men''s doubles')\n"
             "Medal: (4, 'Silver', 2000, 'Sydney', 'Men''s doubles')")


def shared_prompts(policy):
    return [policy.encode(policy.prompt({**OBSERVATION, "sample_rows": rows, "question": q}))
            for q in QUESTIONS[:4] for rows in DATABASES]


def test_prefixes_shared_by_several_prompts_are_prefilled_once_and_change_nothing(pair, monkeypatch):
    prompts = shared_prompts(pair)
    shared_engine = RolloutEngine(pair.model, [], 0, prefill_chunk=3)
    groups = []
    prefill_shared = shared_engine._prefill_shared
    monkeypatch.setattr(shared_engine, "_prefill_shared", lambda *a: (
        groups.append(out := prefill_shared(*a)), out)[1])
    greedy = lambda logits, row: logits.argmax(-1)  # noqa: E731
    ours = shared_engine.sample(prompts, 2, max_new_tokens=10, choose=greedy)
    assert groups[0] is not None and sorted(groups[0].group.tolist()) == [0] * 4 + [1] * 4
    assert groups[0].length.tolist()[2] == 0 and min(groups[0].length.tolist()[:2]) > 16
    alone = RolloutEngine(pair.model, [], 0, share_prefixes=False).sample(prompts, 2, max_new_tokens=10,
                                                                          choose=greedy)
    plain = pair._sample_many(prompts, 2, temperature=1.0, top_p=1.0, greedy=True, max_new_tokens=10, stop=False)
    for group_ours, group_alone, group_plain in zip(ours, alone, plain):
        for (ids, lp), (ids_a, lp_a), (ids_p, lp_p) in zip(group_ours, group_alone, group_plain):
            assert ids.tolist() == ids_a.tolist() == ids_p.tolist() and len(ids) == 10
            torch.testing.assert_close(lp, lp_a, atol=1e-5, rtol=0)
            torch.testing.assert_close(lp, lp_p, atol=1e-5, rtol=0)


def test_sampled_logprobs_with_shared_prefixes_equal_the_training_forward(pair):
    prompts = shared_prompts(pair)[:5]  # 3 prompts of one database, 2 of the other
    engine = RolloutEngine(pair.model, [], 0)
    generator = torch.Generator().manual_seed(1)
    groups = engine.sample(prompts, 3, max_new_tokens=8,
                           choose=Chooser(len(prompts) * 3, greedy=False, generator=generator))
    prompt_ids = [p for p in prompts for _ in range(3)]
    completions = [ids for group in groups for ids, _ in group]
    logprobs, _ = pair.sequence_logprobs(prompt_ids, completions)
    for row, (ids, lp) in enumerate((pair for group in groups for pair in group)):
        torch.testing.assert_close(logprobs[row, :len(ids)].detach(), lp, atol=1e-5, rtol=0)
    assert len({tuple(ids.tolist()) for ids in completions}) > 5


def test_shared_groups_need_a_long_common_prefix():
    from agents.engine import _shared_groups

    t = torch.tensor
    long_a, long_b = list(range(40)), list(range(100, 140))
    parts = [t(long_a + [1, 2]), t(long_b + [3]), t(long_a + [5]), t(long_b + [4, 4]), t([7, 8, 9])]
    group, heads, cuts = _shared_groups(parts, 16)
    assert group[0] == group[2] != group[1] == group[3] and group[4] == -1
    assert sorted(cuts) == [40, 40]
    assert _shared_groups([t(long_a[:10] + [1]), t(long_a[:10] + [2])], 16) is None  # too short to share
    assert _shared_groups([t(long_a + [1]), t(long_a[:20] + [9] * 40)], 16) is None  # under half the shorter part


def test_prompts_are_prefilled_in_chunks_of_similar_length_and_come_back_in_order(pair):
    """Chunks are formed shortest first (less padding); the rows must still come back in the prompts' order."""
    prompts = [pair.encode(pair.prompt({**OBSERVATION, "question": q * (1 + i % 3)}))
               for i, q in enumerate(QUESTIONS[:6])]
    assert len({len(p) for p in prompts}) > 3
    greedy = lambda logits, row: logits.argmax(-1)  # noqa: E731
    chunked = RolloutEngine(pair.model, [], 0, prefill_chunk=2, share_prefixes=False).sample(
        prompts, 1, max_new_tokens=6, choose=greedy)
    one_by_one = RolloutEngine(pair.model, [], 0, prefill_chunk=1, share_prefixes=False).sample(
        prompts, 1, max_new_tokens=6, choose=greedy)
    plain = pair._sample_many(prompts, 1, temperature=1.0, top_p=1.0, greedy=True, max_new_tokens=6, stop=False)
    for (ids, lp), (ids_1, lp_1), (ids_p, _) in zip([g[0] for g in chunked], [g[0] for g in one_by_one],
                                                    [g[0] for g in plain]):
        assert ids.tolist() == ids_1.tolist() == ids_p.tolist()
        torch.testing.assert_close(lp, lp_1, atol=1e-5, rtol=0)


def test_prompts_that_extend_an_earlier_calls_prompts_reuse_their_cache_with_the_same_output(pair):
    """``reusing_prompts``: the second call's prompts (the first call's prompts plus their completions and a
    reply, as a multi-turn episode's next move) prefill only their new tokens, and decode exactly as a fresh
    engine does; an adapter update inside the block empties the cache."""
    greedy = lambda logits, row: logits.argmax(-1)  # noqa: E731
    first = shared_prompts(pair)[:3] + [pair.encode(pair.prompt({**OBSERVATION, "question": QUESTIONS[5]}))]
    reply = pair.encode("\nResult: 3 rows\n")

    def second_of(results):
        return [torch.cat([p, ids, reply]) for p, ((ids, _),) in zip(first, results)]

    engine = RolloutEngine(pair.model, [], 0, prefill_chunk=3)
    with engine.reusing_prompts() as cache:
        one = engine.sample(first, 1, max_new_tokens=6, choose=greedy)
        assert len(cache) == 4 and cache.reused_tokens == 0
        second = second_of(one)
        two = engine.sample(second, 1, max_new_tokens=6, choose=greedy)
        alone = RolloutEngine(pair.model, [], 0).sample(second, 1, max_new_tokens=6, choose=greedy)
        for ((ids, lp),), ((ids_a, lp_a),) in zip(two, alone):
            assert ids.tolist() == ids_a.tolist()
            torch.testing.assert_close(lp, lp_a, atol=1e-5, rtol=0)
        assert cache.reused_tokens == sum(len(p) - _common_prefix(second) for p in first)
        assert len(cache) == 8  # the first call's prompts stay until a call does not extend them
        perturb_adapter(pair)  # new weights: nothing kept may be used
        three = engine.sample(second, 1, max_new_tokens=6, choose=greedy)
        assert cache.reused_tokens == sum(len(p) - _common_prefix(second) for p in first) and len(cache) == 4
    fresh = RolloutEngine(pair.model, [], 0)
    assert [r[0][0].tolist() for r in three] == [r[0][0].tolist() for r in fresh.sample(
        second, 1, max_new_tokens=6, choose=greedy)]
    perturb_adapter(pair)  # back to some other weights, then compare the reused call with a fresh one
    with fresh.reusing_prompts():
        fresh.sample(first, 1, max_new_tokens=6, choose=greedy)
        reused = fresh.sample(second_of(fresh.sample(first, 1, max_new_tokens=6, choose=greedy)), 1,
                              max_new_tokens=6, choose=greedy)
    plain = pair._sample_many(second_of(RolloutEngine(pair.model, [], 0).sample(first, 1, max_new_tokens=6,
                                                                                 choose=greedy)),
                              1, temperature=1.0, top_p=1.0, greedy=True, max_new_tokens=6, stop=False)
    for (ids, lp), (ids_p, lp_p) in zip([r[0] for r in reused], [r[0] for r in plain]):
        assert ids.tolist() == ids_p.tolist() and len(ids) == 6
        torch.testing.assert_close(lp, lp_p, atol=1e-5, rtol=0)
