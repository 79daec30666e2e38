"""Chat SFT examples as tensors: assistant-only loss masks, packing into token budgets, collate.

Pure Python and torch, no Lightning, so any training loop can reuse them.

* ``tokenize_conversation`` renders a conversation with the tokenizer's own chat template and
  marks as trained every token of each assistant reply: from just after the assistant header
  (``<|im_start|>assistant\\n`` for Qwen3) up to and including the closing ``<|im_end|>``.
  Spans are found in the rendered *text* and mapped to tokens through the offset mapping, so any
  Hugging Face chat model works once its header and end marker are given. A message that holds
  one of the template's control tokens is refused (it would forge a turn), and a conversation
  longer than ``max_length * max_chars_per_token(tokenizer)`` characters is over the limit
  without tokenizing it whole (a 50 MB row costs the tokenizer minutes and gigabytes).
* ``pack_sequences`` groups examples into packs of at most ``max_tokens`` tokens (best-fit
  decreasing: few packs, no padding). ``group_by_padded_length`` is the padded counterpart.
* ``collate_packed`` turns one pack into ONE row of shape ``(1, total_tokens)`` with
  ``position_ids`` restarting at 0 for each document and no ``attention_mask``. Transformers
  (``masking_utils.find_packed_sequence_indices``) then builds a block-diagonal causal mask for
  sdpa / eager / flex attention, and flash-attention-2 runs varlen kernels from the same
  ``position_ids``. One caveat, checked in ``tests/test_packing.py``: the detection only runs when
  the forward has **no KV cache**, and ``Qwen3Config.use_cache`` defaults to True, so call
  ``model(**batch, use_cache=False)`` (or set ``model.config.use_cache = False``) when training on
  packed rows; otherwise documents in a pack attend to each other.
* ``labels`` stay aligned with ``input_ids`` as in Hugging Face (``labels[i] = input_ids[i]`` where
  trained, else -100); the model or loss shifts them. The first token of every document is never
  a label, so no document is trained to predict from the one packed before it.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch

IGNORE_INDEX = -100
QWEN3_ASSISTANT_HEADER = "<|im_start|>assistant\n"
QWEN3_TURN_END = "<|im_end|>"

Overflow = Literal["truncate", "drop", "error"]
Example = Mapping[str, Sequence[int]]


def max_chars_per_token(tokenizer: Any) -> int:
    """An upper bound on the characters one token stands for: twice the longest vocabulary entry.

    Byte-level entries spell one character per byte, so an entry is never shorter than the text
    it stands for; the factor 2 leaves room for normalizers that merge characters (NFC).
    """
    return 2 * max(len(token) for token in tokenizer.get_vocab())


def message_strings(value: Any) -> Iterator[str]:
    """Every string inside a message (content, reasoning, tool-call names and arguments)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key != "role":
                yield from message_strings(item)
    elif isinstance(value, Sequence):
        for item in value:
            yield from message_strings(item)


def control_tokens(tokenizer: Any) -> set[str]:
    """Texts the tokenizer turns into special tokens (``<|im_start|>``, ``<|im_end|>``...)."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    return {t.content for t in added.values() if t.special} | set(tokenizer.all_special_tokens)


def check_no_control_tokens(
    messages: Sequence[Mapping[str, Any]], markers: set[str] | frozenset[str]
) -> None:
    """Refuse a message whose text holds a template marker: it would be read as a turn boundary."""
    for i, message in enumerate(messages):
        for text in message_strings(message):
            for marker in markers:
                if marker and marker in text:
                    raise ValueError(
                        f"messages[{i}] ({message.get('role')}) contains {marker!r}, which the chat "
                        "template uses to delimit turns: remove it from the data"
                    )


def render_conversation(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    enable_thinking: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The full conversation as text, through the tokenizer's own chat template; ``tools``
    (JSON schemas) are written where the template puts them (Qwen3: the system turn)."""
    kwargs = {"tools": list(tools)} if tools else {}
    return tokenizer.apply_chat_template(
        list(messages),
        tokenize=False,
        add_generation_prompt=False,
        enable_thinking=enable_thinking,
        **kwargs,
    )


def assistant_spans(
    text: str, *, header: str = QWEN3_ASSISTANT_HEADER, end: str = QWEN3_TURN_END
) -> list[tuple[int, int]]:
    """Character spans ``[start, stop)`` of each assistant reply: after ``header``, through ``end``."""
    if not header or not end:
        raise ValueError("assistant header and turn end markers must be non-empty strings")
    spans = []
    search_from = 0
    while (found := text.find(header, search_from)) != -1:
        start = found + len(header)
        close = text.find(end, start)
        if close == -1:
            raise ValueError(
                f"assistant turn at character {found} has no end marker {end!r} in the rendered "
                f"conversation: {text[found : found + 80]!r}..."
            )
        spans.append((start, close + len(end)))
        search_from = close + len(end)
    return spans


def loss_mask_from_offsets(
    offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]
) -> list[int]:
    """1 for each token whose first character lies inside one of ``spans`` (sorted), else 0."""
    mask = [0] * len(offsets)
    span_index = 0
    for position, (start, _stop) in enumerate(offsets):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        if spans[span_index][0] <= start:
            mask[position] = 1
    return mask


def tokenize_conversation(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    enable_thinking: bool = True,
    max_length: int | None = None,
    overflow: Overflow = "truncate",
    train_on_all_assistant_turns: bool = True,
    assistant_header: str = QWEN3_ASSISTANT_HEADER,
    turn_end: str = QWEN3_TURN_END,
    chars_per_token: int | None = None,
    markers: set[str] | frozenset[str] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Token ids and assistant-only loss mask of one conversation (``tools``: the schemas the
    dialogue's calls follow, rendered by the template and never trained on).

    Returns ``{"input_ids", "loss_mask", "truncated"}``, or None when the conversation is longer
    than ``max_length`` and ``overflow="drop"``; ``overflow="truncate"`` keeps the first
    ``max_length`` tokens, ``"error"`` raises. ``train_on_all_assistant_turns=False`` trains the
    last reply only: the assistant turns after the last user query (a reply that calls tools has
    several, with the tool responses between them untrained). ``chars_per_token`` (see
    :func:`max_chars_per_token`) bounds the text one token stands for: a rendered conversation
    over ``max_length * chars_per_token`` characters is over the limit without tokenizing it
    whole (truncation tokenizes only its head). ``markers``: texts no message may contain
    (default: the tokenizer's control tokens and the two turn markers). An assistant message's
    optional ``forced`` text (the stop-thinking text of a reply cut at a budget) stays out of the
    loss: the sampler inserts it, the model only learns to continue after it.
    """
    if overflow not in ("truncate", "drop", "error"):
        raise ValueError(f"overflow must be 'truncate', 'drop' or 'error', got {overflow!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive number of tokens, got {max_length}")
    if markers is None:
        markers = control_tokens(tokenizer) | {assistant_header, turn_end}
    check_no_control_tokens(messages, markers)
    text = render_conversation(tokenizer, messages, enable_thinking=enable_thinking, tools=tools)
    spans = assistant_spans(text, header=assistant_header, end=turn_end)
    expected = sum(1 for m in messages if m.get("role") == "assistant")
    if len(spans) != expected:
        raise ValueError(
            f"found {len(spans)} assistant turn(s) marked by {assistant_header!r} ... {turn_end!r} "
            f"in the rendered conversation, expected {expected}: set assistant_header / turn_end "
            f"to this chat template's markers. Rendered text starts: {text[:120]!r}"
        )
    replies = [m for m in messages if m.get("role") == "assistant"]
    if not train_on_all_assistant_turns:
        keep = _reply_turns(messages)
        spans, replies = spans[len(spans) - keep :], replies[len(replies) - keep :]
    spans = _without_forced_text(text, spans, replies)
    if max_length is not None and chars_per_token and len(text) > max_length * chars_per_token:
        if overflow == "drop":
            return None
        if overflow == "error":
            raise ValueError(
                f"conversation has {len(text)} characters, more than max_length={max_length} "
                f"tokens can hold (at most {chars_per_token} characters per token)"
            )
        text = text[: (max_length + 1) * chars_per_token]  # still over max_length tokens
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    loss_mask = loss_mask_from_offsets(encoding["offset_mapping"], spans)
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        if overflow == "drop":
            return None
        if overflow == "error":
            raise ValueError(
                f"conversation has {len(input_ids)} tokens, more than max_length={max_length}"
            )
        input_ids, loss_mask = input_ids[:max_length], loss_mask[:max_length]
    return {"input_ids": input_ids, "loss_mask": loss_mask, "truncated": truncated}


def _without_forced_text(
    text: str, spans: list[tuple[int, int]], replies: Sequence[Mapping[str, Any]]
) -> list[tuple[int, int]]:
    """Each reply's span, less the first occurrence of its ``forced`` text (e.g. the stop-thinking
    text a budget inserts): the model is taught what follows it, never to write it itself.

    A reply's span splits in two around it (the result stays sorted). Raises when a reply's
    ``forced`` text is not in its rendered turn."""
    out: list[tuple[int, int]] = []
    for (start, end), reply in zip(spans, replies, strict=True):
        forced = reply.get("forced")
        if not forced:
            out.append((start, end))
            continue
        at = text.find(forced, start, end)
        if at == -1:
            raise ValueError(
                f"an assistant reply's forced text {forced!r} is not in its rendered turn "
                f"{text[start:end][:120]!r}"
            )
        out.append((start, at))
        out.append((at + len(forced), end))
    return out


def _reply_turns(messages: Sequence[Mapping[str, Any]]) -> int:
    """Assistant turns after the last user query (tool responses are not queries)."""
    turns = 0
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") == "user" and not (
            isinstance(content, str) and content.startswith("<tool_response>")
        ):
            break
        turns += message.get("role") == "assistant"
    return max(turns, 1)


def _lengths(examples: Sequence[int] | Sequence[Example]) -> list[int]:
    return [e if isinstance(e, int) else len(e["input_ids"]) for e in examples]


def _check_budget(lengths: list[int], max_tokens: int, drop_long: bool) -> list[int]:
    """Indices that fit in ``max_tokens``; an example that does not is an error unless dropped."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive number of tokens, got {max_tokens}")
    kept = []
    for index, length in enumerate(lengths):
        if length < 1:
            raise ValueError(f"example {index} is empty: nothing to train on")
        if length > max_tokens and not drop_long:
            raise ValueError(
                f"example {index} has {length} tokens, more than max_tokens={max_tokens}: raise "
                "the budget, truncate examples, or pass drop_long=True"
            )
        if length <= max_tokens:
            kept.append(index)
    return kept


def pack_sequences(
    examples: Sequence[int] | Sequence[Example],
    max_tokens: int,
    *,
    shuffle_seed: int | None = None,
    drop_long: bool = False,
) -> list[list[int]]:
    """Group example indices into packs of at most ``max_tokens`` tokens (best-fit decreasing).

    ``examples`` are lengths or dicts with ``input_ids``. Longest first, each into the fullest pack
    that still has room, so no two packs could be merged. Packs come out in creation order, or
    shuffled by ``shuffle_seed``. Examples longer than the budget raise unless ``drop_long``.
    """
    lengths = _lengths(examples)
    order = sorted(_check_budget(lengths, max_tokens, drop_long), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, pack index), sorted
    for index in order:
        slot = bisect.bisect_left(free, (lengths[index], -1))
        if slot == len(free):
            packs.append([index])
            room, pack = max_tokens - lengths[index], len(packs) - 1
        else:
            room, pack = free.pop(slot)
            packs[pack].append(index)
            room -= lengths[index]
        if room > 0:
            bisect.insort(free, (room, pack))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(packs)
    return packs


def group_by_padded_length(
    examples: Sequence[int] | Sequence[Example],
    max_tokens: int,
    *,
    shuffle_seed: int | None = None,
    drop_long: bool = False,
) -> list[list[int]]:
    """Batches of similar length whose padded size (rows x longest row) fits ``max_tokens``."""
    lengths = _lengths(examples)
    order = sorted(_check_budget(lengths, max_tokens, drop_long), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:  # longest first: a batch's first example sets its padded width
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(batches)
    return batches


def _labels(input_ids: Sequence[int], loss_mask: Sequence[int]) -> list[int]:
    if len(input_ids) != len(loss_mask):
        raise ValueError(
            f"input_ids ({len(input_ids)}) and loss_mask ({len(loss_mask)}) differ in length"
        )
    labels = [t if m else IGNORE_INDEX for t, m in zip(input_ids, loss_mask, strict=True)]
    if labels:
        labels[0] = IGNORE_INDEX  # never predicted from inside its own document
    return labels


def collate_packed(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """One pack as one row: ``input_ids``, ``labels``, ``position_ids``, all ``(1, total)``.

    No ``attention_mask``: documents are separated by the restarting ``position_ids`` (run the
    model with ``use_cache=False``, see the module docstring).
    """
    if not examples:
        raise ValueError("collate_packed() needs at least one example")
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        ids = list(example["input_ids"])
        if not ids:
            raise ValueError("collate_packed() got an empty example")
        input_ids += ids
        labels += _labels(ids, example["loss_mask"])
        positions += range(len(ids))
    return {
        "input_ids": torch.tensor([input_ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
    }


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, *, side: Literal["left", "right"]
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token lists padded to the longest.

    Left padding for generation (new tokens follow every prompt directly); right padding for
    models that read the last real token.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, cols] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return {"input_ids": ids, "attention_mask": mask}


def collate_padded(examples: Sequence[Example], *, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows: ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding)."""
    if not examples:
        raise ValueError("collate_padded() needs at least one example")
    batch = pad_batch([e["input_ids"] for e in examples], pad_token_id, side="right")
    labels = [_labels(list(e["input_ids"]), e["loss_mask"]) for e in examples]
    batch["labels"] = pad_batch(labels, IGNORE_INDEX, side="right")["input_ids"]
    return batch
