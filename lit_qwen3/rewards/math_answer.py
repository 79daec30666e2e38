"""Math answers checked with math-verify: LaTeX, ``\\boxed{}``, fractions, equivalent forms.

Only the answer after ``</think>`` is scored: a model that writes the right number somewhere in
its thinking and a wrong one in its answer scores 0.

math-verify guards ``parse`` and ``verify`` with ``signal.alarm``, which only works in the main
thread: called from a thread it raises, and wrappers that swallow the error score every sample 0
(verl PR 5635). Here both calls always run with math-verify's timeouts switched off, so the
reward works from any thread; the time limit comes from outside, from
:class:`~lit_qwen3.rewards.composite.CompositeReward`'s worker processes (``run_in_worker = True``).
Calling :meth:`MathReward.score` directly runs without a time limit.
"""

from __future__ import annotations

import functools
import logging
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

from math_verify import parse, verify

from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward

__all__ = ["MathReward", "extract_answer", "last_boxed", "parse_reference"]


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that its timeout is off; ours is on, from outside."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BARE = re.compile(r"[^\s$]+")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    ``\\boxed 5`` (no braces) gives ``"5"``; an unclosed last box gives ``None``. Braces are
    matched in one pass (scanning to the end from each unclosed box was quadratic: 20000
    ``\\boxed{`` took over a minute).
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    close: dict[int, int] = {}
    opened: list[int] = []
    for i, char in enumerate(text):
        if char == "{":
            opened.append(i)
        elif char == "}" and opened:
            close[opened.pop()] = i
    for match in reversed(matches):
        start = match.end()
        if start < len(text) and text[start] == "{":
            if start in close:
                return text[start + 1 : close[start]].strip()
            continue  # unbalanced: try an earlier box
        bare = _BARE.match(text, start)
        if bare:
            return bare.group(0)
    return None


def _parse_latex(text: str) -> list:
    """math-verify parse, signal timeout off; inline ``$...$`` first, then plain expressions."""
    if "$" not in text and "\\(" not in text and "\\[" not in text:
        parsed = parse(f"${text}$", parsing_timeout=None)
        if parsed:
            return parsed
    return parse(text, parsing_timeout=None)


def extract_answer(answer: str) -> tuple[list, str | None]:
    """Parse the final answer of ``answer``: the last ``\\boxed{}``, else math-verify's own pick.

    Returns ``(parsed, source)`` where ``source`` is ``"boxed"``, ``"text"`` or ``None`` (nothing
    found); ``parsed`` is math-verify's list (sympy objects, then the matched string).
    """
    boxed = last_boxed(answer)
    if boxed is not None:
        parsed = _parse_latex(boxed) if boxed else []
        return (parsed, "boxed") if parsed else ([], None)
    parsed = parse(answer, parsing_timeout=None)
    return (parsed, "text") if parsed else ([], None)


@functools.lru_cache(maxsize=4096)
def _parse_reference_cached(reference: str) -> tuple:
    boxed = last_boxed(reference)
    return tuple(_parse_latex(boxed if boxed else reference))


def parse_reference(reference: str | int | float | Fraction | Decimal) -> list:
    """Parse a reference answer (``"\\frac{1}{2}"``, ``"0.5"``, ``"$x^2+1$"``, ``42``); cached,
    since every rollout in a GRPO group shares its query's reference."""
    if isinstance(reference, bool) or not isinstance(
        reference, (str, int, float, Fraction, Decimal)
    ):
        raise TypeError(f"math reference must be a str or a number, got {type(reference).__name__}")
    text = str(reference).strip()
    if not text:
        raise ValueError("math reference is empty")
    return list(_parse_reference_cached(text))


@register_reward("math")
class MathReward(Reward):
    """1.0 when the answer after ``</think>`` equals ``metadata["reference"]``, else 0.0.

    Args:
        require_boxed: score 0 unless the answer has a ``\\boxed{}`` (otherwise math-verify
            picks the final expression of the answer text).
        float_rounding: decimals kept when comparing floats (math-verify's option).
        numeric_precision: digits used when evaluating expressions numerically.
        strict: math-verify's strict mode (variables must match, ``x=3`` vs ``3`` differs less).
    """

    run_in_worker = True
    requires = ("reference",)

    def __init__(
        self,
        *,
        require_boxed: bool = False,
        float_rounding: int = 6,
        numeric_precision: int = 15,
        strict: bool = True,
    ) -> None:
        self.require_boxed = require_boxed
        self.float_rounding = float_rounding
        self.numeric_precision = numeric_precision
        self.strict = strict

    def check(self, sample: Sample) -> None:
        super().check(sample)
        reference = sample.metadata["reference"]
        if isinstance(reference, bool) or not isinstance(
            reference, (str, int, float, Fraction, Decimal)
        ):
            raise ValueError(
                f"reward {self.name!r}: metadata['reference'] must be a str or a number, "
                f"got {type(reference).__name__}"
            )
        if isinstance(reference, str) and not reference.strip():
            raise ValueError(f"reward {self.name!r}: metadata['reference'] is empty")

    def score(self, sample: Sample) -> RewardResult:
        self.check(sample)
        gold = parse_reference(sample.metadata["reference"])
        if not gold:
            raise ValueError(
                f"math-verify could not parse the reference {sample.metadata['reference']!r}"
            )
        if not sample.answer:
            return RewardResult(0.0, {"reason": "empty_answer"})
        if self.require_boxed and last_boxed(sample.answer) is None:
            return RewardResult(0.0, {"reason": "no_boxed_answer"})
        predicted, source = extract_answer(sample.answer)
        if not predicted:
            return RewardResult(0.0, {"reason": "no_answer_found"})
        correct = verify(
            gold,
            predicted,
            float_rounding=self.float_rounding,
            numeric_precision=self.numeric_precision,
            strict=self.strict,
            timeout_seconds=None,
        )
        info: dict[str, Any] = {"extracted": _matched_text(predicted), "source": source}
        if not correct:
            info["reason"] = "wrong_answer"
        return RewardResult(1.0 if correct else 0.0, info)


def _matched_text(parsed: list) -> str | None:
    # math-verify appends the matched string; printing sympy objects can be very slow, so don't.
    strings = [item for item in parsed if isinstance(item, str)]
    return strings[-1] if strings else None
