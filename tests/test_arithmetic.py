"""The embedded toy task: traces recomputed line by line, the verifier, splits, seeding, grades."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter

import pytest

from lit_qwen3.datamodules.arithmetic import (
    ArithmeticProblem,
    ArithmeticTask,
    boxed,
    eval_problems,
    extract_boxed,
    parse_integer,
    verify,
)

COLUMN = re.compile(r"(\d)([+*])(\d)\+(\d)=(\d+) (\d+)")
NINES = re.compile(r"mod9 (\d)([+*])(\d)=(\d) (\d) ok")


def recompute_trace(problem: ArithmeticProblem, trace: str, *, check: bool) -> None:
    """Parse every line of a scratchpad and redo its arithmetic independently of the library."""
    a, b, op = problem.a, problem.b, problem.op
    answer = a + b if op == "+" else a * b
    lines = trace.split("\n")
    if check:
        *lines, last = lines
        m = NINES.fullmatch(last)
        assert m, f"bad check line {last!r} for {problem.question}"
        ra, line_op, rb, combined, r_answer = m.groups()
        assert (int(ra), line_op, int(rb)) == (a % 9, op, b % 9)
        expected = (a % 9 + b % 9) % 9 if op == "+" else (a % 9) * (b % 9) % 9
        assert int(combined) == expected == answer % 9 == int(r_answer)
    width = max(len(str(a)), len(str(b))) if op == "+" else len(str(a))
    assert len(lines) == width == problem.difficulty
    carry = 0
    for i, line in enumerate(lines):
        m = COLUMN.fullmatch(line)
        assert m, f"bad column line {line!r} for {problem.question}"
        x, line_op, y, line_carry, total, partial = m.groups()
        assert line_op == op
        # Column i from the right of each operand; a missing digit is 0; the factor is b itself.
        assert int(x) == a // 10**i % 10
        assert int(y) == (b // 10**i % 10 if op == "+" else b)
        assert int(line_carry) == carry
        assert int(total) == (int(x) + int(y) if op == "+" else int(x) * int(y)) + carry
        if i < width - 1:
            assert partial == str(answer)[-(i + 1) :].rjust(i + 1, "0")
        else:
            assert partial == str(answer)
        carry = int(total) // 10


# --- ArithmeticProblem -------------------------------------------------------------------------


def test_trace_of_the_measured_example():
    # 347+589, columns right to left: 7+9+0=16 writes 6 carries 1; 4+8+1=13 writes 3 carries 1;
    # the last column 3+5+1=9 writes its whole sum: 936. Nines: 347 -> 3+4+7=14 -> 5,
    # 589 -> 22 -> 4, 5+4=9 -> 0, and 936 -> 18 -> 0: they agree.
    p = ArithmeticProblem(347, 589, "+")
    assert p.answer == 936 and p.question == "347+589" and p.difficulty == 3
    assert p.thinking(check=False) == "7+9+0=16 6\n4+8+1=13 36\n3+5+1=9 936"
    assert p.thinking() == "7+9+0=16 6\n4+8+1=13 36\n3+5+1=9 936\nmod9 5+4=0 0 ok"


def test_trace_of_a_product_and_a_final_carry():
    # 347*9: 7*9+0=63 writes 3 carries 6; 4*9+6=42 writes 2 carries 4; 3*9+4=31 -> 3123.
    # Nines: 347 -> 5, 9 -> 0, 5*0=0, 3123 -> 9 -> 0.
    p = ArithmeticProblem(347, 9, "*")
    assert p.answer == 3123
    assert p.thinking() == "7*9+0=63 3\n4*9+6=42 23\n3*9+4=31 3123\nmod9 5*0=0 0 ok"
    # 99+1: the shorter operand is padded with 0; the last column writes 10, not 0.
    assert ArithmeticProblem(99, 1, "+").thinking(check=False) == "9+1+0=10 0\n9+0+1=10 100"
    # 1005+7: an inner zero partial keeps its leading zeros (the answer's last digits).
    assert ArithmeticProblem(1005, 7, "+").thinking(check=False) == (
        "5+7+0=12 2\n0+0+1=1 12\n0+0+0=0 012\n1+0+0=1 1012"
    )


def test_traces_recompute_for_many_random_problems():
    tasks = [
        ArithmeticTask(seed=1),
        ArithmeticTask(seed=2, min_digits=1, max_digits=7, mul_fraction=0.5, mul_digits=(1, 6)),
    ]
    for task in tasks:
        for split in ("train", "test"):
            for problem in task.problems(1000, split):
                recompute_trace(problem, problem.thinking(check=True), check=True)
                recompute_trace(problem, problem.thinking(check=False), check=False)
    for problem in eval_problems(seed=3, n_per_level=20):
        recompute_trace(problem, problem.thinking(), check=True)


@pytest.mark.parametrize(
    ("a", "b", "op", "error", "match"),
    [
        (3, 4, "-", ValueError, "op must be one of"),
        (347, 12, "*", ValueError, "b must be a single digit"),
        (-1, 4, "+", ValueError, "a must be >= 0"),
        (1, 2.0, "+", TypeError, "b must be an int"),
        (True, 2, "+", TypeError, "a must be an int"),
    ],
)
def test_problem_rejects_bad_fields(a, b, op, error, match):
    with pytest.raises(error, match=match):
        ArithmeticProblem(a, b, op)


# --- boxed, extract_boxed, verify --------------------------------------------------------------


def test_boxed_and_extract_boxed():
    assert boxed(936) == "\\boxed{936}" and boxed("12") == "\\boxed{12}"
    assert extract_boxed("so \\boxed{936}.") == "936"
    assert extract_boxed("\\boxed{1} then \\boxed{2}") == "2"  # the last box is the answer
    assert extract_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"  # nested braces kept whole
    assert extract_boxed("\\boxed{\\boxed{3}}") == "\\boxed{3}"  # the last *top-level* box
    assert extract_boxed("\\boxed {7}") == "7"
    assert extract_boxed("936") is None
    assert extract_boxed("\\boxed{936} but \\boxed{93") is None  # cut off inside the answer
    with pytest.raises(TypeError, match="value must be an int or str"):
        boxed(None)


@pytest.mark.parametrize(
    ("text", "expected", "result"),
    [
        ("\\boxed{936}", 936, True),
        ("The answer is \\boxed{936}.", "936", True),
        ("\\boxed{935}", 936, False),
        ("\\boxed{ 936 }", 936, True),
        ("\\boxed{1,234}", 1234, True),
        ("\\boxed{1{,}234}", 1234, True),
        ("\\boxed{1\\,234}", 1234, True),
        ("\\boxed{1 234}", 1234, True),
        ("\\boxed{12,34}", 1234, False),  # not a thousands grouping
        ("\\boxed{{936}}", 936, True),  # extra braces
        ("\\boxed{\\text{936}}", 936, True),
        ("\\boxed{\\text{9}6}", 96, False),  # not one wrapper around the whole content
        ("\\boxed{\\frac{936}{1}}", 936, False),  # nested braces, not an integer
        ("\\boxed{936} no wait \\boxed{935}", 936, False),  # the last box counts
        ("\\boxed{935} no wait \\boxed{936}", 936, True),
        ("936", 936, False),  # no box
        ("\\boxed{}", 936, False),
        ("\\boxed{9.36}", 936, False),
        ("\\boxed{936", 936, False),  # unclosed
        ("\\boxed{" + "9" * 5000 + "}", 936, False),  # too long for int(): no exception
        ("", 0, False),
    ],
)
def test_verify(text, expected, result):
    assert verify(text, expected) is result


def test_verify_takes_a_problem_and_rejects_bad_expected():
    p = ArithmeticProblem(347, 9, "*")
    assert verify("\\boxed{3123}", p) and not verify("\\boxed{3124}", p)
    with pytest.raises(ValueError, match="expected must be an integer"):
        verify("\\boxed{1}", "one")
    with pytest.raises(TypeError, match="expected must be an int"):
        verify("\\boxed{1}", 1.0)
    with pytest.raises(TypeError, match="completion_answer must be a str"):
        verify(None, 1)
    assert parse_integer(" -12 ") == -12


# --- ArithmeticTask: splits, seeding, mixes -----------------------------------------------------


def canonical(p: ArithmeticProblem) -> tuple[int, str, int]:
    return (min(p.a, p.b), p.op, max(p.a, p.b))


def test_splits_are_disjoint_and_sized_80_10_10():
    task = ArithmeticTask(seed=0)
    keys = {
        split: {canonical(p) for p in task.problems(3000, split, distinct=True)}
        for split in ("train", "val", "test")
    }
    assert all(len(k) == 3000 for k in keys.values())  # distinct within a split
    # Independent draws (the default) stay inside their split too.
    assert {canonical(p) for p in task.problems(3000, "train")}.isdisjoint(keys["test"])
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    evals = {canonical(p) for p in eval_problems(seed=0, n_per_level=20)}
    assert not evals & keys["train"]
    # A commuted problem is the same problem: same split.
    for p in task.problems(200, "test", distinct=True):
        if p.op == "+":
            assert ArithmeticProblem(p.b, p.a, "+").split == "test"
    assert ArithmeticProblem(7, 9, "*").split == ArithmeticProblem(9, 7, "*").split
    # Over all 2-digit sums (4,095 distinct up to order) the hash splits about 80/10/10.
    counts = Counter(
        ArithmeticProblem(a, b, "+").split for a in range(10, 100) for b in range(a, 100)
    )
    total = sum(counts.values())
    assert abs(counts["train"] / total - 0.8) < 0.03
    assert abs(counts["val"] / total - 0.1) < 0.02 and abs(counts["test"] / total - 0.1) < 0.02


def test_seeded_determinism():
    a, b = ArithmeticTask(seed=5), ArithmeticTask(seed=5)
    assert a.problems(300) == b.problems(300)
    assert a.problems(100) == a.problems(300)[:100]  # a prefix of any longer draw
    assert a.problems(300) != ArithmeticTask(seed=6).problems(300)
    assert a.conversations(50, think_fraction=0.5, cut_fraction=0.5) == b.conversations(
        50, think_fraction=0.5, cut_fraction=0.5
    )
    assert eval_problems(seed=1, n_per_level=5) == eval_problems(seed=1, n_per_level=5)
    assert eval_problems(seed=1, n_per_level=5) != eval_problems(seed=2, n_per_level=5)


@pytest.mark.parametrize("distinct", [False, True])
def test_mix_of_sums_and_products_follows_the_arguments(distinct):
    task = ArithmeticTask(seed=0, min_digits=2, max_digits=4, mul_fraction=0.25, mul_digits=(2, 3))
    problems = task.problems(4000, distinct=distinct)
    products = [p for p in problems if p.op == "*"]
    # Binomial(4000, 0.25): sd = sqrt(4000 * 0.25 * 0.75) = 27.4, so +-110 is 4 sd. Distinct
    # draws must keep the share although 2-3 digit products (6,336 in train) repeat often.
    assert abs(len(products) - 1000) < 110
    assert {len(str(p.a)) for p in products} == {2, 3} and {p.b for p in products} == set(
        range(2, 10)
    )
    sums = [p for p in problems if p.op == "+"]
    assert {len(str(p.a)) for p in sums} == {len(str(p.b)) for p in sums} == {2, 3, 4}
    assert all(p.op == "+" for p in ArithmeticTask(mul_fraction=0.0).problems(300))
    assert all(p.op == "*" for p in ArithmeticTask(mul_fraction=1.0).problems(300))


def test_independent_draws_outnumber_a_small_space():
    # 2-digit products: 90 * 8 = 720, about 576 in train; 2,000 independent draws repeat some.
    task = ArithmeticTask(mul_fraction=1.0, mul_digits=(2, 2))
    problems = task.problems(2000)
    assert len(problems) == 2000 and len(set(problems)) < 720


def test_too_few_distinct_problems_raises():
    # One-digit sums: 55 distinct up to order, about a tenth of them in the test split.
    task = ArithmeticTask(min_digits=1, max_digits=1, mul_fraction=0.0)
    with pytest.raises(ValueError, match=r"found no new 'test' problem among sums.*n=100"):
        task.problems(100, "test", distinct=True)
    assert len(task.problems(100, "test")) == 100  # independent draws repeat them


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_digits": 0}, ValueError, "min_digits must be >= 1"),
        ({"min_digits": 3, "max_digits": 2}, ValueError, "max_digits must be >= min_digits"),
        ({"mul_fraction": 1.5}, ValueError, r"mul_fraction must be in \[0, 1\]"),
        ({"mul_fraction": -0.1}, ValueError, "mul_fraction"),
        ({"mul_digits": (3, 2)}, ValueError, "mul_digits must be"),
        ({"mul_digits": (0, 2)}, ValueError, r"mul_digits\[0\] must be >= 1"),
        ({"mul_digits": 3}, ValueError, "mul_digits must be a pair"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
        ({"check": "yes"}, TypeError, "check must be a bool"),
    ],
)
def test_task_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ArithmeticTask(**kwargs)


def test_methods_reject_bad_arguments():
    task = ArithmeticTask()
    p = ArithmeticProblem(347, 589, "+")
    with pytest.raises(ValueError, match="split must be one of"):
        task.problems(3, split="dev")
    with pytest.raises(ValueError, match="n must be >= 0"):
        task.problems(-1)
    with pytest.raises(TypeError, match="distinct must be a bool"):
        task.problems(3, distinct=1)
    with pytest.raises(ValueError, match="think_fraction must be in"):
        task.conversations(3, think_fraction=2.0)
    with pytest.raises(ValueError, match="cut_fraction must be in"):
        task.conversations(3, cut_fraction=-1)
    with pytest.raises(ValueError, match="cut_thinking_at needs thinking=True"):
        task.messages(p, thinking=False, cut_thinking_at=3)
    with pytest.raises(ValueError, match="cut_thinking_at must be >= 0"):
        task.messages(p, thinking=True, cut_thinking_at=-1)
    with pytest.raises(TypeError, match="problem must be an ArithmeticProblem"):
        task.prompt("347+589")
    with pytest.raises(ValueError, match="digits must name at least one"):
        eval_problems(digits=[])
    with pytest.raises(ValueError, match="n_per_level must be >= 1"):
        eval_problems(n_per_level=0)


# --- messages and conversations ----------------------------------------------------------------


def test_messages_in_both_modes():
    task = ArithmeticTask()
    p = ArithmeticProblem(347, 589, "+")
    scratchpad = "7+9+0=16 6\n4+8+1=13 36\n3+5+1=9 936\nmod9 5+4=0 0 ok"
    assert task.messages(p, thinking=True) == [
        {"role": "user", "content": "347+589 /think"},
        {"role": "assistant", "content": "\\boxed{936}", "reasoning_content": scratchpad},
    ]
    assert task.messages(p, thinking=False) == [
        {"role": "user", "content": "347+589 /no_think"},
        {"role": "assistant", "content": "\\boxed{936}", "reasoning_content": ""},
    ]
    assert task.messages(p, thinking=True, flag=False)[0] == {"role": "user", "content": "347+589"}
    assert task.messages(p, thinking=True, cut_thinking_at=15)[1]["reasoning_content"] == (
        "7+9+0=16 6\n4+8+"
    )
    no_check = ArithmeticTask(check=False).messages(p, thinking=True)
    assert no_check[1]["reasoning_content"] == "7+9+0=16 6\n4+8+1=13 36\n3+5+1=9 936"
    assert task.prompt(p, thinking=None) == [{"role": "user", "content": "347+589"}]


def test_messages_render_through_the_official_qwen3_template(qwen3_tokenizer_dir):
    import jinja2  # a dependency of transformers

    config = json.loads((qwen3_tokenizer_dir / "tokenizer_config.json").read_text())
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        config["chat_template"]
    )
    task = ArithmeticTask()
    p = ArithmeticProblem(347, 589, "+")
    render = lambda m: template.render(messages=m, add_generation_prompt=False)  # noqa: E731
    assert render(task.messages(p, thinking=True)) == (
        "<|im_start|>user\n347+589 /think<|im_end|>\n<|im_start|>assistant\n<think>\n"
        "7+9+0=16 6\n4+8+1=13 36\n3+5+1=9 936\nmod9 5+4=0 0 ok\n</think>\n\n\\boxed{936}<|im_end|>\n"
    )
    assert render(task.messages(p, thinking=False)) == (
        "<|im_start|>user\n347+589 /no_think<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
        "</think>\n\n\\boxed{936}<|im_end|>\n"
    )
    # A cut at a line end: the template strips the newline and closes the block right there.
    assert render(task.messages(p, thinking=True, cut_thinking_at=11)) == (
        "<|im_start|>user\n347+589 /think<|im_end|>\n<|im_start|>assistant\n<think>\n"
        "7+9+0=16 6\n</think>\n\n\\boxed{936}<|im_end|>\n"
    )


def test_conversations_mix_modes_and_cuts():
    task = ArithmeticTask(seed=3)
    rows = task.conversations(200, split="val", think_fraction=0.5, cut_fraction=0.4, distinct=True)
    problems = task.problems(200, "val", distinct=True)
    assert len({canonical(p) for p in problems}) == 200
    thinking = [r for r in rows if r["thinking"]]
    assert len(rows) == 200 and len(thinking) == 100  # round(200 * 0.5)
    cut = 0
    for row, p in zip(rows, problems, strict=True):
        user, reply = row["messages"]
        assert row["answer"] == str(p.answer) and reply["content"] == boxed(p.answer)
        assert row["difficulty"] == p.difficulty
        full = p.thinking()
        if row["thinking"]:
            assert user["content"] == p.question + " /think"
            assert full.startswith(reply["reasoning_content"])
            cut += len(reply["reasoning_content"]) < len(full)
        else:
            assert user["content"] == p.question + " /no_think"
            assert reply["reasoning_content"] == ""
    assert cut == 40  # round(100 * 0.4): every cut is strictly short of the whole scratchpad
    assert all(not r["thinking"] for r in task.conversations(20, think_fraction=0.0))


# --- graded difficulty --------------------------------------------------------------------------


def test_eval_problems_spread_difficulty_and_thinking_length():
    problems = eval_problems(seed=0, n_per_level=12, digits=range(1, 9), mul_fraction=0.25)
    assert all(p.split == "test" for p in problems)
    assert len({canonical(p) for p in problems}) == len(problems)
    by_level = {d: [p for p in problems if p.difficulty == d] for d in range(1, 9)}
    for d in range(2, 9):
        assert len(by_level[d]) == 12  # 9 sums of two d-digit numbers + round(12 * 0.25) products
        assert sum(p.op == "*" for p in by_level[d]) == 3
        assert all(len(str(p.a)) == d for p in by_level[d])
    # Level 1 holds all the one-digit test problems there are: fewer than asked, none repeated.
    assert 1 <= len(by_level[1]) < 12
    # Each level needs a longer scratchpad than the one below it.
    mean_len = [statistics.mean(len(p.thinking()) for p in by_level[d]) for d in range(1, 9)]
    assert all(x < y for x, y in zip(mean_len, mean_len[1:], strict=False))
    # The training task's difficulty is its number of columns.
    grades = Counter(p.difficulty for p in ArithmeticTask(mul_fraction=0.0).problems(500))
    assert set(grades) == {2, 3, 4}


def test_round_trip_through_the_chat_module_and_the_toy_tokenizer():
    from lit_qwen3.chat import render, split_thinking
    from lit_qwen3.tokenizer import build_toy_tokenizer

    task = ArithmeticTask(seed=4)
    tokenizer = build_toy_tokenizer()
    for row in task.conversations(20, think_fraction=0.5, cut_fraction=0.5):
        text = render(row["messages"])
        assert tokenizer.apply_chat_template(row["messages"], tokenize=False) == text
        reply = text.split("<|im_start|>assistant\n")[1].removesuffix("<|im_end|>\n")
        parsed = split_thinking(reply)
        assert parsed.well_formed
        assert parsed.thinking == row["messages"][1]["reasoning_content"].strip("\n")
        assert verify(parsed.answer, row["answer"])
    # Byte-level: a scratchpad costs one token per character, so a cut at N characters is a
    # thinking budget of N tokens.
    for p in task.problems(50):
        assert len(tokenizer(p.thinking(), add_special_tokens=False)["input_ids"]) == len(
            p.thinking()
        )
