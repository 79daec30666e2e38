"""Numerical faults: NonFiniteGuard decides per step; a stage skips NaN steps, counts them, stops
past the limit and leaves the last good checkpoint intact."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.runtime.checkpointing import PeriodicCheckpoint
from lit_qwen3.runtime.faults import (
    NonFiniteError,
    NonFiniteGuard,
    NonFiniteLimits,
    parameters_finite,
)
from lit_qwen3.stages import ColdStartSFT
from tests.single_thread import one_thread  # noqa: F401


def _model_with_grads(value: float) -> torch.nn.Linear:
    model = torch.nn.Linear(2, 1)
    for p in model.parameters():
        p.grad = torch.full_like(p, value)
    return model


def test_finite_step_passes_and_resets_the_streak():
    guard = NonFiniteGuard(max_consecutive=3, max_total=None)
    guard.consecutive = 2
    model = _model_with_grads(0.5)
    assert guard.check(torch.tensor(1.0), model)
    assert guard.consecutive == 0 and guard.skipped == 0
    # grads 0.5 on 3 elements (2 weights + 1 bias): norm sqrt(3 * 0.25)
    assert float(guard.last_grad_norm) == pytest.approx(math.sqrt(0.75))
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("loss", "grad"), [(float("nan"), 0.5), (1.0, float("inf")), (torch.tensor(float("inf")), 0.5)]
)
def test_non_finite_loss_or_gradient_drops_the_gradients(loss, grad):
    guard = NonFiniteGuard(max_consecutive=3)
    model = _model_with_grads(grad)
    loss = loss if isinstance(loss, torch.Tensor) else torch.tensor(loss)
    assert not guard.check(loss, model)
    assert all(p.grad is None for p in model.parameters())  # an optimizer step changes nothing
    assert (guard.skipped, guard.consecutive) == (1, 1)


def test_limits_stop_the_run_with_a_clear_message():
    guard = NonFiniteGuard(max_consecutive=2, max_total=None)
    assert not guard.check(float("nan"), _model_with_grads(0.0))
    with pytest.raises(NonFiniteError, match=r"at step 7: 2 steps in a row.*max_consecutive=2"):
        guard.check(float("nan"), _model_with_grads(0.0), step=7)

    guard = NonFiniteGuard(max_consecutive=5, max_total=3)
    for _ in range(2):
        assert not guard.check(float("nan"), _model_with_grads(0.0))
        assert guard.check(1.0, _model_with_grads(0.0))
    with pytest.raises(NonFiniteError, match=r"3 steps had a non-finite.*max_total=3"):
        guard.check(float("nan"), _model_with_grads(0.0))


def test_state_survives_a_checkpoint_and_limits_are_validated():
    guard = NonFiniteGuard()
    guard.check(float("nan"), _model_with_grads(0.0))
    restored = NonFiniteGuard()
    restored.load_state_dict(guard.state_dict())
    assert (restored.skipped, restored.consecutive) == (1, 1)
    with pytest.raises(ValueError, match="max_consecutive must be >= 1"):
        NonFiniteLimits(max_consecutive=0)
    with pytest.raises(ValueError, match="max_total must be >= 1 or None"):
        NonFiniteGuard(max_total=0)


def test_parameters_finite():
    model = torch.nn.Linear(2, 2)
    assert parameters_finite(model)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    assert not parameters_finite(model)


class NaNAtSteps(ColdStartSFT):
    """Cold start whose loss is NaN at the given optimizer steps (fault injection)."""

    def __init__(self, nan_steps: tuple[int, ...] = (), **kwargs):
        super().__init__(**kwargs)
        self.nan_steps = set(nan_steps)
        self.weights_at: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        self.weights_at[self.global_step] = self.model.lm_head.weight.detach().clone()
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step in self.nan_steps else loss


def _data() -> ConversationDataModule:
    return ConversationDataModule(
        "toy", toy_size=48, val_size=0, max_tokens_per_batch=512, max_length=128, packing=False
    )


def _trainer(tmp_path, max_steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="log"),
        log_every_n_steps=1,
        callbacks=[PeriodicCheckpoint(every_n_train_steps=1, train_time_interval=None)],
        default_root_dir=tmp_path,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_nan_steps_are_skipped_and_counted(tmp_path):
    module = NaNAtSteps(nan_steps=(2, 4), model="toy-student", output_dir=str(tmp_path / "m"))
    trainer = _trainer(tmp_path, max_steps=6)
    trainer.fit(module, _data())
    weights = module.weights_at
    assert torch.equal(weights[2], weights[3])  # the NaN step changed nothing
    assert not torch.equal(weights[1], weights[2])  # the good ones did
    assert module.nonfinite_guard.skipped == 2
    assert parameters_finite(module.model)
    rows = (tmp_path / "log" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    skipped = [r.split(",")[header.index("train/skipped_steps")] for r in rows[1:]]
    assert [float(v) for v in skipped if v] == [0, 0, 1, 1, 2, 2]


def test_a_run_that_keeps_failing_stops_with_the_last_good_checkpoint(tmp_path):
    limits = NonFiniteLimits(max_consecutive=2, max_total=None)
    module = NaNAtSteps(nan_steps=(3, 4, 5), model="toy-student", nonfinite=limits)
    trainer = _trainer(tmp_path, max_steps=8)
    with pytest.raises(NonFiniteError, match="at step 4: 2 steps in a row"):
        trainer.fit(module, _data())
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    # step 3 was skipped, so its weights equal step 3's start; no checkpoint after the stop
    assert state["global_step"] == 4
    saved = state["state_dict"]["model.lm_head.weight"]
    assert torch.isfinite(saved).all() and torch.equal(saved, module.weights_at[3])
    assert state["lit_qwen3"]["nonfinite_guard"] == {"skipped": 1, "consecutive": 1}
