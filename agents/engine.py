"""The rollout engine: batched sampling with a shared-prefix KV cache, in plain PyTorch.

``RolloutEngine(model, ...)`` decodes ``G`` continuations of each of ``B`` prompts in one loop.
What it does that Hugging Face's ``generate`` path does not:

- **Shared prefixes, stored once.** The KV cache has three levels: the token prefix common to every
  prompt of the call (the system prompt and schema; computed once), each prompt's own part
  (computed once per prompt, not once per sample), and each sample's generated tokens. A decode
  step's attention is one softmax over the three levels' scores, so the prompt's keys and values
  are read once per group per step instead of once per sample, and never copied G times.
  Prompts whose own parts share a long prefix (one database asked several questions: its rows and
  the worked examples come before the question) have that prefix prefilled once and only the rest
  per prompt (``share_prefixes``; 1.38x on a greedy evaluation batch of 48 TempTabQA-C questions
  over 13 databases, greedy output unchanged: ``benchmarks/bench_shared_prefill.py``).
- **Contexts kept across calls.** Inside ``reusing_prompts()``, every prompt's keys and values are kept
  after its call, and a later prompt that extends one (a multi-turn episode's next move: the last
  context, the move and the env's reply) prefills only its new tokens (:mod:`agents.prompt_cache`;
  emptied when the weights change).
- **Preallocated buffers.** The generated-token cache is allocated for ``max_new_tokens`` up front
  and written in place; nothing grows by concatenation.
- **Finished samples leave.** A prompt whose G samples have all stopped drops out of the batch, and
  within a prompt the finished samples drop out down to the width of the prompt with the most live
  samples (the others are padded with discarded filler copies), so a step computes live rows.
- **No host round-trip per token.** A decode step (:meth:`RolloutEngine._decode_step`, gpt-fast's
  ``decode_one_token``) is a pure tensor function with static shapes within a window of k steps: the
  generated level is read up to the window's end under a mask, the step index is a tensor. Tokens,
  log-probs, lengths and finished flags stay on the device (``agents.sampling.DecodeRows``; EOS tested
  there); the host looks every ``stop_check_every`` steps, for the text-level stop rule and the
  compaction above. ``compile=True`` runs the step through ``torch.compile``.

- **Few, large matrix products.** At the start of each call the LoRA adapter is folded into the
  projections it targets (``W + B A scaling``, PEFT's own ``get_delta_weight``; skipped under
  ``disable_adapter``) and q/k/v are stacked into one matrix, so a layer is five matrix products
  and a handful of element-wise ops, with no per-module Python dispatch.
  Weights changed by an optimizer step are folded in again by the next call.

The embeddings, rotary embeddings and output head are the model's own modules. Supported:
Llama-style decoders (``llama``, ``qwen2``, ``mistral`` without sliding windows, SiLU MLP);
:func:`supports` says whether a model is one.

Log-probs returned with each token are ``log_softmax`` of the unmodified logits (temperature 1),
the quantity the trainer's forward computes.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from agents.prompt_cache import DEFAULT_MAX_TOKENS, Kept, PromptCache, weights_fingerprint
from agents.sampling import DecodeRows, sample_tokens

__all__ = ["RolloutEngine", "sample_tokens", "supports", "SUPPORTED_MODEL_TYPES"]

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports(model) -> bool:
    """Whether :class:`RolloutEngine` can run ``model`` (a causal LM, optionally PEFT-wrapped)."""
    base = _base_model(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None):
        return False
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None or not hasattr(decoder, "rotary_emb"):
        return False
    if getattr(config, "hidden_act", "silu") != "silu":
        return False
    layer = decoder.layers[0]
    needed = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
    return all(hasattr(layer, n) for n in needed) and all(
        hasattr(layer.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")) and all(
        hasattr(layer.mlp, p) for p in ("gate_proj", "up_proj", "down_proj"))


def _effective_linear(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight, bias)`` a (possibly LoRA-wrapped) linear layer applies right now."""
    if not hasattr(module, "lora_A"):
        return module.weight, module.bias
    base = module.get_base_layer()
    weight = base.weight
    if not module.disable_adapters and not module.merged:
        for name in module.active_adapters:
            if name not in module.lora_A:
                continue
            if name in getattr(module, "lora_variant", {}):
                raise ValueError(f"RolloutEngine supports plain LoRA adapters, not the {name!r} variant (DoRA)")
            weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight, base.bias


def _stack(parts):
    weights = torch.cat([w for w, _ in parts])
    if all(b is None for _, b in parts):
        return weights, None
    return weights, torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts])


@dataclass
class _Layer:
    """One decoder layer's weights as the engine applies them."""

    norm1: torch.Tensor
    eps1: float
    qkv: tuple[torch.Tensor, torch.Tensor | None]
    o: tuple[torch.Tensor, torch.Tensor | None]
    norm2: torch.Tensor
    eps2: float
    gate: tuple[torch.Tensor, torch.Tensor | None]
    up: tuple[torch.Tensor, torch.Tensor | None]
    down: tuple[torch.Tensor, torch.Tensor | None]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's RMSNorm, step for step (float32 statistics, then the weight in the input's dtype)."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


@dataclass
class _Levels:
    """Per-layer keys and values of the three cache levels (see the module docstring), kv head first so
    that a decode step's queries of every level are ``[Hkv, B, G * rep, D]`` and no level is copied per step.

    common: ``[Hkv, L0, D]``; own: ``[Hkv, B, L1, D]`` with ``own_len[b]`` valid positions;
    gen: ``[Hkv, B, G, T, D]``, the first ``steps`` positions written.
    """

    common_k: list[torch.Tensor]
    common_v: list[torch.Tensor]
    own_k: list[torch.Tensor]
    own_v: list[torch.Tensor]
    own_mask: torch.Tensor  # [1, B, 1, L1] additive: 0 where valid, -inf past own_len
    gen_k: list[torch.Tensor]
    gen_v: list[torch.Tensor]
    steps: int = 0

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the prompts at ``index`` (finished groups leave)."""
        for name in ("own_k", "own_v", "gen_k", "gen_v"):
            setattr(self, name, [t.index_select(1, index) for t in getattr(self, name)])
        self.own_mask = self.own_mask.index_select(1, index)


@dataclass
class _Shared:
    """Prefixes that several prompts' own parts share, prefilled once: ``keys``/``values`` per layer
    ``[S + 1, Hkv, Ls, D]`` (the last row an empty prefix, for prompts that share none), ``length [S + 1]``
    valid positions of each, and ``group [B]``, the prefix of each prompt."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: torch.Tensor
    group: torch.Tensor

    def join(self, layer: int, group: torch.Tensor, suffix: torch.Tensor, which: str, width: int) -> torch.Tensor:
        """A prompt's own keys (or values) ``[n, Hkv, width, D]``: its group's prefix, then ``suffix``."""
        prefix = getattr(self, which)[layer].index_select(0, group)
        stored = prefix.shape[2]
        cut = self.length[group][:, None]
        position = torch.arange(width, device=suffix.device)[None]
        source = torch.where(position < cut, position, stored + position - cut)
        source = source.clamp(max=stored + suffix.shape[2] - 1)
        index = source[:, None, :, None].expand(-1, suffix.shape[1], -1, suffix.shape[3])
        return torch.cat([prefix, suffix], dim=2).gather(2, index)


class RolloutEngine:
    """Samples continuations of prompts for a Llama-style causal LM (optionally with LoRA).

    ``stop(row_tokens) -> bool`` ends a sequence after a token (besides EOS); ``eos_token_ids`` end
    it with the token kept, as in :class:`agents.policy.LoRAPolicy`. ``prefill_chunk`` bounds how
    many prompts are prefilled together (memory), ``pad_token_id`` fills padding. ``dtype`` (e.g.
    ``torch.bfloat16``) runs the rollout in a lower precision than the model's weights: the folded
    weights, activations and KV cache are cast, the logits come back in float32. Its tokens then come
    from a slightly different distribution than the training forward's; the trainer must correct for
    it (importance sampling) and ``benchmarks/bench_generate.py --rollout-dtype`` measures the gap.

    ``stop_check_every`` (k): the host looks at the tokens every k steps only, to apply ``stop`` and
    compact the batch; EOS is tested on the device every step, and a row's completion ends at its
    first stop whatever k is (the rows past it decode up to k - 1 discarded tokens). ``compile``: the
    decode step runs through ``torch.compile`` (inductor on CPU, ``mode="reduce-overhead"``, i.e.
    CUDA graphs, on CUDA); where compilation is unavailable or fails, one warning and the eager step.
    ``share_prefixes``: prompts whose own parts share at least ``min_shared`` tokens (and half the
    shorter part) prefill that prefix once (:func:`_shared_groups`); the cache is the same either way.
    """

    def __init__(self, model, eos_token_ids: Sequence[int], pad_token_id: int = 0,
                 prefill_chunk: int = 8, dtype: torch.dtype | None = None, stop_check_every: int = 8,
                 compile: bool = False, share_prefixes: bool = True, min_shared: int = 16):
        if not supports(model):
            config = getattr(_base_model(model), "config", None)
            raise ValueError(f"RolloutEngine supports Llama-style decoders {SUPPORTED_MODEL_TYPES}; "
                             f"got model_type={getattr(config, 'model_type', None)!r}")
        self.model = model
        base = _base_model(model)
        self.decoder = base.get_decoder()
        self.head = base.get_output_embeddings()
        config = base.config
        self.n_heads = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.rep = self.n_heads // self.n_kv
        self.scaling = self.head_dim ** -0.5
        self.eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long)
        self.pad = int(pad_token_id)
        self.prefill_chunk = max(1, int(prefill_chunk))
        self.min_shared = int(min_shared) if share_prefixes else None
        self.dtype = dtype
        if stop_check_every < 1:
            raise ValueError(f"stop_check_every must be >= 1, got {stop_check_every}")
        self.stop_check_every = int(stop_check_every)
        self.compile = bool(compile)
        self._compiled = None
        self._compile_failed = False
        self._weights: list[_Layer] | None = None  # set for the length of one sample() call
        self._head: torch.Tensor | None = None
        self._dtype = self.head.weight.dtype
        self._cache: PromptCache | None = None  # set inside reusing_prompts()
        self._used: list[Kept] = []  # the kept prompts the current call extends

    @contextmanager
    def reusing_prompts(self, max_tokens: int = DEFAULT_MAX_TOKENS) -> Iterator[PromptCache]:
        """Inside the block, a prompt that extends a prompt of an earlier call in the block prefills only the
        rest (:mod:`agents.prompt_cache`: a multi-turn episode's next move); at most ``max_tokens`` prompt
        tokens are kept. Output is the same as without it. A nested block uses the outer block's cache."""
        if self._cache is not None:
            yield self._cache
            return
        self._cache = PromptCache(max_tokens)
        try:
            yield self._cache
        finally:
            self._cache, self._used = None, []

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # ------------------------------------------------------------------ the model, layer by layer

    def _rope(self, x: torch.Tensor, positions: torch.Tensor):
        return self.decoder.rotary_emb(x, positions)

    def _gather_weights(self) -> list[_Layer]:
        """Every layer's weights with the active LoRA adapter folded in (see the module docstring),
        in the rollout dtype."""
        dtype = self._dtype

        def cast(pair):
            weight, bias = pair
            return weight.to(dtype), None if bias is None else bias.to(dtype)

        layers = []
        for layer in self.decoder.layers:
            attn, mlp = layer.self_attn, layer.mlp
            layers.append(_Layer(
                norm1=layer.input_layernorm.weight.to(dtype), eps1=_eps(layer.input_layernorm),
                qkv=cast(_stack([_effective_linear(attn.q_proj), _effective_linear(attn.k_proj),
                                 _effective_linear(attn.v_proj)])),
                o=cast(_effective_linear(attn.o_proj)),
                norm2=layer.post_attention_layernorm.weight.to(dtype), eps2=_eps(layer.post_attention_layernorm),
                gate=cast(_effective_linear(mlp.gate_proj)), up=cast(_effective_linear(mlp.up_proj)),
                down=cast(_effective_linear(mlp.down_proj))))
        return layers

    def _run_layers(self, hidden: torch.Tensor, positions: torch.Tensor,
                    attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The decoder stack over ``hidden [N, T, E]``; ``attend(layer, q, k, v)`` returns ``[N, T, H*D]``."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        cos, sin = self._rope(hidden, positions)
        n, t, _ = hidden.shape
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        linear = F.linear
        for index, w in enumerate(self._weights):
            qkv = linear(_rms_norm(hidden, w.norm1, w.eps1), *w.qkv)
            q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
            q = q.reshape(n, t, self.n_heads, self.head_dim).transpose(1, 2)
            k = k.reshape(n, t, self.n_kv, self.head_dim).transpose(1, 2)
            v = v.reshape(n, t, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            hidden = hidden + linear(attend(index, q, k, v), *w.o)
            normed = _rms_norm(hidden, w.norm2, w.eps2)
            hidden = hidden + linear(F.silu(linear(normed, *w.gate)) * linear(normed, *w.up), *w.down)
        return _rms_norm(hidden, self.decoder.norm.weight.to(self._dtype), _eps(self.decoder.norm))

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.embed_tokens(ids).to(self._dtype)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._head is self.head.weight:  # the model's own head module (its forward hooks apply)
            return self.head(hidden).float()
        return F.linear(hidden, self._head, self.head.bias).float()

    # ------------------------------------------------------------------ prefill

    def _prefill_common(self, tokens: torch.Tensor):
        """Keys/values of the common prefix ``tokens [L0]`` (its logits are never needed: every prompt goes on)."""
        keys, values = [], []

        def attend(layer, q, k, v):
            keys.append(k[0])
            values.append(v[0])
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=True)
            return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

        positions = torch.arange(len(tokens), device=self.device)[None]
        self._run_layers(self._embed(tokens[None]), positions, attend)
        return keys, values

    def _prefill_own(self, parts: list[torch.Tensor], common_k, common_v, start, prefix: _Shared | None = None,
                     rows: torch.Tensor | None = None):
        """Keys/values of each prompt's own tokens (after the common prefix), batched and right-padded,
        and the logits after each prompt's last token. ``start``: the first position (an int, or one per
        part); ``prefix``/``rows``: the shared prefixes the parts continue (``prefix.keys[layer][rows[i]]``,
        its first ``prefix.length[rows[i]]`` positions), attended between the common prefix and the part."""
        n, width = len(parts), max(len(p) for p in parts)
        ids = torch.full((n, width), self.pad, dtype=torch.long, device=self.device)
        valid = torch.zeros((n, width), dtype=torch.bool, device=self.device)
        for i, part in enumerate(parts):
            ids[i, :len(part)] = part
            valid[i, :len(part)] = True
        causal = torch.ones((width, width), dtype=torch.bool, device=self.device).tril()
        own_allowed = causal[None] & valid[:, None, :]  # [n, T, T]
        common_len = common_k[0].shape[1] if common_k else 0
        blocks = [own_allowed.new_ones((n, width, common_len))]
        span = int(prefix.length[rows].max()) if prefix is not None else 0  # the chunk's longest shared prefix
        if span:
            seen = torch.arange(span, device=self.device)[None] < prefix.length[rows][:, None]  # [n, span]
            blocks.append(seen[:, None, :].expand(n, width, span))
        allowed = torch.cat([*blocks, own_allowed], dim=-1)[:, None]
        keys, values = [], []

        def attend(layer, q, k, v):
            keys.append(k)
            values.append(v)
            before_k, before_v = [], []
            if common_len:
                before_k.append(common_k[layer][None].expand(n, -1, -1, -1))
                before_v.append(common_v[layer][None].expand(n, -1, -1, -1))
            if span:
                before_k.append(prefix.keys[layer].index_select(0, rows)[:, :, :span])
                before_v.append(prefix.values[layer].index_select(0, rows)[:, :, :span])
            if before_k:
                k, v = torch.cat([*before_k, k], dim=2), torch.cat([*before_v, v], dim=2)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scaling, enable_gqa=True)
            return out.transpose(1, 2).reshape(n, width, -1)

        first = torch.as_tensor(start, device=self.device).reshape(-1, 1)
        positions = first + torch.arange(width, device=self.device)[None].expand(n, -1)
        hidden = self._run_layers(self._embed(ids), positions, attend)
        last = torch.tensor([len(p) - 1 for p in parts], device=self.device)
        logits = self._logits(hidden[torch.arange(n, device=self.device), last])
        return keys, values, logits

    # ------------------------------------------------------------------ decoding

    def _attend_decode(self, levels: _Levels, layer: int, q, k, v, step: torch.Tensor, gen_mask: torch.Tensor,
                       gen_k_all: torch.Tensor, gen_v_all: torch.Tensor):
        """One decode step's attention for ``groups x width`` sequences over the three levels.

        Static shapes: the generated level is read over a window's fixed length (``gen_k_all``, ``[Hkv, B,
        G, t, D]``, a view of the cache), ``gen_mask`` hiding the positions after ``step`` (a one-element
        tensor, so nothing here depends on a host integer). Every level's scores come out as ``[Hkv, B,
        G * rep, L]`` (the common prefix's as one product per kv head over all B x G x rep queries), so
        they are joined, and their values read, without copying or broadcasting any level."""
        hkv, b = levels.own_k[layer].shape[:2]
        g = q.shape[0] // b
        r, d = self.rep, self.head_dim
        gen_k_all.index_copy_(3, step, k.reshape(b, g, hkv, d).permute(2, 0, 1, 3).unsqueeze(3))
        gen_v_all.index_copy_(3, step, v.reshape(b, g, hkv, d).permute(2, 0, 1, 3).unsqueeze(3))
        t = gen_k_all.shape[3]
        # queries by kv head, prompt, sample, query head: [Hkv, B, G, rep, D], scaled here rather than the scores
        qh = (q.reshape(b, g, hkv, r, d).permute(2, 0, 1, 3, 4) * self.scaling).contiguous()
        qg = qh.view(hkv, b, g * r, d)
        scores = [torch.matmul(qg, levels.own_k[layer].transpose(-1, -2)) + levels.own_mask]
        if levels.common_k:
            common = torch.matmul(qg.view(hkv, b * g * r, d), levels.common_k[layer].transpose(-1, -2))
            scores.insert(0, common.view(hkv, b, g * r, -1))
        gen_scores = torch.matmul(qh, gen_k_all.transpose(-1, -2)) + gen_mask  # [Hkv, B, G, rep, T]
        scores.append(gen_scores.view(hkv, b, g * r, t))
        widths = [s.shape[-1] for s in scores]
        probs = torch.softmax(torch.cat(scores, dim=-1).float(), dim=-1).to(q.dtype)
        parts = probs.split(widths, dim=-1)
        out = torch.matmul(parts[-2], levels.own_v[layer])  # [Hkv, B, G * rep, D]
        if levels.common_k:
            out = out + torch.matmul(parts[0].reshape(hkv, b * g * r, -1), levels.common_v[layer]).view_as(out)
        out = out.view(hkv, b, g, r, d) + torch.matmul(parts[-1].reshape(hkv, b, g, r, t), gen_v_all)
        return out.permute(1, 2, 0, 3, 4).reshape(b * g, 1, hkv * r * d)

    def _decode_step(self, levels: _Levels, tokens: torch.Tensor, positions: torch.Tensor, step: torch.Tensor,
                     gen_k: list[torch.Tensor], gen_v: list[torch.Tensor]) -> torch.Tensor:
        """One decode step as a pure tensor function (gpt-fast's ``decode_one_token``): the last tokens
        ``[N]`` of ``groups x width`` slots at ``positions [N, 1]`` -> logits ``[N, V]``; writes the
        step's keys and values at ``step`` in the generated level's views ``gen_k``/``gen_v`` (its first
        ``t > step`` positions). This is what ``compile`` compiles."""
        t = gen_k[0].shape[3]
        visible = torch.arange(t, device=tokens.device) <= step
        gen_mask = torch.zeros(t, dtype=self._dtype, device=tokens.device).masked_fill(
            ~visible, torch.finfo(self._dtype).min)
        hidden = self._run_layers(self._embed(tokens[:, None]), positions, lambda layer, q, k, v: self._attend_decode(
            levels, layer, q, k, v, step, gen_mask, gen_k[layer], gen_v[layer]))
        return self._logits(hidden[:, -1])

    def _step_function(self):
        """The decode step to call: compiled once where ``compile`` asks and it works, else eager."""
        if not self.compile or self._compile_failed:
            return self._decode_step
        if self._compiled is None:
            try:
                mode = "reduce-overhead" if self.device.type == "cuda" else None
                self._compiled = torch.compile(self._decode_step, mode=mode, dynamic=None)
            except Exception as error:  # noqa: BLE001 (any failure means: decode eagerly)
                self._fall_back(error)
                return self._decode_step
        return self._compiled

    def _fall_back(self, error: Exception) -> None:
        self._compile_failed = True
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        warnings.warn(f"RolloutEngine: torch.compile unavailable ({type(error).__name__}: {message[:160]}); "
                      "decoding eagerly", RuntimeWarning, stacklevel=3)

    def _forward(self, levels, tokens, positions, step, length: int):
        """The decode step over the generated level's first ``length`` positions (fixed for a window of
        ``stop_check_every`` steps, so the shapes change once a window)."""
        gen_k = [t[:, :, :, :length] for t in levels.gen_k]
        gen_v = [t[:, :, :, :length] for t in levels.gen_v]
        step_function = self._step_function()
        if step_function is self._decode_step:
            return step_function(levels, tokens, positions, step, gen_k, gen_v)
        try:
            return step_function(levels, tokens, positions, step, gen_k, gen_v)
        except Exception as error:  # noqa: BLE001 (the step writes only position `step`: rerunning it is exact)
            self._fall_back(error)
            return self._decode_step(levels, tokens, positions, step, gen_k, gen_v)

    @torch.no_grad()
    def sample(self, prompts: Sequence[torch.Tensor], rows: int, *, max_new_tokens: int,
               choose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               stop: Callable[[list[int]], bool] | None = None) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """``rows`` continuations of each prompt (token id tensors); per prompt ``[(ids, logprobs)] * rows``.

        ``choose(logits [N, V], row [N]) -> tokens [N]`` picks the next tokens of the decoding slots,
        ``row[i]`` being the row (``prompt * rows + sample``) slot ``i`` decodes
        (:class:`agents.sampling.Chooser`). ``stop(row_tokens)`` is the text-level end rule (monotone:
        see :mod:`agents.sampling`), checked every ``stop_check_every`` steps.
        """
        if not prompts or max_new_tokens <= 0:
            return [[(torch.zeros(0, dtype=torch.long), torch.zeros(0))] * rows for _ in prompts]
        prompts = [torch.as_tensor(p, dtype=torch.long).to(self.device) for p in prompts]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        common = _common_prefix(prompts)
        common = min(common, min(len(p) for p in prompts) - 1)  # every prompt keeps >= 1 own token
        if len(prompts) == 1:
            common = 0  # one prompt: its own level holds it all
        self._dtype = self.dtype or self.head.weight.dtype
        if self._cache is not None:
            self._cache.check((weights_fingerprint(self.model), self._dtype))
        self._weights = self._gather_weights()
        self._head = self.head.weight.to(self._dtype)
        try:
            return self._sample(prompts, common, rows, max_new_tokens, choose, stop)
        finally:
            self._weights = self._head = None  # the folded copies are not kept between calls

    def _sample(self, prompts, common, rows, max_new_tokens, choose, stop):
        levels, logits = self._prefill(prompts, common, rows, max_new_tokens)
        total_groups = len(prompts)
        book = DecodeRows(total_groups * rows, max_new_tokens, self.eos, self.device, stop)
        active = list(range(total_groups))  # prompt of each batch group
        # slots[gi][s]: the sample (row of its prompt) that batch slot s of group gi decodes; None = a
        # filler slot kept only so every group has the same width (its tokens go to the filler row)
        slots: list[list[int | None]] = [list(range(rows)) for _ in range(total_groups)]
        width = rows
        slot_row = torch.arange(total_groups * rows, device=self.device)
        base_pos = torch.tensor([len(p) for p in prompts], device=self.device).repeat_interleave(rows)[:, None]
        step_t = torch.zeros(1, dtype=torch.long, device=self.device)
        logits = logits.repeat_interleave(rows, dim=0)  # [B*G, V]
        for step in range(max_new_tokens):
            chosen = choose(logits, slot_row)
            book.record(slot_row, chosen, torch.log_softmax(logits, dim=-1).gather(-1, chosen[:, None])[:, 0])
            if step == max_new_tokens - 1:
                break
            if (step + 1) % self.stop_check_every == 0:
                done = book.check()  # the one host synchronisation of the k steps
                alive = [[s for s, r in enumerate(group_slots) if r is not None and not done[prompt * rows + r]]
                         for prompt, group_slots in zip(active, slots)]
                keep = [gi for gi in range(len(active)) if alive[gi]]
                if not keep:
                    break
                new_width = max(len(alive[gi]) for gi in keep)
                if len(keep) < len(active) or new_width < width:
                    # finished groups leave; a group's finished samples leave too, down to the widest group
                    chosen = self._compact(levels, chosen, keep, [alive[gi] for gi in keep], width, new_width)
                    slots = [[slots[gi][s] for s in alive[gi]] + [None] * (new_width - len(alive[gi]))
                             for gi in keep]
                    active = [active[gi] for gi in keep]
                    width = new_width
                    filler = total_groups * rows
                    slot_row = torch.tensor([filler if r is None else p * rows + r
                                             for p, group_slots in zip(active, slots) for r in group_slots],
                                            device=self.device)
                    lengths = [len(prompts[p]) for p in active]
                    base_pos = torch.tensor(lengths, device=self.device).repeat_interleave(width)[:, None]
            # the generated level is read up to the end of this window of k steps (shapes change with the check)
            length = min(max_new_tokens, ((step + 1) // self.stop_check_every + 1) * self.stop_check_every)
            logits = self._forward(levels, chosen, base_pos + step_t, step_t, length)
            step_t += 1
            levels.steps += 1
        book.check()
        results = book.results()
        return [results[p * rows:(p + 1) * rows] for p in range(total_groups)]

    def _compact(self, levels: _Levels, chosen: torch.Tensor, keep: list[int], alive: list[list[int]],
                 width: int, new_width: int) -> torch.Tensor:
        """Keep groups ``keep`` and, in each, its ``alive`` slots (padded with copies of its first live
        slot to ``new_width``); returns the kept slots' last tokens. The generated-token cache is
        gathered once here, so later steps compute only live samples (and the fillers)."""
        groups = torch.tensor(keep, device=self.device)
        select = torch.tensor([a + [a[0]] * (new_width - len(a)) for a in alive], device=self.device)
        levels.keep(groups)  # per-prompt levels; gen_k/gen_v now [Hkv, kept, width, ...]
        local = torch.arange(len(keep), device=self.device)[:, None]
        levels.gen_k = [t[:, local, select] for t in levels.gen_k]
        levels.gen_v = [t[:, local, select] for t in levels.gen_v]
        return chosen.view(-1, width)[groups[:, None], select].reshape(-1)

    def _prefill(self, prompts: list[torch.Tensor], common: int, rows: int, max_new_tokens: int):
        common_k, common_v = [], []
        if common:
            common_k, common_v = self._prefill_common(prompts[0][:common])
        parts = [p[common:] for p in prompts]
        width = max(len(p) for p in parts)
        shared = self._kept_prefixes(prompts, common) if self._cache is not None else None
        if shared is None:
            shared = self._prefill_shared(parts, common_k, common_v, common)
        cuts = shared.length[shared.group].tolist() if shared is not None else [0] * len(parts)
        chunks = _by_length([len(part) - cut for part, cut in zip(parts, cuts)], self.prefill_chunk)
        n_layers = len(self.decoder.layers)
        own_k = [[] for _ in range(n_layers)]
        own_v = [[] for _ in range(n_layers)]
        logits = []
        for members in chunks:
            chunk = [parts[i] for i in members]
            if shared is None:
                keys, values, chunk_logits = self._prefill_own(chunk, common_k, common_v, common)
            else:
                group = shared.group[torch.tensor(members, device=self.device)]
                suffixes = [parts[i][cuts[i]:] for i in members]
                start = common + torch.tensor([cuts[i] for i in members], device=self.device)
                keys, values, chunk_logits = self._prefill_own(suffixes, common_k, common_v, start,
                                                               prefix=shared, rows=group)
                own = max(len(part) for part in chunk)
                keys = [shared.join(layer, group, k, "keys", own) for layer, k in enumerate(keys)]
                values = [shared.join(layer, group, v, "values", own) for layer, v in enumerate(values)]
            for layer in range(n_layers):
                own_k[layer].append(F.pad(keys[layer], (0, 0, 0, width - keys[layer].shape[2])))
                own_v[layer].append(F.pad(values[layer], (0, 0, 0, width - values[layer].shape[2])))
            logits.append(chunk_logits)
        restore = _restore_order(chunks, self.device)
        own_k = [torch.cat(t).index_select(0, restore) for t in own_k]
        own_v = [torch.cat(t).index_select(0, restore) for t in own_v]
        if self._cache is not None:
            self._keep(prompts, common_k, common_v, own_k, own_v, [len(p) for p in parts])
        lengths = torch.tensor([len(p) for p in parts], device=self.device)
        own_mask = torch.zeros((1, len(parts), 1, width), device=self.device, dtype=own_k[0].dtype)
        padding = (torch.arange(width, device=self.device)[None] >= lengths[:, None])[None, :, None]
        own_mask.masked_fill_(padding, torch.finfo(own_k[0].dtype).min)
        shape = (self.n_kv, len(parts), rows, max_new_tokens, self.head_dim)
        gen_k = [own_k[0].new_zeros(shape) for _ in range(n_layers)]
        gen_v = [own_k[0].new_zeros(shape) for _ in range(n_layers)]
        own_k = [t.transpose(0, 1).contiguous() for t in own_k]  # [Hkv, B, L1, D] (_Levels)
        own_v = [t.transpose(0, 1).contiguous() for t in own_v]
        levels = _Levels(common_k, common_v, own_k, own_v, own_mask, gen_k, gen_v)
        return levels, torch.cat(logits).index_select(0, restore)

    def _prefill_shared(self, parts: list[torch.Tensor], common_k, common_v, start: int) -> _Shared | None:
        """Prefill once the prefixes that several prompts' own parts share (one database's rows and
        worked examples, asked several questions); None when no two parts share one."""
        groups = _shared_groups(parts, self.min_shared) if self.min_shared is not None and len(parts) > 1 else None
        if groups is None:
            return None
        group, heads, cuts = groups
        prefixes = [parts[head][:cut] for head, cut in zip(heads, cuts)]
        width = max(cuts)
        n_layers = len(self.decoder.layers)
        keys = [[] for _ in range(n_layers)]
        values = [[] for _ in range(n_layers)]
        chunks = _by_length(cuts, self.prefill_chunk)
        for members in chunks:
            chunk_k, chunk_v, _ = self._prefill_own([prefixes[i] for i in members], common_k, common_v, start)
            for layer in range(n_layers):
                keys[layer].append(F.pad(chunk_k[layer], (0, 0, 0, width - chunk_k[layer].shape[2])))
                values[layer].append(F.pad(chunk_v[layer], (0, 0, 0, width - chunk_v[layer].shape[2])))
        restore = _restore_order(chunks, self.device)
        empty = len(prefixes)  # the last row: no shared prefix
        return _Shared([F.pad(torch.cat(t).index_select(0, restore), (0, 0, 0, 0, 0, 0, 0, 1)) for t in keys],
                       [F.pad(torch.cat(t).index_select(0, restore), (0, 0, 0, 0, 0, 0, 0, 1)) for t in values],
                       torch.tensor([*cuts, 0], device=self.device),
                       torch.tensor([empty if g < 0 else g for g in group], device=self.device))

    def _kept_prefixes(self, prompts: list[torch.Tensor], common: int) -> _Shared | None:
        """The kept prompts (``reusing_prompts``) that these prompts extend, past the common prefix, as the
        shared prefixes their own parts continue; None when no prompt extends one."""
        found = [self._cache.longest(prompt) for prompt in prompts]
        found = [kept if kept is not None and len(kept.tokens) > common else None for kept in found]
        self._used = list({id(kept): kept for kept in found if kept is not None}.values())
        if not self._used:
            return None
        row = {id(kept): i for i, kept in enumerate(self._used)}
        cuts = [len(kept.tokens) - common for kept in self._used]
        width = max(cuts)
        self._cache.reused_tokens += sum(len(kept.tokens) - common for kept in found if kept is not None)

        def stack(which: str, layer: int) -> torch.Tensor:
            rows = [F.pad(getattr(kept, which)[layer][:, common:], (0, 0, 0, width - cut))
                    for kept, cut in zip(self._used, cuts)]
            return F.pad(torch.stack(rows), (0, 0, 0, 0, 0, 0, 0, 1))  # the last row: no prefix

        layers = range(len(self.decoder.layers))
        return _Shared([stack("keys", layer) for layer in layers], [stack("values", layer) for layer in layers],
                       torch.tensor([*cuts, 0], device=self.device),
                       torch.tensor([row[id(kept)] if kept is not None else len(cuts) for kept in found],
                                    device=self.device))

    def _keep(self, prompts: list[torch.Tensor], common_k, common_v, own_k, own_v, own_lengths: list[int]) -> None:
        """Keep every prompt's keys and values (``reusing_prompts``); settle the kept prompts it extended."""
        self._cache.settle(self._used)
        self._used = []
        for b, (prompt, n) in enumerate(zip(prompts, own_lengths)):
            keys = [torch.cat([*common_k[layer:layer + 1], own[b, :, :n]], dim=1) for layer, own in enumerate(own_k)]
            values = [torch.cat([*common_v[layer:layer + 1], own[b, :, :n]], dim=1)
                      for layer, own in enumerate(own_v)]
            self._cache.add(prompt, keys, values)


def _by_length(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices in chunks of at most ``size``, shortest first: a chunk is padded to its longest member, so
    chunking prompts of similar length wastes the least arithmetic (prompts in their own order did: a
    chunk mixing a database's 20-token suffixes with a 270-token prompt cost as much as eight of those)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[first:first + size] for first in range(0, len(order), size)]


def _restore_order(chunks: list[list[int]], device) -> torch.Tensor:
    """The index that puts rows concatenated chunk by chunk back in their original order."""
    return torch.argsort(torch.tensor([i for members in chunks for i in members], device=device))


def _eps(norm) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def _shared_groups(parts: Sequence[torch.Tensor], minimum: int):
    """Prompts whose own parts share a prefix of at least ``minimum`` tokens and half the shorter one:
    ``(group per part (-1: none), the first part of each group, each group's shared length)`` (the
    shared length leaves every part at least one token of its own), or None when no two share one."""
    tokens = [part.tolist() for part in parts]
    order = sorted(range(len(parts)), key=lambda i: tokens[i])
    group = [-1] * len(parts)
    heads: list[int] = []
    cuts: list[int] = []
    run = [order[0]] if order else []
    shared = 0

    def close():
        cut = min([shared] + [len(tokens[i]) - 1 for i in run])
        if len(run) > 1 and cut >= minimum:
            for i in run:
                group[i] = len(heads)
            heads.append(run[0])
            cuts.append(cut)

    for previous, current in zip(order, order[1:]):
        a, b = tokens[previous], tokens[current]
        same = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if same >= minimum and 2 * same >= min(len(a), len(b)):
            shared = same if len(run) == 1 else min(shared, same)
            run.append(current)
            continue
        close()
        run, shared = [current], 0
    if run:
        close()
    return (group, heads, cuts) if heads else None


def _common_prefix(prompts: Sequence[torch.Tensor]) -> int:
    """Length of the longest token prefix shared by every prompt."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0][:shortest]
    length = shortest
    for other in prompts[1:]:
        same = (other[:shortest] == first)
        mismatch = torch.nonzero(~same)
        if len(mismatch):
            length = min(length, int(mismatch[0, 0]))
    return length
