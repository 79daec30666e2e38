"""One LightningModule per stage of the Qwen3 recipe."""

from lit_qwen3.stages.cold_start import ColdStartSFT
from lit_qwen3.stages.general_rl import GeneralRL
from lit_qwen3.stages.grpo import GroupRelativeRL
from lit_qwen3.stages.off_policy_distillation import OffPolicyDistillation
from lit_qwen3.stages.on_policy_distillation import OnPolicyDistillation
from lit_qwen3.stages.reasoning_rl import ReasoningRL
from lit_qwen3.stages.reward_model import RewardModelTraining
from lit_qwen3.stages.sft import SupervisedFineTuning
from lit_qwen3.stages.thinking_fusion import ThinkingModeFusion

__all__ = [
    "ColdStartSFT",
    "GeneralRL",
    "GroupRelativeRL",
    "OffPolicyDistillation",
    "OnPolicyDistillation",
    "ReasoningRL",
    "RewardModelTraining",
    "SupervisedFineTuning",
    "ThinkingModeFusion",
]
