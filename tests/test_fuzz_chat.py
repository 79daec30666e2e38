"""Properties of the chat format: parsing never raises, render and parse round-trip, flags.

Conversations are generated (any text without the format's own markers, reasoning, tool calls
and tool replies), rendered by :func:`lit_qwen3.chat.render`, compared with the toy tokenizer's
Jinja template and the official one, and the last reply parsed back by text and by token id.
"""

from __future__ import annotations

import pytest
from fuzzing import any_text, chat_text, fuzz, json_values, repeated
from hypothesis import assume, given
from hypothesis import strategies as st

from lit_qwen3 import chat

MARKERS = ("<think>", "</think>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_")


def _clean(text: str) -> bool:
    return not any(m in text for m in MARKERS)


plain = any_text.filter(_clean)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)


@st.composite
def tool_calls(draw) -> list[dict]:
    calls = []
    for _ in range(draw(st.integers(1, 2))):
        arguments = draw(st.dictionaries(names, json_values, max_size=3) | plain)
        call = {"name": draw(names), "arguments": arguments}
        calls.append({"type": "function", "function": call} if draw(st.booleans()) else call)
    return calls


@st.composite
def assistant(draw, *, calls: bool) -> dict:
    message = {"role": "assistant", "content": draw(plain)}
    if draw(st.booleans()):
        message["reasoning_content"] = draw(plain)
    if calls:
        message["tool_calls"] = draw(tool_calls())
    return message


@st.composite
def conversations(draw) -> list[dict]:
    """System?, then turns of user -> assistant (-> tool calls, tool replies, assistant)."""
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(plain)})
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(plain)})
        if draw(st.booleans()):
            messages.append(draw(assistant(calls=True)))
            for _ in range(draw(st.integers(1, 2))):
                messages.append({"role": "tool", "content": draw(plain)})
        messages.append(draw(assistant(calls=False)))
    return messages


def _last_completion(text: str) -> str:
    header = "<|im_start|>assistant\n"
    assert text.endswith("<|im_end|>\n")
    return text[text.rindex(header) + len(header) : -len("<|im_end|>\n")]


# -- parsing ------------------------------------------------------------------------------------
@fuzz(300)
@given(chat_text | repeated(["<think>", "</think>", " ", "a"]), st.booleans())
def test_split_thinking_never_raises_and_leaves_no_tag_in_the_answer(text, opened_in_prompt):
    parsed = chat.split_thinking(text, opened_in_prompt=opened_in_prompt)
    assert chat.THINK_START not in parsed.answer and chat.THINK_END not in parsed.answer
    if parsed.thinking is not None:
        assert chat.THINK_START not in parsed.thinking and chat.THINK_END not in parsed.thinking
    if parsed.well_formed:
        assert text.count(chat.THINK_END) == 1
        assert text.count(chat.THINK_START) == (0 if opened_in_prompt else 1)
        assert opened_in_prompt or text.lstrip().startswith(chat.THINK_START)


@fuzz(150)
@given(conversations())
def test_render_then_split_gives_back_the_last_reply(messages):
    last = messages[-1]
    parsed = chat.split_thinking(_last_completion(chat.render(messages)))
    assert parsed.well_formed
    assert parsed.thinking == last.get("reasoning_content", "").strip()
    assert parsed.answer == last["content"].strip()


@fuzz(100)
@given(conversations(), st.booleans())
def test_render_equals_the_toy_template_and_token_parsing_equals_text_parsing(
    toy_tokenizer, messages, enable_thinking
):
    text = chat.render(messages, enable_thinking=enable_thinking)
    assert text == toy_tokenizer.apply_chat_template(
        messages, tokenize=False, enable_thinking=enable_thinking
    )
    completion = _last_completion(text)
    ids = toy_tokenizer(completion + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert chat.parse_completion(ids, toy_tokenizer) == chat.split_thinking(completion)


@fuzz(60)
@given(conversations())
def test_render_equals_the_official_qwen3_template(qwen3_tokenizer, messages):
    assert chat.render(messages) == qwen3_tokenizer.apply_chat_template(messages, tokenize=False)


@fuzz(200)
@given(chat_text)
def test_token_parsing_equals_text_parsing_on_any_text(toy_tokenizer, text):
    """Whatever the policy writes: parsing its tokens and parsing its text agree."""
    assume("<|im_end|>" not in text and "<|endoftext|>" not in text and "<|im_start|>" not in text)
    ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    by_ids = chat.parse_completion(ids, toy_tokenizer)
    assert by_ids == chat.split_thinking(text)


# -- flags --------------------------------------------------------------------------------------
FLAGS = {"/think": True, "/no_think": False}
#: Look like flags, are not: other words, other case, inside paths and URLs.
DECOYS = [
    "/thinking",
    "/think_hard",
    "/no_thinker",
    "/Think",
    "/no-think",
    "/ think",
    "no_think",
    "think",
    "https://example.com/think",
    "src/no_think.py",
    "a/think",
]
WORDS = ["Solve", "x", "2+2?", "é", "\u3000"]
#: What follows each piece: whitespace, or punctuation then whitespace ("/think." is a flag).
SEPARATORS = [" ", "\n", "  ", "\t", ". ", "? ", ", ", "!\n"]


@st.composite
def flagged_text(draw) -> tuple[str, list[str]]:
    """Text of words, flags and decoys, each followed by a separator; and its pieces."""
    pieces = draw(st.lists(st.sampled_from([*WORDS, *FLAGS, *DECOYS]), max_size=6))
    n = len(pieces)
    separators = draw(st.lists(st.sampled_from(SEPARATORS), min_size=n, max_size=n))
    return "".join(p + s for p, s in zip(pieces, separators, strict=True)), pieces


@st.composite
def flagged_messages(draw) -> tuple[list[dict], bool]:
    """Messages of flagged text in any role; and the mode computed by hand (last flag wins)."""
    mode = True
    messages = []
    for _ in range(draw(st.integers(1, 5))):
        role = draw(st.sampled_from(["user", "system", "assistant", "tool"]))
        content, pieces = draw(flagged_text())
        messages.append({"role": role, "content": content})
        if role in ("user", "system"):
            for piece in pieces:
                mode = FLAGS.get(piece, mode)
    return messages, mode


@fuzz(300)
@given(flagged_messages())
def test_thinking_enabled_is_the_last_flag_of_user_and_system_messages(case):
    messages, mode = case
    assert chat.thinking_enabled(messages) is mode
    assert chat.thinking_enabled(messages, enable_thinking=False) is False


@fuzz(300)
@given(flagged_messages(), st.booleans())
def test_with_thinking_flag_sets_the_mode_and_is_idempotent(case, thinking):
    messages, _ = case
    assume(any(m["role"] == "user" for m in messages))
    before = [dict(m) for m in messages]
    once = chat.with_thinking_flag(messages, thinking)
    assert chat.thinking_enabled(once) is thinking
    assert chat.with_thinking_flag(once, thinking) == once
    assert (
        chat.with_thinking_flag(chat.with_thinking_flag(messages, not thinking), thinking) == once
    )
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    assert once[last_user]["content"].endswith("/think" if thinking else "/no_think")
    assert messages == before  # the input is not modified


@fuzz(300)
@given(flagged_text())
def test_strip_thinking_flags_removes_the_flags_and_nothing_else(case):
    text, pieces = case
    stripped = chat.strip_thinking_flags(text)
    assert chat.thinking_enabled([{"role": "user", "content": stripped}]) is True
    assert chat.strip_thinking_flags(stripped) == stripped == stripped.strip()
    # Every other piece stays, in order ("/think." leaves its "." behind).
    assert [c for c in stripped if c.isalnum()] == [
        c for piece in pieces if piece not in FLAGS for c in piece if c.isalnum()
    ]


@fuzz(300)
@given(chat_text)
def test_strip_thinking_flags_never_raises_and_is_idempotent(text):
    stripped = chat.strip_thinking_flags(text)
    assert chat.strip_thinking_flags(stripped) == stripped
    assert chat.thinking_enabled([{"role": "user", "content": stripped}]) is True


def test_flag_rules_by_hand():
    """The rules the properties above generate from, spelled out."""
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    assert chat.thinking_enabled(user("Solve it /no_think")) is False
    assert chat.thinking_enabled(user("/no_think\nSolve it /think.")) is True
    assert chat.thinking_enabled(user("read https://example.com/no_think first")) is True
    assert chat.thinking_enabled(user("open src/no_think.py")) is True
    # Removing a flag never makes one: "/no_think" after "/think" is part of a path.
    assert chat.strip_thinking_flags("/think/no_think") == "/think/no_think"
    assert chat.strip_thinking_flags("ok /think. /no_think!") == "ok.!"
    # A later system flag would win over the user's: with_thinking_flag removes it.
    later = [{"role": "user", "content": "x"}, {"role": "system", "content": "Be brief /no_think"}]
    flagged = chat.with_thinking_flag(later, True)
    assert flagged[1]["content"] == "Be brief" and chat.thinking_enabled(flagged) is True
    with pytest.raises(ValueError, match="at least one user message"):
        chat.with_thinking_flag([{"role": "system", "content": "hi"}], True)


def test_repeated_think_tags_stay_out_of_the_thinking_text(toy_tokenizer):
    # Truncated output that reopened its block: the thinking is the text, without the tags,
    # by text and by token id alike.
    text = "<think>a<think>b"
    parsed = chat.split_thinking(text)
    assert (parsed.thinking, parsed.answer, parsed.well_formed) == ("ab", "", False)
    ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chat.parse_completion(ids, toy_tokenizer) == parsed
