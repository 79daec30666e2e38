"""Runs behind tests/test_distributed.py: a real SFT stage and a real GRPO stage, on one process
or on several (DDP or FSDP2, launched like torchrun), every rank on its share of the same
global batches, so that the runs must agree.

    python tests/distributed_run.py OUT POLICY JOB [JOB...]                       # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        tests/distributed_run.py OUT POLICY JOB [JOB...]                          # two ranks

A JOB is ``STAGE:STRATEGY[:resume]``: STAGE ``sft`` or ``grpo``, STRATEGY ``single``, ``ddp`` or
``fsdp2``; ``resume`` restarts from the checkpoint the job of the same name wrote at half time.
Rank 0 writes ``OUT/JOB.json``: per-step metrics and the exported weights' checksums.

Why they agree: each rank holds a contiguous slice of every global batch, in rank order. SFT
weights each rank's token-mean loss by its share of the global tokens; GRPO samples every
rollout from a seed of (run seed, step, global query index, copy), aggregates
``seq_mean_token_mean`` over equal row counts per rank (so DDP's gradient mean is the global
mean), one mini-batch per step, no dynamic sampling.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from lit_qwen3.datamodules.arithmetic import ArithmeticTask
from lit_qwen3.datamodules.conversations import validate_conversation
from lit_qwen3.datamodules.queries import QueryDataModule
from lit_qwen3.ops.losses import GRPOLossConfig
from lit_qwen3.ops.packing import collate_padded, tokenize_conversation
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.runtime.strategies import FSDP2Strategy
from lit_qwen3.stages import ColdStartSFT, ReasoningRL
from lit_qwen3.tokenizer import build_toy_tokenizer

STEPS = 4
SFT_BATCH = 8  # conversations per global batch
RL_QUERIES = 4  # queries per global batch (x GROUP rollouts)
GROUP = 4


class Slices(L.LightningDataModule):
    """Global batches, each rank taking its contiguous share (no distributed sampler)."""

    def __init__(self, batches: list[list], collate) -> None:
        super().__init__()
        self.batches, self.collate = batches, collate

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        shares = []
        for batch in self.batches:
            size = len(batch) // world
            shares.append(batch[rank * size : (rank + 1) * size])
        return DataLoader(shares, batch_size=None, collate_fn=self.collate)


def sft_data() -> Slices:
    tokenizer = build_toy_tokenizer()
    rows = ArithmeticTask(seed=0, min_digits=2, max_digits=3).conversations(STEPS * SFT_BATCH)
    examples = []
    for i, row in enumerate(rows):
        row = validate_conversation(row, f"row {i}")
        examples.append(
            tokenize_conversation(
                tokenizer, row["messages"], enable_thinking=row["enable_thinking"]
            )
        )
    batches = [examples[i : i + SFT_BATCH] for i in range(0, len(examples), SFT_BATCH)]
    # two batches an epoch, so that a resume at the epoch boundary replays nothing
    return Slices(batches[:2], lambda b: collate_padded(b, pad_token_id=tokenizer.pad_token_id))


def grpo_data(policy: str) -> Slices:
    queries = QueryDataModule(
        policy, toy_size=64, val_size=0, toy_min_digits=2, toy_max_digits=2, toy_mul_fraction=0.0
    )
    queries.setup("fit")
    pool = queries.train_queries
    batches = [pool[i : i + RL_QUERIES] for i in range(0, 2 * RL_QUERIES, RL_QUERIES)]
    return Slices(batches, list)


def module(stage: str, policy: str) -> L.LightningModule:
    if stage == "sft":
        return ColdStartSFT(model="toy-student", optimizer=OptimizerConfig(lr=3e-3, warmup_steps=0))
    return ReasoningRL(
        model=policy,
        rewards=[{"name": "arithmetic"}],
        group_size=GROUP,
        sampling=SamplingConfig(max_new_tokens=32, temperature=1.0),
        loss=GRPOLossConfig(loss_agg_mode="seq_mean_token_mean"),
        optimizer=OptimizerConfig(lr=3e-4, warmup_steps=0, weight_decay=0.0),
        num_minibatches=1,
        dynamic_sampling=False,
        overlong="none",
        samples_every_n_steps=0,
    )


class Record(L.Callback):
    """Per-step metrics as every rank sees them (means over ranks where logged so)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys, self.steps = keys, []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        metrics = trainer.callback_metrics
        self.steps.append(
            {
                "step": trainer.global_step,
                **{k: float(metrics[k]) for k in self.keys if k in metrics},
            }
        )


def run(job: str, out: Path, policy: str) -> None:
    stage, strategy_name, *flags = job.split(":")
    name = f"{stage}_{strategy_name}"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    strategy = {
        "single": "auto",
        "ddp": "ddp",
        "fsdp2": FSDP2Strategy(),
    }[strategy_name]
    keys = (
        ("train/loss",)
        if stage == "sft"
        else ("train/reward", "train/grad_norm", "train/entropy", "train/ratio_mean")
    )
    record = Record(keys)
    checkpoints = out / f"{name}_checkpoints"
    resume = "resume" in flags
    callbacks = [record]
    if not resume:
        callbacks.append(
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=checkpoints, every_n_train_steps=STEPS // 2, save_top_k=-1
            )
        )
    L.seed_everything(0, verbose=False)
    lit = module(stage, policy)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world,
        strategy=strategy,
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=not resume,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # each rank takes its slice itself
        callbacks=callbacks,
        gradient_clip_val=1.0 if stage == "sft" else None,
        default_root_dir=str(out / name),
    )
    data = sft_data() if stage == "sft" else grpo_data(policy)
    ckpt = None
    if resume:
        ckpt = str(next(checkpoints.glob(f"*step={STEPS // 2}*")))
    trainer.fit(lit, datamodule=data, ckpt_path=ckpt)
    export = out / f"{name}{'_resumed' if resume else ''}_model"
    lit.export(export)
    if trainer.is_global_zero:
        from transformers import AutoModelForCausalLM

        weights = AutoModelForCausalLM.from_pretrained(export).state_dict()
        result = {
            "job": job,
            "world": trainer.world_size,
            "steps": record.steps,
            "weights": {k: float(v.double().abs().sum()) for k, v in weights.items()},
        }
        (out / f"{job.replace(':', '_')}.json").write_text(json.dumps(result, indent=1))


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out, policy, *jobs = argv
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        run(job, out_dir, policy)


if __name__ == "__main__":
    main(sys.argv[1:])
