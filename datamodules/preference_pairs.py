"""Preference pairs for reward-model training: JSONL of ``{"prompt", "chosen", "rejected"}``.

Each line::

    {"prompt": "How do I ...?" | [{"role": "user", "content": ...}, ...],
     "chosen": "the better reply", "rejected": "the worse reply", "margin": 1.0}

``chosen`` / ``rejected`` may also be message lists ending with the reply (UltraFeedback-binarized;
the prompt is then their shared opening when ``prompt`` is not a list) or HH-RLHF transcripts
(:mod:`lit_qwen3.formats`). ``margin`` is optional (how much better ``chosen`` is, for a margin Bradley-Terry loss; a finite
number of at most ``MAX_MARGIN`` in size); other keys are ignored. A pair whose two answers are
the same text teaches nothing and is an error, as are prompt roles other than system, user,
assistant and tool. Replies may carry a ``<think>`` block: it is dropped, because the reward model
scores answers only (as every reward does). Text is rendered with
:func:`~lit_qwen3.rewards.reward_model.render_for_reward_model`, exactly as the reward scores it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_qwen3.chat import split_thinking
from lit_qwen3.datamodules.conversations import ROLES
from lit_qwen3.datamodules.jsonl import iter_jsonl
from lit_qwen3.formats import preference_row
from lit_qwen3.models import load_tokenizer
from lit_qwen3.ops.packing import max_chars_per_token, pad_batch
from lit_qwen3.rewards.reward_model import encode_for_reward_model, render_for_reward_model

__all__ = [
    "MAX_MARGIN",
    "PreferencePair",
    "PreferencePairsDataModule",
    "collate_pairs",
    "read_preference_pairs",
]

#: Largest margin accepted, in reward-score units: past it ``sigmoid`` is 1 in float32 and the
#: pair's loss is the margin itself, swamping every other pair of the batch.
MAX_MARGIN = 100.0


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[dict]
    chosen: str
    rejected: str
    margin: float | None = None


def _messages(value: Any, where: str) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where}: 'prompt' is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: 'prompt' must be a string or a non-empty list of messages")
    for i, message in enumerate(value):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise ValueError(
                f"{where}: prompt[{i}] must be a dict with string 'role' and 'content', "
                f"got {message!r:.100}"
            )
        if message["role"] not in ROLES:
            raise ValueError(
                f"{where}: prompt[{i}] has role {message['role']!r:.40}, expected one of {ROLES}"
            )
    return value


def _reply(record: dict, key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    answer = split_thinking(value).answer
    if not answer:
        raise ValueError(f"{where}: {key!r} has no answer text (empty, or only thinking)")
    return answer


def _margin(record: dict, where: str) -> float | None:
    margin = record.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise ValueError(f"{where}: 'margin' must be a number, got {margin!r:.40}")
    if not abs(margin) <= MAX_MARGIN:  # NaN and inf fail too; an int of any size compares
        raise ValueError(
            f"{where}: 'margin' must be a finite number in [-{MAX_MARGIN:g}, {MAX_MARGIN:g}] "
            f"(reward-score units), got {margin!r:.40}"
        )
    return float(margin)


def read_preference_pairs(path: str | Path) -> list[PreferencePair]:
    """Parse and check a preference JSONL file; errors name the file and the line."""
    path = Path(path)
    pairs = []
    for where, record in iter_jsonl(path, "preference pairs file"):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        record = preference_row(record, where)  # message lists, HH-RLHF transcripts
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        pair = PreferencePair(
            prompt=_messages(record["prompt"], where),
            chosen=_reply(record, "chosen", where),
            rejected=_reply(record, "rejected", where),
            margin=_margin(record, where),
        )
        if pair.chosen == pair.rejected:
            raise ValueError(
                f"{where}: 'chosen' and 'rejected' have the same answer {pair.chosen!r:.60} "
                "(thinking aside): the pair prefers nothing"
            )
        pairs.append(pair)
    if not pairs:
        raise ValueError(f"preference pairs file {path} has no pairs (it is empty)")
    return pairs


def collate_pairs(items: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen and rejected padded on the right to one common width (one forward for both)."""
    chosen = [item["chosen_input_ids"] for item in items]
    rejected = [item["rejected_input_ids"] for item in items]
    both = pad_batch(chosen + rejected, pad_id, side="right")
    n = len(items)
    batch = {
        "chosen_input_ids": both["input_ids"][:n],
        "chosen_attention_mask": both["attention_mask"][:n],
        "rejected_input_ids": both["input_ids"][n:],
        "rejected_attention_mask": both["attention_mask"][n:],
    }
    margins = [item["margin"] for item in items]
    if any(m is not None for m in margins):
        batch["margin"] = torch.tensor([0.0 if m is None else m for m in margins])
    return batch


class PreferencePairsDataModule(LightningDataModule):
    """Tokenised preference pairs, split into train and validation with a fixed seed.

    Args:
        path: the JSONL file.
        tokenizer: a tokenizer, or what ``load_tokenizer`` takes (a model directory, a preset).
        max_length: tokens per rendered prompt + reply; longer ones lose their start.
        batch_size: pairs per batch.
        val_fraction: share of pairs held out for validation (at least one when > 0).
        seed: the split's and the shuffling's seed.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        path: str,
        tokenizer: str | PreTrainedTokenizerBase,
        max_length: int = 1024,
        batch_size: int = 8,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if max_length < 1 or batch_size < 1:
            raise ValueError(
                f"max_length and batch_size must be >= 1, got {max_length}, {batch_size}"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters(ignore=["tokenizer"])
        self.path = Path(path)
        self.tokenizer = load_tokenizer(tokenizer)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
        self.train_set: list[dict] = []
        self.val_set: list[dict] = []
        self.num_truncated = 0

    def setup(self, stage: str | None = None) -> None:
        if self.train_set:
            return
        hp = self.hparams
        pairs = read_preference_pairs(self.path)
        items = self._encode(pairs)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(hp.seed))
        n_val = math.ceil(len(items) * hp.val_fraction) if hp.val_fraction > 0 else 0
        if n_val >= len(items):
            raise ValueError(
                f"{self.path} has {len(items)} pair(s): too few to hold out "
                f"val_fraction={hp.val_fraction} and still train"
            )
        self.val_set = [items[i] for i in order[:n_val].tolist()]
        self.train_set = [items[i] for i in order[n_val:].tolist()]

    def _encode(self, pairs: list[PreferencePair]) -> list[dict]:
        texts = []
        for pair in pairs:
            texts.append(render_for_reward_model(self.tokenizer, pair.prompt, pair.chosen))
            texts.append(render_for_reward_model(self.tokenizer, pair.prompt, pair.rejected))
        ids, truncated = encode_for_reward_model(
            self.tokenizer,
            texts,
            self.hparams.max_length,
            chars_per_token=max_chars_per_token(self.tokenizer),
        )
        self.num_truncated = sum(truncated)
        return [
            {
                "chosen_input_ids": ids[2 * i],
                "rejected_input_ids": ids[2 * i + 1],
                "margin": p.margin,
            }
            for i, p in enumerate(pairs)
        ]

    def _loader(self, items: list[dict], shuffle: bool) -> DataLoader:
        pad_id = self.tokenizer.pad_token_id
        return DataLoader(
            items,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            collate_fn=functools.partial(collate_pairs, pad_id=pad_id),
            num_workers=self.hparams.num_workers,
            generator=torch.Generator().manual_seed(self.hparams.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set else []
