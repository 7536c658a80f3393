"""The LoRA policy: prompt an observation, sample G completions, extract SQL, score log-probs.

``LoRAPolicy`` wraps a causal LM (``agents.models``) in a PEFT LoRA adapter; only the adapter's
weights are trainable. It knows nothing about rewards: the trainer scores the SQL it returns.

Sampling (``generate``) prefills each prompt once and samples ``num_generations`` continuations
of it; the prompts of one call (up to ``max_batch_rows`` sequences) decode together. By default
(``engine="auto"``) the rollout engine (``agents.engine``) does it: the prompts' common prefix and
each prompt's KV cache are stored once and shared by the G samples, finished groups leaving the
batch. ``engine="hf"`` keeps the model's own forward: prompts left-padded, each prompt's cache copied
G times, sequences leaving the batch as they finish. A
sequence finishes at the EOS token, at a closing code fence, at a ';' outside string literals
(the end of the SQL statement) or after ``max_completion_length`` tokens; the stopping token is
kept in ``completion_ids``.

Both paths share one sampler and one row bookkeeping (``agents.sampling``): row ``r``'s ``t``-th token
is drawn by inverse CDF from the ``t``-th uniform number drawn for ``r``, so one seed gives the same
samples on either path (up to draws within float rounding of a CDF boundary); EOS is tested on the
device, the statement end on the host every ``stop_check_every`` steps.

Log-probs: ``Rollout.logprobs`` and ``sequence_logprobs`` are the same quantity,
``log softmax(logits)`` of the unmodified model at temperature 1 (no temperature, no top-p), so the
GRPO ratio is exactly 1 before the first update. The sampling distribution itself is tempered
(``temperature``, ``top_p``); that difference is the usual GRPO approximation, not a bug.

The KL reference is the base model: ``sequence_logprobs(..., disable_adapter=True)`` switches the
adapter off for one forward pass, so there is no second copy of the model.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from agents.models import LORA_TARGETS
from agents.prompt_cache import DEFAULT_MAX_TOKENS
from agents.sampling import Chooser, DecodeRows
from sqlenv import prompts as prompt_texts
from sqlenv.completion import extract_sql, statement_end  # noqa: F401 (re-exported)
from sqlenv.prompts import PREFILL

# --------------------------------------------------------------------------- SQL extraction
# One extractor for every path (trainer, TRL, verifiers, SkyRL): sqlenv.completion.


def _finished(completion: str) -> bool:
    """Whether a completion (text after ``PREFILL``) has ended its SQL statement."""
    return "```" in completion or statement_end(completion) is not None


# --------------------------------------------------------------------------- policy

ENGINES = ("auto", "engine", "hf")


@dataclass
class PolicyConfig:
    """How to build a ``LoRAPolicy``.

    Model
      model: an ``agents.models`` name ("smollm2-135m", "qwen2.5-coder-0.5b"), a local folder,
        a ``.gguf`` file or a hub id.
      device / dtype: "auto" = CUDA bfloat16 when a GPU is visible, else CPU float32.
      threads: ``torch.set_num_threads`` (None leaves torch's default).
    LoRA
      lora_r, lora_alpha, lora_dropout, target_modules: passed to ``peft.LoraConfig``.
      adapter: a saved adapter folder to start from (``LoRAPolicy.save``), or None for a fresh one.
    Prompt and sampling
      few_shot: worked examples in the prompt (``sqlenv.prompts``).
      max_completion_length: new tokens per completion, at most.
      temperature, top_p: the sampling distribution (``generate(greedy=True)`` ignores both).
      max_batch_rows: most sequences decoded together; ``generate`` batches as many prompts as fit
        (prompts x G rows; greedy needs one row a prompt).
      engine: how ``generate`` decodes: "engine" (``agents.engine.RolloutEngine``: each prompt's KV
        stored once and shared by its G samples), "hf" (the model's own forward with a Hugging Face
        cache copied G times), or "auto" (the engine where the model is Llama-style, else "hf").
      rollout_dtype: "bfloat16"/"float16" runs the engine in that precision (its log-probs then differ
        from ``sequence_logprobs``'; the trainer corrects with importance weights), None the model's.
      stop_check_every: the host checks the text-level end of a completion (and compacts the batch)
        every this many decode steps; EOS is tested on the device every step. Completions do not depend
        on it (each ends at its first stop); larger values spend up to k - 1 discarded tokens per row.
      compile: ``torch.compile`` the engine's decode step (CUDA graphs on CUDA); eager with a warning
        where compilation is unavailable.
      prompt_cache_tokens: inside ``reusing_prompts()`` (a multi-turn episode's moves), the most prompt tokens
        whose keys and values the engine keeps for the next move's context (0 = none kept: each context is
        prefilled whole); the output is the same at any value.
    """

    model: str = "smollm2-135m"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = LORA_TARGETS
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    few_shot: int = 2
    max_completion_length: int = 96
    temperature: float = 0.8
    top_p: float = 1.0
    adapter: str | None = None
    max_batch_rows: int = 64
    engine: str = "auto"
    rollout_dtype: str | None = None
    stop_check_every: int = 8
    compile: bool = False
    prompt_cache_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        if self.lora_r <= 0:
            raise ValueError(f"lora_r must be positive, got {self.lora_r}")
        if self.max_completion_length <= 0:
            raise ValueError(f"max_completion_length must be positive, got {self.max_completion_length}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.few_shot < 0:
            raise ValueError(f"few_shot must be >= 0, got {self.few_shot}")
        if self.max_batch_rows <= 0:
            raise ValueError(f"max_batch_rows must be positive, got {self.max_batch_rows}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.rollout_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"rollout_dtype must be 'bfloat16', 'float16' or None, got {self.rollout_dtype!r}")
        if self.stop_check_every < 1:
            raise ValueError(f"stop_check_every must be >= 1, got {self.stop_check_every}")
        if isinstance(self.prompt_cache_tokens, bool) or not isinstance(self.prompt_cache_tokens, int) \
                or self.prompt_cache_tokens < 0:
            raise ValueError(f"prompt_cache_tokens must be an integer >= 0, got {self.prompt_cache_tokens!r}")
        if self.rollout_dtype is not None and self.engine == "hf":
            raise ValueError("rollout_dtype needs the rollout engine (engine='auto' or 'engine'), not 'hf'")


@dataclass
class Rollout:
    """One sampled completion.

    ``text`` is ``PREFILL + completion`` (just the completion when the prompt does not end with
    ``PREFILL``); ``sql`` is ``extract_sql(text)``; ``logprobs[i]`` is the log-prob of
    ``completion_ids[i]`` (CPU tensors, no grad). ``loss_mask`` (None: every completion token) is 1 on
    the completion tokens the policy sampled and 0 on tokens it did not (a multi-turn episode's
    environment text, ``agents.multiturn``): only the former get gradient.
    """

    prompt_index: int
    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    text: str
    sql: str
    logprobs: torch.Tensor
    loss_mask: torch.Tensor | None = None


@dataclass
class GenerationStats:
    """Counters of the last ``generate`` call (for logs and benchmarks)."""

    prompts: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class LoRAPolicy:
    """A causal LM with a LoRA adapter, as a policy over SQL strings.

    ``LoRAPolicy(PolicyConfig())`` loads the default offline model. Pass ``model=`` and
    ``tokenizer=`` to wrap an already-loaded base model instead (the config's model/device/dtype
    are then ignored). The model stays in eval mode (dropout off) unless the caller switches it.
    """

    def __init__(self, config: PolicyConfig | None = None, *, model=None, tokenizer=None):
        from peft import LoraConfig, PeftModel, get_peft_model

        self.config = config = config or PolicyConfig()
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model= and tokenizer=, or neither")
        if model is None:
            from agents.models import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(config.model, config.device, config.dtype,
                                                        config.threads)
        elif config.threads:
            torch.set_num_threads(int(config.threads))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` on every wrap (a FutureWarning
            # per model load that says nothing to a user); only that warning is silenced
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            if config.adapter:
                self.model = PeftModel.from_pretrained(model, config.adapter, is_trainable=True)
            else:
                lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                  lora_dropout=config.lora_dropout,
                                  target_modules=list(config.target_modules), task_type="CAUSAL_LM")
                self.model = get_peft_model(model, lora)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        eos = {tokenizer.eos_token_id}
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        self.eos_token_ids = sorted(e for e in eos if e is not None)
        self.stats = GenerationStats()
        # transformers 5 renamed the forward argument past_key_values to cache
        forward_args = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"

    # ------------------------------------------------------------------ prompts

    def prompt(self, observation: dict) -> str:
        """The full prompt text for an observation: chat template applied, ending with PREFILL."""
        messages = prompt_texts.build_messages(observation, self.config.few_shot)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        else:
            text = prompt_texts.render_plain(messages)
        return text + PREFILL

    def agent_prompt(self, observation: dict, max_turns: int) -> str:
        """The prompt text that starts a multi-turn episode (``prompts.build_agent_messages``), chat
        template applied, ending with the assistant cue (no prefill: the move opens its own tag)."""
        messages = prompt_texts.build_agent_messages(observation, max_turns, self.config.few_shot)
        return self._render(messages)

    def agent_feedback(self, result: str, turns_left: int, after_eos: bool = False) -> str:
        """The text between two moves: the end of the assistant turn, the env's result as a user
        message, and the next assistant cue, as the chat template writes them. ``after_eos``: the move
        already ended with an EOS token, so the end-of-turn text it stands for is not repeated."""
        marker = "\x00MOVE\x00"
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker},
                    {"role": "user", "content": prompt_texts.agent_result_message(result, turns_left)}]
        text = self._render(messages).split(marker, 1)[1]
        if after_eos:
            eos = self.tokenizer.eos_token or ""
            if eos and text.startswith(eos):
                text = text[len(eos):]
        return text

    def _render(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt_texts.render_plain(messages)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of a prompt (no special tokens added: the chat template has them)."""
        return torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], num_generations: int, temperature: float | None = None,
                 greedy: bool = False) -> list[Rollout]:
        """Sample ``num_generations`` completions per prompt, grouped by prompt.

        Returns ``len(prompts) * num_generations`` rollouts; rollout ``k`` belongs to prompt
        ``k // num_generations``. ``greedy`` (or temperature 0) takes the argmax: all G
        completions of a prompt are then identical and computed once.
        """
        if num_generations <= 0:
            raise ValueError(f"num_generations must be positive, got {num_generations}")
        temperature = self.config.temperature if temperature is None else temperature
        greedy = greedy or temperature == 0
        was_training = self.model.training
        self.model.eval()
        start = time.perf_counter()
        stats = GenerationStats(prompts=len(prompts), completions=len(prompts) * num_generations)
        rollouts: list[Rollout] = []
        rows = 1 if greedy else num_generations
        per_call = max(1, self.config.max_batch_rows // rows)
        try:
            encoded = [self.encode(text) for text in prompts]
            for first in range(0, len(prompts), per_call):
                batch = encoded[first:first + per_call]
                sampled = self._decode(batch, rows, temperature=temperature, top_p=self.config.top_p,
                                            greedy=greedy, max_new_tokens=self.config.max_completion_length)
                for offset, (prompt_ids, completions) in enumerate(zip(batch, sampled)):
                    index = first + offset
                    text = prompts[index]
                    stats.prompt_tokens += len(prompt_ids)
                    if greedy:
                        ids, logprobs = completions[0]
                        completions = [(ids.clone(), logprobs.clone()) for _ in range(num_generations)]
                    for ids, logprobs in completions:
                        stats.completion_tokens += len(ids)
                        completion = self.tokenizer.decode(ids, skip_special_tokens=True)
                        full = PREFILL + completion if text.endswith(PREFILL) else completion
                        rollouts.append(Rollout(index, prompt_ids, ids, full, extract_sql(full), logprobs))
        finally:
            self.model.train(was_training)
        stats.seconds = time.perf_counter() - start
        self.stats = stats
        return rollouts

    @torch.no_grad()
    def sample_ids(self, prompt_ids_list: Sequence[torch.Tensor], num_generations: int = 1, *,
                   greedy: bool = False, temperature: float | None = None,
                   finished: Callable[[str], bool] | None = None) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """``num_generations`` continuations of each token-id prompt: per prompt ``[(ids, logprobs)] * G``.

        The token-level form of ``generate`` (same batching, engine and log-probs), for callers that
        build their contexts from ids (``agents.multiturn``). A continuation stops at EOS, after
        ``max_completion_length`` tokens, or once ``finished(decoded text)`` holds (default: the end of
        a SQL statement, as ``generate``). Greedy continuations are computed once and copied.
        """
        if num_generations <= 0:
            raise ValueError(f"num_generations must be positive, got {num_generations}")
        temperature = self.config.temperature if temperature is None else temperature
        greedy = greedy or temperature == 0
        rows = 1 if greedy else num_generations
        per_call = max(1, self.config.max_batch_rows // rows)
        was_training = self.model.training
        self.model.eval()
        out: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        try:
            for first in range(0, len(prompt_ids_list), per_call):
                batch = [torch.as_tensor(p, dtype=torch.long) for p in prompt_ids_list[first:first + per_call]]
                sampled = self._decode(batch, rows, temperature=temperature, top_p=self.config.top_p, greedy=greedy,
                                       max_new_tokens=self.config.max_completion_length, finished=finished)
                for completions in sampled:
                    if greedy:
                        ids, logprobs = completions[0]
                        completions = [(ids.clone(), logprobs.clone()) for _ in range(num_generations)]
                    out.append(list(completions))
        finally:
            self.model.train(was_training)
        return out

    def uses_engine(self) -> bool:
        """Whether ``generate`` decodes with :class:`agents.engine.RolloutEngine` (``config.engine``)."""
        from agents.engine import supports

        if self.config.rollout_dtype is not None and not supports(self.model):
            raise ValueError(f"rollout_dtype={self.config.rollout_dtype!r} needs the rollout engine, which does "
                             "not support this model")
        if self.config.engine == "auto":
            return supports(self.model)
        return self.config.engine == "engine"

    def _decode(self, prompt_ids_list, rows: int, *, temperature: float, top_p: float, greedy: bool,
                max_new_tokens: int, finished: Callable[[str], bool] | None = None):
        """``rows`` continuations of each prompt, by the engine or by the Hugging Face path; a
        continuation stops once ``finished(text)`` (default: the end of a SQL statement)."""
        finished = finished or _finished
        if not self.uses_engine():
            return self._sample_many(prompt_ids_list, rows, temperature=temperature, top_p=top_p,
                                     greedy=greedy, max_new_tokens=max_new_tokens, finished=finished)
        chooser = Chooser(len(prompt_ids_list) * rows, greedy=greedy, temperature=temperature, top_p=top_p)
        decode = self.tokenizer.decode
        return self._rollout_engine().sample(prompt_ids_list, rows, max_new_tokens=max_new_tokens, choose=chooser,
                                             stop=lambda tokens: finished(decode(tokens)))

    def _rollout_engine(self):
        """The policy's :class:`agents.engine.RolloutEngine`, built on first use."""
        from agents.engine import RolloutEngine

        if getattr(self, "_engine", None) is None:
            dtype = getattr(torch, self.config.rollout_dtype) if self.config.rollout_dtype else None
            self._engine = RolloutEngine(self.model, self.eos_token_ids, self.tokenizer.pad_token_id or 0,
                                         dtype=dtype, stop_check_every=self.config.stop_check_every,
                                         compile=self.config.compile)
        return self._engine

    def reusing_prompts(self):
        """A context in which prompts that extend an earlier call's prompts prefill only the rest (the rollout
        engine's ``reusing_prompts``; a multi-turn episode's next move), with the same output; on the Hugging
        Face path, or with ``prompt_cache_tokens=0``, it changes nothing."""
        if not self.uses_engine() or self.config.prompt_cache_tokens == 0:
            return contextlib.nullcontext()
        return self._rollout_engine().reusing_prompts(self.config.prompt_cache_tokens)

    def _sample(self, prompt_ids: torch.Tensor, rows: int, *, temperature: float, top_p: float,
                greedy: bool, max_new_tokens: int, shared_prefill: bool = True,
                stop: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Sample ``rows`` continuations of one prompt; ``[(completion_ids, logprobs)] * rows``."""
        return self._sample_many([prompt_ids], rows, temperature=temperature, top_p=top_p, greedy=greedy,
                                 max_new_tokens=max_new_tokens, shared_prefill=shared_prefill, stop=stop)[0]

    def _sample_many(self, prompt_ids_list: Sequence[torch.Tensor], rows: int, *, temperature: float,
                     top_p: float, greedy: bool, max_new_tokens: int, shared_prefill: bool = True,
                     stop: bool = True, finished: Callable[[str], bool] | None = None,
                     ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Sample ``rows`` continuations of each prompt in one decode loop.

        Returns, per prompt, ``[(completion_ids, logprobs)] * rows``. Several prompts are left-padded
        to one length and prefilled as one batch (attention mask and position ids skip the padding);
        each prompt's KV cache is then copied ``rows`` times, and all ``len(prompts) * rows``
        sequences decode together, finished ones leaving the batch (cache, mask and positions).
        ``shared_prefill=False`` runs each prompt ``rows`` times instead (kept for benchmarks).
        ``stop=False`` always samples ``max_new_tokens`` tokens (benchmarks); ``finished`` (default the
        end of a SQL statement) says when a decoded continuation is complete.
        """
        finished = finished or _finished
        lengths = [len(p) for p in prompt_ids_list]
        width = max(lengths)
        ids = torch.full((len(lengths), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(lengths), width), dtype=torch.long)
        for i, prompt_ids in enumerate(prompt_ids_list):
            ids[i, width - len(prompt_ids):] = prompt_ids
            mask[i, width - len(prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        padded = len(set(lengths)) > 1  # equal lengths need no mask: the exact single-prompt path
        next_pos = torch.tensor(lengths, device=self.device).repeat_interleave(rows)
        extra = {}
        if padded:
            extra = {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        if shared_prefill:
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **extra)
            cache = _cache_of(out)
            if rows > 1:
                cache.batch_repeat_interleave(rows)
            logits = out.logits[:, -1, :].float().repeat_interleave(rows, dim=0)
        else:
            extra = {k: v.repeat_interleave(rows, dim=0) for k, v in extra.items()}
            out = self.model(input_ids=ids.repeat_interleave(rows, dim=0), use_cache=True, logits_to_keep=1,
                             **extra)
            cache, logits = _cache_of(out), out.logits[:, -1, :].float()
        mask = mask.repeat_interleave(rows, dim=0)
        total = len(lengths) * rows
        chooser = Chooser(total, greedy=greedy, temperature=temperature, top_p=top_p)
        book = DecodeRows(total, max_new_tokens, self.eos_token_ids if stop else [], self.device,
                          (lambda tokens: finished(self.tokenizer.decode(tokens))) if stop else None)
        every = self.config.stop_check_every
        active = list(range(total))  # active[i] = the row whose cache entry is i
        row = torch.arange(total, device=self.device)
        for step in range(max_new_tokens):
            chosen = chooser(logits, row)
            book.record(row, chosen, torch.log_softmax(logits, dim=-1).gather(-1, chosen[:, None])[:, 0])
            if step == max_new_tokens - 1:
                break
            if (step + 1) % every == 0:
                done = book.check()
                keep = [i for i, r in enumerate(active) if not done[r]]
                if not keep:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    chosen, mask, next_pos, row = chosen[index], mask[index], next_pos[index], row[index]
                    active = [active[i] for i in keep]
            step_extra = {}
            if padded:
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                step_extra = {"attention_mask": mask, "position_ids": next_pos[:, None]}
            out = self.model(input_ids=chosen[:, None], use_cache=True, **{self._cache_arg: cache}, **step_extra)
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :].float()
        book.check()
        results = book.results()
        return [results[i * rows:(i + 1) * rows] for i in range(len(lengths))]

    # ------------------------------------------------------------------ scoring

    def sequence_logprobs(self, prompt_ids_list: Sequence[torch.Tensor],
                          completion_ids_list: Sequence[torch.Tensor], disable_adapter: bool = False,
                          share_prompts: bool = True):
        """Per-token log-probs of completions given prompts.

        Returns ``(logprobs, mask)``, both float32 ``[B, T]`` with ``T`` the longest completion;
        ``logprobs`` carries grad (unless ``disable_adapter`` or under ``torch.no_grad``) and is 0
        where ``mask`` is 0. Logits are computed only at the positions that predict completion
        tokens. ``disable_adapter=True`` scores with the base model (the KL reference).

        ``share_prompts`` (default): completions of the same prompt (a GRPO group) run the prompt
        once, with grad, and continue from its KV cache, so a group of G costs one prompt forward
        and backward instead of G; the result equals the padded path (a test checks values and
        gradients). False: one right-padded forward over whole sequences.
        """
        if len(prompt_ids_list) != len(completion_ids_list):
            raise ValueError("prompt_ids_list and completion_ids_list must have the same length")
        if share_prompts and len(prompt_ids_list) > 1:
            groups: dict[tuple[int, ...], list[int]] = {}
            for b, p in enumerate(prompt_ids_list):
                groups.setdefault(tuple(torch.as_tensor(p).tolist()), []).append(b)
            if len(groups) < len(prompt_ids_list):
                return self._shared_prompt_logprobs(prompt_ids_list, completion_ids_list, groups,
                                                    disable_adapter)
        return self._padded_logprobs(prompt_ids_list, completion_ids_list, disable_adapter)

    def _shared_prompt_logprobs(self, prompt_ids_list, completion_ids_list, groups, disable_adapter):
        batch = len(prompt_ids_list)
        steps = max((len(c) for c in completion_ids_list), default=0)
        mask = torch.zeros((batch, steps), dtype=torch.float32, device=self.device)
        rows: list[torch.Tensor | None] = [None] * batch
        base = self.model.get_base_model()
        decoder, head = base.get_decoder(), base.get_output_embeddings()
        pad = self.tokenizer.pad_token_id or 0
        with self.model.disable_adapter() if disable_adapter else contextlib.nullcontext():
            for members in groups.values():
                prompt = torch.as_tensor(prompt_ids_list[members[0]]).to(self.device)
                if len(prompt) == 0:
                    raise ValueError("every prompt needs at least one token")
                completions = [torch.as_tensor(completion_ids_list[b]).to(self.device) for b in members]
                n, width = len(members), max(len(c) for c in completions)
                if width == 0:
                    for b in members:
                        rows[b] = torch.zeros(steps, device=self.device)
                    continue
                out = decoder(input_ids=prompt[None], use_cache=True)
                last = out.last_hidden_state[:, -1:, :].expand(n, -1, -1)
                if width > 1:  # feed all completion tokens but the last, continuing from the prompt's cache
                    cache = _cache_of(out)
                    cache.batch_repeat_interleave(n)
                    ids = torch.full((n, width - 1), pad, dtype=torch.long, device=self.device)
                    attention = torch.zeros((n, len(prompt) + width - 1), dtype=torch.long, device=self.device)
                    attention[:, :len(prompt)] = 1
                    for i, c in enumerate(completions):
                        ids[i, :len(c) - 1] = c[:-1]
                        attention[i, len(prompt):len(prompt) + len(c) - 1] = 1
                    rest = decoder(input_ids=ids, attention_mask=attention, use_cache=True,
                                   **{self._cache_arg: cache}).last_hidden_state
                    hidden = torch.cat([last, rest], dim=1)
                else:
                    hidden = last
                logits = head(hidden).float()
                targets = torch.full((n, width), pad, dtype=torch.long, device=self.device)
                for i, c in enumerate(completions):
                    targets[i, :len(c)] = c
                logp = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
                for i, b in enumerate(members):
                    length = len(completions[i])
                    mask[b, :length] = 1.0
                    row = logp[i, :length]
                    rows[b] = torch.nn.functional.pad(row, (0, steps - length))
        if steps == 0:
            return torch.zeros((batch, 0), device=self.device), mask
        return torch.stack(rows) * mask, mask

    def _padded_logprobs(self, prompt_ids_list, completion_ids_list, disable_adapter):
        batch = len(prompt_ids_list)
        prompt_lens = [len(p) for p in prompt_ids_list]
        completion_lens = [len(c) for c in completion_ids_list]
        width = max(p + c for p, c in zip(prompt_lens, completion_lens))
        steps = max(completion_lens) if completion_lens else 0
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        targets = torch.full((batch, steps), pad, dtype=torch.long)
        mask = torch.zeros((batch, steps), dtype=torch.float32)
        positions = torch.zeros((batch, steps), dtype=torch.long)
        for b, (p, c) in enumerate(zip(prompt_ids_list, completion_ids_list)):
            lp, lc = len(p), len(c)
            if lp == 0:
                raise ValueError("every prompt needs at least one token")
            input_ids[b, :lp] = p
            input_ids[b, lp:lp + lc] = c
            attention[b, :lp + lc] = 1
            targets[b, :lc] = c
            mask[b, :lc] = 1.0
            # the logit at position t predicts token t + 1; padding steps read the last position
            positions[b] = torch.clamp(torch.arange(lp - 1, lp - 1 + steps), max=width - 1)
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        targets, mask, positions = targets.to(self.device), mask.to(self.device), positions.to(self.device)
        if steps == 0:
            return torch.zeros((batch, 0), device=self.device), mask
        base = self.model.get_base_model()
        with self.model.disable_adapter() if disable_adapter else contextlib.nullcontext():
            hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention,
                                        use_cache=False).last_hidden_state
            hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
            logits = base.get_output_embeddings()(hidden).float()
        logprobs = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        return logprobs * mask, mask

    # ------------------------------------------------------------------ adapter

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The LoRA weights (the only parameters with ``requires_grad``), for the optimizer."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def save(self, path) -> Path:
        """Write the adapter in PEFT format (``PeftModel.from_pretrained(base, path)`` reads it).

        Also writes ``policy_config.json`` (this policy's ``PolicyConfig``) beside it.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), save_embedding_layers=False)
        (path / "policy_config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return path

    def load(self, path) -> None:
        """Load a saved adapter's weights into this policy, in place (optimizer state stays valid).

        The adapter must have this policy's rank, alpha and target modules; for another shape
        build a new policy with ``PolicyConfig(adapter=path)``.
        """
        from peft import PeftConfig
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        saved = PeftConfig.from_pretrained(str(path))
        current = self.model.peft_config["default"]
        for name in ("r", "lora_alpha", "target_modules"):
            if getattr(saved, name) != getattr(current, name):
                raise ValueError(
                    f"adapter at {path} has {name}={getattr(saved, name)!r} but this policy has "
                    f"{getattr(current, name)!r}; build a new policy with PolicyConfig(adapter={str(path)!r})"
                )
        weights = load_peft_weights(str(path), device=str(self.device))
        result = set_peft_model_state_dict(self.model, weights)
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        if missing:
            raise ValueError(f"adapter at {path} lacks {len(missing)} LoRA weights, e.g. {missing[0]}")


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values

