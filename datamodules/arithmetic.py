"""The embedded toy task: verifiable arithmetic with a program-written chain of thought.

Every toy config trains on this data, so it must learn on 2 CPU cores in minutes: the toy
tokenizer is byte-level (one character is about one token), so the scratchpad is kept short.
The layout is one measured to learn in 5 minutes on 2 cores (a 0.4M-parameter model reached 0.99
thinking accuracy on 2-4 digit sums): columns right to left, one line per column, each line
``digit+digit+carry=sum partial_answer``; for 347+589::

    7+9+0=16 6
    4+8+1=13 36
    3+5+1=9 936
    mod9 5+4=0 0 ok

The last line (``check=True``) casts out nines: ``a mod 9``, ``b mod 9``, their sum (or product)
mod 9, and the answer mod 9, which must agree. Products are an n-digit number times one digit in
the same layout (``7*9+0=63 3``). The reply is ``\\boxed{936}`` in both modes; in thinking mode
the scratchpad goes in ``reasoning_content``, so the Qwen3 chat template renders
``<think>\\n{scratchpad}\\n</think>\\n\\n\\boxed{936}``.

How the toy departs from the Qwen3 report (section 4):

1. Chains of thought are written by a program, not sampled from a reasoning model and filtered:
   they are right by construction, so the cold-start filters have nothing to reject.
2. Answers are non-negative integers, checked exactly by :func:`verify` (no math-verify): the
   reward is cheap and has no false positives.
3. For budget-aware mode fusion, some thinking replies may be cut at a random character and
   followed directly by ``</think>`` and the answer (``cut_thinking_at``). The report says the
   budget ability emerges from fusion untrained; at toy scale forcing ``</think>`` on a model never
   shown cut-off thinking broke the reply format, so the toy trains on it. The cut is followed by
   the template's own ``\\n</think>\\n\\n``, not by the long stop-thinking sentence.
4. Train, validation and test problems are disjoint by construction: a hash of the problem (with
   its operands sorted, so 347+589 and 589+347 are one problem) picks its split, and sampling
   rejects problems of the other splits.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

OPS = ("+", "*")
SPLITS = ("train", "val", "test")

# Ten hash buckets: eight train, one val, one test (80/10/10).
_BUCKET_SPLIT = ("train",) * 8 + ("val", "test")
_BOXED = re.compile(r"\\boxed\s*\{")
_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{")
_INT = re.compile(r"[+-]?\d+")
_GROUPED_INT = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")
_MAX_DRAWS = 10_000  # tries per problem before a (sub)space counts as exhausted
_MAX_ANSWER_DIGITS = 4000  # Python refuses int() on longer digit strings; no answer is that long


def _check_int(name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_split(split: object) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split  # type: ignore[return-value]


@dataclass(frozen=True)
class ArithmeticProblem:
    """One problem ``a op b``: ``a + b`` for any non-negative integers, or ``a * b`` with a single
    digit ``b`` (the scratchpad multiplies column by column, like the sums)."""

    a: int
    b: int
    op: str

    def __post_init__(self) -> None:
        _check_int("a", self.a, 0)
        _check_int("b", self.b, 0)
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        if self.op == "*" and self.b > 9:
            raise ValueError(
                f"b must be a single digit (0-9) when op is '*': the scratchpad multiplies an "
                f"n-digit number by one digit; got b={self.b}"
            )

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a * self.b

    @property
    def question(self) -> str:
        """The question as the user writes it, e.g. ``"347+589"`` (short: one token per char)."""
        return f"{self.a}{self.op}{self.b}"

    @property
    def difficulty(self) -> int:
        """Number of column lines in the scratchpad: what a budget must cover to finish it."""
        if self.op == "+":
            return max(len(str(self.a)), len(str(self.b)))
        return len(str(self.a))

    @property
    def split(self) -> str:
        """The split this problem belongs to, fixed by a hash of its operands-sorted form."""
        lo, hi = sorted((self.a, self.b))
        digest = hashlib.blake2b(f"{lo}{self.op}{hi}".encode(), digest_size=8).digest()
        return _BUCKET_SPLIT[int.from_bytes(digest, "big") % len(_BUCKET_SPLIT)]

    def thinking(self, *, check: bool = True) -> str:
        """The program-written scratchpad, without ``<think>`` tags or a trailing newline.

        One line per column, right to left: ``x+y+carry=sum partial`` (``x*b+carry=product
        partial`` for products), where ``partial`` is the answer's last digits so far; the last
        column writes its whole sum, so its ``partial`` is the answer. ``check`` adds one line
        casting out nines: ``mod9 {a%9}{op}{b%9}={that mod 9} {answer%9} ok``.
        """
        lines = _sum_lines(self.a, self.b) if self.op == "+" else _product_lines(self.a, self.b)
        if check:
            ra, rb = self.a % 9, self.b % 9
            combined = (ra + rb if self.op == "+" else ra * rb) % 9
            lines.append(f"mod9 {ra}{self.op}{rb}={combined} {self.answer % 9} ok")
        return "\n".join(lines)

    @property
    def _key(self) -> tuple[int, str, int]:
        lo, hi = sorted((self.a, self.b))
        return (lo, self.op, hi)


def _sum_lines(a: int, b: int) -> list[str]:
    da, db = str(a)[::-1], str(b)[::-1]
    width = max(len(da), len(db))
    lines, partial, carry = [], "", 0
    for i in range(width):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        partial = (str(total) if i == width - 1 else str(total % 10)) + partial
        lines.append(f"{x}+{y}+{carry}={total} {partial}")
        carry = total // 10
    return lines


def _product_lines(a: int, digit: int) -> list[str]:
    da = str(a)[::-1]
    lines, partial, carry = [], "", 0
    for i, ch in enumerate(da):
        product = int(ch) * digit + carry
        partial = (str(product) if i == len(da) - 1 else str(product % 10)) + partial
        lines.append(f"{ch}*{digit}+{carry}={product} {partial}")
        carry = product // 10
    return lines


def boxed(value: int | str) -> str:
    """The answer as the reply writes it: ``boxed(936) == "\\\\boxed{936}"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"value must be an int or str, got {type(value).__name__}")
    return "\\boxed{" + str(value) + "}"


def earlier_exchange(rng: random.Random, flag: str = "") -> list[dict]:
    """An earlier exchange for a multi-turn conversation: a sum of 2-3 digit numbers asked with
    ``flag`` (``/think``, ``/no_think`` or none) and its answer as the chat template keeps
    history, without the thinking. A later flag must win over ``flag``."""
    problem = ArithmeticProblem(rng.randint(10, 999), rng.randint(10, 999), "+")
    return [
        {"role": "user", "content": f"{problem.question} {flag}".rstrip()},
        {"role": "assistant", "content": boxed(problem.answer)},
    ]


def extract_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}`` in ``text`` (nested braces kept whole).

    None when there is no box, or when the last one is never closed (a reply cut off inside its
    answer has no final answer, even if an earlier box was complete).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    last, pos = None, 0
    while (match := _BOXED.search(text, pos)) is not None:
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += (text[i] == "{") - (text[i] == "}")
            i += 1
        if depth:
            return None
        last, pos = text[match.end() : i - 1], i
    return last


def _closing_braces(text: str) -> list[int]:
    """``close[i]``: where the ``{`` at ``i`` is closed (-1: not a brace, or never closed)."""
    close, opened = [-1] * len(text), []
    for i, char in enumerate(text):
        if char == "{":
            opened.append(i)
        elif char == "}" and opened:
            close[opened.pop()] = i
    return close


def _unwrap(content: str) -> str:
    """Strip whitespace, whole-content braces and ``\\text{}``-style wrappers, repeatedly.

    One pass over the braces, then a window that only shrinks: linear, where peeling a copy of
    the string per layer was quadratic (``{`` x 60000 took over a minute).
    """
    close = _closing_braces(content)
    lo, hi = 0, len(content)
    while True:
        while lo < hi and content[lo].isspace():
            lo += 1
        while hi > lo and content[hi - 1].isspace():
            hi -= 1
        wrapper = _WRAPPER.match(content, lo, hi)
        if wrapper and close[wrapper.end() - 1] == hi - 1:
            lo, hi = wrapper.end(), hi - 1
        elif lo < hi and content[lo] == "{" and close[lo] == hi - 1:
            lo, hi = lo + 1, hi - 1
        else:
            return content[lo:hi]


def parse_integer(content: str) -> int | None:
    """The integer a box holds, or None: tolerant of spaces, LaTeX thin spaces (``\\,``),
    thousands commas (``1,234`` or ``1{,}234``), extra braces and ``\\text{}``."""
    content = _unwrap(content).replace("{,}", ",")
    for space in ("\\,", "\\!", "\\ ", "~"):
        content = content.replace(space, "")
    content = re.sub(r"\s+", "", content)
    if len(content) > _MAX_ANSWER_DIGITS:
        return None
    if _INT.fullmatch(content):
        return int(content)
    if _GROUPED_INT.fullmatch(content):
        return int(content.replace(",", ""))
    return None


def _expected_int(expected: int | str | ArithmeticProblem) -> int:
    if isinstance(expected, ArithmeticProblem):
        return expected.answer
    if isinstance(expected, bool) or not isinstance(expected, (int, str)):
        raise TypeError(
            f"expected must be an int, str or ArithmeticProblem, got {type(expected).__name__}"
        )
    if isinstance(expected, int):
        return expected
    value = parse_integer(expected)
    if value is None:
        raise ValueError(f"expected must be an integer, got {expected!r}")
    return value


def verify(completion_answer: str, expected: int | str | ArithmeticProblem) -> bool:
    """True iff the last ``\\boxed{}`` in the answer text holds the expected integer.

    Malformed answers (no box, an unclosed box, a box that is not an integer) give False, never
    an exception; a bad ``expected`` is a programming error and raises.
    """
    if not isinstance(completion_answer, str):
        raise TypeError(f"completion_answer must be a str, got {type(completion_answer).__name__}")
    target = _expected_int(expected)
    content = extract_boxed(completion_answer)
    return content is not None and parse_integer(content) == target


def _random_number(rng: random.Random, digits: int) -> int:
    """Uniform over numbers with exactly ``digits`` digits (0-9 for one digit)."""
    return rng.randint(0, 9) if digits == 1 else rng.randint(10 ** (digits - 1), 10**digits - 1)


def _draw_in_split(
    rng: random.Random,
    draw: Callable[[random.Random], ArithmeticProblem],
    split: str,
    seen: set[tuple[int, str, int]] | None,
) -> ArithmeticProblem | None:
    """Draw until a problem of ``split`` (not in ``seen``, when given) comes up; None if none
    does in ``_MAX_DRAWS`` tries. Rejecting other splits' problems keeps the splits disjoint."""
    for _ in range(_MAX_DRAWS):
        problem = draw(rng)
        if problem.split == split and (seen is None or problem._key not in seen):
            if seen is not None:
                seen.add(problem._key)
            return problem
    return None


@dataclass
class ArithmeticTask:
    """A seeded generator of toy conversations: sums of 2-4 digit numbers and, for a share of
    them, an n-digit number times one digit, in thinking (scratchpad) or non-thinking form."""

    seed: int = 0
    """Seed of every draw: the same task and arguments give the same problems and rows."""
    min_digits: int = 2
    """Fewest digits of each addition operand."""
    max_digits: int = 4
    """Most digits of each addition operand."""
    mul_fraction: float = 0.25
    """Share of problems that are products of an n-digit number and one digit (2-9)."""
    mul_digits: tuple[int, int] = (2, 3)
    """Fewest and most digits of the multi-digit factor of a product."""
    check: bool = True
    """End the scratchpad with a casting-out-nines check line."""

    def __post_init__(self) -> None:
        _check_int("seed", self.seed)
        _check_int("min_digits", self.min_digits, 1)
        _check_int("max_digits", self.max_digits, 1)
        if self.max_digits < self.min_digits:
            raise ValueError(
                f"max_digits must be >= min_digits, got max_digits={self.max_digits} "
                f"< min_digits={self.min_digits}"
            )
        self.mul_fraction = _check_fraction("mul_fraction", self.mul_fraction)
        if not isinstance(self.mul_digits, (tuple, list)) or len(self.mul_digits) != 2:
            raise ValueError(f"mul_digits must be a pair (low, high), got {self.mul_digits!r}")
        low = _check_int("mul_digits[0]", self.mul_digits[0], 1)
        high = _check_int("mul_digits[1]", self.mul_digits[1], 1)
        if high < low:
            raise ValueError(f"mul_digits must be (low, high) with low <= high, got {(low, high)}")
        self.mul_digits = (low, high)
        if not isinstance(self.check, bool):
            raise TypeError(f"check must be a bool, got {type(self.check).__name__}")

    def _draw_sum(self, rng: random.Random) -> ArithmeticProblem:
        a = _random_number(rng, rng.randint(self.min_digits, self.max_digits))
        b = _random_number(rng, rng.randint(self.min_digits, self.max_digits))
        return ArithmeticProblem(a, b, "+")

    def _draw_product(self, rng: random.Random) -> ArithmeticProblem:
        a = _random_number(rng, rng.randint(*self.mul_digits))
        return ArithmeticProblem(a, rng.randint(2, 9), "*")

    def problems(
        self, n: int, split: str = "train", *, distinct: bool = False, at_most: bool = False
    ) -> list[ArithmeticProblem]:
        """``n`` problems of ``split``: the same for the same seed, and a prefix of any longer
        list; no problem of one split is ever drawn for another.

        Each problem is a product with probability ``mul_fraction``, else a sum. By default
        problems are drawn independently (a long training stream may repeat one, as epochs do);
        ``distinct=True`` never repeats a problem (up to operand order), for evaluation sets,
        and raises when the split holds too few (``at_most=True``: returns those it found).
        """
        _check_int("n", n, 0)
        _check_split(split)
        if not isinstance(distinct, bool):
            raise TypeError(f"distinct must be a bool, got {type(distinct).__name__}")
        rng = random.Random(f"lit-qwen3/arithmetic/{self.seed}/{split}")
        seen: set[tuple[int, str, int]] | None = set() if distinct else None
        problems = []
        for i in range(n):
            product = rng.random() < self.mul_fraction
            problem = _draw_in_split(
                rng, self._draw_product if product else self._draw_sum, split, seen
            )
            if problem is None and at_most:
                break
            if problem is None:
                low, high = self.mul_digits if product else (self.min_digits, self.max_digits)
                kind = "products" if product else "sums"
                raise ValueError(
                    f"found no {'new ' if distinct else ''}{split!r} problem among {kind} of "
                    f"{low}-{high} digit numbers in {_MAX_DRAWS} draws, after {i} of n={n}: "
                    f"widen the digit range, ask for fewer or pass distinct=False"
                )
            problems.append(problem)
        return problems

    def prompt(self, problem: ArithmeticProblem, *, thinking: bool | None = True) -> list[dict]:
        """The user message: the question with ``/think`` (True), ``/no_think`` (False) or no
        flag (None: the template's default mode, thinking unless ``enable_thinking=False``)."""
        if not isinstance(problem, ArithmeticProblem):
            raise TypeError(f"problem must be an ArithmeticProblem, got {type(problem).__name__}")
        if thinking is not None and not isinstance(thinking, bool):
            raise TypeError(f"thinking must be True, False or None, got {thinking!r}")
        flag = {True: " /think", False: " /no_think", None: ""}[thinking]
        return [{"role": "user", "content": problem.question + flag}]

    def messages(
        self,
        problem: ArithmeticProblem,
        *,
        thinking: bool,
        flag: bool = True,
        cut_thinking_at: int | None = None,
    ) -> list[dict]:
        """A user turn and the assistant's reply, in the message format of the Qwen3 template.

        The reply's ``content`` is the boxed answer; ``reasoning_content`` is the scratchpad in
        thinking mode and ``""`` otherwise (the template then writes the empty think block).
        ``flag=False`` leaves the flag out of the question. ``cut_thinking_at`` keeps only the
        first that many characters of the scratchpad (budget-aware fusion data; departure 3).
        """
        if not isinstance(thinking, bool):
            raise TypeError(f"thinking must be a bool, got {thinking!r}")
        reasoning = problem.thinking(check=self.check) if thinking else ""
        if cut_thinking_at is not None:
            _check_int("cut_thinking_at", cut_thinking_at, 0)
            if not thinking:
                raise ValueError("cut_thinking_at needs thinking=True: there is nothing to cut")
            reasoning = reasoning[:cut_thinking_at]
        reply = {
            "role": "assistant",
            "content": boxed(problem.answer),
            "reasoning_content": reasoning,
        }
        return [*self.prompt(problem, thinking=thinking if flag else None), reply]

    def tool_messages(self, problem: ArithmeticProblem, *, thinking: bool = True) -> list[dict]:
        """A reply that calls the ``calculator`` tool and answers with its result (agent data
        for fusion and general RL): user question, an assistant turn with a short thought and
        the call, the tool's answer, then the boxed answer."""
        if not isinstance(problem, ArithmeticProblem):
            raise TypeError(f"problem must be an ArithmeticProblem, got {type(problem).__name__}")
        call = {"name": "calculator", "arguments": {"expression": problem.question}}
        return [
            *self.prompt(problem, thinking=thinking),
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "calculator" if thinking else "",
                "tool_calls": [call],
            },
            {"role": "tool", "content": str(problem.answer)},
            {"role": "assistant", "content": boxed(problem.answer), "reasoning_content": ""},
        ]

    def conversations(
        self,
        n: int,
        *,
        split: str = "train",
        think_fraction: float = 1.0,
        cut_fraction: float = 0.0,
        distinct: bool = False,
    ) -> list[dict]:
        """``n`` rows ``{"messages", "answer", "thinking", "difficulty"}`` over
        ``problems(n, split, distinct=distinct)``.

        Exactly ``round(n * think_fraction)`` rows are in thinking mode, and
        ``round(thinking rows * cut_fraction)`` of those are cut at a random character
        (uniform over all cut points short of the whole scratchpad). Which rows is seeded.
        """
        think_fraction = _check_fraction("think_fraction", think_fraction)
        cut_fraction = _check_fraction("cut_fraction", cut_fraction)
        problems = self.problems(n, split, distinct=distinct)
        rng = random.Random(f"lit-qwen3/arithmetic/{self.seed}/{split}/conversations")
        thinking_rows = sorted(rng.sample(range(n), round(n * think_fraction)))
        cut_rows = set(rng.sample(thinking_rows, round(len(thinking_rows) * cut_fraction)))
        thinking_rows = set(thinking_rows)
        rows = []
        for i, problem in enumerate(problems):
            cut = None
            if i in cut_rows:
                cut = rng.randrange(len(problem.thinking(check=self.check)))
            messages = self.messages(problem, thinking=i in thinking_rows, cut_thinking_at=cut)
            rows.append(
                {
                    "messages": messages,
                    "answer": str(problem.answer),
                    "thinking": i in thinking_rows,
                    "difficulty": problem.difficulty,
                }
            )
        return rows


def eval_problems(
    seed: int = 0,
    n_per_level: int = 20,
    digits: Iterable[int] = range(1, 9),
    *,
    mul_fraction: float = 0.25,
    split: str = "test",
) -> list[ArithmeticProblem]:
    """Problems at graded difficulty for thinking-budget sweeps (the report's Figure 2).

    For each ``d`` in ``digits``: sums of two ``d``-digit numbers and, for ``mul_fraction`` of
    the level, ``d``-digit numbers times one digit (2-9), all distinct, all from ``split``, so
    each level needs ``d`` scratchpad lines. A wide spread of lengths makes accuracy rise
    smoothly with the budget. Small levels hold fewer problems: the test split has only about
    ten 1-digit problems, and the level returns all it has.
    """
    _check_int("seed", seed)
    _check_int("n_per_level", n_per_level, 1)
    mul_fraction = _check_fraction("mul_fraction", mul_fraction)
    _check_split(split)
    levels = list(digits)
    if not levels:
        raise ValueError("digits must name at least one digit count, got an empty range")
    for d in levels:
        _check_int("digits", d, 1)
    n_mul = round(n_per_level * mul_fraction)
    problems: list[ArithmeticProblem] = []
    for d in levels:
        rng = random.Random(f"lit-qwen3/arithmetic/eval/{seed}/{split}/{d}")
        seen: set[tuple[int, str, int]] = set()

        def draw_sum(rng: random.Random, d: int = d) -> ArithmeticProblem:
            return ArithmeticProblem(_random_number(rng, d), _random_number(rng, d), "+")

        def draw_product(rng: random.Random, d: int = d) -> ArithmeticProblem:
            return ArithmeticProblem(_random_number(rng, d), rng.randint(2, 9), "*")

        for draw, count in ((draw_sum, n_per_level - n_mul), (draw_product, n_mul)):
            for _ in range(count):
                problem = _draw_in_split(rng, draw, split, seen)
                if problem is None:  # a small level ran out: keep all it has
                    break
                problems.append(problem)
    return problems
