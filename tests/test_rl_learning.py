"""The RL stages learn: GRPO raises reward and held-out pass@1 from a briefly cold-started toy
policy; a policy that saw a few calculator calls calls the tool in general RL and is rewarded;
IFEval-format rows train through GeneralRL as they are."""

from __future__ import annotations

import json

import lightning as L
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.datamodules.queries import QueryDataModule
from lit_qwen3.evaluation import evaluate_mode
from lit_qwen3.generation import SamplingConfig
from lit_qwen3.optim import OptimizerConfig
from lit_qwen3.stages import GeneralRL, ReasoningRL

RL_STEPS = 60


class History(L.Callback):
    """Per-step training metrics of an RL run."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def _trainer(steps: int, history: History) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history],
    )


def _pass_at_1(module, queries) -> float:
    result = evaluate_mode(
        module.model,
        module.tokenizer,
        queries,
        thinking=True,
        n_samples=4,
        verifier="arithmetic",
        sampling=SamplingConfig.qwen3(True, max_new_tokens=64),
    )
    return result.metrics["accuracy"]


def test_grpo_raises_reward_and_held_out_pass_at_1(toy_policy):
    data = QueryDataModule(
        str(toy_policy),
        queries_per_step=8,
        toy_size=2000,
        val_size=128,
        toy_min_digits=2,
        toy_max_digits=3,
        toy_mul_fraction=0.0,
        toy_exclude_sft=0,
    )
    data.setup("fit")
    module = ReasoningRL(
        str(toy_policy),
        rewards=[{"name": "arithmetic"}],
        group_size=8,
        sampling=SamplingConfig(max_new_tokens=64, temperature=0.6),
        optimizer=OptimizerConfig(lr=1e-4, warmup_steps=0, min_lr_ratio=1.0),
        samples_every_n_steps=0,
    )
    module.configure_model()
    before = _pass_at_1(module, data.val_queries)
    history = History()
    _trainer(RL_STEPS, history).fit(module, data)
    after = _pass_at_1(module, data.val_queries)
    rewards = [row["train/reward"] for row in history.rows]
    first, last = sum(rewards[:15]) / 15, sum(rewards[-15:]) / 15
    print(f"pass@1 {before:.3f} -> {after:.3f}; reward {first:.3f} -> {last:.3f}")
    assert last > first + 0.05
    assert after > before + 0.03


def test_the_calculator_is_called_and_rewarded(toy_policy, tmp_path):
    """A short fusion SFT with calculator replies, then general RL on large products."""
    from lit_qwen3.datamodules.fusion import FusionDataModule
    from lit_qwen3.stages import ThinkingModeFusion

    fusion = ThinkingModeFusion(
        str(toy_policy),
        output_dir=str(tmp_path / "fused"),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=10),
    )
    data = FusionDataModule(
        str(toy_policy),
        size=2000,
        val_size=0,
        tool_share=0.5,
        rejection_samples=1,
        rejection_max_new_tokens=48,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        max_tokens_per_batch=4096,
    )
    _trainer(150, History()).fit(fusion, data)

    queries = QueryDataModule(
        str(tmp_path / "fused"),
        queries_per_step=8,
        toy_size=256,
        val_size=0,
        toy_tool_fraction=1.0,
        toy_exclude_sft=0,
    )
    module = GeneralRL(
        str(tmp_path / "fused"),
        rewards=[{"name": "arithmetic"}, {"name": "tool_use", "weight": 0.5}],
        group_size=4,
        sampling=SamplingConfig(max_new_tokens=80, temperature=1.0),
        max_tool_turns=1,
        optimizer=OptimizerConfig(lr=5e-5, warmup_steps=0),
        samples_every_n_steps=0,
    )
    history = History()
    _trainer(4, history).fit(module, queries)
    calls = [row["train/tool_calls_per_rollout"] for row in history.rows]
    used = [row["train/reward/tool_use"] for row in history.rows]
    correct = [row["train/reward/arithmetic"] for row in history.rows]
    print(f"calls/rollout {calls}; tool_use {used}; correct {correct}")
    assert min(calls) > 0.5 and min(used) > 0.5
    assert max(correct) > 0.5  # the calculator's result reaches the boxed answer


def test_ifeval_rows_train_through_general_rl_as_they_are(toy_policy, tmp_path):
    from lit_qwen3.datamodules.toy_instructions import toy_ifeval_rows

    rows = [
        {k: r[k] for k in ("prompt", "instruction_id_list", "kwargs")}
        for r in toy_ifeval_rows(24, seed=1)
    ]
    path = tmp_path / "ifeval.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = QueryDataModule(str(toy_policy), data=str(path), queries_per_step=4, val_size=0)
    module = GeneralRL(
        str(toy_policy),
        rewards=[{"name": "instructions", "kwargs": {"all_or_nothing": True}}],
        group_size=2,
        sampling=SamplingConfig(max_new_tokens=32),
        samples_every_n_steps=0,
    )
    history = History()
    _trainer(2, history).fit(module, data)
    assert all("train/reward/instructions" in row for row in history.rows)
    assert all(torch.isfinite(torch.tensor(row["train/reward"])) for row in history.rows)
