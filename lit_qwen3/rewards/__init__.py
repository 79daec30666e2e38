"""Verifiers and reward models behind one interface (see :mod:`lit_qwen3.rewards.base`).

Built-in reward modules register themselves when imported. They are imported on first use of
the registry (:func:`available_rewards`, :func:`build_reward`, :class:`CompositeReward`) rather
than with this package, so a worker process that unpickles a math reward does not also import
torch for the reward model.
"""

from __future__ import annotations

import importlib
from typing import Any

from lit_qwen3.rewards.base import (
    Reward,
    RewardResult,
    Sample,
    available_rewards,
    build_reward,
    register_reward,
)
from lit_qwen3.rewards.composite import CompositeReward

#: Modules whose import registers the built-in rewards (relative to this package).
_BUILTIN_MODULES: tuple[str, ...] = (
    "arithmetic",
    "math_answer",
    "code",
    "format",
    "instructions",
    "judge",
    "reward_model",
    "tool_use",
)

#: Registry name -> module, so ``build_reward("math")`` imports only what it needs (the judge
#: and reward model import torch). Names missing here are found by importing every module above.
_BUILTIN_NAMES: dict[str, str] = {
    "arithmetic": "arithmetic",
    "math": "math_answer",
    "code": "code",
    "format": "format",
    "instructions": "instructions",
    "judge": "judge",
    "reward_model": "reward_model",
    "tool_use": "tool_use",
}

#: Public classes, importable from this package without importing every reward module.
_LAZY_EXPORTS = {
    "ArithmeticReward": "arithmetic",
    "MathReward": "math_answer",
    "CodeReward": "code",
    "FormatReward": "format",
    "InstructionFollowingReward": "instructions",
    "GenerativeJudge": "judge",
    "ScalarRewardModel": "reward_model",
    "ToolUseReward": "tool_use",
    "Sandbox": "sandbox",
    "SandboxConfig": "sandbox",
    "SandboxResult": "sandbox",
}


def load_builtin_rewards(name: str | None = None) -> None:
    """Import the built-in reward modules so that they register their rewards: only the one
    that provides ``name`` when it is known, else all of them."""
    modules = (_BUILTIN_NAMES[name],) if name in _BUILTIN_NAMES else _BUILTIN_MODULES
    for module in modules:
        importlib.import_module(f"{__name__}.{module}")


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "CompositeReward",
    "Reward",
    "RewardResult",
    "Sample",
    "available_rewards",
    "build_reward",
    "load_builtin_rewards",
    "register_reward",
    *_LAZY_EXPORTS,
]
