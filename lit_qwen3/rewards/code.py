"""Code answers run against test cases in the sandbox (:mod:`lit_qwen3.rewards.sandbox`).

The tests come in the formats of :mod:`lit_qwen3.rewards.code_rows` (``tests``; MBPP,
HumanEval and APPS rows as published):

- stdin/stdout cases ``[{"input": "1 2\\n", "output": "3"}]``: the program runs with the input
  on stdin; its stdout is compared here, after trimming whitespace at the ends of lines and of
  the whole output;
- assert-style tests ``["assert add(1, 2) == 3", ...]``: each string is one test;
- one test script (a str, or a HumanEval ``check`` function): one test that passes when all of
  its asserts do; call-based APPS cases are one test each.

Assert-style tests never run in the sandbox. :mod:`lit_qwen3.rewards.code_checks` splits each
assert into the expressions that call the program (``add(1, 2)``) and the condition around them
(``... == 3``). The sandbox runs the program and the expressions
(:mod:`lit_qwen3.rewards.code_runner`) and sends their values back as JSON on a pipe of their
own; this process decodes them into built-in types and evaluates the conditions, within size
limits (:mod:`lit_qwen3.rewards.code_judge`). Expected values
stay here, so a program cannot print a completion marker, exit early, patch ``json``, overload
``__eq__`` or read its harness files to pass: it has to return the right values. A test passes
when the program ran to the end within the limits (exit 0), binds every entry point its
expressions call at its top level (a task named ``sorted`` is not answered by the built-in),
every expression returned, and every condition holds.

The program is the last fenced Python block of the answer (```` ```python ````, ```` ```py ````
or a bare fence), or the whole answer when it has no fence.
"""

from __future__ import annotations

import json
import re
import reprlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward
from lit_qwen3.rewards.code_checks import program_names
from lit_qwen3.rewards.code_judge import Check, CheckFailed, ProbeError, evaluate, read_results
from lit_qwen3.rewards.code_rows import Test, row_tests
from lit_qwen3.rewards.sandbox import Sandbox, SandboxConfig, SandboxResult

__all__ = ["CodeReward", "extract_program", "outputs_match"]

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_MAX_FAILURES_REPORTED = 5
_RUNNER = (Path(__file__).parent / "code_runner.py").read_text()
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 120


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
    Assert tests that cannot be checked outside the sandbox (see
    :mod:`lit_qwen3.rewards.code_checks`) are a data error, raised by :meth:`check`.
    """

    run_in_worker = True

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
        self.python = self.sandbox.ensure_available()

    def check(self, sample: Sample) -> None:
        super().check(sample)
        self._tests(sample)

    def _tests(self, sample: Sample) -> list[Test]:
        """The sample's tests: stdin/stdout dicts and parsed assert tests (clear errors)."""
        return row_tests(sample.metadata, f"reward {self.name!r}")

    def score(self, sample: Sample) -> RewardResult:
        super().check(sample)
        tests = self._tests(sample)
        program = extract_program(sample.answer)
        if not program:
            return RewardResult(0.0, {"reason": "no_program", "passed": 0, "total": 0})
        if self.max_tests is not None:
            tests = tests[: self.max_tests]
        total = len(tests)
        # one process for the whole suite: ("all" scoring of assert tests)
        groups = (
            [tests]
            if self.scoring == "all" and all(isinstance(t, tuple) for t in tests)
            else [[t] for t in tests]
        )
        deadline = time.monotonic() + self.time_budget_s
        passed, failures, index = 0, [], 0
        for group in groups:
            left = deadline - time.monotonic()
            if left <= 0.05:
                reasons = [{"reason": "time_budget"}] * len(group)
            elif isinstance(group[0], tuple):
                reasons = self._run_asserts(program, group, left)  # type: ignore[arg-type]
            else:
                reasons = [self._run_io(program, group[0], left)]  # type: ignore[arg-type]
            for reason in reasons:
                if reason is None:
                    passed += 1
                else:
                    failures.append({"test": index, **reason})
                index += 1
            if failures and self.scoring == "all":
                break
        score = passed / total if self.scoring == "fraction" else float(passed == total)
        info: dict[str, Any] = {"passed": passed, "total": total}
        if failures:
            info["failures"] = failures[:_MAX_FAILURES_REPORTED]
        return RewardResult(score, info)

    def _run_io(self, program: str, test: Mapping[str, str], left: float) -> dict | None:
        """One stdin/stdout case; ``None`` when it passes, else a dict saying why not."""
        wall = min(self.sandbox.config.wall_time_s, left)
        result = self.sandbox.run_python(program, stdin=test["input"], timeout=wall)
        if not result.ok:
            return _failure(result)
        if not outputs_match(result.stdout, test["output"]):
            return {
                "reason": "wrong_output",
                "expected": _tail(test["output"]),
                "got": _tail(result.stdout),
            }
        return None

    def _run_asserts(
        self, program: str, tests: list[tuple[Check, ...]], left: float
    ) -> list[dict | None]:
        """Assert tests in one sandbox run: the program evaluates the probes, we check."""
        defined = program_names(program)
        probes = [
            _probe_for(check, probe, defined)
            for checks in tests
            for check in checks
            for probe in check.probes
        ]
        prelude = "\n".join(
            dict.fromkeys(c.prelude for checks in tests for c in checks if c.prelude)
        )
        wall = min(self.sandbox.config.wall_time_s, left)
        result = self.sandbox.run(
            [self.python, "-I", "runner.py"],
            files={
                "runner.py": _RUNNER,
                "solution.py": program,
                "probes.json": json.dumps([prelude, probes]),
            },
            timeout=wall,
            results_fd=True,
        )
        if not result.ok:
            return [_failure(result)] * len(tests)
        values = read_results(result.results or b"", len(probes))
        if isinstance(values, str):
            reason = {"reason": "exited_before_tests", "detail": values}
            return [{**reason, "stderr": _tail(result.stderr)}] * len(tests)
        reasons: list[dict | None] = []
        position = 0
        for checks in tests:
            reason = None
            for check in checks:
                mine = values[position : position + len(check.probes)]
                position += len(check.probes)
                missing = sorted(min(names) for names in check.entries if not names & defined)
                if reason is None and missing:
                    reason = {"reason": "not_defined", "check": _tail(check.source, 200),
                              "names": missing}  # fmt: skip
                if reason is None:
                    reason = _judge(check, mine)
            reasons.append(reason)
        return reasons


def _shown(value: Any) -> str:
    """A short repr of a returned value for the info dict, never raising or running long."""
    if isinstance(value, ProbeError):
        return value.message
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):  # an int past Python's decimal-conversion cap
        return f"<{type(value).__name__} too large to show>"


def _probe_for(check: Check, probe: str, defined: frozenset[str]) -> str:
    """A call-based APPS case calls ``Solution().fn`` when the program binds ``Solution``."""
    return f"Solution().{probe}" if check.condition is None and "Solution" in defined else probe


def _judge(check: Check, values: list[Any]) -> dict | None:
    """``None`` when ``check`` holds for the returned ``values``, else why not."""
    try:
        if evaluate(check, values):
            return None
        shown = {
            probe: _tail(_shown(value), 120)
            for probe, value in zip(check.probes, values, strict=True)
        }
        return {"reason": "wrong_result", "check": _tail(check.source, 200), "got": shown}
    except CheckFailed as err:
        return {"reason": "check_error", "check": _tail(check.source, 200), "error": str(err)}


def _failure(result: SandboxResult) -> dict:
    return {"reason": result.describe(), "stderr": _tail(result.stderr)}
