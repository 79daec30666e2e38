"""The policy-optimisation family beyond PPO-clip, as pure per-token pieces that
:func:`lit_qwen3.ops.losses.grpo_loss` composes (so every method keeps its aggregation, global
normalisers, masks and metrics).

- Importance ratio per token (PPO), per sequence (GSPO: the length-normalised log-ratio, one
  ratio per sequence) or per sequence with per-token gradients (GSPO-token, verl's form:
  ``logp - sg(logp) + sg(seq_mean)``).
- SAPO: a soft sigmoid gate of temperature ``tau`` instead of the hard clip (TRL's form).
- CISPO: the importance weight clipped and detached, times ``-A log p``: every token keeps its
  gradient, only its weight is bounded (TRL's form).
- Clip-Cov / KL-Cov ("The Entropy Mechanism of RL for Reasoning LMs", 2025; verl's forms): the
  per-token covariance of log-prob and advantage picks tokens to detach or to KL-penalise.
- High-entropy tokens only (TRL ``top_entropy_quantile``).
- Sampler/trainer mismatch: importance weights ``pi_trainer / pi_sampler`` per token or per
  sequence, truncated or masked (TRL ``vllm_importance_sampling_mode``), and its metrics.

Masks are bool or 0/1 tensors shaped like the per-token values; nothing here reads a model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_qwen3.ops.tensor_checks import float_mask

POLICY_LOSSES = ("clip", "cispo", "sapo", "clip_cov", "kl_cov")
IS_LEVELS = ("token", "sequence", "sequence_token")
ROLLOUT_IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")

# exp() beyond this is meaningless in float32; clamped entries get no gradient (as verl does).
MAX_LOG_RATIO = 20.0


def _zero_outside(values: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the set entries of ``mask`` (0 when none is set)."""
    return _zero_outside(values, mask).sum() / mask.sum().clamp(min=1)


# ----------------------------------------------------------------------------- ratios
def importance_log_ratio(
    logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, level: str
) -> Tensor:
    """``(B, T)`` log importance ratio of the policy against the one that sampled.

    - ``token``: ``logp - old`` per token (PPO, GRPO, DAPO).
    - ``sequence``: GSPO, the masked mean of the token log-ratios, one value per sequence
      broadcast over its tokens; its gradient reaches every token through the mean.
    - ``sequence_token``: GSPO-token, ``logp - sg(logp) + sg(sequence value)``: the same value,
      but each token's gradient is its own (so per-token advantages can weight tokens).
    """
    if level not in IS_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IS_LEVELS}, got {level!r}")
    m = float_mask(mask, logprobs).bool()
    log_ratio = logprobs - old_logprobs.detach()
    if level != "token":
        per_seq = _zero_outside(log_ratio, m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(
            min=1
        )
        if level == "sequence":
            log_ratio = per_seq.expand_as(log_ratio)
        else:
            log_ratio = logprobs - logprobs.detach() + per_seq.detach()
    return log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


# ----------------------------------------------------------------------------- objectives
def sapo_per_token(ratio: Tensor, advantages: Tensor, tau_pos: float, tau_neg: float) -> Tensor:
    """SAPO: ``-A * sigmoid(tau (r - 1)) * 4 / tau`` with ``tau_pos`` where ``A > 0``, else
    ``tau_neg``. The gate's slope is 1 at ``r = 1`` (the plain policy gradient on-policy) and
    fades smoothly as the ratio leaves 1, instead of dropping to zero at a clip bound."""
    tau = torch.where(
        advantages > 0,
        torch.tensor(tau_pos, dtype=ratio.dtype, device=ratio.device),
        torch.tensor(tau_neg, dtype=ratio.dtype, device=ratio.device),
    )
    return -torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * advantages


def cispo_per_token(
    ratio: Tensor, logprobs: Tensor, advantages: Tensor, max_weight: float
) -> Tensor:
    """CISPO: ``-sg(min(r, max_weight)) * A * log p``: the weight is bounded and carries no
    gradient, and no token's gradient is ever cut (PPO's clip zeroes it)."""
    return -ratio.clamp(max=max_weight).detach() * advantages * logprobs


def token_covariance(logprobs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """``(A - mean A)(log p - mean log p)`` per token, means over the masked tokens (detached):
    each token's share of the covariance that drives entropy down (Cui et al. 2025)."""
    m = float_mask(mask, logprobs).bool()
    lp, adv = logprobs.detach(), advantages.detach()
    return (adv - masked_token_mean(adv, m)) * (lp - masked_token_mean(lp, m))


def clip_cov_selection(
    covariance: Tensor,
    eligible: Tensor,
    num_tokens: int,
    ratio: float,
    low: float,
    high: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Clip-Cov: bool ``(B, T)`` of the tokens whose gradient is detached.

    ``max(int(ratio * num_tokens), 1)`` tokens drawn uniformly at random among the ``eligible``
    ones (trained, not already clipped by PPO) whose covariance lies strictly in
    ``(low, high)`` (all of them when fewer qualify).
    """
    candidates = (eligible.bool() & (covariance > low) & (covariance < high)).nonzero()
    selected = torch.zeros_like(eligible, dtype=torch.bool)
    if len(candidates) == 0:
        return selected
    count = max(int(ratio * num_tokens), 1)
    order = torch.randperm(len(candidates), generator=generator)[:count].to(candidates.device)
    chosen = candidates[order]
    selected[chosen[:, 0], chosen[:, 1]] = True
    return selected


def kl_cov_selection(covariance: Tensor, mask: Tensor, ratio: float) -> Tensor:
    """KL-Cov: bool ``(B, T)`` of the ``max(int(ratio * n), 1)`` masked tokens with the largest
    covariance (none when no token is masked)."""
    m = float_mask(mask, covariance).bool()
    selected = torch.zeros_like(m)
    n = int(m.sum())
    if n == 0:
        return selected
    k = max(int(n * ratio), 1)
    index = m.nonzero()[torch.topk(covariance[m], k).indices]
    selected[index[:, 0], index[:, 1]] = True
    return selected


def high_entropy_mask(entropy: Tensor, mask: Tensor, quantile: float) -> Tensor:
    """Bool ``(B, T)``: the masked tokens whose entropy is at or above the ``1 - quantile``
    quantile of the masked tokens' entropies (TRL ``top_entropy_quantile``: ``quantile`` 0.2
    keeps the top 20%, "the 80/20 rule" of Wang et al. 2025). ``quantile`` 1 keeps every token."""
    m = float_mask(mask, entropy).bool()
    if quantile >= 1.0:
        return m
    values = entropy.detach()[m].float()
    if values.numel() == 0:
        return m
    threshold = torch.quantile(values, 1.0 - quantile)
    return m & (entropy.detach() >= threshold)


# ----------------------------------------------------------------------------- mismatch
def rollout_importance_weights(
    trainer_logprobs: Tensor,
    rollout_logprobs: Tensor,
    mask: Tensor,
    mode: str,
    clip_min: float | None,
    clip_max: float | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Detached ``(B, T)`` weights correcting the sampler/trainer mismatch, and their metrics.

    The raw weight is ``pi_trainer / pi_sampler`` of each token (``token_*``) or the product over
    a sequence's masked tokens (``sequence_*``, one weight broadcast over the sequence), as TRL
    computes it. ``*_truncate`` clamps it to ``[clip_min, clip_max]`` (TIS); ``*_mask`` sets it to
    0 outside that range (MIS / "icepop"): those tokens or sequences get no gradient while the
    loss's normaliser still counts them, as TRL does. A missing bound is no bound.

    Metrics (detached scalars): ``is_weight_mean``, ``is_weight_min``, ``is_weight_max`` over the
    trained tokens (token modes) or sequences with tokens (sequence modes), and
    ``is_truncated_frac`` or ``is_masked_frac``, the share of those the bound changed.
    """
    if mode not in ROLLOUT_IS_MODES:
        raise ValueError(f"rollout_is must be one of {ROLLOUT_IS_MODES}, got {mode!r}")
    m = float_mask(mask, trainer_logprobs).bool()
    diff = _zero_outside(trainer_logprobs.detach() - rollout_logprobs.detach(), m)
    diff = torch.nan_to_num(diff, nan=0.0)  # a token the sampler could not score: weight 1
    per_sequence = mode.startswith("sequence")
    if per_sequence:
        diff = diff.sum(-1, keepdim=True)
        counted = m.any(-1, keepdim=True)
    else:
        counted = m
    raw = diff.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    outside = (raw < low) | (raw > high)
    if mode.endswith("truncate"):
        weights = raw.clamp(min=clip_min, max=clip_max)
        flag_name = "is_truncated_frac"
    else:
        weights = raw.masked_fill(outside, 0.0)
        flag_name = "is_masked_frac"
    with torch.no_grad():
        kept = weights[counted.expand_as(weights)] if counted.any() else weights.new_zeros(1)
        metrics = {
            "is_weight_mean": masked_token_mean(weights, counted),
            "is_weight_min": kept.min(),
            "is_weight_max": kept.max(),
            flag_name: masked_token_mean(outside.to(weights.dtype), counted),
        }
    return weights.expand_as(trainer_logprobs), metrics


def mismatch_metrics(
    trainer_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor
) -> dict[str, Tensor]:
    """How far the sampler's log-probs are from the trainer's on the sampled tokens.

    ``kl``: k3 estimate of KL(sampler || trainer) (the tokens were drawn by the sampler; >= 0),
    ``kl_k1``: its plain (k1) estimate, ``logprob_diff`` / ``logprob_diff_max``: mean and max of
    ``|log pi_trainer - log pi_sampler|``; all over the masked tokens, detached.
    """
    m = float_mask(mask, trainer_logprobs).bool()
    d = (rollout_logprobs.detach() - trainer_logprobs.detach()).float()
    m = m & torch.isfinite(d)
    d = _zero_outside(d, m).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return {
        "kl": masked_token_mean(torch.expm1(-d) + d, m),
        "kl_k1": masked_token_mean(d, m),
        "logprob_diff": masked_token_mean(d.abs(), m),
        "logprob_diff_max": d.abs().max() if m.any() else d.new_zeros(()),
    }


# ----------------------------------------------------------------------------- config checks
def objective_rules(config: object) -> list[tuple[str, bool, str]]:
    """``(field, ok, expected)`` checks of the :class:`~lit_qwen3.ops.losses.GRPOLossConfig`
    fields this module reads (kept here so the config's own module stays small)."""

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def positive(v: object) -> bool:
        return number(v) and v > 0

    def optional_positive(v: object) -> bool:
        return v is None or positive(v)

    def share(v: object) -> bool:
        return number(v) and 0 < v <= 1

    c = config
    low, high = c.rollout_is_min, c.rollout_is_max
    bounds_ok = not (number(low) and number(high)) or low < high
    cov_ok = not (number(c.clip_cov_lb) and number(c.clip_cov_ub)) or c.clip_cov_lb < c.clip_cov_ub
    return [
        ("policy_loss", c.policy_loss in POLICY_LOSSES, f"one of {POLICY_LOSSES}"),
        (
            "importance_sampling_level",
            c.importance_sampling_level in IS_LEVELS,
            f"one of {IS_LEVELS}",
        ),
        ("sapo_temperature_pos", positive(c.sapo_temperature_pos), "a number > 0"),
        ("sapo_temperature_neg", positive(c.sapo_temperature_neg), "a number > 0"),
        ("cispo_max", positive(c.cispo_max), "a number > 0"),
        ("clip_cov_ratio", share(c.clip_cov_ratio), "a number in (0, 1]"),
        ("clip_cov_lb", number(c.clip_cov_lb), "a finite number"),
        ("clip_cov_ub", number(c.clip_cov_ub), "a finite number"),
        ("clip_cov_lb", cov_ok, f"below GRPOLossConfig.clip_cov_ub ({c.clip_cov_ub!r})"),
        ("kl_cov_ratio", share(c.kl_cov_ratio), "a number in (0, 1]"),
        ("kl_cov_coef", number(c.kl_cov_coef) and c.kl_cov_coef >= 0, "a number >= 0"),
        ("top_entropy_quantile", share(c.top_entropy_quantile), "a number in (0, 1]"),
        (
            "rollout_is",
            c.rollout_is is None or c.rollout_is in ROLLOUT_IS_MODES,
            f"None or one of {ROLLOUT_IS_MODES}",
        ),
        ("rollout_is_min", optional_positive(low), "None or a number > 0"),
        ("rollout_is_max", optional_positive(high), "None or a number > 0"),
        ("rollout_is_min", bounds_ok, f"below GRPOLossConfig.rollout_is_max ({high!r})"),
        (
            "rollout_is_max",
            c.rollout_is is None or low is not None or high is not None,
            "set (or rollout_is_min): a rollout_is mode needs a bound",
        ),
        (
            "dual_clip",
            c.dual_clip is None or c.policy_loss in ("clip", "clip_cov"),
            f"None with policy_loss={c.policy_loss!r} (dual clip applies to 'clip' and 'clip_cov')",
        ),
        (
            "tis_cap",
            c.tis_cap is None or c.rollout_is is None,
            "None when rollout_is is set (tis_cap is rollout_is='token_truncate' with rollout_is_max)",
        ),
    ]
