"""Checkpoints a killed run can resume from: periodic (by steps and by wall time), atomic, and
never written with non-finite weights.

:class:`PeriodicCheckpoint` is Lightning's ``ModelCheckpoint`` with three changes:

* it saves every ``every_n_train_steps`` optimizer steps **and** every ``train_time_interval``
  (Lightning allows one trigger only), the same way under automatic and manual optimisation
  (a batch that takes several optimizer steps saves when it passes a multiple of N), and once
  more when training ends, so rerunning a finished command does no training;
* every write goes to ``<name>.partial`` first and replaces ``<name>`` by a rename, so a kill
  mid-write leaves the previous checkpoint intact (a sharded FSDP2 checkpoint is a directory:
  it is swapped through ``<name>.old``, which :func:`resume_checkpoint` also accepts);
* it refuses to save weights that are not finite (the last good checkpoint stays).

By default it keeps ``last.ckpt`` only (``save_top_k=0``): one checkpoint's worth of disk.
:func:`capture_rng_state` / :func:`restore_rng_state` carry the random generators through a
checkpoint (``HFStageModule`` does it for every stage).
"""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_qwen3.runtime.atomic import OLD, PARTIAL, remove, replace_atomically
from lit_qwen3.runtime.faults import parameters_finite


class PeriodicCheckpoint(ModelCheckpoint):
    """Save ``last.ckpt`` every N steps and every T of wall time, atomically.

    Args:
        dirpath: where checkpoints go; None: ``<trainer.default_root_dir>/checkpoints`` (the
            run directory under ``lit-qwen3``).
        every_n_train_steps: save every this many optimizer steps (None or 0: not by steps).
        train_time_interval: save when this much wall time passed since the last save
            (``"00:30:00"`` or a ``timedelta``; None: not by time).
        save_last: write ``last.ckpt`` (what a rerun resumes from).
        save_top_k: also keep this many step-named checkpoints (``-1``: all; each costs a full
            checkpoint of disk); ``0`` keeps ``last.ckpt`` only.
        save_weights_only: drop optimizer, scheduler and loop state (such a checkpoint cannot
            resume a run exactly).
        filename: name pattern of the step-named checkpoints.
        save_on_train_start: also save when training starts (step 0, after the callbacks'
            start-of-training work such as a first evaluation), so that a run killed before its
            first periodic checkpoint does not redo that work; not on resume.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = 500,
        train_time_interval: timedelta | None = timedelta(minutes=30),
        save_last: bool = True,
        save_top_k: int = 0,
        save_weights_only: bool = False,
        filename: str | None = None,
        save_on_train_start: bool = False,
    ) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        if save_top_k < -1 or save_top_k > 1:
            raise ValueError(
                f"save_top_k must be -1 (all), 0 or 1 for periodic checkpoints, got {save_top_k}"
            )
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            save_last=save_last,
            save_top_k=save_top_k,
            save_weights_only=save_weights_only,
            every_n_train_steps=0,
            every_n_epochs=0,
            enable_version_counter=False,
        )
        self.every_steps = every_n_train_steps or 0
        self.interval = train_time_interval
        self.save_on_train_start = save_on_train_start
        self._last_save_time: float | None = None

    @property
    def state_key(self) -> str:
        interval = None if self.interval is None else self.interval.total_seconds()
        return self._generate_state_key(every_n_train_steps=self.every_steps, interval=interval)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
        super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_save_time = time.monotonic()
        self._last_global_step_saved = trainer.global_step  # the start (or the resumed checkpoint)
        if trainer.ckpt_path is not None:
            resume_as_fresh_start_if_saved_before_first_batch(trainer)
        if self.save_on_train_start and trainer.global_step == 0 and trainer.ckpt_path is None:
            self.save_now(trainer, pl_module)  # checkpoint callbacks run last: after evaluations

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or self._should_skip_saving_checkpoint(trainer):
            return
        # a multiple of N passed since the last save: a manually optimised batch may take
        # several optimizer steps, so the step count can jump over the multiple itself
        every, last = self.every_steps, self._last_global_step_saved
        due = bool(every) and step // every > last // every
        if self.interval is not None and self._last_save_time is not None:
            elapsed = time.monotonic() - self._last_save_time
            # rank 0's clock decides, so that every rank takes part in a sharded save
            due = due or trainer.strategy.broadcast(elapsed >= self.interval.total_seconds())
        if due:
            self.save_now(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step > 0 and not self._should_skip_saving_checkpoint(trainer):
            self.save_now(trainer, pl_module)

    def save_now(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the top-k and ``last`` checkpoints now (all ranks call it)."""
        if not parameters_finite(pl_module):
            rank_zero_warn(
                f"step {trainer.global_step}: the weights are not finite, so no checkpoint is "
                "written (the previous one is kept)"
            )
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        self._last_save_time = time.monotonic()

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Write to ``filepath.partial``, then rename over ``filepath`` (rank 0 renames)."""
        partial = filepath + PARTIAL
        if trainer.is_global_zero:
            remove(partial)
        trainer.strategy.barrier("PeriodicCheckpoint.clean")
        super()._save_checkpoint(trainer, partial)  # all ranks write (sharded) or rank 0 (full)
        if trainer.is_global_zero:
            replace_atomically(partial, filepath)
        trainer.strategy.barrier("PeriodicCheckpoint.rename")
        self._last_checkpoint_saved = filepath
        rank_zero_info(f"step {trainer.global_step}: checkpoint written to {filepath}")


def resume_as_fresh_start_if_saved_before_first_batch(trainer: Trainer) -> bool:
    """Let a run resumed from a checkpoint written before its first batch (``on_train_start``)
    start its batch loop afresh; True if it did.

    Lightning would otherwise take such a checkpoint for one written after a validation (the
    batch index is -1 and ``(-1 + 1) % val_check_batch == 0``): its first iteration trains
    nothing but counts a batch, so every metric after it (and every later checkpoint) is logged
    one step late. Call it once the loops are restored and before the first batch
    (``on_train_start``)."""
    loop = trainer.fit_loop.epoch_loop
    if not loop.restarting or loop.batch_progress.total.ready != 0:
        return False
    loop.restarting = False  # (its validation loop's too): nothing to finish or to skip
    loop.reset_restart_stage()
    loop.val_loop.reset_restart_stage()
    return True


def resume_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint a rerun continues from: ``last.ckpt`` (file or sharded directory), else a
    ``last.ckpt.old`` left by a crash mid-swap, else the newest ``*.ckpt``; None if none."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for name in ("last.ckpt", "last.ckpt" + OLD):
        if (directory / name).exists():
            return directory / name
    others = [p for p in directory.glob("*.ckpt") if p.exists()]
    return max(others, key=lambda p: p.stat().st_mtime) if others else None


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states of this process, in types that
    ``torch.load(weights_only=True)`` accepts (NumPy's key array as a tensor)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
