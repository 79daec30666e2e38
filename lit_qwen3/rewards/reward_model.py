"""Model-based reward without a reference: a scalar reward model scores prompt + reply (report 4.4).

The reward model is any ``AutoModelForSequenceClassification`` with one output (``num_labels=1``),
e.g. a ``Qwen3ForSequenceClassification`` trained on preference pairs with
:class:`~lit_qwen3.stages.reward_model.RewardModelTraining`. Training and scoring render text the
same way (:func:`render_for_reward_model`), so the model sees at scoring time exactly what it
learned from: the chat template applied to the prompt plus the reply's *answer* (no thinking).

Sequences longer than ``max_length`` lose tokens from the left (the start of the prompt): the
score is read at the last token, so the end of the reply must survive truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_qwen3.chat import require_chat_template
from lit_qwen3.models import load_tokenizer
from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward

__all__ = [
    "ScalarRewardModel",
    "encode_for_reward_model",
    "render_for_reward_model",
    "sequence_scores",
]


def render_for_reward_model(
    tokenizer: PreTrainedTokenizerBase, prompt: Sequence[dict], reply: str
) -> str:
    """Chat-template text of ``prompt`` followed by the assistant ``reply`` (answer only)."""
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str, got {type(reply).__name__}")
    require_chat_template(tokenizer)
    messages = [*prompt, {"role": "assistant", "content": reply}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def encode_for_reward_model(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text, cut from the left to ``max_length``; and which ones were cut."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids, truncated = [], []
    for text in texts:
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        truncated.append(len(tokens) > max_length)
        ids.append(tokens[-max_length:])
    return ids, truncated


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of sequences padded on the right to the longest."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def sequence_scores(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The scalar head's output at each sequence's last token, shape ``(batch,)``.

    HF sequence classifiers pool at the rightmost token that is not ``pad_token_id``; a pad id
    inside the text (tokenizers whose pad is also eos) would move that point, so refuse it.
    """
    pad_id = model.config.pad_token_id
    if pad_id is None:
        raise ValueError("the reward model's config has no pad_token_id; set it to the tokenizer's")
    if bool(((input_ids == pad_id) & attention_mask.bool()).any()):
        raise ValueError(
            f"pad token id {pad_id} occurs inside a sequence: the reward model would pool at the "
            "wrong token; give the tokenizer a pad token distinct from every token of the text"
        )
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    if logits.shape[-1] != 1:
        raise ValueError(f"expected a scalar head (num_labels=1), got {logits.shape[-1]} outputs")
    return logits[:, 0]


@register_reward("reward_model")
class ScalarRewardModel(Reward):
    """Reward = ``(rm(prompt + answer) - shift) / scale`` from a scalar reward model.

    ``model`` is a directory (loaded on first use, ``local_files_only=True``) or a loaded
    ``PreTrainedModel`` with ``num_labels=1``; ``tokenizer`` defaults to the model directory's.
    ``shift``/``scale`` standardise the raw score (e.g. its mean and std on held-out replies) so
    it mixes with 0/1 rule rewards in a ``CompositeReward``. ``empty_answer_score``, when set,
    is given to replies with no answer (thinking never closed) instead of asking the model.
    """

    name: ClassVar[str] = "reward_model"

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        *,
        batch_size: int = 8,
        max_length: int = 2048,
        scale: float = 1.0,
        shift: float = 0.0,
        empty_answer_score: float | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if batch_size < 1 or max_length < 1:
            raise ValueError(
                f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}"
            )
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if not isinstance(model, (str, Path, PreTrainedModel)):
            raise TypeError(
                f"model must be a directory or a PreTrainedModel, got {type(model).__name__}"
            )
        if tokenizer is None and isinstance(model, PreTrainedModel):
            raise ValueError("pass `tokenizer` when `model` is an already loaded PreTrainedModel")
        self.batch_size = batch_size
        self.max_length = max_length
        self.scale = scale
        self.shift = shift
        self.empty_answer_score = empty_answer_score
        self.device = device
        self.dtype = dtype
        self._model_source = model
        self._tokenizer_source = model if tokenizer is None else tokenizer
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            source = self._tokenizer_source
            if isinstance(source, (str, Path)) and not Path(source).expanduser().is_dir():
                raise FileNotFoundError(
                    f"reward model tokenizer directory {str(source)!r} does not exist"
                )
            tokenizer = load_tokenizer(source)
            if tokenizer.pad_token_id is None:
                raise ValueError("the reward model's tokenizer has no pad token; set one")
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def model(self) -> PreTrainedModel:
        """The reward model, loaded from its directory on first use."""
        if self._model is None:
            model = self._model_source
            if not isinstance(model, PreTrainedModel):
                path = Path(model).expanduser()
                if not path.is_dir():
                    raise FileNotFoundError(
                        f"reward model directory {str(path)!r} does not exist (local "
                        "directories only, never a hub name)"
                    )
                kwargs: dict[str, Any] = {"local_files_only": True}
                if self.dtype is not None:
                    kwargs["dtype"] = self.dtype
                model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
                if torch.cuda.is_available() and self.device is None:
                    model.to("cuda")
            if model.config.num_labels != 1:
                raise ValueError(
                    f"{self._model_source!s:.200} is not a scalar reward model: it has "
                    f"num_labels={model.config.num_labels}, expected 1 (train one with "
                    "RewardModelTraining)"
                )
            if model.config.pad_token_id is None:
                model.config.pad_token_id = self.tokenizer.pad_token_id
            if self.device is not None:
                model.to(self.device)
            self._model = model.eval()
        return self._model

    def score(self, sample: Sample) -> RewardResult:
        return self.score_batch([sample])[0]

    def score_batch(self, samples: Sequence[Sample]) -> list[RewardResult]:
        for sample in samples:
            self.check(sample)
            if not isinstance(sample.answer, str):
                raise TypeError(f"sample.answer must be a str, got {type(sample.answer).__name__}")
        results: list[RewardResult | None] = [None] * len(samples)
        todo = []
        for i, sample in enumerate(samples):
            if self.empty_answer_score is not None and not sample.answer.strip():
                results[i] = RewardResult(self.empty_answer_score, {"error": "empty answer"})
            else:
                todo.append(i)
        texts = [render_for_reward_model(self.tokenizer, samples[i].prompt, samples[i].answer)
                 for i in todo]  # fmt: skip
        raw, truncated = self.raw_scores(texts)
        for k, i in enumerate(todo):
            value = (raw[k] - self.shift) / self.scale
            results[i] = RewardResult(value, {"raw": raw[k], "truncated": truncated[k]})
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def raw_scores(self, texts: Sequence[str]) -> tuple[list[float], list[bool]]:
        """Unnormalised scores of rendered texts, in batches of similar lengths."""
        if not texts:
            return [], []
        model, tokenizer = self.model, self.tokenizer
        ids, truncated = encode_for_reward_model(tokenizer, texts, self.max_length)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        device = next(model.parameters()).device
        scores = [0.0] * len(ids)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = right_pad([ids[i] for i in chunk], model.config.pad_token_id)
            values = sequence_scores(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device)
            )
            for i, value in zip(chunk, values.float().tolist(), strict=True):
                scores[i] = value
        return scores, truncated
