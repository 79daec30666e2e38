"""Per-token distillation divergences between a student and a teacher (strong-to-weak).

Full-vocabulary forms (``forward_kl``, ``reverse_kl``, ``generalized_jsd``) take both models'
logits; :mod:`lit_qwen3.ops.distill_kernel` computes the same values from hidden states without
``tokens x vocab`` logits. The top-k forms take a :class:`TeacherTopK` (what fits in an on-disk
cache: the teacher's top-k log-probs and ids, plus the exact log-mass of all other ids) and
compare one *tail bucket* beside the k ids, an exact KL between two (k+1)-outcome
distributions.

Conventions: ``temperature`` divides both models' logits before the softmax (no ``T**2``
factor, as in TRL's GKD); ``mask`` is bool or 0/1 ``(B, T)``; ``reduction="mean"`` averages
over masked tokens (an empty mask is an error), ``"sum"`` sums them, ``"none"`` returns
``(B, T)`` with zeros where masked. Maths runs in float32 (float64 for float64 input). Teacher
tensors are used as given: compute them under ``torch.no_grad()``.

No NaN from ``-inf``: masked-out rows are replaced before any maths (whatever they hold gives
0 and no gradient), and log-probs are floored at :func:`log_prob_floor`, so ``0 * log 0``
terms vanish and a teacher with ``-inf`` on some ids (after top-k truncation) gives a finite
divergence; where the student puts mass on such ids that divergence is large, as it should be.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_qwen3.ops.tensor_checks import (
    Reduction,
    check_chunk_size,
    check_reduction,
    check_shape,
    check_temperature,
    compute_dtype,
    float_mask,
    masked_reduce,
)

#: The divergences by name, as :mod:`lit_qwen3.ops.distill_kernel` and the stages spell them.
Divergence = Literal["reverse_kl", "forward_kl", "jsd"]
DIVERGENCES = ("reverse_kl", "forward_kl", "jsd")


# ----------------------------------------------------------------------------- floors, checks
def log_prob_floor(dtype: torch.dtype) -> float:
    """``log`` of the smallest normal float of ``dtype`` (-87.34 in float32, -708.40 in float64).

    Every log-prob a divergence here uses is clamped from below at this value: a probability
    the dtype cannot hold counts as the smallest one it can, so ``0 * log 0`` never happens and
    an ``-inf`` entry gives a finite divergence (large where the other model has mass there).
    """
    return math.log(torch.finfo(dtype).tiny)


def check_beta(beta: float) -> None:
    if isinstance(beta, bool) or not (isinstance(beta, (int, float)) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")


def _check_divergence_args(
    student_logits: Tensor, mask: Tensor, temperature: float, reduction: str
) -> None:
    check_temperature(temperature)
    check_reduction(reduction)
    check_shape("mask", mask, student_logits.shape[:-1], "student_logits without its vocab dim")


def _scaled(logits: Tensor, temperature: float, keep: Tensor) -> Tensor:
    """``logits / temperature`` in the compute dtype, rows outside ``keep`` set to 0 (so that
    whatever they hold, -inf or NaN, never reaches the maths or the gradient). One copy."""
    z = logits.to(compute_dtype(logits.dtype))
    if temperature != 1.0:
        return (z / temperature).masked_fill_(~keep[..., None], 0.0)
    return z.masked_fill(~keep[..., None], 0.0)


def _log_softmax(logits: Tensor, temperature: float, keep: Tensor) -> Tensor:
    z = F.log_softmax(_scaled(logits, temperature, keep), dim=-1)
    return z.clamp(min=log_prob_floor(z.dtype))


def _pair_logprobs(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float, reduction
) -> tuple[Tensor, Tensor]:
    _check_divergence_args(student_logits, mask, temperature, reduction)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"student vocab size {student_logits.shape[-1]} != teacher vocab size "
            f"{teacher_logits.shape[-1]}: distillation needs a shared vocabulary"
        )
    check_shape("teacher_logits", teacher_logits, student_logits.shape, "student_logits")
    keep = float_mask(mask, mask, "mask").bool()
    return (
        _log_softmax(student_logits, temperature, keep),
        _log_softmax(teacher_logits, temperature, keep),
    )


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) summed over the last dim, from log-probs (``F.kl_div`` takes them swapped)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def _masked_kl(
    log_s: Tensor, log_t: Tensor, mask: Tensor, reduction: str, *, reverse: bool
) -> Tensor:
    """Reverse KL(student || teacher) or forward KL(teacher || student), reduced over ``mask``."""
    return masked_reduce(_kl(log_s, log_t) if reverse else _kl(log_t, log_s), mask, reduction)


# ----------------------------------------------------------------------------- full vocabulary
def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(teacher || student) per token: mass-covering, the classic distillation loss."""
    log_s, log_t = _pair_logprobs(student_logits, teacher_logits, mask, temperature, reduction)
    return _masked_kl(log_s, log_t, mask, reduction, reverse=False)


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(student || teacher) per token: mode-seeking, the on-policy distillation default."""
    log_s, log_t = _pair_logprobs(student_logits, teacher_logits, mask, temperature, reduction)
    return _masked_kl(log_s, log_t, mask, reduction, reverse=True)


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024, eq. 1), TRL's ``beta``.

    With ``M = beta * teacher + (1 - beta) * student``:
    ``beta * KL(teacher || M) + (1 - beta) * KL(student || M)``. As in TRL's
    ``GKDTrainer.generalized_jsd_loss``, ``beta=0`` is forward KL(teacher || student) and
    ``beta=1`` reverse KL(student || teacher) (the formula itself vanishes at both ends).
    """
    check_beta(beta)
    log_s, log_t = _pair_logprobs(student_logits, teacher_logits, mask, temperature, reduction)
    if beta in (0, 1):
        return _masked_kl(log_s, log_t, mask, reduction, reverse=beta == 1)
    log_m = torch.logaddexp(log_s + math.log1p(-beta), log_t + math.log(beta))
    jsd = beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)
    return masked_reduce(jsd, mask, reduction)


# ----------------------------------------------------------------------------- top-k
class TeacherTopK(NamedTuple):
    """A teacher's next-token distribution reduced to its top k, as an off-policy cache holds it.

    The tail is stored, not rebuilt: ``log(1 - sum(exp(logprobs)))`` cancels catastrophically
    when the top k hold nearly all the mass (in bf16 a tail of 1e-3 is lost entirely), while
    a logsumexp over the other ids keeps it to the dtype's relative precision.
    """

    logprobs: Tensor
    """``(..., k)`` log-probs of the ``k`` likeliest ids, over the full vocabulary."""
    ids: Tensor
    """``(..., k)`` their token ids (int64), likeliest first."""
    tail_logprob: Tensor
    """``(...)`` log of the mass on every other id: their logsumexp (-inf if they have none)."""


def teacher_topk(
    teacher_logits: Tensor, k: int, temperature: float = 1.0, *, chunk_size: int = 1024
) -> TeacherTopK:
    """The teacher's ``k`` likeliest tokens and the exact log-mass of the rest, per position.

    Log-probs are over the full vocabulary at ``temperature``, computed in float32 (float64
    for float64 input) ``chunk_size`` rows at a time; cast them to the cache's dtype after.
    Train with the same temperature in :func:`topk_forward_kl` / :func:`topk_reverse_kl`.
    """
    check_temperature(temperature)
    check_chunk_size(chunk_size)
    vocab = teacher_logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < vocab:
        raise ValueError(f"k must be an int in [1, {vocab}) (vocab size), got {k!r}")
    flat = teacher_logits.reshape(-1, vocab)
    cdt = compute_dtype(teacher_logits.dtype)
    pieces = []
    for start in range(0, flat.shape[0], chunk_size):
        z = flat[start : start + chunk_size].to(cdt) / temperature
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        values, ids = z.topk(k, dim=-1)
        tail = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1) - lse.squeeze(-1)
        pieces.append((values - lse, ids, tail))
    lead = teacher_logits.shape[:-1]
    if not pieces:
        empty = flat.new_zeros(0, k, dtype=cdt)
        pieces = [(empty, empty.long(), empty[:, 0])]
    logprobs, ids, tail = (torch.cat(parts) for parts in zip(*pieces, strict=True))
    return TeacherTopK(logprobs.reshape(*lead, k), ids.reshape(*lead, k), tail.reshape(lead))


def _check_topk(teacher: TeacherTopK, lead: torch.Size, vocab: int, keep: Tensor) -> None:
    if not (isinstance(teacher, tuple) and len(teacher) == 3):
        raise TypeError(
            "teacher must be a TeacherTopK (logprobs, ids, tail_logprob), as teacher_topk returns, "
            f"got {type(teacher).__name__}"
        )
    logprobs, ids, tail = TeacherTopK(*teacher)
    k = ids.shape[-1] if isinstance(ids, Tensor) and ids.dim() else 0
    check_shape("teacher.ids", ids, lead + (k,), "student_logits[..., :k]")
    check_shape("teacher.logprobs", logprobs, ids.shape, "teacher.ids")
    check_shape("teacher.tail_logprob", tail, lead, "student_logits without its vocab dim")
    if not 1 <= k < vocab:
        raise ValueError(f"teacher.ids holds k={k} ids per token; need 1 <= k < {vocab}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"teacher.ids must be integer ids, got {ids.dtype}")
    kept_ids = ids[keep]  # padding rows of a cache may hold anything
    if ((kept_ids < 0) | (kept_ids >= vocab)).any():
        raise ValueError(f"teacher.ids hold ids outside [0, {vocab}) (student vocab size)")
    if k > 1 and (kept_ids.sort(-1).values.diff(dim=-1) == 0).any():
        raise ValueError("teacher.ids repeat an id within one token's top-k")
    if (logprobs[keep] > 1e-4).any() or (tail[keep] > 1e-4).any():
        raise ValueError(
            "teacher.logprobs and teacher.tail_logprob must be log-probabilities (<= 0)"
        )


def _topk_buckets(
    student_logits: Tensor, teacher: TeacherTopK, mask: Tensor, temperature: float, reduction: str
) -> tuple[Tensor, Tensor]:
    """(k+1)-bucket log-probs ``(student, teacher)``: the k teacher ids, then the tail.

    Both tails are exact logsumexps over the ids outside the top k. The teacher's buckets are
    renormalised (a bf16 cache sums to 1 only to within its rounding), then both are floored.
    """
    _check_divergence_args(student_logits, mask, temperature, reduction)
    keep = float_mask(mask, mask, "mask").bool()
    _check_topk(teacher, student_logits.shape[:-1], student_logits.shape[-1], keep)
    logprobs, ids, tail = TeacherTopK(*teacher)
    # padding rows: any k distinct ids, so gather and scatter stay in range
    ids = torch.where(keep[..., None], ids.long(), torch.arange(ids.shape[-1], device=ids.device))
    z = _scaled(student_logits, temperature, keep)
    floor = log_prob_floor(z.dtype)
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    student_k = z.gather(-1, ids) - lse
    student_tail = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True) - lse
    log_s = torch.cat([student_k, student_tail], -1).clamp(min=floor)
    log_t = torch.cat([logprobs, tail[..., None]], -1).to(z.dtype)
    log_t = log_t.masked_fill(~keep[..., None], 0.0).clamp(min=floor, max=0.0)
    log_t = log_t - torch.logsumexp(log_t, dim=-1, keepdim=True)
    return log_s, log_t


def topk_forward_kl(
    student_logits: Tensor,
    teacher: TeacherTopK,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(teacher || student) over the teacher's top-k tokens plus one tail bucket."""
    log_s, log_t = _topk_buckets(student_logits, teacher, mask, temperature, reduction)
    return _masked_kl(log_s, log_t, mask, reduction, reverse=False)


def topk_reverse_kl(
    student_logits: Tensor,
    teacher: TeacherTopK,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(student || teacher) over the teacher's top-k tokens plus one tail bucket."""
    log_s, log_t = _topk_buckets(student_logits, teacher, mask, temperature, reduction)
    return _masked_kl(log_s, log_t, mask, reduction, reverse=True)
