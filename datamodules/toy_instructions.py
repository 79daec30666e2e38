"""Toy instruction-following prompts in IFEval's format, on the arithmetic task's questions.

General RL (report section 4.4) trains instruction following; the toy config needs prompts that a
tiny byte-level model can learn in minutes and that the ``instructions`` reward scores with
IFEval's own checkers. Each row is an arithmetic question followed by one or two short
instructions, with IFEval's ``instruction_id_list`` and ``kwargs``::

    {"prompt": "347+589 End with: Done.", "instruction_id_list": ["startend:end_checker"],
     "kwargs": [{"end_phrase": "Done."}], "answer": "936", "question": "347+589",
     "domain": "instruction_following"}

:func:`toy_instruction_row` makes the row of one problem (``QueryDataModule`` draws its toy
instruction queries with it); :func:`toy_ifeval_rows` makes ``n`` rows of a split. Every
instruction here fails on the bare reply ``\\boxed{936}``, so a policy has to learn the
format, and :func:`toy_ifeval_reply` writes a reply that follows all of a row's instructions and
still holds ``\\boxed{answer}`` (SFT and fusion data teach the format with it). Questions come
from :class:`~lit_qwen3.datamodules.arithmetic.ArithmeticTask`, so train, validation and test rows
never share a problem. Pairs that cannot both hold on one short reply (quotes around a bullet
line) are never drawn together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lit_qwen3.datamodules.arithmetic import (
    ArithmeticProblem,
    ArithmeticTask,
    _check_int,
    _check_split,
    boxed,
)

__all__ = [
    "TOY_INSTRUCTIONS",
    "ToyInstruction",
    "toy_ifeval_reply",
    "toy_ifeval_rows",
    "toy_instruction_row",
]

DOMAIN = "instruction_following"
_KEYWORDS = ("sum", "total", "result")
_END_PHRASES = ("Done.", "That is all.", "Bye.")
_TITLE = "<<Result>>"


@dataclass(frozen=True)
class ToyInstruction:
    """One IFEval instruction the toy uses: its id, kwargs choices and prompt wording."""

    id: str
    text: str
    """Prompt wording; ``{}`` takes the drawn kwarg value."""
    choices: tuple[dict, ...] = ({},)
    """The kwargs dicts one row may draw from (IFEval's names)."""


TOY_INSTRUCTIONS: tuple[ToyInstruction, ...] = (
    ToyInstruction(
        "keywords:existence",
        "Use the word {}.",
        tuple({"keywords": [w]} for w in _KEYWORDS),
    ),
    ToyInstruction(
        "change_case:capital_word_frequency",
        "Write one word in CAPITALS.",
        ({"capital_frequency": 1, "capital_relation": "at least"},),
    ),
    ToyInstruction(
        "detectable_format:number_bullet_lists",
        "Answer as one bullet (* ...).",
        ({"num_bullets": 1},),
    ),
    ToyInstruction("detectable_format:title", "Add a title like <<title>>."),
    ToyInstruction(
        "startend:end_checker", "End with: {}", tuple({"end_phrase": p} for p in _END_PHRASES)
    ),
    ToyInstruction(
        "detectable_content:postscript",
        "Add a postscript starting with {}.",
        ({"postscript_marker": "P.S."},),
    ),
    ToyInstruction("startend:quotation", "Wrap the whole reply in double quotes."),
)
_BY_ID = {instruction.id: instruction for instruction in TOY_INSTRUCTIONS}
_EXCLUSIVE = {frozenset({"startend:quotation", "detectable_format:number_bullet_lists"})}


def _wording(instruction: ToyInstruction, kwargs: dict) -> str:
    value = next(iter(kwargs.values()), None) if kwargs else None
    if isinstance(value, list):
        value = value[0]
    return instruction.text.format(value) if "{}" in instruction.text else instruction.text


def toy_instruction_row(
    problem: ArithmeticProblem, seed: int = 0, *, max_instructions: int = 2
) -> dict:
    """One IFEval-format row for ``problem``: 1 to ``max_instructions`` distinct instructions of
    :data:`TOY_INSTRUCTIONS`, drawn by ``seed`` (the same arguments give the same row)."""
    if not isinstance(problem, ArithmeticProblem):
        raise TypeError(f"problem must be an ArithmeticProblem, got {type(problem).__name__}")
    _check_int("seed", seed)
    _check_int("max_instructions", max_instructions, 1)
    if max_instructions > 2:
        raise ValueError(
            f"max_instructions must be 1 or 2 (short toy replies), got {max_instructions}"
        )
    rng = random.Random(f"lit-qwen3/toy_instructions/{seed}/{problem.question}")
    count = rng.randint(1, max_instructions)
    while True:
        chosen = rng.sample(TOY_INSTRUCTIONS, count)
        if frozenset(i.id for i in chosen) not in _EXCLUSIVE:
            break
    kwargs = [dict(rng.choice(instruction.choices)) for instruction in chosen]
    wording = " ".join(_wording(i, kw) for i, kw in zip(chosen, kwargs, strict=True))
    return {
        "prompt": f"{problem.question} {wording}",
        "instruction_id_list": [i.id for i in chosen],
        "kwargs": kwargs,
        "answer": str(problem.answer),
        "question": problem.question,
        "domain": DOMAIN,
    }


def toy_ifeval_rows(
    n: int,
    seed: int = 0,
    split: str = "train",
    *,
    max_instructions: int = 2,
    task: ArithmeticTask | None = None,
) -> list[dict]:
    """``n`` rows of :func:`toy_instruction_row` over ``task.problems(n, split)`` (default
    ``ArithmeticTask(seed)``), with row seeds drawn from ``seed`` and ``split``."""
    _check_int("n", n, 0)
    _check_int("seed", seed)
    _check_split(split)
    task = ArithmeticTask(seed=seed) if task is None else task
    rng = random.Random(f"lit-qwen3/toy_instructions/{seed}/{split}")
    return [
        toy_instruction_row(p, rng.randrange(2**32), max_instructions=max_instructions)
        for p in task.problems(n, split)
    ]


def toy_ifeval_reply(row: dict) -> str:
    """A reply to ``row`` that follows all its instructions and holds ``\\boxed{answer}``.

    Built in one fixed order: a title line, the answer line (bullet, keyword, capital word,
    box), the postscript line, the end phrase, and quotes around everything.
    """
    ids = row.get("instruction_id_list")
    kwargs = row.get("kwargs") or [{}] * len(ids or [])
    if not isinstance(ids, list) or len(kwargs) != len(ids) or "answer" not in row:
        raise ValueError(f"not a toy IFEval row (instruction_id_list, kwargs, answer): {row!r}")
    unknown = [i for i in ids if i not in _BY_ID]
    if unknown:
        raise ValueError(f"toy_ifeval_reply knows {sorted(_BY_ID)}, not {unknown}")
    given = dict(zip(ids, kwargs, strict=True))
    line = boxed(row["answer"])
    if "keywords:existence" in given:
        line = f"The {given['keywords:existence']['keywords'][0]} is {line}"
    if "change_case:capital_word_frequency" in given:
        line = f"OK {line}"
    if "detectable_format:number_bullet_lists" in given:
        line = f"* {line}"
    lines = [_TITLE] if "detectable_format:title" in given else []
    lines.append(line)
    if "detectable_content:postscript" in given:
        lines.append(f"{given['detectable_content:postscript']['postscript_marker']} checked")
    reply = "\n".join(lines)
    if "startend:end_checker" in given:
        reply = f"{reply} {given['startend:end_checker']['end_phrase']}"
    if "startend:quotation" in given:
        reply = f'"{reply}"'
    return reply
