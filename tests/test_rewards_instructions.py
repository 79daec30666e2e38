"""The instruction-following reward: IFEval/IFBench specs, verdicts worked out by hand, errors.

The parity test (test_instructions_parity.py) compares every verdict with the reference drivers;
the cases here are checked by hand against IFEval's definitions, which the comments spell out.
"""

from __future__ import annotations

import pytest

from lit_qwen3.rewards import (
    CompositeReward,
    Sample,
    available_rewards,
    build_reward,
    instruction_reference,
)
from lit_qwen3.rewards.extra_instructions import EXTRA_INSTRUCTIONS
from lit_qwen3.rewards.instructions import (
    InstructionFollowingReward,
    available_instructions,
    build_checkers,
    follows,
    loose_variants,
    parse_instructions,
)

PROMPT = [{"role": "user", "content": "Write about Lightning. /think"}]


def sample(answer: str, metadata: dict, *, completion: str | None = None) -> Sample:
    text = completion if completion is not None else f"<think>\nplan\n</think>\n\n{answer}"
    return Sample.from_completion(PROMPT, text, metadata=metadata)


def ifeval(ids: list[str], kwargs: list[dict]) -> dict:
    return {"instruction_id_list": ids, "kwargs": kwargs}


def verdicts(instruction_id: str, kwargs: dict, reply: str) -> tuple[bool, bool]:
    (checker,) = build_checkers(parse_instructions(ifeval([instruction_id], [kwargs])))
    return follows(checker, reply), follows(checker, reply, loose=True)


# (id, kwargs, reply, strict, loose), each worked out from IFEval's definitions.
HAND_CHECKED = [
    # keywords:existence is re.search: a substring counts ("Lightnings" holds "lightning").
    ("keywords:existence", {"keywords": ["lightning"]}, "Lightnings strike.", True, True),
    # forbidden words match \bvery\b: "Everyone" holds "very" but not as a word.
    ("keywords:forbidden_words", {"forbidden_words": ["very"]}, "Everyone agrees.", True, True),
    # \betc.\b needs a word character after the dot; a space follows, so it never matches.
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["etc."]},
        "Pears, etc. and figs.",
        True,
        True,
    ),
    # z: Zebras 1, zigzag 2, lazily 1 -> 4 >= 3.
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
        "Zebras zigzag lazily.",
        True,
        True,
    ),
    # Lines matching ^\s*-.* are bullets too: "---" makes 4, not 3. Loose drops the first line:
    # "* two\n---\n* three" has 3.
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 3},
        "* one\n* two\n---\n* three",
        False,
        True,
    ),
    # \[.*?\] counts the markdown link text [docs] as a placeholder: 2.
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Hi [name], see [docs](https://x.org).",
        True,
        True,
    ),
    # Split on \s?Section\s?\d+\s?: "**", "**\nA\n**", "**\nB" -> 3 parts, 2 sections.
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "**Section 1**\nA\n**Section 2**\nB",
        True,
        True,
    ),
    # The ```JSON prefix is stripped before json.loads.
    ("detectable_format:json_format", {}, '```JSON\n{"a": 1}\n```', True, True),
    # Only straight double quotes wrap a reply.
    ("startend:quotation", {}, "“Curly.”", False, False),
    # The postscript pattern is matched on the lowercased reply.
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Bye.\n\np.s. later",
        True,
        True,
    ),
    # One line: dropping a line leaves "", which loose skips; without "*" the comma stays.
    ("punctuation:no_comma", {}, "Big, bold.", False, False),
    # Two lines: dropping the first leaves "No commas here".
    ("punctuation:no_comma", {}, "Sure, here:\nNo commas here", False, True),
    # All capitals, but langdetect says Russian, not English.
    ("change_case:english_capital", {}, "МОДЕЛЬ ОБУЧЕНА НА ДАННЫХ И РАБОТАЕТ.", False, False),
    # word_tokenize keeps STATE-OF-THE-ART as one token: 2 capital words < 3.
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": "at least"},
        "STATE-OF-THE-ART models run on a GPU.",
        False,
        False,
    ),
    # A trailing empty *** part is forgiven, an empty middle part is not.
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "A.\n***\nB.\n***", True, True),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "A.\n***\n***\nB.",
        False,
        False,
    ),
    # The two responses must differ.
    ("combination:two_responses", {}, "Same.\n******\nSame.", False, False),
    ("detectable_format:constrained_response", {}, "My answer is yes.", True, True),
    ("detectable_format:constrained_response", {}, "Yes.", False, False),
    # The 2nd paragraph's first word, lowercased and without punctuation, is "then".
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "First we plan.\n\nThen, we build.",
        True,
        True,
    ),
    (
        "language:response_language",
        {"language": "fi"},
        "Tänään on ihana sää ja menemme puistoon.",
        True,
        True,
    ),
    # The project's own rules: stripped length 5; case-folded prefix; JSON object with keys.
    ("char_count", {"max": 5}, "hello", True, True),
    ("char_count", {"min": 2, "max": 4}, "hello", False, False),
    ("starts_with", {"text": "Dear team"}, "dear Team, hello", True, True),
    ("starts_with", {"text": "Dear", "case_sensitive": True}, "dear all", False, False),
    ("json_keys", {"keys": ["a", "c"]}, '{"a": 1, "b": 2}', False, False),
    ("json_keys", {"keys": ["a"]}, 'Sure:\n```json\n{"a": 1}\n```', False, True),
]


@pytest.mark.parametrize(("iid", "kwargs", "reply", "strict", "loose"), HAND_CHECKED)
def test_hand_checked_verdicts(iid, kwargs, reply, strict, loose):
    assert verdicts(iid, kwargs, reply) == (strict, loose)


def test_loose_variants_in_ifevals_order():
    assert loose_variants("*a*\nb\nc") == [
        "*a*\nb\nc",
        "a\nb\nc",
        "b\nc",
        "*a*\nb",
        "b",
        "b\nc",
        "a\nb",
        "b",
    ]


def test_every_benchmark_instruction_is_available():
    known = set(available_instructions())
    assert {
        "keywords:existence",
        "language:response_language",
        "combination:two_responses",
    } <= known
    assert {"count:word_count_range", "format:no_whitespace", "custom:csv_city"} <= known
    assert set(EXTRA_INSTRUCTIONS) <= known
    assert len(known) == 25 + 58 + len(EXTRA_INSTRUCTIONS)


# --------------------------------------------------------------------------- bad specs

BAD_SPECS = [
    (
        ifeval(["keywords:existance"], [{"keywords": ["a"]}]),
        r"instruction_id_list\[0\]: unknown instruction id 'keywords:existance'; did you mean "
        r"'keywords:existence'.*known ids: .*change_case:capital_word_frequency.*format:no_whitespace",
    ),
    (
        ifeval(["keywords:existence", "punctuation:no_comma"], [{"keywords": ["a"]}]),
        r"metadata\['kwargs'\] has 1 entries for 2 instruction ids",
    ),
    (
        ifeval(["keywords:existence"], [{"keyword": ["a"]}]),
        r"\(keywords:existence\): unknown kwarg\(s\) \['keyword'\]; this instruction takes \['keywords'\]",
    ),
    (
        ifeval(["length_constraints:number_words"], [{"num_words": 5, "relation": None}]),
        r"missing kwarg\(s\) \['relation'\] \(the reference checker would draw random values",
    ),
    (
        ifeval(["length_constraints:number_words"], [{"num_words": 5, "relation": "about"}]),
        r"\(length_constraints:number_words\): bad kwargs .*supported relation",
    ),
    (ifeval(["punctuation:no_comma"], [7]), r"metadata\['kwargs'\]\[0\] must be a dict or null"),
    (
        ifeval([["punctuation:no_comma"]], [{}]),
        r"unknown instruction id \['punctuation:no_comma'\]",
    ),
    ({"instruction_id_list": "punctuation:no_comma"}, r"'instruction_id_list'\] must be a list"),
    ({"instruction_id_list": []}, "instruction list is empty"),
    ({"constraints": [{"n": 3}]}, r"constraints\[0\] must be a dict with a 'type' key"),
    (
        {"constraints": [{"type": "word_count", "max": 3}]},
        r"unknown instruction id 'word_count'; this constraint is now the benchmark's "
        r"length_constraints:number_words",
    ),
    (
        {"constraints": [{"type": "char_count"}]},
        r"\(char_count\): bad kwargs \{\}: ValueError: give 'n'",
    ),
    (
        {"reference": "1"},
        r"needs metadata 'instruction_id_list' \(\+ 'kwargs', IFEval format\) or 'constraints'",
    ),
]


@pytest.mark.parametrize(("metadata", "match"), BAD_SPECS)
def test_bad_specs_fail_in_check_before_scoring(metadata, match):
    with pytest.raises(ValueError, match=match):
        InstructionFollowingReward().check(sample("anything", metadata))


def test_char_count_needs_one_form_of_bounds():
    # CharCount takes n, min and max, all optional to the signature; its own check refuses both.
    with pytest.raises(ValueError, match="not both"):
        build_checkers(
            parse_instructions(
                {"constraints": [{"type": "char_count", "n": 3, "max": 4, "min": 1}]}
            )
        )


def test_missing_nltk_data_names_the_download(monkeypatch):
    monkeypatch.setitem(
        instruction_reference.NLTK_DATA_NEEDED,
        "format:no_whitespace",
        ("corpora/no_such_corpus", "no_such_corpus"),
    )
    with pytest.raises(
        ValueError, match=r"needs NLTK's 'no_such_corpus' data.*nltk.downloader no_such_corpus"
    ):
        InstructionFollowingReward().check(sample("x", ifeval(["format:no_whitespace"], [{}])))


def test_hf_style_kwargs_with_none_for_other_instructions():
    # IFEval's Hugging Face copy gives every kwarg name of every instruction, None where unused.
    metadata = ifeval(
        ["detectable_format:number_bullet_lists", "punctuation:no_comma"],
        [{"num_bullets": 2, "relation": None, "keywords": None}, {"num_bullets": None}],
    )
    assert InstructionFollowingReward().score(sample("* one\n* two", metadata)).score == 1.0


# --------------------------------------------------------------------------- the reward

THREE = ifeval(
    ["keywords:existence", "punctuation:no_comma", "length_constraints:number_words"],
    [{"keywords": ["lightning"]}, {}, {"num_words": 5, "relation": "less than"}],
)


def test_score_is_fraction_followed_and_all_or_nothing_is_prompt_level():
    # existence yes, no_comma no ("fast, simple"), words: 3 < 5 yes -> 2/3
    good = sample("Lightning: fast, simple.", THREE)
    result = InstructionFollowingReward().score(good)
    assert result.score == pytest.approx(2 / 3)
    assert result.info["passed"] == 2 and result.info["total"] == 3
    assert result.info["results"] == {
        "0:keywords:existence": True,
        "1:punctuation:no_comma": False,
        "2:length_constraints:number_words": True,
    }
    assert InstructionFollowingReward(all_or_nothing=True).score(good).score == 0.0
    perfect = sample("Lightning is fast.", THREE)
    assert InstructionFollowingReward(all_or_nothing=True).score(perfect).score == 1.0


def test_both_spec_forms_are_concatenated():
    metadata = {
        **ifeval(["punctuation:no_comma"], [{}]),
        "constraints": [{"type": "starts_with", "text": "No"}],
    }
    result = InstructionFollowingReward().score(sample("No, thanks.", metadata))
    assert result.info["results"] == {"0:punctuation:no_comma": False, "1:starts_with": True}


def test_reward_reads_the_answer_not_the_thinking():
    s = sample("", THREE, completion="<think>\nlightning lightning\n</think>\n\nIt is fast.")
    assert s.answer == "It is fast."
    assert InstructionFollowingReward().score(s).info["results"]["0:keywords:existence"] is False


def test_malformed_completions():
    reward = InstructionFollowingReward()
    # Thinking never closed: no answer, so nothing is followed, not even "no commas".
    truncated = sample("", THREE, completion="<think>\nI will mention lightning")
    result = reward.score(truncated)
    assert result.score == 0.0 and result.info["error"] == "empty answer"
    # No think block: the whole text is the answer (format is the format reward's job).
    bare = sample("", THREE, completion="Lightning is fast.")
    assert not bare.well_formed and reward.score(bare).score == 1.0


def test_loose_mode_forgives_a_framing_line():
    metadata = ifeval(["detectable_format:json_format"], [{}])
    s = sample('Sure! Here it is:\n{"a": 1}', metadata)
    assert InstructionFollowingReward().score(s).score == 0.0
    assert InstructionFollowingReward(loose=True).score(s).score == 1.0


def test_a_checker_that_raises_counts_as_not_followed(monkeypatch):
    class Boom:
        def __init__(self, instruction_id):
            pass

        def build_description(self):
            return "boom"

        def get_instruction_args(self):
            return None

        def check_following(self, value):
            raise ZeroDivisionError("no sentences")

    monkeypatch.setitem(EXTRA_INSTRUCTIONS, "boom", Boom)
    metadata = {"constraints": [{"type": "boom"}, {"type": "starts_with", "text": "ok"}]}
    result = InstructionFollowingReward().score(sample("ok then", metadata))
    assert result.score == 0.5
    assert result.info["errors"] == {"0:boom": "ZeroDivisionError: no sentences"}


def test_query_rows_score_through_a_composite_with_routing():
    # What QueryDataModule hands the rewards for an IFEval row on the toy task.
    metadata = {
        **ifeval(["startend:end_checker"], [{"end_phrase": "Done."}]),
        "reference": "936",
        "rewards": ["instructions", "arithmetic"],
    }
    composite = CompositeReward(
        [
            {"name": "instructions", "kwargs": {"all_or_nothing": True}},
            {"name": "arithmetic"},
            {"name": "format"},
        ],
        num_workers=0,
    )
    result = composite.score(sample("\\boxed{936} Done.", metadata))
    assert result.info["scores"] == {"instructions": 1.0, "arithmetic": 1.0}
    bare = composite.score(sample("\\boxed{936}", metadata))
    assert bare.info["scores"] == {"instructions": 0.0, "arithmetic": 1.0}
    with pytest.raises(ValueError, match=r"samples\[0\]: .*unknown kwarg\(s\) \['phrase'\]"):
        composite.score(sample("x", {**metadata, "kwargs": [{"phrase": "Done."}]}))


def test_registry():
    assert "instructions" in available_rewards()
    reward = build_reward("instructions", all_or_nothing=True, loose=True)
    assert isinstance(reward, InstructionFollowingReward) and reward.all_or_nothing and reward.loose
