"""Code answers run against test cases in the sandbox (:mod:`lit_qwen3.rewards.sandbox`).

``metadata["tests"]`` takes one of three forms:

- stdin/stdout cases ``[{"input": "1 2\\n", "output": "3"}]``: outputs are compared after
  trimming whitespace at the ends of lines and of the whole output;
- assert-style tests ``["assert add(1, 2) == 3", ...]``: each is appended to the program;
- one test script (a str), appended to the program.

A test passes when the program exits 0 within the limits (and, for stdin/stdout cases, prints
the expected output). For assert-style tests a random marker printed after the tests must appear
too, so a program that calls ``sys.exit(0)`` or ``os._exit(0)`` before the asserts fails.
A program that reads its own source to forge the marker is beyond this check.

The program is the last fenced Python block of the answer (```` ```python ````, ```` ```py ````
or a bare fence), or the whole answer when it has no fence.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward
from lit_qwen3.rewards.sandbox import Sandbox, SandboxConfig, SandboxResult

__all__ = ["CodeReward", "extract_program", "outputs_match"]

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_MAX_FAILURES_REPORTED = 5


def extract_program(answer: str) -> str:
    """The last fenced Python (or bare) code block of ``answer``, else ``answer`` itself."""
    blocks = [(lang, body) for lang, body in _FENCE.findall(answer)]
    python_blocks = [body for lang, body in blocks if lang]
    if python_blocks:
        return python_blocks[-1].strip("\n")
    if blocks:
        return blocks[-1][1].strip("\n")
    return answer.strip()


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def outputs_match(got: str, expected: str) -> bool:
    """Equal after trimming whitespace at line ends and around the whole output."""
    return _normalise(got) == _normalise(expected)


def _tail(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


@register_reward("code")
class CodeReward(Reward):
    """Fraction of tests passed (or 1/0 with ``scoring="all"``) by the answer's program.

    Args:
        scoring: ``"fraction"`` (passed / total) or ``"all"`` (1.0 only if every test passes;
            stops at the first failure and runs assert-style tests in one process).
        sandbox: :class:`~lit_qwen3.rewards.sandbox.SandboxConfig` or its fields as a dict
            (time, memory, process limits, ``network``).
        time_budget_s: wall-clock budget for all tests of one sample; tests left when it runs
            out fail with ``time_budget``. Keep it below the composite's ``timeout``.
        max_tests: run at most this many tests (the first ones); None runs all.

    Construction probes the sandbox, so a machine that cannot isolate fails at startup.
    """

    run_in_worker = True
    requires = ("tests",)

    def __init__(
        self,
        *,
        scoring: str = "fraction",
        sandbox: SandboxConfig | Mapping[str, Any] | None = None,
        time_budget_s: float = 8.0,
        max_tests: int | None = None,
    ) -> None:
        if scoring not in ("fraction", "all"):
            raise ValueError(f"scoring must be 'fraction' or 'all', got {scoring!r}")
        if not (isinstance(time_budget_s, (int, float)) and time_budget_s > 0):
            raise ValueError(f"time_budget_s must be > 0, got {time_budget_s!r}")
        if max_tests is not None and not (isinstance(max_tests, int) and max_tests > 0):
            raise ValueError(f"max_tests must be a positive int or None, got {max_tests!r}")
        if isinstance(sandbox, Mapping):
            sandbox = SandboxConfig(**dict(sandbox))
        self.scoring = scoring
        self.time_budget_s = float(time_budget_s)
        self.max_tests = max_tests
        self.sandbox = Sandbox(sandbox)
        self.sandbox.ensure_available()

    def check(self, sample: Sample) -> None:
        super().check(sample)
        tests = sample.metadata["tests"]
        where = f"reward {self.name!r}: metadata['tests']"
        if isinstance(tests, str):
            if not tests.strip():
                raise ValueError(f"{where} is an empty test script")
            return
        if not isinstance(tests, Sequence) or not tests:
            raise ValueError(
                f"{where} must be a non-empty list of {{'input', 'output'}} cases or assert "
                f"strings, or a test script; got {type(tests).__name__} {tests!r:.80}"
            )
        for i, test in enumerate(tests):
            if isinstance(test, str):
                continue
            if not (
                isinstance(test, Mapping)
                and isinstance(test.get("input"), str)
                and isinstance(test.get("output"), str)
            ):
                raise ValueError(
                    f"{where}[{i}] must be an assert string or a dict with str 'input' and "
                    f"'output', got {test!r:.80}"
                )

    def score(self, sample: Sample) -> RewardResult:
        self.check(sample)
        program = extract_program(sample.answer)
        if not program:
            return RewardResult(0.0, {"reason": "no_program", "passed": 0, "total": 0})
        tests = sample.metadata["tests"]
        tests = [tests] if isinstance(tests, str) else list(tests)
        if self.max_tests is not None:
            tests = tests[: self.max_tests]
        if self.scoring == "all" and all(isinstance(t, str) for t in tests):
            tests = ["\n".join(tests)]  # one process for the whole suite
        deadline = time.monotonic() + self.time_budget_s
        passed, failures = 0, []
        for index, test in enumerate(tests):
            left = deadline - time.monotonic()
            if left <= 0.05:
                failures.append({"test": index, "reason": "time_budget"})
                if self.scoring == "all":
                    break
                continue
            reason = self._run_test(program, test, left)
            if reason is None:
                passed += 1
                continue
            failures.append({"test": index, **reason})
            if self.scoring == "all":
                break
        total = len(tests)
        score = passed / total if self.scoring == "fraction" else float(passed == total)
        info: dict[str, Any] = {"passed": passed, "total": total}
        if failures:
            info["failures"] = failures[:_MAX_FAILURES_REPORTED]
        return RewardResult(score, info)

    def _run_test(self, program: str, test: str | Mapping[str, str], left: float) -> dict | None:
        """Run one test; ``None`` when it passes, else a dict saying why not."""
        wall = min(self.sandbox.config.wall_time_s, left)
        sandbox = Sandbox(self.sandbox.config, wall_time_s=wall)
        if isinstance(test, str):
            marker = f"lit-qwen3-tests-done-{secrets.token_hex(8)}"
            source = f"{program}\n\n{test}\n\nprint({marker!r})\n"
            result = sandbox.run_python(source)
            if not result.ok:
                return _failure(result)
            if not result.stdout.rstrip().endswith(marker):
                return {"reason": "exited_before_tests", "stdout": _tail(result.stdout)}
            return None
        result = sandbox.run_python(program, stdin=test["input"])
        if not result.ok:
            return _failure(result)
        if not outputs_match(result.stdout, test["output"]):
            return {
                "reason": "wrong_output",
                "expected": _tail(test["output"]),
                "got": _tail(result.stdout),
            }
        return None


def _failure(result: SandboxResult) -> dict:
    return {"reason": result.describe(), "stderr": _tail(result.stderr)}
