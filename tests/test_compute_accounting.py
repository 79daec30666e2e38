"""The compute a stage reports is the compute it did: dynamic sampling's dropped groups and
refill rounds were sampled and scored, so their tokens count as sampled (the report's FLOPs);
training seconds count sampling and updates, not start-up or evaluation, and survive a resume."""

from __future__ import annotations

import time

import lightning as L
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import quiet_trainer, toy_sft_data, two_digit_queries

from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT, ReasoningRL


def test_dropped_groups_and_refills_count_as_sampled(toy_policy):
    data = two_digit_queries(toy_policy, per_step=4, size=64)
    module = ReasoningRL(
        str(toy_policy),
        rewards=[{"name": "arithmetic"}],
        group_size=2,  # a strong policy answers both samples alike: many groups without signal
        dynamic_sampling=True,
        max_refill_rounds=2,
        sampling=SamplingConfig(max_new_tokens=48, temperature=1.0),
        samples_every_n_steps=0,
    )
    module.configure_model()
    module.refill = lambda n: data.train_queries[8 : 8 + n]  # what the datamodule would give
    generated = []
    sample_rows = module.sample_rows

    def counting_sample_rows(rows, generator):
        sampled = sample_rows(rows, generator)
        generated.append(int(sampled.rollouts.completion_mask.sum()))
        return sampled

    module.sample_rows = counting_sample_rows
    torch.manual_seed(0)
    batch, metrics = module.make_batch(data.train_queries[:4])
    module.count_tokens(batch)
    kept = int(batch.rollouts.completion_mask.sum())
    print(f"sampled per round {generated}; kept rows {kept}")
    assert metrics["train/refill_rounds"] >= 1 and len(generated) >= 2  # a refill happened
    assert module.token_counts["sampled"] == sum(generated) > kept


class SlowEvaluation(L.Callback):
    """Stands for an evaluation callback: its time is not training time."""

    def on_train_batch_end(self, *args) -> None:
        time.sleep(0.3)


def test_training_seconds_leave_out_evaluation_and_start_up():
    module = ColdStartSFT(model="toy-student", optimizer=OptimizerConfig(lr=1e-3))
    data = toy_sft_data(toy_size=64, val_size=8)
    start = time.perf_counter()
    quiet_trainer(3, limit_val_batches=0, callbacks=[SlowEvaluation()]).fit(module, data)
    wall = time.perf_counter() - start
    train_s = module.compute_stats()["time/train_s"]
    print(f"training {train_s:.2f} s of a {wall:.2f} s fit")
    assert 0 < train_s < wall - 3 * 0.3
    assert module.token_counts["trained"] > 0
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    resumed = ColdStartSFT(model="toy-student")
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.train_seconds == module.train_seconds  # a resumed stage keeps counting
