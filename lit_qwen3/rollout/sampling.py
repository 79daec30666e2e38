"""Pure sampling rules of the rollout sampler: logits warpers, the draw, the thinking budget.

No model and no Lightning here, only tensors, so every rule is tested exactly.

Warpers follow Hugging Face's order: temperature, then top-k, then top-p, then min-p, each on
the distribution the previous one left (renormalised). Besides the token, every draw returns two
log-probabilities: under the *raw policy* ``log_softmax(logits / T)`` and under the *truncated*
distribution actually sampled from. They differ whenever top-k/top-p/min-p cut the tail; RL's
ratios use the second (an importance ratio built from the first is biased for such rollouts,
huggingface/trl#6789), and the trainer re-scores with the same support
(:mod:`lit_qwen3.ops.truncation`: ties at a boundary are kept, as Hugging Face's top-k does).

Speed notes (small vocabularies on CPU are the test and toy setting, big ones on GPU the real
one): the support is a threshold per row; top-k finds it from the ``k`` largest values, so top-p
after top-k sorts ``k`` values instead of the vocabulary; a full sort happens only for top-p
without top-k; the draw itself is an inverse-CDF search over the vocabulary with one uniform
number per row.

The thinking budget is a per-row state machine (``BudgetState``, used by the sampler) and the
same rule without state (``ThinkingBudgetLogitsProcessor``, for ``model.generate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor

from lit_qwen3.chat import EMPTY_THINKING, STOP_THINKING, THINK_END, THINK_START, ThinkTokens
from lit_qwen3.ops.truncation import kept_threshold

__all__ = [
    "CLOSE_EMPTY_THINKING",
    "BudgetRows",
    "BudgetRules",
    "BudgetState",
    "budget_advance",
    "budget_next_forced",
    "counter_uniform",
    "mix_seed",
    "SampledTokens",
    "ThinkingBudgetLogitsProcessor",
    "encode_stop_text",
    "forced_table",
    "inverse_cdf_sample",
    "resolve_thinking_budget",
    "sample_next_tokens",
    "splitmix64",
    "warp_logits",
]

#: What the budget forces at budget 0: the template's empty block without its ``<think>``.
CLOSE_EMPTY_THINKING = EMPTY_THINKING[len(THINK_START) :]
#: Budget of rows without one (a count never reaches it).
UNLIMITED = torch.iinfo(torch.int64).max


@dataclass
class SampledTokens:
    """One step's draw: token ids ``(B,)`` and their two log-probabilities ``(B,)``."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    """log-prob under the raw policy ``log_softmax(logits / temperature)``."""
    sampling_logprobs: torch.Tensor
    """log-prob under the truncated, renormalised distribution the token was drawn from."""


# ----------------------------------------------------------------------------- row seeds
# Per-row random streams that do not depend on which batch, rank or position samples a row:
# the uniform of row seed s at step t is a hash of (s, t) (counter-based, as Philox or
# splitmix64 streams are), so one process with 2N queries and two ranks with N each draw the
# same tokens. splitmix64 (Steele et al. 2014) on int64 tensors, with wrap-around arithmetic.
_MASK64 = (1 << 64) - 1


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA, _MIX1, _MIX2 = (
    _signed64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function of state ``x + gamma``, elementwise on int64 tensors."""
    z = x.long() + _GAMMA
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def counter_uniform(seeds: torch.Tensor, counter: int) -> torch.Tensor:
    """(B, 1) float32 uniforms in [0, 1): the ``counter``-th draw of each row seed's stream."""
    bits = splitmix64(splitmix64(seeds) + counter)
    return (_shift_right(bits, 40).float() * 2.0**-24)[:, None]


def mix_seed(*values: int) -> int:
    """One int64 seed from several ints (run seed, step, query index...), order-sensitive:
    :func:`splitmix64` folded over them, on Python ints (a call per rollout row)."""
    state = 0
    for value in values:
        z = ((state ^ int(value)) + _GAMMA) & _MASK64
        z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
        z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
        state = z ^ (z >> 31)
    return _signed64(state)


def inverse_cdf_sample(
    probs: torch.Tensor,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one index per row of ``probs`` (B, N), unnormalised rows allowed.

    One uniform number per row and a binary search over the cumulative sum: on CPU this is
    several times cheaper than ``torch.multinomial`` or the exponential (Gumbel) trick, which
    draw one random number per vocabulary entry. ``uniforms`` (B, 1) in [0, 1) replace the
    generator's draws (per-row streams, see :func:`counter_uniform`).
    """
    cdf = probs.cumsum(-1)
    if uniforms is None:
        u = torch.rand(
            (probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype
        )
    else:
        u = uniforms.to(device=probs.device, dtype=cdf.dtype)
    total = cdf[:, -1:]
    # u * total can round up to the total itself; the float just below it still lands on the
    # last entry with mass, never on a zero-mass tail entry.
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # A compiled graph may round the cumulative sum differently in two places; then the search
    # can run past the end (out of bounds: a device assert on CUDA, a stray read on CPU). The
    # last entry with mass bounds it; eagerly the search never exceeds that entry.
    columns = torch.arange(probs.shape[-1], device=probs.device)
    last = torch.where(probs > 0, columns, 0).amax(-1)
    return torch.minimum(index, last)


def warp_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> torch.Tensor:
    """Full-vocabulary logits (B, V) of the truncated distribution: ``-inf`` outside the kept set.

    The reference form of what ``sample_next_tokens`` samples from; handy for tests and for
    users who want the sampling distribution itself.
    """
    if not temperature > 0:
        raise ValueError(f"warp_logits: temperature must be > 0, got {temperature}")
    scores = logits.float() / temperature
    threshold = kept_threshold(scores, top_k=top_k, top_p=top_p, min_p=min_p)
    return scores if threshold is None else scores.masked_fill(scores < threshold, float("-inf"))


def sample_next_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    do_sample: bool = True,
    generator: torch.Generator | None = None,
    forced_tokens: torch.Tensor | None = None,
    forced: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
) -> SampledTokens:
    """Draw the next token of every row from last-position ``logits`` (B, V).

    ``do_sample=False`` is greedy (argmax of the raw logits, as ``model.generate``); its
    sampling distribution is a point mass, so ``sampling_logprobs`` is 0. Rows where the bool
    ``forced`` (B,) is set take ``forced_tokens`` (B,) instead of a draw: their raw log-prob is
    still the policy's, and their sampling log-prob is 0 (they came from a point mass too).
    Temperature ``<= 0`` is only meaningful for greedy; raw log-probs then use temperature 1.
    ``uniforms`` (B, 1): each row's uniform for the draw instead of ``generator``'s.
    """
    scores = logits.float()
    if temperature > 0 and temperature != 1.0:
        scores = scores / temperature
    logp = torch.log_softmax(scores, dim=-1)
    zeros = torch.zeros(scores.shape[0], device=scores.device, dtype=logp.dtype)
    if not do_sample:
        tokens = scores.argmax(dim=-1)
        sampling_logprobs = zeros
    else:
        tokens, sampling_logprobs = _draw(logp, top_k, top_p, min_p, generator, uniforms)
    if forced is not None:
        if forced_tokens is None:
            raise ValueError("sample_next_tokens: `forced` needs `forced_tokens`")
        tokens = torch.where(forced, forced_tokens, tokens)
        sampling_logprobs = torch.where(forced, zeros, sampling_logprobs)
    logprobs = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return SampledTokens(tokens, logprobs, sampling_logprobs)


def _draw(
    logp: torch.Tensor,
    top_k: int,
    top_p: float,
    min_p: float,
    generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample from tempered log-probs (B, V) after truncation: (tokens, truncated log-probs).

    The support is :func:`~lit_qwen3.ops.truncation.kept_threshold`'s, the one the trainer
    re-scores with, so the two agree token for token."""
    threshold = kept_threshold(logp, top_k=top_k, top_p=top_p, min_p=min_p)
    if threshold is not None:
        logp = torch.log_softmax(logp.masked_fill(logp < threshold, float("-inf")), dim=-1)
    tokens = inverse_cdf_sample(logp.exp(), generator, uniforms)
    return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def resolve_thinking_budget(
    thinking_budget: int | Sequence[int | None] | torch.Tensor | None, batch_size: int
) -> torch.Tensor:
    """Per-row budgets as int64 (B,), unlimited rows (None) as a huge number; checks input."""
    if thinking_budget is None:
        return torch.full((batch_size,), UNLIMITED, dtype=torch.long)
    if isinstance(thinking_budget, torch.Tensor):
        if thinking_budget.is_floating_point() or thinking_budget.dtype == torch.bool:
            raise TypeError(
                f"thinking_budget tensor must hold integers, got {thinking_budget.dtype}"
            )
        budgets: list[int | None] = thinking_budget.reshape(-1).tolist()
        if thinking_budget.ndim == 0:
            budgets = budgets * batch_size
    elif isinstance(thinking_budget, (bool, str)) or not isinstance(
        thinking_budget, (Integral, Sequence)
    ):
        raise TypeError(
            "thinking_budget must be None, an int, or one int/None per row, "
            f"got {type(thinking_budget).__name__}"
        )
    elif isinstance(thinking_budget, Integral):
        budgets = [int(thinking_budget)] * batch_size
    else:
        budgets = list(thinking_budget)
    if len(budgets) != batch_size:
        raise ValueError(
            f"thinking_budget has {len(budgets)} entries but the batch has {batch_size} prompts"
        )
    out = []
    for row, budget in enumerate(budgets):
        if budget is None:
            out.append(UNLIMITED)
            continue
        if isinstance(budget, bool) or not isinstance(budget, Integral):
            raise TypeError(f"thinking_budget[{row}] must be an int or None, got {budget!r}")
        budget = int(budget)
        if budget < 0:
            raise ValueError(f"thinking_budget[{row}] must be >= 0 (0 = no thinking), got {budget}")
        out.append(budget)
    return torch.tensor(out, dtype=torch.long)


def encode_stop_text(
    text_or_ids: str | Sequence[int], tokenizer: Any | None, think_end_id: int, name: str
) -> list[int]:
    """Token ids of a budget's forced text; it must hold exactly one ``</think>``."""
    if isinstance(text_or_ids, str):
        if text_or_ids.count(THINK_END) != 1:
            raise ValueError(f"{name} must contain {THINK_END!r} exactly once, got {text_or_ids!r}")
        if tokenizer is None:
            raise TypeError(
                f"{name} is text but no tokenizer was given: pass a tokenizer, or token ids"
            )
        ids = list(tokenizer.encode(text_or_ids, add_special_tokens=False))
    else:
        ids = [int(i) for i in text_or_ids]
    if ids.count(think_end_id) != 1:
        raise ValueError(
            f"{name} must tokenize to exactly one </think> (id {think_end_id}), got {ids}"
        )
    return ids


def forced_table(stop_ids: Sequence[int], empty_ids: Sequence[int], pad: int) -> torch.Tensor:
    """(2, L) rows: 0 = the stop-thinking sequence, 1 = the budget-0 empty block, pad-filled."""
    width = max(len(stop_ids), len(empty_ids))
    table = torch.full((2, width), pad, dtype=torch.long)
    table[0, : len(stop_ids)] = torch.tensor(stop_ids)
    table[1, : len(empty_ids)] = torch.tensor(empty_ids)
    return table


class BudgetRows(NamedTuple):
    """A thinking budget's per-row state, as plain tensors (compiled steps carry it from token
    to token). See :class:`BudgetState` for what each field means."""

    thinking: torch.Tensor
    count: torch.Tensor
    force_pos: torch.Tensor
    force_kind: torch.Tensor
    forced_any: torch.Tensor


class BudgetRules(NamedTuple):
    """What a thinking budget keeps fixed while it runs: per-row budgets, the forced texts."""

    budget: torch.Tensor
    budget_kind: torch.Tensor
    table: torch.Tensor
    lengths: torch.Tensor
    start_id: int
    end_id: int


def budget_next_forced(
    rows: BudgetRows, rules: BudgetRules
) -> tuple[BudgetRows, torch.Tensor, torch.Tensor]:
    """Start forcing where the budget is reached: (new rows, forcing (B,) bool, forced ids)."""
    start = rows.thinking & (rows.count >= rules.budget)
    force_kind = torch.where(start, rules.budget_kind, rows.force_kind)
    force_pos = torch.where(start, 0, rows.force_pos)
    rows = rows._replace(
        thinking=rows.thinking & ~start, force_pos=force_pos, force_kind=force_kind
    )
    return rows, force_pos >= 0, rules.table[force_kind, force_pos.clamp(min=0)]


def budget_advance(
    rows: BudgetRows,
    rules: BudgetRules,
    tokens: torch.Tensor,
    forcing: torch.Tensor | None,
    active: torch.Tensor,
) -> BudgetRows:
    """The rows after this step's ``tokens``; ``active`` rows emitted a token that is not the end."""
    sampled = active if forcing is None else active & ~forcing
    opened = sampled & (tokens == rules.start_id) & ~rows.thinking
    closed = sampled & (tokens == rules.end_id)
    rows = rows._replace(
        count=rows.count + (rows.thinking & sampled & ~closed),
        thinking=(rows.thinking & ~closed) | opened,
    )
    if forcing is None:
        return rows
    forcing = forcing & active
    next_pos = rows.force_pos + 1
    finished = next_pos >= rules.lengths[rows.force_kind]
    return rows._replace(
        forced_any=rows.forced_any | forcing,
        force_pos=torch.where(forcing, next_pos.masked_fill(finished, -1), rows.force_pos),
    )


class BudgetState:
    """Vectorised thinking-budget state machine over a batch: no Python loop per row.

    Per row: ``thinking`` (inside an open block, not forcing), ``count`` (thinking tokens
    generated so far, over every block), ``force_pos`` (next index into the forced sequence, -1
    when not forcing), ``force_kind`` (0 = stop text, 1 = empty block for budget 0),
    ``forced_any``. They live in :attr:`rows` (a :class:`BudgetRows`), the fixed parts in
    :attr:`rules`; :func:`budget_next_forced` and :func:`budget_advance` are the transitions.

    The count never resets: a ``<think>`` inside an open block is one more thinking token, and a
    block reopened after ``</think>`` continues the same count, so it is forced shut as soon as
    it opens once the budget is spent. A policy cannot buy fresh budget with extra tags.
    """

    def __init__(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        budget: torch.Tensor,
        tokens: ThinkTokens,
        table: torch.Tensor,
        lengths: torch.Tensor,
    ) -> None:
        device = prompt_ids.device
        width = prompt_ids.shape[1]
        position = torch.arange(width, device=device)
        real = prompt_mask.bool()

        def last(token_id: int) -> torch.Tensor:
            hit = (prompt_ids == token_id) & real
            return torch.where(hit, position, -1).max(dim=-1).values

        last_start, last_end = last(tokens.think_start_id), last(tokens.think_end_id)
        count = torch.zeros_like(last_start)  # only generated thinking tokens count
        thinking = last_start > last_end
        self.rows = BudgetRows(
            thinking=thinking,
            count=count,
            force_pos=torch.full_like(count, -1),
            force_kind=torch.zeros_like(count),
            forced_any=torch.zeros_like(thinking),
        )
        budget = budget.to(device)
        self.rules = BudgetRules(
            budget=budget,
            budget_kind=(budget == 0).long(),
            table=table.to(device),
            lengths=lengths.to(device),
            start_id=tokens.think_start_id,
            end_id=tokens.think_end_id,
        )
        #: False when every budget is unlimited: nothing is ever forced, skip that bookkeeping.
        self.limited = bool((budget < UNLIMITED).any())

    @property
    def thinking(self) -> torch.Tensor:
        return self.rows.thinking

    @property
    def count(self) -> torch.Tensor:
        return self.rows.count

    @property
    def forced_any(self) -> torch.Tensor:
        return self.rows.forced_any

    def next_forced(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Start forcing where the budget is reached: (forcing (B,) bool, forced token ids).

        Both None when no row has a budget.
        """
        if not self.limited:
            return None, None
        self.rows, forcing, forced_ids = budget_next_forced(self.rows, self.rules)
        return forcing, forced_ids

    def advance(
        self, tokens: torch.Tensor, forcing: torch.Tensor | None, active: torch.Tensor
    ) -> None:
        """Update with this step's tokens; ``active`` rows emitted a token that is not the end."""
        self.rows = budget_advance(self.rows, self.rules, tokens, forcing, active)

    def select(self, index: torch.Tensor) -> None:
        """Keep only the rows in ``index`` (batch compaction)."""
        self.rows = BudgetRows(*(field[index] for field in self.rows))
        self.rules = self.rules._replace(
            budget=self.rules.budget[index], budget_kind=self.rules.budget_kind[index]
        )


class ThinkingBudgetLogitsProcessor(LogitsProcessor):
    """The thinking budget as a stateless ``LogitsProcessor`` for ``model.generate``.

    On each call, per row: find the open block (the first ``<think>`` after the last
    ``</think>``: a nested ``<think>`` does not restart it); if the thinking tokens generated so
    far, over every block, reach the budget without a ``</think>`` of the model's own, force the
    next token of the stop-thinking text (every other logit -inf) until the text is complete:
    the same rule as ``RolloutSampler``. ``prompt_length`` is the width of the (left-padded) prompts given to
    ``generate``, so that thinking tokens a prompt already holds (a template that pre-opens
    ``<think>``) are not counted, as in the sampler; None counts every token after ``<think>``,
    which is the same thing for prompts that do not pre-open the block.
    """

    def __init__(
        self,
        tokenizer_or_think_tokens: Any,
        budget: int | Sequence[int | None],
        *,
        prompt_length: int | None = None,
        stop_thinking: str | Sequence[int] = STOP_THINKING,
        close_empty: str | Sequence[int] = CLOSE_EMPTY_THINKING,
    ) -> None:
        if isinstance(tokenizer_or_think_tokens, ThinkTokens):
            tokens, tokenizer = tokenizer_or_think_tokens, None
        else:
            tokenizer = tokenizer_or_think_tokens
            tokens = ThinkTokens.from_tokenizer(tokenizer)
        sized = isinstance(budget, (Sequence, torch.Tensor)) and not isinstance(budget, str)
        resolve_thinking_budget(budget, len(budget) if sized else 1)  # type and range checks
        if prompt_length is not None and (
            isinstance(prompt_length, bool)
            or not isinstance(prompt_length, int)
            or prompt_length < 0
        ):
            raise ValueError(f"prompt_length must be None or an int >= 0, got {prompt_length!r}")
        self.budget = budget
        self.prompt_length = prompt_length or 0
        self.start_id, self.end_id = tokens.think_start_id, tokens.think_end_id
        stop_ids = encode_stop_text(stop_thinking, tokenizer, self.end_id, "stop_thinking")
        empty_ids = encode_stop_text(close_empty, tokenizer, self.end_id, "close_empty")
        self.table = forced_table(stop_ids, empty_ids, tokens.pad_token_id)
        self.lengths = torch.tensor([len(stop_ids), len(empty_ids)])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, length = input_ids.shape
        device = input_ids.device
        budget = resolve_thinking_budget(self.budget, batch).to(device).clamp(max=length)
        table, lengths = self.table.to(device), self.lengths.to(device)
        kind = (budget == 0).long()
        width = lengths[kind]
        position = torch.arange(length, device=device)
        is_start, is_end = input_ids == self.start_id, input_ids == self.end_id
        # The latest block starts at the first <think> after the </think> that precedes the last
        # <think> (nested ones are thinking tokens); ``length`` when no block was ever opened.
        last_start = torch.where(is_start, position, -1).max(-1).values
        before_last = is_end & (position < last_start[:, None])
        previous_end = torch.where(before_last, position, -1).max(-1).values
        block_start = torch.where(is_start & (position > previous_end[:, None]), position, length)
        block_start = block_start.min(-1).values
        # Thinking tokens generated in earlier blocks use up the budget too.
        starts_so_far = torch.where(is_start, position, -1).cummax(-1).values
        ends_so_far = torch.where(is_end, position, -1).cummax(-1).values
        inside_before = F.pad((starts_so_far > ends_so_far)[:, :-1], (1, 0), value=False)
        earlier = (position >= self.prompt_length) & (position < block_start[:, None])
        spent = (inside_before & ~is_end & earlier).sum(-1)
        counted_from = torch.clamp(block_start + 1, min=self.prompt_length)
        begin = counted_from + (budget - spent).clamp(min=0)  # where the forced text starts
        emitted = length - begin  # forced tokens already in input_ids
        offset = position - begin[:, None]
        own_end = (is_end & (position > block_start[:, None]) & (offset < 0)).any(-1)
        expected = table[kind[:, None], offset.clamp(0, table.shape[1] - 1)]
        in_forced = offset >= 0
        mismatch = (in_forced & ((offset >= width[:, None]) | (input_ids != expected))).any(-1)
        opened = block_start < length
        force = opened & ~own_end & ~mismatch & (emitted >= 0) & (emitted < width)
        if not bool(force.any()):
            return scores
        target = table[kind, emitted.clamp(0, table.shape[1] - 1)]
        forced_scores = torch.full_like(scores, float("-inf"))
        forced_scores.scatter_(-1, target[:, None], 0.0)
        return torch.where(force[:, None], forced_scores, scores)
