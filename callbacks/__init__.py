"""Lightning callbacks of the recipe (installed as ``lit_qwen3.callbacks``)."""

from lit_qwen3.callbacks.entropy_monitor import EntropyMonitor
from lit_qwen3.callbacks.pass_at_k import PassAtK
from lit_qwen3.callbacks.thinking_budget import ThinkingBudget

__all__ = ["EntropyMonitor", "PassAtK", "ThinkingBudget"]
