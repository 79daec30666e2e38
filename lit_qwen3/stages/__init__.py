"""One LightningModule per stage of the Qwen3 recipe."""

from lit_qwen3.stages.cold_start import ColdStartSFT
from lit_qwen3.stages.reward_model import RewardModelTraining
from lit_qwen3.stages.sft import SupervisedFineTuning

__all__ = ["ColdStartSFT", "RewardModelTraining", "SupervisedFineTuning"]
