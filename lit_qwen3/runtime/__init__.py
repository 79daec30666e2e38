"""What a run needs around its training math: Lightning glue, files and tracking.

- ``runs``: run names and directories, and the record a finished stage leaves.
- ``checkpointing`` and ``atomic``: periodic checkpoints that a crash never half-writes; resume.
- ``faults``: ``NonFiniteGuard``, which skips non-finite steps and stops past a limit.
- ``optim``: AdamW with warmup and cosine decay, configured from YAML.
- ``strategies``: DDP, FSDP2, FSDP and DeepSpeed for Hugging Face decoders.
- ``export``: a stage's result as a Hugging Face directory, the next stage's input.
- ``tracking`` and ``plots``: metrics, tables, figures and datasets in MLflow.
"""

from lit_qwen3.runtime.checkpointing import PeriodicCheckpoint, resume_checkpoint
from lit_qwen3.runtime.export import export_pretrained
from lit_qwen3.runtime.faults import NonFiniteError, NonFiniteGuard, NonFiniteLimits
from lit_qwen3.runtime.optim import OptimizerConfig, configure_adamw
from lit_qwen3.runtime.strategies import DecoderFSDPStrategy, FSDP2Strategy
from lit_qwen3.runtime.tracking import log_figure, log_metrics, log_table

__all__ = [
    "DecoderFSDPStrategy",
    "FSDP2Strategy",
    "NonFiniteError",
    "NonFiniteGuard",
    "NonFiniteLimits",
    "OptimizerConfig",
    "PeriodicCheckpoint",
    "configure_adamw",
    "export_pretrained",
    "log_figure",
    "log_metrics",
    "log_table",
    "resume_checkpoint",
]
