"""Supervised fine-tuning on chat data: the shared system of every SFT stage.

The LightningModule wires pure parts together: ``load_model`` builds the network in
``configure_model`` (so FSDP2 can shard it at init), ``causal_lm_loss`` trains assistant tokens
only; AdamW with warmup and cosine decay and the ``save_pretrained`` export at the end of fit
come from :class:`~lit_qwen3.stages.base.HFStageModule`.

Evaluation callbacks (``PassAtK``, ``ThinkingBudget``) need only ``self.model``,
``self.tokenizer``, ``self.thinking_budget`` and ``self.stop_thinking`` (the budget sampling
uses), so any module with those works with them.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch

from lit_qwen3.chat import STOP_THINKING
from lit_qwen3.models import load_model
from lit_qwen3.ops.losses import causal_lm_loss
from lit_qwen3.ops.training_forward import (
    causal_hidden_states,
    lean_forward_supported,
    packed_hidden_states,
    trailing_padding_only,
)
from lit_qwen3.runtime.faults import NonFiniteLimits
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages.base import HFStageModule


class SupervisedFineTuning(HFStageModule):
    """Chat SFT with an assistant-only loss on packed batches; writes a HF directory at the end.

    Args:
        model: a tiny preset (``toy-student``, ``toy-teacher``), a local HF directory (the
            previous stage's ``output_dir``) or a Qwen3 name / HF id in the local cache.
        tokenizer: defaults to the model's own (the toy tokenizer for presets).
        output_dir: where ``save_pretrained`` writes model + tokenizer after fit; None:
            ``<trainer.default_root_dir>/model`` (under ``lit-qwen3``: the run's directory).
        optimizer: AdamW and schedule settings.
        dtype: parameter dtype (``float32``, ``bfloat16``); None keeps the checkpoint's.
        attn_implementation: None picks ``flash_attention_2`` when usable, else ``sdpa``.
        gradient_checkpointing: recompute activations in backward to save memory.
        seed: random init of tiny presets.
        thinking_budget: thinking-token budget of the sampling done with this module
            (evaluation); ``ThinkingBudget`` sets it; None means unlimited.
        stop_thinking: the text forced when that budget is reached.
        allow_download: let ``from_pretrained`` fetch a hub model missing from the local cache
            (off: a missing model is an error that says how to download it).
        nonfinite: when to stop a run whose loss or gradients keep being non-finite (such steps
            are skipped and counted in ``train/skipped_steps``).
        compile: run a plain Qwen3 policy's training forward through ``torch.compile`` (a
            minute or more of compilation, then faster steps; see
            :mod:`lit_qwen3.ops.training_forward`).
    """

    stage: ClassVar[str] = "sft"

    def __init__(
        self,
        model: str = "toy-student",
        tokenizer: str | None = None,
        output_dir: str | None = None,
        optimizer: OptimizerConfig | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        thinking_budget: int | None = None,
        stop_thinking: str = STOP_THINKING,
        allow_download: bool = False,
        nonfinite: NonFiniteLimits | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if thinking_budget is not None and thinking_budget < 0:
            raise ValueError(f"thinking_budget must be >= 0 or None, got {thinking_budget}")
        self.save_hyperparameters()
        self.init_stage(
            model, tokenizer, optimizer, allow_download=allow_download, nonfinite=nonfinite
        )
        self.thinking_budget = thinking_budget
        self.stop_thinking = stop_thinking
        self._batch_start = time.perf_counter()
        self._step_seconds: float | None = None
        self._step_tokens = 0

    def build_model(self) -> torch.nn.Module:
        hp = self.hparams
        return load_model(
            hp.model,
            dtype=hp.dtype,
            attn_implementation=hp.attn_implementation,
            seed=hp.seed,
            allow_download=hp.get("allow_download", False),
        )

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        mask = kwargs.get("attention_mask")
        if mask is not None and "position_ids" not in kwargs and trailing_padding_only(mask):
            del kwargs["attention_mask"]  # right padding: causal attention needs no mask
        compile = self.hparams.get("compile", False)
        if not kwargs and lean_forward_supported(self.model):
            hidden = causal_hidden_states(self.model, input_ids, compile=compile)
            return self.model.get_output_embeddings()(hidden)
        if kwargs.keys() == {"position_ids"}:  # packed documents
            hidden = packed_hidden_states(
                self.model, input_ids, kwargs["position_ids"], compile=compile
            )
            return self.model.get_output_embeddings()(hidden)
        return self.model(input_ids=input_ids, use_cache=False, **kwargs).logits

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over trained tokens, number of trained tokens)."""
        extra = {k: batch[k] for k in ("position_ids", "attention_mask") if k in batch}
        logits = self(batch["input_ids"], **extra)
        loss_mask = batch["labels"] != -100
        loss = causal_lm_loss(
            logits.float(), batch["input_ids"], loss_mask, position_ids=batch.get("position_ids")
        )
        return loss, loss_mask[:, 1:].sum()

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._batch_start = self._work_start = time.perf_counter()
        self._step_seconds = None

    def on_after_backward(self) -> None:
        # forward and backward of this micro-batch (gradient accumulation steps only here)
        now = time.perf_counter()
        self.train_seconds += now - self._work_start
        self._work_start = now

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, tokens = self._loss(batch)
        self._step_tokens = batch["input_ids"].numel()
        self._count_tokens(batch)
        loss = loss * self._data_parallel_weight(tokens)
        distributed = self._trainer is not None and self.trainer.world_size > 1
        self.log("train/loss", loss, prog_bar=True, batch_size=int(tokens), sync_dist=distributed)
        return loss

    def _count_tokens(self, batch: dict[str, torch.Tensor]) -> None:
        """Add the batch's real tokens to ``token_counts`` (trained by the model, scored by
        each frozen model) and log the running totals."""
        mask = batch.get("attention_mask")
        real = int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        self.token_counts["trained"] += real
        self.token_counts["frozen"] += real * len(self.frozen_models())
        train_s = self.compute_stats()["time/train_s"]  # the counters: once, at the end
        self.log("time/train_s", train_s, rank_zero_only=True, batch_size=1)

    def _data_parallel_weight(self, tokens: torch.Tensor) -> torch.Tensor | float:
        """Each rank's token-mean loss times its share of the global tokens, times the world
        size (DDP and FSDP average gradients over ranks): the update is then the global token
        mean's, as on one device with the whole batch, however unevenly tokens fall on ranks.
        The logged loss (mean over ranks) is then the global token mean too."""
        if self._trainer is None or self.trainer.world_size == 1:
            return 1.0
        total = self.trainer.strategy.reduce(tokens.detach().float(), reduce_op="sum")
        return tokens.float() * self.trainer.world_size / total.clamp(min=1)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # this batch's forward, backward and update; evaluation callbacks come after
        now = time.perf_counter()
        self._step_seconds = now - self._batch_start
        self.train_seconds += now - self._work_start
        self._work_start = now

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self._step_seconds is not None:
            rate = self._step_tokens / max(self._step_seconds, 1e-9)
            self.log("train/tokens_per_s", rate, rank_zero_only=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, tokens = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=int(tokens))
        # log at the optimizer step the evaluation callbacks use (Lightning's own is one less)
        self.log("step", float(self.global_step), sync_dist=False)
