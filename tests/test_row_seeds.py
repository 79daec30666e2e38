"""Per-row sampling streams: splitmix64 on int64 tensors equals the reference algorithm, and a
row seeded alike samples the same tokens whatever batch, order or compaction it goes through."""

from __future__ import annotations

import pytest
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.models import load_model
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.rollout.sampling import counter_uniform, mix_seed, splitmix64

MASK = (1 << 64) - 1


def splitmix64_reference(state: int) -> int:
    """Steele, Lea and Flood's splitmix64 (its C form), with Python's unbounded ints."""
    z = (state + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_splitmix64_known_values():
    # The published stream of splitmix64 seeded with 0 starts 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4
    gamma = 0x9E3779B97F4A7C15 - (1 << 64)
    out = splitmix64(torch.tensor([0, gamma])).tolist()
    assert [v & MASK for v in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_splitmix64_and_uniforms_match_the_reference_on_any_int64():
    seeds = torch.randint(-(2**63), 2**63 - 1, (500,), generator=torch.Generator().manual_seed(0))
    ours = splitmix64(seeds).tolist()
    assert [v & MASK for v in ours] == [splitmix64_reference(s & MASK) for s in seeds.tolist()]
    u = counter_uniform(seeds, 7)
    expected = [
        (splitmix64_reference((splitmix64_reference(s & MASK) + 7) & MASK) >> 40) / 2**24
        for s in seeds.tolist()
    ]
    assert u.shape == (500, 1) and u.flatten().tolist() == expected
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0


def test_mix_seed_folds_splitmix64_over_its_values():
    values = [0, -1, 2**63 - 1, -(2**63), 12345, 7]
    state = torch.zeros((), dtype=torch.long)
    for value in values:
        state = splitmix64(state ^ value)
    assert mix_seed(*values) == int(state)


def test_mix_seed_is_order_sensitive_and_deterministic():
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    assert len({mix_seed(1, 2, 3), mix_seed(3, 2, 1), mix_seed(1, 2), mix_seed(1, 2, 4)}) == 4


def test_a_row_samples_the_same_in_any_batch(toy_tokenizer):
    model = load_model("toy-teacher", seed=0)
    prompts = [
        toy_tokenizer(f"<|im_start|>user\n{'3' * i}+{i}<|im_end|>\n<|im_start|>assistant\n")[
            "input_ids"
        ]
        for i in range(1, 9)
    ]
    sampler = RolloutSampler(toy_tokenizer, SamplingConfig(max_new_tokens=24, top_k=50))
    seeds = [mix_seed(0, 5, i) for i in range(8)]
    stops = range(0, 300, 9)  # a random model stops after ~9 tokens on average

    def sample(rows, row_seeds):
        return sampler.sample(model, rows, seeds=row_seeds, stop_token_ids=stops)

    whole = sample(prompts, seeds)
    lengths = whole.completion_mask.sum(-1)
    assert len(set(lengths.tolist())) > 1  # rows end at different steps: the batch compacts
    order = [6, 1, 4]
    part = sample([prompts[i] for i in order], [seeds[i] for i in order])
    for j, i in enumerate(order):
        n = int(lengths[i])
        assert part.completion_ids[j, :n].tolist() == whole.completion_ids[i, :n].tolist()
        torch.testing.assert_close(part.logprobs[j, :n], whole.logprobs[i, :n], rtol=0, atol=1e-5)
    other = sample(prompts, [s + 1 for s in seeds])
    assert not torch.equal(other.completion_ids, whole.completion_ids)


def test_seeds_must_match_the_batch(toy_tokenizer):
    model = load_model("toy-student", seed=0)
    sampler = RolloutSampler(toy_tokenizer, SamplingConfig(max_new_tokens=2))
    with pytest.raises(ValueError, match="seeds has 1 entries but the batch has 2"):
        sampler.sample(model, [[1, 2], [3]], seeds=[0])


def test_repeated_prompts_are_prefilled_once_and_sample_as_if_alone(toy_tokenizer):
    model = load_model("toy-teacher", seed=0)
    a, b = (
        toy_tokenizer(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
        for q in ("12+34", "5*6")
    )
    prompts, seeds = [a, b, a, a, b], [mix_seed(1, i) for i in range(5)]
    widths: list[tuple[int, int]] = []
    hook = model.model.embed_tokens.register_forward_hook(
        lambda module, args, out: widths.append(tuple(args[0].shape))
    )
    sampler = RolloutSampler(toy_tokenizer, SamplingConfig(max_new_tokens=12, top_p=0.9))
    together = sampler.sample(model, prompts, seeds=seeds)
    assert widths[0] == (2, len(a))  # one prefill row per distinct prompt
    hook.remove()
    for i, prompt in enumerate(prompts):
        alone = sampler.sample(model, [prompt], seeds=[seeds[i]])
        n = int(alone.completion_mask.sum())
        assert together.completion_ids[i, :n].tolist() == alone.completion_ids[0, :n].tolist()
        torch.testing.assert_close(
            together.logprobs[i, :n], alone.logprobs[0, :n], atol=1e-5, rtol=0
        )
    # a group's rows share the prompt, not the draws
    assert together.completion_ids[0].tolist() != together.completion_ids[2].tolist()
