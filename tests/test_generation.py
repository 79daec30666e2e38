"""Rollout sampler: greedy parity with model.generate, log-probs, bad input (the thinking budget:
test_thinking_budget.py).

Model: a tiny random Qwen3ForCausalLM over the real Qwen3 vocabulary (skipped without the
tokenizer in ../shared; tests/sampler_fixtures.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from sampler_fixtures import chat_prompts, generate, tiny_qwen3
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from transformers import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lit_qwen3.chat import STOP_THINKING, ThinkTokens
from lit_qwen3.rollout.decoding import Qwen3DecodeStep
from lit_qwen3.rollout.generation import (
    Rollouts,
    RolloutSampler,
    SamplingConfig,
    ThinkingBudgetLogitsProcessor,
    left_pad,
)
from lit_qwen3.rollout.sampling import (
    resolve_thinking_budget,
    sample_next_tokens,
    warp_logits,
)


@pytest.fixture(scope="module")
def model(qwen3_tokenizer):
    return tiny_qwen3(qwen3_tokenizer)


# --- greedy parity with model.generate -------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False])
def test_greedy_equals_generate_token_for_token(qwen3_tokenizer, model, fast_path):
    prompts = chat_prompts(qwen3_tokenizer)
    assert len({len(p) for p in prompts}) == len(prompts)  # mixed lengths: real left padding
    config = SamplingConfig(max_new_tokens=16, do_sample=False)
    sampler = RolloutSampler(qwen3_tokenizer, config, fast_path=fast_path)
    ours = sampler.sample(model, prompts)
    reference = generate(
        model, qwen3_tokenizer, prompts, eos=sampler.think_tokens.eos_token_ids, max_new_tokens=16
    )
    torch.testing.assert_close(ours.completion_ids, reference, rtol=0, atol=0)
    assert ours.completion_mask.all()  # a random model does not stop in 16 tokens
    assert ours.truncated.all()


def greedy_step_logits(tokenizer, model, fast: bool, steps: int = 8) -> torch.Tensor:
    """(steps + 1, B, V) logits of a prefill and ``steps`` greedy decode steps, on the fast
    decode step or on the model's own forward (asserting which one ran)."""
    from lit_qwen3.rollout.decoding import ModelStepper

    ids, mask = left_pad(chat_prompts(tokenizer), tokenizer.pad_token_id)
    with torch.inference_mode():
        stepper = ModelStepper(model, mask, ids.shape[1] + steps, fast_path=fast)
        assert (stepper.fast is not None) == fast
        logits, token = [stepper.prefill(ids)], ids[:, -1]
        for _ in range(steps):
            logits.append(stepper.decode(token))
            token = logits[-1].argmax(-1)
    return torch.stack(logits).float()


def test_fast_decode_is_used_for_plain_qwen3_and_matches_the_hf_forward(qwen3_tokenizer, model):
    from transformers import DynamicCache

    logits = {fast: greedy_step_logits(qwen3_tokenizer, model, fast) for fast in (True, False)}
    torch.testing.assert_close(logits[True], logits[False], rtol=1e-5, atol=1e-6)
    assert Qwen3DecodeStep.build(model, DynamicCache(config=model.config), 8) is None  # no buffers


def test_fast_decode_in_bfloat16_matches_the_hf_forward(qwen3_tokenizer, model):
    """Half precision takes the fast step too (as on a GPU), with the HF forward's roundings:
    the same logits to within bf16's last bit and the same greedy tokens."""
    half = tiny_qwen3(qwen3_tokenizer).to(torch.bfloat16)
    logits = {fast: greedy_step_logits(qwen3_tokenizer, half, fast) for fast in (True, False)}
    # within one bf16 step at these logits' size (|logits| < 1); measured here: identical
    torch.testing.assert_close(logits[True], logits[False], rtol=0, atol=2**-8)
    assert torch.equal(logits[True].argmax(-1), logits[False].argmax(-1))


def test_rows_stopping_at_different_steps_are_dropped_and_still_match_generate(
    qwen3_tokenizer, model
):
    prompts = chat_prompts(qwen3_tokenizer, n=6)
    greedy = SamplingConfig(max_new_tokens=16, do_sample=False)
    base = RolloutSampler(qwen3_tokenizer, greedy).sample(model, prompts).completion_ids
    # Declare as "end of sequence" a token each of rows 0-3 writes early and rows 4-5 never
    # write: rows 0-3 stop within a few steps, so the batch is compacted while rows 4-5 go on.
    others = set(base[4:].flatten().tolist())
    eos = []
    for row in range(4):
        early = [t for t in base[row, 1:8].tolist() if t not in others]
        assert early, f"row {row}: no early token absent from rows 4-5 (precondition)"
        eos.append(early[0])
    tokens = ThinkTokens.from_tokenizer(qwen3_tokenizer)
    tokens = ThinkTokens(
        tokens.think_start_id, tokens.think_end_id, tuple(eos), qwen3_tokenizer.pad_token_id
    )
    stop_ids = qwen3_tokenizer.encode(STOP_THINKING, add_special_tokens=False)
    empty_ids = qwen3_tokenizer.encode("\n\n</think>\n\n", add_special_tokens=False)
    sampler = RolloutSampler(tokens, greedy, stop_thinking=stop_ids, close_empty=empty_ids)
    ours = sampler.sample(model, prompts)
    reference = generate(model, qwen3_tokenizer, prompts, eos=eos, max_new_tokens=16)
    torch.testing.assert_close(ours.completion_ids, reference, rtol=0, atol=0)

    lengths = ours.completion_lengths()
    assert (lengths[:4] < 9).all() and (lengths[4:] == 16).all()
    for row in range(4):  # the mask covers the end token itself, padding after it
        end = int(lengths[row]) - 1
        assert int(ours.completion_ids[row, end]) in eos
        assert (ours.completion_ids[row, end + 1 :] == qwen3_tokenizer.pad_token_id).all()
        assert (ours.logprobs[row, end + 1 :] == 0).all()
    assert ours.truncated.tolist() == [False] * 4 + [True] * 2

    fixed = RolloutSampler(
        tokens,
        SamplingConfig(max_new_tokens=16, do_sample=False, ignore_eos=True),
        stop_thinking=stop_ids,
        close_empty=empty_ids,
    ).sample(model, prompts)
    assert fixed.completion_mask.all() and fixed.truncated.all()
    torch.testing.assert_close(fixed.completion_ids, base, rtol=0, atol=0)


# --- log-probs and sampling distributions ----------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 0.7, "top_k": 5},
        {"temperature": 1.3, "top_p": 0.6},
        {"temperature": 0.6, "top_k": 20, "top_p": 0.95},
        {"top_k": 10, "top_p": 0.8, "min_p": 0.05},
        {"temperature": 0.9, "min_p": 0.2},
    ],
)
def test_sampling_logprobs_match_transformers_warpers(settings):
    torch.manual_seed(1)
    logits = torch.randn(64, 50) * 3
    temperature = settings.get("temperature", 1.0)
    draw = sample_next_tokens(logits, generator=torch.Generator().manual_seed(0), **settings)

    reference = logits.clone()
    warpers = [TemperatureLogitsWarper(temperature)]
    if settings.get("top_k"):
        warpers.append(TopKLogitsWarper(settings["top_k"]))
    if settings.get("top_p", 1.0) < 1.0:
        warpers.append(TopPLogitsWarper(settings["top_p"]))
    if settings.get("min_p"):
        warpers.append(MinPLogitsWarper(settings["min_p"]))
    for warper in warpers:
        reference = warper(None, reference)
    chosen = draw.tokens[:, None]
    kept_logp = torch.log_softmax(reference, -1).gather(-1, chosen).squeeze(-1)
    assert torch.isfinite(kept_logp).all()  # every draw lies in the set transformers keeps
    torch.testing.assert_close(draw.sampling_logprobs, kept_logp)
    raw = torch.log_softmax(logits / temperature, -1).gather(-1, chosen).squeeze(-1)
    torch.testing.assert_close(draw.logprobs, raw)
    assert (draw.sampling_logprobs >= draw.logprobs - 1e-6).all()  # renormalised: never lower
    torch.testing.assert_close(
        warp_logits(
            logits,
            temperature=temperature,
            **{k: v for k, v in settings.items() if k != "temperature"},
        ),
        reference,
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        # p = [.5, .3, .1, .06, .04]; mass before each = [0, .5, .8, .9, .96]: top-p .85 keeps
        # the first three, renormalised by .9 -> [5/9, 3/9, 1/9].
        ({"top_p": 0.85}, [5 / 9, 3 / 9, 1 / 9, 0, 0]),
        # top-k 2 keeps .5 and .3 -> [.625, .375].
        ({"top_k": 2}, [0.625, 0.375, 0, 0, 0]),
        # min-p .15: threshold .15 * .5 = .075 keeps .5, .3, .1 -> [5/9, 3/9, 1/9].
        ({"min_p": 0.15}, [5 / 9, 3 / 9, 1 / 9, 0, 0]),
        # T = 2: p ** .5 = [.7071, .5477, .3162, .2449, .2000], sum 2.0160.
        ({"temperature": 2.0}, [0.35076, 0.27169, 0.15686, 0.12150, 0.09921]),
    ],
)
def test_draw_frequencies_follow_the_truncated_distribution(settings, expected):
    probs = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
    n = 40_000
    logits = probs.log().expand(n, 5)
    draw = sample_next_tokens(logits, generator=torch.Generator().manual_seed(0), **settings)
    frequencies = torch.bincount(draw.tokens, minlength=5).float() / n
    expected = torch.tensor(expected)
    # Binomial standard error is at most sqrt(.25 / 40000) = .0025: allow 4 of them.
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.01)
    kept = expected > 0
    torch.testing.assert_close(
        draw.sampling_logprobs, expected.log()[draw.tokens], rtol=0, atol=1e-4
    )
    assert kept[draw.tokens].all()


def test_logprobs_equal_rescoring_with_the_policy_forward(qwen3_tokenizer, model):
    prompts = chat_prompts(qwen3_tokenizer, suffix="<think>\n")
    config = SamplingConfig(max_new_tokens=12, temperature=0.8, top_k=20, top_p=0.9)
    r = RolloutSampler(qwen3_tokenizer, config).sample(
        model, prompts, thinking_budget=[4, None, 0, 2], generator=torch.Generator().manual_seed(3)
    )
    mask, positions = r.attention_mask(), r.position_ids()
    # Left padding shifts positions: row 0 (the shortest prompt) starts at 0 after its padding.
    first = int((r.prompt_mask[0] == 0).sum())
    assert positions[0, first : first + 3].tolist() == [0, 1, 2]
    with torch.no_grad():
        logits = model(input_ids=r.sequences(), attention_mask=mask, position_ids=positions).logits
    width = r.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, width - 1 : -1].float() / 0.8, -1)
    rescored = logp.gather(-1, r.completion_ids[..., None]).squeeze(-1) * r.completion_mask
    torch.testing.assert_close(r.logprobs, rescored, rtol=1e-4, atol=1e-4)
    sampled = (r.completion_mask == 1) & (r.forced_mask == 0)
    assert (r.sampling_logprobs[sampled] >= r.logprobs[sampled] - 1e-5).all()


def test_same_seed_same_rollouts_and_training_mode_restored(qwen3_tokenizer, model):
    prompts = chat_prompts(qwen3_tokenizer)
    sampler = RolloutSampler(qwen3_tokenizer, SamplingConfig.qwen3_thinking(max_new_tokens=8))
    model.train()
    try:
        a = sampler.sample(model, prompts, generator=torch.Generator().manual_seed(7))
        assert model.training
    finally:
        model.eval()
    b = sampler.sample(model, prompts, generator=torch.Generator().manual_seed(7))
    c = sampler.sample(model, prompts, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a.completion_ids, b.completion_ids, rtol=0, atol=0)
    torch.testing.assert_close(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # Ordinary tensors: usable in autograd graphs of the training step.
    weight = torch.ones_like(a.logprobs, requires_grad=True)
    (weight * a.logprobs.exp()).sum().backward()
    assert weight.grad is not None and not a.logprobs.is_inference()


def test_rollouts_helpers(qwen3_tokenizer, model):
    prompts = chat_prompts(qwen3_tokenizer, n=2)
    r = RolloutSampler(qwen3_tokenizer, SamplingConfig(max_new_tokens=5)).sample(model, prompts)
    assert len(r) == 2 and isinstance(r.to("cpu"), Rollouts)
    assert r.sequences().shape == (2, r.prompt_ids.shape[1] + 5)
    assert r.attention_mask().sum().item() == sum(map(len, prompts)) + 10
    assert r.texts(qwen3_tokenizer) == qwen3_tokenizer.batch_decode(
        r.completion_ids, skip_special_tokens=True
    )


def test_hooked_models_take_the_hf_forward(qwen3_tokenizer, model):
    calls = []
    handle = model.model.layers[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        RolloutSampler(qwen3_tokenizer, SamplingConfig(max_new_tokens=4)).sample(
            model, chat_prompts(qwen3_tokenizer, n=2)
        )
    finally:
        handle.remove()
    assert len(calls) == 4  # prefill and 3 decode steps all ran through the module


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"temperature": 0.0}, ValueError, "temperature must be > 0 when do_sample=True"),
        ({"temperature": -1.0, "do_sample": False}, ValueError, "temperature must be finite"),
        ({"top_k": -1}, ValueError, "top_k must be >= 0"),
        ({"min_p": 1.0}, ValueError, r"min_p must be in \[0, 1\)"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be >= 1"),
        ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens must be an int"),
        ({"do_sample": "yes"}, TypeError, "do_sample must be a bool"),
    ],
)
def test_sampling_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        SamplingConfig(**kwargs)


def test_sampling_config_presets_and_greedy_at_temperature_zero():
    thinking = SamplingConfig.qwen3_thinking()
    assert (thinking.temperature, thinking.top_p, thinking.top_k) == (0.6, 0.95, 20)
    plain = SamplingConfig.qwen3_non_thinking(max_new_tokens=8)
    assert (plain.temperature, plain.top_p, plain.top_k, plain.max_new_tokens) == (0.7, 0.8, 20, 8)
    SamplingConfig(temperature=0.0, do_sample=False)  # greedy needs no temperature


@pytest.mark.parametrize(
    ("budget", "error", "match"),
    [
        (-1, ValueError, r"thinking_budget\[0\] must be >= 0"),
        ([4, -2, None], ValueError, r"thinking_budget\[1\] must be >= 0"),
        ([4, 4], ValueError, "thinking_budget has 2 entries but the batch has 3 prompts"),
        (2.5, TypeError, "thinking_budget must be None, an int"),
        ([1, 2.5, 3], TypeError, r"thinking_budget\[1\] must be an int or None"),
        (True, TypeError, "thinking_budget must be None, an int"),
        (torch.tensor([1.0, 2.0, 3.0]), TypeError, "must hold integers"),
    ],
)
def test_bad_thinking_budgets(budget, error, match):
    with pytest.raises(error, match=match):
        resolve_thinking_budget(budget, 3)


def test_warp_logits_rejects_zero_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        warp_logits(torch.zeros(1, 4), temperature=0.0)


def test_budgets_resolve_per_row():
    unlimited = torch.iinfo(torch.int64).max
    assert resolve_thinking_budget([3, None, 0], 3).tolist() == [3, unlimited, 0]
    assert resolve_thinking_budget(torch.tensor(5), 2).tolist() == [5, 5]
    assert resolve_thinking_budget(None, 2).tolist() == [unlimited] * 2


def test_bad_prompts_and_stop_texts(qwen3_tokenizer, model):
    sampler = RolloutSampler(qwen3_tokenizer, SamplingConfig(max_new_tokens=2))
    with pytest.raises(ValueError, match="left-padded"):
        sampler.sample(model, torch.tensor([[5, 6, 0]]), attention_mask=torch.tensor([[1, 1, 0]]))
    with pytest.raises(ValueError, match="prompts is empty"):
        sampler.sample(model, [])
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        sampler.sample(model, [[5, 6], []])
    with pytest.raises(ValueError, match="attention_mask is only for a prompts tensor"):
        sampler.sample(model, [[5, 6]], attention_mask=torch.ones(1, 2))
    with pytest.raises(TypeError, match="prompts must be a list of token-id lists"):
        sampler.sample(model, "hello")
    with pytest.raises(ValueError, match=r"thinking_budget\[0\] must be >= 0"):
        sampler.sample(model, [[5, 6]], thinking_budget=-3)
    with pytest.raises(ValueError, match="stop_thinking must contain '</think>' exactly once"):
        RolloutSampler(qwen3_tokenizer, stop_thinking="Time is up.\n\n")
    tokens = ThinkTokens.from_tokenizer(qwen3_tokenizer)
    with pytest.raises(TypeError, match="stop_thinking is text but no tokenizer"):
        RolloutSampler(tokens)
    with pytest.raises(ValueError, match=r"close_empty must tokenize to exactly one </think>"):
        RolloutSampler(tokens, stop_thinking=[5, tokens.think_end_id], close_empty=[5])
    with pytest.raises(ValueError, match="prompt_length must be None or an int >= 0"):
        ThinkingBudgetLogitsProcessor(qwen3_tokenizer, 4, prompt_length=-1)
    with pytest.raises(ValueError, match=r"thinking_budget\[0\] must be >= 0"):
        ThinkingBudgetLogitsProcessor(qwen3_tokenizer, -1)
    assert math.isfinite(sampler.sample(model, [[5, 6]]).logprobs.sum().item())


def _lockstep_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    from lit_qwen3.rollout.placement import global_alive

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        mine = [0, 3][rank]  # rank 0 finished, rank 1 still has three rows generating
        queue.put((rank, global_alive(mine, lockstep=True), global_alive(mine, lockstep=False)))
    finally:
        dist.destroy_process_group()


def test_sharded_ranks_stop_decoding_together():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_lockstep_worker, args=(r, 2, port, queue)) for r in range(2)]
    for w in workers:
        w.start()
    results = sorted(queue.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    # In lockstep both ranks see 3 rows alive, so the finished rank keeps stepping with the other.
    assert results == [(0, 3, 0), (1, 3, 3)]


def test_rollouts_select_trims_padding_and_cat_pads(qwen3_tokenizer, model):
    prompts = chat_prompts(qwen3_tokenizer, n=4)
    sampler = RolloutSampler(qwen3_tokenizer, SamplingConfig(max_new_tokens=6, do_sample=False))
    rollouts = sampler.sample(model, prompts)
    short = min(range(4), key=lambda i: len(prompts[i]))
    one = rollouts.select([short])
    assert one.prompt_ids.shape[1] == len(prompts[short])  # left padding trimmed
    assert one.prompt_ids[0].tolist() == prompts[short]
    both = Rollouts.cat([one, rollouts], qwen3_tokenizer.pad_token_id)
    assert len(both) == 5 and both.prompt_ids.shape[1] == rollouts.prompt_ids.shape[1]
    torch.testing.assert_close(both.sequences()[1:], rollouts.sequences())
    torch.testing.assert_close(both.position_ids()[0, -1], rollouts.position_ids()[short, -1])
    assert (both.tool_mask == 0).all()
