"""Agent tools and multi-turn tool rollouts: parsing, the calculator's limits, environment
tokens kept out of the loss, the thinking budget spanning turns."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen3Config

from lit_qwen3.agent import ToolRolloutSampler, first_turns
from lit_qwen3.chat import split_thinking
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.tokenizer import build_toy_tokenizer
from lit_qwen3.tools import Calculator, ToolCall, build_tool, parse_tool_call


def test_parse_tool_call():
    call = parse_tool_call(
        'x\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2*3"}}\n</tool_call>'
    )
    assert call == ToolCall("calculator", {"expression": "2*3"})
    text = (
        '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1\\"}"}</tool_call>'
    )
    assert parse_tool_call(text) == ToolCall("calculator", {"expression": "1"})
    assert "no <tool_call>" in parse_tool_call("just text")
    assert "invalid JSON" in parse_tool_call("<tool_call>{oops</tool_call>")
    assert "must be" in parse_tool_call('<tool_call>["calculator"]</tool_call>')


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("347*8+12", "2788"),
        ("(2+3)**2 - 7//2", "22"),
        ("-5 % 3", "1"),
        ("9**9**9", "error: exponents must be in [0, 64]"),
        ("10**64 * 10**64", "error: number too large"),
        ("1/0", "error: only integers, + - * // % ** and parentheses are allowed"),
        ("7 // 0", "error: division by zero"),
        (
            "__import__('os').system('id')",
            "error: only integers, + - * // % ** and parentheses are allowed",
        ),
        ("1.5+1", "error: only integers, + - * // % ** and parentheses are allowed"),
        ("2 +", "error: cannot parse '2 +'"),
    ],
)
def test_calculator_is_exact_and_refuses_everything_else(expression, expected):
    assert Calculator()({"expression": expression}) == expected


def test_calculator_bad_arguments_and_registry():
    assert Calculator()({"expr": "1"}) == "error: 'expression' must be a string"
    assert Calculator()({"expression": "1+" * 200}).startswith("error: expression longer")
    assert build_tool("calculator").schema()["function"]["name"] == "calculator"
    with pytest.raises(ValueError, match="known tools: calculator, python"):
        build_tool("shell")


class ScriptedModel(torch.nn.Module):
    """A 'policy' that writes a fixed text per turn (greedy on one-hot logits), so the tool loop
    can be checked exactly: turn 1 calls the calculator, turn 2 answers with what it returned.
    It keeps the sequence it has seen (prefill, then one token per decode step)."""

    def __init__(self, tokenizer, turns: list[str]):
        super().__init__()
        self.tokenizer = tokenizer
        self.turns = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in turns]
        self.marker = tokenizer.convert_tokens_to_ids("<tool_response>")
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = Qwen3Config(vocab_size=len(tokenizer), num_hidden_layers=1)
        self.history: torch.Tensor | None = None

    def forward(self, input_ids, **kwargs):
        if input_ids.shape[1] > 1 or self.history is None:
            self.history = input_ids
        else:
            self.history = torch.cat([self.history, input_ids], dim=1)
        logits = torch.full((input_ids.shape[0], 1, len(self.tokenizer)), -1e4)
        for row, history in enumerate(self.history):
            script = self.turns[min(int((history == self.marker).sum()), len(self.turns) - 1)]
            done = len(history) - _last_header(history, self.tokenizer)
            token = script[done] if done < len(script) else self.tokenizer.eos_token_id
            logits[row, 0, token] = 0.0
        return SimpleNamespace(logits=logits)


def _last_header(ids: torch.Tensor, tokenizer) -> int:
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    ids = ids.tolist()
    for start in range(len(ids) - len(header), -1, -1):
        if ids[start : start + len(header)] == header:
            return start + len(header)
    return len(ids)


def test_tool_turns_run_the_tool_and_mark_environment_tokens():
    tokenizer = build_toy_tokenizer()
    call = '<think>\nbig\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "4321*7"}}\n</tool_call>'
    answer = "<think>\n\n</think>\n\n\\boxed{30247}<|im_end|>"
    model = ScriptedModel(tokenizer, [call, answer])
    sampler = RolloutSampler(
        tokenizer, SamplingConfig(max_new_tokens=80, do_sample=False), fast_path=False
    )
    agent = ToolRolloutSampler(sampler, tokenizer, {"calculator": Calculator()}, max_turns=2)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "4321*7"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    rollouts, traces = agent.sample(model, [ids, ids], allowed_tools=[["calculator"], []])
    # Row 0 called the tool: its response sits between the turns, marked as environment tokens.
    assert traces[0].calls == [
        {
            "name": "calculator",
            "arguments": {"expression": "4321*7"},
            "response": "30247",
            "ok": True,
        }
    ]
    row = rollouts.completion_ids[0][rollouts.completion_mask[0].bool()].tolist()
    text = tokenizer.decode(row, skip_special_tokens=False)
    env = agent.environment_text("30247")
    assert text == call + env + answer
    tool = rollouts.tool_mask[0][rollouts.completion_mask[0].bool()].bool()
    env_len = len(tokenizer(env, add_special_tokens=False)["input_ids"])
    assert int(tool.sum()) == env_len
    assert tokenizer.decode(torch.tensor(row)[tool].tolist(), skip_special_tokens=False) == env
    assert not (rollouts.policy_mask() & rollouts.tool_mask.bool()).any()
    # Row 1 may not call tools: its turn ends at </tool_call> without a response.
    assert traces[1].calls == [] and rollouts.tool_mask[1].sum() == 0
    # The calling turn, whose thinking the format reward credits to the whole rollout.
    first = first_turns(rollouts, tokenizer)
    assert split_thinking(first[0]).thinking == "big"
    assert first[0] == tokenizer.decode(
        tokenizer(call, add_special_tokens=False)["input_ids"], skip_special_tokens=True
    )


def test_unknown_or_broken_calls_answer_with_an_error():
    tokenizer = build_toy_tokenizer()
    agent = ToolRolloutSampler(RolloutSampler(tokenizer), tokenizer, {"calculator": Calculator()})
    record = agent.run_call(
        '<tool_call>{"name": "shell", "arguments": {}}</tool_call>', ["calculator"]
    )
    assert not record["ok"] and "no tool named 'shell'" in record["response"]
    record = agent.run_call("<tool_call>{</tool_call>", ["calculator"])
    assert not record["ok"] and record["response"].startswith("error: invalid JSON")
