"""Checkpoints a killed run resumes from: periodic triggers, atomic writes, the resume lookup, and
a DataLoader whose position in the epoch survives."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from lit_qwen3.datamodules.conversations import EpochShuffleSampler
from lit_qwen3.datamodules.resumable import ResumableDataLoader
from lit_qwen3.runtime.atomic import replace_atomically
from lit_qwen3.runtime.checkpointing import PeriodicCheckpoint, resume_checkpoint


def test_replace_atomically_files_and_directories(tmp_path):
    (tmp_path / "a.partial").write_text("new")
    (tmp_path / "a").write_text("old")
    replace_atomically(tmp_path / "a.partial", tmp_path / "a")
    assert (tmp_path / "a").read_text() == "new" and not (tmp_path / "a.partial").exists()
    (tmp_path / "d.partial").mkdir()
    (tmp_path / "d.partial" / "x").write_text("new")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "stale").write_text("old")
    replace_atomically(tmp_path / "d.partial", tmp_path / "d")
    assert sorted(os.listdir(tmp_path / "d")) == ["x"]
    assert not (tmp_path / "d.old").exists()


def test_resume_checkpoint_prefers_last_then_a_swap_leftover_then_the_newest(tmp_path):
    assert resume_checkpoint(tmp_path / "none") is None
    assert resume_checkpoint(tmp_path) is None
    (tmp_path / "last.ckpt.partial").write_text("incomplete")  # never resumed from
    assert resume_checkpoint(tmp_path) is None
    older, newer = tmp_path / "epoch=0-step=2.ckpt", tmp_path / "epoch=0-step=4.ckpt"
    older.write_text("2")
    newer.write_text("4")
    os.utime(older, (1, 1))
    assert resume_checkpoint(tmp_path) == newer
    (tmp_path / "last.ckpt.old").mkdir()  # a sharded checkpoint caught between two renames
    assert resume_checkpoint(tmp_path) == tmp_path / "last.ckpt.old"
    (tmp_path / "last.ckpt").write_text("last")
    assert resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, callback, max_steps=5, module=None):
    module = module or Tiny()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(torch.randn(64, 2), batch_size=4))
    return trainer


def _spy(monkeypatch) -> list[int]:
    saved = []
    original = PeriodicCheckpoint._save_checkpoint

    def spy(self, trainer, filepath):
        saved.append(trainer.global_step)
        original(self, trainer, filepath)

    monkeypatch.setattr(PeriodicCheckpoint, "_save_checkpoint", spy)
    return saved


def test_save_on_train_start(tmp_path, monkeypatch):
    saved = _spy(monkeypatch)
    callback = PeriodicCheckpoint(
        every_n_train_steps=None, train_time_interval=None, save_on_train_start=True
    )
    _fit(tmp_path, callback, max_steps=2)
    assert saved == [0, 2]  # the start, then the end


def test_saves_every_n_steps_and_at_the_end(tmp_path, monkeypatch):
    saved = _spy(monkeypatch)
    _fit(tmp_path, PeriodicCheckpoint(every_n_train_steps=2, train_time_interval=None))
    assert saved == [2, 4, 5]  # every 2 steps, then the last step at train end
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["last.ckpt"]  # save_top_k=0
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


class SeveralStepsPerBatch(Tiny):
    """Manual optimisation with three optimizer steps per batch, as RL stages do."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        for _ in range(3):
            optimizer.zero_grad()
            self.manual_backward(self.layer(batch).pow(2).mean())
            optimizer.step()


def test_manual_optimisation_saves_when_a_multiple_is_passed(tmp_path, monkeypatch):
    saved = _spy(monkeypatch)
    callback = PeriodicCheckpoint(every_n_train_steps=4, train_time_interval=None)
    _fit(tmp_path, callback, max_steps=12, module=SeveralStepsPerBatch())
    assert saved == [6, 9, 12]  # steps 3, 6, 9, 12 after each batch; multiples of 4 at 4, 8, 12


def test_saves_by_wall_time(tmp_path, monkeypatch):
    saved = _spy(monkeypatch)
    clock = iter(range(0, 1000, 40))  # each look at the clock: 40 s later
    monkeypatch.setattr("lit_qwen3.runtime.checkpointing.time.monotonic", lambda: next(clock))
    from datetime import timedelta

    callback = PeriodicCheckpoint(
        every_n_train_steps=None, train_time_interval=timedelta(minutes=1)
    )
    _fit(tmp_path, callback, max_steps=4)
    # start 0; step 1 at 40 s: no; step 2 at 80 s: save (done at 120); step 3 at 160 s: 40 s
    # since, no; step 4 at 200 s: save. Train end: step 4 already saved.
    assert saved == [2, 4]


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    _fit(tmp_path, PeriodicCheckpoint(every_n_train_steps=2, train_time_interval=None), 2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def dies_while_writing(self, filepath, weights_only=False, storage_options=None):
        with open(filepath, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is gone here

    monkeypatch.setattr(L.Trainer, "save_checkpoint", dies_while_writing)
    callback = PeriodicCheckpoint(every_n_train_steps=2, train_time_interval=None)
    with pytest.raises(SystemExit):  # Lightning turns the interrupt into exit(1)
        _fit(tmp_path, callback, max_steps=4)
    assert last.read_bytes() == before
    assert resume_checkpoint(tmp_path / "checkpoints") == last


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    saved = _spy(monkeypatch)
    module = Tiny()
    with torch.no_grad():
        module.layer.bias.fill_(float("inf"))
    with pytest.warns(UserWarning, match="weights are not finite"):
        _fit(
            tmp_path, PeriodicCheckpoint(every_n_train_steps=1, train_time_interval=None), 2, module
        )
    assert saved == []


class LossSteps(Logger):
    """The steps at which ``loss`` was logged, and its values."""

    name, version = "steps", 0

    def __init__(self):
        super().__init__()
        self.loss: dict[int, float] = {}

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        if "loss" in metrics:
            self.loss[step] = metrics["loss"]


class LogsLoss(Tiny):
    def __init__(self, die_at_step: int | None = None):
        super().__init__()
        self.die_at_step = die_at_step

    def training_step(self, batch, batch_idx):
        if self.global_step == self.die_at_step:
            raise KeyboardInterrupt  # killed before this step
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        pass


def _fit_validating(tmp_path, module, max_steps, ckpt_path=None) -> LossSteps:
    L.seed_everything(0)
    logger = LossSteps()
    callback = PeriodicCheckpoint(
        every_n_train_steps=None, train_time_interval=None, save_on_train_start=True
    )
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        val_check_interval=2,
        limit_val_batches=1,
        callbacks=[callback],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(data, batch_size=4)
    trainer.fit(module, loader, DataLoader(data[:8], batch_size=4), ckpt_path=ckpt_path)
    return logger


def test_a_run_resumed_from_its_start_checkpoint_logs_at_the_same_steps(tmp_path):
    torch.manual_seed(0)
    reference = _fit_validating(tmp_path / "reference", LogsLoss(), max_steps=4)
    assert sorted(reference.loss) == [0, 1, 2, 3]
    torch.manual_seed(0)
    with pytest.raises(SystemExit):
        _fit_validating(tmp_path / "killed", LogsLoss(die_at_step=0), max_steps=4)
    start = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(start, weights_only=True)["global_step"] == 0
    # Lightning alone labels this run's losses 1..4: its first iteration after the restart
    # trains nothing but counts a batch
    resumed = _fit_validating(tmp_path / "killed", LogsLoss(), max_steps=4, ckpt_path=start)
    assert resumed.loss == reference.loss


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="save_top_k must be -1"):
        PeriodicCheckpoint(save_top_k=3)
    with pytest.raises(ValueError, match="every_n_train_steps must be >= 0"):
        PeriodicCheckpoint(every_n_train_steps=-1)


def _loader(n=10, seed=3) -> ResumableDataLoader:
    sampler = EpochShuffleSampler(n, seed=seed)
    return ResumableDataLoader(list(range(n)), batch_size=None, sampler=sampler)


def test_resumable_loader_continues_mid_epoch():
    full = _loader()
    full.sampler.set_epoch(1)
    order = list(full)
    killed = _loader()
    killed.sampler.set_epoch(1)
    iterator = iter(killed)
    seen = [next(iterator) for _ in range(4)]
    state = killed.state_dict()
    assert state == {"epoch": 1, "batches": 4}
    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    assert seen + list(resumed) == order
    assert list(resumed) == order  # only the first iteration after loading skips


def test_resumable_loader_starts_a_new_epoch_whole():
    loader = _loader()
    loader.sampler.set_epoch(0)
    assert len(list(loader)) == 10
    state = loader.state_dict()  # saved at the end of epoch 0
    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # the resumed run starts epoch 1
    epoch1 = _loader()
    epoch1.sampler.set_epoch(1)
    assert list(resumed) == list(epoch1)
