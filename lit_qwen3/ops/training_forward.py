"""The policy's training forward without avoidable work: no padding masks, no per-module overhead.

Re-scoring rollouts and SFT run a causal LM over padded rows. Three costs can go:

1. **Padding masks.** Left-padded prompts (the sampler's layout) force a 4D mask, and SDPA then
   leaves its causal kernel for a masked one. A causal model needs no mask when every row's
   padding sits at its end: real tokens never attend to later positions, so trailing pads change
   nothing a loss reads. :func:`right_align` moves each row's left padding to its end (positions
   become ``0..n-1``, as the sampler's were), and :func:`trailing_padding_only` tells when a
   batch's ``attention_mask`` can be dropped.
2. **Padding itself** (GPU): with ``flash_attention_2`` the rows are packed into one row with
   restarting ``position_ids`` (:func:`pack_rows`); transformers then runs flash-attn's
   variable-length kernel (``cu_seqlens``), so no compute is spent on padding. Without
   flash-attn the converse holds: a packed row (SFT's token-budget batches) would cost SDPA
   attention over the whole row under a T x T block mask (measured on an H200 at Qwen3-0.6B
   size, 16,384 tokens: 0.83 s of a 1.24 s step), so :func:`packed_hidden_states` unpacks
   its documents into right-padded rows and runs them causally, unmasked.
3. **Per-module Python overhead** at small sizes (the toy models on CPU): for a plain
   ``Qwen3ForCausalLM`` :func:`qwen3_hidden_states` runs the same operations as the Hugging Face
   forward, in the same order, on the model's own weights (identical results, tested), without
   module calls, output objects or mask building; ``compile=True`` runs it through
   ``torch.compile`` (dynamic shapes: one compilation serves every batch and length).

Anything else (other architectures, sharded or partitioned weights, hooks, adapters, activation
checkpointing) runs the model's own forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LENGTH_GROUP_RATIO",
    "UnpackedDocuments",
    "batch_hidden_states",
    "causal_hidden_states",
    "final_norm",
    "last_hidden_states",
    "lean_forward_supported",
    "pack_rows",
    "packed_hidden_states",
    "qwen3_hidden_states",
    "right_align",
    "trailing_padding_only",
    "unpack_documents",
]


#: Packed documents without flash-attn run in groups whose lengths differ by less than this
#: factor (:func:`packed_hidden_states`): more groups mean less padding but more forward calls.
LENGTH_GROUP_RATIO = 2.0


# ----------------------------------------------------------------------------- row layouts
def right_align(input_ids: Tensor, attention_mask: Tensor, pad_token_id: int = 0) -> Tensor:
    """Rows of ``input_ids`` shifted left past their leading padding (pads refilled at the end).

    ``attention_mask`` rows look like ``0..0 1..1 0..0`` (left-padded prompt, right-padded
    completion). Columns no row uses after the shift are dropped. Row ``i``'s token ``j``
    (counting real tokens from 0) ends up at column ``j``.
    """
    mask = attention_mask.bool()
    shift = (~mask).long().cumprod(-1).sum(-1)  # leading pads per row
    width = input_ids.shape[1] - int(shift.min()) if len(shift) else input_ids.shape[1]
    columns = torch.arange(width, device=input_ids.device)[None] + shift[:, None]
    inside = columns < input_ids.shape[1]
    index = columns.clamp(max=input_ids.shape[1] - 1)
    ids = input_ids.gather(1, index)
    keep = inside & mask.gather(1, index)
    return ids.masked_fill(~keep, pad_token_id)


def trailing_padding_only(attention_mask: Tensor) -> bool:
    """True when every row is ``1..1 0..0``: then a causal model needs no mask at all."""
    mask = attention_mask.bool()
    return bool((mask[:, 1:] <= mask[:, :-1]).all()) and bool(mask[:, 0].all())


def pack_rows(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Right-aligned rows as one row: ``(ids (1, N), position_ids (1, N), mask (B, T))``.

    ``mask`` (bool) marks where each packed token came from, so ``out[mask] = packed[0]`` puts
    per-token results back in rows. Positions restart at every row (transformers reads this as
    separate sequences: flash-attn's varlen kernel, or a block-causal mask for SDPA).
    """
    mask = attention_mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return input_ids[mask][None], positions[mask][None], mask


class UnpackedDocuments(NamedTuple):
    """Packed rows' documents as right-padded rows: ``rows[document, offset]`` holds packed
    token ``i``, with ``document[i]`` and ``offset[i]`` over the packed tokens in order."""

    rows: Tensor
    lengths: Tensor
    document: Tensor
    offset: Tensor


def unpack_documents(
    input_ids: Tensor, position_ids: Tensor, pad_token_id: int = 0
) -> UnpackedDocuments:
    """The documents of packed rows (``position_ids`` restart at 0 at each document, and every
    row starts one) as right-padded rows, the inverse of :func:`pack_rows`."""
    if position_ids.shape != input_ids.shape:
        raise ValueError(
            f"position_ids {tuple(position_ids.shape)} must match input_ids "
            f"{tuple(input_ids.shape)}"
        )
    starts = position_ids == 0
    starts[:, 0] = True
    starts = starts.reshape(-1)
    document = starts.long().cumsum(0) - 1
    first = torch.nonzero(starts).squeeze(1)
    offset = torch.arange(len(starts), device=starts.device) - first[document]
    lengths = torch.diff(first, append=first.new_tensor([len(starts)]))
    rows = input_ids.new_full((len(first), int(lengths.max())), pad_token_id)
    rows[document, offset] = input_ids.reshape(-1)
    return UnpackedDocuments(rows, lengths, document, offset)


# ----------------------------------------------------------------------------- the lean forward
def _plain_tensor(p: Tensor) -> bool:
    return (
        type(p) is torch.nn.Parameter and type(p.data) is torch.Tensor and not hasattr(p, "ds_id")
    )


def _checkpointing(model: torch.nn.Module) -> bool:
    # transformers 5 names it activation checkpointing (the old name warns)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if isinstance(getattr(type(model), name, None), property):
            return bool(getattr(model, name))
    return False


def lean_forward_supported(model: torch.nn.Module) -> bool:
    """Whether :func:`qwen3_hidden_states` computes exactly what ``model``'s forward does."""
    from transformers import Qwen3ForCausalLM

    if type(model) is not Qwen3ForCausalLM:
        return False
    config = model.config
    layer_types = getattr(config, "layer_types", None) or []
    plain_config = (
        getattr(config, "_attn_implementation", None) == "sdpa"
        and not getattr(config, "attention_bias", False)
        and config.hidden_act == "silu"
        and all(kind == "full_attention" for kind in layer_types)
        and getattr(model.model.rotary_emb, "rope_type", "default") == "default"
        and not _checkpointing(model)
    )
    return (
        plain_config
        and all(_plain_tensor(p) for p in model.parameters())
        and all(
            not (m._forward_hooks or m._forward_pre_hooks)
            and (type(m) is not torch.nn.Linear or m.bias is None)
            and (type(m) is not torch.nn.Dropout or m.p == 0)
            for m in model.modules()
        )
        and all(
            type(getattr(block, name)) is torch.nn.Linear
            for layer in model.model.layers
            for block, names in (
                (layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                (layer.mlp, ("gate_proj", "up_proj", "down_proj")),
            )
            for name in names
        )
    )


def _rms_norm(x: Tensor, norm: torch.nn.Module) -> Tensor:
    # Qwen3RMSNorm: float32 statistics, the weight applied in the input's dtype
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x32.to(dtype)


def qwen3_hidden_states(model: Any, input_ids: Tensor) -> Tensor:
    """(B, T, H) last hidden states (after the final norm) of a plain ``Qwen3ForCausalLM`` on
    right-padded rows: positions ``0..T-1``, causal attention, no mask."""
    inner, config = model.model, model.config
    batch, length = input_ids.shape
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    half = dim // 2
    hidden = F.embedding(input_ids, inner.embed_tokens.weight)
    positions = torch.arange(length, device=input_ids.device)[None]
    cos, sin = inner.rotary_emb(hidden, positions)
    cos, sin = cos[:, None], sin[:, None]  # (1, 1, T, D)
    for layer in inner.layers[: config.num_hidden_layers]:
        attn, mlp = layer.self_attn, layer.mlp
        x = _rms_norm(hidden, layer.input_layernorm)
        q = _rms_norm(F.linear(x, attn.q_proj.weight).view(batch, length, heads, dim), attn.q_norm)
        k = _rms_norm(
            F.linear(x, attn.k_proj.weight).view(batch, length, kv_heads, dim), attn.k_norm
        )
        v = F.linear(x, attn.v_proj.weight).view(batch, length, kv_heads, dim).transpose(1, 2)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q = q * cos + torch.cat([-q[..., half:], q[..., :half]], dim=-1) * sin
        k = k * cos + torch.cat([-k[..., half:], k[..., :half]], dim=-1) * sin
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=attn.scaling, enable_gqa=heads != kv_heads
        )
        out = out.transpose(1, 2).reshape(batch, length, heads * dim)
        hidden = hidden + F.linear(out, attn.o_proj.weight)
        x = _rms_norm(hidden, layer.post_attention_layernorm)
        gated = F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight)
        hidden = hidden + F.linear(gated, mlp.down_proj.weight)
    return _rms_norm(hidden, inner.norm)


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def _compiled_hidden_states() -> Callable[..., Tensor]:
    if "qwen3" not in _COMPILED:
        _COMPILED["qwen3"] = torch.compile(qwen3_hidden_states, dynamic=True)
    return _COMPILED["qwen3"]


# ----------------------------------------------------------------------------- dispatch
def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is the last hidden state (``model.model.norm`` for Qwen3, Llama,
    Mistral, Gemma...)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    norm = getattr(decoder, "norm", None)
    if not isinstance(norm, torch.nn.Module):
        raise TypeError(
            f"{type(model).__name__}: cannot find the final norm of its decoder "
            "(expected `model.get_decoder().norm`), so its hidden states cannot be re-scored"
        )
    return norm


@contextmanager
def _capture_output(module: torch.nn.Module) -> Iterator[list[Tensor]]:
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


def last_hidden_states(model: torch.nn.Module, input_ids: Tensor, **kwargs: Any) -> Tensor:
    """(B, L, H): the model's own forward (``attention_mask``, ``position_ids`` as for the
    model), keeping only the final norm's output (``logits_to_keep=1``: the caller computes what
    it needs from hidden states, never B x T x V logits)."""
    with _capture_output(final_norm(model)) as captured:
        model(input_ids=input_ids, use_cache=False, logits_to_keep=1, **kwargs)
    (hidden,) = captured
    return hidden


def uses_flash_attention(model: torch.nn.Module) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == "flash_attention_2"


def causal_hidden_states(
    model: torch.nn.Module,
    input_ids: Tensor,
    lengths: Tensor | None = None,
    *,
    compile: bool = False,
    packed: bool | None = None,
) -> Tensor:
    """(B, T, H) last hidden states of right-padded rows (row ``i`` real for ``lengths[i]``).

    Plain Qwen3 models take :func:`qwen3_hidden_states` (compiled when asked); models on
    flash-attn are packed into one row when ``lengths`` are given (no padding computed; ``packed``
    forces it on or off); others run their own forward with no mask. Hidden states at padding
    positions are unspecified.
    """
    if packed is None:
        packed = lengths is not None and uses_flash_attention(model)
    if not packed and lean_forward_supported(model):
        forward = _compiled_hidden_states() if compile else qwen3_hidden_states
        return forward(model, input_ids)
    if packed:
        if lengths is None:
            raise ValueError("packed rows need each row's length")
        columns = torch.arange(input_ids.shape[1], device=input_ids.device)
        mask = columns[None] < lengths[:, None]
        ids, positions, mask = pack_rows(input_ids, mask)
        packed = last_hidden_states(model, ids, position_ids=positions)
        out = packed.new_zeros(*input_ids.shape, packed.shape[-1])
        out[mask] = packed[0]
        return out
    return last_hidden_states(model, input_ids)


def packed_hidden_states(
    model: torch.nn.Module, input_ids: Tensor, position_ids: Tensor, *, compile: bool = False
) -> Tensor:
    """(B, N, H) last hidden states of packed rows, each document attending to itself only.

    flash-attn runs the packed rows as they are (variable-length kernels); any other attention
    gets the documents as right-padded rows (:func:`unpack_documents`), causal and unmasked, so
    no attention spans the whole packed row. Documents run in groups of similar length (within
    a factor of :data:`LENGTH_GROUP_RATIO`), so one long document does not pad every short one
    to its length: padding adds at most that factor to any document's cost.
    """
    if uses_flash_attention(model):
        return last_hidden_states(model, input_ids, position_ids=position_ids)
    docs = unpack_documents(input_ids, position_ids)
    groups = (docs.lengths.double().log() / math.log(LENGTH_GROUP_RATIO)).floor().long()
    token_groups = groups[docs.document]
    row_in_group = torch.empty_like(docs.lengths)
    parts, order = [], []
    for group in groups.unique().tolist():
        members = torch.nonzero(groups == group).squeeze(1)
        lengths = docs.lengths[members]
        rows = docs.rows[members, : int(lengths.max())]
        hidden = causal_hidden_states(model, rows, lengths, compile=compile, packed=False)
        row_in_group[members] = torch.arange(len(members), device=members.device)
        tokens = torch.nonzero(token_groups == group).squeeze(1)  # in packed order
        parts.append(hidden[row_in_group[docs.document[tokens]], docs.offset[tokens]])
        order.append(tokens)
    flat = torch.cat(parts)[torch.argsort(torch.cat(order))]
    return flat.reshape(*input_ids.shape, flat.shape[-1])


def batch_hidden_states(model: torch.nn.Module, input_ids: Tensor, **kwargs: Any) -> Tensor:
    """(B, T, H) last hidden states of an SFT batch: packed documents (``position_ids`` alone)
    through :func:`packed_hidden_states`, anything else through the model's own forward."""
    if kwargs.keys() == {"position_ids"}:
        return packed_hidden_states(model, input_ids, kwargs["position_ids"])
    return last_hidden_states(model, input_ids, **kwargs)
