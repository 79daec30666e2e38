"""Train a scalar reward model on preference pairs (Bradley-Terry), for the reward without a
reference in general RL (report section 4.4).

The network is an ``AutoModelForSequenceClassification`` with one output. The usual start is the
SFT policy's own directory: ``from_pretrained(dir, num_labels=1)`` keeps the transformer and adds
a fresh scalar head. The loss is ``-log sigmoid(r(chosen) - r(rejected) [- margin])``; chosen and
rejected go through the model in one forward. At the end of fit the model and tokenizer are written
with ``save_pretrained``, ready for :class:`~lit_qwen3.rewards.reward_model.ScalarRewardModel`.

Run it from a plain Trainer::

    module = RewardModelTraining("path/to/sft_model", output_dir="out/rm")
    data = PreferencePairsDataModule("pairs.jsonl", tokenizer="path/to/sft_model")
    lightning.Trainer(max_steps=1000).fit(module, data)
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    Qwen3ForSequenceClassification,
)

from lit_qwen3.models import (
    QWEN3_MODELS,
    TOY_PRESETS,
    resolve_attn_implementation,
    resolve_dtype,
    tiny_qwen3_config,
)
from lit_qwen3.ops.losses import bradley_terry_loss
from lit_qwen3.rewards.reward_model import sequence_scores
from lit_qwen3.runtime.faults import NonFiniteLimits
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages.base import HFStageModule

__all__ = ["RewardModelTraining", "build_reward_model"]

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def build_reward_model(
    source: str | Path,
    *,
    pad_token_id: int,
    vocab_size: int | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    seed: int = 0,
    allow_download: bool = False,
) -> PreTrainedModel:
    """A ``num_labels=1`` sequence classifier from a preset, a directory or a config file.

    ``source``: a tiny preset (``toy-student``, ``toy-teacher``: random init, ``vocab_size``
    needed); a directory with weights (a causal LM gets a new scalar head, a reward model keeps
    its own); a directory or ``.json`` file with a config only (random init); or a Qwen3 name /
    hub id already in the local cache (``allow_download`` to fetch it).
    """
    attn = resolve_attn_implementation(attn_implementation)
    torch_dtype = resolve_dtype(dtype)
    name = str(source)
    path = Path(name).expanduser()
    if name in TOY_PRESETS:
        if vocab_size is None:
            raise ValueError(f"preset {name!r} needs vocab_size (the tokenizer's length)")
        config = tiny_qwen3_config(name, vocab_size, num_labels=1, pad_token_id=pad_token_id)
        config._attn_implementation = attn
        torch.manual_seed(seed)
        model = Qwen3ForSequenceClassification(config)
    elif path.is_file() or path.is_dir() and not any((path / f).exists() for f in _WEIGHT_FILES):
        if path.is_dir() and not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has neither weights nor a config.json")
        config = AutoConfig.from_pretrained(path, num_labels=1, pad_token_id=pad_token_id)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)
    else:
        if not path.exists() and name.startswith((".", "/", "~")):
            raise FileNotFoundError(f"reward model source not found: {path}")
        hub_id = QWEN3_MODELS.get(name.lower(), name)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path if path.exists() else hub_id,
                num_labels=1,
                pad_token_id=pad_token_id,
                attn_implementation=attn,
                dtype=torch_dtype if torch_dtype is not None else "auto",
                local_files_only=not allow_download,
            )
        except OSError as err:
            raise FileNotFoundError(
                f"cannot load reward model {name!r}: not a preset ({', '.join(TOY_PRESETS)}), not "
                "a local directory, and not in the local cache (downloads are off unless "
                "allow_download=True)"
            ) from err
    if torch_dtype is not None:
        model = model.to(torch_dtype)
    model.config.pad_token_id = pad_token_id
    return model


class RewardModelTraining(HFStageModule):
    """Bradley-Terry reward-model training on batches from ``PreferencePairsDataModule``.

    Args:
        model: a tiny preset, a local directory (usually the SFT policy) or a config file; see
            :func:`build_reward_model`.
        tokenizer: defaults to the model's own (the toy tokenizer for presets).
        output_dir: where the model and tokenizer are written after fit; None:
            ``<trainer.default_root_dir>/model`` (under ``lit-qwen3``: the run's directory).
        optimizer: AdamW and schedule settings (``1e-5`` is a usual peak for real models).
        use_margin: subtract the pairs' ``margin`` (when the data has one) inside the loss.
        dtype, attn_implementation, gradient_checkpointing: as for every stage.
        seed: random init of presets and of the new scalar head.
        allow_download: let ``from_pretrained`` fetch a hub model missing from the cache.
        nonfinite: when to stop a run whose loss or gradients keep being non-finite.
    """

    stage: ClassVar[str] = "reward_model"

    def __init__(
        self,
        model: str = "toy-student",
        tokenizer: str | None = None,
        output_dir: str | None = None,
        optimizer: OptimizerConfig | None = None,
        use_margin: bool = True,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        allow_download: bool = False,
        nonfinite: NonFiniteLimits | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if tokenizer is None and Path(model).expanduser().is_file():
            raise ValueError(f"model {model!r} is a config file: pass `tokenizer` as well")
        self.hparams["tokenizer"] = tokenizer or model
        self.init_stage(
            model, tokenizer, optimizer, allow_download=allow_download, nonfinite=nonfinite
        )
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; the reward model needs one")

    def build_model(self) -> PreTrainedModel:
        hp = self.hparams
        return build_reward_model(
            hp.model,
            pad_token_id=self.tokenizer.pad_token_id,
            vocab_size=len(self.tokenizer),
            dtype=hp.dtype,
            attn_implementation=hp.attn_implementation,
            seed=hp.seed,
            allow_download=hp.allow_download,
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scalar reward of each (right-padded) sequence, shape ``(batch,)``."""
        return sequence_scores(self.model, input_ids, attention_mask)

    def _step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        chosen_ids, rejected_ids = batch["chosen_input_ids"], batch["rejected_input_ids"]
        chosen_mask, rejected_mask = (
            batch["chosen_attention_mask"],
            batch["rejected_attention_mask"],
        )
        width = max(chosen_ids.shape[1], rejected_ids.shape[1])
        pad = self.model.config.pad_token_id
        ids = torch.cat([_pad_to(chosen_ids, width, pad), _pad_to(rejected_ids, width, pad)])
        mask = torch.cat([_pad_to(chosen_mask, width, 0), _pad_to(rejected_mask, width, 0)])
        scores = self(ids, mask).float()
        n = chosen_ids.shape[0]
        chosen, rejected = scores[:n], scores[n:]
        margin = batch.get("margin") if self.hparams.use_margin else None
        loss = bradley_terry_loss(chosen, rejected, margin=margin)
        sync = prefix == "val"
        self.log(f"{prefix}/loss", loss, prog_bar=True, batch_size=n, sync_dist=sync)
        accuracy = (chosen > rejected).float().mean()
        self.log(f"{prefix}/accuracy", accuracy, prog_bar=True, batch_size=n, sync_dist=sync)
        gap = (chosen - rejected).mean()
        self.log(f"{prefix}/reward_gap", gap.detach(), batch_size=n, sync_dist=sync)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")


def _pad_to(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, width - tensor.shape[1]), value=value)
