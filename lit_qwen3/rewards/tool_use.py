"""Reward for using an agent tool: 1.0 when the rollout called a tool and every call worked.

Agent rollouts (:mod:`lit_qwen3.agent`) record their calls in ``Sample.metadata["tool_calls"]``
(``[{"name", "arguments", "response", "ok"}]``). Combine it with a correctness reward: a call
alone earns this reward, the right final answer earns the other, so the policy learns to call
the tool and to use what it returns.
"""

from __future__ import annotations

from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward

__all__ = ["ToolUseReward"]


@register_reward("tool_use")
class ToolUseReward(Reward):
    """1.0 for at least one call, all of them successful (optionally of ``tool`` only)."""

    def __init__(self, *, tool: str | None = None) -> None:
        self.tool = tool

    def score(self, sample: Sample) -> RewardResult:
        calls = sample.metadata.get("tool_calls") or []
        if self.tool is not None:
            calls = [c for c in calls if c.get("name") == self.tool]
        ok = bool(calls) and all(c.get("ok") for c in calls)
        return RewardResult(float(ok), {"calls": len(calls)})
