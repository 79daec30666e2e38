"""Group-relative RL (GRPO and its DAPO / Dr.GRPO variants) on the on-policy engine.

One training step, for a batch of queries:

1. G rollouts per query (a group), in the query's mode, under the module's thinking budget,
   with tool calls when the query names tools;
2. rewards from the configured :class:`~lit_qwen3.rewards.CompositeReward` (per-query routing:
   one batch may mix math, code, format and instruction rewards); overlong replies masked or
   softly penalised;
3. dynamic sampling: groups whose rewards are all equal carry no signal; they are dropped and
   refilled with fresh queries (``datamodule.refill_queries``) for up to ``max_refill_rounds``
   rounds; the step keeps a fixed number of groups, padding with masked no-signal groups, so
   shapes (and data-parallel ranks) stay in step;
4. group advantages; old log-probs from the trainer's forward when rollouts are reused
   (``ppo_epochs > 1`` or several mini-batches), reference log-probs when a KL is configured;
5. :func:`~lit_qwen3.ops.losses.grpo_loss` per mini-batch: clip-higher, dual clip, TIS against the
   sampler's own log-probs, KL, entropy bonus, the three loss aggregations; or, by ``loss`` keys,
   GSPO, SAPO, CISPO, Clip-Cov, KL-Cov, high-entropy tokens only, masked or truncated
   sampler/trainer weights per token or sequence (README, "RL methods"). The mismatch between the
   sampler's log-probs and the trainer's is logged under ``train/mismatch/``. Every log-prob
   (policy, old policy, reference, sampler) is the token's under the distribution it was drawn
   from: the sampling temperature and truncation, renormalised over the kept support
   (:mod:`lit_qwen3.ops.truncation`; TRL uses the untruncated one, huggingface/trl#6789).

Where this departs from the GRPO paper (Shao et al. 2024) and follows later practice:
1. no KL to a reference by default (``loss.kl_coef = 0``, as DAPO and many Qwen-style runs);
2. token-mean loss aggregation and clip-higher (``eps_high = 0.28``) by default (DAPO);
3. truncated replies are masked out of the loss by default (DAPO's overlong filtering);
4. tokens the thinking budget forced and tokens tools wrote never receive gradient.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist

from lit_qwen3.chat import STOP_THINKING
from lit_qwen3.models import load_model
from lit_qwen3.ops.advantages import passk_analytic_advantages, passk_max_advantages
from lit_qwen3.ops.losses import (
    GRPOLossConfig,
    group_advantages,
    groups_with_signal,
    grpo_loss,
    soft_overlong_penalty,
)
from lit_qwen3.ops.policy_objectives import mismatch_metrics
from lit_qwen3.queries import Query, check_reward_metadata, check_reward_names
from lit_qwen3.rewards import CompositeReward, Sample
from lit_qwen3.rollout.generation import Rollouts, SamplingConfig
from lit_qwen3.rollout.placement import needs_lockstep
from lit_qwen3.runtime.faults import NonFiniteLimits
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages.on_policy import (
    OnPolicyStage,
    SampledRows,
    UpdateBatch,
    thinking_metrics,
)

torch.serialization.add_safe_globals([GRPOLossConfig])  # a hyperparameter (see on_policy.py)

ADVANTAGE_ESTIMATORS = ("grpo", "grpo_passk", "pass_at_k")


class GroupRelativeRL(OnPolicyStage):
    """GRPO with rewards (see the module docstring); ``ReasoningRL`` and ``GeneralRL`` are it.

    Args:
        model: the policy: the previous stage's output directory, a preset or a Qwen3 name.
        tokenizer: defaults to the model's own.
        output_dir: where the trained policy is written after fit (None: ``<run dir>/model``).
        optimizer: AdamW and schedule (``lr`` 1e-6 is usual for real models, 1e-4 for toys).
        rewards: the reward composite: ``[{name: arithmetic, weight: 1.0, kwargs: {...}}]`` or
            ``{name: weight}``; queries route to a subset with ``reward.names``.
        reward_workers: worker processes for rewards that run in workers (math, code); 0
            scores in this process.
        reward_timeout: seconds one worker reward may spend on one sample.
        group_size: rollouts per query (G).
        sampling: the sampler's settings; the trainer scores under the same temperature and
            truncation (top-k / top-p / min-p), so ratios stay unbiased for any of them.
        thinking_budget / stop_thinking: the budget of rollouts and the text forced at it.
        loss: the loss knobs (method, clipping, aggregation, KL, entropy bonus, TIS/MIS).
        advantage_scale: ``group`` (GRPO), ``batch`` or None (Dr.GRPO: no std division).
        leave_one_out: RLOO baseline instead of the group mean.
        advantage_estimator: ``grpo`` (group-relative, with ``advantage_scale`` and
            ``leave_one_out``), ``grpo_passk`` (verl's pass@k estimator: only each group's best
            rollout gets the gap to the runner-up) or ``pass_at_k`` (Chen et al. 2025's
            analytic pass@k advantages, binary rewards); see :mod:`lit_qwen3.ops.advantages`.
        pass_k: the k of ``pass_at_k``.
        ppo_epochs / num_minibatches: off-policy reuse: passes over the rollouts and optimizer
            steps per pass.
        micro_batch_size: rows per forward (gradient accumulation); None: a whole mini-batch.
        max_grad_norm: gradient clipping.
        dynamic_sampling: drop zero-variance groups and refill them with fresh queries.
        max_refill_rounds: extra sampling rounds per step for refills.
        overlong: ``mask`` (drop truncated replies from the loss), ``penalty`` (DAPO's soft
            length penalty, ``overlong_buffer`` tokens before the limit), or ``none``.
        reference_model: source of the frozen reference for the KL (default: the initial
            policy); loaded only when ``loss.kl_coef > 0``.
        think_fraction: for ``mixed`` queries, the share of groups sampled in thinking mode.
        template_switch: also set the template's ``enable_thinking`` for non-thinking prompts
            (the template writes the empty block); False asks by the flag only, and the policy
            must write the block itself (flag-following training).
        render_tools: render the schemas of a query's tools in the system prompt.
        max_tool_turns: most tool calls per rollout.
        chunk_size: rows of logits held at once when re-scoring (memory).
        samples_every_n_steps / log_samples: the MLflow samples table.
        dtype, attn_implementation, gradient_checkpointing, seed, allow_download, nonfinite: as
            every stage (``nonfinite``: when to stop after non-finite steps, each one skipped).
        compile: run the policy's training forward and its lean decode step through
            ``torch.compile`` (plain Qwen3; minutes of compilation, then faster steps).
        rollout_backend: ``builtin`` (the default, CPU and GPU) or ``vllm`` (GPU, the ``vllm``
            extra: a colocated engine, weights synced after every update, the same thinking
            budget; :mod:`lit_qwen3.rollout.vllm_rollouts`).
        vllm: options of the vLLM sampler (``gpu_memory_utilization``, ``max_model_len``,
            ``enable_sleep_mode``, ``engine_kwargs``).
    """

    stage = "grpo"

    def __init__(
        self,
        model: str = "toy-teacher",
        tokenizer: str | None = None,
        output_dir: str | None = None,
        optimizer: OptimizerConfig | None = None,
        rewards: list[dict[str, Any]] | dict[str, float] | None = None,
        reward_workers: int = 0,
        reward_timeout: float = 10.0,
        group_size: int = 8,
        sampling: SamplingConfig | None = None,
        thinking_budget: int | None = None,
        stop_thinking: str | None = None,
        loss: GRPOLossConfig | None = None,
        advantage_scale: Literal["group", "batch"] | None = "group",
        leave_one_out: bool = False,
        advantage_estimator: Literal["grpo", "grpo_passk", "pass_at_k"] = "grpo",
        pass_k: int = 4,
        ppo_epochs: int = 1,
        num_minibatches: int = 1,
        micro_batch_size: int | None = None,
        max_grad_norm: float | None = 1.0,
        dynamic_sampling: bool = True,
        max_refill_rounds: int = 1,
        overlong: Literal["mask", "penalty", "none"] = "mask",
        overlong_buffer: int = 16,
        overlong_penalty: float = 1.0,
        reference_model: str | None = None,
        think_fraction: float = 0.5,
        template_switch: bool = True,
        render_tools: bool = False,
        max_tool_turns: int = 2,
        chunk_size: int = 1024,
        samples_every_n_steps: int = 10,
        log_samples: int = 16,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        allow_download: bool = False,
        nonfinite: NonFiniteLimits | None = None,
        compile: bool = False,
        rollout_backend: Literal["builtin", "vllm"] = "builtin",
        vllm: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not isinstance(group_size, int) or group_size < 2:
            raise ValueError(f"group_size must be an int >= 2, got {group_size!r}")
        if overlong not in ("mask", "penalty", "none"):
            raise ValueError(f"overlong must be 'mask', 'penalty' or 'none', got {overlong!r}")
        if advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, "
                f"got {advantage_estimator!r}"
            )
        if advantage_estimator == "pass_at_k" and not (
            isinstance(pass_k, int) and 1 <= pass_k <= group_size
        ):
            raise ValueError(
                f"pass_k must be an int in [1, group_size={group_size}], got {pass_k!r}"
            )
        if max_refill_rounds < 0:
            raise ValueError(f"max_refill_rounds must be >= 0, got {max_refill_rounds}")
        self.init_stage(
            model, tokenizer, optimizer, allow_download=allow_download, nonfinite=nonfinite
        )
        self.init_rollouts(
            sampling=sampling or SamplingConfig(max_new_tokens=256, temperature=1.0),
            thinking_budget=thinking_budget,
            stop_thinking=stop_thinking or STOP_THINKING,
            ppo_epochs=ppo_epochs,
            num_minibatches=num_minibatches,
            micro_batch_size=micro_batch_size,
            max_grad_norm=max_grad_norm,
            think_fraction=think_fraction,
            template_switch=template_switch,
            max_tool_turns=max_tool_turns,
            chunk_size=chunk_size,
            samples_every_n_steps=samples_every_n_steps,
            log_samples=log_samples,
            rollout_backend=rollout_backend,
            vllm_options=vllm,
        )
        self.loss_config = loss or GRPOLossConfig()
        if self.loss_config.max_tokens is None and self.loss_config.loss_agg_mode.endswith("norm"):
            self.loss_config.max_tokens = self.sampling.max_new_tokens
        self.rewards = CompositeReward(
            rewards if rewards is not None else [{"name": "math"}],
            num_workers=reward_workers,
            timeout=reward_timeout,
        )
        object.__setattr__(self, "reference", None)  # frozen: not a submodule
        self._cov_generator = torch.Generator().manual_seed(seed)  # Clip-Cov's random draw

    def build_model(self) -> torch.nn.Module:
        hp = self.hparams
        model = load_model(
            hp.model,
            dtype=hp.dtype,
            attn_implementation=hp.attn_implementation,
            seed=hp.seed,
            allow_download=hp.allow_download,
        )
        if self.loss_config.kl_coef > 0 and self.reference is None:
            object.__setattr__(self, "reference", self.load_frozen(hp.reference_model or hp.model))
        return model

    def frozen_models(self) -> list[torch.nn.Module]:
        return [self.reference] if self.reference is not None else []

    def setup(self, stage: str) -> None:
        """Check that the datamodule's queries name only this stage's rewards and carry the
        metadata they need (fail early, naming the row)."""
        super().setup(stage)
        queries = (
            getattr(self._trainer.datamodule, "train_queries", None) if self._trainer else None
        )
        if queries:
            check_reward_names(queries, self.rewards.labels)
            check_reward_metadata(queries, self.rewards)

    # -- rollouts and rewards ---------------------------------------------------------------
    def score(self, sampled: SampledRows) -> tuple[torch.Tensor, list[dict[str, float]]]:
        """Rewards (B,) of the sampled rows and each row's per-label scores."""
        samples = []
        call_thinking = sampled.call_thinking or [None] * len(sampled.rows)
        for row, messages, reply, calls, thinking in zip(
            sampled.rows,
            sampled.messages,
            sampled.replies,
            sampled.tool_calls,
            call_thinking,
            strict=True,
        ):
            metadata = row.query.reward_metadata()
            if calls:
                metadata["tool_calls"] = calls
                metadata["call_thinking"] = thinking
            samples.append(Sample.from_completion(messages, reply, metadata=metadata))
        results = self.rewards.score_batch(samples)
        rewards = torch.tensor([r.score for r in results], dtype=torch.float32)
        rollouts = sampled.rollouts
        if self.hparams.overlong == "penalty":
            lengths = (rollouts.completion_mask - rollouts.tool_mask).sum(-1).cpu()
            rewards += soft_overlong_penalty(
                lengths,
                self.sampling.max_new_tokens,
                self.hparams.overlong_buffer,
                self.hparams.overlong_penalty,
            )
        return rewards, [r.info.get("scores", {}) for r in results]

    def refill(self, n: int) -> list[Query]:
        """Fresh queries for dynamic sampling (empty when the datamodule cannot refill)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        refill = getattr(datamodule, "refill_queries", None)
        return list(refill(n)) if refill is not None and n > 0 else []

    def _more_rounds(self, wanted: bool) -> bool:
        """Whether any rank wants another sampling round (sharded policies sample together)."""
        if not (needs_lockstep(self.model) and dist.is_initialized()):
            return wanted
        flag = torch.tensor([float(wanted)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def collect(self, queries: list[Query]) -> tuple[list[SampledRows], list[torch.Tensor], list]:
        """Sample and score groups, refilling zero-signal ones (dynamic sampling)."""
        G, generator = self.hparams.group_size, self.generator()
        parts, rewards, infos = [], [], []
        pending, rounds, kept = queries, 0, 0
        while True:
            sampled = self.sample_rows(self.expand(pending, G, rounds), generator)
            reward, info = self.score(sampled)
            parts.append(sampled)
            rewards.append(reward)
            infos.append(info)
            kept += int(groups_with_signal(reward, G).view(-1, G)[:, 0].sum())
            short = len(queries) - kept
            wanted = self.hparams.dynamic_sampling and rounds < self.hparams.max_refill_rounds
            if not self._more_rounds(wanted and short > 0):
                break
            rounds += 1
            pending = self.refill(max(short, 1))
            if not pending:  # nothing to refill with: pad with what we have
                pending = queries[: max(short, 1)]
        return parts, rewards, infos

    def make_batch(self, queries: list[Query]) -> tuple[UpdateBatch, dict[str, float]]:
        G, target = self.hparams.group_size, len(queries)
        parts, part_rewards, part_infos = self.collect(queries)
        sampled_all = parts[0] if len(parts) == 1 else _join(parts, self.think_tokens.pad_token_id)
        rewards = torch.cat(part_rewards)
        infos = [i for part in part_infos for i in part]
        signal = groups_with_signal(rewards, G).view(-1, G)[:, 0]
        first_round = signal[: len(queries)]
        # Keep `target` groups: signal first (in sampling order), then masked no-signal padding.
        if self.hparams.dynamic_sampling:
            order = torch.cat([signal.nonzero().flatten(), (~signal).nonzero().flatten()])
        else:
            order = torch.arange(len(queries))
        groups = order[:target].sort().values
        rows = (groups[:, None] * G + torch.arange(G)).flatten()
        trainable = signal[groups] if self.hparams.dynamic_sampling else torch.ones_like(groups)

        rollouts = sampled_all.rollouts.select(rows.to(self.device))
        rewards_kept = rewards[rows]
        advantages = self.advantages(rewards_kept).to(self.device)
        mask = rollouts.policy_mask()
        if self.hparams.overlong == "mask":
            mask &= ~rollouts.truncated.bool()[:, None]
        mask &= trainable.repeat_interleave(G).bool().to(self.device)[:, None]
        thinking = sampled_all.thinking[rows].to(self.device)
        # the sampler's log-probs under the distribution it drew from (truncated, renormalised),
        # which the trainer re-scores too (``sampled_distribution``)
        tensors = {"advantages": advantages, "rollout_logprobs": rollouts.sampling_logprobs}
        if self.reference is not None:
            tensors["ref_logprobs"] = self.frozen_logprobs(self.reference, rollouts)
        sampled_tokens = sum(int(part.rollouts.completion_mask.sum()) for part in parts)
        batch = UpdateBatch(rollouts, mask, thinking, tensors, sampled_tokens=sampled_tokens)

        metrics = self.rollout_metrics(rollouts, rewards_kept, thinking)
        metrics.update(self.reward_metrics([infos[i] for i in rows.tolist()]))
        metrics["train/groups_with_signal"] = float(first_round.float().mean())
        metrics["train/filtered_groups"] = float(1 - first_round.float().mean())
        metrics["train/refill_rounds"] = float(len(parts) - 1)
        metrics["train/kept_signal_groups"] = float(trainable.float().mean())
        calls = [sampled_all.tool_calls[i] for i in rows.tolist()]
        metrics["train/tool_calls_per_rollout"] = sum(map(len, calls)) / len(calls)
        self.log_samples(
            _subset(sampled_all, rows.tolist()),
            rewards_kept.tolist(),
            {"advantage": advantages.tolist()},
        )
        return batch, metrics

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """Per-rollout advantages by ``advantage_estimator``."""
        hp, G = self.hparams, self.hparams.group_size
        estimator = hp.get("advantage_estimator", "grpo")
        if estimator == "grpo_passk":
            return passk_max_advantages(rewards, G, scale=hp.advantage_scale is not None)
        if estimator == "pass_at_k":
            return passk_analytic_advantages(rewards, G, hp.pass_k)
        return group_advantages(
            rewards, G, scale=hp.advantage_scale, leave_one_out=hp.leave_one_out
        )

    def rollout_metrics(
        self, rollouts: Any, rewards: torch.Tensor, thinking: torch.Tensor
    ) -> dict[str, float]:
        G = self.hparams.group_size
        lengths = (rollouts.completion_mask - rollouts.tool_mask).sum(-1).float()
        metrics = {
            "train/reward": float(rewards.mean()),
            "train/reward_std": float(rewards.view(-1, G).std(1).mean()),
            "train/rollout_length": float(lengths.mean()),
            "train/truncated": float(rollouts.truncated.float().mean()),
            "train/think_share": float(thinking.float().mean()),
        }
        metrics.update(thinking_metrics(self, rollouts, thinking))
        for mode, selected in (("think", thinking), ("no_think", ~thinking)):
            chosen = rewards[selected.cpu()]  # NaN: none of this mode (a step of one mode
            metrics[f"train/reward/{mode}"] = float(chosen.mean()) if len(chosen) else float("nan")
        return metrics  # logs neither: its reward is train/reward)

    def reward_metrics(self, infos: list[dict[str, float]]) -> dict[str, float]:
        """Mean unweighted score of each reward over the rows it scored."""
        sums: dict[str, list[float]] = {label: [] for label in self.rewards.labels}
        for scores in infos:
            for label, value in scores.items():
                sums[label].append(value)
        nan = float("nan")  # same keys on every rank: a label no row used is NaN here
        out = {f"train/reward/{k}": sum(v) / len(v) if v else nan for k, v in sums.items()}
        if len(out) == 1:  # one reward: its score is train/reward
            out = {}
        for label, errors in self.rewards.error_counts.items():  # counters: NaN (left out)
            out[f"train/reward_errors/{label}"] = float(errors) if errors else nan  # while 0
        recycles = self.rewards.worker_recycles
        out["train/reward_worker_recycles"] = float(recycles) if recycles else nan
        return out

    # -- updates ----------------------------------------------------------------------------
    def before_updates(self, batch: UpdateBatch) -> None:
        if self.hparams.ppo_epochs > 1 or self.hparams.num_minibatches > 1:
            batch.tensors["old_logprobs"] = self.frozen_logprobs(self.model, batch.rollouts)

    def loss_normalizer(self, batch: UpdateBatch) -> float:
        if self.loss_config.loss_agg_mode == "token_mean":
            return float(batch.mask.sum().clamp(min=1))
        if self.loss_config.loss_agg_mode == "seq_mean_token_mean":
            return float((batch.mask.sum(-1) > 0).sum().clamp(min=1))
        return float(len(batch))

    def batch_loss(
        self, batch: UpdateBatch, normalizer: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        scores = self.policy_scores(batch.rollouts)
        logprobs = scores.logprobs
        old = batch.tensors.get("old_logprobs")
        config = self.loss_config
        correct = config.tis_cap is not None or config.rollout_is is not None
        loss, metrics = grpo_loss(
            logprobs,
            logprobs.detach() if old is None else old,
            batch.tensors["advantages"],
            batch.mask,
            config,
            ref_logprobs=batch.tensors.get("ref_logprobs"),
            entropy=scores.entropy,
            rollout_logprobs=batch.tensors["rollout_logprobs"] if correct else None,
            num_items_in_batch=normalizer,
            generator=self._cov_generator,
        )
        # The mismatch is the trainer's log-probs at rollout time against the sampler's, on
        # every token the policy wrote (forced and tool tokens excluded).
        policy = batch.rollouts.policy_mask()
        trainer = logprobs.detach() if old is None else old
        mismatch = mismatch_metrics(trainer, batch.tensors["rollout_logprobs"], policy)
        metrics["sampler_logprob_diff"] = mismatch["logprob_diff"]
        metrics.update({f"mismatch/{k}": v for k, v in mismatch.items()})
        for key in [k for k in metrics if k.startswith("is_")]:
            metrics[f"mismatch/{key}"] = metrics.pop(key)
        return loss, metrics, scores.entropy


def _join(parts: list[SampledRows], pad: int) -> SampledRows:
    return SampledRows(
        rows=[r for p in parts for r in p.rows],
        rollouts=Rollouts.cat([p.rollouts for p in parts], pad),
        messages=[m for p in parts for m in p.messages],
        replies=[r for p in parts for r in p.replies],
        tool_calls=[c for p in parts for c in p.tool_calls],
        call_thinking=[t for p in parts for t in p.call_thinking],
    )


def _subset(sampled: SampledRows, rows: list[int]) -> SampledRows:
    return SampledRows(
        rows=[sampled.rows[i] for i in rows],
        rollouts=sampled.rollouts,
        messages=[sampled.messages[i] for i in rows],
        replies=[sampled.replies[i] for i in rows],
        tool_calls=[sampled.tool_calls[i] for i in rows],
        call_thinking=[sampled.call_thinking[i] for i in rows] if sampled.call_thinking else [],
    )
