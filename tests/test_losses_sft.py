"""SFT cross-entropy (masked, packed, shifted) and the Bradley-Terry reward-model loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close
from transformers.loss.loss_utils import ForCausalLMLoss

from lit_qwen3.ops.losses import bradley_terry_loss, causal_lm_loss, masked_cross_entropy

LN3 = math.log(3)


def three_tokens():
    # row 0: logits (0, 0),     label 0: -ln(1/2) = 0.693147
    # row 1: logits (ln 3, 0),  label 1: p = 1/4, -ln(1/4) = 1.386294
    # row 2: logits (0, ln 3),  label 1: p = 3/4, -ln(3/4) = 0.287682
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [0.0, LN3]]], requires_grad=True)
    return logits, torch.tensor([[0, 1, 1]])


def test_masked_cross_entropy_hand_worked():
    logits, labels = three_tokens()
    mask = torch.tensor([[1, 1, 0]])
    # mean over the two counted tokens: (0.693147 + 1.386294) / 2 = 1.039721
    assert_close(masked_cross_entropy(logits, labels, mask), torch.tensor(1.039721))
    assert_close(
        masked_cross_entropy(logits, labels, mask, reduction="sum"), torch.tensor(2.079442)
    )
    per_token = masked_cross_entropy(logits, labels, mask.bool(), reduction="none")
    assert_close(per_token, torch.tensor([[0.693147, 1.386294, 0.0]]))


def test_packed_document_start_is_not_a_target():
    logits, labels = three_tokens()
    # two packed documents; the target at index 1 has position 0: it starts document 2 and
    # is excluded -> (0.693147 + 0.287682) / 2 = 0.490415
    position_ids = torch.tensor([[1, 0, 1]])
    loss = masked_cross_entropy(logits, labels, torch.ones(1, 3), position_ids=position_ids)
    assert_close(loss, torch.tensor(0.490415))
    loss.backward()
    assert logits.grad[0, 1].abs().max() == 0


def test_causal_lm_loss_matches_transformers_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 9, 17)
    input_ids = torch.randint(0, 17, (3, 9))
    loss_mask = torch.rand(3, 9) > 0.4
    loss_mask[0, 5] = True
    labels = input_ids.masked_fill(~loss_mask, -100)
    reference = ForCausalLMLoss(logits, labels, vocab_size=17)
    assert_close(causal_lm_loss(logits, input_ids, loss_mask), reference)


def test_causal_lm_loss_gradcheck_float64():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 6, (2, 5))
    mask = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 1, 1, 1]])
    assert torch.autograd.gradcheck(lambda z: causal_lm_loss(z, ids, mask), (logits,))


def test_sft_bad_inputs():
    logits, labels = three_tokens()
    with pytest.raises(ValueError, match="selects no target token"):
        masked_cross_entropy(logits, labels, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="loss_mask has shape"):
        masked_cross_entropy(logits, labels, torch.ones(1, 2))
    with pytest.raises(ValueError, match="only 0 and 1"):
        masked_cross_entropy(logits, labels, torch.full((1, 3), 0.5))
    with pytest.raises(ValueError, match="reduction"):
        masked_cross_entropy(logits, labels, torch.ones(1, 3), reduction="avg")
    with pytest.raises(ValueError, match="id 2, outside"):
        masked_cross_entropy(logits, torch.tensor([[0, 2, 1]]), torch.ones(1, 3))
    with pytest.raises(ValueError, match="position_ids has shape"):
        masked_cross_entropy(logits, labels, torch.ones(1, 3), position_ids=torch.ones(1, 4))
    with pytest.raises(ValueError, match="logits has shape"):
        causal_lm_loss(torch.randn(1, 4, 2), torch.zeros(1, 3).long(), torch.ones(1, 3))


def test_bradley_terry_hand_worked():
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0])
    # -logsigmoid(2) = ln(1 + e^-2) = 0.126928, -logsigmoid(0) = ln 2 = 0.693147; mean 0.410038
    assert_close(bradley_terry_loss(chosen, rejected), torch.tensor(0.410038))
    # margin 1: ln(1 + e^-1) = 0.313262, ln(1 + e) = 1.313262; mean 0.813262
    loss = bradley_terry_loss(chosen, rejected, margin=1.0)
    assert_close(loss, torch.tensor(0.813262))
    loss.backward()
    # d/dc -logsigmoid(c - m) = -(1 - sigmoid(c - m)) / 2 per pair: -(1 - 0.731059)/2, -(1 - 0.268941)/2
    assert_close(chosen.grad, torch.tensor([-0.134471, -0.365529]))
    per_pair = bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 1.0]))
    assert_close(per_pair, torch.tensor(0.813262))


def test_bradley_terry_bad_inputs():
    with pytest.raises(ValueError, match="rejected_scores has shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="margin has shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), margin=torch.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        bradley_terry_loss(torch.zeros(0), torch.zeros(0))
    # 1e300 is a finite Python float but inf in float32: an error, never an infinite loss.
    with pytest.raises(ValueError, match=r"margin must be finite in torch.float32, got \[inf\]"):
        bradley_terry_loss(torch.zeros(1), torch.zeros(1), margin=torch.tensor([1e300]))
    with pytest.raises(ValueError, match="margin must be finite"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), margin=1e300)


def test_bradley_terry_is_finite_in_bfloat16_with_a_large_margin():
    # bf16 scores minus a margin of 100: computed in float32, exact softplus, gradient -1.
    chosen = torch.tensor([3.0], dtype=torch.bfloat16, requires_grad=True)
    loss = bradley_terry_loss(chosen, torch.tensor([1.0], dtype=torch.bfloat16), margin=100.0)
    assert loss.dtype == torch.float32
    assert_close(loss, torch.tensor(98.0))  # -logsigmoid(-98) = 98 + log(1 + e^-98)
    loss.backward()
    assert_close(chosen.grad.float(), torch.tensor([-1.0]))
