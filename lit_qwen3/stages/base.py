"""What every stage shares: a Hugging Face model built in ``configure_model``, its tokenizer,
AdamW with warmup and cosine decay, and a ``save_pretrained`` export at the end of fit.

A stage subclasses :class:`HFStageModule`, calls ``save_hyperparameters()`` and
``init_stage(...)`` in its ``__init__``, and implements ``build_model``. Its hyperparameters must
include ``output_dir`` and ``gradient_checkpointing``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_qwen3.export import export_pretrained
from lit_qwen3.generation import needs_lockstep
from lit_qwen3.models import (
    enable_gradient_checkpointing,
    load_model,
    load_tokenizer,
    shard_for_fsdp2,
)
from lit_qwen3.optim import OptimizerConfig, configure_adamw
from lit_qwen3.strategies import (
    frozen_zero3,
    fsdp2_options,
    hf_zero3_config,
    is_zero3_partitioned,
)


class HFStageModule(LightningModule):
    """Base of the stage modules: the network is a plain HF model in ``self.model``."""

    stage: ClassVar[str] = "stage"
    model: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase

    def init_stage(
        self,
        model: str,
        tokenizer: str | None,
        optimizer: OptimizerConfig | None,
        *,
        allow_download: bool = False,
    ) -> None:
        """Resolve the tokenizer now (cheap); the model waits for ``configure_model``."""
        self.optimizer_config = optimizer or OptimizerConfig()
        self.tokenizer = load_tokenizer(tokenizer or model, allow_download=allow_download)
        self.model = None

    def build_model(self) -> PreTrainedModel:
        """The stage's network, unsharded; called once by ``configure_model``."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Build (and, under ModelParallelStrategy, shard) the network once."""
        if self.model is not None:
            return
        # ZeRO-3 partitions weights as they are built: transformers loads into the partitions
        # while this config object lives (see lit_qwen3.strategies.hf_zero3_config).
        object.__setattr__(self, "_hf_zero3", hf_zero3_config(self._strategy()))
        model = self.build_model()
        if len(self.tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} tokens but model {self.hparams.model!r} "
                f"only {model.config.vocab_size} embeddings: pass the model's own tokenizer"
            )
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

    def on_fit_end(self) -> None:
        if self.hparams.output_dir is not None:
            self.export(self.hparams.output_dir)

    def export(self, directory: str | Path) -> Path:
        """Write model + tokenizer (with its chat template) as a Hugging Face directory,
        consolidated whatever the strategy sharded."""
        strategy = self._strategy()
        root = getattr(strategy, "model", None) if strategy is not None else None
        path = export_pretrained(self.model, self.tokenizer, directory, root=root)
        rank_zero_info(f"[{self.stage}] model and tokenizer written to {path}")
        return path
