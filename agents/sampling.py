"""One sampler and one row bookkeeping for every decode loop: the rollout engine and the Hugging Face path.

- :func:`sample_tokens` draws by inverse CDF from ``softmax(logits / temperature)`` restricted to the
  top-p nucleus, given one uniform number per row.
- :class:`Chooser` picks each step's tokens: the argmax, or a sample whose uniform numbers are drawn
  for **every row of the call** (``rows`` of them, in row order) whatever rows are still decoding. So
  row ``r``'s ``t``-th token depends only on the seed, ``r``, ``t`` and its logits: the same seed gives
  the same samples whichever path decodes, however the batch is compacted and however often the host
  looks at it.
- :class:`DecodeRows` keeps each row's tokens, log-probs, length and finished flag **on the device**
  (stop tokens are tested there); the host looks only every ``stop_check_every`` steps
  (:meth:`DecodeRows.check`), where it applies the text-level stop rule and cuts each row at the
  first token after which the rule holds, so tokens generated past a row's end never reach its
  completion or its log-probs.

The text rule ``stop(tokens) -> bool`` must be monotone (a finished text stays finished when extended:
the end of a SQL statement, a closing fence or tag are); the check then needs one decode per live row
and, for a row that has just finished, one per token since the last check.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["Chooser", "DecodeRows", "sample_tokens"]


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float = 1.0,
                  generator: torch.Generator | None = None, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row from ``softmax(logits / temperature)`` restricted to the top-p nucleus.

    Inverse-CDF sampling (a cumulative sum and a binary search per row) with ``uniform [N]`` in [0, 1)
    (drawn here from ``generator`` when None): the same distribution as ``torch.multinomial``, which
    draws an exponential per vocabulary entry (38 ms for 32 x 49,152 here, against 1.4 ms).
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # keeps the top token always
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    cdf = probs.cumsum(dim=-1)
    if uniform is None:
        uniform = torch.rand(len(probs), device=probs.device, generator=generator)
    draw = uniform.to(cdf.dtype)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, draw, right=True)[:, 0].clamp_(max=probs.shape[-1] - 1)


class Chooser:
    """``chooser(logits [N, V], row [N]) -> tokens [N]``: the next token of each decoding slot.

    ``row[i]`` is the row of the call that slot ``i`` decodes (``rows`` or more: a filler slot whose
    tokens are discarded). Greedy takes the argmax; otherwise one uniform number per row of the call
    is drawn from ``generator`` (the device's default one when None) every step.
    """

    def __init__(self, rows: int, *, greedy: bool, temperature: float = 1.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None):
        self.rows, self.greedy = rows, greedy
        self.temperature, self.top_p, self.generator = temperature, top_p, generator

    def __call__(self, logits: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        if self.greedy:
            return logits.argmax(dim=-1)
        uniform = torch.rand(self.rows, device=logits.device, generator=self.generator)
        return sample_tokens(logits, self.temperature, self.top_p, uniform=uniform[row.clamp(max=self.rows - 1)])


class DecodeRows:
    """Tokens, log-probs, lengths and finished flags of ``rows`` rows, kept on ``device``.

    ``record`` is device-only (no host synchronisation); ``check`` synchronises once and applies the
    text rule. Slots pointing at row ``rows`` (the extra last row, finished from the start) are fillers.
    """

    def __init__(self, rows: int, max_new_tokens: int, stop_tokens: Sequence[int] | torch.Tensor,
                 device: torch.device, stop: Callable[[list[int]], bool] | None = None):
        self.rows, self.stop = rows, stop
        self.tokens = torch.zeros((rows + 1, max_new_tokens), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((rows + 1, max_new_tokens), dtype=torch.float32, device=device)
        self.length = torch.zeros(rows + 1, dtype=torch.long, device=device)
        self.done = torch.zeros(rows + 1, dtype=torch.bool, device=device)
        self.done[rows] = True
        self.stop_tokens = torch.as_tensor(stop_tokens, dtype=torch.long).to(device)
        self._checked = [0] * rows  # tokens of each row the text rule has seen
        self._final = [False] * rows  # the row's length can no longer change
        self.steps = 0

    def record(self, row: torch.Tensor, chosen: torch.Tensor, chosen_logprobs: torch.Tensor) -> None:
        """Write step ``self.steps``'s tokens of the slots (``row [N]``: each slot's row); device-only."""
        step = self.steps
        self.tokens[row, step] = chosen
        self.logprobs[row, step] = chosen_logprobs.float()
        live = ~self.done[row]
        self.length.index_add_(0, row, live.long())
        if len(self.stop_tokens):
            self.done.index_put_((row,), self.done[row] | (live & torch.isin(chosen, self.stop_tokens)))
        self.steps += 1

    def check(self) -> list[bool]:
        """Synchronise: apply the text rule to the tokens since the last check; per row, whether it is done.

        A row whose text ends its statement is cut after the first token where ``stop`` holds.
        """
        length, done = self.length[:self.rows].tolist(), self.done[:self.rows].tolist()
        open_rows = [r for r in range(self.rows) if not self._final[r]]
        if self.stop is not None and open_rows:
            tokens = self.tokens[open_rows, :self.steps].tolist()
            cut: dict[int, int] = {}
            for r, row_tokens in zip(open_rows, tokens):
                n = length[r]
                if n > self._checked[r] and self.stop(row_tokens[:n]):
                    n = next(j for j in range(self._checked[r] + 1, n + 1) if self.stop(row_tokens[:j]))
                    cut[r], length[r], done[r] = n, n, True
                self._checked[r] = n
            if cut:
                index = torch.tensor(list(cut), device=self.length.device)
                self.length[index] = torch.tensor(list(cut.values()), device=self.length.device)
                self.done[index] = True
        for r in open_rows:
            self._final[r] = done[r]
        return done

    def results(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per row ``(token ids, log-probs)`` up to its length, on the CPU."""
        length = self.length[:self.rows].tolist()
        tokens, logprobs = self.tokens[:self.rows].cpu(), self.logprobs[:self.rows].cpu()
        return [(tokens[r, :n].clone(), logprobs[r, :n].clone()) for r, n in enumerate(length)]
