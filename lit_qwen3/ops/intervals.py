"""Confidence intervals for evaluation results, and the verdicts a report draws from them.

An evaluation scores ``n`` samples on each of ``m`` held-out problems. The problems are the unit
of the experiment (samples of one problem are correlated), so intervals resample problems: a
problem's score is the mean over its samples, and two models evaluated on the same problems are
compared problem by problem (a paired bootstrap), which removes the problems' own difficulty from
the noise of the difference.

A finding "holds" only when the interval of its difference lies wholly on the side the paper
claims; it is "not shown" when the interval contains zero, and "does NOT hold" when it lies wholly
on the other side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "HOLDS",
    "NOT_SHOWN",
    "REVERSED",
    "Interval",
    "bootstrap_mean",
    "paired_difference",
    "ratio_interval",
    "verdict",
]

HOLDS, NOT_SHOWN, REVERSED = "holds", "not shown", "does NOT hold"
Direction = Literal["greater", "less"]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided interval at ``level``."""

    value: float
    low: float
    high: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _scores(values: Sequence[float] | torch.Tensor, name: str) -> torch.Tensor:
    scores = torch.as_tensor(values, dtype=torch.float64).flatten()
    if scores.numel() == 0:
        raise ValueError(f"{name} is empty: an interval needs at least one problem")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} holds a non-finite score")
    return scores


def _check(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")


def _percentiles(means: torch.Tensor, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype))
    return float(low), float(high)


def _resampled_rows(m: int, resamples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, m, (resamples, m), generator=generator)


def bootstrap_mean(
    scores: Sequence[float] | torch.Tensor,
    *,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Mean of per-problem ``scores`` with a percentile bootstrap interval over problems."""
    _check(level, resamples)
    x = _scores(scores, "scores")
    means = x[_resampled_rows(x.numel(), resamples, seed)].mean(-1)
    return Interval(float(x.mean()), *_percentiles(means, level), level=level)


def paired_difference(
    after: Sequence[float] | torch.Tensor,
    before: Sequence[float] | torch.Tensor,
    *,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """``mean(after) - mean(before)`` on the same problems, with a paired bootstrap interval:
    each resample draws problems and takes both models' scores on them."""
    a, b = _scores(after, "after"), _scores(before, "before")
    if a.shape != b.shape:
        raise ValueError(
            f"paired scores need the same problems: {a.numel()} scores after, {b.numel()} before"
        )
    return bootstrap_mean(a - b, level=level, resamples=resamples, seed=seed)


def ratio_interval(
    numerator: Sequence[float] | torch.Tensor,
    denominator: Sequence[float] | torch.Tensor,
    *,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """``sum(numerator) / sum(denominator)`` over paired units (e.g. per-step FLOPs of two runs),
    with a paired bootstrap interval; the denominator's resampled sums must stay positive."""
    _check(level, resamples)
    n, d = _scores(numerator, "numerator"), _scores(denominator, "denominator")
    if n.shape != d.shape:
        raise ValueError(f"paired units differ in number: {n.numel()} and {d.numel()}")
    if float(d.sum()) <= 0:
        raise ValueError("the denominator's total must be positive")
    rows = _resampled_rows(n.numel(), resamples, seed)
    sums = d[rows].sum(-1)
    ratios = n[rows].sum(-1) / sums.clamp_min(torch.finfo(sums.dtype).tiny)
    return Interval(float(n.sum() / d.sum()), *_percentiles(ratios, level), level=level)


def verdict(interval: Interval, direction: Direction = "greater", threshold: float = 0.0) -> str:
    """``holds`` when the whole interval lies beyond ``threshold`` in ``direction``; ``does NOT
    hold`` when it lies wholly on the other side; else ``not shown``."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    sign = 1.0 if direction == "greater" else -1.0
    low, high = sorted((sign * (interval.low - threshold), sign * (interval.high - threshold)))
    if low > 0:
        return HOLDS
    if high < 0:
        return REVERSED
    return NOT_SHOWN
