"""benchmarks/bench_generate.py --step-against: a decode step of this engine against a committed one."""

import torch
import transformers

from benchmarks.bench_generate import step_against


def test_step_against_times_both_engines_on_the_same_batch_and_compares_their_logits():
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    common = torch.randint(0, 64, (12,))
    prompts = [torch.cat([common, torch.randint(0, 64, (5 + i,))]) for i in range(3)]
    result = step_against(model, prompts, samples=2, revision="HEAD", repeats=2, position=4)
    assert result["baseline"] > 0 and result["now"] > 0
    assert result["max_logit_diff"] < 1e-4  # the committed step computes the same attention
