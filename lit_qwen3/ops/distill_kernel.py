"""Full-vocabulary distillation divergence from hidden states, never ``tokens x vocab`` logits.

The naive way, ``reverse_kl(student_lm_head(h_s), teacher_lm_head(h_t), mask)``, holds both
models' logits and several same-sized temporaries for the whole batch: at Qwen3's vocabulary
(151,936 words) its forward + backward peaks at 11.6 GiB for 4096 tokens in float32, growing
linearly (this kernel: 2.7 GiB at 4096 or 8192 tokens; ``benchmarks/bench_distill.py``).
:func:`chunked_distillation` computes the same per-token values (``forward_kl``, ``reverse_kl``
or ``generalized_jsd`` of :mod:`lit_qwen3.ops.distill_losses`, same floors, same temperature
convention) ``chunk_size`` rows at a time, and recomputes each chunk's logits in backward, so
memory grows with ``chunk_size x vocab`` in both passes. Only kept (masked-in) rows are ever
computed: padding costs nothing and whatever it holds cannot turn into NaN.

Gradients are exact (float64 tests compare them with autograd of the full-logit functions).
With ``ls``, ``lt`` the floored log-probs of student and teacher, ``ps = exp(ls)``,
``pt = exp(lt)``, ``lm`` the mixture's log-probs, and ``z`` the student's scaled logits, the
derivative ``g = dD / d ls`` is ``-pt`` (forward KL), ``ps (ls - lt + 1)`` (reverse KL) or
``(1 - beta) ps (ls - lm)`` (JSD), zero where the floor is active; then
``dD / dz = g - softmax(z) * sum(g)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from lit_qwen3.ops.distill_losses import DIVERGENCES, Divergence, check_beta, log_prob_floor
from lit_qwen3.ops.logprobs import (
    IGNORE_INDEX,
    accumulate_lm_head_grads,
    chunk_buffers,
    lm_head_logits,
)
from lit_qwen3.ops.tensor_checks import (
    check_chunk_size,
    check_labels,
    check_shape,
    check_temperature,
    compute_dtype,
    float_mask,
)


class DistillationTerms(NamedTuple):
    """Per-token results of :func:`chunked_distillation`, each shaped like ``mask``, 0 where
    the mask is off, float32 (float64 for float64 student hidden states)."""

    divergence: Tensor
    """The divergence to the teacher, with gradient to the student."""
    entropy: Tensor
    """The student's entropy at ``temperature`` (nats), with gradient to the student."""
    logprobs: Tensor | None
    """Student log-probs of ``labels`` with gradient (as ``chunked_logprobs_and_entropy``);
    ``None`` without labels."""
    teacher_logprobs: Tensor | None
    """Teacher log-probs of ``labels``, no gradient; ``None`` without labels."""


@dataclass(frozen=True)
class _Spec:
    divergence: str
    beta: float
    temperature: float
    chunk_size: int


@dataclass(frozen=True)
class _Teacher:
    """The frozen teacher, flattened to rows and detached: its head, or its logits."""

    hidden: Tensor | None
    weight: Tensor | None
    bias: Tensor | None
    logits: Tensor | None

    def scaled_logits(self, buf: Tensor, idx: Tensor, temperature: float) -> Tensor:
        """The teacher's logits of rows ``idx`` over ``temperature``, into ``buf``."""
        if self.logits is None:
            return lm_head_logits(buf, self.hidden[idx], self.weight, self.bias, temperature)
        out, logits = buf[: len(idx)], self.logits
        idx = idx.to(logits.device)
        if logits.dtype == out.dtype and logits.device == out.device:
            torch.index_select(logits, 0, idx, out=out)
        else:  # low-precision or off-device logits: one chunk moves at a time
            out.copy_(logits.index_select(0, idx))
        return out.div_(temperature) if temperature != 1.0 else out


def _buffers(rows_idx, weight, spec: _Spec, dtype, fourth: bool) -> list[Tensor | None]:
    """Three ``(chunk, V)`` buffers, and a fourth when ``fourth`` (else ``None``)."""
    bufs = chunk_buffers(rows_idx, weight, spec.chunk_size, dtype, 4 if fourth else 3)
    return bufs + [None] * (4 - len(bufs))


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)`` for 2-D tensors without a third ``(rows, V)`` temporary."""
    return (a.unsqueeze(1) @ b.unsqueeze(2)).view(-1)


class _ChunkedDistillation(torch.autograd.Function):
    """Divergence, entropy and label log-probs, ``chunk_size`` kept rows at a time.

    Saves the inputs plus three floats per kept row and recomputes each chunk's logits (both
    models) in backward. Each pass holds three ``(chunk, V)`` buffers (four for JSD, and for
    forward KL's forward pass), plus a boolean one in backward, reused across chunks.
    """

    @staticmethod
    def forward(ctx, s_hidden, s_weight, s_bias, teacher, labels, rows_idx, spec):
        n, kept = s_hidden.shape[0], rows_idx.shape[0]
        cdt = compute_dtype(s_hidden.dtype)
        floor, t = log_prob_floor(cdt), spec.temperature
        out = [s_hidden.new_zeros(n, dtype=cdt) for _ in range(4)]  # D, H, logp_s, logp_t
        lse_s, lse_t = (s_hidden.new_empty(kept, dtype=cdt) for _ in range(2))
        a, b, c, m = _buffers(rows_idx, s_weight, spec, cdt, spec.divergence != "reverse_kl")
        for start in range(0, kept, spec.chunk_size):
            idx = rows_idx[start : start + spec.chunk_size]
            span, scratch = slice(start, start + len(idx)), c[: len(idx)]
            ls = lm_head_logits(a, s_hidden[idx], s_weight, s_bias, t)
            lt = teacher.scaled_logits(b, idx, t)
            lse_s[span] = _log_softmax_(ls, scratch)
            lse_t[span] = _log_softmax_(lt, scratch)
            if labels is not None:
                out[2][idx] = ls.gather(1, labels[idx, None]).squeeze(1)
                out[3][idx] = lt.gather(1, labels[idx, None]).squeeze(1)
            ls.clamp_(min=floor)
            lt.clamp_(min=floor)
            ps = torch.exp(ls, out=scratch)
            out[1][idx] = -_rowdot(ps, ls)
            out[0][idx] = _divergence_values(spec, ls, lt, ps, m)
        ctx.save_for_backward(s_hidden, s_weight, s_bias, labels, rows_idx, lse_s, lse_t, out[1])
        ctx.teacher = teacher  # detached inputs, no gradient: kept off the saved tensors
        ctx.spec = spec
        ctx.mark_non_differentiable(out[3])
        ctx.set_materialize_grads(False)
        return tuple(out)

    @staticmethod
    def backward(ctx, grad_div, grad_ent, grad_lp, _grad_tlp):
        s_hidden, s_weight, s_bias, labels, rows_idx, lse_s, lse_t, entropy = ctx.saved_tensors
        spec, teacher, nones = ctx.spec, ctx.teacher, (None,) * 4
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if labels is None:
            grad_lp = None
        if (grad_div is None and grad_ent is None and grad_lp is None) or not (
            need_h or need_w or need_b
        ):
            return None, None, None, *nones
        cdt, floor, t = lse_s.dtype, log_prob_floor(lse_s.dtype), spec.temperature
        grad_h = torch.zeros_like(s_hidden) if need_h else None
        grad_w = torch.zeros(s_weight.shape, dtype=cdt, device=s_weight.device) if need_w else None
        grad_b = torch.zeros(s_bias.shape, dtype=cdt, device=s_bias.device) if need_b else None
        a, b, c, m = _buffers(rows_idx, s_weight, spec, cdt, spec.divergence == "jsd")
        active = torch.empty(a.shape, dtype=torch.bool, device=a.device)
        for start in range(0, rows_idx.shape[0], spec.chunk_size):
            idx = rows_idx[start : start + spec.chunk_size]
            rows, span = len(idx), slice(start, start + len(idx))
            ls = lm_head_logits(a, s_hidden[idx], s_weight, s_bias, t).sub_(lse_s[span, None])
            unfloored = torch.ge(ls, floor, out=active[:rows])
            ls.clamp_(min=floor)
            g = c[:rows].zero_()
            if grad_div is not None:
                lt = teacher.scaled_logits(b, idx, t)
                lt.sub_(lse_t[span, None]).clamp_(min=floor)
                _divergence_grad(spec, ls, lt, g, m)
                g.masked_fill_(~unfloored, 0.0)
                g_div = grad_div[idx].to(cdt)
                coef = g.sum(-1) * g_div
                g.mul_(g_div[:, None])
            else:
                coef = torch.zeros(rows, dtype=cdt, device=ls.device)
            g_lp = grad_lp[idx].to(cdt) if grad_lp is not None else None
            if g_lp is not None:
                coef += g_lp
            # g - p * (coef + g_ent * (ls + H)): the softmax part of every output's gradient
            p = torch.exp(ls, out=b[:rows])
            if grad_ent is not None:
                g_ent = grad_ent[idx].to(cdt)
                coef += g_ent * entropy[idx]
                g.sub_(ls.mul_(g_ent[:, None]).add_(coef[:, None]).mul_(p))
            else:
                g.sub_(p.mul_(coef[:, None]))
            if g_lp is not None:
                g.scatter_add_(1, labels[idx, None], g_lp[:, None])
            if t != 1.0:
                g.div_(t)
            accumulate_lm_head_grads(g, idx, s_hidden, s_weight, grad_h, grad_w, grad_b)
        grad_w = grad_w.to(s_weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(s_bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, *nones


def _log_softmax_(z: Tensor, scratch: Tensor) -> Tensor:
    """Turn ``z`` into ``log_softmax(z)`` in place and return its logsumexp (per row), using
    ``scratch`` for the exponentials (``torch.logsumexp`` would allocate a ``(rows, V)``)."""
    top = z.amax(-1, keepdim=True)
    z.sub_(top)
    log_total = torch.exp(z, out=scratch).sum(-1, keepdim=True).log_()
    z.sub_(log_total)
    return (top + log_total).squeeze(-1)


def _divergence_values(spec: _Spec, ls: Tensor, lt: Tensor, ps: Tensor, m: Tensor) -> Tensor:
    """Per-row divergence from floored log-probs; ``ls``, ``lt``, ``ps``, ``m`` overwritten."""
    if spec.divergence == "reverse_kl":
        return _rowdot(ps, lt.sub_(ls).neg_())  # sum ps (ls - lt)
    m = m[: ls.shape[0]]
    if spec.divergence == "forward_kl":
        pt = torch.exp(lt, out=m)
        return _rowdot(pt, lt.sub_(ls))  # sum pt (lt - ls)
    beta = spec.beta
    lm = _mixture_logprobs(ls, lt, beta, m)  # lt is now lt + log(beta)
    student_part = _rowdot(ps, ls.sub_(lm))  # sum ps (ls - lm)
    beta_pt = torch.exp(lt, out=ps)
    teacher_part = _rowdot(beta_pt, lt.sub_(lm).sub_(math.log(beta)))  # beta sum pt (lt - lm)
    return (1 - beta) * student_part + teacher_part


def _divergence_grad(spec: _Spec, ls: Tensor, lt: Tensor, g: Tensor, m: Tensor) -> None:
    """``g = dD / d ls`` (before the floor mask); ``lt`` and ``m`` are overwritten."""
    if spec.divergence == "forward_kl":
        torch.exp(lt, out=g).neg_()  # -pt
        return
    torch.exp(ls, out=g)  # ps
    if spec.divergence == "reverse_kl":
        g.mul_(lt.sub_(ls).sub_(1.0).neg_())  # ps (ls - lt + 1)
        return
    lm = _mixture_logprobs(ls, lt, spec.beta, m[: ls.shape[0]])
    g.mul_(lm.sub_(ls).neg_()).mul_(1 - spec.beta)  # (1 - beta) ps (ls - lm)


def _mixture_logprobs(ls: Tensor, lt: Tensor, beta: float, out: Tensor) -> Tensor:
    """``log(beta pt + (1 - beta) ps)`` into ``out``; ``lt`` is left shifted by ``log beta``."""
    torch.add(ls, math.log1p(-beta), out=out)
    return torch.logaddexp(out, lt.add_(math.log(beta)), out=out)


def chunked_distillation(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor | None,
    teacher_weight: Tensor | None,
    mask: Tensor,
    divergence: Divergence = "reverse_kl",
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    teacher_logits: Tensor | None = None,
    labels: Tensor | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> DistillationTerms:
    """Per-token divergence between student and teacher, from hidden states and ``lm_head``s.

    Equals ``forward_kl`` / ``reverse_kl`` / ``generalized_jsd(beta)`` of
    :mod:`lit_qwen3.ops.distill_losses` with ``reduction="none"`` on both models' full logits, but
    holds only ``chunk_size x V`` floats at a time (forward and backward). Reduce the result
    with ``lit_qwen3.ops.losses.masked_mean`` or ``aggregate_loss``.

    Args:
        student_hidden: ``(..., H)`` the student's final hidden states (after its last norm).
        student_weight: ``(V, H)`` the student's ``lm_head`` weight (the embedding when tied).
        teacher_hidden: ``(..., Ht)`` the teacher's final hidden states, aligned with the
            student's; ``None`` when ``teacher_logits`` are given instead.
        teacher_weight: ``(V, Ht)`` the teacher's ``lm_head`` weight; ``None`` likewise.
        mask: ``(...)`` bool or 0/1: the tokens to distil. Only these rows are computed.
        divergence: ``"reverse_kl"`` (KL(student || teacher), the on-policy default),
            ``"forward_kl"`` (KL(teacher || student)) or ``"jsd"`` (generalised JSD with
            ``beta``; 0 is forward KL, 1 reverse KL, as TRL's GKD).
        temperature: divides both models' logits before the softmax.
        student_bias, teacher_bias: optional ``(V,)`` ``lm_head`` biases.
        teacher_logits: ``(..., V)`` precomputed teacher logits instead of its head (e.g. an
            off-policy run that scored the batch elsewhere); read one chunk at a time, so they
            may stay in bf16 or even on another device.
        labels: ``(...)`` token ids aligned with ``student_hidden`` (the caller shifts); when
            given, the student's log-probs of them (with gradient) and the teacher's are
            returned too, at no extra matmul. Masked positions may hold ``ignore_index``.
        chunk_size: rows of logits held at once: the extra memory is three ``chunk_size x V``
            float buffers (four for JSD and in forward KL's forward pass) plus the student's
            weight gradient (e.g. 2.4 GiB at 1024 rows, V = 151,936, H = 1024, float32).

    Returns:
        :class:`DistillationTerms`: ``divergence`` and ``entropy`` (student), plus
        ``logprobs`` and ``teacher_logprobs`` when ``labels`` are given. The teacher never
        gets a gradient (its inputs are detached).
    """
    check_temperature(temperature)
    check_chunk_size(chunk_size)
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    check_beta(beta)
    if divergence == "jsd" and beta in (0, 1):  # TRL's ends of beta: the two KLs
        divergence = "reverse_kl" if beta == 1 else "forward_kl"
    vocab = _check_head("student", student_hidden, student_weight, student_bias)
    lead = student_hidden.shape[:-1]
    teacher = _flat_teacher(teacher_hidden, teacher_weight, teacher_bias, teacher_logits, lead)
    teacher_vocab = teacher.weight.shape[0] if teacher.logits is None else teacher.logits.shape[1]
    if teacher_vocab != vocab:
        raise ValueError(
            f"student vocab size {vocab} != teacher vocab size {teacher_vocab}: "
            "distillation needs a shared vocabulary"
        )
    check_shape("mask", mask, lead, "student_hidden without its last dim")
    keep = float_mask(mask, mask, "mask").bool().reshape(-1)
    flat_labels = None
    if labels is not None:
        check_shape("labels", labels, lead, "student_hidden without its last dim")
        flat_labels = labels.reshape(-1).masked_fill(~keep, 0).long()
        check_labels(flat_labels, vocab, ignore_index)
        if (flat_labels == ignore_index).any():
            raise ValueError(f"labels hold ignore_index={ignore_index} at a masked-in position")
    spec = _Spec(divergence, float(beta), float(temperature), chunk_size)
    flat_hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
    rows_idx = keep.nonzero().squeeze(1).to(flat_hidden.device)  # the only rows computed
    flat_labels = None if flat_labels is None else flat_labels.to(flat_hidden.device)
    outputs = _ChunkedDistillation.apply(
        flat_hidden, student_weight, student_bias, teacher, flat_labels, rows_idx, spec
    )
    div, ent, lp, tlp = (x.reshape(lead) for x in outputs)
    return DistillationTerms(div, ent, *((lp, tlp) if labels is not None else (None, None)))


def _flat_teacher(hidden, weight, bias, logits, lead: torch.Size) -> _Teacher:
    """Check the teacher's inputs (a head or logits, aligned with the student) and detach them."""
    given = logits if logits is not None else hidden
    name = "teacher_logits" if logits is not None else "teacher_hidden"
    if logits is None:
        if hidden is None or weight is None:
            raise ValueError("pass teacher_hidden and teacher_weight, or teacher_logits")
        _check_head("teacher", hidden, weight, bias)
    elif hidden is not None or weight is not None or bias is not None:
        raise ValueError("pass teacher_logits or teacher_hidden/teacher_weight, not both")
    check_shape(name, given, lead + given.shape[-1:], "student_hidden (but its last dim)")

    def rows(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.detach().reshape(-1, x.shape[-1])

    detached = None if bias is None else bias.detach()
    return _Teacher(
        rows(hidden), None if weight is None else weight.detach(), detached, rows(logits)
    )


def _check_head(name: str, hidden: Tensor, weight: Tensor, bias: Tensor | None) -> int:
    """Check one model's ``hidden`` ``(..., H)``, ``weight`` ``(V, H)``, ``bias`` ``(V,)``."""
    for arg, value in ((f"{name}_hidden", hidden), (f"{name}_weight", weight)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{arg} must be a torch.Tensor, got {type(value).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"{name}_weight must be (vocab, hidden), got {tuple(weight.shape)}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{name}_hidden has size {hidden.shape[-1] if hidden.dim() else None} in its last "
            f"dim but {name}_weight is {tuple(weight.shape)} (vocab, hidden); they must agree"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(
            f"{name}_bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    return weight.shape[0]
