"""Reward parsers on any text: they never raise, never hang, and agree with each other.

A policy writes whatever earns reward, so the parsers see adversarial text: long runs of one
token (``Score`` then thousands of spaces, thousands of ``\\boxed{``), numbers too large for a
float, boxes nested or never closed. The deadline (seconds) catches parsers that go quadratic
or worse: the faults found here took minutes on a few kilobytes.
"""

from __future__ import annotations

import math
import sys

from fuzzing import any_text, fuzz, repeated
from hypothesis import given
from hypothesis import strategies as st

from lit_qwen3.datamodules.arithmetic import boxed, extract_boxed, parse_integer, verify
from lit_qwen3.rewards.judge import parse_verdict
from lit_qwen3.rewards.math_answer import extract_answer, last_boxed

spaces = repeated([" ", "\n"], max_parts=2)
#: Verdict-shaped text: keyword, runs of spaces and markup, numbers (some too large for a float).
verdict_like = st.tuples(
    st.sampled_from(["Score", "Rating", "score", "[[", "Verdict:"]),
    spaces,
    st.sampled_from(["", ":", "=", "**", "[", ":**"]),
    spaces,
    st.sampled_from(["7", "10", "3.5", "9" * 400, "", "x", "CORRECT", "incorrect"]),
    spaces,
    st.sampled_from(["", "**", "]]", "]"]),
    spaces,
    st.sampled_from(["", "/", "out of", "/ "]),
    spaces,
    st.sampled_from(["10", "9" * 400, "0", "", "x", "]]"]),
).map("".join)
BOX_PIECES = ["\\boxed{", "\\boxed ", "\\fbox{", "{", "}", " ", "1", ",", "\\,", "\\text{", "$"]

verdict_text = st.lists(verdict_like | any_text, max_size=3).map("".join)
box_text = any_text | repeated(BOX_PIECES)


@fuzz(300)
@given(verdict_text)
def test_parse_verdict_is_none_or_a_score_in_unit_interval(text):
    value = parse_verdict(text)
    assert value is None or (math.isfinite(value) and 0.0 <= value <= 1.0)


numbers = st.integers(0, 10**6) | st.integers(10**300, 10**400)


@fuzz(200)
@given(
    numbers,
    numbers.map(lambda n: n + 1),
    any_text.filter(
        lambda t: not any(w in t.lower() for w in ("score", "rating", "[[", "verdict"))
    ),
)
def test_parse_verdict_reads_the_last_score(number, denominator, preamble):
    text = f"{preamble}\nScore: 99/100\nScore: {number}/{denominator}"
    value = parse_verdict(text)
    if number > denominator or denominator > sys.float_info.max:  # inf / inf would be NaN
        assert value is None
    else:
        assert math.isclose(value, number / denominator, rel_tol=1e-12)


@fuzz(300)
@given(box_text)
def test_box_parsers_never_raise_and_agree(text):
    content = extract_boxed(text)
    last = last_boxed(text)
    if content is not None:
        parse_integer(content)  # never raises
        if "\\boxed" not in content and "\\fbox" not in text:
            # No nested or \fbox box: the last top-level box is the last box.
            assert last == content.strip()
    verify(text, 7)


@fuzz(200)
@given(
    st.integers(-(10**30), 10**30),
    st.sampled_from(["{}", "{{{}}}", "\\text{{{}}}", " {} ", "\\mathbf{{ {} }}"]),
    st.booleans(),
    any_text.filter(lambda t: "\\boxed" not in t and "{" not in t and "}" not in t),
)
def test_boxed_integers_are_read_back(value, wrapper, grouped, around):
    digits = f"{abs(value):,}".replace(",", "{,}") if grouped else str(abs(value))
    shown = ("-" if value < 0 else "") + digits
    text = f"{around} {boxed(wrapper.format(shown))} {around}"
    assert parse_integer(extract_boxed(text)) == value
    assert verify(text, value)
    assert not verify(text, value + 1)


@fuzz(60)
@given(any_text | repeated(["\\frac{", "}", "1", "2", "$", "\\boxed{", "x^", "="], max_repeat=40))
def test_math_answer_extraction_never_raises(text):
    parsed, source = extract_answer(text)
    assert (source is None) == (not parsed)
