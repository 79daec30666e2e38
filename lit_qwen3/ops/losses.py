"""The training math every stage shares, as pure tensor functions (no Lightning).

- Log-probs and entropy of chosen tokens live in :mod:`lit_qwen3.ops.logprobs` (from logits, or in
  chunks from hidden states and the ``lm_head`` weight) and are re-exported here.
- SFT: masked token cross-entropy, packing-aware.
- GRPO family: group-relative advantages, PPO-clip with clip-higher and dual clip, the
  DAPO / GRPO / Dr.GRPO loss aggregations, k1/k2/k3 KL estimators, entropy bonus, truncated
  importance sampling (TIS) for sampler/trainer mismatch.
- Reward models: the Bradley-Terry pairwise loss.
- Distillation divergences live in :mod:`lit_qwen3.ops.distill_losses` (from logits, or a top-k
  cache) and :mod:`lit_qwen3.ops.distill_kernel` (chunked, from hidden states); the public
  functions are re-exported here. Input checks shared by all: :mod:`lit_qwen3.ops.tensor_checks`.

Conventions: masks are bool or 0/1 tensors of the same shape as the per-token values; every
temperature divides the logits before the softmax, exactly as the sampler does; log-probs and
entropies are computed in float32 (float64 when the inputs are float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_qwen3.ops import policy_objectives as po
from lit_qwen3.ops.distill_kernel import (  # noqa: F401  (re-exported: the public loss functions)
    DistillationTerms,
    chunked_distillation,
)
from lit_qwen3.ops.distill_losses import (  # noqa: F401
    TeacherTopK,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    teacher_topk,
    topk_forward_kl,
    topk_reverse_kl,
)
from lit_qwen3.ops.logprobs import (  # noqa: F401
    IGNORE_INDEX,
    chunked_logprobs_and_entropy,
    token_entropy,
    token_logprobs,
)
from lit_qwen3.ops.policy_objectives import objective_rules
from lit_qwen3.ops.tensor_checks import (
    check_group_rewards,
    check_labels,
    check_reduction,
    check_shape,
    compute_dtype,
    float_mask,
    masked_reduce,
)

# exp() of a log-ratio beyond this is numerically meaningless in float32 (e^20 ~ 5e8);
# verl clamps at the same bound. Clamped tokens get no gradient through the ratio.
_MAX_LOG_RATIO = po.MAX_LOG_RATIO

LossAggMode = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3")


# ----------------------------------------------------------------------------- masks
def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is set; 0 where nothing is set (never NaN)."""
    m = float_mask(mask, values).bool()
    total = torch.where(m, values, torch.zeros((), dtype=values.dtype))
    if dim is None:
        return total.sum() / m.sum().clamp(min=1)
    return total.sum(dim) / m.sum(dim).clamp(min=1)


# ----------------------------------------------------------------------------- SFT
def masked_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    loss_mask: Tensor,
    *,
    reduction: Literal["mean", "sum", "none"] = "mean",
    position_ids: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Token cross-entropy on the positions ``loss_mask`` selects (e.g. assistant tokens).

    ``labels``, ``loss_mask`` and ``position_ids`` are aligned with ``logits`` (the caller has
    shifted). With packed sequences pass ``position_ids`` of the *targets*: a target at
    position 0 starts a new document and is never predicted from the previous one.
    ``"mean"`` averages over counted tokens (an empty mask is an error: nothing would be
    trained); ``"sum"`` lets the caller divide by a global token count under gradient
    accumulation; ``"none"`` returns per-token losses, zero where masked.
    """
    check_reduction(reduction)
    check_shape("labels", labels, logits.shape[:-1], "logits without its vocab dim")
    check_labels(labels, logits.shape[-1], ignore_index)
    counted = float_mask(loss_mask, labels, "loss_mask").bool() & (labels != ignore_index)
    if position_ids is not None:
        check_shape("position_ids", position_ids, labels.shape, "labels")
        counted &= position_ids != 0
    targets = labels.masked_fill(~counted, ignore_index).long()
    per_token = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).to(compute_dtype(logits.dtype)),
        targets.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).reshape(labels.shape)
    empty_error = (
        "loss_mask selects no target token (after ignore_index and packed-document starts); "
        "check that the mask covers assistant tokens and is aligned with labels"
    )
    return masked_reduce(per_token, counted, reduction, empty_error)


def causal_lm_loss(
    logits: Tensor,
    input_ids: Tensor,
    loss_mask: Tensor,
    position_ids: Tensor | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Next-token :func:`masked_cross_entropy` on unshifted ``(B, T)`` inputs.

    ``loss_mask`` marks the tokens of ``input_ids`` to learn (assistant tokens): token ``t`` is
    predicted by ``logits[:, t - 1]``. ``"none"`` returns ``(B, T - 1)``.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    check_shape("logits", logits[..., 0], input_ids.shape, "input_ids")
    check_shape("loss_mask", loss_mask, input_ids.shape, "input_ids")
    if position_ids is not None:
        check_shape("position_ids", position_ids, input_ids.shape, "input_ids")
        position_ids = position_ids[:, 1:]
    return masked_cross_entropy(
        logits[:, :-1],
        input_ids[:, 1:],
        loss_mask[:, 1:],
        reduction=reduction,
        position_ids=position_ids,
    )


# ----------------------------------------------------------------------------- rewards
def bradley_terry_loss(
    chosen_scores: Tensor, rejected_scores: Tensor, margin: Tensor | float | None = None
) -> Tensor:
    """Pairwise reward-model loss ``mean(-log sigmoid(chosen - rejected - margin))``.

    Computed in float32 (``logsigmoid`` is stable there for any finite input); a margin that is
    not finite in float32 (``1e300`` overflows to inf) is an error, not an infinite loss.
    """
    check_shape("rejected_scores", rejected_scores, chosen_scores.shape, "chosen_scores")
    if chosen_scores.numel() == 0:
        raise ValueError("chosen_scores is empty: need at least one preference pair")
    dtype = compute_dtype(chosen_scores.dtype)
    diff = chosen_scores.to(dtype) - rejected_scores.to(dtype)
    if margin is not None:
        if isinstance(margin, Tensor) and margin.dim() > 0:
            check_shape("margin", margin, chosen_scores.shape, "chosen_scores")
        margin = torch.as_tensor(margin, dtype=dtype, device=diff.device)
        if not bool(torch.isfinite(margin).all()):
            shown = margin.tolist() if margin.numel() <= 8 else "a non-finite value"
            raise ValueError(f"margin must be finite in {dtype}, got {shown}")
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


# ----------------------------------------------------------------------------- GRPO family
def completion_mask(
    completion_mask: Tensor, truncated: Tensor | None = None, mask_truncated: bool = True
) -> Tensor:
    """Bool ``(B, T)`` mask of the completion tokens the policy loss should see.

    ``truncated`` ``(B,)`` marks completions cut at the length limit before their EOS; with
    ``mask_truncated`` they are dropped whole (DAPO's overlong filtering: their reward judges an
    unfinished answer). Empty completions have no token and stay empty rows, which
    :func:`aggregate_loss` skips.
    """
    if completion_mask.dim() != 2:
        raise ValueError(
            f"completion_mask must be (batch, seq), got shape {tuple(completion_mask.shape)}"
        )
    mask = float_mask(completion_mask, completion_mask, "completion_mask").bool()
    if truncated is not None and mask_truncated:
        check_shape("truncated", truncated, completion_mask.shape[:1], "completion_mask[:, 0]")
        mask = mask & ~truncated.bool()[:, None]
    return mask


def soft_overlong_penalty(
    lengths: Tensor, max_length: int, buffer: int, factor: float = 1.0
) -> Tensor:
    """DAPO's soft overlong punishment, added to the reward: 0 up to ``max_length - buffer``
    tokens, then falling linearly to ``-factor`` at ``max_length`` (and below, clamped)."""
    if not (isinstance(buffer, int) and 0 < buffer <= max_length):
        raise ValueError(f"buffer must be an int in (0, max_length={max_length}], got {buffer!r}")
    over = (lengths.to(torch.float32) - (max_length - buffer)).clamp(min=0.0)
    return -factor * (over / buffer).clamp(max=1.0)


def group_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    scale: Literal["group", "batch"] | None = "group",
    leave_one_out: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """Group-relative advantages for ``rewards`` ``(num_groups * group_size,)``, groups contiguous.

    Each reward minus its group's mean (GRPO) or, with ``leave_one_out``, minus the mean of the
    *other* members (RLOO), then divided by ``std + eps``: the group's std (GRPO), the whole
    batch's std (``"batch"``, as TRL's ``scale_rewards="batch"``), or not at all (``None``,
    Dr.GRPO). Stds use Bessel's correction, as TRL and verl do. Returns ``(B,)``.
    """
    check_group_rewards(rewards, group_size)
    if scale not in ("group", "batch", None):
        raise ValueError(f"scale must be 'group', 'batch' or None, got {scale!r}")
    if not torch.isfinite(rewards).all():
        bad = (~torch.isfinite(rewards)).nonzero()[0].item()
        raise ValueError(f"rewards[{bad}] is {rewards[bad].item()}: rewards must be finite")
    r = rewards.to(compute_dtype(rewards.dtype)).view(-1, group_size)
    if leave_one_out:
        baseline = (r.sum(1, keepdim=True) - r) / (group_size - 1)
    else:
        baseline = r.mean(1, keepdim=True)
    advantages = r - baseline
    if scale == "group":
        advantages = advantages / (r.std(1, keepdim=True) + eps)
    elif scale == "batch":
        advantages = advantages / (r.std() + eps)
    return advantages.reshape(-1)


def groups_with_signal(rewards: Tensor, group_size: int) -> Tensor:
    """Bool ``(B,)``: True where the rollout's group has differing rewards (non-zero advantages).

    Groups whose rewards are all equal give zero advantage to every member; filter them out to
    fill batches with learning signal (DAPO's dynamic sampling).
    """
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
            f"got shape {tuple(rewards.shape)}"
        )
    r = rewards.view(-1, group_size)
    return (r != r[:, :1]).any(1).repeat_interleave(group_size)


def kl_estimate(
    logprobs: Tensor, ref_logprobs: Tensor, estimator: Literal["k1", "k2", "k3"] = "k3"
) -> Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy.

    Schulman's estimators with ``d = logprobs - ref_logprobs``: k1 = ``d`` (unbiased, noisy,
    can be negative), k2 = ``d**2 / 2`` (biased, low variance), k3 = ``exp(-d) - 1 + d``
    (unbiased, always >= 0; ``d`` clamped to +-20 so ``exp`` stays finite).
    """
    check_shape("ref_logprobs", ref_logprobs, logprobs.shape, "logprobs")
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    d = d.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return torch.expm1(-d) + d


def aggregate_loss(
    per_token: Tensor,
    mask: Tensor,
    mode: LossAggMode = "token_mean",
    *,
    max_tokens: int | None = None,
    num_items_in_batch: int | float | Tensor | None = None,
) -> Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar, the way each GRPO variant does.

    - ``token_mean`` (DAPO): sum over all masked tokens / their number; long answers weigh more.
    - ``seq_mean_token_mean`` (GRPO paper): mean over tokens in each sequence, then over the
      sequences that have tokens.
    - ``seq_mean_token_sum_norm`` (Dr.GRPO): each sequence's token sum / ``max_tokens`` (a
      constant, default ``T``: pass the generation limit), then mean over all ``B`` sequences.

    Under gradient accumulation or data parallelism pass ``num_items_in_batch``: the global
    number of tokens (``token_mean``) or sequences (``seq_*``) to divide by instead of this
    batch's own count. Without it an empty mask is an error.
    """
    if per_token.dim() != 2:
        raise ValueError(f"per_token must be (batch, seq), got shape {tuple(per_token.shape)}")
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"mode must be one of {LOSS_AGG_MODES}, got {mode!r}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
    m = float_mask(mask, per_token).bool()
    if num_items_in_batch is None and not m.any():
        raise ValueError("mask selects no token: nothing to aggregate")
    values = torch.where(m, per_token, torch.zeros((), dtype=per_token.dtype))
    if mode == "token_mean":
        total, count = values.sum(), m.sum()
    elif mode == "seq_mean_token_mean":
        seq_tokens = m.sum(-1)
        total = (values.sum(-1) / seq_tokens.clamp(min=1)).sum()
        count = (seq_tokens > 0).sum()
    else:
        total = values.sum() / (max_tokens or per_token.shape[-1])
        count = per_token.shape[0]
    return total / (count if num_items_in_batch is None else num_items_in_batch)


@dataclass
class GRPOLossConfig:
    """Knobs of :func:`grpo_loss`. Defaults: DAPO's clip-higher, token-mean, no KL, no bonus."""

    eps_low: float = 0.2
    """Lower clip: the ratio may not fall below ``1 - eps_low`` for negative advantages."""
    eps_high: float = 0.28
    """Upper clip: the ratio may not rise above ``1 + eps_high`` for positive advantages (DAPO)."""
    dual_clip: float | None = None
    """Dual clip ``c > 1`` (Ye et al. 2020): caps the loss of negative advantages at ``-A * c``."""
    loss_agg_mode: LossAggMode = "token_mean"
    """``token_mean`` (DAPO), ``seq_mean_token_mean`` (GRPO), ``seq_mean_token_sum_norm`` (Dr.GRPO)."""
    kl_coef: float = 0.0
    """Weight of the KL-to-reference penalty; 0 disables it (needs ``ref_logprobs`` when > 0)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator, see :func:`kl_estimate`."""
    entropy_coef: float = 0.0
    """Entropy bonus weight: the loss subtracts ``entropy_coef * entropy`` (needs ``entropy``)."""
    tis_cap: float | None = None
    """Truncated importance sampling: weight tokens by ``min(pi_old / pi_rollout, tis_cap)``."""
    max_tokens: int | None = None
    """Dr.GRPO's constant normaliser (the generation limit); default: the batch's length."""
    policy_loss: Literal["clip", "cispo", "sapo", "clip_cov", "kl_cov"] = "clip"
    """``clip`` (PPO/GRPO/DAPO), ``cispo``, ``sapo``, ``clip_cov``, ``kl_cov`` (see
    :mod:`lit_qwen3.ops.policy_objectives`)."""
    importance_sampling_level: Literal["token", "sequence", "sequence_token"] = "token"
    """``token``, ``sequence`` (GSPO) or ``sequence_token`` (GSPO-token, as verl)."""
    sapo_temperature_pos: float = 1.0
    """SAPO gate temperature where ``A > 0`` (TRL's default)."""
    sapo_temperature_neg: float = 1.05
    """SAPO gate temperature where ``A <= 0``: sharper, negative updates fade sooner."""
    cispo_max: float = 5.0
    """CISPO's cap on the detached importance weight (TRL ``epsilon_high`` under ``cispo``)."""
    clip_cov_ratio: float = 2e-4
    """Clip-Cov: share of tokens whose gradient is detached (verl ``clip_cov_ratio``)."""
    clip_cov_lb: float = 1.0
    """Clip-Cov: only tokens with covariance above this are candidates."""
    clip_cov_ub: float = 5.0
    """Clip-Cov: ... and below this."""
    kl_cov_ratio: float = 2e-4
    """KL-Cov: share of tokens (largest covariance) given the ``|log ratio|`` penalty."""
    kl_cov_coef: float = 1.0
    """KL-Cov: weight of that penalty (verl ``ppo_kl_coef``)."""
    top_entropy_quantile: float = 1.0
    """Train only the top share of tokens by entropy (0.2: the top 20%); 1 trains all (TRL)."""
    rollout_is: (
        Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] | None
    ) = None
    """Sampler/trainer mismatch correction: ``token_truncate``, ``token_mask``,
    ``sequence_truncate``, ``sequence_mask`` (TRL ``vllm_importance_sampling_mode``)."""
    rollout_is_min: float | None = None
    """Lower bound of the mismatch weight (None: none)."""
    rollout_is_max: float | None = 3.0
    """Upper bound of the mismatch weight (TRL ``vllm_importance_sampling_clip_max``)."""

    def __post_init__(self) -> None:
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def none_or_above(v: object, low: float) -> bool:
            return v is None or (number(v) and v > low)

        positive_int = (
            isinstance(self.max_tokens, int)
            and not isinstance(self.max_tokens, bool)
            and self.max_tokens >= 1
        )
        rules = (
            ("eps_low", number(self.eps_low) and 0 <= self.eps_low < 1, "a number in [0, 1)"),
            ("eps_high", number(self.eps_high) and self.eps_high >= 0, "a number >= 0"),
            ("dual_clip", none_or_above(self.dual_clip, 1), "None or a number > 1"),
            ("loss_agg_mode", self.loss_agg_mode in LOSS_AGG_MODES, f"one of {LOSS_AGG_MODES}"),
            ("kl_coef", number(self.kl_coef) and self.kl_coef >= 0, "a number >= 0"),
            ("kl_estimator", self.kl_estimator in KL_ESTIMATORS, f"one of {KL_ESTIMATORS}"),
            ("entropy_coef", number(self.entropy_coef), "a finite number"),
            ("tis_cap", none_or_above(self.tis_cap, 0), "None or a number > 0"),
            ("max_tokens", self.max_tokens is None or positive_int, "None or a positive int"),
            *objective_rules(self),
        )
        for name, ok, expected in rules:
            if not ok:
                raise ValueError(
                    f"GRPOLossConfig.{name} must be {expected}, got {getattr(self, name)!r}"
                )


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    config: GRPOLossConfig | None = None,
    *,
    ref_logprobs: Tensor | None = None,
    entropy: Tensor | None = None,
    rollout_logprobs: Tensor | None = None,
    num_items_in_batch: int | float | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy-gradient loss of the GRPO family (GRPO, DAPO, Dr.GRPO, GSPO, SAPO, CISPO,
    Clip-Cov, KL-Cov), plus detached diagnostics.

    Per token, with the importance ratio ``r`` at ``config.importance_sampling_level`` and
    advantage ``A``, ``config.policy_loss`` ``clip`` gives
    ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` (capped at ``-A c`` for ``A < 0`` with
    dual clip); the other objectives are in :mod:`lit_qwen3.ops.policy_objectives`. Then only
    the high-entropy tokens count (``top_entropy_quantile``), times the sampler/trainer weight
    (``rollout_is``, or ``tis_cap``: ``min(exp(old - rollout), tis_cap)``); aggregated by
    ``config.loss_agg_mode``; plus ``kl_coef * KL(policy || ref)`` and minus
    ``entropy_coef * entropy``, aggregated the same way.

    Args:
        logprobs: ``(B, T)`` log-probs of the sampled tokens under the policy being trained.
        old_logprobs: ``(B, T)`` the same under the policy that sampled (the trainer's
            weights at rollout time; detached).
        advantages: ``(B,)`` per sequence or ``(B, T)`` per token.
        mask: ``(B, T)`` tokens to train on, e.g. from :func:`completion_mask`. An all-empty
            mask (every completion truncated) gives a zero loss that still reaches the
            parameters, so data-parallel ranks stay in step.
        ref_logprobs: ``(B, T)`` reference-model log-probs, for the KL term and the ``kl`` metric.
        entropy: ``(B, T)`` policy entropy (with grad for the bonus), also the ``entropy`` metric;
            needed by ``top_entropy_quantile < 1``.
        rollout_logprobs: ``(B, T)`` log-probs reported by the sampler (e.g. vLLM), for TIS/MIS.
        num_items_in_batch: global normaliser, see :func:`aggregate_loss`.
        generator: Clip-Cov's random draw of tokens.

    Returns:
        ``(loss, metrics)``; metrics are detached scalars: ``pg_loss``, ``ratio_mean``,
        ``ratio_min``, ``ratio_max``, ``approx_kl`` (k3 of old vs current policy), with the clip
        objectives ``clip_frac_low`` and ``clip_frac_high``, and when enabled
        ``dual_clip_frac``, ``cispo_clip_frac``, ``cov_selected_frac``, ``high_entropy_frac``,
        ``kl``, ``entropy``, the ``is_weight_*`` metrics of
        :func:`~lit_qwen3.ops.policy_objectives.rollout_importance_weights` (and with
        ``tis_cap`` the older ``tis_weight_mean``, ``tis_clip_frac``).
    """
    config = config if config is not None else GRPOLossConfig()
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be (batch, seq), got shape {tuple(logprobs.shape)}")
    shape = logprobs.shape
    check_shape("old_logprobs", old_logprobs, shape, "logprobs")
    for name, value in (("ref", ref_logprobs), ("rollout", rollout_logprobs)):
        if value is not None:
            check_shape(f"{name}_logprobs", value, shape, "logprobs")
    if entropy is not None:
        check_shape("entropy", entropy, shape, "logprobs")
    if advantages.shape not in (shape[:1], shape):
        raise ValueError(
            f"advantages has shape {tuple(advantages.shape)}; expected ({shape[0]},) per "
            f"sequence or {tuple(shape)} per token"
        )
    if config.kl_coef > 0 and ref_logprobs is None:
        raise ValueError("config.kl_coef > 0 needs ref_logprobs")
    if (config.entropy_coef != 0 or config.top_entropy_quantile < 1) and entropy is None:
        raise ValueError("config.entropy_coef != 0 or top_entropy_quantile < 1 needs entropy")
    correction = config.rollout_is or ("token_truncate" if config.tis_cap is not None else None)
    if correction is not None and rollout_logprobs is None:
        raise ValueError("config.rollout_is or tis_cap is set but rollout_logprobs were not given")
    m = float_mask(mask, logprobs).bool()
    adv = advantages.to(logprobs.dtype)
    adv = adv[:, None].expand(shape) if adv.dim() == 1 else adv
    old = old_logprobs.detach()

    log_ratio = po.importance_log_ratio(logprobs, old, m, config.importance_sampling_level)
    ratio = log_ratio.exp()
    kind, extra = config.policy_loss, {}
    if kind == "sapo":
        t_pos, t_neg = config.sapo_temperature_pos, config.sapo_temperature_neg
        per_token = po.sapo_per_token(ratio, adv, t_pos, t_neg)
    elif kind == "cispo":
        per_token = po.cispo_per_token(ratio, logprobs, adv, config.cispo_max)
        extra["cispo_clip_frac"] = (adv > 0) & (ratio > config.cispo_max)
    elif kind == "kl_cov":  # no clip: the penalty on the top-covariance tokens replaces it
        chosen = po.kl_cov_selection(po.token_covariance(logprobs, adv, m), m, config.kl_cov_ratio)
        penalty = torch.where(chosen, config.kl_cov_coef * log_ratio.abs(), 0.0)
        per_token, extra["cov_selected_frac"] = -adv * ratio + penalty, chosen
    else:
        clipped = ratio.clamp(1.0 - config.eps_low, 1.0 + config.eps_high)
        per_token = torch.maximum(-adv * ratio, -adv * clipped)
        if config.dual_clip is not None:
            per_token = torch.where(
                adv < 0, torch.minimum(per_token, -adv * config.dual_clip), per_token
            )
        if kind == "clip_cov":
            eligible = m & ~(-adv * clipped > -adv * ratio)  # not already clipped by PPO
            cov = po.token_covariance(logprobs, adv, m)
            chosen = po.clip_cov_selection(
                cov, eligible, int(m.sum()), config.clip_cov_ratio, config.clip_cov_lb,
                config.clip_cov_ub, generator,
            )  # fmt: skip
            per_token, extra["cov_selected_frac"] = per_token.masked_fill(chosen, 0.0), chosen
    bonus_entropy = entropy
    if config.top_entropy_quantile < 1:
        high = po.high_entropy_mask(entropy, m, config.top_entropy_quantile)
        per_token = torch.where(high, per_token, 0.0)
        bonus_entropy, extra["high_entropy_frac"] = torch.where(high, entropy, 0.0), high
    is_metrics: dict[str, Tensor] = {}
    if correction is not None:
        high_bound = config.tis_cap if config.rollout_is is None else config.rollout_is_max
        low_bound = None if config.rollout_is is None else config.rollout_is_min
        is_weight, is_metrics = po.rollout_importance_weights(
            old, rollout_logprobs, m, correction, low_bound, high_bound
        )
        per_token = per_token * is_weight

    empty = num_items_in_batch is None and not m.any()

    def agg(values: Tensor) -> Tensor:
        if empty:  # zero, but connected to the graph
            return torch.where(m, values, torch.zeros((), dtype=values.dtype)).sum()
        return aggregate_loss(
            values,
            m,
            config.loss_agg_mode,
            max_tokens=config.max_tokens,
            num_items_in_batch=num_items_in_batch,
        )

    pg_loss = agg(per_token)
    loss = pg_loss
    kl = None
    if ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, config.kl_estimator)
        if config.kl_coef > 0:
            loss = loss + config.kl_coef * agg(kl)
    if entropy is not None and config.entropy_coef != 0:
        loss = loss - config.entropy_coef * agg(bonus_entropy)

    with torch.no_grad():
        tokens = m.sum().clamp(min=1)

        def frac(flags: Tensor) -> Tensor:
            return (flags & m).sum().to(logprobs.dtype) / tokens

        metrics = {
            "pg_loss": pg_loss.detach(),
            "ratio_mean": masked_mean(ratio, m),
            "ratio_min": _masked_extreme(ratio, m, largest=False),
            "ratio_max": _masked_extreme(ratio, m, largest=True),
            "approx_kl": masked_mean(kl_estimate(old, logprobs.detach(), "k3"), m),
        }
        if kind in ("clip", "clip_cov"):
            metrics["clip_frac_low"] = frac((adv < 0) & (ratio < 1.0 - config.eps_low))
            metrics["clip_frac_high"] = frac((adv > 0) & (ratio > 1.0 + config.eps_high))
        metrics.update({k: frac(v) for k, v in extra.items()})
        if config.dual_clip is not None:
            metrics["dual_clip_frac"] = frac((adv < 0) & (ratio > config.dual_clip))
        if kl is not None:
            metrics["kl"] = masked_mean(kl.detach(), m)
        if entropy is not None:
            metrics["entropy"] = masked_mean(entropy.detach(), m)
        metrics.update(is_metrics)
        if config.tis_cap is not None:
            metrics["tis_weight_mean"] = is_metrics["is_weight_mean"]
            metrics["tis_clip_frac"] = is_metrics["is_truncated_frac"]
    return loss, metrics


def _masked_extreme(values: Tensor, mask: Tensor, *, largest: bool) -> Tensor:
    if not mask.any():
        return values.new_zeros(())
    return values[mask].max() if largest else values[mask].min()
