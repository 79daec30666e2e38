"""The cold start learns: thinking-mode pass@1 on held-out toy problems rises well above its start.

Trains ColdStartSFT (toy teacher) on 2-digit sums without the check line for 500 steps, the
smallest setting in which the chain-of-thought pattern is learnt on 2 CPU cores in about a minute
(measured: pass@1 0.02 / 0.47 / 0.81 / 0.98 after 200 / 400 / 500 / 600 steps).
"""

from __future__ import annotations

import lightning as L

from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.evaluation import evaluate_mode
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT

STEPS = 500


def _pass_at_1(module, queries) -> float:
    greedy = SamplingConfig(max_new_tokens=64, do_sample=False)
    result = evaluate_mode(
        module.model,
        module.tokenizer,
        queries,
        thinking=True,
        verifier="arithmetic",
        sampling=greedy,
    )
    return result.metrics["pass_at_1"]


def test_cold_start_learns_the_chain_of_thought(tmp_path):
    data = ConversationDataModule(
        "toy-teacher",
        toy_size=8000,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        val_size=64,
        max_tokens_per_batch=2048,
        max_length=128,
        packing=False,
    )
    data.setup("fit")
    module = ColdStartSFT(model="toy-teacher", optimizer=OptimizerConfig(lr=3e-3, warmup_steps=20))
    module.configure_model()
    before = _pass_at_1(module, data.val_queries)
    trainer = L.Trainer(
        max_steps=STEPS,
        default_root_dir=tmp_path,  # the export goes to <default_root_dir>/model
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(module, data)
    after = _pass_at_1(module, data.val_queries)
    print(f"thinking pass@1 before {before:.3f} after {after:.3f} ({STEPS} steps)")
    assert before < 0.05
    assert after >= 0.4
