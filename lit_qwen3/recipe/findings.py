"""The report's findings: each claim of the Qwen3 report, decided on a 95 % interval.

Every compared number in ``report.json`` keeps its per-problem scores (``scores``), so each
finding is a paired comparison on the same held-out problems
(:func:`~lit_qwen3.ops.intervals.paired_difference`) or an interval of one value against the
threshold the claim names. The verdict is the interval's alone: ``holds`` when it lies wholly
on the paper's side, ``not shown`` when it straddles, ``does NOT hold`` when it lies on the other
side. Nothing is tuned to the outcome here: a claim without its data is left out, not passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lit_qwen3.ops.intervals import Interval, bootstrap_mean, paired_difference, verdict

__all__ = ["FINDINGS", "Finding", "compute_findings"]


@dataclass(frozen=True)
class Finding:
    """One claim: its name in ``report.json``, its words, and how its interval is made."""

    name: str
    claim: str
    interval: Callable[[dict[str, Any], int], Interval | None]
    direction: str = "greater"
    threshold: float = 0.0


def _scores(node: dict[str, Any] | None, key: str) -> list[float] | None:
    return ((node or {}).get("scores") or {}).get(key)


def _paired(a: list[float] | None, b: list[float] | None, seed: int) -> Interval | None:
    return None if a is None or b is None else paired_difference(a, b, seed=seed)


def _stage(data: dict[str, Any], row: str) -> dict[str, Any] | None:
    return data.get("stages", {}).get(row)


def _table21(data: dict[str, Any], row: str) -> dict[str, Any] | None:
    return data.get("table21", {}).get(row)


def _rl_over_cold_start(data: dict[str, Any], seed: int) -> Interval | None:
    after = _scores(_stage(data, "reasoning_rl"), "think")
    return _paired(after, _scores(_stage(data, "cold_start"), "think"), seed)


def _no_think_after_fusion(data: dict[str, Any], seed: int) -> Interval | None:
    scores = _scores(_stage(data, "thinking_fusion"), "no_think")
    return None if scores is None else bootstrap_mean(scores, seed=seed)


def _budget_curve(data: dict[str, Any], seed: int) -> Interval | None:
    figure = data.get("figure2") or {}
    models = figure.get("models") or {}
    if not models or not figure.get("budgets"):
        return None
    final = models[list(models)[-1]]
    budgets = figure["budgets"]
    largest = _scores(final, f"budget_{max(budgets)}")
    smallest = _scores(final, f"budget_{min(budgets)}")
    return _paired(largest, smallest, seed)


def _think_follow_stage4(data: dict[str, Any], seed: int) -> Interval | None:
    scores = _scores(_stage(data, "general_rl"), "think_follow")
    return None if scores is None else bootstrap_mean(scores, seed=seed)


def _instructions(data: dict[str, Any], seed: int) -> Interval | None:
    after = _scores(_stage(data, "general_rl"), "instructions")
    return _paired(after, _scores(_stage(data, "thinking_fusion"), "instructions"), seed)


def _table21_pair(first: str, second: str, key: str):
    def interval(data: dict[str, Any], seed: int) -> Interval | None:
        a = _scores(_table21(data, first), key)
        return _paired(a, _scores(_table21(data, second), key), seed)

    return interval


def _compute_ratio(data: dict[str, Any], seed: int) -> Interval | None:
    """Training FLOPs are counted, not sampled: the ratio's interval is the ratio itself."""
    on, rl = _table21(data, "on_policy") or {}, _table21(data, "rl") or {}
    if not on.get("flops") or not rl.get("flops"):
        return None
    ratio = on["flops"] / rl["flops"]
    return Interval(ratio, ratio, ratio)


FINDINGS: tuple[Finding, ...] = (
    Finding(
        "rl_over_cold_start",
        "reasoning RL raises thinking pass@1 over the cold start",
        _rl_over_cold_start,
    ),
    Finding(
        "no_think_after_fusion",
        "after thinking-mode fusion the non-thinking mode answers (pass@1 above 0)",
        _no_think_after_fusion,
    ),
    Finding(
        "budget_curve",
        "pass@1 rises with the thinking budget (largest budget above the smallest)",
        _budget_curve,
    ),
    Finding(
        "think_follow_stage4",
        "after general RL the model follows /think and /no_think in multi-turn dialogues "
        "(ThinkFollow above 0.95)",
        _think_follow_stage4,
        threshold=0.95,
    ),
    Finding(
        "instructions_stage4_over_stage3",
        "general RL raises instruction following over thinking-mode fusion",
        _instructions,
    ),
    Finding(
        "on_policy_over_off_policy",
        "on-policy distillation raises pass@1 over its off-policy start",
        _table21_pair("on_policy", "off_policy", "pass1"),
    ),
    Finding(
        "on_policy_vs_rl_pass1",
        "on-policy distillation beats RL on the same student in pass@1",
        _table21_pair("on_policy", "rl", "pass1"),
    ),
    Finding(
        "on_policy_vs_rl_pass_k",
        "on-policy distillation beats RL on the same student in pass@k",
        _table21_pair("on_policy", "rl", "pass_k"),
    ),
    Finding(
        "on_policy_compute",
        "on-policy distillation uses fewer training FLOPs than RL (ratio below 1)",
        _compute_ratio,
        direction="less",
        threshold=1.0,
    ),
)


def compute_findings(data: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """``[{"name", "claim", "verdict", "delta", "ci95", "threshold"}]`` for each claim whose
    data the report holds; ``delta`` is the difference (or the value) the interval is of."""
    out = []
    for finding in FINDINGS:
        interval = finding.interval(data, seed)
        if interval is None:
            continue
        out.append(
            {
                "name": finding.name,
                "claim": finding.claim,
                "verdict": verdict(interval, finding.direction, finding.threshold),
                "delta": interval.value,
                "ci95": [interval.low, interval.high],
                "threshold": finding.threshold,
            }
        )
    return out
