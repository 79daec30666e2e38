"""Assert tests split into sandbox probes and parent-side conditions; the result encoding."""

from __future__ import annotations

import json
import math

import pytest

from lit_qwen3.rewards.code_checks import (
    CheckFailed,
    ProbeError,
    decode,
    evaluate,
    parse_assert_tests,
    read_results,
)
from lit_qwen3.rewards.code_runner import encode


def probes(text: str) -> list[tuple[str, ...]]:
    return [check.probes for check in parse_assert_tests(text, "tests[0]")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("assert add(1, 2) == 3", [("add(1, 2)",)]),
        ("assert 3 == add(1, 2)", [("add(1, 2)",)]),
        ("assert not is_prime(4)\nassert is_prime(7)", [("is_prime(4)",), ("is_prime(7)",)]),
        ("assert abs(area(2) - 12.56) < 0.01", [("area(2)",)]),
        ("import math\nassert math.isclose(f(1), 0.5, rel_tol=1e-3)", [("f(1)",)]),
        ("from math import isclose\nassert isclose(f(1), 0.5)", [("f(1)",)]),
        ("assert Solution().two_sum([2, 7], 9) == [0, 1]", [("Solution().two_sum([2, 7], 9)",)]),
        ("assert sorted(f([2, 1])) == [1, 2]", [("f([2, 1])",)]),
        ("assert f(1)[0] == 2", [("f(1)",)]),  # the subscript runs here
        ("assert {'a': 1}[key()] == 1", [("key()",)]),
        ("assert list(map(double, [1, 2])) == [2, 4]", [("map(double, [1, 2])",)]),
        ("assert f(2) == f(1) + 1", [("f(2)", "f(1)")]),
        ("assert isinstance(f(1), (int, float)) and type(f(2)) is int", [("f(1)", "f(2)")]),
        ("assert f(1).startswith('ab')", [("f(1)",)]),  # the method runs here
        ("assert f(1) == pytest.approx(0.5)", [("f(1)",)]),
        ("assert math.isclose(f(1), 0.5)", [("f(1)",)]),  # math not imported: still the parent's
        ("assert (f(1) == [1, 2]).all()", [("f(1)",)]),
        ("assert f(1) == Fraction(1, 2) and f(2) == Counter('ab')", [("f(1)", "f(2)")]),
        ("assert True\nassert f(1)", [("f(1)",)]),  # HumanEval's `assert True` checks nothing
        ("xs = [1, 2]\nassert f(xs) == xs", [("f([1, 2])",)]),  # a literal input is written out
        ('"""A docstring."""\nassert f() is None, "message"', [("f()",)]),
    ],
)
def test_probes_carry_inputs_only(text, expected):
    assert probes(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("for i in range(3):\n    assert f(i) == i", r"tests\[0\] line 1: only assert statements"),
        ("assert f(1) == 1\nx = f", r"tests\[0\] line 2: only assert statements.*Assign"),
        (
            "assert all(f(x) == x for x in range(3))",
            r"line 1: .*\(GeneratorExp\) cannot be checked",
        ),
        ("import re\nassert re.match('a', f(1))", r"comes from re, which tests cannot use"),
        ("assert f(1) in range(3)", r"'range' is not known"),
        ("assert f(1) == (lambda: 1)()", r"'lambda: 1' cannot be called by the parent"),
        ("assert 1 + 1 == 2", r"calls no function of the program"),
        ("assert True", r"has no assert statement that calls the program"),
        ("assert compare(f(1), 2)", r"several names .*compare, f"),
        ("assert f(x) == 2", r"several names .*f, x"),
        ("assert f(1) == f'{2}'", r"JoinedStr.* cannot be checked"),
        ("assert f(1) ==", r"tests\[0\] line 1: not valid Python"),
        ("x = f(1)", r"only assert statements"),
        ("", r"tests\[0\] has no assert statement"),
        ("assert sorted(f(1), key=len) == []", r"keyword 'key', which is not supported"),
    ],
)
def test_tests_that_cannot_be_checked_outside_are_clear_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_assert_tests(text, "tests[0]")


def check_with(text: str, *values):
    (check,) = parse_assert_tests(text, "t", entry_points={"f", "g"})
    return evaluate(check, list(values))


def test_conditions_follow_python_semantics_on_plain_values():
    assert check_with("assert f() == (1, 2)", (1, 2))
    assert not check_with("assert f() == (1, 2)", [1, 2])  # a list is not a tuple
    assert check_with("assert f() == 1", 1.0) and check_with("assert f() == 1", True)
    assert not check_with("assert f() == 1", float("nan"))
    assert check_with("assert f() == {1, 2}", frozenset({1, 2}))
    assert check_with("assert abs(f() - 0.3) < 1e-9", 0.1 + 0.2)
    assert check_with("import math\nassert math.isclose(f(), 0.3)", 0.1 + 0.2)
    assert check_with("assert list(f()) == [1, 2]", iter([1, 2]))
    assert not check_with("assert f() == [1, 2]", iter([1, 2]))  # as in Python: an iterator
    assert check_with("assert 'abc'[f():] == 'bc'", 1)
    assert check_with("assert f() == 1 or g()", 1, ProbeError("raised ValueError"))  # lazy
    assert check_with("assert isinstance(f(), int)", 3) and not check_with(
        "assert isinstance(f(), int)", "3"
    )


def test_failing_conditions_and_probes_fail_the_check():
    with pytest.raises(CheckFailed, match="raised ZeroDivisionError"):
        check_with("assert f() == 1", ProbeError("raised ZeroDivisionError: division by zero"))
    with pytest.raises(CheckFailed, match="TypeError"):
        check_with("assert f() < 3", "a")
    with pytest.raises(CheckFailed, match="power too large"):
        check_with("assert 2 ** f() == 4", 10**9)
    with pytest.raises(CheckFailed, match="repetition too large"):
        check_with("assert 'a' * f() == ''", 10**12)


VALUES = [
    None,
    True,
    -7,
    2**5000,
    -(3**12000),  # more decimal digits than Python converts by default: sent in hex
    0.1,
    float("inf"),
    "text ✓",
    b"\x00\xff",
    1 + 2j,
    [1, [2, (3, 4)]],
    (1, "a", None),
    {1, 2},
    frozenset({"a"}),
    {"k": [1], 2: {"nested": (1,)}, (1, 2): None},
]


@pytest.mark.parametrize("value", VALUES, ids=[type(v).__name__ for v in VALUES])
def test_encode_then_decode_gives_the_same_value_and_type(value):
    back = decode(json.loads(json.dumps(encode(value))))
    assert back == value and type(back) is type(value)


def test_encode_refuses_what_is_not_plain_data():
    class Sly:
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError, match="Sly is not a built-in value"):
        encode(Sly())
    nested: list = []
    nested.append(nested)
    with pytest.raises(ValueError, match="nested too deeply"):
        encode(nested)
    assert math.isnan(decode(encode(float("nan"))))
    assert decode(encode(x for x in range(3))).__next__() == 0  # drained into an iterator


@pytest.mark.parametrize(
    "payload",
    [{"dict": [[1]]}, {"tuple": 1}, {"a": 1, "b": 2}, {"set": [[1]]}, {"float": "1e999x"}],
)
def test_decode_rejects_anything_else(payload):
    with pytest.raises((ValueError, TypeError)):
        decode(payload)


def lines(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_read_results_wants_every_probe_once_in_order_then_the_end():
    good = lines({"probe": 0, "value": 1}, {"probe": 1, "error": "ValueError: x"}, {"done": 2})
    values = read_results(good, 2)
    assert values[0] == 1 and isinstance(values[1], ProbeError)
    assert "end early" in read_results(lines({"probe": 0, "value": 1}), 2)
    twice = lines({"probe": 0, "value": 1}, {"probe": 0, "value": 1}, {"done": 2})
    assert "not the result of probe 1" in read_results(twice, 2)
    extra = good + lines({"probe": 2, "value": 3})
    assert "expected the end" in read_results(extra, 2)
    assert "not JSON" in read_results(b"garbage\n", 1)
    assert "not the result of probe 0" in read_results(lines({"done": 0}), 1)  # a forged end
