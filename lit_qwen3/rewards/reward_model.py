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
from typing import ClassVar

import torch
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_qwen3.chat import require_chat_template
from lit_qwen3.rewards.base import RewardResult, Sample, register_reward
from lit_qwen3.rewards.local_model import LocalModelReward

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
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    *,
    chars_per_token: int | None = None,
) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text, cut from the left to ``max_length``; and which ones were cut.

    ``chars_per_token`` (:func:`lit_qwen3.ops.packing.max_chars_per_token`) bounds the text a token
    stands for: a text longer than ``(max_length + 1) * chars_per_token`` characters is cut to
    its tail before tokenizing, so a huge row never goes through the tokenizer whole.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids, truncated = [], []
    for text in texts:
        if chars_per_token and len(text) > (max_length + 1) * chars_per_token:
            text = text[-(max_length + 1) * chars_per_token :]  # still over max_length tokens
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        truncated.append(len(tokens) > max_length)
        ids.append(tokens[-max_length:])
    return ids, truncated


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
class ScalarRewardModel(LocalModelReward):
    """Reward = ``(rm(prompt + answer) - shift) / scale`` from a scalar reward model.

    ``model`` is a directory (loaded on first use, ``local_files_only=True``) or a loaded
    ``PreTrainedModel`` with ``num_labels=1``; ``tokenizer`` defaults to the model directory's.
    ``shift``/``scale`` standardise the raw score (e.g. its mean and std on held-out replies) so
    it mixes with 0/1 rule rewards in a ``CompositeReward``. ``empty_answer_score``, when set,
    is given to replies with no answer (thinking never closed) instead of asking the model.
    """

    name: ClassVar[str] = "reward_model"
    kind: ClassVar[str] = "reward model"
    auto_class = AutoModelForSequenceClassification

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
        super().__init__(model, tokenizer, batch_size=batch_size, device=device, dtype=dtype)
        self.max_length = max_length
        self.scale = scale
        self.shift = shift
        self.empty_answer_score = empty_answer_score

    def _checked_model(self, model: PreTrainedModel) -> PreTrainedModel:
        if model.config.num_labels != 1:
            raise ValueError(
                f"{self._model_source!s:.200} is not a scalar reward model: it has "
                f"num_labels={model.config.num_labels}, expected 1 (train one with "
                "RewardModelTraining)"
            )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def score_batch(self, samples: Sequence[Sample]) -> list[RewardResult]:
        self._check_samples(samples)
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
        model = self.model
        ids, truncated = encode_for_reward_model(self.tokenizer, texts, self.max_length)

        def run(batch: dict[str, torch.Tensor]) -> list[float]:
            return sequence_scores(model, **batch).float().tolist()

        scores = self._in_batches(ids, run, pad_id=model.config.pad_token_id, side="right")
        return scores, truncated
