"""The toy task's curation sources: a query pool with known faults and ``toy-program``, a
synthetic teacher whose responses carry known faults, so every filter has something to catch.

Departures from the Qwen3 report (section 4.1), which curates real problems with QwQ-32B as
the teacher and Qwen2.5-72B-Instruct as the judge:

1. **The teacher is a program.** ``toy-program`` writes the arithmetic task's own scratchpad
   (:meth:`ArithmeticProblem.thinking`) and injects faults at configured rates, one fault at
   most per response, recorded as ``toy_fault`` (ground truth for tests; filters never read it):

   - ``wrong_answer``: a digit of the first operand misread, worked through consistently
     (thinking and answer both wrong). Its probability grows with the number of columns:
     ``1 - (1 - slip_rate) ** difficulty``, so longer problems have lower pass rates, as they
     would for a model (this also makes ``toy-program`` a stand-in policy for RL selection);
   - ``repetition``: the column lines written ``repeat_copies`` times over;
   - ``guess``: thinking cut short and hedged (``probably 936``), right answer;
   - ``think_answer_mismatch``: the misread scratchpad, but the right answer in the summary;
   - ``language_mix``: a line in another script (所以, значит, だから, لذلك) inside the thinking.

2. **"Answered without chain of thought" is a rule.** In non-thinking mode ``toy-program``
   answers exactly the problems of at most ``direct_digits`` columns (one-digit facts one knows
   by heart) and estimates the rest from each operand's leading digit (347+589 -> 300+500 = 800),
   which is right only when nothing is lost by rounding (300+500). A model in non-thinking mode
   can be used instead (``queries.solved_without_thinking.model``).

3. **The query pool is generated**, from the arithmetic task's train split, with the validation
   items drawn from its val split (hash-disjoint) and marked ``split: val``. Known query faults:
   ``near_copy`` (a validation question reworded: ``Compute 347 + 589.``), ``multi_question``
   (two questions in one) and ``open_ended`` (``Explain why 347+589 needs a carry.``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lit_qwen3.datamodules.arithmetic import ArithmeticProblem, ArithmeticTask, boxed

__all__ = ["TOY_PROGRAM", "ToyProgram", "ToyQueries", "parse_problem"]

#: The model name that selects the synthetic teacher wherever a model is configured.
TOY_PROGRAM = "toy-program"

_PROBLEM = re.compile(r"(\d+)\s*([+*])\s*(\d+)")
_FOREIGN_LINES = ("所以", "значит", "だから", "لذلك")
_NEAR_COPY = ("Compute {a} {op} {b}.", "{a} {op} {b} = ?", "What is {a}{op}{b}?")
_OPEN_ENDED = ("Explain why {q} needs a carry.", "Write a short story about {q}.")
RESPONSE_FAULTS = (
    "wrong_answer",
    "repetition",
    "guess",
    "think_answer_mismatch",
    "language_mix",
)


def parse_problem(text: str) -> ArithmeticProblem | None:
    """The first ``a+b`` or ``a*b`` in ``text`` as a problem the task can write out, or None."""
    match = _PROBLEM.search(text)
    if match is None:
        return None
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    if op == "*" and b > 9:
        a, b = b, a
    if op == "*" and b > 9:
        return None
    return ArithmeticProblem(a, b, op)


def _check_rate(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{owner}.{name} must be in [0, 1], got {value!r}")


@dataclass
class ToyQueries:
    """The toy query pool: ``size`` train-split problems (some turned into known query faults)
    and ``validation_size`` val-split problems marked ``split: val``."""

    size: int = 600
    """Rows in the pool, faults included."""
    validation_size: int = 48
    """Validation items (from the task's val split)."""
    seed: int = 0
    """Seed of the problems and of which rows carry faults."""
    min_digits: int = 1
    """Fewest digits of an addition operand (1: some problems need no reasoning)."""
    max_digits: int = 4
    """Most digits of an addition operand."""
    mul_fraction: float = 0.25
    """Share of products (n-digit number times one digit)."""
    mul_digits: tuple[int, int] = (1, 3)
    """Digits of a product's multi-digit factor."""
    near_copy_rate: float = 0.03
    """Share of the pool that rewords a validation question (contamination)."""
    multi_question_rate: float = 0.02
    """Share of the pool that asks two questions."""
    open_ended_rate: float = 0.02
    """Share of the pool that asks for open-ended text."""

    def __post_init__(self) -> None:
        for name in ("size", "validation_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ValueError(f"ToyQueries.{name} must be an int >= 0, got {value!r}")
        rates = ("near_copy_rate", "multi_question_rate", "open_ended_rate")
        for name in rates:
            _check_rate("ToyQueries", name, getattr(self, name))
        if sum(getattr(self, name) for name in rates) > 1.0:
            raise ValueError("ToyQueries: the fault rates add up to more than 1")
        if self.near_copy_rate > 0 and self.validation_size == 0:
            raise ValueError("ToyQueries.near_copy_rate > 0 needs validation items to copy")
        self.mul_digits = tuple(self.mul_digits)  # type: ignore[assignment]

    def _task(self) -> ArithmeticTask:
        return ArithmeticTask(
            seed=self.seed,
            min_digits=self.min_digits,
            max_digits=self.max_digits,
            mul_fraction=self.mul_fraction,
            mul_digits=self.mul_digits,
        )

    def rows(self) -> list[dict[str, Any]]:
        """Validation rows first, then the pool; every row has ``id``, ``messages``, ``answer``,
        ``difficulty`` and ``toy_fault`` (None for a plain problem). No ``domain``: the config's
        rules annotate it, as they would for unlabelled data."""
        task = self._task()
        validation = task.problems(self.validation_size, "val", distinct=True)
        pool = task.problems(self.size, "train", distinct=True)
        rng = random.Random(f"lit-qwen3/curation/toy-queries/{self.seed}")
        counts = {
            "near_copy": round(self.size * self.near_copy_rate),
            "multi_question": round(self.size * self.multi_question_rate),
            "open_ended": round(self.size * self.open_ended_rate),
        }
        chosen = rng.sample(range(self.size), sum(counts.values()))
        faults: dict[int, str] = {}
        start = 0
        for fault, count in counts.items():
            faults.update({i: fault for i in chosen[start : start + count]})
            start += count

        rows = [
            _row(f"toy-val-{i}", p.question, p, None) | {"split": "val"}
            for i, p in enumerate(validation)
        ]
        for i, problem in enumerate(pool):
            fault = faults.get(i)
            if fault == "near_copy":
                problem = rng.choice(validation)
                text = rng.choice(_NEAR_COPY).format(a=problem.a, op=problem.op, b=problem.b)
            elif fault == "multi_question":
                other = pool[(i + 1) % len(pool)]
                text = f"What is {problem.question}? And what is {other.question}?"
            elif fault == "open_ended":
                text = rng.choice(_OPEN_ENDED).format(q=problem.question)
            else:
                text = problem.question
            rows.append(_row(f"toy-{i}", text, problem, fault))
        return rows


def _row(row_id: str, text: str, problem: ArithmeticProblem, fault: str | None) -> dict[str, Any]:
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": text}],
        "answer": str(problem.answer),
        "difficulty": problem.difficulty,
        "toy_fault": fault,
    }


@dataclass
class ToyProgram:
    """``toy-program``: the synthetic teacher (thinking mode) and direct answerer (non-thinking
    mode) of the toy task. Deterministic per (question, sample index, seed)."""

    name: ClassVar[str] = TOY_PROGRAM

    slip_rate: float = 0.03
    """Chance per scratchpad column of misreading a digit: a wrong answer."""
    repetition_rate: float = 0.04
    """Share of responses that write their column lines ``repeat_copies`` times."""
    guess_rate: float = 0.04
    """Share of responses that guess: thinking cut short, hedged."""
    mismatch_rate: float = 0.04
    """Share of responses whose thinking reaches a different answer than the summary."""
    language_mix_rate: float = 0.04
    """Share of responses with a line in another script."""
    repeat_copies: int = 4
    """How many times a repeating response writes its column lines (a loop)."""
    direct_digits: int = 1
    """Non-thinking mode answers problems of at most this many columns exactly."""
    seed: int = 0
    """Seed of the fault draws."""

    def __post_init__(self) -> None:
        rates = ("repetition_rate", "guess_rate", "mismatch_rate", "language_mix_rate")
        for name in ("slip_rate", *rates):
            _check_rate("ToyProgram", name, getattr(self, name))
        if sum(getattr(self, name) for name in rates) > 1.0:
            raise ValueError("ToyProgram: the fault rates add up to more than 1")
        if not (isinstance(self.repeat_copies, int) and self.repeat_copies >= 2):
            raise ValueError(f"ToyProgram.repeat_copies must be >= 2, got {self.repeat_copies}")

    def generate(
        self,
        queries: Sequence[Mapping[str, Any]],
        indices: Sequence[int],
        *,
        thinking: bool,
        seed: int,
    ) -> list[dict[str, Any]]:
        """One response per (query, sample index): ``{"completion", "toy_fault"}``. ``seed``
        (the caller's batch seed) is unused: responses depend on the question and index only,
        so a resumed run writes what an uninterrupted one would."""
        del seed
        out = []
        for query, index in zip(queries, indices, strict=True):
            users = [m for m in query["messages"] if m.get("role") == "user"]
            question = users[-1]["content"] if users else ""
            if thinking:
                completion, fault = self.think(question, index)
            else:
                completion, fault = self.direct(question), None
            out.append({"completion": completion, "toy_fault": fault})
        return out

    def direct(self, question: str) -> str:
        """The non-thinking answer: exact up to ``direct_digits`` columns, else an estimate."""
        problem = parse_problem(question)
        if problem is None:
            return "I can only do sums and products."
        if problem.difficulty <= self.direct_digits:
            return boxed(problem.answer)
        a, b = _leading(problem.a), _leading(problem.b)
        return boxed(a + b if problem.op == "+" else a * b)

    def fault(self, question: str, index: int) -> str | None:
        """Which fault response ``index`` to ``question`` carries (None: a clean response)."""
        problem = parse_problem(question)
        if problem is None:
            return None
        u = random.Random(f"lit-qwen3/toy-program/{self.seed}/{question}/{index}").random()
        edges = [
            ("wrong_answer", 1.0 - (1.0 - self.slip_rate) ** problem.difficulty),
            ("repetition", self.repetition_rate),
            ("guess", self.guess_rate),
            ("think_answer_mismatch", self.mismatch_rate),
            ("language_mix", self.language_mix_rate),
        ]
        for fault, rate in edges:
            if u < rate:
                if fault in ("wrong_answer", "think_answer_mismatch"):
                    if _misread(problem, index).answer == problem.answer:
                        return None  # e.g. x*0: a misread digit changes nothing
                return fault
            u -= rate
        return None

    def think(self, question: str, index: int) -> tuple[str, str | None]:
        """A thinking-mode completion and its fault."""
        problem = parse_problem(question)
        if problem is None:
            return "<think>\nno sum or product here\n</think>\n\nI can only do arithmetic.", None
        fault = self.fault(question, index)
        rng = random.Random(f"lit-qwen3/toy-program/{self.seed}/{question}/{index}/text")
        lines = problem.thinking().split("\n")
        answer = problem.answer
        if fault == "wrong_answer":
            slipped = _misread(problem, index)
            lines, answer = slipped.thinking().split("\n"), slipped.answer
        elif fault == "think_answer_mismatch":
            lines = _misread(problem, index).thinking().split("\n")
        elif fault == "repetition":
            columns, check = lines[:-1], lines[-1:]
            lines = columns * self.repeat_copies + check
        elif fault == "guess":
            lines = lines[:1] if problem.difficulty >= 3 else []
            lines.append(f"probably {answer}")
        elif fault == "language_mix":
            lines.insert(rng.randrange(len(lines)), rng.choice(_FOREIGN_LINES))
        text = "\n".join(lines)
        return f"<think>\n{text}\n</think>\n\n{boxed(answer)}", fault


def _leading(n: int) -> int:
    """``n`` rounded down to its leading digit: 347 -> 300, 7 -> 7."""
    digits = str(n)
    return int(digits[0]) * 10 ** (len(digits) - 1)


def _misread(problem: ArithmeticProblem, index: int) -> ArithmeticProblem:
    """The problem with one digit of its first operand misread (never a new leading zero)."""
    rng = random.Random(f"lit-qwen3/toy-program/misread/{problem.question}/{index}")
    digits = list(str(problem.a))
    position = rng.randrange(len(digits))
    choices = [d for d in "0123456789" if d != digits[position]]
    if position == 0 and len(digits) > 1:
        choices.remove("0")
    digits[position] = rng.choice(choices)
    return ArithmeticProblem(int("".join(digits)), problem.b, problem.op)
