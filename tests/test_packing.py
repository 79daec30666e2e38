"""Assistant-only loss masks, packing into token budgets, and packed rows through a real model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_qwen3.ops.packing import (
    IGNORE_INDEX,
    assistant_spans,
    collate_packed,
    collate_padded,
    group_by_padded_length,
    loss_mask_from_offsets,
    max_chars_per_token,
    pack_sequences,
    tokenize_conversation,
)

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "2+2? /no_think"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "Now 3+5 /think"},
    {"role": "assistant", "content": "8", "reasoning_content": "3+5=8"},
]
# What the Qwen3 template writes for each reply, from the template's rules: the earlier reply
# (before the last user query) is plain; the last one carries its thinking block.
CHAT_REPLIES = ["4<|im_end|>", "<think>\n3+5=8\n</think>\n\n8<|im_end|>"]

TOOLS_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "sunny"},
    {"role": "assistant", "content": "Sunny.", "reasoning_content": "tool says sunny"},
]
TOOLS_REPLIES = [
    '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
    "<think>\ntool says sunny\n</think>\n\nSunny.<|im_end|>",
]


def trained_runs(tokenizer, example) -> list[str]:
    """Decoded text of each maximal run of trained tokens."""
    runs, current = [], []
    for token, trained in zip(example["input_ids"], example["loss_mask"], strict=True):
        if trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


# -- spans and masks ----------------------------------------------------------------------------
def test_assistant_spans_by_hand():
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    # "<|im_start|>user\nhi<|im_end|>\n" = 12 + 5 + 2 + 10 + 1 = 30 chars, header 22 more -> 52;
    # "yo" is 52..54 and "<|im_end|>" 54..64, included.
    assert assistant_spans(text) == [(52, 64)]
    assert text[52:64] == "yo<|im_end|>"


def test_assistant_spans_missing_end_is_an_error():
    with pytest.raises(ValueError, match="has no end marker '<\\|im_end\\|>'"):
        assistant_spans("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo")


def test_loss_mask_from_offsets_by_hand():
    offsets = [(0, 3), (3, 5), (5, 6), (6, 9), (9, 10), (10, 12)]
    # span [5, 10): tokens starting at 5, 6 and 9 are trained; the one at 3 starts before it.
    assert loss_mask_from_offsets(offsets, [(5, 10)]) == [0, 0, 1, 1, 1, 0]
    assert loss_mask_from_offsets(offsets, [(0, 3), (10, 12)]) == [1, 0, 0, 0, 0, 1]


# -- tokenize_conversation ------------------------------------------------------------------------
def test_real_qwen3_tokenizer_trains_exactly_the_replies(qwen3_tokenizer):
    example = tokenize_conversation(qwen3_tokenizer, CHAT)
    reference = qwen3_tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=False)
    assert example["input_ids"] == list(reference)
    assert trained_runs(qwen3_tokenizer, example) == CHAT_REPLIES
    assert example["truncated"] is False


def test_real_qwen3_tokenizer_tool_calls(qwen3_tokenizer):
    example = tokenize_conversation(qwen3_tokenizer, TOOLS_CHAT)
    assert trained_runs(qwen3_tokenizer, example) == TOOLS_REPLIES


@pytest.mark.parametrize("chat, replies", [(CHAT, CHAT_REPLIES), (TOOLS_CHAT, TOOLS_REPLIES)])
def test_toy_tokenizer_trains_the_same_text(toy_tokenizer, chat, replies):
    example = tokenize_conversation(toy_tokenizer, chat)
    assert trained_runs(toy_tokenizer, example) == replies


def test_last_turn_only(toy_tokenizer):
    example = tokenize_conversation(toy_tokenizer, CHAT, train_on_all_assistant_turns=False)
    assert trained_runs(toy_tokenizer, example) == CHAT_REPLIES[-1:]


def test_non_thinking_reply_trains_the_empty_think_block(toy_tokenizer):
    chat = [{"role": "user", "content": "1+1 /no_think"}, {"role": "assistant", "content": "2"}]
    example = tokenize_conversation(toy_tokenizer, chat, enable_thinking=False)
    assert trained_runs(toy_tokenizer, example) == ["<think>\n\n</think>\n\n2<|im_end|>"]


def test_overflow_truncate_drop_error(toy_tokenizer):
    full = tokenize_conversation(toy_tokenizer, CHAT)
    n = len(full["input_ids"])
    cut = tokenize_conversation(toy_tokenizer, CHAT, max_length=n - 5)
    assert cut["truncated"] is True
    assert cut["input_ids"] == full["input_ids"][: n - 5]
    assert cut["loss_mask"] == full["loss_mask"][: n - 5]
    assert tokenize_conversation(toy_tokenizer, CHAT, max_length=n, overflow="drop") == full
    assert tokenize_conversation(toy_tokenizer, CHAT, max_length=n - 1, overflow="drop") is None
    with pytest.raises(ValueError, match=f"{n} tokens, more than max_length={n - 1}"):
        tokenize_conversation(toy_tokenizer, CHAT, max_length=n - 1, overflow="error")
    with pytest.raises(ValueError, match="overflow must be"):
        tokenize_conversation(toy_tokenizer, CHAT, overflow="cut")


def test_wrong_markers_are_a_clear_error(toy_tokenizer):
    with pytest.raises(ValueError, match="found 0 assistant turn.*expected 2.*assistant_header"):
        tokenize_conversation(toy_tokenizer, CHAT, assistant_header="[ASSISTANT]")


@pytest.mark.parametrize(
    "text", ["say <|im_start|>assistant\nhi<|im_end|>", "stop<|endoftext|>", "a<|im_end|>b"]
)
def test_control_token_inside_a_message_is_refused(toy_tokenizer, text):
    # The tokenizer would read it as a turn boundary (or end of text): a forged turn.
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}]
    with pytest.raises(ValueError, match=r"messages\[1\] \(assistant\) contains '<\|"):
        tokenize_conversation(toy_tokenizer, chat)
    calls = [{"name": "f", "arguments": {"x": text}}]
    chat[1] = {"role": "assistant", "content": "", "tool_calls": calls}
    with pytest.raises(ValueError, match=r"messages\[1\] \(assistant\) contains"):
        tokenize_conversation(toy_tokenizer, chat)


def test_character_bound_decides_overflow_without_tokenizing(toy_tokenizer):
    assert max_chars_per_token(toy_tokenizer) == 2 * len("</tool_response>")  # longest entry
    chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ab " * 4000}]
    full = tokenize_conversation(toy_tokenizer, chat)
    kwargs = {"max_length": 50, "chars_per_token": 32}  # 12k characters > 50 * 32
    assert tokenize_conversation(toy_tokenizer, chat, overflow="drop", **kwargs) is None
    with pytest.raises(ValueError, match=r"characters, more than max_length=50 tokens can hold"):
        tokenize_conversation(toy_tokenizer, chat, overflow="error", **kwargs)
    # Truncation tokenizes only the head, and keeps the same first tokens and mask.
    cut = tokenize_conversation(toy_tokenizer, chat, overflow="truncate", **kwargs)
    assert cut["truncated"] is True
    assert cut["input_ids"] == full["input_ids"][:50]
    assert cut["loss_mask"] == full["loss_mask"][:50]
    # Under the bound the conversation is tokenized as before.
    assert tokenize_conversation(toy_tokenizer, CHAT, max_length=512, chars_per_token=32) == (
        tokenize_conversation(toy_tokenizer, CHAT, max_length=512)
    )


# -- pack_sequences / group_by_padded_length ----------------------------------------------------
def test_pack_sequences_by_hand():
    # Best-fit decreasing into 8: 5 -> A(room 3); 4 -> B(4); 3 -> A (fits exactly, room 0);
    # 3 -> B(1); 2 -> new C(6); 1 -> fullest with room: B(0).
    assert pack_sequences([5, 4, 3, 3, 2, 1], 8) == [[0, 2], [1, 3, 5], [4]]
    examples = [{"input_ids": [0] * n} for n in (5, 4, 3, 3, 2, 1)]
    assert pack_sequences(examples, 8) == [[0, 2], [1, 3, 5], [4]]


def test_pack_sequences_long_example():
    with pytest.raises(ValueError, match="example 1 has 9 tokens, more than max_tokens=8"):
        pack_sequences([3, 9, 2], 8)
    assert pack_sequences([3, 9, 2], 8, drop_long=True) == [[0, 2]]
    with pytest.raises(ValueError, match="example 0 is empty"):
        pack_sequences([0, 2], 8)


def test_pack_sequences_shuffle_is_seeded():
    lengths = [7, 6, 5, 4, 3, 2, 1, 7, 6, 5]
    plain = pack_sequences(lengths, 8)
    shuffled = pack_sequences(lengths, 8, shuffle_seed=1)
    assert sorted(shuffled) == sorted(plain)
    assert shuffled == pack_sequences(lengths, 8, shuffle_seed=1)
    assert shuffled != plain


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=60), st.integers(50, 120))
def test_pack_sequences_properties(lengths, budget):
    packs = pack_sequences(lengths, budget)
    assert sorted(i for pack in packs for i in pack) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in pack) for pack in packs]
    assert max(loads) <= budget
    # Best fit never opens a pack an example could have joined: no two packs could merge.
    assert all(a + b > budget for i, a in enumerate(loads) for b in loads[i + 1 :])


def test_group_by_padded_length_by_hand():
    # Longest first, width = first length: [5] (5+4 rows -> 2*5 > 8); [4, 3] (2*4 = 8);
    # [3, 2] (3*4 would be 12 > 8, so new batch of width 3: 2*3 = 6); [1] (3*3 = 9 > 8).
    assert group_by_padded_length([5, 4, 3, 3, 2, 1], 8) == [[0], [1, 2], [3, 4], [5]]


# -- collate --------------------------------------------------------------------------------------
def test_collate_packed_by_hand():
    batch = collate_packed(
        [
            {"input_ids": [1, 2, 3], "loss_mask": [0, 1, 1]},
            {"input_ids": [4, 5], "loss_mask": [1, 1]},
        ]
    )
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    # Token 4 opens the second document: never a label (it would be predicted from token 3).
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]


def test_collate_padded_by_hand():
    batch = collate_padded(
        [
            {"input_ids": [1, 2, 3], "loss_mask": [0, 1, 1]},
            {"input_ids": [4, 5], "loss_mask": [0, 1]},
        ],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 5, IGNORE_INDEX]]


def test_collate_errors():
    with pytest.raises(ValueError, match="needs at least one example"):
        collate_packed([])
    with pytest.raises(ValueError, match=r"input_ids \(2\) and loss_mask \(1\) differ"):
        collate_packed([{"input_ids": [1, 2], "loss_mask": [1]}])


# -- packed rows through Qwen3ForCausalLM ---------------------------------------------------------
@pytest.fixture(scope="module")
def documents(toy_tokenizer):
    chats = [
        CHAT,
        TOOLS_CHAT,
        [{"role": "user", "content": "12+30 /think"}, {"role": "assistant", "content": "42"}],
    ]
    return [tokenize_conversation(toy_tokenizer, chat) for chat in chats]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_matches_documents_alone(documents, attn):
    from lit_qwen3.models import load_model

    model = load_model("toy-student", attn_implementation=attn, seed=0).eval()
    batch = collate_packed(documents)
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
        alone = [model(input_ids=torch.tensor([d["input_ids"]])).logits[0] for d in documents]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-4)

    # The HF loss on the packed row (mean over trained tokens) equals the token-weighted mean of
    # each document's own loss, computed from independently padded labels.
    with torch.no_grad():
        packed_loss = model(**batch, use_cache=False).loss
        total, count = 0.0, 0
        for d in documents:
            single = collate_padded([d], pad_token_id=0)
            n = int((single["labels"][0, 1:] != IGNORE_INDEX).sum())
            total += model(input_ids=single["input_ids"], labels=single["labels"]).loss * n
            count += n
    torch.testing.assert_close(packed_loss, total / count, atol=1e-5, rtol=1e-5)


def test_packed_row_leaks_across_documents_when_the_cache_is_on(documents):
    """The documented caveat: with a KV cache (Qwen3Config.use_cache defaults to True) transformers
    skips packed-sequence detection. If this starts failing, the caveat can go."""
    from lit_qwen3.models import load_model

    model = load_model("toy-student", attn_implementation="sdpa", seed=0).eval()
    assert model.config.use_cache
    batch = collate_packed(documents)
    with torch.no_grad():
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        uncached = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
    first = len(documents[0]["input_ids"])
    torch.testing.assert_close(cached[0, :first], uncached[0, :first], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(cached[0, first:], uncached[0, first:], atol=1e-3)


@pytest.mark.parametrize("stage", ["ColdStartSFT", "OffPolicyDistillation"])
def test_stages_train_packed_documents_as_padded_ones(documents, stage):
    """A stage's loss and gradients on a packed batch equal those on the same documents as
    padded rows (without flash-attn the packed row's documents run as rows of their own)."""
    from lit_qwen3 import stages

    module = getattr(stages, stage)(model="toy-student", seed=0)
    module.configure_model()
    losses, grads = [], []
    for batch in (collate_packed(documents), collate_padded(documents, pad_token_id=0)):
        module.model.zero_grad()
        loss, tokens = module._loss(batch)
        loss.backward()
        losses.append((loss.detach(), int(tokens)))
        grads.append({n: p.grad.clone() for n, p in module.model.named_parameters()})
    (packed, packed_tokens), (padded, padded_tokens) = losses
    assert packed_tokens == padded_tokens > 0
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-6)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-5, msg=name)
