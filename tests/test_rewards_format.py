"""Format and flag following: one well-formed think block that matches the requested mode."""

from __future__ import annotations

import pytest

from lit_qwen3.chat import EMPTY_THINKING, STOP_THINKING, STOP_THINKING_REPORT
from lit_qwen3.rewards import Sample, build_reward
from lit_qwen3.rewards.format import FormatReward, format_violation

THINK = [{"role": "user", "content": "What is 2+2? /think"}]
NO_THINK = [{"role": "user", "content": "What is 2+2? /no_think"}]
NO_FLAG = [{"role": "user", "content": "What is 2+2?"}]
REPLY = "<think>\n2 plus 2 is 4.\n</think>\n\n4"
EMPTY_REPLY = f"{EMPTY_THINKING}4"


def violation(prompt, completion, **kwargs) -> str | None:
    sample = Sample.from_completion(prompt, completion, **kwargs)
    result = FormatReward().score(sample)
    assert result.score == (1.0 if "reason" not in result.info else 0.0)
    return result.info.get("reason")


@pytest.mark.parametrize(
    ("prompt", "completion", "expected"),
    [
        (THINK, REPLY, None),
        (NO_FLAG, REPLY, None),  # thinking is the default
        (NO_THINK, EMPTY_REPLY, None),
        (NO_THINK, REPLY, "nonempty_thinking_in_no_think"),
        (THINK, EMPTY_REPLY, "empty_thinking_in_think"),
        (NO_FLAG, EMPTY_REPLY, "empty_thinking_in_think"),
        (THINK, "4", "missing_think"),
        (NO_THINK, "4", "missing_think"),  # no_think still keeps the (empty) block
        (THINK, "<think>\n2 plus 2 is 4 and then I ran out of tokens", "malformed_think"),
        (THINK, "<think>\na\n</think>\n\n4<think>\nb\n</think>\n\n4", "malformed_think"),
        (THINK, "Sure! <think>\na\n</think>\n\n4", "malformed_think"),
        (THINK, "<think>\n2 plus 2 is 4.\n</think>\n\n", "empty_answer"),
    ],
)
def test_single_turn_format_and_flags(prompt, completion, expected):
    assert violation(prompt, completion) == expected


def test_multi_turn_last_flag_wins():
    dialog = [
        {"role": "user", "content": "Hi /no_think"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Now a hard one: 17*23? /think"},
    ]
    assert violation(dialog, REPLY) is None
    assert violation(dialog, EMPTY_REPLY) == "empty_thinking_in_think"
    flipped = [dict(m) for m in dialog]
    flipped[0]["content"], flipped[2]["content"] = "Hi /think", "17*23? /no_think"
    assert violation(flipped, EMPTY_REPLY) is None
    assert violation(flipped, REPLY) == "nonempty_thinking_in_no_think"
    # a system-message flag counts, and a later user flag overrides it
    system = [{"role": "system", "content": "/no_think"}, {"role": "user", "content": "2+2?"}]
    assert violation(system, EMPTY_REPLY) is None
    assert violation([*system[:1], {"role": "user", "content": "2+2? /think"}], REPLY) is None


def test_enable_thinking_false_overrides_a_think_flag():
    assert violation(THINK, EMPTY_REPLY, enable_thinking=False) is None
    assert violation(THINK, REPLY, enable_thinking=False) == "nonempty_thinking_in_no_think"


@pytest.mark.parametrize("stop", [STOP_THINKING, STOP_THINKING_REPORT])
def test_budget_stopped_thinking_is_well_formed(stop):
    completion = f"<think>\nLet me add 2 and 2, carefully{stop}The answer is 4."
    assert violation(THINK, completion) is None


def test_require_answer_option_and_registry():
    sample = Sample.from_completion(THINK, "<think>\nhmm\n</think>\n\n")
    assert format_violation(sample, require_answer=False) is None
    assert build_reward("format", require_answer=False).score(sample).score == 1.0
    assert build_reward("format").score(sample).info == {
        "thinking_mode": True,
        "reason": "empty_answer",
    }


def test_arithmetic_reward_scores_the_boxed_answer_after_thinking():
    reward = build_reward("arithmetic")
    prompt = [{"role": "user", "content": "347+589"}]

    def score(completion: str) -> float:
        sample = Sample.from_completion(prompt, completion, metadata={"reference": "936"})
        return reward.score(sample).score

    assert score("<think>\n7+9+0=16 6\n</think>\n\n\\boxed{936}") == 1.0
    assert score("<think>\n\\boxed{936}\n</think>\n\n\\boxed{935}") == 0.0  # thinking never counts
    assert score("<think>\n\n</think>\n\n936") == 0.0  # no box
    with pytest.raises(ValueError, match="reference"):
        reward.check(Sample.from_completion(prompt, "\\boxed{1}"))


CALL = [{"name": "calculator", "arguments": {"expression": "2+2"}, "response": "4", "ok": True}]


@pytest.mark.parametrize(
    ("prompt", "call_thinking", "expected"),
    [
        # Thinking mode: the calling turn reasoned, the turn after the tool's output keeps the
        # empty block the template renders there: the rollout follows the mode.
        (THINK, "\nI need the calculator.\n", None),
        (THINK, "", "empty_thinking_in_think"),  # nobody thought
        (THINK, None, "empty_thinking_in_think"),
        # Non-thinking mode: reasoning before the call breaks the flag.
        (NO_THINK, "\nI need the calculator.\n", "nonempty_thinking_in_no_think"),
        (NO_THINK, "", None),
    ],
)
def test_a_tool_rollout_is_judged_on_its_calling_turn_too(prompt, call_thinking, expected):
    metadata = {"tool_calls": CALL, "call_thinking": call_thinking}
    assert violation(prompt, EMPTY_REPLY, metadata=metadata) == expected


def test_without_tool_calls_the_call_thinking_is_ignored():
    metadata = {"call_thinking": "\nforged\n"}  # no call was made: nothing to credit
    assert violation(THINK, EMPTY_REPLY, metadata=metadata) == "empty_thinking_in_think"
