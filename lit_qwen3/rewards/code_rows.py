"""The test formats of public code datasets, read into one shape for :mod:`~.code`.

A row's tests become a list of *tests*: a stdin/stdout case ``{"input": str, "output": str}``
or a tuple of :class:`~lit_qwen3.rewards.code_judge.Check` (one assert-style test). Formats:

- ``tests``: stdin/stdout cases, assert strings (one test each) or one test script;
  ``entry_point`` / ``fn_name`` and ``test_imports`` apply as for MBPP;
- MBPP: ``test_list`` (assert strings), ``test_imports`` (import lines; run before the program
  in the sandbox, as MBPP does, and known to the conditions); ``test_setup_code`` must be empty:
  setup code would run beside the program, and nothing shows it holds no expected value;
- HumanEval: ``test`` (``METADATA = ...`` and ``def check(candidate): assert ...``) with
  ``entry_point``: one test;
- APPS / LiveCodeBench: ``input_output`` (a JSON string or a dict) with ``inputs`` and
  ``outputs``: stdin/stdout cases, or, with ``fn_name``, calls ``fn_name(*inputs[i])`` (a method
  of ``Solution`` when the program's top level binds that name: the parent decides, since a
  test in the sandbox could be steered to a built-in of that name) whose value must equal ``outputs[i]``
  (tuples read as lists, a one-item list may hold the value, as APPS does).

Every error names the metadata key and, for code, the line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from lit_qwen3.rewards.code_checks import entry_points_of, parse_assert_tests
from lit_qwen3.rewards.code_judge import Check

__all__ = ["Test", "row_tests"]

Test = Mapping[str, str] | tuple[Check, ...]
FORMATS = "MBPP 'test_list', HumanEval 'test' + 'entry_point', or APPS 'input_output'"


def row_tests(metadata: Mapping[str, Any], where: str) -> list[Test]:
    """The row's tests in one shape; ``ValueError`` naming the key and line when they cannot
    be checked safely (see :mod:`~lit_qwen3.rewards.code_checks`)."""
    if metadata.get("tests") is not None:
        return _tests(metadata, f"{where}: metadata['tests']")
    if metadata.get("test_list") is not None:
        return _mbpp(metadata, f"{where}: metadata['test_list']")
    if metadata.get("test") is not None:
        return _humaneval(metadata, f"{where}: metadata['test']")
    if metadata.get("input_output") is not None:
        return _apps(metadata, f"{where}: metadata['input_output']")
    raise ValueError(
        f"{where} needs metadata key(s) ['tests'] (or {FORMATS}); the sample has {sorted(metadata)}"
    )


@functools.lru_cache(maxsize=4096)
def _parsed(text: str, where: str, entries: frozenset[str] | None, imports: str) -> Test:
    return tuple(parse_assert_tests(text, where, entry_points=entries, imports=imports))


def _entries(metadata: Mapping[str, Any], where: str) -> frozenset[str] | None:
    names = metadata.get("entry_point") or metadata.get("fn_name")
    if names is None:
        return None
    names = [names] if isinstance(names, str) else names
    if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise ValueError(f"{where}: 'entry_point' must be a name or a list of names, got {names!r}")
    return frozenset(names)


def _imports(metadata: Mapping[str, Any], where: str) -> str:
    imports = metadata.get("test_imports") or []
    imports = [imports] if isinstance(imports, str) else imports
    if not all(isinstance(line, str) for line in imports):
        raise ValueError(f"{where}: 'test_imports' must be a list of import lines")
    return "\n".join(imports)


def _asserts(texts: list[str], metadata: Mapping[str, Any], where: str) -> list[Test]:
    imports = _imports(metadata, where)
    entries = _entries(metadata, where)
    if entries is None:  # one name for the whole row: the function every test calls
        entries = entry_points_of(texts, where, imports, indexed=True)
    return [_parsed(text, f"{where}[{i}]", entries, imports) for i, text in enumerate(texts)]


def _tests(metadata: Mapping[str, Any], where: str) -> list[Test]:
    tests = metadata["tests"]
    if isinstance(tests, str):
        if not tests.strip():
            raise ValueError(f"{where} is an empty test script")
        entries = _entries(metadata, where)
        return [_parsed(tests, where, entries, _imports(metadata, where))]
    if not isinstance(tests, Sequence) or not tests:
        raise ValueError(
            f"{where} must be a non-empty list of {{'input', 'output'}} cases or assert "
            f"strings, or a test script; got {type(tests).__name__} {tests!r:.80}"
        )
    if all(isinstance(t, str) for t in tests):
        return _asserts(list(tests), metadata, where)
    if any(isinstance(t, str) for t in tests):
        raise ValueError(f"{where} mixes assert strings and stdin/stdout cases; use one kind")
    out: list[Test] = []
    for i, test in enumerate(tests):
        if _is_case(test):
            out.append(test)
        else:
            raise ValueError(
                f"{where}[{i}] must be an assert string or a dict with str 'input' and "
                f"'output', got {test!r:.80}"
            )
    return out


def _is_case(test: object) -> bool:
    return (
        isinstance(test, Mapping)
        and isinstance(test.get("input"), str)
        and isinstance(test.get("output"), str)
    )


def _mbpp(metadata: Mapping[str, Any], where: str) -> list[Test]:
    tests = metadata["test_list"]
    if not isinstance(tests, Sequence) or isinstance(tests, str) or not tests:
        raise ValueError(f"{where} must be a non-empty list of assert strings")
    if not all(isinstance(t, str) for t in tests):
        raise ValueError(f"{where} must hold assert strings only")
    setup = metadata.get("test_setup_code") or ""
    if not isinstance(setup, str) or setup.strip():
        raise ValueError(
            f"{where}: 'test_setup_code' is not empty ({str(setup)[:60]!r}); setup code would "
            "run beside the program, where nothing shows it holds no expected value"
        )
    return _asserts(list(tests), metadata, where)


def _humaneval(metadata: Mapping[str, Any], where: str) -> list[Test]:
    test = metadata["test"]
    entries = _entries(metadata, where)
    if not isinstance(test, str) or not test.strip():
        raise ValueError(f"{where} must be a non-empty str (HumanEval's check function)")
    if entries is None:
        raise ValueError(f"{where}: a HumanEval 'test' needs 'entry_point'")
    return [_parsed(test, where, entries, _imports(metadata, where))]


def _apps(metadata: Mapping[str, Any], where: str) -> list[Test]:
    spec = metadata["input_output"]
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError as err:
            raise ValueError(f"{where} is not JSON ({err})") from None
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a JSON object with 'inputs' and 'outputs'")
    inputs, outputs = spec.get("inputs"), spec.get("outputs")
    if not (isinstance(inputs, list) and isinstance(outputs, list) and inputs):
        raise ValueError(f"{where} needs non-empty lists 'inputs' and 'outputs'")
    if len(inputs) != len(outputs):
        raise ValueError(f"{where}: {len(inputs)} inputs but {len(outputs)} outputs")
    pairs = list(enumerate(zip(inputs, outputs, strict=True)))
    fn_name = spec.get("fn_name") or metadata.get("fn_name")
    if fn_name is None:
        return [_case(i, o, f"{where}[{n}]") for n, (i, o) in pairs]
    if not (isinstance(fn_name, str) and fn_name.isidentifier()):
        raise ValueError(f"{where}: 'fn_name' must be a name, got {fn_name!r}")
    return [_call_case(fn_name, i, o, f"{where}[{n}]") for n, (i, o) in pairs]


def _case(given: Any, expected: Any, where: str) -> Mapping[str, str]:
    """A stdin/stdout case; APPS sometimes gives the lines as a list."""
    text = [given, expected]
    for k, value in enumerate(text):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            text[k] = "\n".join(value)
        elif not isinstance(value, str):
            raise ValueError(f"{where}: stdin/stdout cases must be str, got {value!r:.60}")
    return {"input": text[0], "output": text[1]}


def _call_case(fn_name: str, args: Any, expected: Any, where: str) -> tuple[Check, ...]:
    """``fn_name(*args)`` in the sandbox; ``expected`` stays here."""
    if not isinstance(args, list):
        raise ValueError(f"{where}: the inputs of a call-based case must be a list of arguments")
    try:
        literal = ", ".join(repr(json.loads(json.dumps(a))) for a in args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: arguments are not JSON data ({err})") from None
    call = f"{fn_name}({literal})"  # Solution().{call} when the program defines Solution
    source = f"assert {call} == <expected>"
    expected = json.loads(json.dumps(expected))
    entries = (frozenset({fn_name, "Solution"}),)
    return (Check(source, None, (call,), (), {}, expected=expected, entries=entries),)
