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
    toy_instruction_row,
)
from lit_qwen3.rewards import CompositeReward, Sample
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


def test_one_row_per_problem_and_seed():
    problem = ArithmeticTask(seed=0).problems(1)[0]
    row = toy_instruction_row(problem, seed=5)
    assert row == toy_instruction_row(problem, seed=5)
    assert len({str(toy_instruction_row(problem, seed=s)) for s in range(20)}) > 1
    assert row["answer"] == str(problem.answer) and row["question"] == problem.question


def test_query_datamodule_toy_instruction_queries_score_through_the_composite():
    # The contract with QueryDataModule: its toy IFEval queries carry instruction_id_list and
    # kwargs to the rewards, routed to `arithmetic` and `instructions`.
    from lit_qwen3.datamodules.queries import QueryDataModule

    dm = QueryDataModule(
        toy_size=64, val_size=8, queries_per_step=4, toy_instruction_fraction=1.0, toy_exclude_sft=0
    )
    dm.setup("fit")
    composite = CompositeReward(
        [
            {"name": "arithmetic"},
            {"name": "instructions", "kwargs": {"all_or_nothing": True}},
            {"name": "format"},
        ],
        num_workers=0,
    )
    for query in dm.train_queries[:16]:
        metadata = query.reward_metadata()
        assert metadata["rewards"] == ["arithmetic", "instructions"]
        row = {**metadata, "answer": metadata["reference"]}
        prompt = query.messages_for(thinking=False)
        good = Sample.from_completion(prompt, toy_ifeval_reply(row), metadata=metadata)
        bare = Sample.from_completion(prompt, f"\\boxed{{{row['answer']}}}", metadata=metadata)
        assert composite.score(good).info["scores"] == {"arithmetic": 1.0, "instructions": 1.0}
        assert composite.score(bare).info["scores"] == {"arithmetic": 1.0, "instructions": 0.0}


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        toy_ifeval_rows(2, split="dev")
    with pytest.raises(ValueError, match="max_instructions must be 1 or 2"):
        toy_ifeval_rows(2, max_instructions=3)
    with pytest.raises(TypeError, match="problem must be an ArithmeticProblem"):
        toy_instruction_row("347+589")
    with pytest.raises(ValueError, match="toy_ifeval_reply knows"):
        toy_ifeval_reply(
            {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "answer": "1"}
        )
