"""A briefly cold-started toy policy, trained once per test session (about 30 s on 2 cores).

RL, fusion and distillation tests need a policy that already writes the toy scratchpad: a
random model never opens ``<think>`` and never earns a reward. ``train_toy_policy`` runs the
real ``ColdStartSFT`` on 2-digit sums (no check line) to greedy thinking pass@1 of about 0.5-0.9
and exports it with ``save_pretrained`` like any stage.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT

#: Cold-start steps: pass@1 on 2-digit sums goes 0.03 / 0.61 / 0.94 at 300 / 400 / 500 steps.
STEPS = 450


def toy_sft_data(**overrides) -> ConversationDataModule:
    settings = dict(
        toy_size=8000,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        toy_check=False,
        val_size=64,
        max_tokens_per_batch=2048,
        max_length=128,
        packing=False,
    )
    return ConversationDataModule("toy-teacher", **{**settings, **overrides})


def train_toy_policy(directory: Path, steps: int = STEPS, preset: str = "toy-teacher") -> Path:
    """Cold-start ``preset`` on 2-digit sums for ``steps`` steps and export it to ``directory``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        module = ColdStartSFT(
            model=preset,
            output_dir=str(directory),
            optimizer=OptimizerConfig(lr=3e-3, warmup_steps=20),
        )
        L.seed_everything(0, verbose=False)
        L.Trainer(
            max_steps=steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            gradient_clip_val=1.0,
        ).fit(module, toy_sft_data())
    finally:
        torch.set_num_threads(threads)
    return directory
