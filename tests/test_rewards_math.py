"""Math reward: equivalent forms, answer-only scoring, malformed completions, threads, workers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest
from math_verify import parse

from lit_qwen3.rewards import CompositeReward, Sample
from lit_qwen3.rewards.math_answer import MathReward, extract_answer, last_boxed, parse_reference

PROMPT = [{"role": "user", "content": "Solve it. /think"}]


def sample(completion: str, reference) -> Sample:
    return Sample.from_completion(PROMPT, completion, metadata={"reference": reference})


def think(answer: str, thinking: str = "Let me work it out.") -> str:
    return f"<think>\n{thinking}\n</think>\n\n{answer}"


@pytest.fixture(scope="module")
def reward() -> MathReward:
    return MathReward()


@pytest.mark.parametrize(
    ("reference", "answer"),
    [
        ("\\frac{1}{2}", "The answer is $\\boxed{0.5}$."),
        ("\\frac{1}{2}", "So $\\boxed{\\dfrac{2}{4}}$"),
        ("0.5", "\\boxed{\\frac12}"),
        (0.5, "It is 1/2."),
        (Fraction(1, 2), "$\\boxed{\\frac{1}{2}}$"),
        (936, "There are \\boxed{936} ways."),
        ("936", "\\boxed{936.0}"),
        ("$x^2+1$", "We get \\boxed{1 + x^2}."),
        ("\\sqrt{2}/2", "\\boxed{\\frac{1}{\\sqrt{2}}}"),
        ("(1,2)", "The interval is \\boxed{(1, 2)}"),
        ("\\boxed{1000}", "\\boxed{1{,}000}"),
        ("50\\%", "\\boxed{50}"),
    ],
)
def test_equivalent_but_different_answers_score_one(reward, reference, answer):
    result = reward.score(sample(think(answer), reference))
    assert result.score == 1.0, result.info
    assert "reason" not in result.info


@pytest.mark.parametrize(
    ("reference", "answer"),
    [
        ("\\frac{1}{2}", "\\boxed{0.51}"),
        ("$x^2+1$", "\\boxed{x^2-1}"),
        (936, "\\boxed{963}"),
        ("(1,2)", "\\boxed{[1, 2]}"),
    ],
)
def test_wrong_answers_score_zero(reward, reference, answer):
    result = reward.score(sample(think(answer), reference))
    assert result.score == 0.0
    assert result.info["reason"] == "wrong_answer"


def test_only_the_answer_after_think_counts(reward):
    right_in_thinking = think("So the answer is \\boxed{5}.", thinking="Maybe \\boxed{4}?")
    assert reward.score(sample(right_in_thinking, 4)).score == 0.0
    assert reward.score(sample(right_in_thinking, 5)).score == 1.0


def test_last_boxed_answer_wins(reward):
    completion = think("First \\boxed{3}. Wait, I made an error: \\boxed{7}.")
    assert reward.score(sample(completion, 7)).score == 1.0
    assert reward.score(sample(completion, 3)).score == 0.0
    info = reward.score(sample(completion, 7)).info
    assert info["source"] == "boxed" and info["extracted"] == "7"


def test_unboxed_answer_falls_back_to_math_verify_parse(reward):
    result = reward.score(sample(think("Therefore $x = \\frac{3}{4}$."), "0.75"))
    assert result.score == 1.0 and result.info["source"] == "text"
    strict = MathReward(require_boxed=True).score(sample(think("Therefore 3/4."), "0.75"))
    assert strict.score == 0.0 and strict.info["reason"] == "no_boxed_answer"


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("<think>\nIt is \\boxed{4} I guess", "empty_answer"),  # thinking never closed
        (think(""), "empty_answer"),
        (think("I cannot solve this."), "no_answer_found"),
        (think("\\boxed{}"), "no_answer_found"),
    ],
)
def test_malformed_or_empty_answers_score_zero(reward, completion, reason):
    result = reward.score(sample(completion, 4))
    assert result.score == 0.0 and result.info["reason"] == reason


def test_last_boxed_parses_nested_braces():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1} and \\fbox{\\sqrt{4}}") == "\\sqrt{4}"
    assert last_boxed("so \\boxed 5.") == "5."
    assert last_boxed("\\boxed{2} then \\boxed{3") == "2"  # unclosed last box: use the earlier
    assert last_boxed("no box here") is None


def test_extract_answer_reports_its_source():
    assert extract_answer("\\boxed{2}")[1] == "boxed"
    assert extract_answer("x = 2")[1] == "text"
    assert extract_answer("nothing") == ([], None)


def test_reference_errors_are_clear(reward):
    with pytest.raises(ValueError, match=r"reward 'math': metadata\['reference'\] must be a str"):
        reward.check(sample(think("1"), [1, 2]))
    with pytest.raises(ValueError, match=r"metadata\['reference'\] is empty"):
        reward.score(sample(think("1"), "  "))
    with pytest.raises(ValueError, match=r"needs metadata key\(s\) \['reference'\]"):
        reward.score(Sample.from_completion(PROMPT, think("1")))
    with pytest.raises(TypeError, match="must be a str or a number, got bool"):
        parse_reference(True)
    with pytest.raises(ValueError, match="could not parse the reference"):
        reward.score(sample(think("\\boxed{1}"), "$$"))


def test_math_verify_default_timeout_breaks_in_threads_ours_does_not(reward):
    """The verl PR 5635 failure: math-verify's signal.alarm timeout raises off the main thread."""
    errors, scores = [], []

    def default_parse() -> None:
        try:
            parse("$\\frac{1}{2}$")  # default parsing_timeout=5 uses signal.alarm
        except ValueError as err:
            errors.append(str(err))

    def ours() -> None:
        scores.append(reward.score(sample(think("\\boxed{\\frac{1}{2}}"), "0.5")).score)

    for target in (default_parse, ours):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    assert errors and "threaded environment" in errors[0]
    assert scores == [1.0]


def test_math_reward_in_a_thread_pool(reward):
    cases = [("\\boxed{\\frac{1}{2}}", "0.5"), ("\\boxed{12}", 12), ("\\boxed{x+1}", "$1+x$")] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        scores = list(pool.map(lambda c: reward.score(sample(think(c[0]), c[1])).score, cases))
    assert scores == [1.0] * len(cases)


def test_composite_scores_math_in_workers_called_from_a_thread():
    samples = [
        sample(think("\\boxed{\\frac{1}{2}}"), "0.5"),
        sample(think("\\boxed{3}"), 4),
        sample(think("\\boxed{10}"), "10"),
    ]
    with CompositeReward([{"name": "math"}], num_workers=1, timeout=30) as composite:
        with ThreadPoolExecutor(max_workers=1) as pool:
            results = pool.submit(composite.score_batch, samples).result()
    assert [r.score for r in results] == [1.0, 0.0, 1.0]
    assert composite.error_counts == {"math": 0}
