"""Text measurements the filters share: words, n-grams, scripts, stated answers.

Every function is pure and works on plain strings, so a filter's decision can be recomputed
from the JSONL it wrote. Two tokenisations, each chosen for what it measures:

- :func:`words` splits on whitespace: repetition is about what the writer wrote again, and a
  scratchpad line like ``7+9+0=16`` is one word (splitting it would make every carry-free
  column look like a repeat of the last one).
- :func:`terms` lowercases and splits words from punctuation and operators: near-duplicate
  checks must see ``347+589``, ``347 + 589`` and ``Compute 347 + 589.`` as the same terms.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from lit_qwen3.datamodules.arithmetic import extract_boxed

_TERM = re.compile(r"\w+|[^\w\s]")
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\s*\{(.*)\}$", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")

#: The default pattern for the answer a thinking block reaches, when it has no ``\\boxed{}``:
#: "the answer is 42", "Final answer: 42", "answer = 42" (group 1 is the answer).
ANSWER_STATEMENT = r"(?i)answer\s*(?:is|:|=)\s*\$*\s*([^\s$]+)"


def words(text: str) -> list[str]:
    """Whitespace-separated words, as written."""
    return text.split()


def terms(text: str) -> list[str]:
    """Lowercased word and punctuation terms: ``"Compute 347+589."`` -> compute 347 + 589 ."""
    return _TERM.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Consecutive ``n``-grams; a sequence shorter than ``n`` is one gram of all its tokens."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not tokens:
        return []
    if len(tokens) < n:
        return [tuple(tokens)]
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_ratio(tokens: Sequence[str], n: int) -> float:
    """Share of the ``n``-grams that repeat an earlier one: 0 for text that never repeats,
    towards 1 for text that loops (a block written k times scores about 1 - 1/k)."""
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@lru_cache(maxsize=65536)
def script_of(char: str) -> str | None:
    """The script of a letter as the first word of its Unicode name (``LATIN``, ``GREEK``,
    ``CYRILLIC``, ``CJK``, ``HIRAGANA``, ``ARABIC``, ...); None for non-letters (digits,
    punctuation, operators, spaces). ``MATHEMATICAL`` letters (𝑥) are their own group."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def letter_scripts(text: str) -> Counter[str]:
    """How many letters of each script ``text`` holds."""
    counts: Counter[str] = Counter()
    for char in text:
        script = script_of(char)
        if script is not None:
            counts[script] += 1
    return counts


def _unwrap(answer: str) -> str:
    """A final answer without ``\\boxed{}``, ``$``, ``\\text{}`` or a trailing full stop."""
    boxed = extract_boxed(answer)
    text = (boxed if boxed is not None else answer).strip()
    while True:
        before = text
        text = text.strip().rstrip(".").strip("$").strip()
        wrapper = _TEXT_WRAPPER.match(text)
        if wrapper:
            text = wrapper.group(1)
        elif len(text) > 1 and text[0] == "{" and text[-1] == "}":
            text = text[1:-1]
        if text == before:
            return text


def normalize_answer(answer: str) -> str:
    """A comparable form: unwrapped, spaces and LaTeX thin spaces removed, ``1,234`` -> 1234,
    and numbers written canonically (``4.0`` -> ``4``)."""
    text = _unwrap(answer)
    for space in ("\\,", "\\!", "\\ ", "~", "{,}"):
        text = text.replace(space, "," if space == "{,}" else "")
    text = re.sub(r"\s+", "", text)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if _NUMBER.fullmatch(text):
        value = float(text)
        return str(int(value)) if value.is_integer() else repr(value)
    return text


def same_answer(a: str, b: str) -> bool:
    """True when two stated answers agree after :func:`normalize_answer` (exact for numbers
    and strings; ``1/2`` and ``0.5`` count as different: the filter is conservative)."""
    return normalize_answer(a) == normalize_answer(b)


def stated_answer(text: str, pattern: str = ANSWER_STATEMENT) -> str | None:
    """The answer a passage reaches: its last ``\\boxed{}`` if any, else group 1 of the last
    match of ``pattern`` (sentence punctuation after it dropped), else None (the passage
    states no answer)."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    last = matches[-1]
    found = last.group(1) if last.groups() else last.group(0)
    return found.rstrip(".,;:!") or found
