"""Distillation divergences: hand-worked values, TRL's GKD loss as reference, top-k with tail."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from torch.testing import assert_close

from lit_qwen3.losses import (
    forward_kl,
    generalized_jsd,
    reverse_kl,
    teacher_topk,
    topk_forward_kl,
    topk_reverse_kl,
)

ONE = torch.ones(1, 1)


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
    ids = teacher.topk(2, -1).indices
    top = teacher.log_softmax(-1).gather(-1, ids)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    for fn in (
        lambda s: forward_kl(s, teacher, mask, 0.8),
        lambda s: reverse_kl(s, teacher, mask, 1.3),
        lambda s: generalized_jsd(s, teacher, mask, beta=0.3, temperature=0.9),
        lambda s: topk_forward_kl(s, top, ids, mask),
        lambda s: topk_reverse_kl(s, top, ids, mask),
    ):
        assert torch.autograd.gradcheck(fn, (student,))


def test_topk_hand_worked():
    # teacher (0.5, 0.25, 0.125, 0.125), k = 2: buckets (0.5, 0.25 | tail 0.25)
    # student (0.4, 0.2, 0.2, 0.2):              buckets (0.4, 0.2  | tail 0.4)
    teacher = logits_of(0.5, 0.25, 0.125, 0.125)
    student = logits_of(0.4, 0.2, 0.2, 0.2)
    top, ids = teacher_topk(teacher, 2)
    assert ids.tolist() == [[[0, 1]]]
    assert_close(top, torch.tensor([[[math.log(0.5), math.log(0.25)]]], dtype=torch.float64))
    # forward: 0.5 ln(0.5/0.4) + 0.25 ln(0.25/0.2) + 0.25 ln(0.25/0.4)
    #        = 0.111572 + 0.055786 - 0.117501 = 0.049857
    assert_close(topk_forward_kl(student, top, ids, ONE).item(), 0.049857, atol=1e-6, rtol=0)
    # reverse: 0.4 ln(0.4/0.5) + 0.2 ln(0.2/0.25) + 0.4 ln(0.4/0.25)
    #        = -0.089257 - 0.044629 + 0.188001 = 0.054115
    assert_close(topk_reverse_kl(student, top, ids, ONE).item(), 0.054115, atol=1e-6, rtol=0)


def test_topk_with_all_but_one_token_is_the_full_kl():
    # k = V - 1 leaves a single token in the tail: the bucketed KL is the exact KL
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.rand(2, 5) > 0.2
    top, ids = teacher_topk(teacher, 7, temperature=1.5)
    assert_close(
        topk_forward_kl(student, top, ids, mask, 1.5), forward_kl(student, teacher, mask, 1.5)
    )
    assert_close(
        topk_reverse_kl(student, top, ids, mask, 1.5), reverse_kl(student, teacher, mask, 1.5)
    )


def test_topk_tail_is_safe_when_topk_holds_all_mass():
    # the teacher puts (numerically) all its mass on token 0: tail mass underflows to 0
    teacher = torch.tensor([[[50.0, -50.0, -50.0, -50.0]]])
    student = torch.randn(1, 1, 4, requires_grad=True)
    top, ids = teacher_topk(teacher, 1)
    loss = topk_forward_kl(student, top, ids, ONE)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    # KL(t || s) -> -log s_0 when the teacher is one-hot on token 0
    assert_close(loss, -student.detach().log_softmax(-1)[0, 0, 0], atol=1e-5, rtol=1e-5)


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
    top, ids = teacher_topk(t, 2)
    with pytest.raises(ValueError, match="outside"):
        topk_forward_kl(s, top, ids + 4, mask)
    with pytest.raises(ValueError, match="repeat"):
        topk_forward_kl(s, top, torch.zeros_like(ids), mask)
    with pytest.raises(ValueError, match="teacher_topk_logprobs has shape"):
        topk_reverse_kl(s, top[..., :1], ids, mask)
    with pytest.raises(ValueError, match="log-probabilities"):
        topk_reverse_kl(s, top + 5, ids, mask)
    with pytest.raises(ValueError, match="teacher_topk_ids has shape"):
        topk_reverse_kl(s, top[:1], ids[:1], mask)
