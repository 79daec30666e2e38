"""What the model-based rewards share: a local Hugging Face model loaded on first use, batched.

:class:`~lit_qwen3.rewards.judge.GenerativeJudge` and
:class:`~lit_qwen3.rewards.reward_model.ScalarRewardModel` both take a directory (or a loaded
model), never reach the network, load nothing until the first score (so a YAML spec is cheap to
build), and run the model on batches of similar length so that padding stays small.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_qwen3.models import load_tokenizer
from lit_qwen3.ops.packing import pad_batch
from lit_qwen3.rewards.base import Reward, RewardResult, Sample

_T = TypeVar("_T")


def local_directory(source: str | Path, what: str) -> Path:
    """``source`` as an existing directory; a hub name is refused rather than downloaded."""
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} directory {str(path)!r} does not exist (local directories only, never a "
            "hub name)"
        )
    return path


class LocalModelReward(Reward):
    """Base of rewards computed by a local HF model: lazy loading, sample checks, batching.

    Subclasses set ``kind`` (how errors name the reward) and ``auto_class`` (the ``AutoModel``
    class that loads a directory), and implement :meth:`score_batch`. ``model`` is a directory
    or a loaded ``PreTrainedModel``; ``tokenizer`` defaults to the model directory's. A model
    loaded from a directory goes to ``device``, else to CUDA when there is one.
    """

    kind: ClassVar[str] = "model reward"
    auto_class: ClassVar[Any]

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None,
        *,
        batch_size: int,
        device: str | torch.device | None,
        dtype: str | torch.dtype | None,
    ) -> None:
        if not isinstance(model, (str, Path, PreTrainedModel)):
            raise TypeError(
                f"model must be a directory or a PreTrainedModel, got {type(model).__name__}"
            )
        if tokenizer is None and isinstance(model, PreTrainedModel):
            raise ValueError("pass `tokenizer` when `model` is an already loaded PreTrainedModel")
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self._model_source = model
        self._tokenizer_source = model if tokenizer is None else tokenizer
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None

    @property
    def model(self) -> PreTrainedModel:
        """The model, loaded from its directory on first use."""
        if self._model is None:
            model, device = self._model_source, self.device
            if not isinstance(model, PreTrainedModel):
                kwargs: dict[str, Any] = {"local_files_only": True}
                if self.dtype is not None:
                    kwargs["dtype"] = self.dtype
                path = local_directory(model, f"{self.kind} model")
                model = self.auto_class.from_pretrained(path, **kwargs)
                if device is None and torch.cuda.is_available():
                    device = "cuda"
            model = self._checked_model(model)
            if device is not None:
                model.to(device)
            self._model = model.eval()
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (with a chat template and a pad token), loaded on first use."""
        if self._tokenizer is None:
            source = self._tokenizer_source
            if not isinstance(source, PreTrainedTokenizerBase):
                source = local_directory(source, f"{self.kind} tokenizer")
            tokenizer = load_tokenizer(source)
            if tokenizer.pad_token_id is None:
                raise ValueError(
                    f"the {self.kind}'s tokenizer has no pad token; set tokenizer.pad_token"
                )
            self._tokenizer = tokenizer
        return self._tokenizer

    def _checked_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """Hook: reject (or complete the config of) a model that cannot serve this reward."""
        return model

    def score(self, sample: Sample) -> RewardResult:
        return self.score_batch([sample])[0]

    @abc.abstractmethod
    def score_batch(self, samples: Sequence[Sample]) -> list[RewardResult]:
        """Score many samples in batches on the model's device."""

    def _check_samples(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            self.check(sample)
            if not isinstance(sample.answer, str):
                raise TypeError(f"sample.answer must be a str, got {type(sample.answer).__name__}")

    def _in_batches(
        self,
        sequences: Sequence[Sequence[int]],
        run: Callable[[dict[str, torch.Tensor]], Sequence[_T]],
        *,
        pad_id: int,
        side: Literal["left", "right"],
    ) -> list[_T]:
        """``run`` on padded batches of ``batch_size`` sequences of similar length (shortest
        first), on the model's device; one result per sequence, in input order."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        device = next(self.model.parameters()).device
        results: list[Any] = [None] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = pad_batch([sequences[i] for i in chunk], pad_id, side=side)
            outputs = run({k: v.to(device) for k, v in batch.items()})
            for i, output in zip(chunk, outputs, strict=True):
                results[i] = output
        return results
