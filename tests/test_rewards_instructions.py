"""IFEval-style constraint checkers and the instruction-following reward."""

from __future__ import annotations

import pytest

from lit_qwen3.rewards.base import Sample, available_rewards, build_reward
from lit_qwen3.rewards.instructions import (
    InstructionFollowingReward,
    available_constraints,
    check_constraint,
    detect_language,
    validate_constraints,
)

PROMPT = [{"role": "user", "content": "Write about Lightning. /think"}]


def sample(answer: str, constraints, *, completion: str | None = None) -> Sample:
    text = completion if completion is not None else f"<think>\nplan\n</think>\n\n{answer}"
    return Sample.from_completion(PROMPT, text, metadata={"constraints": constraints})


# --------------------------------------------------------------------------- checkers, one by one

# (spec, reply, expected). Counts are worked out in the comments.
CASES = [
    # "one two three four" -> 4 \w+ tokens; "don't" -> "don", "t" (IFEval's \w+ counting)
    ({"type": "word_count", "min": 4, "max": 4}, "one two three four", True),
    ({"type": "word_count", "min": 5}, "one two three four", False),
    ({"type": "word_count", "n": 3}, "don't stop", True),
    # "Dr. Smith left." is one sentence; "Why? Because!" are two -> 3
    ({"type": "sentence_count", "n": 3}, "Dr. Smith left. Why? Because!", True),
    ({"type": "sentence_count", "max": 2}, "Dr. Smith left. Why? Because!", False),
    # pi = 3.14 stays one sentence (no space after the dot)
    ({"type": "sentence_count", "n": 1}, "Pi is about 3.14 and e about 2.72.", True),
    ({"type": "paragraph_count", "n": 2}, "First para.\nstill first.\n\n  \nSecond para.", True),
    ({"type": "paragraph_count", "n": 3, "separator": "***"}, "a\n***\nb\n***\nc", True),
    ({"type": "paragraph_count", "n": 2}, "no blank\nline here", False),
    ({"type": "char_count", "max": 5}, "  hello  ", True),  # stripped: 5 characters
    ({"type": "char_count", "max": 4}, "hello", False),
    (
        {"type": "keywords", "words": ["lightning", "fast trainer"]},
        "Lightning is a Fast Trainer.",
        True,
    ),
    # whole words only: "Lightnings" is not "lightning"
    ({"type": "keywords", "words": ["lightning"]}, "Lightnings strike.", False),
    ({"type": "keywords", "words": ["GPU"], "case_sensitive": True}, "a gpu", False),
    # "the" appears 3 times ("The", "the", "THE"), "there" does not count
    (
        {"type": "keyword_frequency", "word": "the", "n": 3},
        "The cat, the dog, THE end there.",
        True,
    ),
    ({"type": "keyword_frequency", "word": "the", "min": 4}, "The cat, the dog, THE end.", False),
    ({"type": "forbidden_words", "words": ["very", "really"]}, "It is quite good.", True),
    ({"type": "forbidden_words", "words": ["very"]}, "It is Very good.", False),
    ({"type": "forbidden_words", "words": ["very"]}, "Everyone agrees.", True),  # substring only
    ({"type": "starts_with", "text": "Dear team"}, "  dear Team, hello", True),
    ({"type": "starts_with", "text": "Dear"}, "Hello. Dear", False),
    ({"type": "ends_with", "text": "Any questions?"}, "That's all. Any questions?\n", True),
    ({"type": "ends_with", "text": "Bye", "case_sensitive": True}, "ok bye", False),
    ({"type": "lowercase"}, "all small letters, 123.", True),
    ({"type": "lowercase"}, "One capital", False),
    ({"type": "lowercase"}, "123 456", False),  # no letters at all: not "written in lowercase"
    ({"type": "uppercase"}, "ALL CAPS 42!", True),
    ({"type": "uppercase"}, "ALL CAPS but one", False),
    # "NASA", "GPU" are capital words; "I" counts too (isupper): 3
    ({"type": "capital_words", "n": 3}, "I think NASA uses a GPU.", True),
    ({"type": "bullet_count", "n": 3}, "Intro\n* one\n- two\n  • three\n**bold** line\n---", True),
    ({"type": "bullet_count", "n": 2}, "* one\n* two\n* three", False),
    ({"type": "json"}, '{"a": [1, 2], "b": null}', True),
    ({"type": "json"}, '```json\n{"a": 1}\n```', True),
    ({"type": "json", "keys": ["a", "c"]}, '{"a": 1, "b": 2}', False),
    ({"type": "json"}, "{'a': 1}", False),  # Python dict syntax is not JSON
    ({"type": "json"}, 'Here it is: {"a": 1}', False),
    ({"type": "sections", "marker": "Section", "n": 2}, "Section 1\nfoo\n## Section 2\nbar", True),
    # "in Section 3" mid-line is a reference, not a section header
    ({"type": "sections", "marker": "Section", "n": 1}, "Section 1 says, as in Section 3.", True),
    ({"type": "sections", "marker": "SECTION", "min": 1}, "Section 1\nfoo", False),
    ({"type": "language", "lang": "en"}, "The model is trained on the data and it works.", True),
    (
        {"type": "language", "lang": "fr"},
        "Le modèle est entraîné sur les données et il marche.",
        True,
    ),
    ({"type": "language", "lang": "de"}, "Das Modell ist nicht mit den Daten trainiert.", True),
    ({"type": "language", "lang": "es"}, "El modelo se entrena con los datos y no falla.", True),
    ({"type": "language", "lang": "en"}, "Le modèle est entraîné sur les données.", False),
    ({"type": "language", "lang": "zh"}, "这个模型在数据上训练。", True),
    ({"type": "language", "lang": "ja"}, "このモデルはデータで学習します。", True),
    ({"type": "language", "lang": "ru"}, "Модель обучена на данных.", True),
    ({"type": "no_commas"}, "No commas here.", True),
    ({"type": "no_commas"}, "One, two.", False),
    ({"type": "no_commas"}, "中文，逗号", False),  # full-width comma counts
    # [name] and [address] are placeholders; [link](http://x) is a markdown link -> 2
    ({"type": "placeholders", "n": 2}, "Hi [name], at [address]. See [link](http://x).", True),
    ({"type": "placeholders", "min": 1}, "No placeholders.", False),
    ({"type": "highlights", "min": 2}, "This is *important* and **this too**.", True),
    ({"type": "highlights", "min": 1}, "2 * 3 * 4 = 24", False),  # arithmetic, not emphasis
    ({"type": "title"}, "<<Ode to Joy>>\nText", True),
    ({"type": "title"}, "<< >> empty title", False),
    ({"type": "postscript"}, "Body.\n\nP.S. see you", True),
    ({"type": "postscript", "marker": "P.P.S"}, "Body.\nP.S. only", False),
    ({"type": "quotation"}, '"Wrapped in quotes."', True),
    ({"type": "quotation"}, '"Not closed.', False),
]


@pytest.mark.parametrize(("spec", "reply", "expected"), CASES)
def test_checker(spec, reply, expected):
    assert check_constraint(reply, spec) is expected


def test_at_least_twelve_types_and_every_type_has_a_case():
    known = available_constraints()
    assert len(known) >= 12
    assert {spec["type"] for spec, _, _ in CASES} == set(known)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("I went to the market and bought some bread for the week.", "en"),
        ("Je suis allé au marché pour acheter du pain avec mon frère.", "fr"),
        ("Ich bin auf den Markt gegangen und habe Brot für die Woche gekauft.", "de"),
        ("Fui al mercado y compré pan para la semana con mi hermano.", "es"),
        ("안녕하세요, 만나서 반갑습니다.", "ko"),
        ("", None),
        ("12345 !!!", None),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text) == lang


# --------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize(
    ("constraints", "error", "match"),
    [
        (
            [{"type": "wordcount", "n": 3}],
            ValueError,
            r"unknown constraint type 'wordcount'.*word_count",
        ),
        ([{"n": 3}], ValueError, r"constraints\[0\] must be a dict with a 'type'"),
        ([], ValueError, "non-empty list"),
        ({"type": "json"}, ValueError, "non-empty list"),
        (
            [{"type": "json"}, {"type": "keywords"}],
            ValueError,
            r"constraints\[1\] \(keywords\): missing.*words",
        ),
        ([{"type": "keywords", "words": "lightning"}], TypeError, "'words' must be list"),
        ([{"type": "keywords", "words": []}], ValueError, "non-empty list of non-empty strings"),
        ([{"type": "word_count"}], ValueError, r"give 'n' \(exact\) or 'min'/'max'"),
        ([{"type": "word_count", "n": 3, "max": 4}], ValueError, "not both"),
        ([{"type": "word_count", "min": 5, "max": 4}], ValueError, "min 5 > max 4"),
        ([{"type": "word_count", "min": -1}], ValueError, "must be >= 0"),
        ([{"type": "word_count", "n": "3"}], TypeError, "'n' must be int"),
        ([{"type": "word_count", "n": True}], TypeError, "'n' must be int"),
        ([{"type": "lowercase", "n": 2}], ValueError, r"unknown parameter\(s\) \['n'\]"),
        ([{"type": "language", "lang": "xx"}], ValueError, "unsupported lang 'xx'.*en"),
        ([{"type": "starts_with", "text": "  "}], ValueError, "'text' must not be empty"),
    ],
)
def test_bad_constraints_are_named(constraints, error, match):
    with pytest.raises(error, match=match):
        validate_constraints(constraints)


# --------------------------------------------------------------------------- the reward

THREE = [
    {"type": "keywords", "words": ["lightning"]},
    {"type": "no_commas"},
    {"type": "word_count", "max": 5},
]


def test_reward_is_fraction_satisfied_and_strict_option():
    # keywords yes, no_commas no ("fast, simple"), word_count: 4 words <= 5 yes -> 2/3
    good = sample("Lightning: fast, simple.", THREE)
    result = InstructionFollowingReward().score(good)
    assert result.score == pytest.approx(2 / 3)
    assert result.info["passed"] == 2 and result.info["total"] == 3
    assert result.info["results"] == {
        "0:keywords": True,
        "1:no_commas": False,
        "2:word_count": True,
    }
    assert InstructionFollowingReward(all_or_nothing=True).score(good).score == 0.0
    perfect = sample("Lightning is fast.", THREE)
    assert InstructionFollowingReward(all_or_nothing=True).score(perfect).score == 1.0


def test_reward_reads_the_answer_not_the_thinking():
    # The thinking mentions lightning; the answer does not: keyword constraint fails.
    s = sample("", THREE, completion="<think>\nlightning lightning\n</think>\n\nIt is fast.")
    assert s.answer == "It is fast."
    assert InstructionFollowingReward().score(s).info["results"]["0:keywords"] is False


def test_malformed_completions():
    reward = InstructionFollowingReward()
    # Thinking never closed (truncated): no answer -> 0, even though "no commas" would hold.
    truncated = sample("", THREE, completion="<think>\nI will mention lightning")
    result = reward.score(truncated)
    assert result.score == 0.0 and result.info["error"] == "empty answer"
    # No think block at all: the whole text is the answer (format is the format reward's job).
    bare = sample("", THREE, completion="Lightning is fast.")
    assert not bare.well_formed and reward.score(bare).score == 1.0
    # Two think blocks: only the text after the first </think> is the answer, tags removed.
    double = sample("", [{"type": "json"}], completion='<think>a</think>{"x": 1}<think>b</think>')
    assert not double.well_formed
    assert reward.score(double).score == 0.0  # '{"x": 1}b' is not JSON


def test_loose_mode_forgives_a_framing_line():
    # Strict: the first line "Sure! Here it is:" breaks starts_with and json; loose drops it.
    specs = [{"type": "json"}, {"type": "starts_with", "text": "{"}]
    s = sample('Sure! Here it is:\n{"a": 1}', specs)
    assert InstructionFollowingReward().score(s).score == 0.0
    assert InstructionFollowingReward(loose=True).score(s).score == 1.0
    # Loose strips markdown "*", but "*Hello*" -> "Hello" is still capitalised: loose must not
    # pass everything.
    upper = sample("*Hello*", [{"type": "lowercase"}])
    assert InstructionFollowingReward(loose=True).score(upper).score == 0.0


def test_registry_and_errors():
    assert "instructions" in available_rewards()
    reward = build_reward("instructions", all_or_nothing=True)
    assert isinstance(reward, InstructionFollowingReward) and reward.all_or_nothing
    with pytest.raises(ValueError, match=r"unknown reward 'instruction'.*instructions"):
        build_reward("instruction")
    missing = Sample.from_completion(PROMPT, "hi", metadata={})
    with pytest.raises(
        ValueError, match=r"'instructions' needs metadata key\(s\) \['constraints'\]"
    ):
        reward.score(missing)
    bad = sample("hi", [{"type": "nope"}])
    with pytest.raises(ValueError, match="unknown constraint type 'nope'"):
        reward.check(bad)
    with pytest.raises(TypeError, match="completion must be a str"):
        Sample.from_completion(PROMPT, ["not", "text"], metadata={"constraints": THREE})
