"""Code reward: program extraction, stdin/stdout and assert tests, partial credit, hostile code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from lit_qwen3.rewards import CompositeReward, Sample
from lit_qwen3.rewards.code import CodeReward, extract_program, outputs_match

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

PROMPT = [{"role": "user", "content": "Write a program. /think"}]
SUM_TESTS = [
    {"input": "1 2\n", "output": "3\n"},
    {"input": "10 -4\n", "output": "6"},
    {"input": "-5 -5\n", "output": "-10"},
]


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n```{lang}\n{code}\n```\nIt reads two integers."


def sample(answer: str, tests, thinking: str = "Plan the code.") -> Sample:
    completion = f"<think>\n{thinking}\n</think>\n\n{answer}"
    return Sample.from_completion(PROMPT, completion, metadata={"tests": tests})


@pytest.fixture(scope="module")
def reward() -> CodeReward:
    return CodeReward(sandbox={"wall_time_s": 2.0, "cpu_time_s": 1.0})


def test_extract_program_takes_the_last_python_block():
    answer = "```python\nprint(1)\n```\nBetter:\n```py\nprint(2)\n```\n```text\nout\n```"
    assert extract_program(answer) == "print(2)"
    assert extract_program("```\nprint(3)\n```") == "print(3)"
    assert extract_program("print(4)") == "print(4)"


def test_outputs_match_trims_whitespace_only():
    assert outputs_match("3  \n\n", "3")
    assert outputs_match("a \nb\n", "a\nb")
    assert not outputs_match("3 4", "3  4")
    assert not outputs_match("30", "3")


def test_correct_stdin_program_scores_one(reward):
    program = "a, b = map(int, input().split())\nprint(a + b)"
    result = reward.score(sample(fenced(program), SUM_TESTS))
    assert result.score == 1.0 and result.info == {"passed": 3, "total": 3}


def test_partial_credit_and_all_or_nothing(reward):
    # abs() breaks the two cases with a negative number: 1 of 3 passes
    program = "a, b = map(int, input().split())\nprint(abs(a) + abs(b))"
    result = reward.score(sample(fenced(program), SUM_TESTS))
    assert result.score == pytest.approx(1 / 3)
    assert [f["test"] for f in result.info["failures"]] == [1, 2]
    assert result.info["failures"][0] == {
        "test": 1,
        "reason": "wrong_output",
        "expected": "6",
        "got": "14\n",
    }
    strict = CodeReward(scoring="all", sandbox=reward.sandbox.config)
    result = strict.score(sample(fenced(program), SUM_TESTS))
    assert result.score == 0.0 and result.info["passed"] == 1 and len(result.info["failures"]) == 1


def test_assert_style_tests(reward):
    program = "def add(a, b):\n    return a + b"
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add('a', 'b') == 'ab'"]
    assert reward.score(sample(fenced(program), tests)).score == 1.0
    buggy = "def add(a, b):\n    return a + b if isinstance(a, str) else a - b"
    result = reward.score(sample(fenced(buggy), tests))  # only the str case passes
    assert result.score == pytest.approx(1 / 3)
    assert [f["test"] for f in result.info["failures"]] == [0, 1]
    # the program returned -1; the comparison with 3 happened here, outside the sandbox
    assert result.info["failures"][0] == {
        "test": 0,
        "reason": "wrong_result",
        "check": "assert add(1, 2) == 3",
        "got": {"add(1, 2)": "-1"},
    }
    script = "assert add(2, 2) == 4\nassert add(0, 0) == 0\n"
    assert reward.score(sample(fenced(program), script)).score == 1.0
    combined = CodeReward(scoring="all", sandbox=reward.sandbox.config)
    assert combined.score(sample(fenced(program), tests)).score == 1.0
    assert combined.score(sample(fenced(buggy), tests)).score == 0.0


@pytest.mark.parametrize(
    "exit_call", ["import sys; sys.exit(0)", "import os; os._exit(0)", "exit()"]
)
def test_exiting_before_the_tests_does_not_pass(reward, exit_call):
    program = f"def add(a, b):\n    return 0\n{exit_call}"
    result = reward.score(sample(fenced(program), ["assert add(1, 2) == 3"]))
    assert result.score == 0.0
    assert result.info["failures"][0]["reason"] == "exited_before_tests"


def test_only_the_answer_is_run(reward):
    good = "a, b = map(int, input().split())\nprint(a + b)"
    result = reward.score(sample("I give up.", SUM_TESTS, thinking=fenced(good)))
    assert result.score == 0.0  # 'I give up.' is the program: a syntax error
    assert reward.score(sample("", SUM_TESTS)).info["reason"] == "no_program"


def test_hostile_programs_score_zero_within_the_time_budget():
    reward = CodeReward(sandbox={"wall_time_s": 1.0, "cpu_time_s": 1.0}, time_budget_s=1.5)
    start = time.monotonic()
    result = reward.score(sample(fenced("import time\ntime.sleep(10)"), SUM_TESTS))
    elapsed = time.monotonic() - start
    # test 0 times out at 1 s; test 1 gets the 0.5 s left and times out; test 2 has no budget
    assert result.score == 0.0
    assert [f["reason"] for f in result.info["failures"]] == ["timeout", "timeout", "time_budget"]
    assert elapsed < 3
    bomb = "import os\nwhile True:\n    os.fork()"
    assert reward.score(sample(fenced(bomb), SUM_TESTS[:1])).score == 0.0


ATTACKS = {
    "infinite_loop": "while True:\n    pass",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "memory_bomb": "hog = [bytearray(64 << 20) for _ in range(64)]",
    "huge_output": "print('x' * (8 << 20))",
    "env_secret": "import os\nassert os.environ.get('LIT_QWEN3_TEST_SECRET') == 'hunter2'",
    "write_outside": "open('/etc/lit-qwen3-pwned', 'w').write('x')",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_score_zero_and_the_parent_is_unharmed(attack, monkeypatch):
    # Each program would pass its trivial test if the attack worked (or went unchecked).
    monkeypatch.setenv("LIT_QWEN3_TEST_SECRET", "hunter2")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    program = "def ok():\n    return 1\n" + ATTACKS[attack].format(port=server.getsockname()[1])
    reward = CodeReward(sandbox={"wall_time_s": 1.0, "cpu_time_s": 1.0, "memory_mb": 256})
    try:
        result = reward.score(sample(fenced(program), ["assert ok() == 1"]))
    finally:
        server.close()
    assert result.score == 0.0, result.info
    assert os.environ["LIT_QWEN3_TEST_SECRET"] == "hunter2"
    assert not os.path.exists("/etc/lit-qwen3-pwned")
    assert subprocess.run(["true"]).returncode == 0


@pytest.mark.parametrize(
    ("tests", "match"),
    [
        ([], r"metadata\['tests'\] must be a non-empty list"),
        ([{"in": "1", "out": "1"}], r"metadata\['tests'\]\[0\] must be an assert string or a dict"),
        ({"input": "1", "output": "1"}, r"must be a non-empty list"),
        ("   ", r"empty test script"),
    ],
)
def test_bad_tests_are_clear_errors(reward, tests, match):
    with pytest.raises(ValueError, match=match):
        reward.score(sample(fenced("print(1)"), tests))


def test_missing_tests_and_bad_options():
    with pytest.raises(
        ValueError, match=r"samples\[0\]: reward 'code' needs metadata key\(s\) \['tests'\]"
    ):
        CompositeReward([{"name": "code"}], num_workers=0).score_batch(
            [Sample.from_completion(PROMPT, "print(1)", metadata={"reference": "1"})]
        )
    with pytest.raises(ValueError, match="scoring must be 'fraction' or 'all'"):
        CodeReward(scoring="best")
    with pytest.raises(TypeError, match="unexpected keyword argument 'wall_time'"):
        CodeReward(sandbox={"wall_time": 1})


def test_code_in_worker_processes_next_to_math():
    good = fenced("a, b = map(int, input().split())\nprint(a + b)")
    samples = [
        sample(good, SUM_TESTS),
        sample(fenced("while True:\n    pass"), SUM_TESTS[:1]),
        Sample.from_completion(
            PROMPT, "<think>\nx\n</think>\n\n\\boxed{7}", metadata={"reference": 7}
        ),
    ]
    samples[0].metadata["rewards"] = samples[1].metadata["rewards"] = ["code"]
    samples[2].metadata["rewards"] = ["math"]
    specs = [
        {"name": "code", "kwargs": {"sandbox": {"wall_time_s": 1.0, "cpu_time_s": 1.0}}},
        {"name": "math"},
    ]
    with CompositeReward(specs, num_workers=2, timeout=20) as composite:
        results = composite.score_batch(samples)
    assert [r.score for r in results] == [1.0, 0.0, 1.0]
    assert results[1].info["details"]["code"]["failures"][0]["reason"] in (
        "killed_by_SIGXCPU",
        "timeout",
    )
    assert composite.error_counts == {"code": 0, "math": 0}
