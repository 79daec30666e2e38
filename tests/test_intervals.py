"""Evaluation intervals: exact where the answer is known, the textbook width where it is not, the
promised coverage over repeated experiments, and verdicts decided on the interval alone."""

from __future__ import annotations

import math

import pytest
import torch

from lit_qwen3.ops.intervals import (
    HOLDS,
    NOT_SHOWN,
    REVERSED,
    Interval,
    bootstrap_mean,
    paired_difference,
    ratio_interval,
    verdict,
)


def test_constant_scores_and_constant_shifts_have_no_width():
    assert bootstrap_mean([0.25] * 40) == Interval(0.25, 0.25, 0.25)
    before = torch.rand(50, generator=torch.Generator().manual_seed(1))
    shifted = paired_difference(before + 0.125, before)
    assert shifted.value == pytest.approx(0.125)
    assert shifted.low == pytest.approx(0.125) and shifted.high == pytest.approx(0.125)


def test_the_width_matches_the_normal_approximation():
    """Per-problem accuracies of 4 samples on 400 problems: the bootstrap's half-width is the
    textbook 1.96 sd / sqrt(m) within a few percent."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(400, generator=g)
    scores = torch.binomial(torch.full((400,), 4.0), p, generator=g) / 4
    interval = bootstrap_mean(scores)
    expected = 1.96 * float(scores.std()) / math.sqrt(400)
    assert interval.half_width == pytest.approx(expected, rel=0.08)
    assert interval.low < float(scores.mean()) < interval.high


def test_pairing_removes_the_problems_own_difficulty():
    """Two models whose scores move together: the paired interval of their difference is far
    narrower than the two unpaired intervals would suggest."""
    g = torch.Generator().manual_seed(3)
    difficulty = torch.rand(200, generator=g)
    before = difficulty
    after = (difficulty + 0.05 + 0.02 * torch.randn(200, generator=g)).clamp(0, 1)
    paired = paired_difference(after, before)
    assert paired.low > 0.04 and paired.high < 0.06
    unpaired = math.hypot(bootstrap_mean(after).half_width, bootstrap_mean(before).half_width)
    assert paired.half_width < unpaired / 5


def test_coverage_over_repeated_experiments():
    """Two models of equal skill, 300 experiments of 60 problems x 4 samples: the 95 % interval
    of the difference excludes zero in about 5 % of them (binomial 95 % range for 300 runs)."""
    g = torch.Generator().manual_seed(7)
    misses = 0
    for run in range(300):
        p = torch.rand(60, generator=g)
        a = torch.binomial(torch.full((60,), 4.0), p, generator=g) / 4
        b = torch.binomial(torch.full((60,), 4.0), p, generator=g) / 4
        misses += verdict(paired_difference(a, b, resamples=400, seed=run)) != NOT_SHOWN
    assert 5 <= misses <= 28, misses


def test_verdicts_follow_the_interval_and_the_claimed_direction():
    assert verdict(Interval(0.10, 0.02, 0.18)) == HOLDS
    assert verdict(Interval(0.05, -0.01, 0.11)) == NOT_SHOWN
    assert verdict(Interval(-0.10, -0.18, -0.02)) == REVERSED
    assert verdict(Interval(-0.10, -0.18, -0.02), "less") == HOLDS
    assert verdict(Interval(0.3, 0.12, 0.4), threshold=0.10) == HOLDS  # above a floor of 0.10
    assert verdict(Interval(0.3, 0.08, 0.4), threshold=0.10) == NOT_SHOWN
    assert verdict(Interval(0.5, 0.4, 0.6), "less", threshold=1.0) == HOLDS  # a ratio below 1
    with pytest.raises(ValueError, match="direction"):
        verdict(Interval(0, 0, 0), "up")


def test_ratio_of_paired_totals():
    rl = torch.tensor([10.0, 12.0, 11.0, 9.0])
    exact = ratio_interval(rl / 10, rl)
    assert exact.value == pytest.approx(0.1) and exact.low == pytest.approx(0.1)
    noisy = ratio_interval(torch.tensor([1.0, 2.0, 1.5, 0.5]), rl)
    assert noisy.value == pytest.approx(5.0 / 42.0)
    assert noisy.low < noisy.value < noisy.high


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same problems: 3 scores after, 2 before"):
        paired_difference([1, 0, 1], [0, 1])
    with pytest.raises(ValueError, match="scores is empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_mean([0.5, float("nan")])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([0.5], level=95)
    with pytest.raises(ValueError, match="denominator's total"):
        ratio_interval([1.0], [0.0])
