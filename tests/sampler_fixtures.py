"""The rollout-sampler tests' model and prompts: a tiny random Qwen3ForCausalLM over the real
Qwen3 vocabulary (the ``qwen3_tokenizer`` fixture skips without it), chat prompts of mixed
lengths, and ``model.generate`` as the reference."""

from __future__ import annotations

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from lit_qwen3.chat import render
from lit_qwen3.rollout.generation import left_pad

QUESTIONS = [
    "hi",
    "What is 12 + 30? Answer briefly.",
    "Tell me a story about a cat and a dog who become friends.",
    "List three prime numbers.",
    "Why is the sky blue?",
    "2*3=?",
]


def tiny_qwen3(qwen3_tokenizer) -> Qwen3ForCausalLM:
    """A random 2-layer Qwen3 (hidden 32) over the real vocabulary, seeded, in eval mode."""
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(qwen3_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        pad_token_id=qwen3_tokenizer.pad_token_id,
        eos_token_id=qwen3_tokenizer.eos_token_id,
    )
    return Qwen3ForCausalLM(config).eval()


def chat_prompts(tokenizer, *, suffix: str = "", enable_thinking: bool = True, n: int = 4):
    """Token ids of chat prompts of mixed lengths (rendered by the lead's Qwen3 template)."""
    texts = [
        render(
            [{"role": "user", "content": q}],
            add_generation_prompt=True,
            enable_thinking=enable_thinking,
        )
        + suffix
        for q in QUESTIONS[:n]
    ]
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def generate(model, tokenizer, prompts, *, eos, **kwargs):
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=list(eos),
        **kwargs,
    )
    return out[:, ids.shape[1] :]
