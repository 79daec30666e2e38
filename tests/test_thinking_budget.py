"""Thinking budget in the rollout sampler: the stop text forced at exactly the budget, thinking
the model opens itself counted, nested or reopened ``<think>`` never resetting the counter, and
the logits processor agreeing with the sampler's state machine.

Random models almost never write <think> or </think>, so budget tests pre-open the block in the
prompt (template + "<think>\\n") as a thinking-mode turn would.
"""

from __future__ import annotations

import pytest
import torch
from sampler_fixtures import chat_prompts, generate, tiny_qwen3
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.chat import STOP_THINKING, STOP_THINKING_REPORT, ThinkTokens
from lit_qwen3.rollout.generation import (
    RolloutSampler,
    SamplingConfig,
    ThinkingBudgetLogitsProcessor,
)
from lit_qwen3.rollout.sampling import BudgetState, forced_table


@pytest.fixture(scope="module")
def model(qwen3_tokenizer):
    return tiny_qwen3(qwen3_tokenizer)


def test_budget_forces_the_stop_text_at_exactly_the_budget(qwen3_tokenizer, model):
    prompts = chat_prompts(qwen3_tokenizer, suffix="<think>\n")
    config = SamplingConfig(max_new_tokens=32)  # T=1, no truncation
    sampler = RolloutSampler(qwen3_tokenizer, config)
    stop = qwen3_tokenizer.encode(STOP_THINKING, add_special_tokens=False)
    empty = qwen3_tokenizer.encode("\n\n</think>\n\n", add_special_tokens=False)
    assert sampler.stop_ids == stop and sampler.empty_ids == empty
    budgets = [3, 6, 0, None]
    generator = torch.Generator().manual_seed(0)
    r = sampler.sample(model, prompts, thinking_budget=budgets, generator=generator)
    end_id = sampler.think_tokens.think_end_id

    for row, (budget, forced) in enumerate([(3, stop), (6, stop), (0, empty)]):
        ids = r.completion_ids[row].tolist()
        assert end_id not in ids[:budget]  # the model did not close thinking by itself
        assert ids[budget : budget + len(forced)] == forced
        expected_mask = [0] * budget + [1] * len(forced)
        expected_mask += [0] * (r.completion_ids.shape[1] - len(expected_mask))
        assert r.forced_mask[row].tolist() == expected_mask
        assert int(r.thinking_length[row]) == budget
        assert bool(r.budget_forced[row])
        # Forced tokens keep the policy's log-prob and a point-mass sampling log-prob.
        assert (r.sampling_logprobs[row, budget : budget + len(forced)] == 0).all()
        assert (r.logprobs[row, budget : budget + len(forced)] < 0).all()
    assert (
        "the solution based on the thinking directly now.\n</think>\n\n"
        in r.texts(qwen3_tokenizer)[0]
    )

    unlimited = r.completion_ids[3].tolist()
    assert not r.forced_mask[3].any() and not bool(r.budget_forced[3])
    # No budget: every generated token up to </think> (or the end) is thinking.
    eos = set(sampler.think_tokens.eos_token_ids)
    length = int(r.completion_lengths()[3])
    span = unlimited[: unlimited.index(end_id)] if end_id in unlimited else unlimited[:length]
    assert int(r.thinking_length[3]) == len([t for t in span if t not in eos])


def test_budget_counts_thinking_the_model_opens_itself():
    # Pure state machine, hand-driven: <think>=8, </think>=9, forced text [5, 9, 6], budget 2.
    tokens = ThinkTokens(think_start_id=8, think_end_id=9, eos_token_ids=(1,), pad_token_id=0)
    table = forced_table([5, 9, 6], [9, 6], pad=0)
    prompt = torch.tensor([[3, 4], [3, 4]])
    state = BudgetState(
        prompt, torch.ones_like(prompt), torch.tensor([2, 1]), tokens, table, torch.tensor([3, 2])
    )
    script = [[7, 7], [8, 8], [7, 7], [7, 9], [7, 7], [7, 7], [7, 7], [7, 7]]
    emitted, forced = [], []
    for step in script:
        forcing, forced_ids = state.next_forced()
        out = torch.where(forcing, forced_ids, torch.tensor(step))
        emitted.append(out.tolist())
        forced.append(forcing.tolist())
        state.advance(out, forcing, torch.tensor([True, True]))
    # Row 0: 7 (outside), <think>, 7, 7 (budget 2 reached), then 5 </think> 6 forced, then free.
    # Row 1 (budget 1): 7, <think>, 7, then its own </think> at the next step is replaced by the
    # forced text because the budget was reached first: 5 </think> 6, then free.
    assert [e[0] for e in emitted] == [7, 8, 7, 7, 5, 9, 6, 7]
    assert [f[0] for f in forced] == [False] * 4 + [True] * 3 + [False]
    assert [e[1] for e in emitted] == [7, 8, 7, 5, 9, 6, 7, 7]
    assert [f[1] for f in forced] == [False] * 3 + [True] * 3 + [False] * 2
    assert state.count.tolist() == [2, 1] and state.forced_any.tolist() == [True, True]


def _drive_state_machine(script: list[list[int]], budgets: list[int]) -> list[list[int]]:
    """Emit ``script`` through BudgetState (<think>=8, </think>=9, stop text [5, 9, 6])."""
    tokens = ThinkTokens(think_start_id=8, think_end_id=9, eos_token_ids=(1,), pad_token_id=0)
    prompt = torch.full((len(budgets), 1), 3)
    state = BudgetState(
        prompt,
        torch.ones_like(prompt),
        torch.tensor(budgets),
        tokens,
        forced_table([5, 9, 6], [9, 6], pad=0),
        torch.tensor([3, 2]),
    )
    emitted = []
    for step in script:
        forcing, forced_ids = state.next_forced()
        out = torch.where(forcing, forced_ids, torch.tensor(step))
        emitted.append(out.tolist())
        state.advance(out, forcing, torch.ones(len(budgets), dtype=torch.bool))
    return [list(row) for row in zip(*emitted, strict=True)]


def _drive_logits_processor(script: list[list[int]], budgets: list[int]) -> list[list[int]]:
    """The same script through ThinkingBudgetLogitsProcessor, one row at a time."""
    tokens = ThinkTokens(think_start_id=8, think_end_id=9, eos_token_ids=(1,), pad_token_id=0)
    rows = []
    for row, budget in enumerate(budgets):
        processor = ThinkingBudgetLogitsProcessor(
            tokens, budget, prompt_length=1, stop_thinking=[5, 9, 6], close_empty=[9, 6]
        )
        ids = [3]
        for step in script:
            scores = processor(torch.tensor([ids]), torch.zeros(1, 10))[0]
            finite = scores.isfinite().nonzero().flatten().tolist()
            ids.append(finite[0] if len(finite) == 1 else step[row])
        rows.append(ids[1:])
    return rows


def test_nested_or_reopened_think_never_resets_the_budget():
    # Budget 2. Row 0 nests a second <think> inside the open block: it is a thinking token, so
    # the count reaches 2 at once. Row 1 closes and reopens: the count carries over, and the
    # reopened block is forced shut after its first token. Row 2 reopens after a forced stop:
    # shut again at once.
    script = [
        [8, 8, 8],
        [7, 7, 7],
        [8, 9, 7],
        [7, 8, 7],
        [7, 7, 7],
        [7, 7, 7],
        [7, 7, 8],
        [7, 7, 7],
    ]
    script += [[7, 7, 7]] * 4
    ours = _drive_state_machine(script, [2, 2, 2])
    assert ours[0][:6] == [8, 7, 8, 5, 9, 6]
    assert ours[1][:7] == [8, 7, 9, 8, 7, 5, 9]
    assert ours[2][:9] == [8, 7, 7, 5, 9, 6, 8, 5, 9]
    assert ours == _drive_logits_processor(script, [2, 2, 2])


def test_logits_processor_agrees_with_the_state_machine_on_random_scripts():
    rng = torch.Generator().manual_seed(0)
    for _ in range(30):
        budgets = torch.randint(0, 4, (3,), generator=rng).tolist()
        # tokens 7 (text), 8 (<think>), 9 (</think>), weighted toward plain text
        draws = torch.multinomial(torch.tensor([6.0, 2.0, 1.0]), 3 * 14, True, generator=rng)
        script = (draws + 7).view(14, 3).tolist()
        assert _drive_state_machine(script, budgets) == _drive_logits_processor(script, budgets)


def test_rows_that_already_closed_thinking_are_untouched(qwen3_tokenizer, model):
    prompts = chat_prompts(qwen3_tokenizer, enable_thinking=False)  # ends with an empty block
    assert qwen3_tokenizer.decode(prompts[0]).endswith("<think>\n\n</think>\n\n")
    sampler = RolloutSampler(qwen3_tokenizer, SamplingConfig(max_new_tokens=12, do_sample=False))
    free = sampler.sample(model, prompts)
    for budget in (0, 2):
        capped = sampler.sample(model, prompts, thinking_budget=budget)
        torch.testing.assert_close(capped.completion_ids, free.completion_ids, rtol=0, atol=0)
        assert not capped.forced_mask.any() and not capped.budget_forced.any()
        assert (capped.thinking_length == 0).all()


def test_logits_processor_forces_the_same_text_at_the_same_place(qwen3_tokenizer, model):
    prompts = chat_prompts(qwen3_tokenizer, suffix="<think>\n")
    budgets = [2, 5, 0, None]
    stop = "\n\nTime is up.\n</think>\n\n"  # short, to keep the test fast
    config = SamplingConfig(max_new_tokens=14, do_sample=False)
    sampler = RolloutSampler(qwen3_tokenizer, config, stop_thinking=stop)
    ours = sampler.sample(model, prompts, thinking_budget=budgets)
    width = max(len(p) for p in prompts)
    processor = ThinkingBudgetLogitsProcessor(
        qwen3_tokenizer, budgets, prompt_length=width, stop_thinking=stop
    )
    reference = generate(
        model,
        qwen3_tokenizer,
        prompts,
        eos=sampler.think_tokens.eos_token_ids,
        max_new_tokens=14,
        logits_processor=[processor],
    )
    torch.testing.assert_close(ours.completion_ids, reference, rtol=0, atol=0)
    assert ours.budget_forced.tolist() == [True, True, True, False]
    assert ours.forced_mask.sum(-1).tolist() == [len(sampler.stop_ids)] * 2 + [3, 0]


def test_logits_processor_rule_on_hand_written_ids():
    tokens = ThinkTokens(think_start_id=8, think_end_id=9, eos_token_ids=(1,), pad_token_id=0)
    processor = ThinkingBudgetLogitsProcessor(
        tokens, 2, stop_thinking=[5, 9, 6], close_empty=[9, 6]
    )

    def forced(ids: list[int]) -> int | None:
        scores = processor(torch.tensor([ids]), torch.zeros(1, 10))
        finite = torch.isfinite(scores[0]).nonzero().flatten().tolist()
        return None if len(finite) == 10 else finite[0]

    assert forced([3, 8, 7]) is None  # 1 thinking token < budget 2
    assert forced([3, 8, 7, 7]) == 5  # budget reached: first forced token
    assert forced([3, 8, 7, 7, 5]) == 9  # then the rest, in order
    assert forced([3, 8, 7, 7, 5, 9]) == 6  # the text after </think> too
    assert forced([3, 8, 7, 7, 5, 9, 6]) is None  # done: the answer is free
    assert forced([3, 8, 9, 7, 7, 7]) is None  # the model closed thinking itself
    assert forced([3, 7, 7, 7]) is None  # no thinking block at all
    zero = ThinkingBudgetLogitsProcessor(tokens, [0], stop_thinking=[5, 9, 6], close_empty=[9, 6])
    assert torch.isfinite(zero(torch.tensor([[3, 8]]), torch.zeros(1, 10))[0]).nonzero().item() == 9
    # With the prompt width, thinking the prompt holds is not counted (as in the sampler).
    prompt_aware = ThinkingBudgetLogitsProcessor(
        tokens, 2, prompt_length=4, stop_thinking=[5, 9, 6], close_empty=[9, 6]
    )
    assert prompt_aware(torch.tensor([[8, 7, 7, 7, 7]]), torch.zeros(1, 10)).isfinite().all()
    assert prompt_aware(torch.tensor([[8, 7, 7, 7, 7, 7]]), torch.zeros(1, 10))[0, 5] == 0


def test_report_stop_text_is_accepted(qwen3_tokenizer):
    sampler = RolloutSampler(qwen3_tokenizer, stop_thinking=STOP_THINKING_REPORT)
    end = sampler.stop_ids.index(sampler.think_tokens.think_end_id)
    assert qwen3_tokenizer.decode(sampler.stop_ids[end + 1 :]) == ".\n\n"
