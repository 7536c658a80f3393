"""Keys and values of prompts already prefilled, kept for later prompts that extend them.

A multi-turn episode's next context is its last context plus the move and the environment's reply. Inside
``RolloutEngine.reusing_prompts()`` the engine keeps every prompt's keys and values after prefilling it,
and a later prompt that starts with a kept one prefills only the rest: a move's context is prefilled once,
not once per later move. A kept prompt that served a call is dropped at the first later call it does not
serve (the longer contexts built on it are kept instead); at most ``max_tokens`` tokens are held (oldest
dropped first). The keys
and values are only valid for the weights they were computed with: :meth:`PromptCache.check` empties the
cache when the model's parameters (their storage or in-place version, i.e. an optimizer step) or its active
adapters change.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

#: Prompt tokens kept by default: 1.5 GB of float32 keys and values for SmolLM2-135M (46 KB a token).
DEFAULT_MAX_TOKENS = 32768


@dataclass
class Kept:
    """One prefilled prompt: its tokens ``[L]`` and, per layer, its keys and values ``[Hkv, L, D]``."""

    tokens: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def weights_fingerprint(model) -> tuple:
    """What changes when the weights a forward applies change: each parameter's storage and in-place version
    (optimizer steps, ``load_state_dict``), and which LoRA adapters are active (``disable_adapter``)."""
    params = tuple((p.data_ptr(), p._version) for p in model.parameters())
    adapters = tuple((bool(m.disable_adapters), tuple(m.active_adapters)) for m in model.modules()
                     if hasattr(m, "lora_A"))
    return params, adapters


def _key(tokens: torch.Tensor) -> bytes:
    return tokens.detach().to("cpu", torch.long).numpy().tobytes()


class PromptCache:
    """Kept prompts by their tokens; :meth:`longest` finds the longest one a new prompt extends."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = int(max_tokens)
        self._entries: dict[bytes, Kept] = {}  # insertion order = age
        self._lengths: Counter[int] = Counter()
        self._fingerprint: tuple | None = None
        self._served: list[torch.Tensor] = []  # tokens of the kept prompts the last call extended
        self.reused_tokens = 0  # prompt tokens not prefilled again thanks to the cache (a running total)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return sum(length * count for length, count in self._lengths.items())

    def check(self, fingerprint: tuple) -> None:
        """Empty the cache if the weights changed since the kept prompts were computed."""
        if fingerprint != self._fingerprint:
            self.clear()
            self._fingerprint = fingerprint

    def clear(self) -> None:
        self._entries.clear()
        self._lengths.clear()
        self._served = []

    def settle(self, served: list[Kept]) -> None:
        """After a call that extended ``served``: drop the kept prompts an earlier call extended and this one
        did not (a multi-turn turn split over several calls still finds them in each)."""
        now = {_key(kept.tokens) for kept in served}
        self.drop([tokens for tokens in self._served if _key(tokens) not in now])
        self._served = [kept.tokens for kept in served]

    def longest(self, prompt: torch.Tensor) -> Kept | None:
        """The longest kept prompt that ``prompt`` starts with and is longer than (so at least one of its
        tokens is left to prefill), or None."""
        tokens = prompt.detach().to("cpu", torch.long).numpy()  # one copy off the device, then slices of it
        for length in sorted(self._lengths, reverse=True):
            if length < len(tokens):
                found = self._entries.get(tokens[:length].tobytes())
                if found is not None:
                    return found
        return None

    def add(self, tokens: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep one prompt (replacing a kept copy of the same tokens); drop the oldest beyond ``max_tokens``."""
        if len(tokens) > self.max_tokens:
            return
        self.drop([tokens])
        self._entries[_key(tokens)] = Kept(tokens.detach().cpu(), keys, values)
        self._lengths[len(tokens)] += 1
        while self.tokens > self.max_tokens:
            self.drop([next(iter(self._entries.values())).tokens])

    def drop(self, tokens_list) -> None:
        """Forget the kept prompts with these tokens (absent ones are ignored)."""
        for tokens in tokens_list:
            if self._entries.pop(_key(tokens), None) is not None:
                self._lengths[len(tokens)] -= 1
                if not self._lengths[len(tokens)]:
                    del self._lengths[len(tokens)]
