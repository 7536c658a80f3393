"""agents/prompt_cache.py: which kept prompt a new prompt extends, what is dropped, and when."""

import pytest
import torch

from agents.prompt_cache import PromptCache


def keep(cache, *tokens):
    ids = torch.tensor(tokens)
    cache.add(ids, [torch.zeros(1, len(tokens), 2)], [torch.zeros(1, len(tokens), 2)])
    return ids


def test_the_longest_kept_prompt_that_a_prompt_extends_is_found():
    cache = PromptCache()
    keep(cache, 1, 2)
    keep(cache, 1, 2, 3, 4)
    keep(cache, 9, 9, 9)
    assert cache.longest(torch.tensor([1, 2, 3, 4, 5])).tokens.tolist() == [1, 2, 3, 4]
    assert cache.longest(torch.tensor([1, 2, 3, 7])).tokens.tolist() == [1, 2]
    assert cache.longest(torch.tensor([1, 2, 3, 4])).tokens.tolist() == [1, 2]  # one token must be left
    assert cache.longest(torch.tensor([5, 1, 2, 3])) is None


def test_the_token_cap_drops_the_oldest_and_settle_drops_what_stopped_serving():
    cache = PromptCache(max_tokens=6)
    a, b = keep(cache, 1, 2), keep(cache, 3, 4)
    keep(cache, 5, 6, 7)
    assert (len(cache), cache.tokens) == (2, 5) and cache.longest(torch.tensor([1, 2, 0])) is None  # a went
    served = cache.longest(torch.tensor([3, 4, 0]))
    cache.settle([served])
    cache.settle([served])  # a second call of the same turn still finds it
    assert cache.longest(torch.tensor([3, 4, 0])) is not None
    cache.settle([])  # a call that no longer extends it
    assert cache.longest(torch.tensor([3, 4, 0])) is None and len(cache) == 1
    keep(cache, *range(7))  # longer than the cap: not kept
    assert len(cache) == 1 and b is not None and a is not None


def test_changed_weights_empty_the_cache():
    cache = PromptCache()
    cache.check(("weights", 1))
    keep(cache, 1, 2)
    cache.check(("weights", 1))
    assert len(cache) == 1
    cache.check(("weights", 2))
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_tokens"):
        PromptCache(max_tokens=0)
