"""A random 1-layer Llama with a 300-token byte-level BPE tokenizer, saved as a local Hugging Face folder.

Loads in well under a second; the trainer, the warm-up and evaluate.py take it as ``--model <folder>``.
(The same model as tests/test_ddp.py's fixture.)
"""

from pathlib import Path


def save_tiny_llama(folder: Path) -> str:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        ["```sql\nSELECT medal, year FROM Medals WHERE tournament = 'Olympic Games';\n```"],
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<eos>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = Path(folder)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
