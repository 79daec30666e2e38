"""Distillation divergences: hand-worked values, TRL's GKD loss as reference, top-k with its
exact tail, and no NaN from -inf entries or masked rows."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from torch.testing import assert_close

from lit_qwen3.ops.losses import (
    TeacherTopK,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    teacher_topk,
    topk_forward_kl,
    topk_reverse_kl,
)

ONE = torch.ones(1, 1)
F64 = torch.float64


def logits_of(*probs):
    return torch.tensor([[list(map(math.log, probs))]], dtype=torch.float64)


def test_full_vocab_divergences_hand_worked():
    teacher, student = logits_of(0.5, 0.5), logits_of(0.25, 0.75)
    # KL(t || s) = 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.346574 - 0.202733 = 0.143841
    assert_close(forward_kl(student, teacher, ONE).item(), 0.143841, atol=1e-6, rtol=0)
    # KL(s || t) = 0.25 ln(0.25 / 0.5) + 0.75 ln(0.75 / 0.5) = -0.173287 + 0.304099 = 0.130812
    assert_close(reverse_kl(student, teacher, ONE).item(), 0.130812, atol=1e-6, rtol=0)
    # JSD(0.5): M = (0.375, 0.625); KL(t || M) = 0.032269, KL(s || M) = 0.035375
    #   0.5 x 0.032269 + 0.5 x 0.035375 = 0.033822
    assert_close(generalized_jsd(student, teacher, ONE).item(), 0.033822, atol=1e-6, rtol=0)
    # the ends of beta are the two KLs (TRL's convention)
    assert_close(
        generalized_jsd(student, teacher, ONE, beta=0.0).item(), 0.143841, atol=1e-6, rtol=0
    )
    assert_close(
        generalized_jsd(student, teacher, ONE, beta=1.0).item(), 0.130812, atol=1e-6, rtol=0
    )


def test_temperature_scales_both_models():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 9), torch.randn(2, 3, 9)
    mask = torch.ones(2, 3)
    assert_close(forward_kl(s, t, mask, temperature=2.0), forward_kl(s / 2, t / 2, mask))
    assert_close(reverse_kl(s, t, mask, temperature=0.5), reverse_kl(s * 2, t * 2, mask))


@pytest.fixture(scope="module")
def trl_jsd():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    gkd = pytest.importorskip("trl.experimental.gkd", reason="TRL (dev dependency) not installed")
    return gkd.GKDTrainer.generalized_jsd_loss


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generalized_jsd_matches_trl(trl_jsd, beta, temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 6, 13), torch.randn(3, 6, 13)
    mask = torch.rand(3, 6) > 0.3
    labels = torch.where(mask, 1, -100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = trl_jsd(student, teacher, labels, beta=beta, temperature=temperature)
    ours = generalized_jsd(student, teacher, mask, beta=beta, temperature=temperature)
    assert_close(ours, reference)
    if beta == 0.0:
        assert_close(forward_kl(student, teacher, mask, temperature), reference)
    if beta == 1.0:
        assert_close(reverse_kl(student, teacher, mask, temperature), reference)


def test_reductions_and_masking():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    per_token = forward_kl(s, t, mask, reduction="none")
    assert per_token.shape == (2, 4) and per_token[0, 2] == 0 and per_token[1, 1:].abs().sum() == 0
    assert_close(forward_kl(s, t, mask, reduction="sum"), per_token.sum())
    assert_close(forward_kl(s, t, mask), per_token.sum() / 3)


def test_divergences_gradcheck_float64():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 5, dtype=torch.float64)
    top = teacher_topk(teacher, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    for fn in (
        lambda s: forward_kl(s, teacher, mask, 0.8),
        lambda s: reverse_kl(s, teacher, mask, 1.3),
        lambda s: generalized_jsd(s, teacher, mask, beta=0.3, temperature=0.9),
        lambda s: topk_forward_kl(s, top, mask),
        lambda s: topk_reverse_kl(s, top, mask, 0.7),
    ):
        assert torch.autograd.gradcheck(fn, (student,))


def test_topk_hand_worked():
    # teacher (0.5, 0.25, 0.125, 0.125), k = 2: buckets (0.5, 0.25 | tail 0.25)
    # student (0.4, 0.2, 0.2, 0.2):              buckets (0.4, 0.2  | tail 0.4)
    teacher = logits_of(0.5, 0.25, 0.125, 0.125)
    student = logits_of(0.4, 0.2, 0.2, 0.2)
    top = teacher_topk(teacher, 2)
    assert top.ids.tolist() == [[[0, 1]]]
    assert_close(top.logprobs, torch.tensor([[[math.log(0.5), math.log(0.25)]]], dtype=F64))
    assert_close(top.tail_logprob, torch.tensor([[math.log(0.25)]], dtype=F64))
    # forward: 0.5 ln(0.5/0.4) + 0.25 ln(0.25/0.2) + 0.25 ln(0.25/0.4)
    #        = 0.111572 + 0.055786 - 0.117501 = 0.049857
    assert_close(topk_forward_kl(student, top, ONE).item(), 0.049857, atol=1e-6, rtol=0)
    # reverse: 0.4 ln(0.4/0.5) + 0.2 ln(0.2/0.25) + 0.4 ln(0.4/0.25)
    #        = -0.089257 - 0.044629 + 0.188001 = 0.054115
    assert_close(topk_reverse_kl(student, top, ONE).item(), 0.054115, atol=1e-6, rtol=0)


def test_topk_with_all_but_one_token_is_the_full_kl():
    # k = V - 1 leaves a single token in the tail: the bucketed KL is the exact KL
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.rand(2, 5) > 0.2
    top = teacher_topk(teacher, 7, temperature=1.5, chunk_size=3)
    # the tail is the one id left out: the least likely
    assert_close(top.tail_logprob, (teacher / 1.5).log_softmax(-1).min(-1).values)
    assert_close(topk_forward_kl(student, top, mask, 1.5), forward_kl(student, teacher, mask, 1.5))
    assert_close(topk_reverse_kl(student, top, mask, 1.5), reverse_kl(student, teacher, mask, 1.5))


def test_topk_tail_is_safe_when_topk_holds_all_mass():
    # the teacher puts all its mass on token 0: the exact tail is -inf, the loss stays finite
    teacher = torch.tensor([[[50.0, float("-inf"), float("-inf"), float("-inf")]]])
    student = torch.randn(1, 1, 4, requires_grad=True)
    top = teacher_topk(teacher, 1)
    assert top.tail_logprob.item() == float("-inf")
    loss = topk_forward_kl(student, top, ONE)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    # KL(t || s) -> -log s_0 when the teacher is one-hot on token 0
    assert_close(loss, -student.detach().log_softmax(-1)[0, 0, 0], atol=1e-5, rtol=1e-5)
    reverse = topk_reverse_kl(student, top, ONE)
    assert torch.isfinite(reverse) and reverse > 10  # the student's tail costs ~87 x its mass


def test_bf16_cache_keeps_the_tail_that_one_minus_topk_loses():
    """Top 8 of 1000 ids hold ~99.9% of the mass. Cached in bf16, ``1 - sum(top-k)`` is off by
    80% on average (each top-k log-prob ~ -2.08 is rounded by up to 0.004, so each of the 8
    probabilities by ~5e-4, against a tail of ~1.2e-3); the stored logsumexp tail is off by
    at most ~1.4% (bf16's relative precision on ln(1.2e-3) = -6.7). Float64 is the reference."""
    torch.manual_seed(0)
    rows, vocab, k = 64, 1000, 8
    logits = torch.randn(rows, vocab, dtype=F64)
    logits[:, :k] = 12.0 + 0.1 * torch.randn(rows, k, dtype=F64)
    exact = teacher_topk(logits, k)
    tail = exact.tail_logprob.exp()
    assert 5e-4 < tail.min() and tail.max() < 2e-3

    cached = TeacherTopK(exact.logprobs.bfloat16(), exact.ids, exact.tail_logprob.bfloat16())
    old_tail = (-torch.expm1(cached.logprobs.float().logsumexp(-1))).clamp(min=1e-30)
    old_error = ((old_tail - tail) / tail).abs()
    new_error = ((cached.tail_logprob.float().exp() - tail) / tail).abs()
    assert old_error.mean() > 0.3
    assert new_error.max() < 0.02

    # what it does to the loss: reverse KL weighs the tail by the student's tail mass
    student = logits + 0.5 * torch.randn(rows, vocab, dtype=F64)
    mask = torch.ones(rows, dtype=torch.bool)
    reference = topk_reverse_kl(student, exact, mask, reduction="none")
    with_old_tail = cached._replace(tail_logprob=old_tail.log())
    new_kl_error = (topk_reverse_kl(student, cached, mask, reduction="none") - reference).abs()
    old_kl_error = topk_reverse_kl(student, with_old_tail, mask, reduction="none") - reference
    assert new_kl_error.max() < 0.01 < old_kl_error.abs().max()


# ----------------------------------------------------------------------------- -inf, masks
INF = float("-inf")


def test_minus_inf_teacher_entries_hand_worked():
    # teacher (0.5, 0.5, 0) with logit -inf on id 2, student (0.25, 0.5, 0.25)
    teacher = torch.tensor([[[math.log(0.5), math.log(0.5), INF]]], dtype=F64)
    student = logits_of(0.25, 0.5, 0.25).requires_grad_()
    # forward: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.5) + 0 (0 log 0 = 0) = 0.346574
    assert_close(forward_kl(student, teacher, ONE).item(), 0.346574, atol=1e-6, rtol=0)
    # JSD(0.5): M = (0.375, 0.5, 0.125); KL(t || M) = 0.5 ln(0.5/0.375) = 0.143841
    #   KL(s || M) = 0.25 ln(0.25/0.375) + 0.25 ln(0.25/0.125) = 0.071921 -> 0.107881
    assert_close(generalized_jsd(student, teacher, ONE).item(), 0.107881, atol=1e-6, rtol=0)
    # reverse: infinite in exact arithmetic; the float64 floor ln(2.2251e-308) = -708.396419
    #   makes it 0.25 ln(0.25/0.5) + 0.25 (ln 0.25 + 708.396419) = 176.579244
    reverse = reverse_kl(student, teacher, ONE)
    assert_close(reverse.item(), 176.579244, atol=1e-5, rtol=0)
    reverse.backward()
    assert torch.isfinite(student.grad).all()
    # pushing mass off id 2: its logit's gradient is positive (loss grows with it)
    assert student.grad[0, 0, 2] > 0


@pytest.mark.parametrize(
    "divergence",
    [forward_kl, reverse_kl, generalized_jsd],
    ids=["forward_kl", "reverse_kl", "jsd"],
)
def test_masked_rows_never_give_nan(divergence):
    """Masked rows holding -inf (or NaN) in either model: the loss is that of the other rows."""
    torch.manual_seed(0)
    student = torch.randn(2, 4, 6, dtype=F64, requires_grad=True)
    teacher = torch.randn(2, 4, 6, dtype=F64)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    dirty_teacher = teacher.clone()
    dirty_teacher[0, 2] = INF  # a whole masked row at -inf: log_softmax gives NaN
    dirty_teacher[1, 0, :3] = INF
    dirty_student = student.detach().clone()
    dirty_student[1, 0] = float("nan")
    dirty_student.requires_grad_()
    loss = divergence(dirty_student, dirty_teacher, mask)
    loss.backward()
    clean = divergence(student, teacher, mask)
    clean.backward()
    assert_close(loss, clean)
    assert torch.isfinite(dirty_student.grad).all()
    assert (dirty_student.grad[~mask] == 0).all()
    assert_close(dirty_student.grad[mask], student.grad[mask])
    per_token = divergence(dirty_student, dirty_teacher, mask, reduction="none")
    assert torch.isfinite(per_token).all() and (per_token[~mask] == 0).all()


def test_topk_masked_rows_may_hold_anything():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 6, requires_grad=True)
    top = teacher_topk(torch.randn(2, 3, 6), 2)
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    clean = topk_reverse_kl(student, top, mask)
    padded = TeacherTopK(
        top.logprobs.masked_fill(~mask[..., None], float("nan")),
        top.ids.masked_fill(~mask[..., None], -1),  # a cache's padding id
        top.tail_logprob.masked_fill(~mask, INF),
    )
    loss = topk_reverse_kl(student, padded, mask)
    assert_close(loss, clean)
    (grad,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()


def test_distillation_bad_inputs():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError, match="shared vocabulary"):
        forward_kl(s, torch.randn(2, 3, 6), mask)
    with pytest.raises(ValueError, match="teacher_logits has shape"):
        reverse_kl(s, torch.randn(2, 4, 5), mask)
    with pytest.raises(ValueError, match="mask has shape"):
        forward_kl(s, t, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask selects no token"):
        forward_kl(s, t, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(s, t, mask, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(s, t, mask, temperature=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        forward_kl(s, t, mask, reduction="batchmean")
    with pytest.raises(ValueError, match="k must be an int"):
        teacher_topk(t, 5)
    top = teacher_topk(t, 2)
    with pytest.raises(ValueError, match="outside"):
        topk_forward_kl(s, top._replace(ids=top.ids + 4), mask)
    with pytest.raises(ValueError, match="repeat"):
        topk_forward_kl(s, top._replace(ids=torch.zeros_like(top.ids)), mask)
    with pytest.raises(ValueError, match="teacher.logprobs has shape"):
        topk_reverse_kl(s, top._replace(logprobs=top.logprobs[..., :1]), mask)
    with pytest.raises(ValueError, match="log-probabilities"):
        topk_reverse_kl(s, top._replace(logprobs=top.logprobs + 5), mask)
    with pytest.raises(ValueError, match="log-probabilities"):
        topk_reverse_kl(s, top._replace(tail_logprob=top.tail_logprob + 5), mask)
    with pytest.raises(ValueError, match="teacher.ids has shape"):
        topk_reverse_kl(s, TeacherTopK(*(x[:1] for x in top)), mask)
    with pytest.raises(ValueError, match="teacher.tail_logprob has shape"):
        topk_reverse_kl(s, top._replace(tail_logprob=top.tail_logprob[..., None]), mask)
    with pytest.raises(TypeError, match="TeacherTopK"):
        topk_reverse_kl(s, (top.logprobs, top.ids), mask)
