"""Score rollouts with a model: per-token log-probs (and entropies) aligned with the completion.

Every on-policy stage re-scores what the sampler drew: the policy (with gradients) for the
importance ratio, a frozen reference for the KL, a teacher for distillation. This is the one
place that lines a forward pass up with ``Rollouts``: the hidden state that predicts completion
token ``t`` of row ``i`` follows the row's ``n_i`` real prompt tokens, at position
``n_i - 1 + t``.

The rows are right-aligned first (:func:`~lit_qwen3.ops.training_forward.right_align`): prompt
padding moves to the end, so the causal forward needs no mask, and positions are ``0..`` as
the sampler's were. Full logits are never built: the forward keeps the last hidden states
(:func:`~lit_qwen3.ops.training_forward.causal_hidden_states`) and
:func:`~lit_qwen3.ops.logprobs.chunked_logprobs_and_entropy` computes log-probs and entropies from
them chunk by chunk (memory ``chunk x V`` instead of ``B x T x V``, in backward too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lit_qwen3.ops.logprobs import IGNORE_INDEX, chunked_logprobs_and_entropy
from lit_qwen3.ops.training_forward import causal_hidden_states, final_norm, right_align
from lit_qwen3.rollout.generation import Rollouts

__all__ = [
    "CompletionScores",
    "completion_hidden_states",
    "final_norm",
    "score_completions",
]


@dataclass
class CompletionScores:
    """(B, T) tensors aligned with ``Rollouts.completion_ids``; 0 on padding."""

    logprobs: Tensor
    entropy: Tensor


def completion_hidden_states(
    model: torch.nn.Module, rollouts: Rollouts, *, compile: bool = False
) -> Tensor:
    """(B, T, H) last hidden states that predict each completion token."""
    length = rollouts.completion_ids.shape[1]
    aligned = right_align(rollouts.sequences(), rollouts.attention_mask())
    prompt_lengths = rollouts.prompt_mask.sum(-1)
    real = prompt_lengths + rollouts.completion_mask.sum(-1)
    hidden = causal_hidden_states(model, aligned, real, compile=compile)
    index = prompt_lengths[:, None] - 1 + torch.arange(length, device=hidden.device)[None]
    return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))


def score_completions(
    model: torch.nn.Module,
    rollouts: Rollouts,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    chunk_size: int = 1024,
    compile: bool = False,
) -> CompletionScores:
    """Log-probs of the completion tokens under ``model`` and its entropies, at ``temperature``
    and truncated by ``top_k`` / ``top_p`` / ``min_p`` (the sampler's, so ratios compare like
    with like: each token's log-prob under the distribution it was drawn from, see
    :func:`~lit_qwen3.ops.logprobs.chunked_logprobs_and_entropy`; entropies untruncated).
    Gradients flow when enabled. ``compile``: run a plain Qwen3 forward through
    ``torch.compile``."""
    hidden = completion_hidden_states(model, rollouts, compile=compile)
    head = model.get_output_embeddings()
    labels = rollouts.completion_ids.masked_fill(~rollouts.completion_mask.bool(), IGNORE_INDEX)
    logprobs, entropy = chunked_logprobs_and_entropy(
        hidden,
        head.weight,
        labels,
        bias=getattr(head, "bias", None),
        temperature=temperature,
        chunk_size=chunk_size,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
    )
    return CompletionScores(logprobs, entropy * rollouts.completion_mask)
