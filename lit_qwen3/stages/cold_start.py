"""Stage 1 of the Qwen3 recipe: long chain-of-thought cold start (report section 4.1).

SFT on curated, verified thinking-mode traces. The report trains on a small subset for few steps,
"to instil the pattern, not chase the score"; the toy config follows that with a short schedule.
"""

from __future__ import annotations

from lit_qwen3.stages.sft import SupervisedFineTuning


class ColdStartSFT(SupervisedFineTuning):
    """Long-CoT cold start: SFT on thinking-mode traces, assistant tokens only.

    Same arguments as :class:`~lit_qwen3.stages.sft.SupervisedFineTuning`; the stage name tags
    its MLflow run and log lines.
    """

    stage = "cold_start"
