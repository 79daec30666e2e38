"""``PassAtK``: sample n answers per validation query in each thinking mode and log pass@k.

Every ``every_n_steps`` optimizer steps (and before the first step and after the last), the
callback samples ``n_samples`` completions per query with the rollout sampler, verifies them, and
logs the unbiased pass@k (``1 - C(n-c, k) / C(n, k)``) for each ``k`` and mode, plus mean
thinking length and the truncation rate, under ``<name>/{mode}/...`` (``val/``: the datamodule's
validation queries; ``eval/``: the callback's own ``queries``). MLflow also gets
``figures/pass_at_k.png`` (pass@k against k, newest evaluation) and one samples table,
``samples/pass_at_k.json`` (step, mode, budget, prompt, completion, verdict), appended at every
evaluation so that MLflow's evaluation view lines runs up.

The LightningModule must expose ``model``, ``tokenizer`` and, optionally, ``thinking_budget`` and
``stop_thinking`` (the budget its sampling uses). Queries come from the callback's ``queries`` or
the datamodule's ``val_queries``; each rank evaluates its share and the metrics are synced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_qwen3.callbacks._evaluation import (
    default_verifier,
    evaluation_queries,
    rank_share,
    require_sampling_module,
    sample_rows,
    synced_mean,
)
from lit_qwen3.chat import STOP_THINKING
from lit_qwen3.evaluation import evaluate_mode, multi_turn_queries
from lit_qwen3.ops.metrics import PassAtK as PassAtKMetric
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.plots import pass_at_k_figure
from lit_qwen3.runtime.tracking import log_figure, log_metrics, log_table

MODES = {"think": True, "no_think": False}


class PassAtK(Callback):
    """Log pass@k in thinking and non-thinking mode during and after training.

    Args:
        ks: the k of pass@k; ``n_samples`` must be at least the largest.
        n_samples: completions sampled per query.
        modes: any of ``think`` and ``no_think``.
        every_n_steps: evaluate every this many optimizer steps (0: only at start and end).
        on_start / on_end: evaluate before the first step (not again on resume) / after the last.
        num_queries: evaluate the first this many queries (None: all).
        queries: ``[{"messages": [...], "answer": ...}]``, or an evaluation file (JSONL or a
            ``datasets`` directory) in any query format, public ones included (AIME's
            ``problem``/``answer``, LiveCodeBench...); None: ``datamodule.val_queries``.
        verifier: ``arithmetic``, a reward name such as ``math``, or None for the datamodule's.
        max_new_tokens: generation length limit.
        temperature, top_p, top_k: None uses Qwen3's recommended settings of each mode.
        batch_size: rows sampled at once.
        log_samples: completions per mode and evaluation written to the MLflow samples table.
        seed: sampling seed (each evaluation is reproducible).
        template_switch: ask for the mode with the template's ``enable_thinking`` too (as users
            run Qwen3), not only with the flag.
        think_follow: also measure ThinkFollow (report Table 22): one reply per query asked
            by the flag only, in single-turn prompts and in multi-turn ones whose earlier turn
            carries a random flag; logged as ``<name>/{mode}/think_follow`` and
            ``<name>/{mode}/think_follow_multi_turn``.
        name: the evaluation set's name, which the metric keys begin with; None: ``val`` for
            the datamodule's validation queries, ``eval`` for ``queries`` (a run's report may
            log other sets, e.g. the pipeline's ``heldout/``: keys never mix sets).
    """

    def __init__(
        self,
        ks: Sequence[int] = (1, 4, 8),
        n_samples: int = 8,
        modes: Sequence[str] = ("think", "no_think"),
        every_n_steps: int = 100,
        on_start: bool = True,
        on_end: bool = True,
        num_queries: int | None = 32,
        queries: Sequence[dict[str, Any]] | str | None = None,
        verifier: str | None = None,
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        batch_size: int = 64,
        log_samples: int = 16,
        seed: int = 0,
        template_switch: bool = True,
        think_follow: bool = True,
        name: str | None = None,
    ) -> None:
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ValueError(
                f"modes must be a non-empty subset of {list(MODES)}, got {list(modes)}"
            )
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be positive integers, got {list(ks)}")
        if n_samples < max(ks):
            raise ValueError(f"n_samples={n_samples} is smaller than the largest k={max(ks)}")
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.ks = tuple(sorted(set(ks)))
        self.n_samples = n_samples
        self.modes = tuple(modes)
        self.every_n_steps = every_n_steps
        self.on_start, self.on_end = on_start, on_end
        self.num_queries = num_queries
        self.queries = queries
        self.verifier = verifier
        self.max_new_tokens = max_new_tokens
        self.overrides = {
            k: v
            for k, v in {"temperature": temperature, "top_p": top_p, "top_k": top_k}.items()
            if v is not None
        }
        self.batch_size = batch_size
        self.log_samples = log_samples
        self.seed = seed
        self.template_switch = template_switch
        self.think_follow = think_follow
        self.name = name or ("val" if queries is None else "eval")
        self.last_step = -1
        """Global step of the last evaluation (saved in checkpoints: no double run on resume)."""

    def sampling(self, mode: str) -> SamplingConfig:
        return SamplingConfig.qwen3(
            MODES[mode], max_new_tokens=self.max_new_tokens, **self.overrides
        )

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Run the evaluation now, log it, and return the metrics (same on every rank)."""
        require_sampling_module(pl_module, "PassAtK")
        queries = evaluation_queries(trainer, self.queries, self.num_queries)
        share = rank_share(queries, trainer)
        verifier = default_verifier(trainer, self.verifier)
        metrics: dict[str, float] = {}
        table = []
        for mode in self.modes:
            result = evaluate_mode(
                pl_module.model,
                pl_module.tokenizer,
                share,
                thinking=MODES[mode],
                n_samples=self.n_samples,
                ks=self.ks,
                verifier=verifier,
                sampling=self.sampling(mode),
                thinking_budget=getattr(pl_module, "thinking_budget", None),
                stop_thinking=getattr(pl_module, "stop_thinking", STOP_THINKING),
                batch_size=self.batch_size,
                seed=self.seed + trainer.global_rank,
                template_switch=self.template_switch,
            )
            metrics.update(self._synced(result, mode, pl_module.device))
            table += sample_rows(result.samples, share, trainer.global_step, self.log_samples)
            if self.think_follow:
                metrics.update(self._think_follow(trainer, pl_module, share, mode, verifier))
        self.last_step = trainer.global_step
        log_metrics(trainer, metrics)
        log_table(trainer, table, "samples/pass_at_k.json")
        curves = {
            mode: {k: metrics[f"{self.name}/{mode}/pass_at_{k}"] for k in self.ks}
            for mode in self.modes
        }
        if trainer.is_global_zero:
            title = f"pass@k at step {trainer.global_step}"
            log_figure(trainer, pass_at_k_figure(curves, title), "figures/pass_at_k.png")
        return metrics

    def _think_follow(
        self, trainer: Trainer, pl_module: LightningModule, queries: list, mode: str, verifier: Any
    ) -> dict[str, float]:
        """ThinkFollow with the flag as the only cue, single- and multi-turn."""
        out = {}
        for name, prompts in (
            ("think_follow", queries),
            ("think_follow_multi_turn", multi_turn_queries(queries, self.seed)),
        ):
            result = evaluate_mode(
                pl_module.model,
                pl_module.tokenizer,
                prompts,
                thinking=MODES[mode],
                verifier=verifier,
                sampling=self.sampling(mode),
                thinking_budget=getattr(pl_module, "thinking_budget", None),
                stop_thinking=getattr(pl_module, "stop_thinking", STOP_THINKING),
                batch_size=self.batch_size,
                seed=self.seed + trainer.global_rank,
                template_switch=False,
            )
            value, weight = result.metrics["think_follow"], len(prompts)
            out[f"{self.name}/{mode}/{name}"] = synced_mean(value, weight, pl_module.device)
        return out

    def _synced(self, result: Any, mode: str, device: torch.device) -> dict[str, float]:
        """Merge the ranks' results with torchmetrics (exact: sums of per-query terms)."""
        pass_at_k = PassAtKMetric(ks=self.ks).to(device)
        pass_at_k.update(result.correct.to(device))
        out = {
            f"{self.name}/{mode}/{k.replace('@', '_at_')}": float(v)
            for k, v in pass_at_k.compute().items()
        }
        # accuracy is pass@1; non-thinking mode neither thinks nor meets a thinking budget
        names = (
            ("thinking_tokens", "truncated", "budget_forced") if mode == "think" else ("truncated",)
        )
        for name in names if 1 in self.ks else ("accuracy", *names):
            weight = result.correct.numel()
            out[f"{self.name}/{mode}/{name}"] = synced_mean(result.metrics[name], weight, device)
        return out

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # step 0 only: a resumed run already evaluated its start
        if self.on_start and trainer.global_step == 0 and self.last_step < 0:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self.last_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.on_end and trainer.global_step != self.last_step:
            self.evaluate(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = state_dict["last_step"]
