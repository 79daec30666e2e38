"""What every stage shares: a Hugging Face model built in ``configure_model``, its tokenizer,
AdamW with warmup and cosine decay, a ``save_pretrained`` export at the end of fit, and what a
run needs to survive faults: non-finite steps skipped (:class:`~lit_qwen3.runtime.faults.NonFiniteGuard`)
and the random generators and guard counters carried through checkpoints.

A stage subclasses :class:`HFStageModule`, calls ``save_hyperparameters()`` and
``init_stage(...)`` in its ``__init__``, and implements ``build_model``. Its hyperparameters must
include ``output_dir`` and ``gradient_checkpointing``. Subclasses that override
``on_train_start``, ``on_save_checkpoint`` or ``on_load_checkpoint`` call ``super()``.

* ``output_dir=None`` exports to ``<trainer.default_root_dir>/model``: under ``lit-qwen3`` that
  is the run's own directory (``lit_qwen3.runtime.runs``), in a plain Trainer the working directory.
* Automatic optimisation: every optimizer step is checked first; a non-finite loss or gradient
  drops the step's gradients (the step changes nothing), ``train/skipped_steps`` counts it, and
  the run stops after ``nonfinite`` limits. Manual optimisation (RL stages) calls
  ``if self.nonfinite_guard.check(loss, self.model, step=self.global_step): optimizer.step()``.
* Logged every step: ``train/lr`` (first parameter group) and ``train/grad_norm``, at the
  optimizer step like every ``train/*`` metric (manual optimisation: ``trainer.global_step``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_qwen3.models import (
    enable_gradient_checkpointing,
    load_model,
    load_tokenizer,
    shard_for_fsdp2,
)
from lit_qwen3.rollout.placement import needs_lockstep
from lit_qwen3.runtime.checkpointing import capture_rng_state, restore_rng_state
from lit_qwen3.runtime.export import export_pretrained
from lit_qwen3.runtime.faults import NonFiniteGuard, NonFiniteLimits
from lit_qwen3.runtime.optim import OptimizerConfig, configure_adamw
from lit_qwen3.runtime.strategies import (
    frozen_zero3,
    fsdp2_options,
    hf_zero3_config,
    is_zero3_partitioned,
)
from lit_qwen3.runtime.tracking import log_metrics

# Stage hyperparameters hold these config objects; resuming loads checkpoints with
# ``torch.load(weights_only=True)``, which accepts only the classes it is told about.
torch.serialization.add_safe_globals([OptimizerConfig, NonFiniteLimits])

_CHECKPOINT_KEY = "lit_qwen3"


class HFStageModule(LightningModule):
    """Base of the stage modules: the network is a plain HF model in ``self.model``."""

    stage: ClassVar[str] = "stage"
    model: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase
    exported_to: Path | None = None
    """Where ``on_fit_end`` wrote the model (None until it did)."""

    def init_stage(
        self,
        model: str,
        tokenizer: str | None,
        optimizer: OptimizerConfig | None,
        *,
        allow_download: bool = False,
        nonfinite: NonFiniteLimits | None = None,
    ) -> None:
        """Resolve the tokenizer now (cheap); the model waits for ``configure_model``."""
        self.optimizer_config = optimizer or OptimizerConfig()
        self.tokenizer = load_tokenizer(tokenizer or model, allow_download=allow_download)
        self.nonfinite_guard = NonFiniteGuard.from_limits(nonfinite)
        self.model = None
        self._guard_loss: torch.Tensor | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self.token_counts = {"sampled": 0, "trained": 0, "frozen": 0}
        """This rank's cumulative compute counters, logged summed over ranks as
        ``stats/{name}_tokens`` once, when training ends, and saved in checkpoints (the report's FLOP estimates):
        ``sampled`` (policy forward while sampling), ``trained`` (forward + backward),
        ``frozen`` (frozen models' forwards)."""
        self.train_seconds = 0.0
        """Cumulative seconds of training work (sampling, forward, backward, optimizer steps;
        not start-up, validation or evaluation callbacks), logged as ``time/train_s`` and saved
        in checkpoints: the report's training time beside its FLOPs."""

    def build_model(self) -> PreTrainedModel:
        """The stage's network, unsharded; called once by ``configure_model``."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Build (and, under ModelParallelStrategy, shard) the network once, in train mode."""
        if self.model is not None:
            return
        # ZeRO-3 partitions weights as they are built: transformers loads into the partitions
        # while this config object lives (see lit_qwen3.runtime.strategies.hf_zero3_config).
        object.__setattr__(self, "_hf_zero3", hf_zero3_config(self._strategy()))
        model = self.build_model()
        if len(self.tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} tokens but model {self.hparams.model!r} "
                f"only {model.config.vocab_size} embeddings: pass the model's own tokenizer"
            )
        # from_pretrained returns eval mode, where HF skips gradient checkpointing
        model.train()
        if self.hparams.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        mesh = getattr(self, "device_mesh", None) if self._trainer is not None else None
        if mesh is not None:
            shard_for_fsdp2(model, mesh["data_parallel"], **fsdp2_options(self._strategy())[0])
        self.model = model

    def _strategy(self) -> Any:
        return self._trainer.strategy if self._trainer is not None else None

    def load_frozen(self, source: str, **kwargs: Any) -> PreTrainedModel:
        """A frozen model (reference, teacher): eval mode, no gradients, no optimizer state.

        Keep it off the module's attributes (``object.__setattr__``) rather than as a
        submodule: checkpoints then skip it (it is rebuilt from ``source``), the optimizer
        never sees it, and Lightning does not warn that it is in eval mode. Under FSDP2 it is
        sharded like the policy (or replicated: ``FSDP2Strategy(frozen_models="replicate")``);
        under DeepSpeed ZeRO-3 it runs in an inference-only engine that gathers its partitions;
        otherwise ``on_fit_start`` moves it to the device (list it in ``frozen_models``).
        """
        hp = self.hparams
        model = load_model(
            source,
            dtype=hp.get("dtype"),
            attn_implementation=hp.get("attn_implementation"),
            seed=hp.get("seed"),
            allow_download=hp.get("allow_download", False),
            **kwargs,
        )
        model.eval()
        model.requires_grad_(False)
        mesh = getattr(self, "device_mesh", None) if self._trainer is not None else None
        plan, shard = fsdp2_options(self._strategy())
        if mesh is not None and shard:
            shard_for_fsdp2(model, mesh["data_parallel"], **plan)
        elif is_zero3_partitioned(model):
            model = frozen_zero3(model, self._strategy())
        return model

    def frozen_models(self) -> list[torch.nn.Module]:
        """The stage's frozen models (moved to the device with the policy)."""
        return []

    def on_fit_start(self) -> None:
        for model in self.frozen_models():
            if not needs_lockstep(model):
                model.to(self.device)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(
            self.model, self.optimizer_config, self.trainer.estimated_stepping_batches
        )

    # -- faults -------------------------------------------------------------------------------
    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._guard_loss = loss.detach()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Automatic optimisation: drop the step's gradients when they or the loss are not
        finite (the optimizer then changes nothing); count it; stop past the limits."""
        if not self.automatic_optimization:
            return
        guard = self.nonfinite_guard
        guard.check(self._guard_loss, self.model, step=self.global_step)
        self._guard_loss = None
        self.log("train/skipped_steps", float(guard.skipped), rank_zero_only=True)
        self.log("train/grad_norm", guard.last_grad_norm, sync_dist=False, rank_zero_only=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.optimizers:
            lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
            if self.automatic_optimization:
                self.log("train/lr", lr, rank_zero_only=True)
            else:  # at the optimizer step, the axis of the step's other train/* metrics
                log_metrics(self.trainer, {"train/lr": lr})

    def on_train_end(self) -> None:
        """The compute counters (``stats/*_tokens``), once: the run's totals. Logged at every
        step they would be cumulative series that repeat each other (frozen = trained tokens
        when one teacher scores every trained token once)."""
        log_metrics(self.trainer, self.compute_stats())

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[_CHECKPOINT_KEY] = {
            "rng": capture_rng_state(),
            "nonfinite_guard": self.nonfinite_guard.state_dict(),
            "token_counts": dict(self.token_counts),
            "train_seconds": self.train_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(_CHECKPOINT_KEY)
        if state is None:
            return
        self.nonfinite_guard.load_state_dict(state["nonfinite_guard"])
        self.token_counts.update(state.get("token_counts", {}))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self._rng_to_restore = state["rng"]  # applied when training starts, after setup's draws

    def compute_stats(self) -> dict[str, float]:
        """``stats/{name}_tokens`` summed over ranks (a data-parallel run's every rank works;
        one rank's count, or the mean, would undercount by the world size) and ``time/train_s``
        (the slowest rank's). A collective: every rank calls it."""
        keys = sorted(self.token_counts)
        values = [float(self.token_counts[k]) for k in keys]
        seconds = torch.tensor([self.train_seconds], dtype=torch.float64)
        counts = torch.tensor(values, dtype=torch.float64)
        if self._trainer is not None and self.trainer.world_size > 1:
            strategy = self.trainer.strategy
            counts = strategy.reduce(counts.to(self.device), reduce_op="sum").cpu()
            seconds = strategy.reduce(seconds.to(self.device), reduce_op="max").cpu()
        stats = {f"stats/{k}_tokens": float(v) for k, v in zip(keys, counts, strict=True)}
        stats["time/train_s"] = float(seconds[0])
        return stats

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    # -- export ---------------------------------------------------------------------------------
    @property
    def export_dir(self) -> Path:
        """``output_dir``, else ``<trainer.default_root_dir>/model``."""
        if self.hparams.output_dir is not None:
            return Path(self.hparams.output_dir)
        return Path(self.trainer.default_root_dir) / "model"

    def on_fit_end(self) -> None:
        self.exported_to = self.export(self.export_dir)

    def export(self, directory: str | Path) -> Path:
        """Write model + tokenizer (with its chat template) as a Hugging Face directory,
        consolidated whatever the strategy sharded."""
        strategy = self._strategy()
        root = getattr(strategy, "model", None) if strategy is not None else None
        path = export_pretrained(self.model, self.tokenizer, directory, root=root)
        rank_zero_info(f"[{self.stage}] model and tokenizer written to {path}")
        return path
