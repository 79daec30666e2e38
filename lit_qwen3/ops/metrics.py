"""Evaluation numbers: pass@k (unbiased), maj@k, and torchmetrics that sync exactly in DDP.

``pass@k`` is the HumanEval estimator (Chen et al. 2021): from ``n`` samples of which ``c``
are correct, ``1 - C(n - c, k) / C(n, k)``, the chance that at least one of ``k`` samples drawn
without replacement is correct. Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` (no huge
binomials), in float64. Metric states are sums (``dist_reduce_fx="sum"``), so the synced value
equals the single-process one exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "MeanTokenEntropy",
    "PassAtK",
    "maj_at_k",
    "majority_vote",
    "pass_at_k",
    "pass_at_k_tensor",
]


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one query with ``n`` samples, ``c`` of them correct (``k <= n``)."""
    _check_int("n", n, 1)
    _check_int("c", c, 0)
    _check_int("k", k, 1)
    if c > n:
        raise ValueError(f"c={c} correct samples but only n={n} samples")
    if k > n:
        raise ValueError(f"k={k} > n={n}: pass@k needs at least k samples per query")
    if n - c < k:  # every draw of k contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_tensor(n: int | Tensor, c: Tensor, k: int) -> Tensor:
    """Vectorised :func:`pass_at_k`: ``n`` (int or per-query tensor), ``c`` per query; float64.

    Uses a cumulative sum of ``log(1 - k / i)`` so each query costs one subtraction, and
    ``-expm1`` so pass@k near 0 keeps its precision.
    """
    _check_int("k", k, 1)
    c = torch.as_tensor(c)
    n = torch.as_tensor(n, device=c.device).expand_as(c)
    for name, t in (("n", n), ("c", c)):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer counts, got {t.dtype}")
    if c.numel() == 0:
        return torch.zeros(c.shape, dtype=torch.float64, device=c.device)
    if (c < 0).any() or (c > n).any():
        raise ValueError("every c must satisfy 0 <= c <= n")
    if (n < k).any():
        raise ValueError(f"k={k} > n={int(n.min())}: pass@k needs at least k samples per query")
    n, c = n.long(), c.long()
    i = torch.arange(1, int(n.max()) + 1, dtype=torch.float64, device=c.device)
    terms = torch.where(i > k, torch.log1p(-k / i), torch.zeros_like(i))
    cumulative = torch.cat([terms.new_zeros(1), terms.cumsum(0)])  # cumulative[m] = sum_{i<=m}
    log_ratio = cumulative[n] - cumulative[n - c]  # log C(n-c, k)/C(n, k) when n - c >= k
    return torch.where(n - c < k, torch.ones_like(log_ratio), -torch.expm1(log_ratio))


def majority_vote(answers: Iterable[Hashable | None]) -> Hashable | None:
    """The most frequent answer (``None`` = unparsed, never votes); ties go to the first seen."""
    answers = list(answers)
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def maj_at_k(
    answers: Sequence[Sequence[Hashable | None]],
    correct: Sequence[Sequence[bool]],
    k: int | None = None,
) -> float:
    """Majority-vote accuracy over queries, voting among each query's first ``k`` samples.

    ``answers[q][j]`` is sample ``j``'s normalised final answer (``None`` when none was found),
    ``correct[q][j]`` its verdict; the vote is right when the majority answer's samples are
    correct. A query with no parsed answer counts as wrong.
    """
    if len(answers) != len(correct):
        raise ValueError(f"answers has {len(answers)} queries but correct has {len(correct)}")
    if not answers:
        raise ValueError("answers is empty: need at least one query")
    right = 0
    for q, (query_answers, query_correct) in enumerate(zip(answers, correct, strict=True)):
        if len(query_answers) != len(query_correct):
            raise ValueError(
                f"query {q}: {len(query_answers)} answers but {len(query_correct)} verdicts"
            )
        kq = len(query_answers) if k is None else _check_int("k", k, 1)
        if kq > len(query_answers) or kq == 0:
            raise ValueError(f"query {q} has {len(query_answers)} samples, fewer than k={kq}")
        winner = majority_vote(query_answers[:kq])
        if winner is None:
            continue
        votes = zip(query_answers[:kq], query_correct[:kq], strict=True)
        verdicts = {bool(v) for a, v in votes if a == winner}
        if len(verdicts) > 1:
            raise ValueError(f"query {q}: answer {winner!r} is marked both correct and wrong")
        right += verdicts.pop()
    return right / len(answers)


class PassAtK(Metric):
    """Mean unbiased pass@k over queries, for several ``k`` at once.

    ``update(correct)`` takes a bool ``(num_queries, n)`` tensor: ``n`` samples per query.
    ``compute()`` returns ``{"pass@1": ..., "pass@4": ...}`` (float64 scalars).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (1, 4, 16), **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(ks, int) or not len(ks):
            raise ValueError(f"ks must be a non-empty sequence of ints, got {ks!r}")
        self.ks = tuple(sorted({_check_int("ks[i]", k, 1) for k in ks}))
        for k in self.ks:
            self.add_state(
                f"pass_sum_{k}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
            )
        self.add_state("num_queries", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: Tensor) -> None:
        if correct.dim() != 2:
            raise ValueError(
                f"correct must be (num_queries, n_samples), got shape {tuple(correct.shape)}"
            )
        n = correct.shape[1]
        if n < self.ks[-1]:
            raise ValueError(
                f"{n} samples per query but pass@{self.ks[-1]} needs at least {self.ks[-1]}"
            )
        if correct.dtype != torch.bool and not ((correct == 0) | (correct == 1)).all():
            raise ValueError("correct must be boolean or hold only 0 and 1")
        num_correct = correct.long().sum(1)
        for k in self.ks:
            state = getattr(self, f"pass_sum_{k}")
            setattr(self, f"pass_sum_{k}", state + pass_at_k_tensor(n, num_correct, k).sum())
        self.num_queries += correct.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """Mean over queries; NaN before any query was seen."""
        num = self.num_queries.to(torch.float64)
        return {f"pass@{k}": getattr(self, f"pass_sum_{k}") / num for k in self.ks}


class MeanTokenEntropy(Metric):
    """Mean per-token entropy over the masked tokens of every update (NaN before any token)."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_tokens", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, entropy: Tensor, mask: Tensor) -> None:
        if mask.shape != entropy.shape:
            raise ValueError(
                f"mask has shape {tuple(mask.shape)} but entropy has {tuple(entropy.shape)}"
            )
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must be boolean or hold only 0 and 1")
        m = mask.bool()
        self.entropy_sum += entropy.detach().to(torch.float64)[m].sum()
        self.num_tokens += m.sum()

    def compute(self) -> Tensor:
        return self.entropy_sum / self.num_tokens.to(torch.float64)
