"""The built-in tokenizer of the toy task: Qwen3's format at a vocabulary of ~300 ids.

It is a byte-level BPE like Qwen3's (so any text round-trips) with only a handful of merges for
the words the chat template repeats (``user``, ``assistant``, ``think``...), the same special
tokens as Qwen3, and a chat template of our own that renders the same text as the official one.
Small vocabulary means tiny embeddings, so toy models spend their parameters on arithmetic.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lit_qwen3.chat import ENDOFTEXT, IM_END, IM_START, THINK_END, THINK_START

#: Qwen3's control tokens: (text, special?). ``<think>`` and the tool tags are not "special" in
#: Qwen3, so they survive ``skip_special_tokens=True``; we keep that property.
QWEN3_ADDED_TOKENS = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    (THINK_START, False),
    (THINK_END, False),
)

#: Strings merged into single tokens: the template's words and the toy task's answer wrapper.
MERGED_WORDS = ("user", "assistant", "system", "think", "no_think", "\\boxed", "tool")

# The Jinja template of the toy tokenizer. Written for this project; renders the same text as the
# official Qwen3 template (tests compare both on the same conversations).
TOY_CHAT_TEMPLATE = """\
{%- macro json(value) -%}{{ value | tojson }}{%- endmacro -%}
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- if tools -%}
<|im_start|>system
{% if has_system %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{%- for tool in tools %}{{ '\n' + json(tool) }}{% endfor %}{{ '\n' }}</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif has_system -%}
<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif -%}
{%- set ns = namespace(last_query=messages | length - 1, found=false) -%}
{%- for i in range(messages | length - 1, -1, -1) -%}
  {%- set m = messages[i] -%}
  {%- if not ns.found and m.role == 'user' and m.content is string
        and not (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) -%}
    {%- set ns.found = true -%}{%- set ns.last_query = i -%}
  {%- endif -%}
{%- endfor -%}
{%- for m in messages -%}
  {%- set content = m.content if m.content is string else '' -%}
  {%- if m.role == 'user' or (m.role == 'system' and not loop.first) -%}
<|im_start|>{{ m.role }}
{{ content }}<|im_end|>
{% elif m.role == 'assistant' -%}
    {%- set reasoning = '' -%}
    {%- if m.reasoning_content is string -%}
      {%- set reasoning = m.reasoning_content -%}
    {%- elif '</think>' in content -%}
      {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}
      {%- set content = content.split('</think>')[-1].lstrip('\\n') -%}
    {%- endif -%}
    {%- if loop.index0 > ns.last_query and (loop.last or reasoning) -%}
<|im_start|>assistant
<think>
{{ reasoning.strip('\\n') }}
</think>

{{ content.lstrip('\\n') }}
    {%- else -%}
<|im_start|>assistant
{{ content }}
    {%- endif -%}
    {%- for call in m.tool_calls or [] -%}
      {%- if not loop.first or content %}{{ '\n' }}{% endif -%}
      {%- set call = call.function or call -%}
<tool_call>
{"name": "{{ call.name }}", "arguments": \
{{ call.arguments if call.arguments is string else json(call.arguments) }}}
</tool_call>
    {%- endfor -%}
<|im_end|>
{% elif m.role == 'tool' -%}
    {%- if loop.first or loop.previtem.role != 'tool' -%}<|im_start|>user{%- endif %}{{ '\n' }}<tool_response>
{{ content }}
</tool_response>
    {%- if loop.last or loop.nextitem.role != 'tool' -%}<|im_end|>
{% endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false -%}
<think>

</think>

{% endif -%}
{%- endif -%}
"""


def _byte_alphabet() -> list[str]:
    """The printable stand-in character of each byte, in byte order (GPT-2 byte-level scheme).

    Printable Latin-1 bytes stand for themselves; the others are shifted above 255 so every byte
    has a visible, non-whitespace character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    shifted = 0
    alphabet = []
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


def build_toy_tokenizer(model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with Qwen3's special tokens and chat template, ~290 ids."""
    alphabet = _byte_alphabet()
    vocab = {char: i for i, char in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for word in MERGED_WORDS:
        mapped = "".join(alphabet[b] for b in word.encode())
        for end in range(2, len(mapped) + 1):
            left, right = mapped[: end - 1], mapped[end - 1]
            if mapped[:end] not in vocab:
                merges.append((left, right))
                vocab[mapped[:end]] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_tokens(
        [
            AddedToken(text, special=special, normalized=False)
            for text, special in QWEN3_ADDED_TOKENS
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=TOY_CHAT_TEMPLATE,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
