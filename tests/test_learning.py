"""The cold start learns: thinking-mode pass@1 on held-out toy problems rises well above its start.

The session's toy policy (``tests/toy_models.py``) is this test's subject: the real
``ColdStartSFT`` on 2-digit sums without the check line, from a random toy teacher, the smallest
setting in which the chain-of-thought pattern is learnt on 2 CPU cores in under a minute
(measured on one machine, seed 0: greedy pass@1 0.02 / 0.47 / 0.81 / 0.98 after 200 / 400 / 500 /
600 steps). Training it once serves this test and every RL, fusion and distillation test.
"""

from __future__ import annotations

import pytest
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import SEED, STEPS, toy_sft_data

from lit_qwen3.evaluation import evaluate_mode
from lit_qwen3.models import load_model, load_tokenizer
from lit_qwen3.rollout.generation import SamplingConfig

pytestmark = [pytest.mark.slow, pytest.mark.learning]


def _pass_at_1(model, tokenizer, queries) -> float:
    greedy = SamplingConfig(max_new_tokens=64, do_sample=False)
    result = evaluate_mode(
        model, tokenizer, queries, thinking=True, verifier="arithmetic", sampling=greedy
    )
    return result.metrics["pass_at_1"]


def test_cold_start_learns_the_chain_of_thought(toy_policy):
    data = toy_sft_data()
    data.setup("fit")
    queries = data.val_queries
    tokenizer = load_tokenizer(str(toy_policy))
    before = _pass_at_1(load_model("toy-teacher", seed=SEED), tokenizer, queries)
    after = _pass_at_1(load_model(str(toy_policy)), tokenizer, queries)
    print(f"thinking pass@1 before {before:.3f} after {after:.3f} ({STEPS} steps, seed {SEED})")
    assert before < 0.05
    assert after >= 0.4
