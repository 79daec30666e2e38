"""Toy IFEval-format rows: valid specs, disjoint splits, a compliant reply that passes IFEval's
checkers and holds the boxed answer, and a bare boxed answer that fails them."""

from __future__ import annotations

import itertools

import pytest

from lit_qwen3.datamodules.arithmetic import ArithmeticTask, verify
from lit_qwen3.datamodules.toy_instructions import (
    TOY_INSTRUCTIONS,
    toy_ifeval_reply,
    toy_ifeval_rows,
)
from lit_qwen3.rewards.base import Sample
from lit_qwen3.rewards.instructions import InstructionFollowingReward

STRICT = InstructionFollowingReward(all_or_nothing=True)


def score(row: dict, reply: str) -> float:
    metadata = {"instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]}
    prompt = [{"role": "user", "content": row["prompt"] + " /no_think"}]
    return STRICT.score(Sample.from_completion(prompt, reply, metadata=metadata)).score


def test_rows_are_ifeval_format_over_the_arithmetic_split():
    rows = toy_ifeval_rows(40, seed=3, split="val")
    problems = ArithmeticTask(seed=3).problems(40, "val")
    assert [r["question"] for r in rows] == [p.question for p in problems]
    for row, problem in zip(rows, problems, strict=True):
        assert set(row) == {
            "prompt",
            "instruction_id_list",
            "kwargs",
            "answer",
            "question",
            "domain",
        }
        assert row["prompt"].startswith(problem.question + " ")
        assert row["answer"] == str(problem.answer)
        assert 1 <= len(row["instruction_id_list"]) == len(row["kwargs"]) <= 2
    assert toy_ifeval_rows(40, seed=3, split="val") == rows
    assert toy_ifeval_rows(40, seed=4, split="val") != rows
    train = {r["question"] for r in toy_ifeval_rows(200, seed=3)}
    assert not train & {r["question"] for r in rows}


def test_prompt_says_the_drawn_kwargs():
    rows = toy_ifeval_rows(200, seed=0, max_instructions=1)
    ends = [r for r in rows if r["instruction_id_list"] == ["startend:end_checker"]]
    assert ends and all(
        r["prompt"].endswith(f"End with: {r['kwargs'][0]['end_phrase']}") for r in ends
    )
    words = [r for r in rows if r["instruction_id_list"] == ["keywords:existence"]]
    assert words and all(
        f"Use the word {r['kwargs'][0]['keywords'][0]}." in r["prompt"] for r in words
    )


def test_compliant_reply_passes_and_bare_answer_fails():
    rows = toy_ifeval_rows(300, seed=0)
    assert {i for r in rows for i in r["instruction_id_list"]} == {t.id for t in TOY_INSTRUCTIONS}
    for row in rows:
        reply = toy_ifeval_reply(row)
        assert score(row, reply) == 1.0, (row, reply)
        assert verify(reply, row["answer"])
        assert score(row, f"\\boxed{{{row['answer']}}}") == 0.0


@pytest.mark.parametrize(
    "pair",
    list(itertools.combinations(TOY_INSTRUCTIONS, 2)),
    ids=lambda p: "+".join(i.id for i in p),
)
def test_every_drawable_pair_has_a_compliant_reply(pair):
    ids = [instruction.id for instruction in pair]
    if set(ids) == {"startend:quotation", "detectable_format:number_bullet_lists"}:
        # A quote before "* " stops the line from being a bullet: never drawn together.
        rows = toy_ifeval_rows(500, seed=1)
        assert not any(set(r["instruction_id_list"]) == set(ids) for r in rows)
        return
    for kwargs in itertools.product(*(i.choices for i in pair)):
        row = {"instruction_id_list": ids, "kwargs": list(kwargs), "answer": "1234", "prompt": "x"}
        assert score(row, toy_ifeval_reply(row)) == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        toy_ifeval_rows(2, split="dev")
    with pytest.raises(ValueError, match="max_instructions must be 1 or 2"):
        toy_ifeval_rows(2, max_instructions=3)
    with pytest.raises(ValueError, match="toy_ifeval_reply knows"):
        toy_ifeval_reply(
            {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "answer": "1"}
        )
