"""Our Python rendering of the Qwen3 template against the official Jinja template, and parsing."""

from __future__ import annotations

import pytest
from chat_cases import CONVERSATIONS, WEATHER_TOOL, WITH_TOOLS

from lit_qwen3 import chat


def _variants():
    for name, messages in CONVERSATIONS.items():
        for add_generation_prompt in (False, True):
            if add_generation_prompt and messages[-1]["role"] == "assistant":
                continue
            for enable_thinking in (True, False):
                yield pytest.param(
                    messages,
                    add_generation_prompt,
                    enable_thinking,
                    id=f"{name}-gen{int(add_generation_prompt)}-think{int(enable_thinking)}",
                )


@pytest.mark.parametrize(
    ("messages", "add_generation_prompt", "enable_thinking"), list(_variants())
)
def test_render_matches_official_template_text_and_ids(
    qwen3_tokenizer, messages, add_generation_prompt, enable_thinking
):
    tools = [WEATHER_TOOL] if any(messages is CONVERSATIONS[n] for n in WITH_TOOLS) else None
    kwargs = dict(
        add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking, tools=tools
    )
    expected = qwen3_tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    ours = chat.render(messages, **kwargs)
    assert ours == expected
    expected_ids = qwen3_tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, **kwargs
    )
    ours_ids = qwen3_tokenizer(ours, add_special_tokens=False)["input_ids"]
    assert ours_ids == expected_ids["input_ids"]


def test_enough_conversations_are_compared():
    assert len(CONVERSATIONS) >= 12


def test_non_thinking_generation_prompt_has_empty_block():
    text = chat.render(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, enable_thinking=False
    )
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert chat.EMPTY_THINKING == "<think>\n\n</think>\n\n"


def test_stop_thinking_strings_are_the_recipes():
    sentence = (
        "Considering the limited time by the user, I have to give the solution based on the "
        "thinking directly now."
    )
    assert chat.STOP_THINKING_DOCS == "\n\n" + sentence + "\n</think>\n\n"
    assert chat.STOP_THINKING_REPORT == sentence + "\n</think>.\n\n"
    assert chat.STOP_THINKING == chat.STOP_THINKING_DOCS


@pytest.mark.parametrize(
    ("messages", "enable_thinking", "expected"),
    [
        ([{"role": "user", "content": "hi"}], True, True),
        ([{"role": "user", "content": "hi"}], False, False),
        ([{"role": "user", "content": "hi /no_think"}], True, False),
        ([{"role": "user", "content": "hi /think"}], False, False),
        (
            [{"role": "system", "content": "/no_think"}, {"role": "user", "content": "hi"}],
            True,
            False,
        ),
        (
            [{"role": "system", "content": "/no_think"}, {"role": "user", "content": "x /think"}],
            True,
            True,
        ),
        ([{"role": "user", "content": "a /no_think b /think"}], True, True),
        ([{"role": "user", "content": "a /think b /no_think"}], True, False),
        (CONVERSATIONS["multi_turn_strips_old_reasoning"], True, True),
        (CONVERSATIONS["multi_turn_flags_last_wins"], True, True),
        (
            [
                {"role": "user", "content": "q /no_think"},
                {"role": "assistant", "content": "a /think"},  # assistants do not set flags
                {"role": "user", "content": "again"},
            ],
            True,
            False,
        ),
        ([{"role": "user", "content": "/thinking is not a flag"}], True, True),
    ],
)
def test_thinking_enabled_last_flag_wins(messages, enable_thinking, expected):
    assert chat.thinking_enabled(messages, enable_thinking) is expected


@pytest.mark.parametrize(
    ("text", "thinking", "answer", "well_formed"),
    [
        ("<think>\nadd\n</think>\n\n\\boxed{5}", "add", "\\boxed{5}", True),
        ("<think>\n\n</think>\n\nHi", "", "Hi", True),
        ("plain answer", None, "plain answer", False),
        ("<think>never closed", "never closed", "", False),
        ("<think>a</think>b</think>c", "a", "bc", False),
        ("<think>a</think><think>b</think>c", "a", "bc", False),
        ("prefix <think>a</think>c", "a", "c", False),
        ("no open tag</think> answer", "no open tag", "answer", False),
    ],
)
def test_split_thinking(text, thinking, answer, well_formed):
    parsed = chat.split_thinking(text)
    assert (parsed.thinking, parsed.answer, parsed.well_formed) == (thinking, answer, well_formed)


def test_split_thinking_opened_in_prompt():
    parsed = chat.split_thinking("step one\n</think>\n\n42", opened_in_prompt=True)
    assert parsed == chat.ParsedCompletion("step one", "42", True)


def test_split_thinking_rejects_non_string():
    with pytest.raises(TypeError, match="expects a str completion, got list"):
        chat.split_thinking(["<think>"])


@pytest.mark.parametrize(
    "text",
    [
        "<think>\ncarry the one\n</think>\n\nThe answer is 12.",
        "<think>\n\n</think>\n\nHi there",
        "<think>a</think>b</think>c",
        "just text",
        "<think>truncated",
    ],
)
def test_parse_completion_by_token_id_agrees_with_text(qwen3_tokenizer, text):
    ids = qwen3_tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert chat.parse_completion(ids, qwen3_tokenizer) == chat.split_thinking(text)


def test_think_tokens_from_qwen3_tokenizer(qwen3_tokenizer):
    tokens = chat.ThinkTokens.from_tokenizer(qwen3_tokenizer)
    assert (tokens.think_start_id, tokens.think_end_id) == (151667, 151668)
    assert tokens.eos_token_ids == (151645, 151643)
    assert tokens.pad_token_id == 151643


def test_think_tokens_need_think_tags():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>")
    with pytest.raises(ValueError, match="no single token for '<think>'"):
        chat.ThinkTokens.from_tokenizer(tokenizer)
    with pytest.raises(ValueError, match="has no chat template"):
        chat.require_chat_template(tokenizer, "some/dir")


def test_render_rejects_bad_messages():
    with pytest.raises(ValueError, match="at least one message"):
        chat.render([])
    with pytest.raises(ValueError, match=r"messages\[1\] has no 'role'"):
        chat.render([{"role": "user", "content": "x"}, {"content": "y"}])


def test_thinking_span_mask_marks_tokens_inside_blocks():
    import torch

    from lit_qwen3.chat import ThinkTokens, thinking_span_mask

    tokens = ThinkTokens(think_start_id=8, think_end_id=9, eos_token_ids=(1,), pad_token_id=0)
    ids = torch.tensor([[8, 5, 8, 5, 9, 6, 1], [5, 5, 9, 6, 8, 5, 1], [6, 6, 6, 1, 0, 0, 0]])
    mask = thinking_span_mask(ids, tokens, opened_in_prompt=torch.tensor([False, True, False]))
    assert mask.int().tolist() == [
        [0, 1, 1, 1, 0, 0, 0],  # a nested <think> is inside; the tags are not
        [1, 1, 0, 0, 0, 1, 1],  # opened by the prompt; a second block after the answer
        [0, 0, 0, 0, 0, 0, 0],
    ]
