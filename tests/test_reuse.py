"""The stages and callbacks in plain Lightning scripts with the user's own data: ColdStartSFT
with PassAtK and ThinkingBudget; ReasoningRL with ThinkingBudget, EntropyMonitor and PassAtK."""

from __future__ import annotations

import csv

import lightning as L
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from torch.utils.data import DataLoader

from lit_qwen3.callbacks import EntropyMonitor, PassAtK, ThinkingBudget
from lit_qwen3.datamodules.arithmetic import ArithmeticTask
from lit_qwen3.queries import Query
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT, ReasoningRL


class MyChatData(L.LightningDataModule):
    """A user's datamodule: right-padded rows, loss on everything after the prompt."""

    def __init__(self, tokenizer, rows):
        super().__init__()
        self.tokenizer, self.rows = tokenizer, rows

    def _encode(self, row):
        full = self.tokenizer.apply_chat_template(row["messages"], tokenize=False)
        prompt = self.tokenizer.apply_chat_template(
            row["messages"][:-1], tokenize=False, add_generation_prompt=True
        )
        ids = self.tokenizer(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return ids, [-100] * n_prompt + ids[n_prompt:]

    def _collate(self, rows):
        encoded = [self._encode(r) for r in rows]
        width = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for ids, labels in encoded:
            fill = width - len(ids)
            batch["input_ids"].append(ids + [pad] * fill)
            batch["labels"].append(labels + [-100] * fill)
            batch["attention_mask"].append([1] * len(ids) + [0] * fill)
        return {k: torch.tensor(v) for k, v in batch.items()}

    def train_dataloader(self):
        return DataLoader(self.rows, batch_size=16, shuffle=True, collate_fn=self._collate)


def test_stage_and_callbacks_work_in_a_plain_trainer(tmp_path):
    task = ArithmeticTask(seed=1)
    queries = [
        {"messages": task.prompt(p), "answer": str(p.answer)} for p in task.problems(4, "val")
    ]
    module = ColdStartSFT(model="toy-student", output_dir=str(tmp_path / "model"))
    data = MyChatData(module.tokenizer, task.conversations(64))
    pass_at_k = PassAtK(
        ks=[1, 2],
        n_samples=2,
        every_n_steps=2,
        queries=queries,
        verifier="arithmetic",
        max_new_tokens=24,
    )
    budget = ThinkingBudget(
        budget=6,
        stop_thinking="\n</think>\n\n",
        sweep=[0, 4],
        queries=queries,
        verifier="arithmetic",
        max_new_tokens=24,
    )
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        callbacks=[pass_at_k, budget],
        log_every_n_steps=1,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="user"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)

    assert module.thinking_budget == 6  # set by ThinkingBudget, used by PassAtK's sampling
    assert (tmp_path / "model" / "config.json").exists()
    with open(tmp_path / "user" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {
        "train/loss",
        "eval/think/pass_at_2",
        "eval/no_think/pass_at_1",
        "budget_sweep/think_accuracy",
        "budget_sweep/no_think_accuracy",
    } <= logged
    sweep_steps = sorted(int(r["step"]) for r in rows if r.get("budget_sweep/think_accuracy"))
    assert sweep_steps == [0, 4]  # the sweep's x axis is the budget
    steps_with_eval = sorted({int(r["step"]) for r in rows if r.get("eval/think/pass_at_1")})
    assert steps_with_eval == [0, 2, 4]
    forced = [
        float(r["eval/think/thinking_tokens"]) for r in rows if r.get("eval/think/thinking_tokens")
    ]
    assert max(forced) <= 6  # the budget caps thinking in PassAtK's evaluation


class MyQueries(L.LightningDataModule):
    """A user's RL datamodule: batches are lists of ``Query`` (what ``training_step`` takes),
    built from the user's own problems; no ``val_queries``, no refills."""

    def __init__(self, problems, per_step):
        super().__init__()
        self.problems, self.per_step = problems, per_step

    def train_dataloader(self):
        queries = [
            Query(
                messages=[{"role": "user", "content": p.question}],
                metadata={"reference": str(p.answer)},
                rewards=["arithmetic"],
                mode="think",
            )
            for p in self.problems
        ]
        return DataLoader(queries, batch_size=self.per_step, shuffle=True, collate_fn=list)


def test_reasoning_rl_and_its_callbacks_work_in_a_plain_trainer(toy_policy, tmp_path):
    task = ArithmeticTask(seed=3, min_digits=2, max_digits=2, mul_fraction=0.0, check=False)
    queries = [
        {"messages": task.prompt(p), "answer": str(p.answer)} for p in task.problems(4, "val")
    ]
    module = ReasoningRL(
        str(toy_policy),
        output_dir=str(tmp_path / "model"),
        rewards=[{"name": "arithmetic"}],
        group_size=4,
        sampling=SamplingConfig(max_new_tokens=40, temperature=1.0),
        optimizer=OptimizerConfig(lr=1e-4, warmup_steps=0, weight_decay=0.0),
        samples_every_n_steps=0,
    )
    module.configure_model()
    start = {k: v.detach().clone() for k, v in module.model.named_parameters()}
    stop = "\n</think>\n\n"
    callbacks = [
        ThinkingBudget(
            budget=32,
            stop_thinking=stop,
            sweep=[0, 32],
            queries=queries,
            verifier="arithmetic",
            max_new_tokens=40,
        ),
        EntropyMonitor(),
        PassAtK(
            ks=[1, 2],
            n_samples=2,
            modes=["think"],
            every_n_steps=0,
            queries=queries,
            verifier="arithmetic",
            max_new_tokens=40,
            think_follow=False,
        ),
    ]
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        callbacks=callbacks,
        log_every_n_steps=1,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="user"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=MyQueries(task.problems(64, "train"), per_step=4))

    assert module.thinking_budget == 32 and module.stop_thinking == stop  # set by ThinkingBudget
    assert (tmp_path / "model" / "config.json").exists()
    with open(tmp_path / "user" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {
        "train/entropy/thinking",  # EntropyMonitor: the thinking span and the answer apart
        "train/entropy/answer",
        "train/entropy",  # the stage's own: EntropyMonitor's "all" would repeat it
        "eval/think/pass_at_1",  # PassAtK before and after
        "eval/think/pass_at_2",
        "budget_sweep/think_accuracy",  # ThinkingBudget's sweep, the budget as its step
    } <= logged
    entropy_steps = sorted(int(r["step"]) for r in rows if r.get("train/entropy/thinking"))
    assert entropy_steps == [1, 2, 3]  # one record per update
    assert sorted(int(r["step"]) for r in rows if r.get("eval/think/pass_at_1")) == [0, 3]
    assert sorted(int(r["step"]) for r in rows if r.get("budget_sweep/think_accuracy")) == [0, 32]
    forced = [
        float(r["eval/think/thinking_tokens"]) for r in rows if r.get("eval/think/thinking_tokens")
    ]
    assert max(forced) <= 32  # the budget caps thinking in PassAtK's evaluation too
    # Without weight decay, only policy gradient moves the weights: groups had signal.
    signal = [
        float(r["train/kept_signal_groups"]) for r in rows if r.get("train/kept_signal_groups")
    ]
    moved = max(
        (p.detach() - start[k]).abs().max().item() for k, p in module.model.named_parameters()
    )
    assert moved > 0 and max(signal) > 0
