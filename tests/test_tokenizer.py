"""The toy tokenizer renders Qwen3's text and behaves like an HF tokenizer after a save/load."""

from __future__ import annotations

import pytest
from chat_cases import CONVERSATIONS, WEATHER_TOOL, WITH_TOOLS
from transformers import AutoTokenizer

from lit_qwen3 import chat
from lit_qwen3.tokenizer import QWEN3_ADDED_TOKENS, build_toy_tokenizer


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("enable_thinking", [True, False])
def test_toy_template_renders_the_official_text(
    qwen3_tokenizer, toy_tokenizer, name, enable_thinking
):
    messages = CONVERSATIONS[name]
    tools = [WEATHER_TOOL] if name in WITH_TOOLS else None
    gen = messages[-1]["role"] != "assistant"
    kwargs = dict(add_generation_prompt=gen, enable_thinking=enable_thinking, tools=tools)
    ours = toy_tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    assert ours == qwen3_tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    assert ours == chat.render(messages, **kwargs)


def test_special_tokens_are_single_ids_like_qwen3(toy_tokenizer):
    for text, special in QWEN3_ADDED_TOKENS:
        ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, text
        kept = toy_tokenizer.decode(ids, skip_special_tokens=True)
        assert kept == ("" if special else text)
    assert toy_tokenizer.eos_token == "<|im_end|>"
    assert toy_tokenizer.pad_token == "<|endoftext|>"
    assert len(toy_tokenizer) < 320


@pytest.mark.parametrize(
    "text", ["347+589=936", "Übersetze: 你好\n\n\\boxed{12}", "  spaces\tand\ttabs "]
)
def test_any_text_round_trips(toy_tokenizer, text):
    ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert toy_tokenizer.decode(ids) == text


def test_template_words_are_merged(toy_tokenizer):
    prompt = chat.render(
        [{"role": "user", "content": "347+589 /think"}], add_generation_prompt=True
    )
    tokens = toy_tokenizer.convert_ids_to_tokens(toy_tokenizer(prompt)["input_ids"])
    assert tokens[:2] == ["<|im_start|>", "user"]
    assert "think" in tokens and "assistant" in tokens
    assert len(tokens) < len(prompt) // 2


def test_save_and_reload_with_auto_tokenizer(tmp_path, toy_tokenizer):
    toy_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    messages = CONVERSATIONS["multi_turn_strips_old_reasoning"]
    assert reloaded.apply_chat_template(messages, tokenize=False) == chat.render(messages)
    text = chat.render(messages)
    assert reloaded(text)["input_ids"] == toy_tokenizer(text)["input_ids"]
    assert chat.ThinkTokens.from_tokenizer(reloaded) == chat.ThinkTokens.from_tokenizer(
        toy_tokenizer
    )


def test_build_is_deterministic():
    a, b = build_toy_tokenizer(), build_toy_tokenizer()
    assert a.get_vocab() == b.get_vocab()
