"""Format and flag following (general RL, Qwen3 report section 4.4; ThinkFollow in Table 22).

A reply follows the format when it has exactly one ``<think>...</think>`` block, at the start,
and follows the flag when the block matches the mode the prompt asked for: ``/no_think`` (or
``enable_thinking=False``) wants the empty block the template writes, ``/think`` or no flag wants
real thinking, and in multi-turn dialogs the last flag wins (decided by
:func:`lit_qwen3.chat.thinking_enabled` when the :class:`Sample` is built).
"""

from __future__ import annotations

from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward

__all__ = ["FormatReward", "format_violation"]


def format_violation(sample: Sample, *, require_answer: bool = True) -> str | None:
    """Why ``sample`` breaks the format or flag rules, or ``None`` when it follows them.

    Reasons: ``missing_think`` (no block), ``malformed_think`` (unclosed, repeated or not at the
    start), ``empty_thinking_in_think``, ``nonempty_thinking_in_no_think``, ``empty_answer``.

    In a rollout that called tools, the reply is the turn after the last tool output, whose block
    the template (and the fusion data) leaves empty: the thinking that counts is the calling
    turn's (``metadata["call_thinking"]``) together with the reply's.
    """
    if sample.thinking is None:
        return "missing_think"
    if not sample.well_formed:
        return "malformed_think"
    thinking = sample.thinking
    if sample.metadata.get("tool_calls"):
        thinking = (sample.metadata.get("call_thinking") or "") + thinking
    if sample.thinking_mode and not thinking.strip():
        return "empty_thinking_in_think"
    if not sample.thinking_mode and thinking.strip():
        return "nonempty_thinking_in_no_think"
    if require_answer and not sample.answer:
        return "empty_answer"
    return None


@register_reward("format")
class FormatReward(Reward):
    """1.0 when the reply has one well-formed thinking block that matches the requested mode.

    Args:
        require_answer: also require a non-empty answer after ``</think>``.
    """

    def __init__(self, *, require_answer: bool = True) -> None:
        self.require_answer = require_answer

    def score(self, sample: Sample) -> RewardResult:
        reason = format_violation(sample, require_answer=self.require_answer)
        info = {"thinking_mode": sample.thinking_mode}
        if reason is None:
            return RewardResult(1.0, info)
        return RewardResult(0.0, {**info, "reason": reason})
