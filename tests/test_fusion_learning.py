"""Thinking-mode fusion learns (issue 9): the briefly cold-started toy policy knows only thinking
mode; fusion on its own rejection samples plus the toy task's direct answers lifts its
non-thinking accuracy off zero, keeps its thinking accuracy, and leaves pass@1 rising with the
thinking budget (cut replies in the mix teach it to answer after a forced stop).

Measured (1,000 steps, lr 1e-3, 2 shared cores, 74 s of training), pass@1 at T 0.6 on 128
held-out 2-digit sums x 4 samples:

| | thinking | non-thinking |
|---|---|---|
| before fusion | 0.414 | 0.000 |
| step 250 / 500 / 750 | 0.141 / 0.260 / 0.629 | 0.014 / 0.041 / 0.051 |
| after fusion | 0.713 | 0.057 |

Budget sweep after fusion (budgets 0 / 4 / 8 / 12 / 16 / 24 / 32 tokens): 0.021 / 0.031 /
0.027 / 0.006 / 0.012 / 0.486 / 0.713. A 2-digit scratchpad is about 24 tokens long, so the
curve is a step there: the pipeline's 1-8 digit evaluation gives the smooth Figure 2.
Thinking accuracy dips early (the mix's half of direct answers pulls the shared weights) and
recovers past its start, as the rejection samples are the policy's own correct traces."""

from __future__ import annotations

import lightning as L
import pytest
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import held_out_pass1, quiet_trainer

from lit_qwen3.runtime.optim import OptimizerConfig

STOP = "\n</think>\n\n"  # the template's bare close, forced by budgets and cut into the mix
BUDGETS = (0, 4, 8, 12, 16, 24, 32)


@pytest.fixture(scope="module")
def fused(toy_policy, tmp_path_factory):
    """(before, after, sweep) of 1,000 fusion steps from the toy policy."""
    from datamodules.fusion import FusionDataModule
    from lit_qwen3.stages import ThinkingModeFusion

    data = FusionDataModule(
        tokenizer=str(toy_policy),
        size=4000,
        val_size=128,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        rejection_samples=2,
        rejection_max_new_tokens=64,
        cut_stop_text=STOP,
        max_tokens_per_batch=2048,
        max_length=128,
    )
    data.setup("fit")
    held_out = [{"messages": q["messages"], "answer": q["answer"]} for q in data.val_queries]
    module = ThinkingModeFusion(
        str(toy_policy),
        output_dir=str(tmp_path_factory.mktemp("fused") / "model"),
        stop_thinking=STOP,
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=20, weight_decay=0.01, min_lr_ratio=0.1),
    )
    module.configure_model()
    before = {
        mode: held_out_pass1(module, held_out, thinking=mode, stop_thinking=STOP)
        for mode in (True, False)
    }
    L.seed_everything(0, verbose=False)
    quiet_trainer(1000, limit_val_batches=0, gradient_clip_val=1.0).fit(module, data)
    after = {
        mode: held_out_pass1(module, held_out, thinking=mode, stop_thinking=STOP)
        for mode in (True, False)
    }
    sweep = [
        held_out_pass1(module, held_out, budget=budget, stop_thinking=STOP) for budget in BUDGETS
    ]
    print(f"fusion: before {before}, after {after}, sweep {dict(zip(BUDGETS, sweep, strict=True))}")
    return before, after, sweep


def test_fusion_lifts_non_thinking_accuracy_and_keeps_thinking(fused):
    before, after, _ = fused
    assert before[False] < 0.02  # a thinking-only policy cannot answer directly
    assert after[False] >= 0.03 and after[False] > before[False] + 0.02
    assert after[True] >= before[True] - 0.05


def test_after_fusion_pass1_rises_with_the_thinking_budget(fused):
    _, after, sweep = fused
    assert sweep[-1] - sweep[0] >= 0.3
    assert sum(b < a - 0.05 for a, b in zip(sweep, sweep[1:], strict=False)) == 0
    assert abs(sweep[-1] - after[True]) < 0.1  # the largest budget never binds
