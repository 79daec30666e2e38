"""Clip-Cov, KL-Cov, pass@k advantages and the sampler/trainer weights, by hand from the papers'
formulas (TRL implements none of the first three); config errors name their key."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lit_qwen3.ops.advantages import passk_analytic_advantages, passk_max_advantages
from lit_qwen3.ops.losses import GRPOLossConfig, group_advantages, grpo_loss
from lit_qwen3.ops.policy_objectives import (
    mismatch_metrics,
    rollout_importance_weights,
    token_covariance,
)

F64 = torch.float64


def cov_batch(drift=(0.0, 0.0, 0.0, 0.0)):
    """Two sequences of two tokens; advantages +2 and 0 (mean 1 over the four tokens), current
    log-probs (-0.5, -3.5 | -1, -3) (mean -2): covariances
    (+1)(1.5) = 1.5, (+1)(-1.5) = -1.5, (-1)(1) = -1, (-1)(-1) = 1."""
    logprobs = torch.tensor([[-0.5, -3.5], [-1.0, -3.0]], dtype=F64)
    old = logprobs - torch.tensor(drift, dtype=F64).view(2, 2)
    return logprobs.requires_grad_(), old, torch.tensor([2.0, 0.0], dtype=F64), torch.ones(2, 2)


def test_token_covariance_hand_worked():
    logprobs, _, adv, mask = cov_batch()
    cov = token_covariance(logprobs, adv[:, None].expand(2, 2), mask)
    assert_close(cov, torch.tensor([[1.5, -1.5], [-1.0, 1.0]], dtype=F64))


def test_clip_cov_detaches_the_covariance_window():
    logprobs, old, adv, mask = cov_batch()
    # window (1.2, 5): only token (0, 0) (cov 1.5); 0.25 x 4 tokens = 1 token to detach
    cfg = GRPOLossConfig(policy_loss="clip_cov", clip_cov_ratio=0.25, clip_cov_lb=1.2)
    loss, metrics = grpo_loss(logprobs, old, adv, mask, cfg)
    # r = 1 everywhere: per-token -A = (-2, -2, 0, 0); (0, 0) zeroed -> -2 / 4 tokens
    assert_close(loss.item(), -0.5)
    assert_close(metrics["cov_selected_frac"].item(), 0.25)
    loss.backward()
    assert_close(logprobs.grad, torch.tensor([[0.0, -0.5], [0.0, 0.0]], dtype=F64))
    # lower bound 0.9 adds token (1, 1) (cov 1.0); ratio 0.5 -> 2 tokens: both detached
    logprobs.grad = None
    cfg = GRPOLossConfig(policy_loss="clip_cov", clip_cov_ratio=0.5, clip_cov_lb=0.9)
    loss, metrics = grpo_loss(logprobs, old, adv, mask, cfg)
    assert_close(metrics["cov_selected_frac"].item(), 0.5)
    # upper bound 1.4 drops token (0, 0) again: only (1, 1), whose advantage is 0
    cfg = GRPOLossConfig(policy_loss="clip_cov", clip_cov_lb=0.9, clip_cov_ub=1.4)
    loss, metrics = grpo_loss(logprobs, old, adv, mask, cfg)
    assert_close(loss.item(), -1.0)
    assert_close(metrics["cov_selected_frac"].item(), 0.25)


def test_clip_cov_skips_tokens_ppo_already_clipped():
    # token (0, 0) drifted up by 0.5: r = 1.6487 > 1.28 with A > 0, PPO clips it; it is no
    # candidate, and nothing else is in the window (1.2, 5)
    logprobs, old, adv, mask = cov_batch(drift=(0.5, 0.0, 0.0, 0.0))
    cfg = GRPOLossConfig(policy_loss="clip_cov", clip_cov_lb=1.2)
    _, metrics = grpo_loss(logprobs, old, adv, mask, cfg)
    assert metrics["cov_selected_frac"].item() == 0
    assert metrics["clip_frac_high"].item() == 0.25


def test_clip_cov_draw_is_random_but_seeded():
    torch.manual_seed(0)
    logprobs = torch.randn(4, 50, dtype=F64)
    adv = torch.randn(4, dtype=F64)
    cfg = GRPOLossConfig(policy_loss="clip_cov", clip_cov_ratio=0.05, clip_cov_lb=0.0)
    picks = []
    for seed in (1, 1, 2):
        g = torch.Generator().manual_seed(seed)
        logprobs.grad = None
        lp = logprobs.clone().requires_grad_()
        loss, metrics = grpo_loss(lp, lp.detach(), adv, torch.ones(4, 50), cfg, generator=g)
        loss.backward()
        picks.append(lp.grad == 0)
        assert_close(metrics["cov_selected_frac"].item(), 10 / 200)  # int(0.05 * 200)
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])


def test_kl_cov_penalises_the_top_covariance_tokens_without_clipping():
    # drifts: (0, 0) +0.1 (the top-covariance token), (0, 1) +0.5 (ratio e^0.5 = 1.65: PPO would
    # clip it), (1, 1) -0.2
    logprobs, old, adv, mask = cov_batch(drift=(0.1, 0.5, 0.0, -0.2))
    cfg = GRPOLossConfig(policy_loss="kl_cov", kl_cov_ratio=0.25, kl_cov_coef=0.5)
    loss, metrics = grpo_loss(logprobs, old, adv, mask, cfg)
    # k = max(int(0.25 * 4), 1) = 1 token, (0, 0): -2 e^0.1 + 0.5 |0.1|; (0, 1): -2 e^0.5;
    # row 1 has A = 0 and is not selected: 0
    expected = (-2 * math.exp(0.1) + 0.05 - 2 * math.exp(0.5)) / 4
    assert_close(loss.item(), expected)
    assert_close(metrics["cov_selected_frac"].item(), 0.25)
    assert "clip_frac_high" not in metrics
    loss.backward()
    grad = torch.tensor([[-2 * math.exp(0.1) + 0.5, -2 * math.exp(0.5)], [0.0, 0.0]], dtype=F64)
    assert_close(logprobs.grad, grad / 4)


# ----------------------------------------------------------------------------- pass@k
def test_passk_analytic_hand_worked():
    # N = 4, k = 2.
    # one correct: R = 1 - C(3,2)/C(4,2) = 1/2, s = 1/2; A+ = (1/2)/(1/2) = 1,
    #   A- = (1 - 1/2 - C(2,1)/C(3,1)) / (1/2) = (1/2 - 2/3) * 2 = -1/3
    # two correct: R = 1 - 1/6 = 5/6, s = sqrt(5)/6; A+ = (1/6)/s = 1/sqrt5,
    #   A- = (1/6 - C(1,1)/C(3,1)) / s = (-1/6)/s = -1/sqrt5
    # three correct: no 2-subset fails (R = 1, s = 0) -> 0; none correct -> 0
    rewards = torch.tensor([1.0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0])
    r5 = 1 / math.sqrt(5)
    expected = [1, -1 / 3, -1 / 3, -1 / 3, -r5, r5, r5, -r5, 0, 0, 0, 0, 0, 0, 0, 0]
    assert_close(passk_analytic_advantages(rewards, 4, 2), torch.tensor(expected))


def test_passk_analytic_k1_is_grpo_with_population_std():
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 0, 1, 1])
    centred = group_advantages(rewards, 4, scale=None).view(2, 4)
    expected = centred / rewards.view(2, 4).std(1, unbiased=False, keepdim=True)
    assert_close(passk_analytic_advantages(rewards, 4, 1), expected.reshape(-1))


def test_passk_analytic_bad_inputs():
    with pytest.raises(ValueError, match="binary"):
        passk_analytic_advantages(torch.tensor([0.5, 1.0]), 2, 1)
    with pytest.raises(ValueError, match="pass_k"):
        passk_analytic_advantages(torch.tensor([0.0, 1.0]), 2, 3)


def test_passk_max_hand_worked():
    # group 1: best 0.9 (index 1), runner-up 0.5: gap 0.4; Bessel std: mean 0.425, squared
    #   deviations 0.050625 + 0.225625 + 0.005625 + 0.105625 = 0.3875, / 3 -> sqrt = 0.359398
    #   -> 0.4 / 0.359398 = 1.112973 on index 1, 0 elsewhere
    # group 2: two rollouts tie at 0.9: gap 0 -> all 0
    rewards = torch.tensor([0.2, 0.9, 0.5, 0.1, 0.2, 0.9, 0.5, 0.9])
    expected = torch.tensor([0, 1.112973, 0, 0, 0, 0, 0, 0])
    assert_close(passk_max_advantages(rewards, 4), expected, atol=1e-5, rtol=1e-5)
    unscaled = passk_max_advantages(rewards, 4, scale=False)
    assert_close(unscaled, torch.tensor([0, 0.4, 0, 0, 0, 0, 0, 0]))


# ----------------------------------------------------------------------------- mismatch
def mismatch_batch():
    """trainer/sampler ratios per token: (2, 2, 1 | 1/4, 1, 4); products 4 and 1."""
    rollout = torch.zeros(2, 3, dtype=F64)
    ratios = torch.tensor([[2.0, 2.0, 1.0], [0.25, 1.0, 4.0]], dtype=F64)
    return ratios.log(), rollout, torch.ones(2, 3)


@pytest.mark.parametrize(
    ("mode", "low", "high", "expected", "flagged"),
    [
        ("token_truncate", 0.5, 1.5, [[1.5, 1.5, 1.0], [0.5, 1.0, 1.5]], 4 / 6),
        ("token_mask", 0.5, 3.0, [[2.0, 2.0, 1.0], [0.0, 1.0, 0.0]], 2 / 6),
        ("sequence_truncate", None, 3.0, [[3.0] * 3, [1.0] * 3], 1 / 2),
        ("sequence_mask", None, 3.0, [[0.0] * 3, [1.0] * 3], 1 / 2),
    ],
)
def test_rollout_importance_weights_hand_worked(mode, low, high, expected, flagged):
    trainer, rollout, mask = mismatch_batch()
    weights, metrics = rollout_importance_weights(trainer, rollout, mask, mode, low, high)
    assert_close(weights, torch.tensor(expected, dtype=F64))
    flag = "is_truncated_frac" if mode.endswith("truncate") else "is_masked_frac"
    assert_close(metrics[flag].item(), flagged)


def test_mismatch_metrics_hand_worked():
    trainer, rollout, mask = mismatch_batch()
    mask[1, 2] = 0  # the 4x token is not trained: out of every metric
    d = -torch.tensor([2.0, 2.0, 1.0, 0.25, 1.0]).log()  # log sampler - log trainer
    out = mismatch_metrics(trainer, rollout, mask)
    assert_close(out["kl"].item(), float((torch.expm1(-d) + d).mean()))
    assert_close(out["kl_k1"].item(), float(d.mean()))
    assert_close(out["logprob_diff_max"].item(), math.log(4))
    assert out["kl"] > 0


def test_sequence_mask_drops_whole_sequences_from_the_loss():
    trainer, rollout, mask = mismatch_batch()
    logprobs = trainer.clone().requires_grad_()  # on-policy for the trainer: r = 1
    cfg = GRPOLossConfig(rollout_is="sequence_mask", rollout_is_max=3.0)
    adv = torch.tensor([1.0, 1.0], dtype=F64)
    loss, metrics = grpo_loss(logprobs, trainer, adv, mask, cfg, rollout_logprobs=rollout)
    loss.backward()
    # sequence 0 (product 4 > 3) is masked but still counted: -(0 + 3) / 6 tokens
    assert_close(loss.item(), -0.5)
    assert logprobs.grad[0].abs().max() == 0 and (logprobs.grad[1] == -1 / 6).all()
    assert_close(metrics["is_masked_frac"].item(), 0.5)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy_loss": "ppo"}, "policy_loss must be one of"),
        ({"importance_sampling_level": "seq"}, "importance_sampling_level must be one of"),
        ({"sapo_temperature_neg": 0.0}, "sapo_temperature_neg"),
        ({"cispo_max": -1.0}, "cispo_max"),
        ({"clip_cov_ratio": 0.0}, "clip_cov_ratio"),
        ({"clip_cov_lb": 5.0, "clip_cov_ub": 1.0}, "clip_cov_lb must be below .*clip_cov_ub"),
        ({"kl_cov_coef": -1.0}, "kl_cov_coef"),
        ({"top_entropy_quantile": 0.0}, "top_entropy_quantile"),
        ({"rollout_is": "token"}, "rollout_is must be None or one of"),
        ({"rollout_is": "token_mask", "rollout_is_max": None}, "rollout_is_max must be set"),
        ({"rollout_is_min": 2.0, "rollout_is_max": 1.0}, "rollout_is_min must be below"),
        ({"policy_loss": "sapo", "dual_clip": 3.0}, "dual_clip must be None with policy_loss"),
        ({"tis_cap": 2.0, "rollout_is": "token_truncate"}, "tis_cap must be None when rollout_is"),
    ],
)
def test_config_errors_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRPOLossConfig(**kwargs)


def test_methods_keep_the_global_normaliser_and_empty_masks():
    """Every method divides by the caller's global count (gradient accumulation, data
    parallel) and gives a connected zero on an all-masked micro-batch."""
    torch.manual_seed(0)
    old = -torch.rand(3, 5, dtype=F64) - 0.1
    lp = (old + 0.2 * torch.randn(3, 5, dtype=F64)).requires_grad_()
    adv, mask, ent = torch.randn(3, dtype=F64), torch.ones(3, 5), torch.rand(3, 5, dtype=F64)
    for cfg in (
        GRPOLossConfig(importance_sampling_level="sequence"),
        GRPOLossConfig(importance_sampling_level="sequence_token"),
        GRPOLossConfig(policy_loss="sapo"),
        GRPOLossConfig(policy_loss="cispo"),
        GRPOLossConfig(policy_loss="clip_cov", clip_cov_lb=-10.0),
        GRPOLossConfig(policy_loss="kl_cov"),
        GRPOLossConfig(top_entropy_quantile=0.5),
        GRPOLossConfig(rollout_is="sequence_truncate"),
    ):
        kwargs = {"entropy": ent, "rollout_logprobs": old - 0.1}
        local, _ = grpo_loss(lp, old, adv, mask, cfg, **kwargs, generator=torch.Generator())
        doubled, _ = grpo_loss(
            lp, old, adv, mask, cfg, num_items_in_batch=30, **kwargs, generator=torch.Generator()
        )
        assert_close(doubled, local / 2)
        empty, _ = grpo_loss(lp, old, adv, torch.zeros(3, 5), cfg, **kwargs)
        assert empty.item() == 0 and empty.requires_grad
