"""Model-based reward with a reference: a local instruct LM judges the reply (report 4.4).

Any Hugging Face causal LM with a chat template can judge. It reads the question (the last user
message), the reference answer and the policy's reply, writes a short rationale and a verdict,
and the verdict becomes the reward.

Verdict format (parsed by :func:`parse_verdict`; the LAST verdict in the output wins, text
inside a ``<think>`` block is ignored):

* ``Score: 7/10`` or ``Rating: 7 / 10`` -> 0.7; ``Score: 7`` -> 7 / ``max_score``;
* ``[[7]]`` (MT-Bench style) -> 7 / ``max_score``;
* ``[[CORRECT]]`` -> 1.0, ``[[INCORRECT]]`` -> 0.0 (also ``Verdict: correct``).

Scores are normalised to [0, 1]. Output with no verdict, or a score outside
[0, denominator], gives reward 0 and ``info = {"error": "unparsable verdict", "raw": ...}``.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_qwen3.chat import split_thinking, strip_thinking_flags
from lit_qwen3.rewards.base import RewardResult, Sample, register_reward
from lit_qwen3.rewards.local_model import LocalModelReward

__all__ = [
    "BINARY_TEMPLATE",
    "SCORE_TEMPLATE",
    "GenerativeJudge",
    "last_user_message",
    "parse_verdict",
]


def _reference_template(verb: str, instruction: str) -> str:
    """A judge prompt: question, reference answer and reply, then what to write."""
    return (
        f"You are {verb} a reply to a question against a reference answer.\n\n"
        "[Question]\n{question}\n\n[Reference answer]\n{reference}\n\n[Reply]\n{reply}\n\n"
        + instruction
    )


SCORE_TEMPLATE = _reference_template(
    "grading",
    "Decide whether the reply's final answer agrees with the reference answer. Explain in one or "
    'two sentences, then end with one line in exactly this form: "Score: N/10", where 10 means '
    "fully correct and 0 means wrong or missing.",
)
BINARY_TEMPLATE = _reference_template(
    "checking",
    "Is the reply's final answer equivalent to the reference answer? Explain in one sentence, "
    "then end with exactly [[CORRECT]] or [[INCORRECT]].",
)

_NUMBER = r"(\d+(?:\.\d+)?)"
# No two adjacent parts may match the same characters: "\s*[:=]?\s*" on "Score" + 4000 spaces
# backtracks over every way of splitting the spaces (cubic: minutes for a 4 kB judge reply).
_VERDICT_PATTERNS = (
    # Score: 7/10, Rating: **8** / 10, score = 3
    re.compile(
        rf"\b(?:score|rating)\s*(?:[:=：]\s*)?(?:[*\[]+\s*)?{_NUMBER}"
        rf"(?:\s*[*\]]+)?\s*(?:(?:/|out of)\s*{_NUMBER})?",
        re.IGNORECASE,
    ),
    # [[7]] or [[7/10]]
    re.compile(rf"\[\[\s*{_NUMBER}\s*(?:/\s*{_NUMBER}\s*)?\]\]"),
    # [[CORRECT]] / [[INCORRECT]], Verdict: correct
    re.compile(r"\[\[\s*(correct|incorrect)\s*\]\]", re.IGNORECASE),
    re.compile(r"\b(?:verdict|judgement|judgment)\s*[:：]\s*\**\s*(correct|incorrect)\b", re.I),
)


def parse_verdict(text: str, *, max_score: float = 10.0) -> float | None:
    """The judge's verdict in ``text`` as a score in [0, 1], or None when there is none.

    ``max_score`` is the denominator assumed when a score has none (``Score: 7``).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_verdict() expects a str, got {type(text).__name__}")
    body = split_thinking(text).answer  # the whole text when there is no think block
    last: tuple[int, float | None] | None = None
    for pattern in _VERDICT_PATTERNS:
        for match in pattern.finditer(body):
            if last is not None and match.start() < last[0]:
                continue
            head = match.group(1).lower()
            if head in ("correct", "incorrect"):
                value: float | None = 1.0 if head == "correct" else 0.0
            else:
                denominator = float(match.group(2)) if match.group(2) else max_score
                number = float(head)  # 400 digits is inf, and inf / inf is NaN: refuse both
                ok = math.isfinite(denominator) and denominator > 0 and 0 <= number <= denominator
                value = number / denominator if ok else None
            last = (match.start(), value)
    return None if last is None else last[1]


def last_user_message(prompt: Sequence[dict]) -> str:
    """The question the reply answers: the last user message, without /think or /no_think."""
    for message in reversed(prompt):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return strip_thinking_flags(message["content"])
    raise ValueError("the prompt has no user message with text content for the judge to read")


@register_reward("judge")
class GenerativeJudge(LocalModelReward):
    """Reward from a local instruct LM that compares the reply with ``metadata["reference"]``.

    ``model`` is a directory (loaded on first use with ``local_files_only=True``) or a loaded
    ``PreTrainedModel``; ``tokenizer`` defaults to the model directory's. Decoding is greedy,
    in batches of ``batch_size`` with left padding, and the judge answers in non-thinking mode
    (``enable_thinking=False``; templates without the switch ignore it).
    """

    name: ClassVar[str] = "judge"
    requires: ClassVar[tuple[str, ...]] = ("reference",)
    kind: ClassVar[str] = "judge"
    auto_class = AutoModelForCausalLM

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        *,
        prompt_template: str = SCORE_TEMPLATE,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        max_score: float = 10.0,
        enable_thinking: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(prompt_template) if name}
        if fields != {"question", "reference", "reply"}:
            raise ValueError(
                "prompt_template must use exactly the fields {question}, {reference} and "
                f"{{reply}} (double other braces), got {sorted(fields)}"
            )
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}"
            )
        if max_score <= 0:
            raise ValueError(f"max_score must be > 0, got {max_score}")
        super().__init__(model, tokenizer, batch_size=batch_size, device=device, dtype=dtype)
        self.prompt_template = prompt_template
        self.max_new_tokens = max_new_tokens
        self.max_score = max_score
        self.enable_thinking = enable_thinking

    def render(self, sample: Sample) -> str:
        """The judge's chat prompt for one sample, ready to tokenize."""
        content = self.prompt_template.format(
            question=last_user_message(sample.prompt),
            reference=str(sample.metadata["reference"]),
            reply=sample.answer,
        )
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=self.enable_thinking,
        )

    def score_batch(self, samples: Sequence[Sample]) -> list[RewardResult]:
        self._check_samples(samples)
        results: list[RewardResult | None] = [None] * len(samples)
        todo = []
        for i, sample in enumerate(samples):
            if sample.answer.strip():
                todo.append(i)
            else:  # nothing to judge (e.g. thinking never closed): don't spend a generation
                results[i] = RewardResult(0.0, {"error": "empty answer", "raw": ""})
        outputs = self.generate([self.render(samples[i]) for i in todo])
        for i, raw in zip(todo, outputs, strict=True):
            value = parse_verdict(raw, max_score=self.max_score)
            info = (
                {"raw": raw} if value is not None else {"error": "unparsable verdict", "raw": raw}
            )
            results[i] = RewardResult(0.0 if value is None else value, info)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy judge outputs for rendered prompts, in batches (shortest first, left padded)."""
        tokenizer, model = self.tokenizer, self.model
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=_eos_ids(model, tokenizer),
        )

        def run(batch: dict[str, torch.Tensor]) -> list[str]:
            generated = model.generate(**batch, generation_config=config)
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self._in_batches(encoded, run, pad_id=tokenizer.pad_token_id, side="left")


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
