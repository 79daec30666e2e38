"""The compiled decode step (``compile=True``) samples exactly what the eager one samples: the
same tokens and log-probs for seeded rows, through top-k/top-p truncation, a thinking budget
that forces the stop text, and rows that finish early and leave the batch. The compiled step
draws several tokens per call; the run's last call decodes past ``max_new_tokens``."""

from __future__ import annotations

import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.models import load_model
from lit_qwen3.rollout import decoding
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.rollout.sampling import mix_seed


def test_compiled_sampling_matches_eager_sampling(toy_tokenizer):
    model = load_model("toy-teacher", seed=0)
    prompts = [
        toy_tokenizer(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n<think>\n")[
            "input_ids"
        ]
        for q in ("12+34", "5*6", "12+34", "100+1", "7+8", "12+34")
    ]
    config = SamplingConfig(max_new_tokens=20, temperature=0.7, top_k=40, top_p=0.95)
    seeds = [mix_seed(3, i) for i in range(len(prompts))]
    stops = range(0, 300, 9)  # the random model stops after ~9 tokens on average
    runs = [
        RolloutSampler(toy_tokenizer, config, compile=compile, tokens_per_call=2).sample(
            model, prompts, seeds=seeds, thinking_budget=4, stop_token_ids=stops
        )
        for compile in (False, True)
    ]
    eager, compiled = runs
    assert "static_sample_steps" in decoding._COMPILED  # the draw ran inside the compiled step
    assert eager.forced_mask.any()  # the budget forced the stop text into some rows
    assert len(set(eager.completion_mask.sum(-1).tolist())) > 1  # rows ended at different steps
    assert eager.truncated.any()  # some row ran to max_new_tokens (19 compiled steps: 10 calls)
    assert torch.equal(compiled.completion_ids, eager.completion_ids)
    assert torch.equal(compiled.forced_mask, eager.forced_mask)
    # per-row results are those of the last token kept, not of steps decoded past the end
    for name in ("completion_mask", "thinking_length", "budget_forced", "truncated"):
        assert torch.equal(getattr(compiled, name), getattr(eager, name)), name
    torch.testing.assert_close(compiled.logprobs, eager.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        compiled.sampling_logprobs, eager.sampling_logprobs, atol=1e-5, rtol=0
    )

    # Every row still thinking at max_new_tokens: the tokens decoded past it must not count.
    eager, compiled = (
        RolloutSampler(toy_tokenizer, config, compile=compile, tokens_per_call=2).sample(
            model, prompts, seeds=seeds, thinking_budget=50
        )
        for compile in (False, True)
    )
    assert eager.truncated.all() and eager.thinking_length.tolist() == [20] * len(prompts)
    assert torch.equal(compiled.completion_ids, eager.completion_ids)
    assert torch.equal(compiled.thinking_length, eager.thinking_length)
