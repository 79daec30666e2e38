"""The engine of every on-policy stage: sample rollouts, turn them into an update batch, then
run ``ppo_epochs`` x ``num_minibatches`` optimizer steps on it (manual optimisation).

Subclasses decide what a batch carries and what the loss is: :class:`~.grpo.GroupRelativeRL`
(rewards and group advantages; reasoning RL and general RL) and
:class:`~.on_policy_distillation.OnPolicyDistillation` (a teacher's log-probs). What they share
lives here: prompts in each query's mode, the sampler (with the module's thinking budget and,
when queries name tools, multi-turn tool calls; built-in, or vLLM with ``rollout_backend: vllm``,
:mod:`lit_qwen3.rollout.vllm_rollouts`), the one re-scoring forward
(:func:`~lit_qwen3.rollout.rescoring.score_completions`), mini-batching with gradient accumulation,
gradient clipping, skipping non-finite steps, timing and samples tables.

``trainer.max_steps`` counts optimizer steps, as in TRL: each training step (one batch of
queries) takes ``ppo_epochs * num_minibatches`` of them. Gradient clipping is the module's
``max_grad_norm`` (Lightning's ``gradient_clip_val`` does not apply to manual optimisation).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn

from lit_qwen3.agent import ToolRolloutSampler, first_turns, turn_texts
from lit_qwen3.chat import ThinkTokens, split_thinking, thinking_span_mask
from lit_qwen3.queries import Query, encode_query
from lit_qwen3.rollout.generation import Rollouts, RolloutSampler, SamplingConfig
from lit_qwen3.rollout.rescoring import CompletionScores, score_completions
from lit_qwen3.rollout.sampling import mix_seed
from lit_qwen3.rollout.vllm_rollouts import (
    ROLLOUT_BACKENDS,
    check_vllm_truncation,
    require_vllm,
)
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.runtime.strategies import deepspeed_stage
from lit_qwen3.runtime.tracking import log_metrics, log_table, publish_metrics
from lit_qwen3.stages.base import HFStageModule
from lit_qwen3.tools import build_tool

# The stages' hyperparameters hold these config objects; resuming loads checkpoints with
# ``torch.load(weights_only=True)``, which accepts only the classes it is told about.
torch.serialization.add_safe_globals([SamplingConfig, OptimizerConfig])


def thinking_metrics(module: Any, rollouts: Any, thinking: torch.Tensor) -> dict[str, float]:
    """``train/thinking_length`` when some rollouts think, ``train/budget_forced`` when a
    thinking budget applies: where they cannot be anything but zero, they are NaN, which
    :meth:`OnPolicyStage.mean_over_ranks` leaves out when no rank has a value (a series of
    zeros repeats every other one). The keys are the same on every rank."""
    nan = float("nan")
    thinks = bool(thinking.any())
    metrics = {
        "train/thinking_length": float(rollouts.thinking_length.float().mean()) if thinks else nan
    }
    if getattr(module, "thinking_budget", None) is not None:
        metrics["train/budget_forced"] = (
            float(rollouts.budget_forced.float().mean()) if thinks else nan
        )
    return metrics


@dataclass
class RolloutRow:
    """One rollout to sample: a query in a mode, with the seed of its sampling stream."""

    query: Query
    thinking: bool
    seed: int = 0


@dataclass
class SampledRows:
    """What sampling a list of :class:`RolloutRow` gave, row-aligned."""

    rows: list[RolloutRow]
    rollouts: Rollouts
    messages: list[list[dict[str, Any]]]
    """The prompt messages each row was sampled from (flag written)."""
    replies: list[str]
    """Reply text for rewards: the template's prefill plus the final turn."""
    tool_calls: list[list[dict[str, Any]]]
    call_thinking: list[str | None] = field(default_factory=list)
    """For rows that called a tool: the thinking of the turn that made the first call (the
    turn after a tool's output may keep its block empty, as the template renders it)."""

    @property
    def thinking(self) -> torch.Tensor:
        return torch.tensor([row.thinking for row in self.rows])


@dataclass
class UpdateBatch:
    """Rollouts plus per-row tensors a loss needs; ``select`` keeps rows aligned."""

    rollouts: Rollouts
    mask: torch.Tensor
    """(B, T) bool: tokens the loss trains on."""
    thinking: torch.Tensor
    """(B,) bool: the mode each row was sampled in."""
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    """Other (B,) or (B, T, ...) tensors (advantages, old/ref/teacher log-probs, teacher hidden
    states...): dimension 1 of the latter is the completion position."""
    sampled_tokens: int | None = None
    """Tokens the policy generated for this batch, rows that were sampled and scored but not
    kept included (dynamic sampling's dropped groups and refill rounds); None: the rows here."""

    def __len__(self) -> int:
        return len(self.rollouts)

    def select(self, index: torch.Tensor) -> UpdateBatch:
        rollouts = self.rollouts.select(index)
        length = rollouts.completion_ids.shape[1]

        def cut(t: torch.Tensor) -> torch.Tensor:
            t = t[index]
            return t[:, :length] if t.dim() >= 2 else t  # (B, T) and (B, T, H) alike

        return UpdateBatch(
            rollouts,
            cut(self.mask),
            self.thinking[index],
            {k: cut(v) for k, v in self.tensors.items()},
        )


class OnPolicyStage(HFStageModule):
    """Base of the on-policy stages; subclasses implement :meth:`make_batch` and
    :meth:`batch_loss`. Their ``__init__`` calls ``init_stage`` and then :meth:`init_rollouts`."""

    def init_rollouts(
        self,
        *,
        sampling: SamplingConfig | None,
        thinking_budget: int | None,
        stop_thinking: str,
        ppo_epochs: int,
        num_minibatches: int,
        micro_batch_size: int | None,
        max_grad_norm: float | None,
        think_fraction: float,
        template_switch: bool,
        max_tool_turns: int,
        chunk_size: int,
        samples_every_n_steps: int,
        log_samples: int,
        rollout_backend: str = "builtin",
        vllm_options: dict[str, Any] | None = None,
    ) -> None:
        if rollout_backend not in ROLLOUT_BACKENDS:
            raise ValueError(
                f"rollout_backend must be one of {ROLLOUT_BACKENDS}, got {rollout_backend!r}"
            )
        if rollout_backend == "vllm":
            check_vllm_truncation(sampling)
            require_vllm()  # fail at construction, before any training, with what to install
        for name, value in (("ppo_epochs", ppo_epochs), ("num_minibatches", num_minibatches)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1 or None, got {micro_batch_size}")
        if thinking_budget is not None and thinking_budget < 0:
            raise ValueError(f"thinking_budget must be >= 0 or None, got {thinking_budget}")
        if not 0.0 <= think_fraction <= 1.0:
            raise ValueError(f"think_fraction must be in [0, 1], got {think_fraction}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
        self.automatic_optimization = False
        self.sampling = sampling or SamplingConfig(max_new_tokens=256)
        self.thinking_budget = thinking_budget
        self.stop_thinking = stop_thinking
        self.think_tokens = ThinkTokens.from_tokenizer(self.tokenizer)
        self.rl_step = 0
        """Training steps (batches of queries) done; saved in checkpoints."""
        self._tools: dict[str, Any] = {}
        self.rollout_backend = rollout_backend
        self.vllm_options = dict(vllm_options or {})
        self._vllm_sampler: Any = None

    def rollout_sampler(self) -> Any:
        """The sampler of this step: the built-in one (cheap to build), or the module's
        colocated vLLM sampler (built once: its engine lives across steps, weights synced at
        every call)."""
        if self.rollout_backend == "vllm":
            if self._vllm_sampler is None:
                from lit_qwen3.rollout.vllm_rollouts import VLLMRolloutSampler

                self._vllm_sampler = VLLMRolloutSampler(
                    self.tokenizer,
                    self.sampling,
                    stop_thinking=self.stop_thinking,
                    **self.vllm_options,
                )
            return self._vllm_sampler
        return RolloutSampler(
            self.tokenizer,
            self.sampling,
            stop_thinking=self.stop_thinking,
            compile=self.hparams.get("compile", False),
        )

    # -- sampling ---------------------------------------------------------------------------
    def expand(self, queries: list[Query], copies: int, round: int = 0) -> list[RolloutRow]:
        """``copies`` rows per query (a group), all in one mode: the query's, or for ``mixed``
        queries thinking with probability ``think_fraction``.

        Modes and sampling seeds are functions of (seed, step, sampling round, the query's index
        in the global batch, copy), never of the rank or of batch composition: reruns, resumes
        and any data-parallel split sample the same rollouts (each rank holds an equal share
        of the global batch, in rank order).
        """
        first = self.global_rank * len(queries)
        base = (self.hparams.seed, self.rl_step, round)
        rows = []
        for position, query in enumerate(queries, start=first):
            thinking = query.default_thinking()
            if thinking is None:
                rng = random.Random(mix_seed(*base, position, -1))
                thinking = rng.random() < self.hparams.think_fraction
            rows.extend(
                RolloutRow(query, thinking, mix_seed(*base, position, copy))
                for copy in range(copies)
            )
        return rows

    def tool(self, name: str) -> Any:
        if name not in self._tools:
            self._tools[name] = build_tool(name)
        return self._tools[name]

    @torch.no_grad()
    def sample_rows(self, rows: list[RolloutRow], generator: torch.Generator) -> SampledRows:
        """Sample one rollout per row with the current policy (plain rows from their own seeds;
        tool-using rows from ``generator``)."""
        sampler = self.rollout_sampler()
        messages, prompts, prefills = [], [], []
        encoded: dict[tuple[int, bool], tuple] = {}  # a group's rows share one rendering
        for row in rows:
            key = (id(row.query), row.thinking)
            if key not in encoded:
                tools = [self.tool(name).schema() for name in row.query.tools]
                if not self.hparams.render_tools:
                    tools = []
                encoded[key] = encode_query(
                    self.tokenizer,
                    row.query,
                    row.thinking,
                    template_switch=self.hparams.template_switch,
                    tools=tools,
                )
            m, ids, prefill = encoded[key]
            messages.append(m)
            prompts.append(ids)
            prefills.append(prefill)
        progress = self._progress_bar(len(rows))
        try:
            if any(row.query.tools for row in rows):
                agent = ToolRolloutSampler(
                    sampler,
                    self.tokenizer,
                    {name: self.tool(name) for row in rows for name in row.query.tools},
                    max_turns=self.hparams.max_tool_turns,
                )
                rollouts, traces = agent.sample(
                    self.model,
                    prompts,
                    allowed_tools=[row.query.tools for row in rows],
                    prefills=prefills,
                    thinking_budget=self.thinking_budget,
                    generator=generator,
                    progress=progress,
                )
                calls = [trace.calls for trace in traces]
            else:
                rollouts = sampler.sample(
                    self.model,
                    prompts,
                    thinking_budget=self.thinking_budget,
                    progress=progress,
                    seeds=[row.seed for row in rows],
                )
                calls = [[] for _ in rows]
        finally:
            if progress is not None:
                progress.close()
        rollouts = rollouts.to(self.device)
        replies = [p + t for p, t in zip(prefills, self.final_turns(rollouts), strict=True)]
        call_thinking = [
            split_thinking(prefill + turn).thinking if called else None
            for prefill, turn, called in zip(
                prefills, first_turns(rollouts, self.tokenizer), calls, strict=True
            )
        ]
        return SampledRows(rows, rollouts, messages, replies, calls, call_thinking)

    def final_turns(self, rollouts: Rollouts) -> list[str]:
        """Each reply's last assistant turn as text (tool turns before it are the trajectory)."""
        return turn_texts(rollouts, self.tokenizer, "last")

    def _progress_bar(self, rows: int) -> Any:
        trainer = self._trainer
        if trainer is None or trainer.progress_bar_callback is None or not trainer.is_global_zero:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.sampling.max_new_tokens,
            desc=f"rollouts ({rows} rows)",
            leave=False,
            unit="tok",
            dynamic_ncols=True,
        )

    def generator(self) -> torch.Generator:
        """A sampling generator seeded by (seed, step, rank): reruns sample the same."""
        seed = hash((self.hparams.seed, self.rl_step, self.global_rank)) % (2**62)
        return torch.Generator(device=self.device).manual_seed(seed)

    def sampled_distribution(self) -> dict[str, Any]:
        """The sampler's temperature and truncation: every re-scoring (policy, old policy,
        reference) takes each token's log-prob under the distribution it was drawn from, so
        ratios, TIS and KL estimates compare like with like (huggingface/trl#6789)."""
        s = self.sampling
        return {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p}

    def policy_scores(self, rollouts: Rollouts) -> CompletionScores:
        return score_completions(
            self.model,
            rollouts,
            **self.sampled_distribution(),
            chunk_size=self.hparams.chunk_size,
            compile=self.hparams.get("compile", False),
        )

    @torch.no_grad()
    def frozen_logprobs(self, model: torch.nn.Module, rollouts: Rollouts) -> torch.Tensor:
        """Log-probs under a frozen model (reference, old policy), micro-batched, no grad."""
        out = torch.zeros_like(rollouts.logprobs)
        for rows in self.micro_batches(torch.arange(len(rollouts), device=self.device)):
            part = rollouts.select(rows)
            scores = score_completions(
                model, part, **self.sampled_distribution(), chunk_size=self.hparams.chunk_size
            )
            out[rows, : part.completion_ids.shape[1]] = scores.logprobs.float()
        return out

    def spans(self, rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """(thinking, answer) bool masks over the policy's completion tokens."""
        opened = rollouts.prompt_ids[:, -1] == self.think_tokens.think_start_id
        inside = thinking_span_mask(rollouts.completion_ids, self.think_tokens, opened)
        policy = rollouts.policy_mask()
        tags = (rollouts.completion_ids == self.think_tokens.think_start_id) | (
            rollouts.completion_ids == self.think_tokens.think_end_id
        )
        return inside & policy, ~inside & ~tags & policy

    # -- the step ---------------------------------------------------------------------------
    def make_batch(self, queries: list[Query]) -> tuple[UpdateBatch, dict[str, float]]:
        """Sample and score: the update batch and the step's metrics (rewards, lengths...)."""
        raise NotImplementedError

    def batch_loss(
        self, batch: UpdateBatch, normalizer: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(loss, metrics, per-token entropy) of one micro-batch; ``normalizer`` is the
        mini-batch's token (or sequence) count the loss divides by."""
        raise NotImplementedError

    def loss_normalizer(self, batch: UpdateBatch) -> float:
        """What a mini-batch's loss divides by: its trained tokens (token-mean)."""
        return float(batch.mask.sum().clamp(min=1))

    def before_updates(self, batch: UpdateBatch) -> None:
        """Hook before the first update of a step (e.g. old log-probs for off-policy reuse)."""

    def _seconds_since(self, start: float) -> float:
        """Wall seconds since ``start`` once the device's queued work is done (on a GPU the
        clock would otherwise stop before the kernels do)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def training_step(self, batch: list[Query], batch_idx: int) -> dict[str, Any]:
        start = time.perf_counter()
        update_batch, metrics = self.make_batch(list(batch))
        rollout_s = self._seconds_since(start)
        self.before_updates(update_batch)
        records, update_metrics = self.run_updates(update_batch)
        update_s = self._seconds_since(start) - rollout_s
        self.last_timing = {"rollout_s": rollout_s, "update_s": update_s}
        rollouts = update_batch.rollouts
        generated = float(rollouts.completion_mask.sum() - rollouts.tool_mask.sum())
        metrics.update(update_metrics)
        metrics.update(
            {
                "time/rollout_s": rollout_s,
                "time/update_s": update_s,
                "time/tokens_per_s": generated / max(rollout_s + update_s, 1e-9),
            }
        )
        skipped = self.nonfinite_guard.skipped  # NaN (left out) while zero: see thinking_metrics
        metrics["train/skipped_steps"] = float(skipped) if skipped else float("nan")
        self.rl_step += 1
        metrics["train/rl_step"] = float(self.rl_step)
        self.count_tokens(update_batch)
        self.train_seconds += rollout_s + update_s
        metrics = self.mean_over_ranks(metrics)
        modes = [k for k in ("train/reward/think", "train/reward/no_think") if k in metrics]
        if len(modes) == 1:  # a step of one mode: its reward is train/reward
            metrics.pop(modes[0])
        metrics["time/train_s"] = self.compute_stats()["time/train_s"]  # counters: at the end
        log_metrics(self.trainer, metrics)  # at the optimizer step, like evaluation callbacks
        publish_metrics(self, metrics, self.progress_metrics)  # monitors, progress bar
        return {"entropy_records": records}

    #: Metrics shown on the progress bar (all go to the loggers).
    progress_metrics: tuple[str, ...] = ("train/reward", "train/divergence")

    def mean_over_ranks(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric's mean over the ranks that have it (NaN: this rank has no value).

        Every rank must pass the same keys; values are means of this rank's rows.
        """
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
        if self.trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            present = (~values.isnan()).double()
            stacked = torch.stack([values.nan_to_num(0.0), present]).to(self.device)
            dist.all_reduce(stacked)
            values = (stacked[0] / stacked[1]).cpu()
        return {k: float(v) for k, v in zip(keys, values, strict=True) if v == v}

    def count_tokens(self, batch: UpdateBatch) -> None:
        """Cumulative compute counters (this rank's), for the report's FLOP estimates:
        ``sampled`` (policy forward while sampling, dropped rows included), ``trained``
        (forward + backward per update pass), ``frozen`` (forward of frozen models and no-grad
        re-scoring)."""
        rollouts = batch.rollouts
        generated = int(rollouts.completion_mask.sum())
        if batch.sampled_tokens is not None:
            generated = batch.sampled_tokens
        sequence = int(rollouts.attention_mask().sum())
        passes = self.hparams.ppo_epochs
        extra = 1 if self.hparams.ppo_epochs > 1 or self.hparams.num_minibatches > 1 else 0
        self.token_counts["sampled"] += generated
        self.token_counts["trained"] += passes * sequence
        self.token_counts["frozen"] += (extra + len(self.frozen_models())) * sequence

    def micro_batches(self, rows: torch.Tensor) -> list[torch.Tensor]:
        size = self.hparams.micro_batch_size or len(rows)
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def run_updates(self, batch: UpdateBatch) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """``ppo_epochs`` passes over ``num_minibatches`` shuffled mini-batches, one optimizer
        step each; returns per-micro-batch entropy records and averaged loss metrics."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        n = len(batch)
        shuffle = torch.Generator().manual_seed(hash((self.hparams.seed, self.rl_step)) % 2**62)
        records, totals, count = [], {}, 0
        thinking_mask, answer_mask = self.spans(batch.rollouts)
        for _ in range(self.hparams.ppo_epochs):
            order = torch.randperm(n, generator=shuffle).to(self.device)
            for mini in order.chunk(self.hparams.num_minibatches):
                normalizer = self.loss_normalizer(batch.select(mini))
                losses = []
                for micro in self.micro_batches(mini):
                    part = batch.select(micro)
                    loss, metrics, entropy = self.batch_loss(part, normalizer)
                    self.manual_backward(loss)
                    losses.append(loss.detach())
                    length = part.rollouts.completion_ids.shape[1]
                    records.append(
                        {
                            "entropy": entropy.detach(),
                            "thinking_span": thinking_mask[micro, :length],
                            "answer_span": answer_mask[micro, :length],
                            "thinking_mode": part.thinking,
                        }
                    )
                    for key, value in metrics.items():
                        totals[key] = totals.get(key, 0.0) + float(value) * len(micro)
                    count += len(micro)
                self._optimizer_step(optimizer, scheduler, torch.stack(losses).sum(), totals)
        out = {f"train/{k}": v / max(count, 1) for k, v in totals.items() if not k.startswith("_")}
        out["train/grad_norm"] = totals.get("_grad_norm", 0.0) / max(
            self.hparams.ppo_epochs * self.hparams.num_minibatches, 1
        )
        return records, out

    def setup(self, stage: str) -> None:
        """Under DeepSpeed the engine clips (gradients live in its partitions): hand it
        ``max_grad_norm`` before it is built."""
        strategy = self._strategy()
        if deepspeed_stage(strategy) is not None and self.hparams.max_grad_norm:
            strategy.config.setdefault("gradient_clipping", self.hparams.max_grad_norm)

    def _optimizer_step(self, optimizer: Any, scheduler: Any, loss: torch.Tensor, totals) -> None:
        strategy = self._strategy()
        if deepspeed_stage(strategy) is not None:
            # The engine clips, skips overflowing steps and knows the norm only after stepping.
            optimizer.step()
            optimizer.zero_grad()
            if scheduler is not None:
                scheduler.step()
            norm = getattr(strategy.model, "get_global_grad_norm", lambda: None)()
            totals["_grad_norm"] = totals.get("_grad_norm", 0.0) + float(norm or 0.0)
            return
        guard = self.nonfinite_guard  # non-finite: gradients dropped, counted, stop past limits
        if not guard.check(loss, self.model, step=self.global_step):
            rank_zero_warn(
                f"[{self.stage}] non-finite loss or gradient (loss {float(loss)}): optimizer "
                f"step skipped ({guard.skipped} so far)"
            )
            return
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.hparams.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        totals["_grad_norm"] = totals.get("_grad_norm", 0.0) + norm
        optimizer.step()
        optimizer.zero_grad()
        if scheduler is not None:
            scheduler.step()

    # -- logging and state ------------------------------------------------------------------
    def log_samples(
        self, sampled: SampledRows, scores: list[float], extra: dict[str, list]
    ) -> None:
        """A table of rollouts every ``samples_every_n_steps`` steps (appended per step)."""
        every = self.hparams.samples_every_n_steps
        if not every or self.rl_step % every or self._trainer is None:
            return
        n = min(self.hparams.log_samples, len(sampled.rows))
        rows = []
        for i in range(n):
            rows.append(
                {
                    "step": self.global_step,
                    "mode": "think" if sampled.rows[i].thinking else "no_think",
                    "prompt": sampled.messages[i][-1].get("content", ""),
                    "completion": sampled.replies[i],
                    "reward": scores[i],
                    **{key: values[i] for key, values in extra.items()},
                }
            )
        log_table(self.trainer, rows, f"samples/{self.stage}_step{self.global_step:06d}.json")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # random generators, skipped-step counters
        checkpoint["on_policy"] = {"rl_step": self.rl_step}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("on_policy", {})
        self.rl_step = state.get("rl_step", 0)
        self.token_counts.update(state.get("token_counts", {}))  # where older versions kept them

    # -- frozen models ----------------------------------------------------------------------
