"""GRPO/DAPO, GSPO, SAPO and CISPO from one cold-start checkpoint on the toy task, side by side.

    .venv/bin/python benchmarks/compare_rl_methods.py                  # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/compare_rl_methods.py --steps 40 --methods grpo,gspo
    .venv/bin/python benchmarks/compare_rl_methods.py --policy runs/toy/cold_start/model

Without ``--policy`` the ``toy-teacher`` preset is cold-started on 2-digit sums first (as the
learning tests do, ~30 s). Every method then starts from that same checkpoint with the same
seed, queries and sampling seeds (so the first batch of rollouts is identical; later ones differ
as the policies do), ``--steps`` batches of ``--per-step`` queries x G rollouts at T 1, two
optimizer steps per batch. Reported per method: held-out pass@1 (4 samples at T 0.6 on
``--val`` sums) with a 95% interval over queries (normal approximation, per-query accuracy),
the policy's entropy on its last batch, and seconds per training step (sampling + updates).
The last stdout line is one JSON object: ``{"methods": {name: {...}}, "start_pass1": ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.datamodules.queries import QueryDataModule
from lit_qwen3.evaluation import evaluate_mode
from lit_qwen3.ops.losses import GRPOLossConfig
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT, ReasoningRL

#: Each method as the loss keys a config would set (README, "RL methods").
METHODS = {
    "grpo": {},  # DAPO defaults: clip-higher 0.2 / 0.28, token-mean
    "gspo": {
        "importance_sampling_level": "sequence",
        "eps_low": 3e-4,
        "eps_high": 4e-4,
        "loss_agg_mode": "seq_mean_token_mean",
    },
    "sapo": {"policy_loss": "sapo", "loss_agg_mode": "seq_mean_token_mean"},
    "cispo": {"policy_loss": "cispo"},
}


class StepTimes(L.Callback):
    """Wall seconds of each training step and the metrics it logged."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.rows: list[dict[str, float]] = []

    def on_train_batch_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, *args) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def trainer(steps: int, callbacks: list) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks,
    )


def cold_start(directory: Path, steps: int) -> Path:
    """The learning tests' cold start: ``toy-teacher`` on 2-digit sums, exported."""
    module = ColdStartSFT(
        model="toy-teacher",
        output_dir=str(directory),
        optimizer=OptimizerConfig(lr=3e-3, warmup_steps=20),
    )
    data = ConversationDataModule(
        "toy-teacher",
        toy_size=8000,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        toy_check=False,
        val_size=64,
        max_tokens_per_batch=2048,
        max_length=128,
        packing=False,
    )
    L.seed_everything(0, verbose=False)
    L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        gradient_clip_val=1.0,
    ).fit(module, data)
    return directory


def pass1(module, queries) -> tuple[float, float]:
    """Held-out accuracy (4 samples per query, T 0.6) and its 95% half-width over queries."""
    result = evaluate_mode(
        module.model,
        module.tokenizer,
        queries,
        thinking=True,
        n_samples=4,
        verifier="arithmetic",
        sampling=SamplingConfig(max_new_tokens=48, temperature=0.6),
    )
    per_query = result.correct.float().mean(1)
    mean = float(per_query.mean())
    spread = float(per_query.std()) / math.sqrt(len(per_query))
    return mean, 1.96 * spread


def toy_queries(policy: Path, args) -> QueryDataModule:
    """The learning tests' query pool (2,000 two-digit sums), set up: every method and the
    start are evaluated on its held-out split."""
    data = QueryDataModule(
        str(policy),
        queries_per_step=args.per_step,
        toy_size=2000,
        val_size=args.val,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        toy_exclude_sft=0,
        seed=args.seed,
    )
    data.setup("fit")
    return data


def run_method(name: str, policy: Path, scratch: Path, args) -> dict:
    data = toy_queries(policy, args)
    module = ReasoningRL(
        str(policy),
        output_dir=str(scratch / name),  # the trained policy's export: thrown away
        rewards=[{"name": "arithmetic"}],
        group_size=args.group,
        num_minibatches=2,
        sampling=SamplingConfig(max_new_tokens=48, temperature=1.0),
        loss=GRPOLossConfig(**METHODS[name]),
        optimizer=OptimizerConfig(lr=args.lr, warmup_steps=0, min_lr_ratio=1.0),
        samples_every_n_steps=0,
        seed=args.seed,
    )
    module.configure_model()
    timer = StepTimes()
    L.seed_everything(args.seed, verbose=False)
    trainer(2 * args.steps, [timer]).fit(module, data)
    accuracy, half_width = pass1(module, data.val_queries)
    last = timer.rows[-1]
    return {
        "pass1": accuracy,
        "pass1_ci95": [accuracy - half_width, accuracy + half_width],
        "final_entropy": last.get("train/entropy", float("nan")),
        "final_reward": last.get("train/reward", float("nan")),
        "s_per_step": statistics.mean(timer.seconds[1:] or timer.seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, help="cold-start checkpoint (default: train one)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=20, help="batches of queries per method")
    parser.add_argument("--per-step", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--val", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cold-start-steps", type=int, default=450)
    args = parser.parse_args()
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as scratch:
        policy = args.policy or cold_start(Path(scratch) / "cold_start", args.cold_start_steps)
        start = ReasoningRL(str(policy), rewards=[{"name": "arithmetic"}])
        start.configure_model()
        data = toy_queries(policy, args)
        start_pass1, start_hw = pass1(start, data.val_queries)
        print(f"start: held-out pass@1 {start_pass1:.3f} +- {start_hw:.3f}", flush=True)
        results = {}
        for name in args.methods.split(","):
            results[name] = run_method(name, policy, Path(scratch), args)
            r = results[name]
            print(
                f"{name:6s} pass@1 {r['pass1']:.3f} (95% {r['pass1_ci95'][0]:.3f}-"
                f"{r['pass1_ci95'][1]:.3f})  entropy {r['final_entropy']:.3f}  "
                f"{r['s_per_step']:.2f} s/step",
                flush=True,
            )
    print(json.dumps({"start_pass1": start_pass1, "steps": args.steps, "methods": results}))


if __name__ == "__main__":
    main()
