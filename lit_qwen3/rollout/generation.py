"""Rollout sampler: batched sampling with a KV cache and a per-row thinking budget.

RL and on-policy distillation sample many completions per step; this module turns a batch of
prompts into a ``Rollouts`` record with everything the losses need: completion ids and masks,
the log-prob of each sampled token under the raw policy and under the truncated distribution it
was drawn from (top-k/top-p/min-p), which tokens the budget forced (not to be trained on), the
thinking length, and whether the budget or ``max_new_tokens`` cut the row.

Thinking budget (Qwen3 report, section 4.3; Qwen docs' two-phase form): inside an open
``<think>`` block (opened by the prompt or by the model) the sampler counts the thinking tokens it
generates; when the count reaches the row's budget without ``</think>``, the
stop-thinking text (ending in ``</think>`` and what follows it) is teacher-forced one token per
step, then the answer is sampled freely. Budget 0 means no thinking: the block is closed at once
with the empty form ``\\n\\n</think>\\n\\n``. Rows whose thinking already ended are untouched.
``ThinkingBudgetLogitsProcessor`` is the same rule, stateless, for ``model.generate``.

Why not ``model.generate``: it returns neither truncated-distribution log-probs nor budget
bookkeeping, and for small models its per-step logits processors, stopping criteria and
cache/mask bookkeeping cost as much as the forward itself. Here the loop is vectorised over the
batch (no Python per row), the KV cache is preallocated (no ``torch.cat`` per step), the
attention mask is built once, the draw is one uniform number per row, rows that finished are
dropped from the batch and cache once half of it is done, and plain float32 Qwen3 models on CPU
take a lean decode step with the same numerics as their forward (``lit_qwen3.rollout.decoding``).
``benchmarks/bench_sampler.py`` measures it against ``model.generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from lit_qwen3.chat import STOP_THINKING, ThinkTokens
from lit_qwen3.ops.packing import pad_batch
from lit_qwen3.rollout.decoding import DecodedSteps, ModelStepper
from lit_qwen3.rollout.placement import global_alive, is_sharded, model_device, needs_lockstep
from lit_qwen3.rollout.sampling import (
    CLOSE_EMPTY_THINKING,
    BudgetState,
    ThinkingBudgetLogitsProcessor,
    counter_uniform,
    encode_stop_text,
    forced_table,
    resolve_thinking_budget,
    sample_next_tokens,
)

__all__ = [
    "QWEN3_NON_THINKING",
    "QWEN3_THINKING",
    "RolloutSampler",
    "Rollouts",
    "SamplingConfig",
    "ThinkingBudgetLogitsProcessor",
    "left_pad",
]


#: Smallest sampling temperature (vLLM's threshold for greedy): logits divided by 1e-40 are inf
#: in float32 and the softmax is NaN. Lower temperatures are greedy decoding in all but name.
MIN_TEMPERATURE = 1e-5


@dataclass
class SamplingConfig:
    """How the sampler draws tokens (Hugging Face semantics and warper order)."""

    max_new_tokens: int = 256
    """Most tokens generated per row, forced stop-thinking tokens included."""
    temperature: float = 1.0
    """Softmax temperature; must be > 0 when sampling. Raw log-probs use it too."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1 disables it."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables it."""
    min_p: float = 0.0
    """Drop tokens below min_p x the top probability, in [0, 1); 0 disables it."""
    do_sample: bool = True
    """False: greedy decoding (argmax), token for token what ``model.generate`` gives."""
    ignore_eos: bool = False
    """Keep generating after end-of-sequence tokens (benchmarks at a fixed length)."""

    def __post_init__(self) -> None:
        for name in ("do_sample", "ignore_eos"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"SamplingConfig.{name} must be a bool, got {getattr(self, name)!r}"
                )
        for name in ("max_new_tokens", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"SamplingConfig.{name} must be an int, got {value!r}")
        for name in ("temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"SamplingConfig.{name} must be a number, got {value!r}")
        if self.max_new_tokens < 1:
            raise ValueError(
                f"SamplingConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}"
            )
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0 (0 disables), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p < 1.0:
            raise ValueError(f"SamplingConfig.min_p must be in [0, 1), got {self.min_p}")
        if not self.temperature >= 0.0 or self.temperature == float("inf"):
            raise ValueError(
                f"SamplingConfig.temperature must be finite and >= 0, got {self.temperature}"
            )
        if self.do_sample and self.temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"SamplingConfig.temperature must be > 0 when do_sample=True (at least "
                f"{MIN_TEMPERATURE:g}: logits divided by less overflow), got {self.temperature}"
                " (use do_sample=False for greedy decoding)"
            )

    @classmethod
    def qwen3_thinking(cls, **overrides: Any) -> SamplingConfig:
        """Qwen3's recommended thinking-mode settings (T=0.6, top-p 0.95, top-k 20)."""
        return cls(**{**QWEN3_THINKING, **overrides})

    @classmethod
    def qwen3_non_thinking(cls, **overrides: Any) -> SamplingConfig:
        """Qwen3's recommended non-thinking settings (T=0.7, top-p 0.8, top-k 20)."""
        return cls(**{**QWEN3_NON_THINKING, **overrides})

    @classmethod
    def qwen3(cls, thinking: bool, **overrides: Any) -> SamplingConfig:
        """Qwen3's recommended settings for the given mode."""
        return cls.qwen3_thinking(**overrides) if thinking else cls.qwen3_non_thinking(**overrides)


#: Qwen3 model cards' recommended sampling (greedy is discouraged for thinking mode).
QWEN3_THINKING: dict[str, Any] = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
QWEN3_NON_THINKING: dict[str, Any] = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0}


@dataclass
class Rollouts:
    """Sampled completions of a batch of prompts: a plain dataclass of tensors, B rows.

    ``completion_mask`` is 1 for generated tokens (the end-of-sequence token included) and 0 for
    padding after it. ``forced_mask`` marks tokens the thinking budget teacher-forced: RL must not
    train on them (their ``logprobs`` are still filled; their ``sampling_logprobs`` are 0, as
    they came from a point mass). ``thinking_length`` counts the generated thinking tokens of
    every block (forced ones excluded), so it never exceeds the row's budget.
    """

    prompt_ids: torch.Tensor
    """(B, P) left-padded prompt token ids."""
    prompt_mask: torch.Tensor
    """(B, P) 1 on prompt tokens, 0 on left padding."""
    completion_ids: torch.Tensor
    """(B, T) generated token ids, right-padded with the pad id."""
    completion_mask: torch.Tensor
    """(B, T) 1 on generated tokens (end of sequence included), 0 after."""
    logprobs: torch.Tensor
    """(B, T) log-prob of each token under the raw policy, log_softmax(logits / temperature)."""
    sampling_logprobs: torch.Tensor
    """(B, T) log-prob under the truncated distribution actually sampled from."""
    forced_mask: torch.Tensor
    """(B, T) 1 where the thinking budget forced the token."""
    thinking_length: torch.Tensor
    """(B,) generated thinking tokens between ``<think>`` and ``</think>`` (0 when none)."""
    budget_forced: torch.Tensor
    """(B,) bool: the thinking budget cut this row's thinking."""
    truncated: torch.Tensor
    """(B,) bool: the row hit max_new_tokens without an end-of-sequence token."""
    tool_mask: torch.Tensor | None = None
    """(B, T) 1 where a tool (the environment) wrote the token, not the policy; None: zeros."""

    def __post_init__(self) -> None:
        if self.tool_mask is None:
            self.tool_mask = torch.zeros_like(self.completion_mask)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def sequences(self) -> torch.Tensor:
        """(B, P + T) prompt and completion ids, for re-scoring with the policy or a teacher."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    def attention_mask(self) -> torch.Tensor:
        """(B, P + T) the mask that goes with ``sequences()``."""
        return torch.cat([self.prompt_mask, self.completion_mask.to(self.prompt_mask.dtype)], dim=1)

    def position_ids(self) -> torch.Tensor:
        """(B, P + T) the positions the sampler used: left padding shifts them, so re-scoring
        ``sequences()`` must pass these (a plain forward would count the padding)."""
        return (self.attention_mask().long().cumsum(-1) - 1).clamp(min=0)

    def policy_mask(self) -> torch.Tensor:
        """(B, T) bool: the tokens the policy chose, so the ones a policy loss may train on.

        Generated tokens minus what the thinking budget forced and what tools wrote.
        """
        return self.completion_mask.bool() & ~self.forced_mask.bool() & ~self.tool_mask.bool()

    def completion_lengths(self) -> torch.Tensor:
        """(B,) number of generated tokens per row."""
        return self.completion_mask.sum(dim=-1)

    def to(self, device: torch.device | str) -> Rollouts:
        """A copy with every tensor on ``device``."""
        return Rollouts(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, index: torch.Tensor | Sequence[int]) -> Rollouts:
        """The rows ``index`` (a list, an index tensor or a bool mask), padding trimmed: left
        prompt padding and right completion padding that no selected row uses."""
        index = torch.as_tensor(index, device=self.prompt_ids.device)
        rows = {f.name: getattr(self, f.name)[index] for f in fields(self)}
        prompt_used = rows["prompt_mask"].any(0).nonzero()
        first = int(prompt_used[0]) if len(prompt_used) else 0
        completion_used = rows["completion_mask"].any(0).nonzero()
        last = int(completion_used[-1]) + 1 if len(completion_used) else 0
        for name in ("prompt_ids", "prompt_mask"):
            rows[name] = rows[name][:, first:]
        for name in _COMPLETION_FIELDS:
            rows[name] = rows[name][:, :last]
        return Rollouts(**rows)

    @classmethod
    def cat(cls, parts: Sequence[Rollouts], pad_token_id: int) -> Rollouts:
        """Rows of several ``Rollouts`` in one: prompts left-padded and completions
        right-padded to the widest part."""
        if not parts:
            raise ValueError("Rollouts.cat needs at least one part")
        width = max(p.prompt_ids.shape[1] for p in parts)
        length = max(p.completion_ids.shape[1] for p in parts)
        out: dict[str, list[torch.Tensor]] = {f.name: [] for f in fields(cls)}
        for part in parts:
            for f in fields(cls):
                value = getattr(part, f.name)
                if f.name in ("prompt_ids", "prompt_mask"):
                    fill = pad_token_id if f.name == "prompt_ids" else 0
                    value = torch.nn.functional.pad(value, (width - value.shape[1], 0), value=fill)
                elif f.name in _COMPLETION_FIELDS:
                    fill = pad_token_id if f.name == "completion_ids" else 0
                    value = torch.nn.functional.pad(value, (0, length - value.shape[1]), value=fill)
                out[f.name].append(value)
        return cls(**{name: torch.cat(values) for name, values in out.items()})

    def texts(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> list[str]:
        """Completion texts (``<think>`` tags kept: they are not special tokens in Qwen3)."""
        ids = [
            row[mask.bool()].tolist()
            for row, mask in zip(self.completion_ids, self.completion_mask, strict=True)
        ]
        return tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)


#: The (B, T) fields of ``Rollouts``, aligned with ``completion_ids``.
_COMPLETION_FIELDS = (
    "completion_ids",
    "completion_mask",
    "logprobs",
    "sampling_logprobs",
    "forced_mask",
    "tool_mask",
)


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists into (ids, mask), both (B, max length) int64."""
    if len(sequences) == 0:
        raise ValueError("prompts is empty: pass at least one prompt")
    lengths = [len(seq) for seq in sequences]
    for row, length in enumerate(lengths):
        if length == 0:
            raise ValueError(f"prompts[{row}] is empty: every prompt needs at least one token")
    batch = pad_batch(sequences, pad_token_id, side="left")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


class RolloutSampler:
    """Samples ``Rollouts`` from any Hugging Face causal LM, with an optional thinking budget.

    ``tokenizer_or_think_tokens``: a tokenizer (token ids and the stop texts are resolved from
    it) or a ``ThinkTokens`` (then ``stop_thinking`` and ``close_empty`` must be token ids).
    ``stop_thinking`` is forced when a budget > 0 runs out; it must hold ``</think>`` once,
    followed by what the answer starts with (e.g. "\\n\\n"). ``close_empty`` closes the block
    at budget 0. ``fast_path``: decode plain float32 ``Qwen3ForCausalLM`` models on CPU with
    a lean step that matches their forward (see ``lit_qwen3.rollout.decoding``); False always calls the
    model's own forward. ``compile``: run that lean step through ``torch.compile`` (fixed
    shapes: it attends over the whole preallocated cache; worth it for long runs); with
    per-row ``seeds`` the draw runs inside the same compiled graph, ``tokens_per_call`` tokens
    per call (per-call overhead paid once for them; each size compiles once, and a larger one
    compiles for longer). Rows with identical prompts (a GRPO group's rollouts) share one
    prefill.
    """

    def __init__(
        self,
        tokenizer_or_think_tokens: Any,
        config: SamplingConfig | None = None,
        stop_thinking: str | Sequence[int] = STOP_THINKING,
        close_empty: str | Sequence[int] = CLOSE_EMPTY_THINKING,
        *,
        fast_path: bool = True,
        compile: bool = False,
        tokens_per_call: int = 4,
    ) -> None:
        if isinstance(tokenizer_or_think_tokens, ThinkTokens):
            self.think_tokens, tokenizer = tokenizer_or_think_tokens, None
        else:
            tokenizer = tokenizer_or_think_tokens
            self.think_tokens = ThinkTokens.from_tokenizer(tokenizer)
        if config is None:
            config = SamplingConfig()
        if not isinstance(config, SamplingConfig):
            raise TypeError(f"config must be a SamplingConfig, got {type(config).__name__}")
        self.config = config
        self.fast_path = fast_path
        self.compile = compile
        if isinstance(tokens_per_call, bool) or not isinstance(tokens_per_call, int):
            raise TypeError(f"tokens_per_call must be an int, got {tokens_per_call!r}")
        if tokens_per_call < 1:
            raise ValueError(f"tokens_per_call must be >= 1, got {tokens_per_call}")
        self.tokens_per_call = tokens_per_call
        end_id = self.think_tokens.think_end_id
        self.stop_ids = encode_stop_text(stop_thinking, tokenizer, end_id, "stop_thinking")
        self.empty_ids = encode_stop_text(close_empty, tokenizer, end_id, "close_empty")
        self._table = forced_table(self.stop_ids, self.empty_ids, self.think_tokens.pad_token_id)
        self._lengths = torch.tensor([len(self.stop_ids), len(self.empty_ids)])
        self._eos = torch.tensor(self.think_tokens.eos_token_ids, dtype=torch.long)

    def sample(
        self,
        model: torch.nn.Module,
        prompts: Sequence[Sequence[int]] | torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        thinking_budget: int | Sequence[int | None] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        stop_token_ids: Sequence[int] = (),
        progress: Any = None,
        seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> Rollouts:
        """Sample one completion per prompt.

        ``prompts``: token-id lists, or a (B, P) left-padded tensor with its ``attention_mask``.
        ``thinking_budget``: None (unlimited), one int for all rows, or one int/None per row.
        ``generator`` (on the model's device) makes sampling reproducible. The model runs in
        eval mode (its mode is restored after) and without autograd. ``stop_token_ids`` end a
        row like its end-of-sequence tokens do (e.g. ``</tool_call>`` for agent turns; the stop
        token is kept). ``progress``: anything with ``update(n)`` (a tqdm or rich bar), advanced
        once per decoded token position. ``seeds`` (one int per row) replace ``generator``: row
        ``i``'s draw at step ``t`` uses the ``t``-th uniform of seed ``seeds[i]``'s stream
        (:func:`~lit_qwen3.rollout.sampling.counter_uniform`), so a row samples the same tokens
        whatever batch, rank or position it is sampled in.
        """
        device = model_device(model)
        prompt_ids, prompt_mask = self._prompts(prompts, attention_mask, device)
        budget = resolve_thinking_budget(thinking_budget, prompt_ids.shape[0])
        if seeds is not None:
            seeds = torch.as_tensor(seeds, dtype=torch.long).flatten()
            if len(seeds) != prompt_ids.shape[0]:
                raise ValueError(
                    f"seeds has {len(seeds)} entries but the batch has {prompt_ids.shape[0]} prompts"
                )
        was_training = model.training
        model.eval()
        try:
            # Inference mode trims per-op overhead; the clone hands back ordinary tensors that
            # the training step may use in autograd graphs. Sharded models gather weights into
            # buffers they reuse in training: those must not become inference tensors.
            no_autograd = torch.no_grad if is_sharded(model) else torch.inference_mode
            with no_autograd():
                state = BudgetState(
                    prompt_ids, prompt_mask, budget, self.think_tokens, self._table, self._lengths
                )
                stops = torch.tensor([int(t) for t in stop_token_ids], dtype=torch.long)
                rollouts = self._loop(
                    model, prompt_ids, prompt_mask, state, generator, stops, progress, seeds
                )
        finally:
            model.train(was_training)
        return Rollouts(**{f.name: getattr(rollouts, f.name).clone() for f in fields(rollouts)})

    def _prompts(
        self, prompts: Any, attention_mask: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, torch.Tensor):
            if prompts.ndim != 2 or prompts.is_floating_point():
                raise ValueError(
                    f"prompts tensor must be (B, P) token ids, got {tuple(prompts.shape)} {prompts.dtype}"
                )
            if prompts.shape[0] == 0 or prompts.shape[1] == 0:
                raise ValueError(f"prompts tensor is empty: {tuple(prompts.shape)}")
            if attention_mask is None:
                attention_mask = torch.ones_like(prompts)
            if attention_mask.shape != prompts.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} != prompts shape {tuple(prompts.shape)}"
                )
            mask = attention_mask.long()
            if bool((mask[:, 1:] < mask[:, :-1]).any()) or bool((mask[:, -1] == 0).any()):
                raise ValueError(
                    "prompts must be left-padded: each attention_mask row is 0...0 1...1 "
                    "and ends with a prompt token"
                )
            return prompts.long().to(device), mask.to(device)
        if attention_mask is not None:
            raise ValueError("attention_mask is only for a prompts tensor, not token-id lists")
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise TypeError(
                f"prompts must be a list of token-id lists or a (B, P) tensor, got {type(prompts).__name__}"
            )
        return left_pad(prompts, self.think_tokens.pad_token_id, device)

    def _loop(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        state: BudgetState,
        generator: torch.Generator | None,
        stop_token_ids: torch.Tensor,
        progress: Any,
        seeds: torch.Tensor | None = None,
    ) -> Rollouts:
        cfg = self.config
        batch, width = prompt_ids.shape
        device = prompt_ids.device
        eos = torch.cat([self._eos, stop_token_ids]).to(device)
        steps = _StepRecorder(batch, cfg.max_new_tokens, device)
        # A compiled step with per-row streams also draws the tokens, several per call.
        block = self.tokens_per_call if self.compile and seeds is not None else 1
        stepper = ModelStepper(
            model, prompt_mask, width + cfg.max_new_tokens + block - 1, self.fast_path, self.compile
        )
        fused = stepper.static and seeds is not None
        logits = stepper.prefill(prompt_ids)
        alive = torch.ones(batch, dtype=torch.bool, device=device)
        lockstep = needs_lockstep(model)
        options = {
            "temperature": cfg.temperature,
            "top_k": cfg.top_k,
            "top_p": cfg.top_p,
            "min_p": cfg.min_p,
            "do_sample": cfg.do_sample,
        }
        if seeds is not None:
            seeds = seeds.to(device)
        tokens = prompt_ids[:, -1]  # the last tokens decoded (the prefill's, at first)
        step = 0
        while step < cfg.max_new_tokens:
            if fused and step > 0:
                n = min(block, cfg.max_new_tokens - step)
                out = stepper.sample_steps(
                    tokens,
                    seeds,
                    step,
                    block,
                    n,
                    alive,
                    None if cfg.ignore_eos else eos,
                    state if state.limited else None,
                    **options,
                )
                steps.extend(out, n)
                if state.limited:
                    state.rows = out.budget
                alive, tokens = out.alive_after, out.tokens[:, n - 1]
            else:
                n = 1
                forcing, forced_ids = state.next_forced()
                draw = sample_next_tokens(
                    logits,
                    **options,
                    generator=generator,
                    forced_tokens=forced_ids,
                    forced=forcing,
                    uniforms=None if seeds is None else counter_uniform(seeds, step),
                )
                tokens = draw.tokens
                steps.append(tokens, alive, draw.logprobs, draw.sampling_logprobs, forcing)
                if not cfg.ignore_eos:
                    alive = alive & ~torch.isin(tokens, eos)
                state.advance(tokens, forcing, alive)
            step += n
            if progress is not None:
                progress.update(n)
            if step >= cfg.max_new_tokens:
                break
            if not cfg.ignore_eos:  # one host sync per call, only when rows can finish
                n_alive = int(alive.sum())
                if global_alive(n_alive, lockstep) == 0:
                    break
                if 0 < n_alive <= alive.shape[0] // 2:  # drop finished rows from batch and cache
                    steps.finish_rows(state, alive)
                    keep = alive.nonzero().squeeze(-1)
                    steps.select(keep)
                    stepper.select(keep)
                    state.select(keep)
                    alive, tokens = alive[keep], tokens[keep]
                    if seeds is not None:
                        seeds = seeds[keep]
            if not fused:
                logits = stepper.decode(tokens)
        steps.finish_rows(state, alive)
        return steps.rollouts(prompt_ids, prompt_mask, self.think_tokens.pad_token_id)


class _StepRecorder:
    """Collects per-step outputs of the active rows and writes them out in blocks.

    Appending to lists costs nothing per step; the blocks are stacked into the (B, T) outputs
    when rows are dropped and at the end, and padding is applied once.
    """

    def __init__(self, batch: int, max_new_tokens: int, device: torch.device) -> None:
        self.rows = torch.arange(batch, device=device)  # active row -> output row
        self.written = 0  # columns already flushed
        self.pending: list[tuple[torch.Tensor, ...]] = []
        shape = (batch, max_new_tokens)
        self.ids = torch.zeros(shape, dtype=torch.long, device=device)
        self.mask = torch.zeros(shape, dtype=torch.bool, device=device)
        self.forced = torch.zeros(shape, dtype=torch.bool, device=device)
        self.logp = torch.zeros(shape, dtype=torch.float32, device=device)
        self.slogp = torch.zeros(shape, dtype=torch.float32, device=device)
        self.thinking_length = torch.zeros(batch, dtype=torch.long, device=device)
        self.budget_forced = torch.zeros(batch, dtype=torch.bool, device=device)
        self.truncated = torch.zeros(batch, dtype=torch.bool, device=device)

    def append(
        self,
        tokens: torch.Tensor,
        alive: torch.Tensor,
        logp: torch.Tensor,
        slogp: torch.Tensor,
        forcing: torch.Tensor | None,
    ) -> None:
        """One step's (B,) outputs."""
        self.pending.append(
            (tokens[:, None], alive[:, None], logp[:, None], slogp[:, None])
            + (None if forcing is None else forcing[:, None],)
        )

    def extend(self, out: DecodedSteps, n: int) -> None:
        """The first ``n`` steps of a compiled call's (B, k) outputs."""
        forced = None if out.forced is None else out.forced[:, :n]
        self.pending.append(
            (out.tokens[:, :n], out.alive[:, :n], out.logprobs[:, :n])
            + (out.sampling_logprobs[:, :n], forced)
        )

    def flush(self) -> None:
        if not self.pending:
            return
        start = self.written
        end = start + sum(block[0].shape[1] for block in self.pending)
        outputs = (self.ids, self.mask, self.logp, self.slogp, self.forced)
        for out, column in zip(outputs, zip(*self.pending, strict=True), strict=True):
            if column[0] is not None:  # forcing is None for a whole run without budgets
                out[self.rows, start:end] = torch.cat(column, dim=1)
        self.written, self.pending = end, []

    def finish_rows(self, state: BudgetState, alive: torch.Tensor) -> None:
        """Record the per-row results of every active row (final for rows that are done)."""
        self.flush()
        self.thinking_length[self.rows] = state.count
        self.budget_forced[self.rows] = state.forced_any
        self.truncated[self.rows] = alive

    def select(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index]

    def rollouts(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, pad: int) -> Rollouts:
        self.flush()
        length = self.written
        mask = self.mask[:, :length]
        return Rollouts(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=self.ids[:, :length].masked_fill(~mask, pad),
            completion_mask=mask.long(),
            logprobs=self.logp[:, :length].masked_fill(~mask, 0.0),
            sampling_logprobs=self.slogp[:, :length].masked_fill(~mask, 0.0),
            forced_mask=(self.forced[:, :length] & mask).long(),
            thinking_length=self.thinking_length,
            budget_forced=self.budget_forced,
            truncated=self.truncated,
        )
