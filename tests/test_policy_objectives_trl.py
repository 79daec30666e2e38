"""GSPO, SAPO, CISPO, high-entropy tokens and sampler/trainer correction against TRL's own
``GRPOTrainer._compute_loss`` on the same tensors: loss values and gradients must agree."""

from __future__ import annotations

import math
import os
import types
import warnings
from collections import defaultdict

import pytest
import torch
from torch.testing import assert_close

from lit_qwen3.ops.losses import GRPOLossConfig, grpo_loss

B, T = 4, 6


class _Accelerator:
    """TRL's single-process accelerator: gathers and reductions are identities."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x.reshape(1) if x.dim() == 0 else x

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x

    gather_for_metrics = gather


@pytest.fixture(scope="module")
def trl_trainer():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    pytest.importorskip("trl", reason="TRL (the bench extra) not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl import GRPOTrainer
    return GRPOTrainer


def batch(seed: int = 0, per_token_adv: bool = False):
    """Log-probs drifted from the old ones by up to +-0.4 (so clips bite), a ragged mask."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 0.1
    logprobs = old + (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5) * 0.8
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    shape = (B, T) if per_token_adv else (B,)
    adv = torch.randn(*shape, generator=g, dtype=torch.float64)
    entropy = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    return logprobs, old, adv, mask, entropy


def trl_loss(trainer_cls, logprobs, old, adv, mask, entropy, *, is_ratio=None, **args):
    """TRL's loss and d loss / d logprobs, with the model forward replaced by our tensors."""
    leaf = logprobs.clone().requires_grad_()
    defaults = {
        "loss_type": "dapo",
        "importance_sampling_level": "token",
        "epsilon_low": 0.2,
        "epsilon_high": 0.28,
        "top_entropy_quantile": 1.0,
        "sapo_temperature_pos": 1.0,
        "sapo_temperature_neg": 1.05,
    }
    defaults.update(args)
    fake = types.SimpleNamespace(
        accelerator=_Accelerator(),
        model=types.SimpleNamespace(training=True),
        aux_loss_enabled=False,
        off_policy_mask_threshold=None,
        beta=0.0,
        use_vllm=is_ratio is not None,
        vllm_importance_sampling_correction=is_ratio is not None,
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _get_per_token_logps_and_entropies=lambda *a, **k: (leaf, entropy, None),
        args=types.SimpleNamespace(
            delta=None,
            use_bias_correction_kl=False,
            steps_per_generation=1,
            sapo_temperature_pos=defaults.pop("sapo_temperature_pos"),
            sapo_temperature_neg=defaults.pop("sapo_temperature_neg"),
        ),
        **defaults,
    )
    fake.get_high_entropy_mask = types.MethodType(trainer_cls.get_high_entropy_mask, fake)
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": mask.sum().to(torch.float64),
    }
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    loss = trainer_cls._compute_loss(fake, None, inputs)
    loss.backward()
    return loss.detach(), leaf.grad


def ours(logprobs, old, adv, mask, entropy, config, **kwargs):
    leaf = logprobs.clone().requires_grad_()
    n = mask.sum() if config.loss_agg_mode == "token_mean" else None
    loss, metrics = grpo_loss(
        leaf, old, adv, mask, config, entropy=entropy, num_items_in_batch=n, **kwargs
    )
    loss.backward()
    return loss.detach(), leaf.grad, metrics


def check(reference, mine, rtol=1e-9):
    assert_close(mine[0], reference[0], rtol=rtol, atol=1e-12)
    assert_close(mine[1], reference[1], rtol=rtol, atol=1e-12)
    assert reference[1].abs().sum() > 0  # a gradient to compare


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_token_mean_matches_trl_dapo(trl_trainer, seed):
    args = batch(seed)
    check(trl_loss(trl_trainer, *args), ours(*args, GRPOLossConfig()))


@pytest.mark.parametrize("seed", [0, 1])
def test_gspo_matches_trl_sequence_level(trl_trainer, seed):
    """GSPO (Zheng et al. 2025): one length-normalised ratio per sequence, clipped at
    1 -+ (3e-4, 4e-4), sequence-mean aggregation (TRL's recommended GSPO setup)."""
    args = batch(seed)
    theirs = trl_loss(
        trl_trainer,
        *args,
        loss_type="grpo",
        importance_sampling_level="sequence",
        epsilon_low=3e-4,
        epsilon_high=4e-4,
    )
    config = GRPOLossConfig(
        importance_sampling_level="sequence",
        eps_low=3e-4,
        eps_high=4e-4,
        loss_agg_mode="seq_mean_token_mean",
    )
    mine = ours(*args, config)
    check(theirs, mine)
    assert 0 < mine[2]["clip_frac_high"] + mine[2]["clip_frac_low"] < 1  # the clip bites
    # GSPO-token (verl's form) has the same value and, with sequence advantages, the same
    # gradient; TRL has no GSPO-token, so this is the check that it is GSPO.
    config.importance_sampling_level = "sequence_token"
    check(theirs, ours(*args, config))


def test_gspo_token_weights_each_token_by_its_own_advantage():
    logprobs, old, _, mask, entropy = batch(0)
    per_token = torch.zeros(B, T, dtype=torch.float64)
    per_token[:, 0] = 1.0  # only the first token of each sequence has an advantage
    config = GRPOLossConfig(
        importance_sampling_level="sequence_token", eps_low=10.0 / 11, eps_high=10.0
    )
    _, grad, _ = ours(logprobs, old, per_token, mask, entropy, config)
    # d/dlogp_t of -A_t s_i with s_i = exp(mean log-ratio) and per-token gradient form:
    # -A_t s_i, / (number of tokens); zero where A_t = 0. The "sequence" form would spread
    # the first token's advantage over the whole sequence through the mean instead.
    m = mask.bool()
    s = torch.exp(((logprobs - old) * m).sum(-1) / m.sum(-1))
    expected = torch.zeros(B, T, dtype=torch.float64)
    expected[:, 0] = -s / mask.sum()
    assert_close(grad, expected)
    config.importance_sampling_level = "sequence"
    _, grad_seq, _ = ours(logprobs, old, per_token, mask, entropy, config)
    assert grad_seq[0, 1:].abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("temps", [(1.0, 1.05), (0.5, 2.0)])
def test_sapo_matches_trl(trl_trainer, seed, temps):
    args = batch(seed)
    theirs = trl_loss(
        trl_trainer,
        *args,
        loss_type="sapo",
        sapo_temperature_pos=temps[0],
        sapo_temperature_neg=temps[1],
    )
    config = GRPOLossConfig(
        policy_loss="sapo",
        sapo_temperature_pos=temps[0],
        sapo_temperature_neg=temps[1],
        loss_agg_mode="seq_mean_token_mean",
    )
    # TRL builds its temperatures in float32 (torch.where of two Python floats): 1e-7 apart
    check(theirs, ours(*args, config), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cap", [5.0, 1.1])
def test_cispo_matches_trl(trl_trainer, seed, cap):
    args = batch(seed)
    theirs = trl_loss(trl_trainer, *args, loss_type="cispo", epsilon_high=cap)
    mine = ours(*args, GRPOLossConfig(policy_loss="cispo", cispo_max=cap))
    check(theirs, mine)
    if cap == 1.1:
        assert mine[2]["cispo_clip_frac"] > 0
    # every trained token keeps a gradient: -sg(min(r, cap)) A / N
    logprobs, old, adv, mask, _ = args
    weight = (logprobs - old).exp().clamp(max=cap)
    assert_close(mine[1], -weight * adv[:, None] * mask / mask.sum())


@pytest.mark.parametrize("quantile", [0.2, 0.5])
def test_high_entropy_tokens_match_trl(trl_trainer, quantile):
    args = batch(3)
    theirs = trl_loss(trl_trainer, *args, top_entropy_quantile=quantile)
    mine = ours(*args, GRPOLossConfig(top_entropy_quantile=quantile))
    check(theirs, mine)
    # torch.quantile interpolates: of n tokens, the top n - ceil((1 - q)(n - 1)) are kept
    _, _, _, mask, entropy = args
    n = int(mask.sum())
    top = n - math.ceil((1 - quantile) * (n - 1))
    assert_close(mine[2]["high_entropy_frac"].item(), top / n)
    threshold = entropy[mask.bool()].sort(descending=True).values[top - 1]
    low = mask.bool() & (entropy < threshold)
    assert low.any() and mine[1][low].abs().max() == 0  # no gradient below the top share


def trl_is_ratio(old, rollout, mask, mode, low, high):
    """TRL's vLLM importance-sampling ratio (GRPOTrainer._generate_and_score_completions),
    written out: TRL computes it inline, with no function to call."""
    diff = torch.nan_to_num((old - rollout) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    ratio = diff.exp()
    if mode.endswith("truncate"):
        return ratio.clamp(min=low, max=high)
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


@pytest.mark.parametrize(
    "mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
)
@pytest.mark.parametrize("bounds", [(None, 1.3), (0.8, 1.3)])
def test_sampler_correction_matches_trl(trl_trainer, mode, bounds):
    logprobs, old, adv, mask, entropy = batch(4)
    g = torch.Generator().manual_seed(5)
    rollout = old + (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5) * 0.8
    is_ratio = trl_is_ratio(old, rollout, mask, mode, *bounds)
    theirs = trl_loss(trl_trainer, logprobs, old, adv, mask, entropy, is_ratio=is_ratio)
    config = GRPOLossConfig(rollout_is=mode, rollout_is_min=bounds[0], rollout_is_max=bounds[1])
    mine = ours(logprobs, old, adv, mask, entropy, config, rollout_logprobs=rollout)
    check(theirs, mine)
    flag = "is_truncated_frac" if mode.endswith("truncate") else "is_masked_frac"
    assert 0 < mine[2][flag] < 1  # the bounds bite on some, not all
