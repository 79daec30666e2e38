"""A briefly cold-started toy policy, trained once per test session (about 30 s on 2 cores), and
what the learning tests measure it with.

RL, fusion and distillation tests need a policy that already writes the toy scratchpad: a
random model never opens ``<think>`` and never earns a reward. ``train_toy_policy`` runs the
real ``ColdStartSFT`` on 2-digit sums (no check line) to greedy thinking pass@1 of about 0.5-0.9
and exports it with ``save_pretrained`` like any stage. ``two_digit_queries`` are RL queries from
its distribution, ``held_out_pass1`` the learning tests' accuracy measure, ``quiet_trainer`` and
``History`` a plain Trainer and the per-step metrics it logged.

Toy training amplifies floating-point differences between CPUs (instruction sets, BLAS kernels,
thread splits) into different models, so a learning test must hold for more than one run. Two
variables stand in for another machine: ``LIT_QWEN3_TEST_SEED`` shifts every learning test's
seeds (model init, data, training and sampling), ``LIT_QWEN3_TEST_THREADS`` sets torch's thread
count for the toy training. ``make test-learning-matrix`` runs the learning tests at 1 and 2
threads and on two other seeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch

from lit_qwen3.chat import STOP_THINKING
from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.datamodules.queries import QueryDataModule
from lit_qwen3.evaluation import evaluate_mode
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT

#: Cold-start steps: pass@1 on 2-digit sums goes 0.03 / 0.61 / 0.94 at 300 / 400 / 500 steps
#: (seed 0 on one machine; other seeds and machines land within a few tenths of that).
STEPS = 450

#: Added to every learning test's seeds: another value stands in for another machine.
SEED = int(os.environ.get("LIT_QWEN3_TEST_SEED", "0"))


def toy_threads(default: int) -> int:
    """Torch threads for toy training: ``LIT_QWEN3_TEST_THREADS`` when set, else ``default``
    (1 under ``pytest -n``: each worker has one core, and more threads than cores make
    OpenMP's waiting threads spin against each other)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        default = 1
    return int(os.environ.get("LIT_QWEN3_TEST_THREADS", default))


def toy_sft_data(**overrides) -> ConversationDataModule:
    settings = dict(
        toy_size=8000,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        toy_check=False,
        val_size=64,
        max_tokens_per_batch=2048,
        max_length=128,
        packing=False,
        seed=SEED,
    )
    return ConversationDataModule("toy-teacher", **{**settings, **overrides})


#: The weaker policy's step in the same run: the scratchpad format, few right answers (pass@1 at
#: T 0.6 measured 0.03 to 0.36, against the 450-step policy's 0.1 to 0.8), room to learn.
WEAK_STEPS = 350
#: Snapshots RL may start from: where a seed and a machine leave the cold start differs a lot
#: (greedy pass@1 after 450 steps measured 0.48 to 0.95), and RL shows only from a start with
#: room above and signal in its groups (TOY_NOTES: near pass@1 0.5).
RL_START_STEPS = (350, 400, 450)


class ExportAt(L.Callback):
    """Export the stage's model and tokenizer when training reaches given steps."""

    def __init__(self, snapshots: dict[int, Path]) -> None:
        self.snapshots = snapshots

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        directory = self.snapshots.get(trainer.global_step)
        if directory is not None:
            pl_module.export(directory)


#: A slow seed's cold start continues this far past ``STEPS`` when no snapshot comes within
#: ``SLOW_START_GAP`` of RL's target (seed 2 measured pass@1 0.09 to 0.18 at steps 350 to 450);
#: snapshots every 50 steps on the way. Fast seeds never train these steps.
EXTRA_STEPS = 150
SLOW_START_GAP = 0.25


def train_toy_policy(
    directory: Path,
    steps: int = STEPS,
    preset: str = "toy-teacher",
    snapshots: dict[int, Path] | None = None,
    optimizer: OptimizerConfig | None = None,
) -> Path:
    """Cold-start ``preset`` (a preset name or a model directory) on 2-digit sums for ``steps``
    steps and export it to ``directory`` (and, on the way, to each of ``snapshots``: step ->
    directory)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(toy_threads(2))
    try:
        module = ColdStartSFT(
            model=preset,
            output_dir=str(directory),
            optimizer=optimizer or OptimizerConfig(lr=3e-3, warmup_steps=20),
            seed=SEED,
        )
        L.seed_everything(SEED, verbose=False)
        trainer = quiet_trainer(
            steps,
            limit_val_batches=0,
            gradient_clip_val=1.0,
            callbacks=[ExportAt(snapshots or {})],
        )
        trainer.fit(module, toy_sft_data())
    finally:
        torch.set_num_threads(threads)
    return directory


def quiet_trainer(steps: int, **overrides) -> L.Trainer:
    """A CPU Trainer for ``steps`` steps without logger, checkpoints, progress bar or summary."""
    settings = dict(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**settings, **overrides})


class History(L.Callback):
    """Per-step training metrics (``trainer.callback_metrics`` after each batch)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def two_digit_queries(policy, *, per_step: int, size: int, val_size: int = 0) -> QueryDataModule:
    """RL queries from the toy policy's own distribution (2-digit sums), set up."""
    data = QueryDataModule(
        str(policy),
        queries_per_step=per_step,
        toy_size=size,
        val_size=val_size,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        toy_exclude_sft=0,
        seed=SEED,
    )
    data.setup("fit")
    return data


def held_out_scores(
    module,
    queries,
    *,
    thinking: bool = True,
    budget: int | None = None,
    stop_thinking: str = STOP_THINKING,
) -> list[float]:
    """Each query's accuracy over 4 samples at T 0.6 (48 new tokens), in the given mode and
    budget: the unit a paired interval resamples."""
    result = evaluate_mode(
        module.model,
        module.tokenizer,
        queries,
        thinking=thinking,
        n_samples=4,
        verifier="arithmetic",
        sampling=SamplingConfig(max_new_tokens=48, temperature=0.6),
        thinking_budget=budget,
        stop_thinking=stop_thinking,
        seed=SEED,
    )
    return result.per_query()


def held_out_pass1(module, queries, **kwargs) -> float:
    """Accuracy of 4 samples per query at T 0.6 (see :func:`held_out_scores`)."""
    scores = held_out_scores(module, queries, **kwargs)
    return sum(scores) / len(scores)


def rl_start(
    snapshots: dict[int, Path], target: float = 0.5, extra: Path | None = None
) -> tuple[Path, dict[int, float]]:
    """The snapshot whose pass@1 (T 0.6) on 64 problems of the RL queries' training split (not
    the tests' held-out set) is nearest ``target``, and every snapshot's figure.

    When none comes within ``SLOW_START_GAP`` of ``target`` and ``extra`` (a folder) is given,
    the last snapshot trains ``EXTRA_STEPS`` more (once: the result is kept in ``extra``) and
    its snapshots join the choice.
    """
    from filelock import FileLock

    data = two_digit_queries(next(iter(snapshots.values())), per_step=16, size=200)
    queries = [
        {"messages": q.messages, "answer": q.metadata["reference"]} for q in data.train_queries[:64]
    ]  # the snapshots share one tokenizer: one query set serves them all
    figures = {step: _pass1_of(directory, queries) for step, directory in sorted(snapshots.items())}
    if extra is not None and min(abs(f - target) for f in figures.values()) > SLOW_START_GAP:
        last = max(snapshots)
        more = {last + s: extra / f"step{last + s}" for s in range(50, EXTRA_STEPS + 1, 50)}
        with FileLock(f"{extra}.lock"):
            if not (more[max(more)] / "config.json").exists():
                train_toy_policy(
                    more[max(more)],
                    steps=EXTRA_STEPS,
                    preset=str(snapshots[last]),
                    snapshots={step - last: d for step, d in more.items() if step != max(more)},
                    optimizer=OptimizerConfig(lr=1e-3, warmup_steps=10),
                )
        snapshots = {**snapshots, **more}
        figures.update({step: _pass1_of(directory, queries) for step, directory in more.items()})
    best = min(figures, key=lambda step: abs(figures[step] - target))
    return snapshots[best], figures


def _pass1_of(directory: Path, queries) -> float:
    from lit_qwen3.models import load_model, load_tokenizer

    module = SimpleNamespace(
        model=load_model(str(directory)), tokenizer=load_tokenizer(str(directory))
    )
    return held_out_pass1(module, queries)
