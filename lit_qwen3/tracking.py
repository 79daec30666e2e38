"""Send metrics and tables to whatever loggers the Trainer has, MLflow first among them.

Callbacks log from hooks where ``LightningModule.log`` is not allowed (``on_train_end``) and
log tables, which only MLflow stores; these helpers keep that logic in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only


@rank_zero_only
def log_metrics(trainer: Trainer, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log scalar metrics to every logger at ``step`` (default: the trainer's global step)."""
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)


def mlflow_loggers(trainer: Trainer) -> list[MLFlowLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)]


@rank_zero_only
def log_table(trainer: Trainer, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
    """Log rows (dicts with the same keys) as an MLflow table artifact; other loggers skip it."""
    if not rows:
        return
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    for logger in mlflow_loggers(trainer):
        logger.experiment.log_table(logger.run_id, data=columns, artifact_file=artifact_file)
