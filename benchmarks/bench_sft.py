"""SFT training throughput, ours against TRL's ``SFTTrainer``, side by side in one process run.

    .venv/bin/python benchmarks/bench_sft.py                  # 1,000 chats, batch 16, 1 thread
    .venv/bin/python benchmarks/bench_sft.py --epochs 7 --threads 2

Both train the same tiny random ``Qwen3ForCausalLM`` (the ``toy-teacher`` preset: hidden 128,
2 layers) with the toy tokenizer, fp32 on CPU, on the same 1,000 short chat conversations of the
toy task (user question, assistant reply with its reasoning), batches of 16, AdamW, one
optimizer step per batch, logging and checkpoints off. Batching is the same policy on both
sides: a fresh random order each epoch, rows padded to the longest in their batch.

A repetition is one epoch (63 steps); its throughput is the non-pad tokens of the 1,000
conversations (each side counts its own tokenization) over the epoch's wall time. After
``--warmup`` epochs (ours compiles its training forward there), the median of the remaining
epochs is reported; the two sides run alternately in rounds so that load from other processes
hits both alike. The last stdout line is one JSON object with both throughputs and
``"speedup"`` (ours over TRL's tokens/s).

What ours does differently (see ``lit_qwen3.ops.training_forward``): right-padded rows run without
an attention mask (causal attention cannot see trailing pads), the forward of a plain Qwen3
model is the same computation without per-module overhead, and it is compiled
(``compile=True``; ``--no-compile`` for the eager figure).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import warnings

import torch

CONVERSATIONS = 1000
BATCH = 16


def conversations() -> list[list[dict]]:
    from lit_qwen3.datamodules.arithmetic import ArithmeticTask

    rows = ArithmeticTask(seed=0).conversations(CONVERSATIONS)
    return [row["messages"] for row in rows]


def trl_epoch_rates(args, epochs: int) -> tuple[list[float], int]:
    """Tokens/s of each epoch of TRL's SFTTrainer after the warm-up, and tokens per epoch."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lit_qwen3.models import load_model
    from lit_qwen3.tokenizer import build_toy_tokenizer

    tokenizer = build_toy_tokenizer()
    model = load_model("toy-teacher", seed=0)
    dataset = Dataset.from_list([{"messages": m} for m in conversations()])
    seconds: list[float] = []

    class Timer(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_epoch_end(self, *a, **k):
            seconds.append(time.perf_counter() - self.start)

    config = SFTConfig(
        output_dir=os.path.join(args.scratch, "trl_sft"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=args.warmup + epochs,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        packing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    trainer.train()
    return [tokens / s for s in seconds[args.warmup :]], tokens


def our_epoch_rates(args, epochs: int) -> tuple[list[float], int]:
    """Tokens/s of each epoch of our SFT stage after the warm-up, and tokens per epoch."""
    import lightning as L
    from torch.utils.data import DataLoader

    from lit_qwen3.ops.packing import collate_padded, tokenize_conversation
    from lit_qwen3.runtime.optim import OptimizerConfig
    from lit_qwen3.stages import ColdStartSFT
    from lit_qwen3.tokenizer import build_toy_tokenizer

    tokenizer = build_toy_tokenizer()
    examples = [tokenize_conversation(tokenizer, m) for m in conversations()]
    tokens = sum(len(e["input_ids"]) for e in examples)
    module = ColdStartSFT(
        model="toy-teacher",
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=0, min_lr_ratio=1.0),
        compile=args.compile,
    )
    loader = DataLoader(
        examples,
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=lambda rows: collate_padded(rows, pad_token_id=tokenizer.pad_token_id),
    )
    seconds: list[float] = []

    class Timer(L.Callback):
        def on_train_epoch_start(self, *a, **k):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *a, **k):
            seconds.append(time.perf_counter() - self.start)

    trainer = L.Trainer(
        max_epochs=args.warmup + epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timer()],
        default_root_dir=os.path.join(args.scratch, "ours"),  # the export at the end goes here
    )
    trainer.fit(module, train_dataloaders=loader)
    return [tokens / s for s in seconds[args.warmup :]], tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    parser.add_argument("--scratch", default="/tmp/bench_sft")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="our stage's compile option (compiled during the warm-up epoch)",
    )
    parser.add_argument("--only", choices=["ours", "trl"], help="time one side only (profiling)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    ours, theirs, counts = [], [], {}
    for _ in range(args.rounds):
        if args.only != "trl":
            rates, counts["ours"] = our_epoch_rates(args, args.epochs)
            ours += rates
        if args.only != "ours":
            rates, counts["trl"] = trl_epoch_rates(args, args.epochs)
            theirs += rates
    result = {
        "benchmark": "sft_tokens_per_s",
        "conversations": CONVERSATIONS,
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "epochs_timed": len(ours or theirs),
        "tokens_per_epoch": counts,
        "load_average": os.getloadavg()[0],
    }
    if ours:
        result["ours_tokens_per_s"] = statistics.median(ours)
    if theirs:
        result["trl_tokens_per_s"] = statistics.median(theirs)
    if ours and theirs:
        result["speedup"] = result["ours_tokens_per_s"] / result["trl_tokens_per_s"]
        print(
            f"ours {result['ours_tokens_per_s']:.0f} tok/s; TRL {result['trl_tokens_per_s']:.0f}"
            f" tok/s; speedup {result['speedup']:.2f}x (load {result['load_average']:.1f})"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
