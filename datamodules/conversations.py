"""Chat SFT data as packed batches: the DataModule of the cold start (and later SFT stages).

Sources: the toy task's chain-of-thought conversations (``data=None``, generated, not downloaded),
a JSONL file (one ``{"messages": [...], "enable_thinking"?: bool}`` per line) or a directory saved
with ``datasets.Dataset.save_to_disk`` (a ``messages`` column); public layouts (ShareGPT
``conversations``, ``<think>`` in the reply, Hugging Face ``tools``/``tool_calls``) are read as they
are (:mod:`lit_qwen3.formats`). Each conversation is rendered with
the tokenizer's own chat template, trained on its assistant replies only (``lit_qwen3.ops.packing``),
and packed into batches of at most ``max_tokens_per_batch`` tokens: one row per batch, documents
separated by restarting ``position_ids`` (run the model with ``use_cache=False``).

    dm = ConversationDataModule("toy", data="train.jsonl", max_tokens_per_batch=4096)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # input_ids, labels, position_ids: (1, <=4096)
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from lit_qwen3.chat import split_thinking
from lit_qwen3.datamodules.jsonl import iter_jsonl
from lit_qwen3.datamodules.resumable import ResumableDataLoader
from lit_qwen3.formats import chat_row
from lit_qwen3.models import load_tokenizer
from lit_qwen3.ops.packing import (
    QWEN3_ASSISTANT_HEADER,
    QWEN3_TURN_END,
    Overflow,
    collate_packed,
    collate_padded,
    control_tokens,
    group_by_padded_length,
    max_chars_per_token,
    pack_sequences,
    tokenize_conversation,
)

ROLES = ("system", "user", "assistant", "tool")
_TOOL_CALL_SHAPE = (
    "{'function': {'name': str, 'arguments': object or str}} or {'name': str, 'arguments': ...}"
)


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise ValueError(f"{where}.tool_calls must be a list, got {type(calls).__name__}")
    for j, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, Mapping) else None
        if not (
            isinstance(function, Mapping)
            and isinstance(function.get("name"), str)
            and function["name"]
            and isinstance(function.get("arguments"), (Mapping, str))
        ):
            raise ValueError(
                f"{where}.tool_calls[{j}] must be {_TOOL_CALL_SHAPE}, got {call!r:.120}"
            )


class Conversation(dict):
    """A validated row: a plain dict that remembers where it came from (``where``), so errors
    found later, tokenizing or measuring it, still name its file and line."""

    where: str = "a conversation"


def validate_conversation(row: Any, where: str) -> Conversation:
    """Check one row's schema; return it with clean messages (``None`` fields dropped).

    ``where`` names the row in errors (``"data.jsonl:12"``) and stays on the returned
    :class:`Conversation`. Extra keys (``answer``...) are kept.
    """
    if not isinstance(row, Mapping):
        raise ValueError(
            f"{where}: expected a JSON object with 'messages', got {type(row).__name__}"
        )
    row = chat_row(row, where)  # ShareGPT turns, inline <think>, HF tool calls: the native form
    messages = row.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of messages")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        message = {k: v for k, v in message.items() if v is not None}
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}: messages[{i}] has role {role!r}, expected one of {ROLES}")
        if role == "assistant" and message.get("tool_calls") and "content" not in message:
            message["content"] = ""
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: messages[{i}] ({role}) needs a string 'content'")
        if not isinstance(message.get("reasoning_content", ""), str):
            raise ValueError(f"{where}: messages[{i}].reasoning_content must be a string")
        if "tool_calls" in message:
            _check_tool_calls(message["tool_calls"], f"{where}: messages[{i}]")
        clean.append(message)
    if not any(m["role"] == "assistant" for m in clean):
        raise ValueError(f"{where}: no assistant message, so nothing to train on")
    enable_thinking = row.get("enable_thinking", True)
    if enable_thinking is None:
        enable_thinking = True
    if not isinstance(enable_thinking, bool):
        raise ValueError(
            f"{where}: 'enable_thinking' must be true or false, got {enable_thinking!r}"
        )
    conversation = Conversation({**row, "messages": clean, "enable_thinking": enable_thinking})
    conversation.where = where
    return conversation


def read_jsonl(path: Path) -> list[Conversation]:
    """Conversations of a JSONL file; blank lines are skipped, errors name ``path:line``."""
    return [validate_conversation(row, where) for where, row in iter_jsonl(path)]


def read_dataset_dir(path: Path) -> list[Conversation]:
    """Conversations of a ``save_to_disk`` directory (a DatasetDict: its ``train`` split)."""
    import datasets  # lazy: only this source needs it

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:  # a directory that save_to_disk did not write
        raise FileNotFoundError(f"{path}: not a datasets directory ({error})") from None
    except Exception as error:  # corrupt files: Arrow's or json's own error, with no path
        raise ValueError(
            f"{path}: unreadable datasets directory ({type(error).__name__}: {error})"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise ValueError(f"{path}: dataset has splits {list(loaded)}, expected a 'train' split")
        loaded = loaded["train"]
    if "messages" not in loaded.column_names:
        raise ValueError(f"{path}: no 'messages' column (columns: {loaded.column_names})")
    return [validate_conversation(row, f"{path}[row {i}]") for i, row in enumerate(loaded)]


def read_conversations(data: str | Path) -> list[Conversation]:
    """Validated conversations from a ``.jsonl`` file or a ``datasets`` directory."""
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"conversation data {str(path)!r} does not exist")
    if path.is_dir():
        rows = read_dataset_dir(path)
    elif path.suffix == ".jsonl":
        rows = read_jsonl(path)
    else:
        raise ValueError(f"{path}: expected a .jsonl file or a datasets directory")
    if not rows:
        raise ValueError(f"no conversations in {path}")
    return rows


def split_indices(
    n: int, *, val_fraction: float, val_size: int | None, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic (train, val) indices: ``val_size`` rows, else ``round(n * val_fraction)``."""
    n_val = val_size if val_size is not None else round(n * val_fraction)
    if n_val >= n:
        raise ValueError(
            f"validation split of {n_val} leaves no training data out of {n} conversations: "
            "lower val_size / val_fraction"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_val:]), sorted(order[:n_val])


def prompt_and_answer(row: Mapping[str, Any]) -> dict[str, Any]:
    """An evaluation query: the messages before the last assistant reply, and its answer.

    ``answer`` is the row's own ``answer`` when given, else the final reply without thinking.
    """
    messages = list(row["messages"])
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    answer = row.get("answer")
    if answer is None:
        answer = split_thinking(messages[last]["content"]).answer
    return {
        "messages": messages[:last],
        "answer": str(answer),
        "enable_thinking": row.get("enable_thinking", True),
    }


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch, a function of (seed, epoch) only, so resumes replay it
    (``ResumableDataLoader`` then skips the batches the killed run had already trained on).

    Lightning calls ``set_epoch`` at the start of each epoch (and wraps this sampler for DDP).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class _Batches(Dataset):
    """Precomputed batches: item ``i`` is the list of tokenized examples of batch ``i``."""

    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        return self.batches[index]


class _CollateBatch:
    """DataLoader collate (picklable for workers): one precomputed batch to tensors."""

    def __init__(self, packing: bool, pad_token_id: int) -> None:
        self.packing, self.pad_token_id = packing, pad_token_id

    def __call__(self, items: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        (examples,) = items
        if self.packing:
            return collate_packed(examples)
        return collate_padded(examples, pad_token_id=self.pad_token_id)


class ConversationDataModule(LightningDataModule):
    """Chat SFT conversations, assistant-only loss, packed into token-budget batches.

    ``packing=True``: each batch is one row of at most ``max_tokens_per_batch`` tokens
    (``input_ids``, ``labels``, ``position_ids``; no padding). ``packing=False``: right-padded
    rows of similar length whose padded size fits the same budget (adds ``attention_mask``).
    Conversations over ``max_length`` tokens are dropped (``overflow="drop"``), truncated or an
    error. ``self.stats`` counts conversations, tokens, dropped examples and packing efficiency.

    flash-attention runs packed rows with its variable-length kernels; any other attention gets
    a packed row's documents unpacked into right-padded rows by the stages
    (``lit_qwen3.ops.training_forward.packed_hidden_states``), so each document attends to itself
    only and packing costs no T x T attention (toy task on CPU: packed and padded batches both
    ~24k tokens/s; before unpacking, packed rows ran at 5k).

    ``verifier`` names how evaluation callbacks check answers (``arithmetic`` for the toy task,
    else a reward name; default ``math``); ``val_queries`` are the validation prompts and answers.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase = "toy",
        data: str | None = None,
        max_tokens_per_batch: int = 4096,
        max_length: int = 1024,
        packing: bool = True,
        val_fraction: float = 0.05,
        val_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        overflow: Overflow = "drop",
        train_on_all_assistant_turns: bool = True,
        assistant_header: str = QWEN3_ASSISTANT_HEADER,
        turn_end: str = QWEN3_TURN_END,
        toy_size: int = 20000,
        toy_think_fraction: float = 1.0,
        toy_cut_fraction: float = 0.0,
        toy_min_digits: int = 2,
        toy_max_digits: int = 4,
        toy_mul_fraction: float = 0.25,
        toy_check: bool = True,
        verifier: str | None = None,
    ) -> None:
        super().__init__()
        if max_length < 1 or max_tokens_per_batch < 1:
            raise ValueError(
                f"max_length ({max_length}) and max_tokens_per_batch ({max_tokens_per_batch}) "
                "must be positive"
            )
        if max_length > max_tokens_per_batch:
            raise ValueError(
                f"max_length ({max_length}) exceeds max_tokens_per_batch ({max_tokens_per_batch}): "
                "a conversation must fit in one batch"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if val_size is not None and val_size < 0:
            raise ValueError(f"val_size must be >= 0, got {val_size}")
        if overflow not in ("truncate", "drop", "error"):
            raise ValueError(f"overflow must be 'truncate', 'drop' or 'error', got {overflow!r}")
        if data is None and toy_size < 1:
            raise ValueError(f"toy_size must be >= 1, got {toy_size}")
        # The tokenizer is the model's: the stage module records it, not the data.
        self.save_hyperparameters(ignore=["tokenizer"])
        # Subclasses (fusion, distillation) pass these on; under LightningCLI hparams hold only
        # the subclass's own arguments, so record the ones this class reads explicitly.
        self.hparams.update(
            data=data,
            max_tokens_per_batch=max_tokens_per_batch,
            max_length=max_length,
            packing=packing,
            val_fraction=val_fraction,
            val_size=val_size,
            num_workers=num_workers,
            seed=seed,
            overflow=overflow,
            train_on_all_assistant_turns=train_on_all_assistant_turns,
            assistant_header=assistant_header,
            turn_end=turn_end,
            toy_size=toy_size,
            toy_think_fraction=toy_think_fraction,
            toy_cut_fraction=toy_cut_fraction,
            toy_min_digits=toy_min_digits,
            toy_max_digits=toy_max_digits,
            toy_mul_fraction=toy_mul_fraction,
            toy_check=toy_check,
        )
        self.tokenizer = load_tokenizer(tokenizer)
        #: How evaluation callbacks check answers: the toy task's exact check, else math-verify.
        self.verifier = verifier or ("arithmetic" if data is None else "math")
        self.stats: dict[str, float] = {}
        self.val_queries: list[dict[str, Any]] = []
        self._train: list[list[dict[str, Any]]] | None = None
        self._val: list[list[dict[str, Any]]] = []
        self._sampler: EpochShuffleSampler | None = None

    # -- data -----------------------------------------------------------------------------------
    def _source(self) -> str:
        return "the toy task" if self.hparams.data is None else str(self.hparams.data)

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(train rows, val rows): the toy task's two splits, or a seeded split of ``data``."""
        hp = self.hparams
        if hp.data is not None:
            rows = read_conversations(hp.data)
            train, val = split_indices(
                len(rows), val_fraction=hp.val_fraction, val_size=hp.val_size, seed=hp.seed
            )
            return [rows[i] for i in train], [rows[i] for i in val]
        from lit_qwen3.datamodules.arithmetic import ArithmeticTask

        task = ArithmeticTask(
            seed=hp.seed,
            min_digits=hp.toy_min_digits,
            max_digits=hp.toy_max_digits,
            mul_fraction=hp.toy_mul_fraction,
            check=hp.toy_check,
        )
        n_val = hp.val_size if hp.val_size is not None else round(hp.toy_size * hp.val_fraction)
        kwargs = {"think_fraction": hp.toy_think_fraction, "cut_fraction": hp.toy_cut_fraction}
        train = task.conversations(hp.toy_size, split="train", **kwargs)
        val = task.conversations(n_val, split="val", **kwargs) if n_val else []
        return (
            [validate_conversation(r, f"toy train row {i}") for i, r in enumerate(train)],
            [validate_conversation(r, f"toy val row {i}") for i, r in enumerate(val)],
        )

    def _tokenize(self, rows: list[dict[str, Any]], counts: dict[str, int]) -> list[dict]:
        """Tokenized examples; an error names the row's file and line (``Conversation.where``)."""
        hp = self.hparams
        chars_per_token = max_chars_per_token(self.tokenizer)
        markers = frozenset(control_tokens(self.tokenizer) | {hp.assistant_header, hp.turn_end})
        examples = []
        for index, row in enumerate(rows):
            where = getattr(row, "where", f"{self._source()}: conversation {index}")
            try:
                example = tokenize_conversation(
                    self.tokenizer,
                    row["messages"],
                    enable_thinking=row["enable_thinking"],
                    max_length=hp.max_length,
                    overflow=hp.overflow,
                    train_on_all_assistant_turns=hp.train_on_all_assistant_turns,
                    assistant_header=hp.assistant_header,
                    turn_end=hp.turn_end,
                    chars_per_token=chars_per_token,
                    markers=markers,
                    tools=row.get("tools"),
                )
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            except Exception as error:  # the chat template or the tokenizer itself
                raise ValueError(
                    f"{where}: the tokenizer's chat template failed on this conversation: "
                    f"{type(error).__name__}: {error}"
                ) from error
            if example is None:
                counts["dropped_long"] += 1
            elif not any(example["loss_mask"]):
                counts["dropped_no_loss"] += 1
            else:
                counts["truncated"] += example["truncated"]
                examples.append(example)
        return examples

    def _batch(self, examples: list[dict]) -> list[list[dict]]:
        group = pack_sequences if self.hparams.packing else group_by_padded_length
        return [
            [examples[i] for i in b] for b in group(examples, self.hparams.max_tokens_per_batch)
        ]

    def setup(self, stage: str | None = None) -> None:
        """Tokenize, split and batch once (cached in memory; later calls do nothing)."""
        if self._train is not None:
            return
        train_rows, val_rows = self.load_rows()
        counts = {"dropped_long": 0, "dropped_no_loss": 0, "truncated": 0}
        train = self._tokenize(train_rows, counts)
        val = self._tokenize(val_rows, counts)
        if not train:
            raise ValueError(
                f"all {len(train_rows)} training conversations of {self._source()} were dropped "
                f"({counts['dropped_long']} longer than max_length={self.hparams.max_length}, "
                f"{counts['dropped_no_loss']} with no assistant tokens left)"
            )
        self._train, self._val = self._batch(train), self._batch(val)
        self.val_queries = [prompt_and_answer(row) for row in val_rows]
        self.stats = {
            "conversations": len(train_rows) + len(val_rows),
            "train_conversations": len(train),
            "val_conversations": len(val),
            **counts,
            "train_tokens": sum(len(e["input_ids"]) for e in train),
            "train_loss_tokens": sum(sum(e["loss_mask"]) for e in train),
            "val_tokens": sum(len(e["input_ids"]) for e in val),
            "train_batches": len(self._train),
            "val_batches": len(self._val),
            **self._efficiency(self._train),
        }

    def _efficiency(self, batches: list[list[dict]]) -> dict[str, float]:
        """Real tokens over computed slots (padding counts), and over the batches' token budget."""
        real = sum(len(e["input_ids"]) for b in batches for e in b)
        if self.hparams.packing:
            slots = real
        else:
            slots = sum(len(b) * max(len(e["input_ids"]) for e in b) for b in batches)
        budget = len(batches) * self.hparams.max_tokens_per_batch
        return {"packing_efficiency": real / slots, "budget_fill": real / budget}

    # -- loaders --------------------------------------------------------------------------------
    def _loader(self, batches: list[list[dict]], sampler: Sampler | None) -> DataLoader:
        # resumable: a run killed mid-epoch continues at the next batch (datamodules/resumable.py)
        return ResumableDataLoader(
            _Batches(batches),
            batch_size=1,
            sampler=sampler,
            shuffle=False,
            collate_fn=_CollateBatch(self.hparams.packing, self._pad_token_id()),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def _pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        self._sampler = EpochShuffleSampler(len(self._train), seed=self.hparams.seed)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self._sampler.set_epoch(trainer.current_epoch)
        return self._loader(self._train, self._sampler)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        return self._loader(self._val, None) if self._val else []
