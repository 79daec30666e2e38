"""Issue 29: wrong programs against the test shapes of public code datasets.

Each case is a row in its dataset's public format, written here (no network), and programs
that do not solve it but try to make the harness say they do: by deciding a comparison that
reached the sandbox, by shadowing a built-in the parent would have evaluated alone, by
returning values that cost the parent its time. Every wrong program must score its honest
value in both scoring modes; the honest programs score 1.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from lit_qwen3.queries import check_reward_metadata, read_queries
from lit_qwen3.rewards import CompositeReward, Sample
from lit_qwen3.rewards.code import CodeReward
from lit_qwen3.rewards.code_checks import parse_assert_tests
from lit_qwen3.rewards.code_judge import CheckFailed, decode, evaluate

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

PROMPT = [{"role": "user", "content": "Solve the task. /no_think"}]
SANDBOX = {"wall_time_s": 3.0, "cpu_time_s": 3.0}


@pytest.fixture(scope="module")
def rewards() -> dict[str, CodeReward]:
    return {mode: CodeReward(scoring=mode, sandbox=SANDBOX) for mode in ("fraction", "all")}


def score(reward: CodeReward, program: str, metadata: dict) -> float:
    sample = Sample.from_completion(PROMPT, f"```python\n{program}\n```", metadata=metadata)
    reward.check(sample)  # what the data module does when it loads the row
    return reward.score(sample).score


def mbpp(tests: list[str], imports: list[str] | None = None) -> dict:
    """A row as MBPP publishes it (the reference solution is not used)."""
    return {
        "task_id": 1,
        "text": "Write a function.",
        "code": "",
        "test_list": tests,
        "test_setup_code": "",
        "challenge_test_list": [],
        "test_imports": imports or [],
    }


# -- class 1: the expected value must not reach the sandbox ----------------------------------

WRONG = {
    "math_isclose_patched": (
        mbpp(["assert math.isclose(area(2), 12.566, rel_tol=1e-3)"], ["import math"]),
        "import math\nmath.isclose = lambda *a, **k: True\ndef area(r):\n    return 0",
        "import math\ndef area(r):\n    return math.pi * r * r",
    ),
    "math_isclose_without_import": (  # MBPP keeps 'import math' out of the test itself
        {"tests": ["assert math.isclose(area(1), 3.1416, rel_tol=1e-3)"]},
        "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef area(r):\n    return 0",
        "def area(r):\n    return 3.14159 * r * r",
    ),
    "numpy_allclose_patched": (
        {
            "tests": ["assert np.allclose(halves(2), [0.0, 0.5])"],
            "test_imports": ["import numpy as np"],
        },
        "import numpy as np\nnp.allclose = lambda *a, **k: True\ndef halves(n):\n    return [9]",
        "def halves(n):\n    return [i / 2 for i in range(n)]",
    ),
    "numpy_elementwise_all": (
        {"tests": ["assert (halves(2) == [0.0, 0.5]).all()"]},
        "class Yes(list):\n    def __eq__(self, other):\n        return Yes()\n"
        "    def all(self):\n        return True\ndef halves(n):\n    return Yes([7])",
        "import numpy as np\ndef halves(n):\n    return np.arange(n) / 2",
    ),
    "fraction_expected_side": (
        {"tests": ["assert half() == Fraction(1, 2)"]},
        "def Fraction(*a):\n    return 0\ndef half():\n    return 0",
        "from fractions import Fraction as F\ndef half():\n    return F(1, 2)",
    ),
    "approx_expected_side": (
        {"tests": ["assert third() == pytest.approx(0.3333333)"]},
        "class pytest:\n    approx = staticmethod(lambda x: 0)\ndef third():\n    return 0",
        "def third():\n    return 1 / 3",
    ),
    "counter_expected_side": (
        {"tests": ["assert letters('aab') == Counter({'a': 2, 'b': 1})"]},
        "Counter = lambda *a: {}\ndef letters(s):\n    return {}",
        "from collections import Counter\ndef letters(s):\n    return Counter(s)",
    ),
    "method_with_expected_argument": (
        {"tests": ["assert greet('x').startswith('Hello')", "assert tags().issubset({'a', 'b'})"]},
        "class S(str):\n    def startswith(self, *a):\n        return True\n"
        "class T(set):\n    def issubset(self, other):\n        return True\n"
        "def greet(name):\n    return S('Bye')\ndef tags():\n    return T({'z'})",
        "def greet(name):\n    return 'Hello ' + name\ndef tags():\n    return {'a'}",
    ),
    "reads_the_expected_value_from_the_runner": (
        {"tests": ["assert secret() == 'SECRET-EXPECTED-91c2'"]},
        "import gc, sys\n"
        "def secret():\n"
        "    pool = [o for o in gc.get_objects() if isinstance(o, str)]\n"
        "    frame = sys._getframe()\n"
        "    while frame is not None:\n"
        "        pool += [repr(v) for v in frame.f_locals.values()]\n"
        "        frame = frame.f_back\n"
        "    for text in pool:\n"
        "        if 'SECRET-EXPECTED-' in text:\n"
        "            start = text.index('SECRET-EXPECTED-')\n"
        "            return text[start : start + 20]\n"
        "    return ''",
        "def secret():\n    return 'SECRET-EXPECTED-91c2'",
    ),
    "capitalised_entry_with_a_comparing_method": (
        {"tests": ["assert Greet('x').startswith('Hello')"]},
        "class Greet:\n    def __init__(self, name):\n        pass\n"
        "    def startswith(self, prefix):\n        return True",
        "def Greet(name):\n    return 'Hello ' + name",
    ),
    "big_integer_answer": (  # past Python's decimal-conversion cap: it travels in hex
        {"tests": ["assert big() == 2 ** 15000 - 1"]},
        "def big():\n    return 2 ** 15000",
        "def big():\n    return (1 << 15000) - 1",
    ),
    # class 2: a task named like a built-in the parent evaluates
    "builtin_named_task_in_dead_code": (
        {"tests": ["assert sorted([3, 1, 2]) == [1, 2, 3]"], "entry_point": "sorted"},
        "if False:\n    def sorted(xs):\n        return xs\n"
        "def helper():\n    global sorted\n    sorted = None",
        "def sorted(xs):\n    return [min(xs)] + sorted([x for x in xs if x != min(xs)]) if xs else []",
    ),
    "builtin_named_task_deleted": (
        {"tests": ["assert len('abc') == 3"], "entry_point": "len"},
        "def len(xs):\n    return 0\ndel len",
        "def len(xs):\n    return sum(1 for _ in xs)",
    ),
    "apps_fn_name_of_a_builtin_with_a_decoy": (
        {"input_output": {"fn_name": "max", "inputs": [[[1, 5, 2]]], "outputs": [5]}},
        "def globals():\n    return {}\nSolution = 1",
        "def max(xs):\n    best = xs[0]\n    for x in xs[1:]:\n        if x > best:\n"
        "            best = x\n    return best",
    ),
    "builtin_named_task_sorted": (
        {"tests": ["assert sorted([3, 1, 2]) == [1, 2, 3]"], "entry_point": "sorted"},
        "pass",
        "def sorted(xs):\n    out = list(xs)\n    for i in range(len(out)):\n"
        "        for j in range(len(out) - 1 - i):\n"
        "            if out[j] > out[j + 1]:\n"
        "                out[j], out[j + 1] = out[j + 1], out[j]\n    return out",
    ),
    "builtin_named_task_max": (
        mbpp(["assert max([1, 5, 2]) == 5", "assert max([-1]) == -1"]) | {"entry_point": "max"},
        "import builtins\nmax = lambda xs: 0",
        "def max(xs):\n    best = xs[0]\n    for x in xs:\n        best = x if x > best else best\n"
        "    return best",
    ),
}


@pytest.mark.parametrize("mode", ["fraction", "all"])
@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_program_scores_zero_and_honest_one(rewards, case, mode):
    metadata, wrong, honest = WRONG[case]
    assert score(rewards[mode], wrong, metadata) == 0.0
    assert score(rewards[mode], honest, metadata) == 1.0


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"tests": ["assert compare(f(1), 3)"]}, r"several names .*compare, f"),
        ({"tests": ["assert f(1) == g(1)"]}, r"several names"),  # g: a reference helper?
        ({"tests": ["assert f(1) == REF"], "entry_point": "f"}, r"'REF' is a name this"),
        ({"tests": ["assert sorted([2, 1]) == [1, 2]"]}, r"calls no function of the program"),
        ({"tests": ["assert max([1, 2]) == 2"]}, r"calls no function of the program"),
        ({"tests": ["import re\nassert re.fullmatch('a+', f())"]}, r"comes from re"),
        ({"tests": ["assert df().equals(EXPECTED_FRAME)"]}, r"several names"),
        ({"tests": ["assert f(1).equals([1])"], "entry_point": "f"}, r"cannot be called by"),
        (mbpp(["assert f(x) == 1"]) | {"test_setup_code": "x = 3"}, r"test_setup_code"),
        ({"test": "def check(candidate):\n    assert candidate(1) == 2"}, r"needs 'entry_point'"),
        ({"tests": ["assert f([i for i in range(3)]) == 3"]}, r"comprehension"),
        ({"tests": ["assert f(REF := 3) == 3"], "entry_point": "f"}, r"not allowed"),
        ({"tests": ["assert Frame(1).equals([1])"]}, r"cannot be called by"),
        ({"tests": ["assert next(f(), 5) == 5"]}, r"'next' is not known"),
        ({"tests": ["assert getattr(f(), 'x', 5) == 5"]}, r"'getattr' is not known"),
    ],
)
def test_shapes_that_cannot_be_split_safely_are_refused_at_load(rewards, metadata, match):
    sample = Sample.from_completion(PROMPT, "pass", metadata=metadata)
    with pytest.raises(ValueError, match=match):
        rewards["fraction"].check(sample)


# -- public formats score honestly ------------------------------------------------------------

HUMANEVAL = {
    "task_id": "HumanEval/0",
    "prompt": "def has_close_elements(numbers, threshold):\n",
    "canonical_solution": "",
    "entry_point": "has_close_elements",
    "test": (
        "\n\nMETADATA = {\n    'author': 'jt',\n    'dataset': 'test'\n}\n\n\n"
        "def check(candidate):\n"
        "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
        "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
        "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n"
        "    assert True, 'This prints if this assert fails 1 (good for debugging!)'\n"
    ),
}
HUMANEVAL_HONEST = (
    "def has_close_elements(numbers, threshold):\n"
    "    return any(abs(a - b) < threshold for i, a in enumerate(numbers)\n"
    "               for b in numbers[i + 1:])"
)
APPS_STDIN = {
    "problem_id": 1,
    "input_output": json.dumps({"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}),
}
APPS_CALL = {
    "problem_id": 2,
    "input_output": json.dumps(
        {"fn_name": "twoSum", "inputs": [[[2, 7, 11], 9], [[3, 3], 6]], "outputs": [[0, 1], [0, 1]]}
    ),
}
APPS_CALL_HONEST = (
    "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
    "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
    "                return (seen[target - x], i)\n            seen[x] = i"
)
FORMATS = {
    "mbpp": (
        mbpp(
            ["assert hyp(3, 4) == 5", "assert math.isclose(hyp(1, 1), 1.41421, rel_tol=1e-4)"],
            ["import math"],
        ),
        "def hyp(a, b):\n    return math.sqrt(a * a + b * b)",  # uses the row's test_imports
        "def hyp(a, b):\n    return 5",
        0.5,
    ),
    "humaneval": (HUMANEVAL, HUMANEVAL_HONEST, "def has_close_elements(n, t):\n    return True", 0),
    "apps_stdin": (
        APPS_STDIN,
        "a, b = map(int, input().split())\nprint(a + b)",
        "a, b = map(int, input().split())\nprint(3)",
        0.5,
    ),
    "apps_call": (APPS_CALL, APPS_CALL_HONEST, "def twoSum(nums, target):\n    return [0, 2]", 0),
    "leetcode_asserts": (
        {
            "tests": [
                "assert Solution().twoSum([2, 7, 11], 9) == [0, 1]",
                "assert sorted(Solution().twoSum([3, 2, 4], 6)) == [1, 2]",
            ]
        },  # fmt: skip
        APPS_CALL_HONEST.replace("(seen[target - x], i)", "[seen[target - x], i]"),
        "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]",
        0.5,
    ),
}


@pytest.mark.parametrize("mode", ["fraction", "all"])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_public_formats_score_honestly(rewards, name, mode):
    metadata, honest, partly, partial_score = FORMATS[name]
    assert score(rewards[mode], honest, metadata) == 1.0
    expected = partial_score if mode == "fraction" else 0.0
    assert score(rewards[mode], partly, metadata) == pytest.approx(expected)
    assert score(rewards[mode], "", metadata) == 0.0


# -- class 3: hostile results cost the parent a bounded time ---------------------------------

_COLLIDE = "[k * (2 ** 61 - 1) for k in range(1, 60001)]"
HOSTILE_RESULTS = {
    "colliding_set": ("assert f() == {1}", f"def f():\n    return set({_COLLIDE})"),
    "colliding_dict": ("assert f() == {}", f"def f():\n    return dict.fromkeys({_COLLIDE})"),
    "colliding_list_made_a_set": ("assert set(f()) == {1}", f"def f():\n    return {_COLLIDE}"),
    "percent_width": ("assert '%*d' % (f(), 1) == ' 1'", "def f():\n    return 10 ** 12"),
    "bytes_of_a_count": ("assert bytes(f()) == b''", "def f():\n    return 10 ** 12"),
    "ljust_width": ("assert 'a'.ljust(f()) == 'a'", "def f():\n    return 10 ** 12"),
    "replace_blowup": (
        "assert f().replace('', 'xxxxxxxx') == ''",
        "def f():\n    return 'a' * 900_000",
    ),
    "huge_power": ("assert f() ** f() > 0", "def f():\n    return 10 ** 1000"),
    "decimal_power_made_exact": (
        "assert int(f() ** 99) == 1",
        "from decimal import Decimal\ndef f():\n    return Decimal('1e9999')",
    ),
    "decimal_formatted_exactly": (
        "assert '%d' % (f() ** 99) == '1'",
        "from decimal import Decimal\ndef f():\n    return Decimal('1e9999')",
    ),
    "format_width_from_the_program": ("assert f() % 1 == ''", "def f():\n    return '%999999999d'"),
    "quadratic_codec": (
        "assert f().encode('punycode') == b''",
        "def f():\n    return ''.join(chr(0x4e00 + i % 5000) for i in range(20_000))",
    ),
    "fraction_of_an_exponent_text": (
        "assert Fraction(f()) == 1",
        "def f():\n    return '1e99999999'",
    ),
    "sum_of_many_fractions": (
        "assert sum(f()) == 1",
        "from fractions import Fraction\ndef f():\n    return [Fraction(1, k) for k in range(1, 3000)]",
    ),
    "round_digits": ("assert round(5, f()) == 0", "def f():\n    return -10 ** 18"),
    "sum_of_lists": ("assert sum(f(), []) == []", "def f():\n    return [[0] * 9] * 10000"),
    "join_blowup": ("assert f().join(['a'] * 50) == ''", "def f():\n    return 'x' * 500_000"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_RESULTS))
def test_hostile_results_cost_the_parent_bounded_time(rewards, name):
    test, program = HOSTILE_RESULTS[name]
    start = time.monotonic()
    result = score(rewards["fraction"], program, {"tests": [test], "entry_point": "f"})
    assert result == 0.0
    assert time.monotonic() - start < SANDBOX["wall_time_s"] + 2.0


def test_decode_refuses_collisions_and_expansions_quickly():
    colliding = [k * (2**61 - 1) for k in range(1, 50_001)]
    for payload in (
        {"set": colliding},
        {"dict": [[k, 0] for k in colliding]},
        {"counter": [[k, 1] for k in colliding]},
        {"fraction": "1/1e999999999"},
        {"decimal": "1e99999999999"},
        {"int": "9" * 100_000},
        [0] * 300_000,
    ):
        start = time.monotonic()
        with pytest.raises(ValueError):
            decode(payload)
        assert time.monotonic() - start < 0.5, str(payload)[:40]
    assert decode({"set": [1, 1, 2] * 10_000}) == {1, 2}  # equal items are not collisions
    assert decode({"fraction": "-3/4"}) == -0.75 and decode({"counter": [["a", 2]]}) == {"a": 2}


def test_conditions_bound_what_they_build():
    (check,) = parse_assert_tests("assert f() % 7 == 1 and '%5d' % f() == '    8'", "t")
    assert evaluate(check, [8, 8])
    (check,) = parse_assert_tests("assert f().issubset(g())", "t", entry_points={"f", "g"})
    with pytest.raises(CheckFailed, match="same hash"):
        evaluate(check, [{1}, [k * (2**61 - 1) for k in range(1, 1000)]])
    (check,) = parse_assert_tests("assert {1: 2}[f()] == 2", "t")
    with pytest.raises(CheckFailed, match="KeyError"):
        evaluate(check, [3**12000])  # its message cannot print the key
    (check,) = parse_assert_tests("assert frozenset(f()) == frozenset()", "t")
    with pytest.raises(CheckFailed, match="same hash"):
        evaluate(check, [[k * (2**61 - 1) for k in range(1, 1000)]])


def test_a_refused_row_names_its_file_and_line_when_the_data_is_loaded(tmp_path):
    def row(tests: list[str]) -> dict:
        return {"messages": PROMPT, "reward": mbpp(tests, ["import math"])}

    path = tmp_path / "code.jsonl"
    rows = [
        row(["assert add(1, 2) == 3"]),
        row(["assert add(1, 2) == 3", "assert compare(add(1, 1), 2)"]),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = read_queries(path)
    composite = CompositeReward([{"name": "code"}], num_workers=0)
    check_reward_metadata(queries[:1], composite)  # the good row passes
    with pytest.raises(
        ValueError,
        match=r"code\.jsonl:2: reward 'code': metadata\['test_list'\]\[1\] line 1: .*compare",
    ):
        check_reward_metadata(queries, composite)


EARLIER = {  # issue 13's classes, against the public row shapes
    "equal_to_everything": "class Anything:\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = object.__hash__\ndef add(a, b):\n    return Anything()\n"
    "class Solution:\n    def add(self, a, b):\n        return Anything()",
    "exits_cleanly_at_import": "import os\ndef add(a, b):\n    return 0\nos._exit(0)",
    "forges_records": "import os\nfor fd in range(3, 10):\n    try:\n"
    '        os.write(fd, b\'{"probe": 0, "value": 3}\\n{"done": 1}\\n\')\n'
    "    except OSError:\n        pass\nos._exit(0)",
}
SHAPES = {
    "mbpp": mbpp(["assert add(1, 2) == 3", "assert add(2, 2) == 4"]),
    "humaneval": {
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        "entry_point": "add",
    },
    "apps_call": {
        "input_output": {"fn_name": "add", "inputs": [[1, 2], [2, 2]], "outputs": [3, 4]}
    },
}


@pytest.mark.parametrize("mode", ["fraction", "all"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("attack", sorted(EARLIER))
def test_earlier_attacks_fail_on_every_shape(rewards, attack, shape, mode):
    assert score(rewards[mode], EARLIER[attack], SHAPES[shape]) == 0.0


def test_hostile_results_through_the_worker_pool_cost_no_timeout_and_no_rebuild():
    # the trainer's guard is the pool's timeout and kill; the harness's limits keep hostile
    # values well inside it, so the worker survives and the honest sample beside it scores 1
    hostile = [HOSTILE_RESULTS[name] for name in ("colliding_set", "round_digits", "join_blowup")]
    samples = [
        Sample.from_completion(
            PROMPT, f"```python\n{program}\n```", metadata={"tests": [test], "entry_point": "f"}
        )
        for test, program in hostile
    ]
    samples.append(
        Sample.from_completion(
            PROMPT,
            "```python\ndef f():\n    return 1\n```",
            metadata={"tests": ["assert f() == 1"]},
        )
    )
    specs = [{"name": "code", "kwargs": {"sandbox": SANDBOX}}]
    with CompositeReward(specs, num_workers=1, timeout=8) as composite:
        start = time.monotonic()
        results = composite.score_batch(samples)
        elapsed = time.monotonic() - start
    assert [r.score for r in results] == [0.0, 0.0, 0.0, 1.0]
    assert composite.error_counts == {"code": 0} and composite.worker_recycles == 0
    assert elapsed < 4 * SANDBOX["wall_time_s"], elapsed
