"""Log-probs and entropy of chosen tokens without the full vocabulary tensor.

From logits (``token_logprobs``, ``truncated_logprobs``, ``token_entropy``), ``chunk_size`` rows
at a time; or straight from the last hidden states and the ``lm_head`` weight
(``chunked_logprobs_and_entropy``), which recomputes each chunk of logits in backward so that
neither pass holds ``tokens x vocab``.

With a sampler that truncates (``top_k``, ``top_p``, ``min_p``), the log-prob of a sampled token
is taken under the distribution it was drawn from: the tempered softmax renormalised over the
support :func:`~lit_qwen3.ops.truncation.kept_threshold` keeps, the sampler's own rule. The
label always stays in the support, so a token a later policy would no longer keep gets a finite
log-prob (and gradient) instead of ``-inf``. Entropies stay those of the untruncated tempered
distribution (the policy's, as the entropy bonus and the entropy-selected objectives read it).

Input checks shared with the other loss modules live in :mod:`lit_qwen3.ops.tensor_checks`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_qwen3.ops.tensor_checks import (
    check_chunk_size,
    check_labels,
    check_shape,
    check_temperature,
    compute_dtype,
)
from lit_qwen3.ops.truncation import kept_threshold, truncates

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------- log-probs
def token_logprobs(
    logits: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = 1024,
) -> Tensor:
    """Log-prob of each ``labels`` token under ``softmax(logits / temperature)``.

    ``logits`` is ``(..., V)``, ``labels`` is ``(...)`` and already aligned (the caller shifts).
    Positions labelled ``ignore_index`` get 0. Works on ``chunk_size`` rows at a time and never
    builds the full log-softmax, so forward temporaries stay at ``chunk_size x V``.
    Gradients flow to ``logits``.
    """
    return _label_logprobs(logits, labels, temperature, ignore_index, chunk_size, None)


def truncated_logprobs(
    logits: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = 1024,
) -> Tensor:
    """Log-prob of each ``labels`` token under the sampler's truncated distribution.

    ``softmax(logits / temperature)`` cut to the top-k / top-p / min-p support (the sampler's
    rule, :func:`~lit_qwen3.ops.truncation.kept_threshold`) plus the label itself, then
    renormalised. Without truncation this is :func:`token_logprobs`. Gradients flow to ``logits``
    (the support itself is piecewise constant and carries none).
    """
    cut = (top_k, top_p, min_p) if truncates(logits.shape[-1], top_k, top_p, min_p) else None
    return _label_logprobs(logits, labels, temperature, ignore_index, chunk_size, cut)


def _label_logprobs(
    logits: Tensor,
    labels: Tensor,
    temperature: float,
    ignore_index: int,
    chunk_size: int,
    cut: tuple[int, float, float] | None,
) -> Tensor:
    """Each label's log-prob, normalised over the whole vocabulary or (``cut``: top-k, top-p,
    min-p) over the sampler's kept support plus the label."""
    check_temperature(temperature)
    check_shape("labels", labels, logits.shape[:-1], "logits without its vocab dim")
    check_labels(labels, logits.shape[-1], ignore_index)
    valid = labels != ignore_index
    safe = labels.masked_fill(~valid, 0).long().reshape(-1, 1)

    def chunk_logprobs(z: Tensor, rows: slice) -> Tensor:
        kept = z if cut is None else z.masked_fill(~kept_support(z, safe[rows], *cut), -math.inf)
        return z.gather(-1, safe[rows]).squeeze(-1) - torch.logsumexp(kept, dim=-1)

    return _by_rows(logits, temperature, chunk_size, chunk_logprobs) * valid


def kept_support(z: Tensor, labels: Tensor, top_k: int, top_p: float, min_p: float) -> Tensor:
    """(N, V) bool: the sampler's support of scaled logits ``z`` plus each row's ``labels`` (N, 1)."""
    threshold = kept_threshold(z, top_k=top_k, top_p=top_p, min_p=min_p)
    return (z >= threshold).scatter_(-1, labels, True)


def token_entropy(logits: Tensor, temperature: float = 1.0, *, chunk_size: int = 1024) -> Tensor:
    """Entropy (nats) of ``softmax(logits / temperature)`` at each position, with gradient.

    Returns ``logits.shape[:-1]``; computed ``chunk_size`` rows at a time.
    """
    check_temperature(temperature)

    def chunk_entropy(z: Tensor, rows: slice) -> Tensor:
        return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1)

    return _by_rows(logits, temperature, chunk_size, chunk_entropy)


def _by_rows(logits: Tensor, temperature: float, chunk_size: int, fn) -> Tensor:
    """Apply ``fn(scaled_logits_chunk, rows)`` to ``chunk_size`` rows at a time."""
    check_chunk_size(chunk_size)
    flat = logits.reshape(-1, logits.shape[-1])
    cdt = compute_dtype(logits.dtype)
    pieces = [
        fn(flat[start : start + chunk_size].to(cdt) / temperature, slice(start, start + chunk_size))
        for start in range(0, flat.shape[0], chunk_size)
    ]
    out = torch.cat(pieces) if pieces else flat.new_zeros(0, dtype=cdt)
    return out.reshape(logits.shape[:-1])


class _ChunkedLinearLogprobs(torch.autograd.Function):
    """``log_softmax((h W^T + b) / T)[label]`` and entropy, ``chunk`` rows of logits at a time.

    Saves only the inputs plus two floats per token (logsumexp and entropy) and recomputes each
    chunk's logits in backward, so neither pass holds more than two ``chunk x V`` buffers (reused
    across chunks; the idea of Liger's fused linear cross-entropy). With ``z`` the scaled logits
    and ``p = softmax(z)``: ``d logp / dz = onehot - p`` and ``d H / dz = -p (log p + H)``.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, temperature, chunk_size, ignore_index, cut):
        n, cdt = hidden.shape[0], compute_dtype(hidden.dtype)
        valid = labels != ignore_index
        safe = labels.masked_fill(~valid, 0).long()[:, None]
        logprobs, entropy, lse_all = (hidden.new_empty(n, dtype=cdt) for _ in range(3))
        # with a truncating sampler (``cut``): each row's support threshold and log-normaliser
        threshold, lse_kept = (hidden.new_empty(n, 1, dtype=cdt) for _ in range(2))
        z_buf, p_buf = chunk_buffers(hidden, weight, chunk_size, cdt, 2)
        for start in range(0, n, chunk_size):
            rows = slice(start, start + chunk_size)
            z = lm_head_logits(z_buf, hidden[rows], weight, bias, temperature)
            top = z.amax(-1, keepdim=True)
            chosen = z.gather(-1, safe[rows]).squeeze(-1)
            keep = None
            if cut is not None:
                threshold[rows] = kept_threshold(z, top_k=cut[0], top_p=cut[1], min_p=cut[2])
                keep = (z >= threshold[rows]).scatter_(-1, safe[rows], True)
            z.sub_(top)
            p = torch.exp(z, out=p_buf[: z.shape[0]])  # unnormalised
            total = p.sum(-1)
            log_total = total.log()
            lse = top.squeeze(-1) + log_total
            if keep is None:
                logprobs[rows] = chosen - lse
            else:  # the row's maximum is always kept: the kept total is >= 1
                lse_kept[rows] = top + torch.where(keep, p, 0.0).sum(-1, keepdim=True).log()
                logprobs[rows] = chosen - lse_kept[rows, 0]
            entropy[rows] = log_total - p.mul_(z).sum(-1) / total  # H = lse - E_p[z]
            lse_all[rows] = lse
        logprobs.mul_(valid)
        ctx.save_for_backward(hidden, weight, bias, safe, valid, lse_all, entropy)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.cut = (threshold, lse_kept) if cut is not None else None
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, bias, safe, valid, lse_all, entropy = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if grad_logprobs is None and grad_entropy is None:
            return (None,) * 8
        cdt, inv_t = lse_all.dtype, 1.0 / ctx.temperature
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=cdt, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=cdt, device=bias.device) if need_b else None
        # 1/T of dz/dlogits folded into the per-token coefficients
        g_lp = grad_logprobs.to(cdt) * valid * inv_t if grad_logprobs is not None else None
        g_ent = grad_entropy.to(cdt) * inv_t if grad_entropy is not None else None
        bufs = chunk_buffers(hidden, weight, ctx.chunk_size, cdt, 1 if g_ent is None else 2)
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            z = lm_head_logits(bufs[0], hidden[rows], weight, bias, ctx.temperature)
            if ctx.cut is not None and g_lp is not None:
                grad_z = _truncated_grad(z, bufs, rows, ctx, g_lp, g_ent, lse_all, entropy, safe)
            elif g_ent is None:  # grad_z = -g_lp p (+ g_lp at the label)
                grad_z = z.sub_(lse_all[rows, None]).exp_().mul_(-g_lp[rows, None])
            else:  # grad_z = -p (g_lp + g_ent (log p + H)) (+ g_lp at the label)
                log_p = z.sub_(lse_all[rows, None])
                p = torch.exp(log_p, out=bufs[1][: z.shape[0]])
                g_e = g_ent[rows, None]
                offset = g_e * entropy[rows, None]
                if g_lp is not None:
                    offset = offset + g_lp[rows, None]
                grad_z = log_p.mul_(g_e).add_(offset).mul_(p).neg_()
            if g_lp is not None:
                grad_z.scatter_add_(1, safe[rows], g_lp[rows, None])
            accumulate_lm_head_grads(grad_z, rows, hidden, weight, grad_h, grad_w, grad_b)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None, None


def _truncated_grad(z, bufs, rows, ctx, g_lp, g_ent, lse_all, entropy, safe) -> Tensor:
    """One chunk's ``d loss / d z`` (label term excluded) when log-probs are over the support:
    ``-g_lp q`` with ``q`` the renormalised truncated distribution (0 off the support), plus the
    entropy's ``-g_ent p (log p + H)`` over the full tempered ``p``."""
    threshold, lse_kept = ctx.cut
    keep = (z >= threshold[rows]).scatter_(-1, safe[rows], True)
    if g_ent is None:
        q = z.sub_(lse_kept[rows]).exp_()
        return q.masked_fill_(~keep, 0.0).mul_(-g_lp[rows, None])
    log_p = z.sub_(lse_all[rows, None])
    p = torch.exp(log_p, out=bufs[1][: z.shape[0]])
    g_e = g_ent[rows, None]
    grad_z = log_p.mul_(g_e).add_(g_e * entropy[rows, None]).mul_(p).neg_()
    # q = p exp(lse - lse_kept) on the support
    scale = (lse_all[rows, None] - lse_kept[rows]).exp().mul_(g_lp[rows, None])
    return grad_z.sub_(p.mul_(scale).masked_fill_(~keep, 0.0))


# ----------------------------------------------------------------------------- chunk helpers
# Shared with the distillation kernel (lit_qwen3.ops.distill_kernel).
def chunk_buffers(hidden, weight, chunk_size, dtype, count) -> list[Tensor]:
    """``count`` reusable ``(chunk, V)`` buffers: CPU allocators do not cache large blocks."""
    rows = min(chunk_size, hidden.shape[0])
    return [hidden.new_empty(rows, weight.shape[0], dtype=dtype) for _ in range(count)]


def lm_head_logits(buf: Tensor, hidden: Tensor, weight: Tensor, bias, temperature) -> Tensor:
    """``(hidden W^T + bias) / temperature`` written into the leading rows of ``buf``.

    ``hidden`` is one chunk of rows; ``buf`` is in the compute dtype (float32 or float64).
    """
    out = buf[: hidden.shape[0]]
    if weight.dtype == buf.dtype and hidden.dtype == buf.dtype:
        if bias is None:
            torch.mm(hidden, weight.T, out=out)
        else:
            torch.addmm(bias.to(buf.dtype), hidden, weight.T, out=out)
    else:  # e.g. bf16 weights: the matmul in their dtype, softmax maths in float32
        out.copy_(hidden.to(weight.dtype) @ weight.T)
        if bias is not None:
            out += bias.to(buf.dtype)
    if temperature != 1.0:
        out.div_(temperature)
    return out


def accumulate_lm_head_grads(
    grad_z: Tensor,
    rows: slice | Tensor,
    hidden: Tensor,
    weight: Tensor,
    grad_h: Tensor | None,
    grad_w: Tensor | None,
    grad_b: Tensor | None,
) -> None:
    """Back through ``z = hidden W^T + b`` for one chunk, given ``grad_z = d loss / d z``.

    ``rows`` (a slice or an index tensor) picks the chunk's rows of ``hidden``. Writes
    ``grad_h[rows]`` and adds into ``grad_w`` / ``grad_b`` (kept in ``grad_z``'s dtype);
    any of the three may be ``None`` when that input needs no gradient.
    """
    cdt = grad_z.dtype
    if grad_b is not None:
        grad_b += grad_z.sum(0)
    if grad_h is not None:
        grad_h[rows] = (grad_z.to(weight.dtype) @ weight).to(hidden.dtype)
    if grad_w is not None:
        h_rows = hidden[rows].to(cdt)
        if weight.dtype == cdt:
            grad_w.addmm_(grad_z.T, h_rows)
        else:  # low-precision weights: matmul in their dtype, accumulate in float32
            grad_w += (grad_z.to(weight.dtype).T @ h_rows.to(weight.dtype)).to(cdt)


def chunked_logprobs_and_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Per-token log-probs of ``labels`` and entropies straight from the last hidden states.

    Equivalent to ``token_logprobs(lm_head(hidden), labels, T)`` and ``token_entropy(...)`` but
    memory grows with ``chunk_size x V`` instead of ``tokens x V``, in forward *and* backward:
    each chunk's logits are recomputed in backward rather than stored. Both outputs carry
    gradients to ``hidden``, ``weight`` and ``bias``.

    Args:
        hidden: ``(..., H)`` final hidden states (after the model's last norm).
        weight: ``(V, H)`` ``lm_head`` weight (the embedding matrix when tied).
        labels: ``(...)`` target ids aligned with ``hidden``; ``ignore_index`` gives log-prob 0.
        bias: optional ``(V,)`` ``lm_head`` bias.
        temperature: logits are divided by it before the softmax, as in the sampler.
        chunk_size: rows of logits held at once.
        top_k / top_p / min_p: the sampler's truncation: log-probs are then those of
            :func:`truncated_logprobs` (the support plus the label, renormalised); entropies
            stay untruncated. Top-p without top-k sorts every row (forward only: backward
            rebuilds the support from one threshold per row).

    Returns:
        ``(logprobs, entropy)``, each shaped like ``labels``, float32 (float64 for float64 input).
    """
    check_temperature(temperature)
    check_chunk_size(chunk_size)
    if weight.dim() != 2:
        raise ValueError(f"weight must be (vocab, hidden), got shape {tuple(weight.shape)}")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden has size {hidden.shape[-1]} in its last dim but weight is "
            f"{tuple(weight.shape)} (vocab, hidden); they must agree"
        )
    check_shape("labels", labels, hidden.shape[:-1], "hidden without its last dim")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    check_labels(labels, weight.shape[0], ignore_index)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    cut = (top_k, top_p, min_p) if truncates(weight.shape[0], top_k, top_p, min_p) else None
    logprobs, entropy = _ChunkedLinearLogprobs.apply(
        flat_hidden,
        weight,
        bias,
        labels.reshape(-1),
        float(temperature),
        chunk_size,
        ignore_index,
        cut,
    )
    return logprobs.reshape(labels.shape), entropy.reshape(labels.shape)
