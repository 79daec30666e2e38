"""GRPO family: advantages, KL estimators, loss aggregation, clipped objective, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lit_qwen3.ops.losses import (
    GRPOLossConfig,
    aggregate_loss,
    completion_mask,
    group_advantages,
    groups_with_signal,
    grpo_loss,
    kl_estimate,
)

# ----------------------------------------------------------------------------- advantages
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # two groups of 3


def test_group_advantages_group_std():
    # group 1: mean 1/3, std (Bessel) = sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3) = 0.577350
    #   -> (2/3, -1/3, -1/3) / 0.577350 = (1.154701, -0.577350, -0.577350)
    # group 2: all equal -> 0 / (0 + eps) = 0
    expected = torch.tensor([1.154701, -0.577350, -0.577350, 0.0, 0.0, 0.0])
    assert_close(group_advantages(REWARDS, 3), expected, atol=1e-5, rtol=1e-5)


def test_group_advantages_batch_std_and_unscaled():
    # batch std (Bessel) of all six: mean 2/3, squared deviations 4 x 1/9 + 2 x 4/9 = 4/3,
    # / 5 = 0.266667, sqrt = 0.516398; centred (2/3, -1/3, -1/3, 0, 0, 0) / 0.516398
    expected = torch.tensor([1.290994, -0.645497, -0.645497, 0.0, 0.0, 0.0])
    assert_close(group_advantages(REWARDS, 3, scale="batch"), expected, atol=1e-5, rtol=1e-5)
    # Dr.GRPO: centred only
    assert_close(
        group_advantages(REWARDS, 3, scale=None), torch.tensor([2 / 3, -1 / 3, -1 / 3, 0, 0, 0])
    )


def test_group_advantages_leave_one_out():
    # RLOO baselines in group 1: (0 + 0) / 2 = 0, (1 + 0) / 2 = 0.5, 0.5 -> (1, -0.5, -0.5)
    out = group_advantages(REWARDS, 3, scale=None, leave_one_out=True)
    assert_close(out, torch.tensor([1.0, -0.5, -0.5, 0.0, 0.0, 0.0]))
    # it is the mean-centred advantage times n / (n - 1)
    assert_close(out, group_advantages(REWARDS, 3, scale=None) * 3 / 2)


def test_groups_with_signal():
    assert groups_with_signal(REWARDS, 3).tolist() == [True] * 3 + [False] * 3


def test_group_advantages_bad_inputs():
    with pytest.raises(ValueError, match="not a positive multiple of group_size=4"):
        group_advantages(REWARDS, 4)
    with pytest.raises(ValueError, match="group_size must be an int >= 2"):
        group_advantages(REWARDS, 1)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(REWARDS.view(2, 3), 3)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(REWARDS, 3, scale="token")
    with pytest.raises(ValueError, match=r"rewards\[2\] is nan"):
        group_advantages(torch.tensor([0.0, 1.0, math.nan, 0.0]), 2)


# ----------------------------------------------------------------------------- KL
def test_kl_estimators_hand_worked():
    # policy 0.5, reference 0.25 on the sampled token: d = ln 2 = 0.693147
    # k1 = d; k2 = d^2 / 2 = 0.240227; k3 = e^-d - 1 + d = 0.5 - 1 + 0.693147 = 0.193147
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert_close(kl_estimate(lp, ref, "k1"), torch.tensor([0.693147]))
    assert_close(kl_estimate(lp, ref, "k2"), torch.tensor([0.240227]))
    assert_close(kl_estimate(lp, ref, "k3"), torch.tensor([0.193147]))


def test_k1_and_k3_are_unbiased():
    # exact expectation over a 3-token policy: E_pi[k] must equal KL(pi || ref)
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    true_kl = (pi * (pi / ref).log()).sum()  # 0.5 ln 2.5 + 0.2 ln 0.4 = 0.274887
    assert_close(true_kl, torch.tensor(0.274887, dtype=torch.float64), atol=1e-6, rtol=0)
    for estimator in ("k1", "k3"):
        expectation = (pi * kl_estimate(pi.log(), ref.log(), estimator)).sum()
        assert_close(expectation, true_kl)
    k2 = (pi * kl_estimate(pi.log(), ref.log(), "k2")).sum()
    assert k2 != pytest.approx(true_kl.item())  # biased


def test_kl_bad_inputs():
    with pytest.raises(ValueError, match="estimator"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="ref_logprobs has shape"):
        kl_estimate(torch.zeros(2), torch.zeros(3))


# ----------------------------------------------------------------------------- aggregation
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # third row: empty completion


def test_aggregate_modes_hand_worked():
    # token_mean: (1 + 2 + 3 + 5) / 4 tokens = 2.75
    assert_close(aggregate_loss(PER_TOKEN, MASK, "token_mean"), torch.tensor(2.75))
    # seq_mean_token_mean: (6 / 3 + 5 / 1) / 2 non-empty sequences = 3.5
    assert_close(aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_mean"), torch.tensor(3.5))
    # Dr.GRPO: (6 / 4 + 5 / 4 + 0 / 4) / 3 sequences = 0.916667; max_tokens 8 halves it
    dr = aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm")
    assert_close(dr, torch.tensor(11 / 12))
    dr8 = aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_tokens=8)
    assert_close(dr8, torch.tensor(11 / 24))
    # global normaliser (gradient accumulation): 11 / 10 tokens in the whole batch
    assert_close(aggregate_loss(PER_TOKEN, MASK, num_items_in_batch=10), torch.tensor(1.1))


def test_aggregate_ignores_garbage_under_the_mask():
    garbage = PER_TOKEN.clone()
    garbage[0, 3] = math.nan
    assert_close(aggregate_loss(garbage, MASK), torch.tensor(2.75))


def test_aggregate_bad_inputs():
    with pytest.raises(ValueError, match="mode"):
        aggregate_loss(PER_TOKEN, MASK, "seq_sum")
    with pytest.raises(ValueError, match="selects no token"):
        aggregate_loss(PER_TOKEN, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mask has shape"):
        aggregate_loss(PER_TOKEN, MASK[:, :3])
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_tokens=0)


def test_completion_mask_drops_truncated_rows():
    raw = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    truncated = torch.tensor([True, False, False])
    assert completion_mask(raw, truncated).tolist() == [
        [False] * 3,
        [True, True, False],
        [False] * 3,
    ]
    assert completion_mask(raw, truncated, mask_truncated=False).tolist() == raw.bool().tolist()
    with pytest.raises(ValueError, match="truncated has shape"):
        completion_mask(raw, torch.tensor([True]))


# ----------------------------------------------------------------------------- grpo_loss
def two_sequences():
    """Ratios chosen by hand; sequence 0 has advantage +1, sequence 1 has -1."""
    ratios = torch.tensor([[1.0, 1.5, 0.5, 1.2], [1.0, 0.5, 1.5, 4.0]], dtype=torch.float64)
    old = torch.full_like(ratios, -1.0)
    logprobs = (old + ratios.log()).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    return logprobs, old, torch.tensor([1.0, -1.0], dtype=torch.float64), mask


# Per-token loss max(-A r, -A clip(r, 0.8, 1.28)):
#   A = +1: r = 1 -> -1; r = 1.5 -> max(-1.5, -1.28) = -1.28 (high clip); r = 0.5 -> -0.5;
#           r = 1.2 -> -1.2 (masked out)                       masked sum -2.78 over 3 tokens
#   A = -1: r = 1 -> 1; r = 0.5 -> max(0.5, 0.8) = 0.8 (low clip); r = 1.5 -> 1.5; r = 4 -> 4
#                                                               sum 7.3 over 4 tokens
def test_grpo_loss_token_mean_hand_worked():
    logprobs, old, adv, mask = two_sequences()
    loss, metrics = grpo_loss(logprobs, old, adv, mask, GRPOLossConfig())
    # (-2.78 + 7.3) / 7 = 0.645714
    assert_close(loss, torch.tensor(4.52 / 7, dtype=torch.float64))
    assert_close(metrics["pg_loss"], loss.detach())
    assert_close(metrics["clip_frac_high"], torch.tensor(1 / 7, dtype=torch.float64))
    assert_close(metrics["clip_frac_low"], torch.tensor(1 / 7, dtype=torch.float64))
    # ratios over the 7 masked tokens: sum 10 -> mean 1.428571, min 0.5, max 4
    assert_close(metrics["ratio_mean"], torch.tensor(10 / 7, dtype=torch.float64))
    assert metrics["ratio_min"].item() == pytest.approx(0.5)
    assert metrics["ratio_max"].item() == pytest.approx(4.0)
    # approx KL(old || new) by k3 = r - 1 - ln r, averaged over the masked tokens
    r = torch.tensor([1.0, 1.5, 0.5, 1.0, 0.5, 1.5, 4.0], dtype=torch.float64)
    assert_close(metrics["approx_kl"], (r - 1 - r.log()).mean())
    assert all(not v.requires_grad for v in metrics.values())
    loss.backward()
    # d/dlogp of -A r is -A r where unclipped, 0 where clipped; / 7 tokens
    expected = torch.tensor([[-1.0, 0.0, -0.5, 0.0], [1.0, 0.0, 1.5, 4.0]], dtype=torch.float64)
    assert_close(logprobs.grad, expected / 7)


def test_grpo_loss_aggregations_and_dual_clip():
    logprobs, old, adv, mask = two_sequences()
    # GRPO: (-2.78 / 3 + 7.3 / 4) / 2 = (-0.926667 + 1.825) / 2 = 0.449167
    cfg = GRPOLossConfig(loss_agg_mode="seq_mean_token_mean")
    assert_close(grpo_loss(logprobs, old, adv, mask, cfg)[0].item(), 0.449167, atol=1e-6, rtol=0)
    # Dr.GRPO with T = 4: (-2.78 + 7.3) / 4 / 2 = 0.565
    cfg = GRPOLossConfig(loss_agg_mode="seq_mean_token_sum_norm")
    assert_close(grpo_loss(logprobs, old, adv, mask, cfg)[0].item(), 0.565)
    # dual clip 3: the A = -1, r = 4 token is capped at 3 -> (-2.78 + 6.3) / 7 = 0.502857
    loss, metrics = grpo_loss(logprobs, old, adv, mask, GRPOLossConfig(dual_clip=3.0))
    assert_close(loss.item(), 3.52 / 7)
    assert_close(metrics["dual_clip_frac"].item(), 1 / 7)
    loss.backward()
    assert logprobs.grad[1, 3] == 0  # the dual-clipped token gets no gradient


def test_grpo_loss_per_token_advantages_equal_broadcast():
    logprobs, old, adv, mask = two_sequences()
    per_seq = grpo_loss(logprobs, old, adv, mask)[0]
    per_token = grpo_loss(logprobs, old, adv[:, None].expand(2, 4).clone(), mask)[0]
    assert_close(per_seq, per_token)


def test_grpo_loss_kl_and_entropy_terms():
    logprobs, old, adv, mask = two_sequences()
    ref = logprobs.detach() - 0.5  # d = 0.5 everywhere: k3 = e^-0.5 - 1 + 0.5 = 0.106531
    entropy = torch.full((2, 4), 2.0, dtype=torch.float64, requires_grad=True)
    cfg = GRPOLossConfig(kl_coef=0.1, entropy_coef=0.01)
    loss, metrics = grpo_loss(logprobs, old, adv, mask, cfg, ref_logprobs=ref, entropy=entropy)
    # 0.645714 + 0.1 * 0.106531 - 0.01 * 2.0
    assert_close(loss.item(), 4.52 / 7 + 0.1 * (math.exp(-0.5) - 0.5) - 0.02)
    assert_close(metrics["kl"].item(), math.exp(-0.5) - 0.5)
    assert_close(metrics["entropy"].item(), 2.0)
    loss.backward()
    # entropy bonus gradient: -0.01 / 7 on each masked token
    assert_close(entropy.grad, -0.01 / 7 * mask.to(torch.float64))


def test_grpo_loss_truncated_importance_sampling():
    logprobs, old, adv, mask = two_sequences()
    # sampler log-probs: pi_old / pi_rollout = 2 on sequence 0 (capped at 1.5), 0.5 on sequence 1
    rollout = old - torch.tensor([[math.log(2.0)], [math.log(0.5)]], dtype=torch.float64)
    cfg = GRPOLossConfig(tis_cap=1.5)
    loss, metrics = grpo_loss(logprobs, old, adv, mask, cfg, rollout_logprobs=rollout)
    # (1.5 x -2.78 + 0.5 x 7.3) / 7 = (-4.17 + 3.65) / 7 = -0.074286
    assert_close(loss.item(), -0.52 / 7)
    # weights over masked tokens: 3 x 1.5 + 4 x 0.5 = 6.5 -> mean 0.928571; 3 of 7 capped
    assert_close(metrics["tis_weight_mean"].item(), 6.5 / 7)
    assert_close(metrics["tis_clip_frac"].item(), 3 / 7)


def test_grpo_loss_all_masked_is_zero_but_connected():
    logprobs, old, adv, _ = two_sequences()
    loss, metrics = grpo_loss(logprobs, old, adv, torch.zeros(2, 4))
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert logprobs.grad.abs().max() == 0
    assert metrics["clip_frac_high"].item() == 0 and metrics["ratio_max"].item() == 0


def test_grpo_loss_gradcheck_float64():
    torch.manual_seed(0)
    old = torch.randn(3, 5, dtype=torch.float64)
    logprobs = (old + 0.4 * torch.rand(3, 5, dtype=torch.float64) - 0.2).requires_grad_()
    entropy = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(3, dtype=torch.float64)
    mask = torch.rand(3, 5) > 0.3
    mask[:, 0] = True
    ref = old - 0.1
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        cfg = GRPOLossConfig(loss_agg_mode=mode, kl_coef=0.05, entropy_coef=0.01, dual_clip=2.0)

        def fn(lp, ent, cfg=cfg):
            return grpo_loss(lp, old, adv, mask, cfg, ref_logprobs=ref, entropy=ent)[0]

        assert torch.autograd.gradcheck(fn, (logprobs, entropy))


def test_grpo_config_validation():
    for kwargs, match in [
        ({"eps_low": 1.0}, "eps_low must be a number in"),
        ({"eps_high": -0.1}, "eps_high"),
        ({"dual_clip": 1.0}, "dual_clip must be None or a number > 1"),
        ({"loss_agg_mode": "sum"}, "loss_agg_mode"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"kl_estimator": "k9"}, "kl_estimator"),
        ({"entropy_coef": math.inf}, "entropy_coef"),
        ({"tis_cap": 0.0}, "tis_cap"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"eps_low": "0.2"}, "eps_low"),
    ]:
        with pytest.raises(ValueError, match=match):
            GRPOLossConfig(**kwargs)


def test_grpo_loss_bad_inputs():
    logprobs, old, adv, mask = two_sequences()
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        grpo_loss(logprobs, old[:, :3], adv, mask)
    with pytest.raises(ValueError, match="advantages has shape"):
        grpo_loss(logprobs, old, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="mask has shape"):
        grpo_loss(logprobs, old, adv, mask[:1])
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        grpo_loss(logprobs, old, adv, mask, GRPOLossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="needs entropy"):
        grpo_loss(logprobs, old, adv, mask, GRPOLossConfig(entropy_coef=0.1))
    with pytest.raises(ValueError, match="rollout_logprobs"):
        grpo_loss(logprobs, old, adv, mask, GRPOLossConfig(tis_cap=2.0))


def test_masked_mean():
    from lit_qwen3.ops.losses import masked_mean

    # row means (1 + 2 + 3) / 3 = 2 and 5 / 1 = 5; empty row -> 0, not NaN; overall 11 / 4
    assert_close(masked_mean(PER_TOKEN, MASK, dim=-1), torch.tensor([2.0, 5.0, 0.0]))
    assert_close(masked_mean(PER_TOKEN, MASK), torch.tensor(2.75))
    assert masked_mean(PER_TOKEN, torch.zeros(3, 4)).item() == 0.0


def test_soft_overlong_penalty_ramps_over_the_buffer():
    from lit_qwen3.ops.losses import soft_overlong_penalty

    lengths = torch.tensor([10, 12, 14, 15, 16, 20])
    # max 16, buffer 4: free up to 12 tokens, then -1/4 per token down to -factor at 16.
    expected = torch.tensor([0.0, 0.0, -1.0, -1.5, -2.0, -2.0])
    torch.testing.assert_close(soft_overlong_penalty(lengths, 16, 4, factor=2.0), expected)
    with pytest.raises(ValueError, match="buffer"):
        soft_overlong_penalty(lengths, 16, 0)
