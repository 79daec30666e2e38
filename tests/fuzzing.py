"""Shared settings and strategies of the fuzz suites (tests/test_fuzz_*.py).

Every property runs a fixed, derandomized set of examples (same inputs on every machine, no
example database), so CI is reproducible and the whole fuzz suite stays within ~20 s of one
core. ``deadline`` guards against parsers that go quadratic or worse on long repeated input: the
faults it caught took a minute or more per example, while every example now takes milliseconds,
so a 10 s deadline holds even on a machine loaded several times over.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz(max_examples: int, deadline_s: float | None = 10.0) -> settings:
    """Hypothesis settings of a fuzz property: ``max_examples`` derandomized examples."""
    return settings(
        max_examples=max_examples,
        deadline=None if deadline_s is None else timedelta(seconds=deadline_s),
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def repeated(pieces: list[str], *, max_repeat: int = 3000, max_parts: int = 6) -> st.SearchStrategy:
    """Text made of a few pieces, each repeated once, a few times, or up to ``max_repeat`` times.

    Random text is short; parsers break on long runs of one token (spaces after ``Score``,
    thousands of ``\\boxed{``), which this reaches.
    """
    counts = st.sampled_from([1, 1, 2, 3, max_repeat // 8, max_repeat]) | st.integers(1, max_repeat)
    part = st.tuples(st.sampled_from(pieces), counts).map(lambda p: p[0] * p[1])
    return st.lists(part, max_size=max_parts).map("".join)


#: Any text: every code point but surrogates (a str read from UTF-8 JSON never holds one).
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)

#: Text with the chat format's markers mixed in.
CHAT_PIECES = [
    "<think>",
    "</think>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "/think",
    "/no_think",
    " ",
    "\n",
    "a",
    "é",
    "\u3000",
]
chat_text = st.lists(st.sampled_from(CHAT_PIECES) | any_text, max_size=12).map("".join)

#: Any JSON value (nesting bounded).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
