"""What scoring one sample with one reward gives: a checked :class:`RewardResult` or a
:class:`Failure`. Shared by the composite and the worker pool, which both depend on the reward
interface (:mod:`lit_qwen3.rewards.base`) and never the reverse."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from lit_qwen3.rewards.base import RewardResult

__all__ = ["Failure", "Task", "validated"]

#: ``(component label, sample index)``: one reward scoring one sample.
Task = tuple[str, int]


@dataclass(frozen=True)
class Failure:
    """A reward that raised, timed out or returned garbage for one sample."""

    message: str

    @classmethod
    def from_exception(cls, err: BaseException) -> Failure:
        try:
            detail = str(err)
        except Exception:  # noqa: BLE001 - an exception whose __str__ raises
            detail = ""
        text = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
        return cls(text if len(text) <= 500 else text[:497] + "...")


def validated(result: RewardResult | Failure | Any) -> RewardResult | Failure:
    """``result`` with its score as a float, or a :class:`Failure` saying what was wrong.

    The score must be a finite real number. ``"0.9"``, ``True``, a numpy bool, a tensor or NaN
    are bugs in the reward: silently converting them would train on garbage.
    """
    if isinstance(result, Failure):
        return result
    if not isinstance(result, RewardResult):
        return Failure(f"TypeError: returned {type(result).__name__}, expected RewardResult")
    score = result.score
    if isinstance(score, bool) or not isinstance(score, numbers.Real):
        kind = type(score)
        name = (
            kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        )
        return Failure(f"TypeError: score must be a finite real number, got {name} {_short(score)}")
    try:
        value = float(score)
    except Exception as err:  # noqa: BLE001 - a Real whose __float__ fails
        return Failure(f"TypeError: score {_short(score)} cannot be read as a float ({err})")
    if not math.isfinite(value):
        return Failure(f"ValueError: score must be a finite real number, got {value}")
    info = result.info if isinstance(result.info, dict) else {"info": result.info}
    return RewardResult(score=value, info=info)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = "<unprintable>"
    return text if len(text) <= 60 else text[:57] + "..."
