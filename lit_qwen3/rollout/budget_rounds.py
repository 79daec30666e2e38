"""The thinking budget for engines that generate whole continuations (vLLM): rounds of
generation, each cut where the budget runs out, the stop-thinking text appended, then continued.

The built-in sampler applies the budget token by token (:class:`~lit_qwen3.rollout.sampling.BudgetState`).
An engine like vLLM returns a whole continuation per call, so the same rule is applied between
calls: each row is a :class:`BudgetRow`; :func:`round_max_tokens` says how many tokens to ask for
(inside an open block: no more than the budget has left, so the engine stops where forcing starts);
:func:`absorb` takes what the engine generated, keeps it up to the first point where the
built-in sampler would have started forcing (tokens after it are discarded), and appends the
forced text (marked forced: no gradient); rows that are neither finished nor out of tokens
continue in the next round from prompt + completion so far. Usually two rounds: the thinking,
then the answer after the forced ``</think>``.

Same semantics as the built-in sampler, tested exactly against ``BudgetState``: the count covers
generated thinking tokens of every block (a reopened block continues it), end-of-sequence and
stop tokens end a row and are kept, forced tokens count towards ``max_new_tokens``, budget 0
closes the block with the empty form, ``thinking_length`` never exceeds the budget.

Pure Python on token ids (tensors only for the final :class:`Rollouts`): no model, no engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lit_qwen3.rollout.generation import Rollouts, left_pad
from lit_qwen3.rollout.sampling import UNLIMITED, mix_seed

__all__ = [
    "BudgetRow",
    "BudgetRules",
    "absorb",
    "generate_in_rounds",
    "open_rows",
    "round_max_tokens",
    "rows_to_rollouts",
    "start_row",
]


@dataclass
class BudgetRow:
    """One row's completion so far and its budget state (``BudgetState``'s fields, per row)."""

    prompt: list[int]
    budget: int
    """Thinking-token budget; ``UNLIMITED`` for none."""
    thinking: bool
    """Inside an open ``<think>`` block (and not forcing)."""
    count: int = 0
    """Generated thinking tokens so far, over every block."""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    """The engine's log-prob of each generated token; 0.0 for forced ones."""
    forced: list[bool] = field(default_factory=list)
    forced_any: bool = False
    done: bool = False
    """Ended by an end-of-sequence or stop token."""

    def due(self) -> bool:
        """Whether the built-in sampler would force the next token."""
        return self.thinking and self.count >= self.budget

    def context(self) -> list[int]:
        """What the engine continues from: the prompt and the completion so far."""
        return self.prompt + self.tokens


@dataclass(frozen=True)
class BudgetRules:
    """What the rule needs besides each row's state (the sampler's settings and tokens)."""

    max_new_tokens: int
    eos_ids: tuple[int, ...]
    """Tokens that end a row (kept): end-of-sequence and stop tokens; empty with ignore_eos."""
    think_start: int
    think_end: int
    stop_ids: tuple[int, ...]
    """Forced when a budget > 0 runs out (ends with ``</think>`` and what follows it)."""
    empty_ids: tuple[int, ...]
    """Forced at budget 0 (the empty block's closing)."""


#: ``generate(contexts, max_tokens, seeds)`` -> per context ``(token ids, log-probs, ended on a
#: stop condition)``: one engine call on several rows.
Generate = Callable[
    [list[list[int]], list[int], list[int]], list[tuple[list[int], list[float], bool]]
]


def start_row(
    prompt: Sequence[int], budget: int | None, think_start: int, think_end: int
) -> BudgetRow:
    """A row before generation: thinking when the prompt's last ``<think>`` is after its last
    ``</think>`` (a template that pre-opens the block), as ``BudgetState`` decides."""
    prompt = [int(t) for t in prompt]

    def last(token: int) -> int:
        return max((i for i, t in enumerate(prompt) if t == token), default=-1)

    budget = UNLIMITED if budget is None else int(budget)
    return BudgetRow(prompt, budget, last(think_start) > last(think_end))


def open_rows(rows: Sequence[BudgetRow], max_new_tokens: int) -> list[int]:
    """Indices of rows that still generate: not finished and with tokens left."""
    return [i for i, row in enumerate(rows) if not row.done and len(row.tokens) < max_new_tokens]


def round_max_tokens(row: BudgetRow, max_new_tokens: int) -> int:
    """Tokens to ask the engine for in this round: what is left, and inside an open block no
    more than the budget has left (the engine then stops exactly where forcing starts)."""
    left = max_new_tokens - len(row.tokens)
    if row.thinking and row.budget < UNLIMITED:
        left = min(left, row.budget - row.count)
    return left


def absorb(
    row: BudgetRow,
    tokens: Sequence[int],
    logprobs: Sequence[float] | None,
    rules: BudgetRules,
    finished: bool = False,
) -> int:
    """Append one engine call's ``tokens`` to ``row`` under the budget rule; returns how many of
    them were kept (the rest came after the point where forcing starts and are discarded).

    Then, when forcing is due, appends the forced text (``rules.stop_ids``, or ``empty_ids`` at
    budget 0) as far as ``max_new_tokens`` allows. ``finished``: the engine says the continuation
    ended on a stop condition (an engine that leaves its stop token out of the output). Call it
    once before the first round too (with no tokens): a block the prompt opened at budget 0 is
    closed before anything is generated.
    """
    max_new_tokens, eos = rules.max_new_tokens, set(rules.eos_ids)
    kept = 0
    for position, token in enumerate(tokens):
        if row.done or row.due() or len(row.tokens) >= max_new_tokens:
            break
        token = int(token)
        row.tokens.append(token)
        row.logprobs.append(0.0 if logprobs is None else float(logprobs[position]))
        row.forced.append(False)
        kept += 1
        if token in eos:
            row.done = True
            break
        closed = token == rules.think_end
        opened = token == rules.think_start and not row.thinking
        if row.thinking and not closed:
            row.count += 1
        row.thinking = (row.thinking and not closed) or opened
    if finished and kept == len(tokens) and not row.due():
        row.done = True
    _force(row, rules, eos)
    return kept


def _force(row: BudgetRow, rules: BudgetRules, eos: set[int]) -> None:
    """Append the forced text when the budget ran out (the block is then closed)."""
    if row.done or not row.due():
        return
    room = rules.max_new_tokens - len(row.tokens)
    if room <= 0:
        return  # the built-in sampler's loop ends here too: nothing forced
    row.thinking = False
    text = rules.empty_ids if row.budget == 0 else rules.stop_ids
    for token in list(text)[:room]:
        row.tokens.append(int(token))
        row.logprobs.append(0.0)
        row.forced.append(True)
        row.forced_any = True
        if int(token) in eos:
            row.done = True
            break


def generate_in_rounds(
    prompts: Sequence[Sequence[int]],
    budgets: Sequence[int],
    seeds: Sequence[int],
    generate: Generate,
    rules: BudgetRules,
    pad_token_id: int,
) -> Rollouts:
    """Sample every prompt to the end under the budget rule, in rounds of ``generate`` calls on
    the rows still open; row ``i``'s round ``r`` uses seed ``mix_seed(seeds[i], r)``."""
    rows = [
        start_row(p, b, rules.think_start, rules.think_end)
        for p, b in zip(prompts, budgets, strict=True)
    ]
    for row in rows:  # a block the prompt opened at budget 0 closes before generating
        absorb(row, [], None, rules)
    for round_index in range(rules.max_new_tokens):  # each round adds a token to every open row
        active = open_rows(rows, rules.max_new_tokens)
        if not active:
            break
        outputs = generate(
            [rows[i].context() for i in active],
            [round_max_tokens(rows[i], rules.max_new_tokens) for i in active],
            [mix_seed(seeds[i], round_index) for i in active],
        )
        for i, (tokens, logprobs, finished) in zip(active, outputs, strict=True):
            absorb(rows[i], tokens, logprobs, rules, finished)
    return rows_to_rollouts(rows, pad_token_id)


def rows_to_rollouts(rows: Sequence[BudgetRow], pad_token_id: int) -> Rollouts:
    """The rows as :class:`Rollouts` (prompts left-padded, completions right-padded). Both
    log-prob fields hold the engine's; forced tokens have 0."""
    prompt_ids, prompt_mask = left_pad([row.prompt for row in rows], pad_token_id)
    width = max((len(row.tokens) for row in rows), default=0)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_token_id, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    logprobs = torch.zeros(shape, dtype=torch.float32)
    forced = torch.zeros(shape, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.tokens)
        ids[i, :n] = torch.tensor(row.tokens, dtype=torch.long)
        mask[i, :n] = 1
        logprobs[i, :n] = torch.tensor(row.logprobs, dtype=torch.float32)
        forced[i, :n] = torch.tensor(row.forced, dtype=torch.long)
    return Rollouts(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=ids,
        completion_mask=mask,
        logprobs=logprobs,
        sampling_logprobs=logprobs.clone(),
        forced_mask=forced,
        thinking_length=torch.tensor([row.count for row in rows], dtype=torch.long),
        budget_forced=torch.tensor([row.forced_any for row in rows], dtype=torch.bool),
        truncated=torch.tensor([not row.done for row in rows], dtype=torch.bool),
    )
