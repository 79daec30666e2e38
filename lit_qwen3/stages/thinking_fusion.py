"""Stage 3 of the Qwen3 recipe: thinking-mode fusion (report section 4.3).

Continued SFT of the reasoning-RL model on a mix of thinking and non-thinking replies in one
chat template (``FusionDataModule``): ``/think`` and ``/no_think`` flags in user or system turns,
thinking by default, multi-turn dialogs that follow the last flag, and cut-off thinking closed
with the stop-thinking text so that thinking budgets work. The shares of each kind are logged
to MLflow as ``data/...`` metrics at the start of training.
"""

from __future__ import annotations

from lit_qwen3.runtime.tracking import log_metrics
from lit_qwen3.stages.sft import SupervisedFineTuning


class ThinkingModeFusion(SupervisedFineTuning):
    """SFT on the fusion mix; arguments as :class:`~lit_qwen3.stages.sft.SupervisedFineTuning`."""

    stage = "thinking_fusion"

    def on_train_start(self) -> None:
        super().on_train_start()  # random generators of a resumed run
        mix = getattr(self.trainer.datamodule, "mix", None)
        if mix:  # log_metrics logs from rank 0 only
            log_metrics(self.trainer, {f"data/{key}": value for key, value in mix.items()}, step=0)
