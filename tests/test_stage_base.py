"""What HFStageModule gives every stage: a loaded model in train mode, the export for inference,
random generators through checkpoints, and per-step metrics that measure the step itself."""

from __future__ import annotations

import csv
import random
from types import SimpleNamespace

import lightning as L
import numpy as np
import torch

import lit_qwen3.stages.sft as sft
from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.models import save_toy_checkpoint
from lit_qwen3.stages import ColdStartSFT
from tests.single_thread import one_thread  # noqa: F401


def test_a_loaded_model_is_built_in_train_mode(tmp_path):
    directory = save_toy_checkpoint(tmp_path / "base")
    module = ColdStartSFT(model=str(directory), gradient_checkpointing=True)
    module.configure_model()
    assert all(m.training for m in module.model.modules())  # from_pretrained gives eval mode
    assert module.model.config.use_cache is False


def test_random_generators_come_back_with_the_checkpoint():
    module = ColdStartSFT(model="toy-student")
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    drawn = (random.random(), np.random.rand(), torch.rand(2))
    module.on_load_checkpoint(checkpoint)
    random.random(), np.random.rand(), torch.rand(5)  # setup and restore draw in between
    module.on_train_start()
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])


def test_compute_counters_count_real_tokens_and_come_back_with_the_checkpoint():
    """The report's FLOPs read these: padding is not compute that counts, and a resumed stage
    keeps counting from where it stopped."""
    module = ColdStartSFT(model="toy-student")
    module.configure_model()
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": ids}
    module._count_tokens(batch)
    module._count_tokens(batch)
    assert module.token_counts == {"sampled": 0, "trained": 12, "frozen": 0}
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    resumed = ColdStartSFT(model="toy-student")
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.token_counts["trained"] == 12


def test_step_metrics_measure_the_step_itself(tmp_path, monkeypatch):
    clock = iter(range(1000))  # each reading one second after the last
    monkeypatch.setattr(sft, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    module = ColdStartSFT(model="toy-student", output_dir=str(tmp_path / "m"))
    data = ConversationDataModule(
        "toy", toy_size=32, val_size=0, max_tokens_per_batch=256, max_length=128, packing=False
    )
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="log"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    with open(tmp_path / "log" / "version_0" / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["train/tokens_per_s"]]
    data.setup("fit")
    sizes = sorted(float(b["input_ids"].numel()) for b in data.train_dataloader())
    # the clock reads when a batch starts, after its backward (the training time of each
    # micro-batch) and after its optimizer step: two seconds of training per step
    assert len(rows) == 3 and all(2 * float(r["train/tokens_per_s"]) in sizes for r in rows)
    assert module.train_seconds == 6.0
    lrs = [float(r["train/lr"]) for r in rows]
    assert lrs == sorted(lrs) and lrs[0] > 0  # warmup
    assert all(float(r["train/grad_norm"]) > 0 for r in rows)
