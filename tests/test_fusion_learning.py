"""Thinking-mode fusion learns (issue 9): the briefly cold-started toy policy knows only thinking
mode; fusion on its own rejection samples plus the toy task's direct answers lifts its
non-thinking accuracy off zero, keeps its thinking accuracy, and leaves pass@1 rising with the
thinking budget (cut replies in the mix teach it to answer after a forced stop).

Measured on one machine (seed 0; 1,000 steps, lr 1e-3, 2 shared cores, 74 s of training),
pass@1 at T 0.6 on 128 held-out 2-digit sums x 4 samples:

| | thinking | non-thinking |
|---|---|---|
| before fusion | 0.414 | 0.000 |
| step 250 / 500 / 750 | 0.141 / 0.260 / 0.629 | 0.014 / 0.041 / 0.051 |
| after fusion | 0.713 | 0.057 |

Budget sweep after fusion (budgets 0 / 4 / 8 / 12 / 16 / 24 / 32 tokens): 0.021 / 0.031 /
0.027 / 0.006 / 0.012 / 0.486 / 0.713. Another machine of the same kind trained a different model
from the same seed: non-thinking 0.314, thinking 0.709, sweep 0.09 / 0.08 / 0.20 / 0.27 / 0.10 /
0.54 / 0.71. The tests assert what both share. A 2-digit scratchpad is about 24 tokens long, so the
curve is a step there: the pipeline's 1-8 digit evaluation gives the smooth Figure 2.
Thinking accuracy dips early (the mix's half of direct answers pulls the shared weights) and
recovers past its start, as the rejection samples are the policy's own correct traces."""

from __future__ import annotations

import lightning as L
import pytest
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import SEED, held_out_pass1, quiet_trainer

from lit_qwen3.runtime.optim import OptimizerConfig

pytestmark = [pytest.mark.slow, pytest.mark.learning]

STOP = "\n</think>\n\n"  # the template's bare close, forced by budgets and cut into the mix
BUDGETS = (0, 4, 8, 12, 16, 24, 32)
SCRATCHPAD = 24  # thinking tokens of a 2-digit sum's scratchpad
#: Two standard errors of a difference of pass@1 between two evaluations of 128 queries x 4
#: samples (queries are the unit: sd <= 0.5 / sqrt(128) each, 0.044; paired, at most 0.09).
NOISE = 0.09


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
        seed=SEED,
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
    L.seed_everything(SEED, verbose=False)
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
    assert after[True] >= before[True] - NOISE


def test_after_fusion_pass1_rises_with_the_thinking_budget(fused):
    """What the budget guarantees, not one machine's curve: cut before the scratchpad is written
    (about 24 tokens for a 2-digit sum) a reply is about as good as a direct answer; with room
    for the scratchpad it is as good as unbounded thinking. Between cuts inside the scratchpad
    the curve need not rise: one machine measured 0.27 at budget 12 and 0.10 at 16."""
    _, after, sweep = fused
    cut = [a for b, a in zip(BUDGETS, sweep, strict=True) if b < SCRATCHPAD]
    room = [a for b, a in zip(BUDGETS, sweep, strict=True) if b >= SCRATCHPAD]
    assert sweep[-1] - sweep[0] >= 0.3
    assert min(room) > max(cut) + NOISE
    assert abs(sweep[-1] - after[True]) < NOISE  # the largest budget never binds
