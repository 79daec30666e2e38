"""AdamW with linear warmup and cosine decay: the optimiser every stage configures from YAML."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class OptimizerConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-3
    """Peak learning rate, reached after the warmup."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to norms and biases (1-D parameters)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW's moment coefficients."""
    eps: float = 1e-8
    """AdamW's denominator epsilon."""
    warmup_steps: int = 20
    """Optimizer steps of linear warmup from 0 to ``lr``."""
    min_lr_ratio: float = 0.1
    """The cosine decays to ``lr * min_lr_ratio`` at the last step."""
    fused: bool | None = None
    """AdamW's fused kernel: one pass over every parameter (on CPU about 4x faster than the
    default loop over parameters, ``benchmarks/bench_mfu.py``). None: fused when every trainable
    parameter is a plain tensor on CPU or CUDA (FSDP2 and ZeRO-3 shards keep the default)."""

    def __post_init__(self) -> None:
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def integer(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        betas = self.betas
        pair = isinstance(betas, (tuple, list)) and len(betas) == 2
        rules = (
            ("lr", number(self.lr) and self.lr > 0, "> 0 (a finite number)"),
            ("weight_decay", number(self.weight_decay) and self.weight_decay >= 0, ">= 0 (finite)"),
            ("betas", pair and all(number(b) and 0 <= b < 1 for b in betas), "two in [0, 1)"),
            ("eps", number(self.eps) and self.eps > 0, "> 0 (a finite number)"),
            (
                "warmup_steps",
                integer(self.warmup_steps) and self.warmup_steps >= 0,
                ">= 0 (an int)",
            ),
            (
                "min_lr_ratio",
                number(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1,
                "in [0, 1]",
            ),
            ("fused", self.fused is None or isinstance(self.fused, bool), "true, false or null"),
        )
        for name, ok, expected in rules:
            if not ok:
                raise ValueError(
                    f"optimizer.{name} must be {expected}, got {getattr(self, name)!r}"
                )


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The learning-rate multiplier at ``step``: linear warmup, then cosine to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def configure_adamw(
    model: torch.nn.Module, config: OptimizerConfig, total_steps: int
) -> dict[str, Any]:
    """What ``LightningModule.configure_optimizers`` returns: AdamW plus a per-step schedule."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            # ZeRO-3 partitions are flat: their original shape is ``ds_shape``
            dims = len(getattr(parameter, "ds_shape", parameter.shape))
            (decay if dims >= 2 else no_decay).append(parameter)
    fused = getattr(config, "fused", None)  # checkpoints written before the field lack it
    if fused is None:
        fused = all(_fusable(p) for p in decay + no_decay)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        **({"fused": True} if fused else {}),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(
            step,
            warmup_steps=config.warmup_steps,
            total_steps=total_steps,
            min_lr_ratio=config.min_lr_ratio,
        ),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _fusable(parameter: torch.Tensor) -> bool:
    """A plain tensor on a device with a fused AdamW kernel (not a DTensor or ZeRO partition)."""
    return (
        type(parameter) is torch.nn.Parameter
        and type(parameter.data) is torch.Tensor
        and not hasattr(parameter, "ds_id")
        and parameter.device.type in ("cpu", "cuda")
        and parameter.is_floating_point()
    )
