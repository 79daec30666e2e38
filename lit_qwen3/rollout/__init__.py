"""Rollouts: what the policy samples, and the log-probs a trainer needs of it.

- ``generation``: ``RolloutSampler``, batched KV-cache sampling with a per-row thinking budget.
- ``sampling``: the pure rules it applies (logit warpers, the seeded draw, budget transitions).
- ``decoding``: the model side: a preallocated KV cache and a lean, compilable decode step.
- ``budget_rounds`` and ``vllm_rollouts``: the same budget for engines that generate whole
  continuations (vLLM), in rounds.
- ``rescoring``: a forward pass lined up with ``Rollouts`` (policy, reference or teacher).
- ``placement``: where a model's weights live, and when sharded ranks must decode in lockstep.
"""

from lit_qwen3.rollout.generation import (
    QWEN3_NON_THINKING,
    QWEN3_THINKING,
    Rollouts,
    RolloutSampler,
    SamplingConfig,
    ThinkingBudgetLogitsProcessor,
)
from lit_qwen3.rollout.placement import is_sharded, model_device
from lit_qwen3.rollout.rescoring import CompletionScores, score_completions
from lit_qwen3.rollout.vllm_rollouts import ROLLOUT_BACKENDS, VLLMRolloutSampler

__all__ = [
    "QWEN3_NON_THINKING",
    "QWEN3_THINKING",
    "ROLLOUT_BACKENDS",
    "CompletionScores",
    "RolloutSampler",
    "Rollouts",
    "SamplingConfig",
    "ThinkingBudgetLogitsProcessor",
    "VLLMRolloutSampler",
    "is_sharded",
    "model_device",
    "score_completions",
]
