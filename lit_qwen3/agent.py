"""Multi-turn rollouts with tools: sample until ``</tool_call>``, run the tool, append its
``<tool_response>`` turn, sample on, up to ``max_turns`` calls.

The result is one ``Rollouts`` per prompt whose completion holds every turn: the policy's
tokens, and the environment's (the end of the assistant turn, the tool response, the next
assistant header) marked in ``tool_mask`` so that no loss trains on them. The thinking budget
spans the whole reply: each turn samples with what the earlier turns left of it, so a policy
cannot win fresh budget by calling a tool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lit_qwen3.chat import IM_END, IM_START
from lit_qwen3.rollout.generation import Rollouts, RolloutSampler, left_pad
from lit_qwen3.tools import Tool, ToolCall, parse_tool_call

__all__ = ["ToolRolloutSampler", "ToolTrace", "first_turns", "turn_texts"]

CALL_END = "</tool_call>"


@dataclass
class ToolTrace:
    """The calls one rollout made: ``[{"name", "arguments", "response", "ok"}]``."""

    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampling_logprobs: list[float] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)
    tool: list[int] = field(default_factory=list)
    thinking: int = 0
    budget_forced: bool = False
    truncated: bool = False

    def extend(self, ids, logprobs, sampling_logprobs, forced, tool: int) -> None:
        self.ids += ids
        self.logprobs += logprobs
        self.sampling_logprobs += sampling_logprobs
        self.forced += forced
        self.tool += [tool] * len(ids)


class ToolRolloutSampler:
    """Wraps a :class:`RolloutSampler`: same sampling, plus tool calls between turns.

    Args:
        sampler: the single-turn sampler (its ``max_new_tokens`` applies per turn).
        tokenizer: the policy's tokenizer (it needs a ``</tool_call>`` token).
        tools: name -> :class:`~lit_qwen3.tools.Tool`.
        max_turns: most tool calls per rollout; after the last one the reply must finish.
    """

    def __init__(
        self,
        sampler: RolloutSampler,
        tokenizer: Any,
        tools: Mapping[str, Tool],
        *,
        max_turns: int = 2,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        call_end = tokenizer.convert_tokens_to_ids(CALL_END)
        if call_end is None or call_end == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {CALL_END!r} token: tool calls need one")
        self.sampler, self.tokenizer, self.tools = sampler, tokenizer, dict(tools)
        self.max_turns, self.call_end_id = max_turns, call_end

    def environment_text(self, response: str, prefill: str = "") -> str:
        """What follows a call: the turn's end, the tool turn (as the chat template writes a
        ``tool`` message) and the next assistant header (with the mode's prefill)."""
        return (
            f"{IM_END}\n{IM_START}user\n<tool_response>\n{response}\n</tool_response>{IM_END}\n"
            f"{IM_START}assistant\n{prefill}"
        )

    def run_call(self, text: str, allowed: Sequence[str]) -> dict[str, Any]:
        """Parse the call ``text`` ends with and run it if allowed; never raises."""
        call = parse_tool_call(text)
        if not isinstance(call, ToolCall):
            return {"name": None, "arguments": None, "response": f"error: {call}", "ok": False}
        if call.name not in allowed or call.name not in self.tools:
            response = f"error: no tool named {call.name!r}; available: {sorted(allowed)}"
            return {
                "name": call.name,
                "arguments": call.arguments,
                "response": response,
                "ok": False,
            }
        response = self.tools[call.name](call.arguments)
        ok = not response.startswith("error")
        return {"name": call.name, "arguments": call.arguments, "response": response, "ok": ok}

    def sample(
        self,
        model: torch.nn.Module,
        prompts: Sequence[Sequence[int]],
        *,
        allowed_tools: Sequence[Sequence[str]],
        prefills: Sequence[str] | None = None,
        thinking_budget: Sequence[int | None] | int | None = None,
        generator: torch.Generator | None = None,
        progress: Any = None,
    ) -> tuple[Rollouts, list[ToolTrace]]:
        """Sample one multi-turn reply per prompt; rows without tools are single-turn."""
        n = len(prompts)
        if len(allowed_tools) != n:
            raise ValueError(f"allowed_tools has {len(allowed_tools)} entries for {n} prompts")
        budgets = _per_row(thinking_budget, n)
        prefills = list(prefills) if prefills is not None else [""] * n
        rows, traces = [_Row() for _ in range(n)], [ToolTrace() for _ in range(n)]
        context = [list(p) for p in prompts]
        active = list(range(n))
        for turn in range(self.max_turns + 1):
            can_call = turn < self.max_turns
            stops = [self.call_end_id] if can_call else []
            left = [
                None if budgets[i] is None else max(budgets[i] - rows[i].thinking, 0)
                for i in active
            ]
            rollouts = self.sampler.sample(
                model,
                [context[i] for i in active],
                thinking_budget=left,
                generator=generator,
                stop_token_ids=stops,
                progress=progress,
            )
            calling = []
            for j, i in enumerate(active):
                length = int(rollouts.completion_mask[j].sum())
                ids = rollouts.completion_ids[j, :length].tolist()
                rows[i].extend(
                    ids,
                    rollouts.logprobs[j, :length].tolist(),
                    rollouts.sampling_logprobs[j, :length].tolist(),
                    rollouts.forced_mask[j, :length].tolist(),
                    tool=0,
                )
                rows[i].thinking += int(rollouts.thinking_length[j])
                rows[i].budget_forced |= bool(rollouts.budget_forced[j])
                rows[i].truncated = bool(rollouts.truncated[j])
                if can_call and ids and ids[-1] == self.call_end_id and allowed_tools[i]:
                    text = self.tokenizer.decode(ids, skip_special_tokens=False)
                    record = self.run_call(text, allowed_tools[i])
                    traces[i].calls.append(record)
                    env = self.tokenizer(
                        self.environment_text(record["response"], prefills[i]),
                        add_special_tokens=False,
                    )["input_ids"]
                    rows[i].extend(env, [0.0] * len(env), [0.0] * len(env), [0] * len(env), 1)
                    context[i] = context[i] + ids + env
                    calling.append(i)
            active = calling
            if not active:
                break
        return self._collate(prompts, rows), traces

    def _collate(self, prompts: Sequence[Sequence[int]], rows: list[_Row]) -> Rollouts:
        pad = self.sampler.think_tokens.pad_token_id
        prompt_ids, prompt_mask = left_pad(prompts, pad)
        length = max(1, max(len(r.ids) for r in rows))

        def padded(values: list[list], fill, dtype) -> torch.Tensor:
            return torch.tensor([v + [fill] * (length - len(v)) for v in values], dtype=dtype)

        return Rollouts(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=padded([r.ids for r in rows], pad, torch.long),
            completion_mask=padded([[1] * len(r.ids) for r in rows], 0, torch.long),
            logprobs=padded([r.logprobs for r in rows], 0.0, torch.float32),
            sampling_logprobs=padded([r.sampling_logprobs for r in rows], 0.0, torch.float32),
            forced_mask=padded([r.forced for r in rows], 0, torch.long),
            thinking_length=torch.tensor([r.thinking for r in rows]),
            budget_forced=torch.tensor([r.budget_forced for r in rows]),
            truncated=torch.tensor([r.truncated for r in rows]),
            tool_mask=padded([r.tool for r in rows], 0, torch.long),
        )


def _per_row(budget: Sequence[int | None] | int | None, n: int) -> list[int | None]:
    if budget is None or isinstance(budget, int):
        return [budget] * n
    budgets = list(budget)
    if len(budgets) != n:
        raise ValueError(f"thinking_budget has {len(budgets)} entries for {n} prompts")
    return budgets


def turn_texts(rollouts: Rollouts, tokenizer: Any, turn: str = "last") -> list[str]:
    """Each reply's ``"first"`` assistant turn (everything before the first environment token:
    the turn that called a tool) or ``"last"`` (everything after the last environment token),
    as text; the whole reply when no tool answered."""
    if turn not in ("first", "last"):
        raise ValueError(f"turn must be 'first' or 'last', got {turn!r}")
    texts = []
    for ids, mask, tool in zip(
        rollouts.completion_ids, rollouts.completion_mask, rollouts.tool_mask, strict=True
    ):
        keep = mask.bool().clone()
        env = tool.nonzero()
        if len(env) and turn == "first":
            keep[int(env[0]) :] = False
        elif len(env):
            keep[: int(env[-1]) + 1] = False
        texts.append(tokenizer.decode(ids[keep].tolist(), skip_special_tokens=True))
    return texts


def first_turns(rollouts: Rollouts, tokenizer: Any) -> list[str]:
    """Each reply's first assistant turn as text (see :func:`turn_texts`)."""
    return turn_texts(rollouts, tokenizer, "first")
