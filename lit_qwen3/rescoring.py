"""Score rollouts with a model: per-token log-probs (and entropies) aligned with the completion.

Every on-policy stage re-scores what the sampler drew: the policy (with gradients) for the
importance ratio, a frozen reference for the KL, a teacher for distillation. This is the one
place that lines a forward pass up with ``Rollouts``: the logits that predict completion token
``t`` sit at position ``P - 1 + t`` of ``prompt + completion``, with the sampler's own position
ids (left padding shifts them).

Full logits are never built: the model runs with ``logits_to_keep=1`` while a hook on its final
norm keeps the last hidden states, and :func:`~lit_qwen3.logprobs.chunked_logprobs_and_entropy`
computes log-probs and entropies from them chunk by chunk (memory ``chunk x V`` instead of
``B x T x V``, in backward too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lit_qwen3.generation import Rollouts
from lit_qwen3.logprobs import IGNORE_INDEX, chunked_logprobs_and_entropy

__all__ = [
    "CompletionScores",
    "completion_hidden_states",
    "last_hidden_states",
    "score_completions",
]


@dataclass
class CompletionScores:
    """(B, T) tensors aligned with ``Rollouts.completion_ids``; 0 on padding."""

    logprobs: Tensor
    entropy: Tensor


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
    """(B, L, H) final hidden states of ``input_ids`` (``attention_mask``, ``position_ids`` as
    for the model), without computing the logits of more than one position."""
    with _capture_output(final_norm(model)) as captured:
        model(input_ids=input_ids, use_cache=False, logits_to_keep=1, **kwargs)
    (hidden,) = captured
    return hidden


def completion_hidden_states(model: torch.nn.Module, rollouts: Rollouts) -> Tensor:
    """(B, T, H) last hidden states that predict each completion token."""
    width = rollouts.prompt_ids.shape[1]
    length = rollouts.completion_ids.shape[1]
    hidden = last_hidden_states(
        model,
        rollouts.sequences(),
        attention_mask=rollouts.attention_mask(),
        position_ids=rollouts.position_ids(),
    )
    return hidden[:, width - 1 : width - 1 + length]


def score_completions(
    model: torch.nn.Module,
    rollouts: Rollouts,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> CompletionScores:
    """Log-probs of the completion tokens under ``model`` and its entropies, at ``temperature``
    (the sampler's, so ratios compare like with like). Gradients flow when enabled."""
    hidden = completion_hidden_states(model, rollouts)
    head = model.get_output_embeddings()
    labels = rollouts.completion_ids.masked_fill(~rollouts.completion_mask.bool(), IGNORE_INDEX)
    logprobs, entropy = chunked_logprobs_and_entropy(
        hidden,
        head.weight,
        labels,
        bias=getattr(head, "bias", None),
        temperature=temperature,
        chunk_size=chunk_size,
    )
    return CompletionScores(logprobs, entropy * rollouts.completion_mask)
