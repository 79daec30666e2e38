"""On-policy distillation learns (issue 9): a weaker student (the toy policy's cold-start run
exported at step 350) distilled toward the toy policy in thinking mode lowers its per-token
divergence to the teacher and raises its held-out pass@1, in about 30 s of training.

Reverse KL is mode seeking: pass@1 may dip first (0.166 -> 0.146 at step 30 for seed 0 on one
machine; TOY_NOTES saw pass@16 dip too), so the run is long enough to get past it."""

from __future__ import annotations

import lightning as L
import pytest
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import (
    SEED,
    History,
    held_out_scores,
    quiet_trainer,
    two_digit_queries,
)

from lit_qwen3.ops.intervals import paired_difference
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig

pytestmark = [pytest.mark.slow, pytest.mark.learning]


def test_on_policy_distillation_lowers_the_divergence_and_raises_pass1(
    toy_policy, weak_policy, tmp_path
):
    """150 steps of 32 thinking rollouts, reverse KL, lr 1e-3, about 30 s. The claims: the
    divergence per token falls, and held-out pass@1 (256 sums x 4 samples) rises with a paired
    95 % interval above zero. Measured on one machine, with the weak student trained in its own
    run, seeds 0 / 1, every 30 steps: 0.166 / 0.146 / 0.214 / 0.363 / 0.331 / 0.365 and
    0.148 / 0.196 / 0.274 / 0.335 / 0.500 / 0.423 (the teacher: about 0.6); with the snapshot of
    the policy's run: 0.119 -> 0.546 (seed 0), 0.110 -> 0.329 (seed 1)."""
    from lit_qwen3.stages import OnPolicyDistillation

    data = two_digit_queries(weak_policy, per_step=32, size=2000, val_size=256)
    module = OnPolicyDistillation(
        str(weak_policy),
        teacher=str(toy_policy),
        output_dir=str(tmp_path / "student"),
        sampling=SamplingConfig(max_new_tokens=48, temperature=1.0),
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=0, min_lr_ratio=1.0),
        think_fraction=1.0,
        samples_every_n_steps=0,
    )
    module.configure_model()
    before = held_out_scores(module, data.val_queries)
    history = History()
    L.seed_everything(SEED, verbose=False)
    quiet_trainer(150, limit_val_batches=0, callbacks=[history]).fit(module, data)
    after = held_out_scores(module, data.val_queries)
    gain = paired_difference(after, before)
    divergence = [row["train/divergence"] for row in history.rows]
    first, last = sum(divergence[:10]) / 10, sum(divergence[-10:]) / 10
    print(f"divergence {first:.3f} -> {last:.3f}; pass@1 gain {gain} (seed {SEED})")
    assert last < 0.6 * first
    assert gain.low > 0  # held-out pass@1 rises beyond the evaluation's noise (95 %)
