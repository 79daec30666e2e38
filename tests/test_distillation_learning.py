"""On-policy distillation learns (issue 9): a weaker student (the toy policy's cold start stopped
at 350 steps) distilled toward the toy policy lowers its per-token divergence to the teacher, in
about 20 s after the student's own cold start.

Held-out pass@1 is not asserted: after 30 steps it went 0.025 -> 0.057 for one student and
0.170 -> 0.111 for this one (reverse KL is mode seeking and first trades samples for
sharpness; TOY_NOTES saw pass@16 dip before rising), so the rise needs a longer run."""

from __future__ import annotations

import lightning as L
import pytest
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.generation import SamplingConfig
from lit_qwen3.optim import OptimizerConfig


class History(L.Callback):
    """Per-step training metrics."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def _trainer(steps: int, *callbacks: L.Callback) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=None,
        callbacks=list(callbacks),
    )


@pytest.fixture(scope="module")
def weak_student(tmp_path_factory):
    """The toy policy's cold start stopped at 350 steps: the scratchpad format, few right answers
    (pass@1 at T 0.6 measured 0.03 to 0.17, against the 450-step teacher's 0.6)."""
    from toy_models import train_toy_policy

    return train_toy_policy(tmp_path_factory.mktemp("weak_student") / "model", steps=350)


def test_on_policy_distillation_lowers_the_divergence_to_the_teacher(
    toy_policy, weak_student, tmp_path
):
    """Measured (30 steps of 32 rollouts, reverse KL, lr 1e-3, 2 shared cores), module seed 0 / 1:
    divergence per token, mean of the first / last 5 steps, 0.648 -> 0.383 / 0.722 -> 0.306;
    pass@1 at T 0.6 (128 held-out sums x 4 samples) 0.025 -> 0.057 / 0.023 -> 0.055."""
    from lit_qwen3.datamodules.queries import QueryDataModule
    from lit_qwen3.stages import OnPolicyDistillation

    data = QueryDataModule(
        str(weak_student),
        queries_per_step=32,
        toy_size=2000,
        val_size=128,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        toy_exclude_sft=0,
    )
    data.setup("fit")
    module = OnPolicyDistillation(
        str(weak_student),
        teacher=str(toy_policy),
        output_dir=str(tmp_path / "student"),
        sampling=SamplingConfig(max_new_tokens=48, temperature=1.0),
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=0, min_lr_ratio=1.0),
        samples_every_n_steps=0,
    )
    module.configure_model()
    history = History()
    L.seed_everything(0, verbose=False)
    _trainer(30, history).fit(module, data)
    divergence = [row["train/divergence"] for row in history.rows]
    first, last = sum(divergence[:5]) / 5, sum(divergence[-5:]) / 5
    print(f"divergence {first:.3f} -> {last:.3f}")
    assert last < 0.75 * first
