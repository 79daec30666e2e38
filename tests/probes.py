"""Test helpers for CLI runs: a tiny override of the toy cold start, a callback that measures what
a training step saves for backward, and a kill switch that SIGKILLs a run at a named point.

The callbacks are named by import path in configs (``tests.probes.KillSwitch``): subprocesses
need the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIG = REPO / "configs" / "toy" / "cold_start.yaml"

#: The toy cold start shrunk to seconds: a tiny model, 200 conversations, tiny evaluations.
TINY = {
    "model": {"init_args": {"model": "toy-student"}},
    "data": {"init_args": {"toy_size": 200, "val_size": 8, "max_tokens_per_batch": 1024}},
    "trainer": {
        "max_steps": 4,
        "val_check_interval": 2,
        "limit_val_batches": 1,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    },
    "pass_at_k": {
        "init_args": {
            "ks": [1, 2],
            "n_samples": 2,
            "every_n_steps": 2,
            "num_queries": 3,
            "max_new_tokens": 16,
            "log_samples": 2,
        }
    },
    "thinking_budget": {
        "init_args": {"sweep": [0, 8], "num_queries": 3, "max_new_tokens": 16, "log_samples": 1}
    },
    "checkpoint": {"init_args": {"every_n_train_steps": 2}},
}


def write_tiny(directory: Path, name: str = "tiny", **sections: Any) -> Path:
    """Write ``TINY`` (sections replaced or added by ``sections``) as ``directory/name.yaml``."""
    config = {**TINY, **sections}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class SavedActivations(Callback):
    """Write to ``path`` what the first training step saved for backward (bytes) and whether the
    network was in train mode with gradient checkpointing on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.bytes = 0
        self._hooks: Any = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if trainer.global_step != 0:
            return
        model = pl_module.model
        self.state = {
            "training": model.training,
            "modules_in_eval_mode": sum(not m.training for m in model.modules()),
            "gradient_checkpointing": bool(
                getattr(model, "is_activation_checkpointing", None)
                or model.is_gradient_checkpointing
            ),
        }

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            self.bytes += tensor.numel() * tensor.element_size()
            return tensor

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
        self._hooks.__enter__()

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss) -> None:
        if self._hooks is None:
            return
        self._hooks.__exit__(None, None, None)
        self._hooks = None
        Path(self.path).write_text(json.dumps({**self.state, "saved_bytes": self.bytes}))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillSwitch(Callback):
    """SIGKILL this process at the point ``$LIT_QWEN3_KILL`` names (unset: do nothing):

    * ``setup``: while the trainer sets up (the MLflow run exists, no checkpoint yet);
    * ``step:N``: as optimizer step N starts (after the checkpoint of step N-1, if any);
    * ``checkpoint:N``: while checkpoint N is written (complete ``.partial``, not yet renamed);
    * ``export``: while the model is exported (complete ``model.partial``, not yet renamed).
    """

    def __init__(self) -> None:
        self.point = os.environ.get("LIT_QWEN3_KILL", "")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        import lit_qwen3.runtime.checkpointing
        import lit_qwen3.runtime.export

        if self.point == "setup":
            _die()
        if self.point.startswith("checkpoint:"):
            step = int(self.point.partition(":")[2])
            original = lit_qwen3.runtime.checkpointing.replace_atomically

            def replace(source, target):
                if trainer.global_step == step:
                    _die()
                original(source, target)

            lit_qwen3.runtime.checkpointing.replace_atomically = replace
        if self.point == "export":
            lit_qwen3.runtime.export.replace_atomically = lambda source, target: _die()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if self.point == f"step:{trainer.global_step}":
            _die()
