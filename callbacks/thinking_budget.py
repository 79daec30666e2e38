"""``ThinkingBudget``: the thinking-token budget of a module's sampling, and budget sweeps.

Qwen3 lets users cap thinking: when thinking reaches N tokens the sampler inserts the
stop-thinking text and ``</think>`` and lets the model answer (report section 4.3). This callback
sets that budget on the LightningModule (``thinking_budget``, ``stop_thinking``), which every
sampler driven by the module uses (evaluation now, rollouts in RL stages), and can sweep a list
of budgets, logging thinking-mode accuracy per budget: the report's Figure 2 in miniature.

What a sweep logs (MLflow):

* ``budget_sweep/think_accuracy`` with the **budget as the step** (and
  ``budget_sweep/no_think_accuracy`` at step 0: no thinking): runs overlay in one chart. Only the
  sweep at the end of fit is a metric; periodic sweeps are rows of the table and lines of the
  figure (a metric key per step would be a chart section per step);
* ``figures/budget_sweep.png``: accuracy against budget, one line per sweep so far;
* ``budget_sweep.json`` (step, budget, mode, accuracy, thinking tokens, forced share: the counts
  that are not metrics) and ``samples/thinking_budget.json`` (step, mode, budget, prompt,
  completion, verdict), both appended at every sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_qwen3.callbacks._evaluation import (
    default_verifier,
    evaluation_queries,
    rank_share,
    require_sampling_module,
    sample_rows,
    synced_mean,
)
from lit_qwen3.chat import STOP_THINKING, THINK_END
from lit_qwen3.evaluation import evaluate_mode
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.plots import budget_sweep_figure
from lit_qwen3.runtime.tracking import log_figure, log_series, log_table


class ThinkingBudget(Callback):
    """Set the module's thinking budget and sweep budgets at the end of fit (or every N steps).

    Args:
        budget: the budget of the module's sampling; None: unlimited.
        stop_thinking: text forced when the budget is reached; must contain ``</think>``.
            Default: Qwen's docs' sentence. Toy models trained on cut-off thinking use
            ``"\\n</think>\\n\\n"``.
        sweep: budgets to evaluate (thinking mode), e.g. ``[0, 16, 32, 64]``; empty: no sweep.
        sweep_every_n_steps: also sweep every this many steps (0: only at the end of fit).
        include_no_think: add the non-thinking accuracy to each sweep, as the flat reference line.
        n_samples: samples per query and budget (accuracy is their mean).
        log_samples: completions per budget and sweep written to the samples table.
        num_queries / queries / verifier / max_new_tokens / batch_size / seed: as in ``PassAtK``.
    """

    def __init__(
        self,
        budget: int | None = None,
        stop_thinking: str = STOP_THINKING,
        sweep: Sequence[int] = (),
        sweep_every_n_steps: int = 0,
        include_no_think: bool = True,
        n_samples: int = 1,
        num_queries: int | None = 64,
        queries: Sequence[dict[str, Any]] | str | None = None,
        verifier: str | None = None,
        max_new_tokens: int = 256,
        batch_size: int = 64,
        seed: int = 0,
        log_samples: int = 4,
    ) -> None:
        if budget is not None and budget < 0:
            raise ValueError(f"budget must be >= 0 or None, got {budget}")
        if any(b < 0 for b in sweep):
            raise ValueError(f"sweep budgets must be >= 0, got {list(sweep)}")
        if THINK_END not in stop_thinking:
            raise ValueError(f"stop_thinking must contain {THINK_END!r}, got {stop_thinking!r}")
        if sweep_every_n_steps < 0:
            raise ValueError(f"sweep_every_n_steps must be >= 0, got {sweep_every_n_steps}")
        self.budget = budget
        self.stop_thinking = stop_thinking
        self.sweep = tuple(sorted(set(sweep)))
        self.sweep_every_n_steps = sweep_every_n_steps
        self.include_no_think = include_no_think
        self.n_samples = n_samples
        self.num_queries = num_queries
        self.queries = queries
        self.verifier = verifier
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.log_samples = log_samples
        self.last_sweep_step = -1
        """Global step of the last sweep (saved in checkpoints)."""
        self.history: dict[int, tuple[list[tuple[int, float]], float | None]] = {}
        """Every sweep so far: step -> ((budget, thinking accuracy) points, no-think accuracy)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        pl_module.thinking_budget = self.budget
        pl_module.stop_thinking = self.stop_thinking

    def run_sweep(
        self, trainer: Trainer, pl_module: LightningModule, *, final: bool = True
    ) -> dict[str, float]:
        """Evaluate every budget of the sweep now; log it and return ``{label: accuracy}``
        (labels: the budgets, and ``no_think``). ``final``: the end-of-fit sweep's metric keys."""
        require_sampling_module(pl_module, "ThinkingBudget")
        queries = rank_share(evaluation_queries(trainer, self.queries, self.num_queries), trainer)
        verifier = default_verifier(trainer, self.verifier)
        points: list[tuple[str, int | None, bool]] = [(str(b), b, True) for b in self.sweep]
        if self.include_no_think:
            points.append(("no_think", None, False))
        step = trainer.global_step
        accuracy, rows, samples = {}, [], []
        for label, budget, thinking in points:
            sampling = SamplingConfig.qwen3(thinking, max_new_tokens=self.max_new_tokens)
            result = evaluate_mode(
                pl_module.model,
                pl_module.tokenizer,
                queries,
                thinking=thinking,
                n_samples=self.n_samples,
                verifier=verifier,
                sampling=sampling,
                thinking_budget=budget,
                stop_thinking=self.stop_thinking,
                batch_size=self.batch_size,
                seed=self.seed + trainer.global_rank,
            )
            row: dict[str, Any] = {"step": step, "budget": label}
            row["mode"] = "think" if thinking else "no_think"
            for name in ("accuracy", "thinking_tokens", "budget_forced"):
                weight = result.correct.numel()
                row[name] = synced_mean(result.metrics[name], weight, pl_module.device)
            accuracy[label] = row["accuracy"]
            rows.append(row)
            samples += sample_rows(result.samples, queries, step, self.log_samples)
        self.last_sweep_step = step
        think = [(b, accuracy[str(b)]) for b in self.sweep]
        no_think = accuracy.get("no_think")
        self.history[step] = (think, no_think)
        if final:  # the curve to compare across runs; earlier sweeps: the table and figure
            log_series(trainer, "budget_sweep/think_accuracy", think)
            if no_think is not None:  # budget 0 is no thinking: one point, not a flat copy
                log_series(trainer, "budget_sweep/no_think_accuracy", [(0, no_think)])
        log_table(trainer, rows, "budget_sweep.json")
        log_table(trainer, samples, "samples/thinking_budget.json")
        if trainer.is_global_zero:
            figure = budget_sweep_figure(self.history, f"Accuracy against budget, step {step}")
            log_figure(trainer, figure, "figures/budget_sweep.png")
        return accuracy

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        every, step = self.sweep_every_n_steps, trainer.global_step
        last = 0 < trainer.max_steps <= step  # left to on_train_end: the final sweep
        if self.sweep and every and step % every == 0 and step != self.last_sweep_step and not last:
            self.run_sweep(trainer, pl_module, final=False)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.sweep and trainer.global_step != self.last_sweep_step:
            self.run_sweep(trainer, pl_module, final=True)

    def state_dict(self) -> dict[str, Any]:
        return {"last_sweep_step": self.last_sweep_step, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_sweep_step = state_dict["last_sweep_step"]
        self.history = dict(state_dict.get("history", {}))
