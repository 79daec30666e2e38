"""Assert-style code tests split in two: what the program computes, and what the parent checks.

``assert add(1, 2) == 3`` becomes a *probe*, ``add(1, 2)``, evaluated in the sandbox by
:mod:`lit_qwen3.rewards.code_runner`, and a *condition*, ``PROBE == 3``, evaluated here on the
plain value that came back. The expected value never enters the sandbox, and the comparison
runs on built-in types this module built itself (:func:`decode`), so neither an overloaded
``__eq__`` nor anything the program does to its own process can make a wrong answer pass.

A probe is the first node on the way down the assert's expression that mentions a name the test
does not know (the program's functions, classes, globals); its arguments are inputs and go along.
Above the probes the condition may use literals, containers, arithmetic, comparisons, ``and``/
``or``/``not``, subscripts, the built-ins in :data:`FUNCTIONS` and ``math`` (``import math`` or
``from math import isclose`` at the top of a test). Anything else (loops, helper functions,
comprehensions, ``numpy`` in the test) cannot be checked outside the sandbox and is rejected
with an error naming the test and line.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FUNCTIONS",
    "Check",
    "CheckFailed",
    "ProbeError",
    "decode",
    "evaluate",
    "parse_assert_tests",
    "read_results",
]

#: Built-ins a condition may call (on plain data, in the parent).
FUNCTIONS: dict[str, Callable] = {
    name: getattr(builtins, name)
    for name in (
        "abs all any bool bytes complex dict divmod float frozenset int isinstance len list max "
        "min repr reversed round set sorted str sum tuple type"
    ).split()
}
_MATH = {
    name: getattr(math, name)
    for name in (
        "isclose sqrt floor ceil fabs isnan isinf isfinite gcd log log2 log10 exp pi e inf nan tau"
    ).split()
}
_KEYWORDS = {"sorted": {"reverse"}, "isclose": {"rel_tol", "abs_tol"}, "round": set()}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
          ast.Invert: operator.invert}  # fmt: skip
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_MAX_DEPTH = 64


class CheckFailed(Exception):
    """A condition could not be evaluated on the returned values (counts as a failed check)."""


@dataclass(frozen=True)
class Check:
    """One assert: its source, its condition tree and the probes it needs, in order."""

    source: str
    condition: ast.expr
    probes: tuple[str, ...]
    """Source of each expression the sandbox evaluates, in order."""
    probe_nodes: tuple[int, ...] = field(repr=False)
    """``id()`` of each probe's node inside ``condition`` (kept alive by it)."""
    names: dict[str, object] = field(repr=False, compare=False)
    """What the test imported from ``math``."""


def parse_assert_tests(text: str, where: str) -> list[Check]:
    """Parse assert statements (``import math`` lines allowed) into checks; ``where`` names the
    test in error messages (``"metadata['tests'][2]"``)."""
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise ValueError(f"{where} line {err.lineno}: not valid Python ({err.msg})") from None
    math_names: dict[str, object] = {}
    checks = []
    for statement in tree.body:
        line = f"{where} line {statement.lineno}"
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.name != "math":
                    raise ValueError(f"{line}: only 'math' can be imported by a test")
                math_names[alias.asname or "math"] = _MATH
        elif isinstance(statement, ast.ImportFrom):
            if statement.module != "math":
                raise ValueError(f"{line}: only 'math' can be imported by a test")
            for alias in statement.names:
                if alias.name not in _MATH:
                    raise ValueError(f"{line}: math.{alias.name} is not supported in tests")
                math_names[alias.asname or alias.name] = _MATH[alias.name]
        elif isinstance(statement, ast.Assert):
            probes: list[ast.expr] = []
            _split(statement.test, probes, math_names, line)
            checks.append(
                Check(
                    source=ast.unparse(statement),
                    condition=statement.test,
                    probes=tuple(ast.unparse(p) for p in probes),
                    probe_nodes=tuple(id(p) for p in probes),
                    names=dict(math_names),
                )
            )
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring or a bare string
        elif isinstance(statement, ast.Pass):
            continue
        else:
            raise ValueError(
                f"{line}: only assert statements (and 'import math') can be checked outside the "
                f"sandbox; got {type(statement).__name__}: {ast.unparse(statement)[:80]!r}"
            )
    if not checks:
        raise ValueError(f"{where} has no assert statement")
    return checks


def _split(node: ast.expr, probes: list[ast.expr], names: dict, line: str) -> None:
    """Walk the condition: collect probes, reject what the parent cannot evaluate."""
    if not _mentions_program(node, names):
        _check_parent_side(node, names, line)
        return
    if isinstance(node, ast.Call):
        function = _parent_function(node.func, names)
        if function is None:
            probes.append(node)
            return
        allowed = _KEYWORDS.get(_function_name(node.func), set())
        for keyword in node.keywords:
            if keyword.arg not in allowed:
                raise ValueError(f"{line}: keyword {keyword.arg!r} is not supported here")
            _split(keyword.value, probes, names, line)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise ValueError(f"{line}: *args is not supported in a test condition")
            _split(arg, probes, names, line)
        return
    if isinstance(node, (ast.Name, ast.Attribute)):
        probes.append(node)
        return
    if isinstance(node, ast.Subscript):
        if not _mentions_program(node.value, names):  # literal[program_value]
            _split(node.value, probes, names, line)
            _split(node.slice, probes, names, line)
            return
        if _is_probe_chain(node.value, names):
            probes.append(node)  # f(x)[0]: the whole chain runs in the sandbox
            return
    for child in _children(node, line):
        _split(child, probes, names, line)


def _is_probe_chain(node: ast.expr, names: dict) -> bool:
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Call) and _parent_function(node.func, names) is not None:
            return False
        node = node.func if isinstance(node, ast.Call) else node.value
    return isinstance(node, ast.Name) and _is_program_name(node.id, names)


def _children(node: ast.expr, line: str) -> list[ast.expr]:
    if isinstance(node, (ast.BinOp)):
        if type(node.op) not in _BINARY:
            raise ValueError(f"{line}: operator {type(node.op).__name__} is not supported")
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    if isinstance(node, ast.BoolOp):
        return list(node.values)
    if isinstance(node, ast.Compare):
        return [node.left, *node.comparators]
    if isinstance(node, ast.IfExp):
        return [node.test, node.body, node.orelse]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        if any(isinstance(e, ast.Starred) for e in node.elts):
            raise ValueError(f"{line}: starred items are not supported in a test condition")
        return list(node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError(f"{line}: ** in a dict is not supported in a test condition")
        return [*node.keys, *node.values]  # type: ignore[list-item]
    if isinstance(node, ast.Subscript):
        return [node.value, node.slice]
    if isinstance(node, ast.Slice):
        return [p for p in (node.lower, node.upper, node.step) if p is not None]
    if isinstance(node, ast.Constant):
        return []
    raise ValueError(
        f"{line}: {type(node).__name__} ({ast.unparse(node)[:60]!r}) cannot be checked outside "
        "the sandbox; write the test as assert <call> == <value>"
    )


def _check_parent_side(node: ast.expr, names: dict, line: str) -> None:
    """A subtree without program names: every part must be evaluable here."""
    if isinstance(node, ast.Name):
        if node.id not in FUNCTIONS and node.id not in names:
            raise ValueError(f"{line}: name {node.id!r} is not supported in a test condition")
        return
    if isinstance(node, ast.Attribute):
        if _math_value(node, names) is None:
            raise ValueError(f"{line}: {ast.unparse(node)!r} is not supported in a test")
        return
    if isinstance(node, ast.Call):
        if _parent_function(node.func, names) is None:
            raise ValueError(f"{line}: calling {ast.unparse(node.func)!r} is not supported here")
        allowed = _KEYWORDS.get(_function_name(node.func), set())
        for keyword in node.keywords:
            if keyword.arg not in allowed:
                raise ValueError(f"{line}: keyword {keyword.arg!r} is not supported here")
            _check_parent_side(keyword.value, names, line)
        for arg in node.args:
            _check_parent_side(arg, names, line)
        return
    for child in _children(node, line):
        _check_parent_side(child, names, line)


def _mentions_program(node: ast.expr, names: dict) -> bool:
    return any(isinstance(n, ast.Name) and _is_program_name(n.id, names) for n in ast.walk(node))


def _is_program_name(name: str, names: dict) -> bool:
    return name not in FUNCTIONS and name not in names and not hasattr(builtins, name)


def _function_name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _parent_function(func: ast.expr, names: dict) -> Callable | None:
    if isinstance(func, ast.Name):
        value = FUNCTIONS.get(func.id) or names.get(func.id)
        return value if callable(value) else None
    value = _math_value(func, names)
    return value if callable(value) else None


def _math_value(node: ast.expr, names: dict) -> object | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and names.get(node.value.id) is _MATH
    ):
        return _MATH.get(node.attr)
    return None


# -- evaluation in the parent ----------------------------------------------------------------


def evaluate(check: Check, values: list[Any]) -> bool:
    """Truth of ``check``'s condition with its probes replaced by ``values`` (decoded data).
    Raises :class:`CheckFailed` when the condition itself fails (a ``TypeError`` comparing a
    string with a number, a probe that raised), as the assert would in Python."""
    table = dict(zip(check.probe_nodes, values, strict=True))
    try:
        return bool(_eval(check.condition, table, check.names))
    except CheckFailed:
        raise
    except Exception as err:  # noqa: BLE001 - any error of the condition fails the check
        raise CheckFailed(f"{type(err).__name__}: {err}"[:300]) from None


class ProbeError:
    """A probe that raised in the sandbox; using its value fails the check."""

    def __init__(self, message: str) -> None:
        self.message = message


def _eval(node: ast.expr, table: dict[int, Any], names: dict) -> Any:
    if id(node) in table:
        value = table[id(node)]
        if isinstance(value, ProbeError):
            raise CheckFailed(value.message)
        return value
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return FUNCTIONS.get(node.id, names.get(node.id))
    if isinstance(node, ast.Attribute):
        return _math_value(node, names)
    if isinstance(node, ast.BoolOp):
        result = None
        for value_node in node.values:
            result = _eval(value_node, table, names)
            if isinstance(node.op, ast.And) != bool(result):
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, table, names))
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, table, names), _eval(node.right, table, names)
        _guard_size(type(node.op), left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, table, names)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, table, names)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        test = _eval(node.test, table, names)
        return _eval(node.body if test else node.orelse, table, names)
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, table, names) for e in node.elts)
    if isinstance(node, ast.List):
        return [_eval(e, table, names) for e in node.elts]
    if isinstance(node, ast.Set):
        return {_eval(e, table, names) for e in node.elts}
    if isinstance(node, ast.Dict):
        return {
            _eval(k, table, names): _eval(v, table, names)
            for k, v in zip(node.keys, node.values, strict=True)  # type: ignore[arg-type]
        }
    if isinstance(node, ast.Subscript):
        return _eval(node.value, table, names)[_eval(node.slice, table, names)]
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else _eval(p, table, names) for p in parts))
    if isinstance(node, ast.Call):
        function = _parent_function(node.func, names)
        args = [_eval(a, table, names) for a in node.args]
        kwargs = {k.arg: _eval(k.value, table, names) for k in node.keywords}
        return function(*args, **kwargs)  # type: ignore[misc]
    raise CheckFailed(f"cannot evaluate {type(node).__name__}")


def _guard_size(op: type, left: Any, right: Any) -> None:
    """Refuse arithmetic on returned values that would take the parent's memory or time."""
    if op is ast.Pow and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and abs(right) * max(abs(left).bit_length(), 1) > 1_000_000:
            raise CheckFailed("power too large to evaluate")
    if op is ast.Mult:
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                if len(seq) * count > 10_000_000:
                    raise CheckFailed("repetition too large to evaluate")


# -- decoding what the runner sent -----------------------------------------------------------


def decode(value: Any, depth: int = 0) -> Any:
    """Build built-in objects from :func:`lit_qwen3.rewards.code_runner.encode`'s JSON.
    Raises ``ValueError`` for anything that is not that encoding."""
    if depth > _MAX_DEPTH:
        raise ValueError("result nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(item, depth + 1) for item in value]
    if not (isinstance(value, dict) and len(value) == 1):
        raise ValueError(f"not an encoded value: {str(value)[:60]}")
    ((tag, payload),) = value.items()
    if tag in ("tuple", "set", "frozenset", "iter") and isinstance(payload, list):
        items = [decode(item, depth + 1) for item in payload]
        return iter(items) if tag == "iter" else {"tuple": tuple, "set": set,
                                                   "frozenset": frozenset}[tag](items)  # fmt: skip
    if tag == "dict" and isinstance(payload, list):
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in payload):
            raise ValueError("malformed dict")
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in payload}
    if tag == "int" and isinstance(payload, str):
        return int(payload)
    if tag == "float" and payload in ("nan", "inf", "-inf"):
        return float(payload)
    if tag == "bytes" and isinstance(payload, str):
        return bytes.fromhex(payload)
    if tag == "complex" and isinstance(payload, list) and len(payload) == 2:
        real, imag = (decode(p, depth + 1) for p in payload)
        if not all(isinstance(p, float) for p in (real, imag)):
            raise ValueError("malformed complex")
        return complex(real, imag)
    raise ValueError(f"unknown tag {tag!r}")


def read_results(data: bytes, count: int) -> list[Any] | str:
    """The ``count`` probe values (or :class:`ProbeError`) from the runner's JSON lines, or a
    string saying why they cannot be trusted as a complete, well-formed answer."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    values: list[Any] = []
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as err:
            return f"result line {number} is not JSON ({str(err)[:80]})"
        if not isinstance(record, dict):
            return f"result line {number} is not a record"
        if number == count:
            if record != {"done": count} or number != len(lines) - 1:
                return f"result line {number}: expected the end of the results"
            return values
        if record.get("probe") != number or set(record) not in ({"probe", "value"},
                                                                {"probe", "error"}):  # fmt: skip
            return f"result line {number} is not the result of probe {number}"
        if "error" in record:
            values.append(ProbeError(f"raised {str(record['error'])[:300]}"))
            continue
        try:
            values.append(decode(record["value"]))
        except (ValueError, TypeError, RecursionError) as err:
            values.append(ProbeError(f"unreadable result ({str(err)[:80]})"))
    return "the results end early: the program exited before the tests finished"
