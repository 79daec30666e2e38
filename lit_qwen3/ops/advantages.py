"""Group advantages that train for pass@k instead of pass@1, as pure tensor functions.

- :func:`passk_max_advantages`: verl's ``grpo_passk`` estimator (after Walder & Karkhanis,
  "Pass@K Policy Optimization", arXiv 2505.15201): only each group's best rollout gets a
  non-zero advantage, the gap to the runner-up, optionally over the group's std.
- :func:`passk_analytic_advantages`: the closed form of "Pass@k Training for Adaptively
  Balancing Exploration and Exploitation" (Chen et al. 2025, arXiv 2508.10751) for binary
  rewards: the advantage of a correct and of a wrong rollout when the group's reward is the
  pass@k of all its size-k subsets. ``k = 1`` is GRPO with the population std.

Rewards are ``(num_groups * group_size,)`` with each group's rollouts contiguous.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_qwen3.ops.tensor_checks import check_group_rewards, compute_dtype


def _groups(rewards: Tensor, group_size: int) -> Tensor:
    check_group_rewards(rewards, group_size)
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite")
    return rewards.to(compute_dtype(rewards.dtype)).view(-1, group_size)


def passk_max_advantages(
    rewards: Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6
) -> Tensor:
    """verl ``grpo_passk``: the best rollout of each group gets ``r_max - r_second``, divided by
    the group's std (Bessel, ``+ eps``) when ``scale``; every other rollout gets 0. Ties for
    the best go to the first rollout of the group (its advantage is then 0 anyway). ``(B,)``."""
    r = _groups(rewards, group_size)
    top = torch.sort(r, dim=1, descending=True, stable=True)
    gap = top.values[:, 0] - top.values[:, 1]
    if scale:
        gap = gap / (r.std(1) + eps)
    advantages = torch.zeros_like(r)
    advantages.scatter_(1, top.indices[:, :1], gap[:, None])
    return advantages.reshape(-1)


def passk_analytic_advantages(rewards: Tensor, group_size: int, k: int) -> Tensor:
    """Chen et al. 2025's analytic pass@k advantages for binary (0/1) rewards. ``(B,)``.

    With ``N`` rollouts of which ``n_neg`` are wrong, the group's mean pass@k over its size-k
    subsets is ``R = 1 - C(n_neg, k) / C(N, k)`` and its std ``s = sqrt(R (1 - R))``; a correct
    rollout gets ``(1 - R) / s`` and a wrong one ``(1 - R - C(n_neg - 1, k - 1) / C(N - 1,
    k - 1)) / s``. Groups with ``s = 0`` (every subset passes, or none) get 0.
    """
    r = _groups(rewards, group_size)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= group_size:
        raise ValueError(f"pass_k must be an int in [1, group_size={group_size}], got {k!r}")
    if not ((r == 0) | (r == 1)).all():
        raise ValueError("analytic pass@k advantages need binary rewards (0 or 1)")
    n = group_size
    out = torch.zeros_like(r)
    for g, row in enumerate(r):
        n_neg = int((row == 0).sum())
        mean = 1.0 - math.comb(n_neg, k) / math.comb(n, k)
        std = math.sqrt(mean * (1.0 - mean))
        if std == 0.0:
            continue
        wrong_share = math.comb(n_neg - 1, k - 1) / math.comb(n - 1, k - 1) if n_neg else 0.0
        out[g] = torch.where(
            row == 1,
            torch.tensor((1.0 - mean) / std, dtype=r.dtype, device=r.device),
            torch.tensor((1.0 - mean - wrong_share) / std, dtype=r.dtype, device=r.device),
        )
    return out.reshape(-1)
