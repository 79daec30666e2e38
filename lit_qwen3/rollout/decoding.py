"""The model side of the rollout sampler: a KV cache sized once, masks built once, one step;
prompts that repeat in a batch (a GRPO group's) are prefilled once.

``ModelStepper`` runs any Hugging Face causal LM's own forward one token at a time. That forward
is bound by per-op and per-module overhead rather than arithmetic (Python on the toy models on
CPU; kernel launches on a GPU: 31 ms a token for Qwen3-0.6B on an H200), so plain
``Qwen3ForCausalLM`` models decode through ``Qwen3DecodeStep``, the same operations in the same
order on the same weights and cache (on that GPU: 2.8x faster rollouts, and the compiled step
4x faster again on the toy teacher).
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import transformers
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from lit_qwen3.rollout.sampling import (
    BudgetRows,
    BudgetRules,
    BudgetState,
    budget_advance,
    budget_next_forced,
    counter_uniform,
    sample_next_tokens,
)

__all__ = ["DecodeSpec", "DecodedSteps", "ModelStepper", "PreallocatedLayer", "Qwen3DecodeStep"]

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def _full_attention(config: Any) -> bool:
    """Every layer attends to the whole past (no sliding windows): one mask fits all layers."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return all(kind == "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is None


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes into buffers sized once instead of ``torch.cat`` per step.

    ``DynamicCache`` copies the whole cache at every step (quadratic in the length); here each
    step copies only the new token's keys and values, and attention reads a view.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, dim = key_states.shape
        self.device = key_states.device
        # zeros, not empty: a step that attends over the whole cache with a mask must never
        # read NaN garbage (0 x NaN is NaN even where the mask gives weight 0)
        self._keys = key_states.new_zeros((batch, heads, self.capacity, dim))
        self._values = value_states.new_zeros((batch, heads, self.capacity, value_states.shape[-1]))
        self.keys, self.values = self._keys[:, :, :0], self._values[:, :, :0]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} tokens)")
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys = self._keys[:, :, : self.length]
            self.values = self._values[:, :, : self.length]

    def reset(self) -> None:
        self.length = 0
        if self.is_initialized:
            self.keys, self.values = self._keys[:, :, :0], self._values[:, :, :0]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("the sampler's KV cache is never cropped")


class ModelStepper:
    """The model's own forward, one step at a time on a KV cache, with little bookkeeping.

    Positions come from the left-padded mask as ``model.generate`` computes them. With
    transformers 5 and SDPA attention, the 4D boolean mask SDPA wants is built once and sliced
    per step (transformers passes a prepared 4D mask through); otherwise the 2D mask is passed
    and the model builds its own. Full-attention cache layers are preallocated.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        prompt_mask: torch.Tensor,
        capacity: int,
        fast_path: bool = True,
        compile: bool = False,
    ) -> None:
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep_last = "logits_to_keep" in params
        config = getattr(model, "config", None)
        batch, self.width = prompt_mask.shape
        self.mask = torch.ones(
            (batch, capacity), dtype=prompt_mask.dtype, device=prompt_mask.device
        )
        self.mask[:, : self.width] = prompt_mask
        attn = getattr(config, "_attn_implementation", None)
        self.bool_mask = _TRANSFORMERS_MAJOR >= 5 and attn == "sdpa" and _full_attention(config)
        self.mask4d = self.mask.bool()[:, None, None, :] if self.bool_mask else None
        self.positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = self.positions[:, -1:] + 1
        self.length = self.width
        try:
            self.cache = DynamicCache(config=config)
        except TypeError:  # transformers 4.x
            self.cache = DynamicCache()
        layers = getattr(self.cache, "layers", None)
        if layers:
            self.cache.layers = [
                PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
                for layer in layers
            ]
        self.fast = Qwen3DecodeStep.build(model, self.cache, capacity) if fast_path else None
        if self.fast is not None and not self.bool_mask:
            self.fast = None
        #: compiled lean steps attend over the whole (fixed-size) cache: static shapes
        self.static = compile and self.fast is not None

    def _call(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: Any):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=True,
            **{self.cache_kw: self.cache},
            **extra,
        )
        return out.logits[:, -1, :]

    def prefill(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after each prompt. Identical prompts (a GRPO group's rollouts) run
        once and their keys and values are copied to every row that repeats them."""
        mask = self.mask[:, : self.width]
        rows, copies = _distinct_rows(prompt_ids, mask) if self._can_share() else (None, None)
        positions = self.positions if rows is None else self.positions[rows]
        extra: dict[str, Any] = {"position_ids": positions}
        if self.keep_last:
            extra["logits_to_keep"] = 1
        if rows is None:
            return self._call(prompt_ids, mask, **extra)
        logits = self._call(prompt_ids[rows], mask[rows], **extra)
        self.cache.batch_select_indices(copies)
        return logits[copies]

    def _can_share(self) -> bool:
        """Whether the cache can be prefilled for distinct prompts, then copied row by row: a
        Hugging Face model (whose only state between calls is the cache) with plain layers."""
        layers = getattr(self.cache, "layers", None)
        return (
            isinstance(self.model, transformers.PreTrainedModel)
            and bool(layers)
            and all(type(layer) is PreallocatedLayer for layer in layers)
        )

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.static:
            return self._static_call(compiled_static_step(), tokens)
        self.length += 1
        if self.bool_mask:
            mask = self.mask4d[..., : self.length]
        else:
            mask = self.mask[:, : self.length]
        if self.fast is not None:
            logits = self.fast.step(tokens, self.next_position[:, 0], mask)
        else:
            logits = self._call(tokens[:, None], mask, position_ids=self.next_position)
        self.next_position = self.next_position + 1
        return logits

    def sample_steps(
        self,
        tokens: torch.Tensor,
        streams: torch.Tensor,
        counter: int,
        steps: int,
        valid: int,
        alive: torch.Tensor,
        eos: torch.Tensor | None,
        budget: BudgetState | None,
        **sampling: Any,
    ) -> DecodedSteps:
        """``steps`` tokens per row from one compiled call (only when :attr:`static`), as
        :meth:`decode` then :func:`~lit_qwen3.rollout.sampling.sample_next_tokens` would draw them one
        by one: see :func:`static_sample_steps`. ``streams`` (B,) are the rows' seeds,
        ``counter`` the first draw's index in their streams, ``valid`` how many of the steps
        the run still wants; ``budget`` (None when no row has one) is read, not changed;
        ``sampling``: the draw's keyword options."""
        device = streams.device
        return self._static_call(
            compiled_sample_steps(),
            tokens,
            streams,
            torch.tensor(counter, device=device),
            torch.tensor(valid, device=device),
            alive,
            eos,
            None if budget is None else budget.rows,
            None if budget is None else budget.rules,
            tuple(sorted(sampling.items())),
            steps,
            steps=steps,
        )

    def _static_call(self, compiled: Any, tokens: torch.Tensor, *extra: Any, steps: int = 1) -> Any:
        """A compiled fixed-shape call of ``steps`` decode steps: the new keys and values go to
        the next cache columns, then the cache views, length and positions advance."""
        column = torch.full((1,), self.length, device=tokens.device)
        self.length += steps
        fast = self.fast
        out = compiled(
            fast.weights,
            fast.buffers(),
            fast.spec,
            fast.cos,
            fast.sin,
            tokens,
            self.next_position[:, 0],
            self.mask4d,
            column,
            *extra,
        )
        fast.advance(self.length)
        self.next_position = self.next_position + steps
        return out

    def select(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.mask, self.next_position = self.mask[index], self.next_position[index]
        if self.bool_mask:
            self.mask4d = self.mask.bool()[:, None, None, :]


class DecodeSpec(NamedTuple):
    """The constants of a decode graph (Python values: ``torch.compile`` bakes them in)."""

    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    scaling: float


class Qwen3DecodeStep:
    """One decode step of a plain ``Qwen3ForCausalLM`` (every weight on one device, in one
    dtype), as few ops as possible.

    The Hugging Face forward is bound by per-op and per-module overhead, not arithmetic, at
    toy sizes on CPU and at Qwen3-0.6B size on a GPU; this step runs the same operations in the same order on the model's own
    weights and KV cache (so logits match the HF forward), without module calls, output
    objects, mask building or per-step rotary tables. Each layer's query/key/value projections
    and its gate/up projections run as one matrix product each, on weights concatenated when
    the step is built (once per ``sample`` call: the weights do not change while it samples).
    Anything else (other architectures, mixed devices or dtypes, hooks, adapters, sharded or
    quantised weights) uses the HF forward.

    The compiled steps (:func:`static_step`, :func:`static_sample_steps`) are module functions
    of plain tensors and Python constants, so that ``torch.compile``'s per-call guards check a
    few dozen tensors rather than walk the model's modules.
    """

    def __init__(self, model: Any, caches: list[PreallocatedLayer], capacity: int) -> None:
        inner, config = model.model, model.config
        layers = list(inner.layers[: config.num_hidden_layers])
        self.caches = caches
        heads = config.num_attention_heads
        self.spec = DecodeSpec(
            heads=heads,
            kv_heads=config.num_key_value_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            eps=inner.norm.variance_epsilon,
            scaling=layers[0].self_attn.scaling,
        )
        with torch.no_grad():
            self.weights = (
                inner.embed_tokens.weight,
                inner.norm.weight,
                model.lm_head.weight,
                tuple(_layer_weights(layer) for layer in layers),
            )
        position = torch.arange(capacity, device=model.lm_head.weight.device)[None]
        cos, sin = inner.rotary_emb(model.lm_head.weight[:1][None], position)
        self.cos, self.sin = cos[0], sin[0]  # (capacity, head_dim), as the HF forward computes

    @classmethod
    def build(cls, model: Any, cache: Any, capacity: int) -> Qwen3DecodeStep | None:
        from transformers import Qwen3ForCausalLM

        if type(model) is not Qwen3ForCausalLM:
            return None
        config = model.config
        plain_config = (
            getattr(config, "_attn_implementation", None) == "sdpa"
            and not getattr(config, "attention_bias", False)
            and config.hidden_act == "silu"
            and _full_attention(config)
            and getattr(model.model.rotary_emb, "rope_type", "default") != "dynamic"
        )
        caches = getattr(cache, "layers", [])
        norms = [m for m in model.modules() if hasattr(m, "variance_epsilon")]
        plain_model = (
            all(type(c) is PreallocatedLayer for c in caches)
            and len(caches) == config.num_hidden_layers
            and len({m.variance_epsilon for m in norms}) == 1
            and len({(p.device, p.dtype) for p in model.parameters()}) == 1
            and all(type(p.data) is torch.Tensor for p in model.parameters())
            and all(
                not (m._forward_hooks or m._forward_pre_hooks)
                and (type(m) is not torch.nn.Linear or m.bias is None)
                for m in model.modules()
            )
            and all(
                type(getattr(layer.self_attn, name)) is torch.nn.Linear
                for layer in model.model.layers
                for name in ("q_proj", "k_proj", "v_proj", "o_proj")
            )
            and all(
                type(getattr(layer.mlp, name)) is torch.nn.Linear
                for layer in model.model.layers
                for name in ("gate_proj", "up_proj", "down_proj")
            )
        )
        return cls(model, caches, capacity) if plain_config and plain_model else None

    def step(
        self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, V) of the next token after ``tokens`` (B,) at ``positions`` (B,)."""
        caches = self.caches

        def write(layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[Any, Any]:
            return caches[layer].update(keys, values)

        cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]
        return decode_logits(self.weights, self.spec, tokens, cos, sin, mask, write)

    def buffers(self) -> tuple[torch.Tensor, ...]:
        """Every layer's full-capacity key and value buffers, in layer order."""
        return tuple(t for cache in self.caches for t in (cache._keys, cache._values))

    def advance(self, length: int) -> None:
        """Record that the caches now hold ``length`` columns (after :func:`static_step`)."""
        for cache in self.caches:
            cache.length = length
            cache.keys, cache.values = cache._keys[:, :, :length], cache._values[:, :, :length]


def _layer_weights(layer: Any) -> tuple[torch.Tensor, ...]:
    attn, mlp = layer.self_attn, layer.mlp
    return (
        layer.input_layernorm.weight,
        torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
        attn.q_norm.weight,
        attn.k_norm.weight,
        attn.o_proj.weight,
        layer.post_attention_layernorm.weight,
        torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
        mlp.down_proj.weight,
    )


def decode_logits(
    weights: tuple[Any, ...],
    spec: DecodeSpec,
    tokens: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    write: Any,
) -> torch.Tensor:
    """Logits (B, V) of one decode step through every layer. ``cos``/``sin`` (B, 1, D) are the
    tokens' rotary tables; ``write(layer, keys, values)`` stores the new keys and values in that
    layer's cache and returns what attention reads."""
    embed, norm, head, layers = weights
    batch, (heads, kv_heads, dim, eps, scaling) = tokens.shape[0], spec
    half, q_width, k_width = dim // 2, heads * dim, kv_heads * dim
    hidden = F.embedding(tokens, embed)
    width = (hidden.shape[-1],)
    for index, (ln1, qkv, q_norm, k_norm, o_proj, ln2, gate_up, down) in enumerate(layers):
        x = F.linear(F.rms_norm(hidden, width, ln1, eps), qkv)
        q = F.rms_norm(x[:, :q_width].view(batch, heads, dim), (dim,), q_norm, eps)
        k = F.rms_norm(
            x[:, q_width : q_width + k_width].view(batch, kv_heads, dim), (dim,), k_norm, eps
        )
        v = x[:, q_width + k_width :].reshape(batch, kv_heads, 1, dim)
        qk = torch.cat([q, k], dim=1)
        qk = qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin
        keys, values = write(index, qk[:, heads:, None, :], v)
        query = qk[:, :heads].reshape(batch, kv_heads, heads // kv_heads, dim)
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling)
        hidden = hidden + F.linear(out.reshape(batch, heads * dim), o_proj)
        gate, up = F.linear(F.rms_norm(hidden, width, ln2, eps), gate_up).chunk(2, dim=-1)
        hidden = hidden + F.linear(F.silu(gate) * up, down)
    return F.linear(F.rms_norm(hidden, width, norm, eps), head)


def static_step(
    weights: tuple[Any, ...],
    buffers: tuple[torch.Tensor, ...],
    spec: DecodeSpec,
    cos: torch.Tensor,
    sin: torch.Tensor,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor,
    column: torch.Tensor,
) -> torch.Tensor:
    """:func:`decode_logits` with fixed shapes, for ``torch.compile``: the new keys and values
    go to column ``column`` (a 1-element tensor) of the full-capacity ``buffers`` (each layer's
    keys, then values); attention reads whole buffers with ``mask`` (B, 1, 1, capacity) cut at
    that column. ``cos``/``sin``: (capacity, D) rotary tables, indexed by ``positions`` (B,)."""
    visible = mask & (torch.arange(mask.shape[-1], device=mask.device) <= column)

    def write(layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[Any, Any]:
        key_buffer, value_buffer = buffers[2 * layer], buffers[2 * layer + 1]
        key_buffer.index_copy_(2, column, keys)
        value_buffer.index_copy_(2, column, values)
        return key_buffer, value_buffer

    cos, sin = cos[positions][:, None, :], sin[positions][:, None, :]
    return decode_logits(weights, spec, tokens, cos, sin, visible, write)


class DecodedSteps(NamedTuple):
    """What :func:`static_sample_steps` returns: (B, k) columns, one per step, then the state
    after the last valid step."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    sampling_logprobs: torch.Tensor
    alive: torch.Tensor  # each row's alive flag when the step's token was drawn
    forced: torch.Tensor | None  # None without a budget
    alive_after: torch.Tensor  # (B,)
    budget: BudgetRows | None


def static_sample_steps(
    weights: tuple[Any, ...],
    buffers: tuple[torch.Tensor, ...],
    spec: DecodeSpec,
    cos: torch.Tensor,
    sin: torch.Tensor,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor,
    column: torch.Tensor,
    streams: torch.Tensor,
    counter: torch.Tensor,
    valid: torch.Tensor,
    alive: torch.Tensor,
    eos: torch.Tensor | None,
    budget: BudgetRows | None,
    rules: BudgetRules | None,
    sampling: tuple[tuple[str, Any], ...],
    steps: int,
) -> DecodedSteps:
    """``steps`` :func:`static_step` calls and the draws from their logits in one graph, each
    step's tokens feeding the next: the draw's small ops fuse into a few kernels, and guards,
    the wrapper and the sampler's bookkeeping are paid once per ``steps`` tokens. Per step, as
    the sampler's loop does it token by token: the budget's forced tokens (``budget`` rows
    under ``rules``; None without a budget), the draw (uniform ``counter + i`` of each row's
    stream), rows ending on ``eos`` (None: rows never end), the budget's advance. Only the first ``valid`` (0-dim) steps change ``alive`` and the budget:
    the last call of a run may decode past ``max_new_tokens``, and those tokens are dropped."""
    columns = []
    for i in range(steps):
        forcing = forced_ids = None
        if budget is not None:
            stepped, forcing, forced_ids = budget_next_forced(budget, rules)
        logits = static_step(
            weights, buffers, spec, cos, sin, tokens, positions + i, mask, column + i
        )
        draw = sample_next_tokens(
            logits,
            forced_tokens=forced_ids,
            forced=forcing,
            uniforms=counter_uniform(streams, counter + i),
            **dict(sampling),
        )
        tokens, logprobs, sampling_logprobs = draw.tokens, draw.logprobs, draw.sampling_logprobs
        columns.append((tokens, logprobs, sampling_logprobs, alive, forcing))
        live = valid > i
        ended = alive if eos is None else alive & ~torch.isin(tokens, eos)
        if budget is not None:
            stepped = budget_advance(stepped, rules, tokens, forcing, ended)
            budget = BudgetRows(
                *(torch.where(live, a, b) for a, b in zip(stepped, budget, strict=True))
            )
        alive = torch.where(live, ended, alive)
    stacked = [None if c[0] is None else torch.stack(c, dim=1) for c in zip(*columns, strict=True)]
    return DecodedSteps(*stacked, alive, budget)


_COMPILED: dict[str, Any] = {}
#: Inductor options of the decode steps: a C++ wrapper calls their ~30 kernels per token
#: (a Python one costs about a third of a toy step).
_DECODE = {"cpp_wrapper": True}


def compiled_static_step() -> Any:
    """:func:`static_step` through ``torch.compile`` (compiled once per process)."""
    if "static_step" not in _COMPILED:
        _COMPILED["static_step"] = torch.compile(static_step, options=_DECODE)
    return _COMPILED["static_step"]


def compiled_sample_steps() -> Any:
    """:func:`static_sample_steps` through ``torch.compile`` (once per process and ``steps``)."""
    if "static_sample_steps" not in _COMPILED:
        _COMPILED["static_sample_steps"] = torch.compile(static_sample_steps, options=_DECODE)
    return _COMPILED["static_sample_steps"]


def _distinct_rows(
    prompt_ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(one row index per distinct prompt, each row's index into those), or (None, None) when
    every row differs. Rows match when both their ids and their padding match."""
    keys = torch.cat([prompt_ids, mask.to(prompt_ids.dtype)], dim=1)
    distinct, copies = torch.unique(keys, dim=0, return_inverse=True)
    if len(distinct) == len(keys):
        return None, None
    first = torch.full((len(distinct),), len(keys), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, copies, torch.arange(len(keys), device=keys.device), "amin")
    return first, copies
