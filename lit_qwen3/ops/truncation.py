"""The sampler's truncated support (top-k, top-p, min-p), one rule for the sampler and the trainer.

RL's importance ratio, truncated importance sampling and the KL estimators read the log-prob of
each sampled token under the distribution it was drawn from. When the sampler truncates, that is
the tempered policy renormalised over the kept support, not ``log_softmax(logits / T)``: using
the latter biases the gradient (huggingface/trl#6789). The sampler
(:mod:`lit_qwen3.rollout.sampling`) and the trainer's log-probs
(:func:`~lit_qwen3.ops.logprobs.chunked_logprobs_and_entropy`,
:func:`~lit_qwen3.ops.logprobs.truncated_logprobs`) both call :func:`kept_threshold` here, so
they keep the same tokens.

The kept support of a row of tempered scores ``z`` is ``z >= threshold``, one number per row:
Hugging Face's warper order (top-k, then top-p on the top-k distribution renormalised, then
min-p), with ties at a boundary all kept (as ``TopKLogitsWarper`` and vLLM do for top-k). Ties
change nothing for top-p's cut (tied entries carry equal mass whatever their order), so the
threshold does not depend on how a sort orders them, and a backward pass can rebuild the mask
from one float per row instead of storing ``tokens x vocab`` booleans.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SORT_ROWS", "kept_threshold", "truncates"]

#: Rows sorted at once when top-p runs without top-k (a sort holds values and int64 indices).
SORT_ROWS = 128


def truncates(
    vocab_size: int | None, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> bool:
    """Whether these settings cut any token of a ``vocab_size`` vocabulary (None: unknown,
    counts top-k as cutting); raises on settings out of range, naming the one at fault."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"min_p must be in [0, 1), got {min_p!r}")
    cuts_k = top_k > 0 and (vocab_size is None or top_k < vocab_size)
    return cuts_k or top_p < 1.0 or min_p > 0.0


def kept_threshold(
    scores: Tensor, *, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> Tensor | None:
    """(N, 1) lowest score each row keeps: the support is ``scores >= threshold``.

    ``scores`` (N, V) are tempered logits (or log-probs: a per-row shift changes nothing).
    None when the settings cut nothing. No gradient: the support is piecewise constant.
    Top-k needs a ``topk`` of k values per row; top-p without top-k sorts whole rows,
    :data:`SORT_ROWS` at a time.
    """
    vocab = scores.shape[-1]
    if not truncates(vocab, top_k, top_p, min_p):
        return None
    with torch.no_grad():
        z = scores.detach()
        threshold = torch.full_like(z[:, :1], float("-inf"))
        if 0 < top_k < vocab:
            candidates = z.topk(top_k, dim=-1).values
            threshold = candidates[:, -1:]
            if top_p < 1.0:
                # top-p's mass is over the top-k support, ties at the k-th value included
                norm = torch.logsumexp(z.masked_fill(z < threshold, float("-inf")), -1, True)
                threshold = torch.maximum(threshold, _top_p_threshold(candidates, norm, top_p))
        elif top_p < 1.0:
            parts = []
            for start in range(0, z.shape[0], SORT_ROWS):
                rows = z[start : start + SORT_ROWS]
                ordered = rows.sort(dim=-1, descending=True).values
                parts.append(_top_p_threshold(ordered, torch.logsumexp(rows, -1, True), top_p))
            threshold = torch.cat(parts) if parts else threshold
        if min_p > 0.0:
            floor = z.amax(-1, keepdim=True) + math.log(min_p)
            threshold = torch.maximum(threshold, floor)
    return threshold


def _top_p_threshold(candidates: Tensor, log_norm: Tensor, top_p: float) -> Tensor:
    """Lowest value top-p keeps among descending ``candidates`` whose mass is over
    ``exp(log_norm)``: entries whose mass strictly before them is below ``top_p``."""
    probs = (candidates - log_norm).exp()
    mass_before = probs.cumsum(-1) - probs
    kept = mass_before < top_p
    kept[:, 0] = True
    return candidates.masked_fill(~kept, float("inf")).amin(-1, keepdim=True)
