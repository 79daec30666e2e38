"""Curation filters on hand-made items: each criterion has items it must keep and must remove."""

from __future__ import annotations

import pytest

from lit_qwen3.curation.query_filters import (
    count_sub_questions,
    judge_verifiable,
    multiple_questions,
    open_ended,
    parse_choice,
    rule_domain,
    solved_without_thinking,
)
from lit_qwen3.curation.response_filters import (
    Repetition,
    guess,
    language_mix,
    near_duplicate,
    repetition,
    think_answer_mismatch,
    wrong_answer,
)
from lit_qwen3.curation.selection import balance_domains, quotas, select_hardest
from lit_qwen3.curation.similarity import NgramIndex
from lit_qwen3.curation.text import (
    letter_scripts,
    ngrams,
    normalize_answer,
    repeated_ngram_ratio,
    stated_answer,
    terms,
)
from lit_qwen3.curation.verdict import EmptyResultError, FilterLedger, Verdict

TOY_ANSWER = r"(?m)^\d+[+*]\d+\+\d+=\d+ (\d+)$"
SCRATCHPAD = "7+9+0=16 6\n4+8+1=13 36\n3+5+1=9 936\nmod9 5+4=0 0 ok"
REAL_THINKING = (
    "We need 17*23. Split the second factor: 17*20 = 340 and 17*3 = 51. Adding the parts "
    "gives 340 + 51 = 391. Check it another way: 23*17 = 230 + 161 = 391, the same. "
    "So the answer is 391."
)


# -- measures ------------------------------------------------------------------------------------


def test_repeated_ngram_ratio_by_hand():
    # bigrams of a b c a b c: ab bc ca ab bc -> 5 grams, 3 distinct -> 2/5 repeat
    assert repeated_ngram_ratio("a b c a b c".split(), 2) == pytest.approx(0.4)
    assert repeated_ngram_ratio("a b c d".split(), 2) == 0.0
    assert repeated_ngram_ratio([], 4) == 0.0
    assert ngrams(["x", "y"], 4) == [("x", "y")]  # shorter than n: one gram of all of it


def test_terms_split_operators_so_spacing_does_not_matter():
    assert terms("Compute 347 + 589.") == ["compute", "347", "+", "589", "."]
    assert terms("347+589") == ["347", "+", "589"]


def test_normalize_and_stated_answer():
    assert normalize_answer("\\boxed{1,234}") == normalize_answer("1234") == "1234"
    assert normalize_answer("$4.0$.") == "4"
    assert normalize_answer("\\text{Paris}") == "Paris"
    assert stated_answer("so x = 3, and the answer is 7.") == "7"
    assert stated_answer("first \\boxed{2} then \\boxed{5}") == "5"
    assert stated_answer("no conclusion here") is None


def test_letter_scripts_counts_letters_only():
    counts = letter_scripts("3+4 所以 ok π")
    assert counts == {"CJK": 2, "LATIN": 2, "GREEK": 1}


# -- (1) wrong answer ------------------------------------------------------------------------------


def test_wrong_answer_keeps_full_marks_only():
    assert wrong_answer(1.0).keep
    assert not wrong_answer(0.0).keep
    assert "0.5 < 1" in wrong_answer(0.5).reason
    assert wrong_answer(0.5, min_score=0.5).keep


# -- (2) repetition --------------------------------------------------------------------------------


def test_repetition_keeps_reasoning_and_removes_loops():
    assert repetition(SCRATCHPAD + "\n\\boxed{936}").keep
    assert repetition(REAL_THINKING).keep
    looping_real = "Wait, let me recompute 17*23 from the start. " * 6 + "The answer is 391."
    verdict = repetition(looping_real)
    assert not verdict.keep and "repeated 4-gram share" in verdict.reason
    columns, check = SCRATCHPAD.split("\n")[:3], SCRATCHPAD.split("\n")[3:]
    assert not repetition("\n".join(columns * 4 + check) + "\n\\boxed{936}").keep
    with pytest.raises(ValueError, match="max_ratio"):
        Repetition(max_ratio=1.5)


# -- (3) guessing ----------------------------------------------------------------------------------


def test_guess_removes_short_or_hedged_conclusions():
    full = len(SCRATCHPAD.split())
    assert guess(SCRATCHPAD, "\\boxed{936}", expected_words=full).keep
    short = guess("probably 936", "\\boxed{936}", expected_words=full)
    assert not short.keep and "thinking of 2 words" in short.reason
    hedged = REAL_THINKING.replace("So the answer is 391.", "So the answer is probably 391.")
    verdict = guess(hedged, "\\boxed{391}", expected_words=40)
    assert not verdict.keep and "'probably'" in verdict.reason
    assert not guess(REAL_THINKING, "391, roughly.", expected_words=40).keep
    rechecking = REAL_THINKING.replace("So the", "Maybe I slipped? No. So the")
    assert guess(rechecking, "\\boxed{391}", expected_words=40).keep  # "maybe" is not a hedge
    assert not guess(None, "\\boxed{391}", expected_words=None).keep


def test_guess_ignores_hedges_while_exploring():
    exploring = "Probably easiest to split a factor. " + REAL_THINKING * 3  # far from the end
    assert guess(exploring, "\\boxed{391}", expected_words=60, tail_chars=200).keep
    assert not guess(exploring, "\\boxed{391}", expected_words=60, tail_chars=10_000).keep


# -- (4) thinking and summary disagree ----------------------------------------------------------


def test_think_answer_mismatch_compares_the_answer_the_thinking_reaches():
    assert think_answer_mismatch(REAL_THINKING, "\\boxed{391}").keep
    wrong = think_answer_mismatch(REAL_THINKING.replace("is 391", "is 381"), "\\boxed{391}")
    assert not wrong.keep and "'381'" in wrong.reason
    assert think_answer_mismatch("so \\boxed{1,234}", "The total is \\boxed{1234}.").keep
    assert think_answer_mismatch("no stated answer", "\\boxed{5}").reason.startswith("the thinking")
    misread = "8+9+0=17 7\n4+8+1=13 37\n3+5+1=9 937\nmod9 6+4=1 1 ok"
    assert think_answer_mismatch(SCRATCHPAD, "\\boxed{936}", pattern=TOY_ANSWER).keep
    assert not think_answer_mismatch(misread, "\\boxed{936}", pattern=TOY_ANSWER).keep


# -- (5) language and script mixing --------------------------------------------------------------


def test_language_mix_removes_foreign_scripts_unless_the_query_uses_them():
    assert language_mix("The area is πr² with r = 2, so 4π.").keep
    assert language_mix(SCRATCHPAD).keep
    mixed = language_mix(SCRATCHPAD + "\n所以")
    assert not mixed.keep and "CJK 2" in mixed.reason
    assert not language_mix(REAL_THINKING.replace("So the", "значит the")).keep
    assert language_mix("所以答案是 5", query="计算 2+3").keep  # a Chinese query, a Chinese answer
    stray = REAL_THINKING * 2 + " ж"  # one letter in well over 100
    assert language_mix(stray).keep
    assert not language_mix(stray, max_share=0.0).keep


# -- (6) near-duplicates of validation items ----------------------------------------------------


@pytest.fixture(scope="module")
def validation_index():
    return NgramIndex([("v1", "347+589"), ("v2", "What is the sum of the first 10 primes?")], n=5)


def test_near_duplicate_finds_reworded_validation_questions(validation_index):
    copy = near_duplicate("Compute 347 + 589.", validation_index)
    assert not copy.keep and "'v1'" in copy.reason
    paraphrase = near_duplicate("What is the sum of the first 10 prime numbers?", validation_index)
    assert not paraphrase.keep and "0.67" in paraphrase.reason  # 4 of the 6 5-grams
    assert near_duplicate("1347+5890", validation_index).keep
    assert near_duplicate("347+588", validation_index).keep
    assert near_duplicate("What is the sum of the first 20 odd numbers?", validation_index).keep
    assert validation_index.best_match("an unrelated sentence") is None


# -- query filters ---------------------------------------------------------------------------------


def test_multiple_questions():
    assert count_sub_questions("347+589") == 1
    assert multiple_questions("What is 347+589?").keep
    assert not multiple_questions("What is 347+589? And what is 12*3?").keep
    parts = "Let f(x) = x^2.\n(a) Find f(2).\n(b) Find f(3)."
    assert count_sub_questions(parts) == 2 and not multiple_questions(parts).keep
    assert multiple_questions("Find g(a) + g(b) when g(t) = 2t and a = 1, b = 2.").keep
    assert not multiple_questions("1. Solve x+1=2.\n2. Solve y-1=0.").keep
    assert multiple_questions(parts, max_questions=2).keep


def test_open_ended():
    assert open_ended("347+589").keep
    assert open_ended("Find the number of divisors of 360.").keep
    assert not open_ended("Write a short story about 347+589.").keep
    assert "explain why" in open_ended("Explain why 7+2 needs no carry.").reason
    assert not open_ended("Prove that there are infinitely many primes.").keep
    assert open_ended("Describe the set.", markers=["write an essay"]).keep


def test_solved_without_thinking():
    assert solved_without_thinking(0.0).keep
    assert solved_without_thinking(0.5).keep
    assert not solved_without_thinking(0.75).keep
    assert not solved_without_thinking(0.25, max_pass_rate=0.0).keep


def test_judge_replies_and_domain_rules():
    assert judge_verifiable("Yes.").keep
    assert not judge_verifiable("**No** - it asks for an essay").keep
    assert judge_verifiable("I am not sure").keep
    assert not judge_verifiable("I am not sure", keep_unparsed=False).keep
    domains = ["multi", "multiplication", "addition"]
    assert parse_choice("Multiplication", domains) == "multiplication"
    assert parse_choice("'addition'", domains) == "addition"
    assert parse_choice("geometry", domains) is None
    rules = {"multiplication": r"\*", "addition": r"\+"}
    assert rule_domain("12*3", rules) == "multiplication"
    assert rule_domain("12+3", rules) == "addition"
    assert rule_domain("12-3", rules) is None


# -- selection and the ledger ----------------------------------------------------------------------


def test_quotas_and_domain_balance():
    assert quotas(10, {"a": 0.75, "b": 0.25}) == {"a": 8, "b": 2}  # 7.5/2.5: a wins the tie
    rows = [{"id": i, "domain": "a"} for i in range(30)] + [
        {"id": 100 + i, "domain": "b"} for i in range(5)
    ]
    kept = balance_domains(rows, {"a": 0.75, "b": 0.25}, seed=0)
    # b limits: 5 / 0.25 = 20 rows, 15 a and 5 b
    assert [r["domain"] for r in kept].count("a") == 15 and len(kept) == 20
    assert len(balance_domains(rows, {"a": 0.75, "b": 0.25}, total=8)) == 8
    assert balance_domains(rows, {"a": 1.0, "b": 0.0}) == rows[:30]
    assert balance_domains(rows, {}, total=None) == rows


def test_select_hardest_spreads_over_domains():
    rows = [{"id": f"a{i}", "domain": "a", "pass_rate": i / 10} for i in range(1, 9)]
    rows += [{"id": f"b{i}", "domain": "b", "pass_rate": 0.5 + i / 100} for i in range(3)]
    chosen = select_hardest(rows, size=4, shares={"a": 0.5, "b": 0.5})
    assert [r["id"] for r in chosen] == ["a1", "a2", "b0", "b1"]
    # b has 3 rows for a quota of 3 of 6: the rest go to a's hardest
    chosen = select_hardest(rows, size=8, shares={"a": 0.25, "b": 0.75})
    assert sorted(r["id"] for r in chosen) == ["a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2"]
    assert [r["pass_rate"] for r in select_hardest(rows, size=None)][:2] == [0.1, 0.2]


def test_ledger_counts_and_names_the_filter_that_empties_the_set():
    ledger = FilterLedger("responses", progress=False)
    kept = ledger.run(
        "odd",
        [1, 2, 3],
        lambda x: Verdict.kept() if x % 2 else Verdict.removed("even"),
        describe=lambda x: {"id": x},
        unit="responses",
    )
    assert kept == [1, 3]
    assert ledger.filters["odd"]["in"] == 3 and ledger.filters["odd"]["removed"] == 1
    assert ledger.rejected == [{"filter": "odd", "reason": "even", "id": 2}]
    with pytest.raises(EmptyResultError, match="filter 'none' removed all 2 responses it saw"):
        ledger.run(
            "none",
            kept,
            lambda x: Verdict.removed("too odd"),
            describe=lambda x: {"id": x},
            unit="responses",
            config_key="responses.filters.none",
        )
