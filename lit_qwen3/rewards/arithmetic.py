"""The toy task's exact verifier as a reward: 1.0 when the answer's last ``\\boxed{}`` holds the
reference integer (:func:`lit_qwen3.datamodules.arithmetic.verify`).

Cheaper than math-verify and without false positives on integers, so the toy RL stages and
curation score thousands of rollouts in process. Only the answer after ``</think>`` counts.
"""

from __future__ import annotations

from lit_qwen3.datamodules.arithmetic import extract_boxed, verify
from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward

__all__ = ["ArithmeticReward"]


@register_reward("arithmetic")
class ArithmeticReward(Reward):
    """1.0 for the exact integer in the answer's last ``\\boxed{}``; needs ``reference``."""

    requires = ("reference",)

    def score(self, sample: Sample) -> RewardResult:
        correct = verify(sample.answer, sample.metadata["reference"])
        return RewardResult(float(correct), {"extracted": extract_boxed(sample.answer)})
