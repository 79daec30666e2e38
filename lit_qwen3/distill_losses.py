"""Per-token distillation divergences between a student and a teacher (strong-to-weak).

Full-vocabulary forms (``forward_kl``, ``reverse_kl``, ``generalized_jsd``) take both models'
logits; the top-k forms take only the teacher's top-k log-probs and ids (what fits in an
on-disk cache) plus one *tail bucket* holding the rest of each distribution's mass, so the
divergence is an exact KL between two (k+1)-outcome distributions.

Conventions: ``temperature`` divides both models' logits before the softmax (no ``T**2``
factor, as in TRL's GKD); ``mask`` is bool or 0/1 ``(B, T)``; ``reduction="mean"`` averages
over masked tokens (an empty mask is an error), ``"sum"`` sums them, ``"none"`` returns
``(B, T)`` with zeros where masked. Maths runs in float32 (float64 for float64 input). Teacher
tensors are used as given: compute them under ``torch.no_grad()``.
The mask and reduction helpers here are shared with :mod:`lit_qwen3.losses`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_qwen3.logprobs import _check_shape, _check_temperature, _compute_dtype

Reduction = Literal["mean", "sum", "none"]
# Smallest tail mass kept (float32 normal range); avoids log(0) when top-k holds all the mass.
_TINY = 1e-30


# ----------------------------------------------------------------------------- masks, checks
def _float_mask(mask: Tensor, like: Tensor, name: str = "mask") -> Tensor:
    """``mask`` as 0/1 in ``like``'s dtype; rejects values other than 0 and 1."""
    _check_shape(name, mask, like.shape, "the per-token values")
    if mask.dtype != torch.bool and mask.numel() and not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{name} must be boolean or hold only 0 and 1")
    return mask.to(like.dtype)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(
    per_token: Tensor,
    mask: Tensor,
    reduction: str,
    empty_error: str = "mask selects no token: nothing to distil (check mask alignment)",
) -> Tensor:
    """Zero the unmasked tokens, then return them (``none``), their sum, or their mean; a mean
    over an empty mask raises ``ValueError(empty_error)``: nothing would be trained."""
    m = _float_mask(mask, per_token)
    per_token = per_token * m
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    num = m.sum()
    if num.item() == 0:
        raise ValueError(empty_error)
    return per_token.sum() / num


def _check_divergence_args(
    student_logits: Tensor, mask: Tensor, temperature: float, reduction: str
) -> None:
    _check_temperature(temperature)
    _check_reduction(reduction)
    _check_shape("mask", mask, student_logits.shape[:-1], "student_logits without its vocab dim")


def _log_softmax(logits: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(logits.to(_compute_dtype(logits.dtype)) / temperature, dim=-1)


def _pair_logprobs(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float, reduction
) -> tuple[Tensor, Tensor]:
    _check_divergence_args(student_logits, mask, temperature, reduction)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"student vocab size {student_logits.shape[-1]} != teacher vocab size "
            f"{teacher_logits.shape[-1]}: distillation needs a shared vocabulary"
        )
    _check_shape("teacher_logits", teacher_logits, student_logits.shape, "student_logits")
    return _log_softmax(student_logits, temperature), _log_softmax(teacher_logits, temperature)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) summed over the last dim, from log-probs (``F.kl_div`` takes them swapped)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def _masked_kl(
    log_s: Tensor, log_t: Tensor, mask: Tensor, reduction: str, *, reverse: bool
) -> Tensor:
    """Reverse KL(student || teacher) or forward KL(teacher || student), reduced over ``mask``."""
    return _reduce(_kl(log_s, log_t) if reverse else _kl(log_t, log_s), mask, reduction)


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
    if not (isinstance(beta, (int, float)) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
    log_s, log_t = _pair_logprobs(student_logits, teacher_logits, mask, temperature, reduction)
    if beta in (0, 1):
        return _masked_kl(log_s, log_t, mask, reduction, reverse=beta == 1)
    log_m = torch.logaddexp(log_s + math.log1p(-beta), log_t + math.log(beta))
    jsd = beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)
    return _reduce(jsd, mask, reduction)


# ----------------------------------------------------------------------------- top-k
def teacher_topk(teacher_logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The teacher's ``k`` most likely tokens: ``(logprobs, ids)``, each ``(..., k)``.

    Log-probs are over the full vocabulary at ``temperature``; cache these and train with the
    same temperature in :func:`topk_forward_kl` / :func:`topk_reverse_kl`.
    """
    _check_temperature(temperature)
    vocab = teacher_logits.shape[-1]
    if not isinstance(k, int) or not 1 <= k < vocab:
        raise ValueError(f"k must be an int in [1, {vocab}) (vocab size), got {k!r}")
    z = teacher_logits.to(_compute_dtype(teacher_logits.dtype)) / temperature
    values, ids = z.topk(k, dim=-1)
    return values - torch.logsumexp(z, dim=-1, keepdim=True), ids


def _topk_buckets(
    student_logits: Tensor,
    teacher_topk_logprobs: Tensor,
    teacher_topk_ids: Tensor,
    mask: Tensor,
    temperature: float,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    """(k+1)-bucket log-probs ``(student, teacher)``: the k teacher ids, then the tail."""
    _check_divergence_args(student_logits, mask, temperature, reduction)
    vocab = student_logits.shape[-1]
    lead = student_logits.shape[:-1]
    k = teacher_topk_ids.shape[-1] if teacher_topk_ids.dim() else 0
    _check_shape("teacher_topk_ids", teacher_topk_ids, lead + (k,), "student_logits[..., :k]")
    _check_shape(
        "teacher_topk_logprobs", teacher_topk_logprobs, teacher_topk_ids.shape, "teacher_topk_ids"
    )
    if not 1 <= k < vocab:
        raise ValueError(f"teacher_topk_ids holds k={k} ids per token; need 1 <= k < {vocab}")
    if teacher_topk_ids.dtype.is_floating_point or teacher_topk_ids.dtype == torch.bool:
        raise TypeError(f"teacher_topk_ids must be integer ids, got {teacher_topk_ids.dtype}")
    if ((teacher_topk_ids < 0) | (teacher_topk_ids >= vocab)).any():
        raise ValueError(f"teacher_topk_ids hold ids outside [0, {vocab}) (student vocab size)")
    ids = teacher_topk_ids.long()
    if k > 1 and (ids.sort(-1).values.diff(dim=-1) == 0).any():
        raise ValueError("teacher_topk_ids repeat an id within one token's top-k")
    if (teacher_topk_logprobs > 1e-4).any():
        raise ValueError("teacher_topk_logprobs must be log-probabilities (<= 0)")
    cdt = _compute_dtype(student_logits.dtype)
    z = student_logits.to(cdt) / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    student_k = z.gather(-1, ids) - lse
    # the student's tail is computed exactly from the logits outside the k ids
    student_tail = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True) - lse
    teacher_k = teacher_topk_logprobs.to(cdt).clamp(max=0.0)
    mass = torch.logsumexp(teacher_k, dim=-1, keepdim=True)
    teacher_tail = (-torch.expm1(mass)).clamp(min=_TINY).log()
    return torch.cat([student_k, student_tail], -1), torch.cat([teacher_k, teacher_tail], -1)


def topk_forward_kl(
    student_logits: Tensor,
    teacher_topk_logprobs: Tensor,
    teacher_topk_ids: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(teacher || student) over the teacher's top-k tokens plus one tail bucket."""
    log_s, log_t = _topk_buckets(
        student_logits, teacher_topk_logprobs, teacher_topk_ids, mask, temperature, reduction
    )
    return _masked_kl(log_s, log_t, mask, reduction, reverse=False)


def topk_reverse_kl(
    student_logits: Tensor,
    teacher_topk_logprobs: Tensor,
    teacher_topk_ids: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(student || teacher) over the teacher's top-k tokens plus one tail bucket."""
    log_s, log_t = _topk_buckets(
        student_logits, teacher_topk_logprobs, teacher_topk_ids, mask, temperature, reduction
    )
    return _masked_kl(log_s, log_t, mask, reduction, reverse=True)
