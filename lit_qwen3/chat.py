"""Qwen3 chat format and thinking control: the one place that knows about ``<think>``.

``render`` reproduces the official Qwen3 chat template (``tokenizer_config.json`` of the Qwen3
models) in plain Python, so data code, the sampler and tests agree on the exact text without a
Jinja round trip. ``thinking_enabled`` decides a reply's mode from the ``/think`` and
``/no_think`` flags (the last flag wins, as in the report's multi-turn fusion data), and
``split_thinking`` / ``parse_completion`` split a completion into thinking and answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

THINK_START = "<think>"
THINK_END = "</think>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"

#: What the template writes for a non-thinking reply (``enable_thinking=False`` or ``/no_think``).
EMPTY_THINKING = "<think>\n\n</think>\n\n"

_STOP_SENTENCE = (
    "Considering the limited time by the user, I have to give the solution based on the "
    "thinking directly now."
)
#: Qwen's docs: appended when thinking reaches the budget, then the answer continues.
STOP_THINKING_DOCS = f"\n\n{_STOP_SENTENCE}\n</think>\n\n"
#: The Qwen3 report's form, verbatim (its ``</think>.`` looks like a typo; kept for fidelity).
STOP_THINKING_REPORT = f"{_STOP_SENTENCE}\n</think>.\n\n"
#: The default stop-thinking text of the sampler and the budget callbacks.
STOP_THINKING = STOP_THINKING_DOCS

# A flag is a word of its own: "/think" in a path or URL ("src/no_think.py", "/think/x") is not
# one, so removing flags never turns the rest of the text into a new flag.
_FLAG = re.compile(r"(?<!\S)/(no_)?think(?![\w/])")
_FLAG_WITH_SPACE = re.compile(r"\s*(?<!\S)/(?:no_)?think(?![\w/])")

_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)

Message = Mapping[str, Any]


def _to_json(value: Any) -> str:
    # transformers' ``tojson`` filter: json.dumps with default separators and no ASCII escaping.
    return json.dumps(value, ensure_ascii=False)


def _text(message: Message) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _is_tool_response(text: str) -> bool:
    return text.startswith("<tool_response>") and text.endswith("</tool_response>")


def _last_query_index(messages: Sequence[Message]) -> int:
    """Index of the last real user query; reasoning before it is dropped from the history."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        content = message.get("content")
        if (
            message["role"] == "user"
            and isinstance(content, str)
            and not _is_tool_response(content)
        ):
            return index
    return len(messages) - 1


def _split_reasoning(message: Message) -> tuple[str, str]:
    content = _text(message)
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str):
        return reasoning, content
    if THINK_END in content:
        reasoning = content.split(THINK_END)[0].rstrip("\n").split(THINK_START)[-1].lstrip("\n")
        return reasoning, content.split(THINK_END)[-1].lstrip("\n")
    return "", content


def _render_tool_calls(tool_calls: Sequence[Mapping[str, Any]], content: str) -> str:
    parts = []
    for i, call in enumerate(tool_calls):
        if (i == 0 and content) or i > 0:
            parts.append("\n")
        call = call.get("function") or call
        arguments = call["arguments"]
        if not isinstance(arguments, str):
            arguments = _to_json(arguments)
        parts.append(
            f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {arguments}}}\n</tool_call>'
        )
    return "".join(parts)


def _render_assistant(message: Message, *, keep_reasoning: bool, is_last: bool) -> str:
    reasoning, content = _split_reasoning(message)
    if keep_reasoning and (is_last or reasoning):
        text = f"{IM_START}assistant\n<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"
        text += content.lstrip("\n")
    else:
        text = f"{IM_START}assistant\n{content}"
    if message.get("tool_calls"):
        text += _render_tool_calls(message["tool_calls"], content)
    return text + f"{IM_END}\n"


def render(
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Render ``messages`` exactly as the official Qwen3 chat template does.

    Assistant turns after the last user query keep their reasoning in a ``<think>`` block;
    earlier ones keep only their answer. ``enable_thinking=False`` appends the empty thinking
    block to the generation prompt.
    """
    if not messages:
        raise ValueError("render() needs at least one message")
    for i, message in enumerate(messages):
        if "role" not in message:
            raise ValueError(f"messages[{i}] has no 'role': {dict(message)!r}")
    parts: list[str] = []
    has_system = messages[0]["role"] == "system"
    if tools:
        parts.append(f"{IM_START}system\n")
        if has_system:
            parts.append(messages[0]["content"] + "\n\n")
        parts.append(_TOOLS_HEADER)
        parts.extend("\n" + _to_json(tool) for tool in tools)
        parts.append(_TOOLS_FOOTER)
    elif has_system:
        parts.append(f"{IM_START}system\n{messages[0]['content']}{IM_END}\n")

    last_query = _last_query_index(messages)
    last = len(messages) - 1
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "user" or (role == "system" and i > 0):
            parts.append(f"{IM_START}{role}\n{_text(message)}{IM_END}\n")
        elif role == "assistant":
            parts.append(
                _render_assistant(message, keep_reasoning=i > last_query, is_last=i == last)
            )
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                parts.append(f"{IM_START}user")
            parts.append(f"\n<tool_response>\n{_text(message)}\n</tool_response>")
            if i == last or messages[i + 1]["role"] != "tool":
                parts.append(f"{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
        if not enable_thinking:
            parts.append(EMPTY_THINKING)
    return "".join(parts)


def thinking_enabled(messages: Sequence[Message], enable_thinking: bool = True) -> bool:
    """The mode the next reply should use: the last ``/think`` or ``/no_think`` flag wins.

    Flags count in user and system messages; ``enable_thinking=False`` (the template switch)
    overrides them; with no flag, thinking is the default.
    """
    if not enable_thinking:
        return False
    mode = True
    for message in messages:
        if message.get("role") not in ("user", "system"):
            continue
        flags = _FLAG.findall(_text(message))
        if flags:
            mode = flags[-1] != "no_"
    return mode


def strip_thinking_flags(text: str) -> str:
    """``text`` without its ``/think`` and ``/no_think`` flags (and the spaces before them)."""
    return _FLAG_WITH_SPACE.sub("", text).strip()


def with_thinking_flag(messages: Sequence[Message], thinking: bool) -> list[dict]:
    """A copy whose last user message ends with exactly the flag of the wanted mode.

    Flags of system messages after that user message are removed: they would win over it.
    """
    messages = [dict(m) for m in messages]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise ValueError("a conversation needs at least one user message to carry a flag")
    for later in messages[users[-1] + 1 :]:
        if later.get("role") == "system" and _FLAG.search(_text(later)):
            later["content"] = strip_thinking_flags(later["content"])
    last = messages[users[-1]]
    text = _FLAG_WITH_SPACE.sub("", last.get("content") or "").rstrip()
    last["content"] = f"{text} {'/think' if thinking else '/no_think'}"
    return messages


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion split at ``</think>``.

    ``thinking`` is None when the completion has no thinking block; ``well_formed`` means exactly
    one block that opens at the start (or in the prompt) and closes before the answer.
    """

    thinking: str | None
    answer: str
    well_formed: bool


def _split_positions(
    starts: list[int], ends: list[int], *, length: int, opened_in_prompt: bool
) -> tuple[tuple[int, int] | None, int, bool]:
    """Shared logic of text and token parsing: (thinking span, answer start, well formed)."""
    if not ends:
        if starts:  # opened but never closed: all thinking, no answer (truncated)
            return (starts[0] + 1, length), length, False
        if opened_in_prompt:
            return (0, length), length, False
        return None, 0, False
    end = ends[0]
    opens_before = [s for s in starts if s < end]
    begin = opens_before[-1] + 1 if opens_before else 0
    well_formed = (
        len(ends) == 1
        and len(starts) == (0 if opened_in_prompt else 1)
        and (opened_in_prompt or starts[0] == 0)
    )
    return (begin, end), end + 1, well_formed


def split_thinking(text: str, *, opened_in_prompt: bool = False) -> ParsedCompletion:
    """Split completion text into (thinking, answer, well_formed).

    ``opened_in_prompt``: the prompt already ended inside ``<think>`` (templates that pre-open
    the block), so the completion starts with thinking and only closes it.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_thinking() expects a str completion, got {type(text).__name__}")
    stripped = text.lstrip()
    # Work on a list of "tokens": tags are single units, other text one character each.
    pieces = re.split(f"({re.escape(THINK_START)}|{re.escape(THINK_END)})", stripped)
    units: list[str] = []
    for piece in pieces:
        units.extend([piece] if piece in (THINK_START, THINK_END) else list(piece))
    starts = [i for i, u in enumerate(units) if u == THINK_START]
    ends = [i for i, u in enumerate(units) if u == THINK_END]
    span, answer_start, well_formed = _split_positions(
        starts, ends, length=len(units), opened_in_prompt=opened_in_prompt
    )

    def join(part: list[str]) -> str:  # stray tags dropped, as parse_completion drops their ids
        return "".join(u for u in part if u not in (THINK_START, THINK_END)).strip()

    thinking = None if span is None else join(units[span[0] : span[1]])
    return ParsedCompletion(thinking, join(units[answer_start:]), well_formed)


@dataclass(frozen=True)
class ThinkTokens:
    """Token ids the sampler and parsers need, resolved once from a tokenizer."""

    think_start_id: int
    think_end_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> ThinkTokens:
        ids = {}
        for name, token in (("think_start_id", THINK_START), ("think_end_id", THINK_END)):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(
                    f"tokenizer {type(tokenizer).__name__} has no single token for {token!r}: "
                    "thinking control needs a Qwen3-style tokenizer with <think> and </think>"
                )
            ids[name] = token_id
        eos = []
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        for token in (IM_END, ENDOFTEXT):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in eos:
                eos.append(token_id)
        if not eos:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no end-of-sequence token")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        return cls(eos_token_ids=tuple(eos), pad_token_id=pad, **ids)


def thinking_span_mask(ids: Any, tokens: ThinkTokens, opened_in_prompt: Any = False) -> Any:
    """(B, T) bool tensor: the completion tokens inside a thinking block, tags excluded.

    ``ids`` is a (B, T) tensor of completion ids; ``opened_in_prompt`` (bool or (B,) bool) says
    the prompt left a block open. A nested ``<think>`` is a thinking token (as the budget counts
    it); ``</think>`` closes the block.
    """
    import torch  # local: the chat format itself needs no torch

    position = torch.arange(ids.shape[-1], device=ids.device)
    is_start, is_end = ids == tokens.think_start_id, ids == tokens.think_end_id
    last_start = torch.where(is_start, position, -1).cummax(-1).values
    last_end = torch.where(is_end, position, -1).cummax(-1).values
    opened = torch.as_tensor(opened_in_prompt, device=ids.device).reshape(-1, 1).expand_as(ids)
    inside_after = (last_start > last_end) | (opened & (last_start < 0) & (last_end < 0))
    inside_before = torch.cat([opened[:, :1], inside_after[:, :-1]], dim=-1)
    return inside_before & ~is_end


def parse_completion(
    token_ids: Sequence[int], tokenizer: Any, *, opened_in_prompt: bool = False
) -> ParsedCompletion:
    """Split a completion by token id (``<think>`` is not "special", so text search is fragile)."""
    ids = [int(t) for t in token_ids]
    tokens = ThinkTokens.from_tokenizer(tokenizer)
    skip = set(tokens.eos_token_ids) | {tokens.pad_token_id}
    while ids and ids[-1] in skip:  # trailing eos/padding
        ids.pop()
    first = 0
    while first < len(ids) and not tokenizer.decode(ids[first : first + 1]).strip():
        first += 1  # leading whitespace, as split_thinking's lstrip
    ids = ids[first:]
    starts = [i for i, t in enumerate(ids) if t == tokens.think_start_id]
    ends = [i for i, t in enumerate(ids) if t == tokens.think_end_id]
    span, answer_start, well_formed = _split_positions(
        starts, ends, length=len(ids), opened_in_prompt=opened_in_prompt
    )

    def decode(part: list[int]) -> str:
        kept = [t for t in part if t not in (tokens.think_start_id, tokens.think_end_id)]
        return tokenizer.decode(kept, skip_special_tokens=True).strip()

    thinking = None if span is None else decode(ids[span[0] : span[1]])
    return ParsedCompletion(thinking, decode(ids[answer_start:]), well_formed)


def require_chat_template(tokenizer: Any, source: str | None = None) -> None:
    """Fail early, naming the tokenizer, when it cannot render conversations."""
    if not getattr(tokenizer, "chat_template", None):
        where = f" loaded from {source}" if source else ""
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__}{where} has no chat template: set "
            "`tokenizer.chat_template` (or use a Qwen3 / lit_qwen3 toy tokenizer) before chat data"
        )
