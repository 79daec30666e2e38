"""The parent's side of assert-style code tests: decoding what the sandbox sent, then judging.

The values decoded here are built by this module from JSON (:func:`decode`), so every object
the conditions touch is a genuine built-in (or ``Fraction``, ``Decimal``, ``Counter``, numpy
array the condition itself made). They still come from the program, which chooses them to hurt:
a set of 100 000 integers that all hash alike takes minutes to build, ``bytes(10**12)`` or
``'%*d' % (10**9, 1)`` take the memory, ``str.replace`` multiplies sizes. Every operation that
can grow or slow with a returned value is bounded here (:data:`LIMITS`), and the CPython
operations that cannot be interrupted are only reached on bounded inputs, so one result costs
this process at most a bounded time.
"""

from __future__ import annotations

import ast
import builtins
import cmath
import collections
import decimal
import fractions
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FUNCTIONS",
    "LIMITS",
    "METHODS",
    "MODULES",
    "Check",
    "CheckFailed",
    "Module",
    "ProbeError",
    "check_hashes",
    "decode",
    "evaluate",
    "read_results",
]

#: Sizes a returned value (or anything a condition builds from one) may reach in the parent.
LIMITS = {
    "nodes": 200_000,  # items in one decoded value, all levels together
    "depth": 64,
    "int_digits": 5_000,
    "text": 10_000_000,  # characters of a string or bytes built by a condition
    "same_hash": 16,  # set/dict items sharing one hash value (collision attacks)
    "pow_bits": 1_000_000,
}


class CheckFailed(Exception):
    """A condition could not be evaluated on the returned values (counts as a failed check)."""


class ProbeError:
    """A probe that raised in the sandbox; using its value fails the check."""

    def __init__(self, message: str) -> None:
        self.message = message


@dataclass(frozen=True)
class Check:
    """One assert: its source, its condition tree and the probes it needs, in order."""

    source: str
    condition: ast.expr | None
    probes: tuple[str, ...]
    """Source of each expression the sandbox evaluates (calls of the program), in order."""
    probe_nodes: tuple[int, ...] = field(repr=False)
    """``id()`` of each probe's node inside ``condition`` (kept alive by it)."""
    names: dict[str, object] = field(repr=False, compare=False)
    """What the condition's names mean here (built-ins, supported modules and their names)."""
    expected: Any = field(default=None, repr=False, compare=False)
    """Call-based rows (APPS ``fn_name``): no condition, the one probe must equal this."""
    prelude: str = field(default="", compare=False)
    """The test's import statements, run in the sandbox before the program (as MBPP does)."""
    entries: tuple[frozenset[str], ...] = field(default=(), compare=False)
    """Names the program must define for the probes to be its own: one of each set (a task
    named ``sorted`` must not be answered by the built-in)."""


class Module(dict):
    """A module as a condition sees it: only the names the parent supports."""


# -- bounded helpers the conditions call -----------------------------------------------------


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, bytearray)) else 0


def _bounded_count(n: Any) -> Any:
    if isinstance(n, int) and abs(n) > LIMITS["text"]:
        raise CheckFailed("size too large to evaluate")
    return n


def check_hashes(items: Any) -> None:
    """Refuse a collection with many distinct items of one hash: building a set or dict of them
    takes quadratic, uninterruptible time (equal items are cheap and allowed)."""
    items = list(items)
    if len(items) <= LIMITS["same_hash"]:
        return
    buckets: dict[int, list] = {}
    for item in items:
        bucket = buckets.setdefault(hash(item), [])
        if not any(item is seen or item == seen for seen in bucket):
            bucket.append(item)
            if len(bucket) > LIMITS["same_hash"]:
                raise CheckFailed("too many distinct items with the same hash")


def _guard_call(function: object, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    """``args`` (an iterable materialised) once ``function`` may safely take them."""
    if function is round:  # round(5, -10**18) computes 10**(10**18)
        digits = args[1] if len(args) > 1 else kwargs.get("ndigits")
        if isinstance(digits, int) and abs(digits) > 10_000:
            raise CheckFailed("round() to that many digits is refused")
    if function is sum and len(args) > 1 and not isinstance(args[1], _NUMBERS + (complex,)):
        raise CheckFailed("sum() of sequences is refused (quadratic)")
    if function is sum and args and isinstance(args[0], (list, tuple)) and len(args[0]) > 1000:
        if any(isinstance(item, fractions.Fraction) for item in args[0]):
            raise CheckFailed("sum() of that many fractions is refused (denominators grow)")
    if function in _EXACT and args and isinstance(args[0], decimal.Decimal):
        if args[0].is_finite() and abs(args[0].adjusted()) > 10_000:
            raise CheckFailed("an exact value of that decimal is refused (too many digits)")
    if function is fractions.Fraction and args and isinstance(args[0], str):
        if "e" in args[0].lower():
            raise CheckFailed("Fraction() of a text with an exponent is refused")
    if not args:
        return args
    first = args[0]
    if function is bytes and isinstance(first, int):
        _bounded_count(first)
    elif function in _NUMBERS and _text_len(first) > LIMITS["int_digits"]:
        raise CheckFailed(f"{getattr(function, '__name__', 'number')}() of a long text is refused")
    elif function in _HASHING and not isinstance(first, (str, bytes, dict)):
        items = list(first)
        pairs = function in (dict, collections.OrderedDict)
        check_hashes([item[0] for item in items] if pairs else items)
        return [items, *args[1:]]
    return args


_NUMBERS = (int, float, fractions.Fraction, decimal.Decimal)
#: Functions that turn a Decimal into an exact integer or fraction (10**exponent digits).
_EXACT = (int, round, fractions.Fraction, math.floor, math.ceil, math.trunc)
_HASHING = (set, frozenset, dict, collections.Counter, collections.OrderedDict)


class _Approx:
    """``pytest.approx`` for numbers and flat sequences/dicts of them, in the parent."""

    def __init__(self, expected: Any, rel: float | None = None, abs: float | None = None):
        self.expected, self.rel, self.abs = expected, rel, abs

    def _close(self, got: Any, want: Any) -> bool:
        if isinstance(want, (list, tuple)):
            return isinstance(got, (list, tuple)) and len(got) == len(want) and all(
                self._close(g, w) for g, w in zip(got, want, strict=True))  # fmt: skip
        if isinstance(want, dict):
            return isinstance(got, dict) and got.keys() == want.keys() and all(
                self._close(got[k], want[k]) for k in want)  # fmt: skip
        if isinstance(want, bool) or not isinstance(want, (int, float, complex)):
            return got == want
        if isinstance(got, bool) or not isinstance(got, (int, float, complex)):
            return False
        rel = 1e-6 if self.rel is None else self.rel
        absolute = 1e-12 if self.abs is None else self.abs
        return cmath.isclose(got, want, rel_tol=rel, abs_tol=absolute)

    def __eq__(self, other: object) -> bool:
        return self._close(other, self.expected)

    __hash__ = None  # type: ignore[assignment]


_BUILTINS = "abs all any bool complex divmod float isinstance len list max min repr reversed "
_BUILTINS += "round sorted str sum tuple type bytes int float set frozenset dict"
#: Built-ins a condition may call (on plain data, in the parent); sizes guarded where needed.
FUNCTIONS: dict[str, Callable] = {name: getattr(builtins, name) for name in _BUILTINS.split()}
#: Modules a test may use in its conditions, with what of them the parent supports.
MODULES: dict[str, Module] = {
    "math": Module(
        {
            name: getattr(math, name)
            for name in (
                "isclose sqrt floor ceil fabs isnan isinf isfinite gcd log log2 log10 exp pi e inf "
                "nan tau trunc copysign hypot fsum"
            ).split()
        }
    ),
    "cmath": Module(
        {
            name: getattr(cmath, name)
            for name in "isclose phase polar rect sqrt exp log pi e inf nan isnan isinf".split()
        }
    ),
    "fractions": Module(Fraction=fractions.Fraction),
    "decimal": Module(Decimal=decimal.Decimal),
    "collections": Module(
        Counter=collections.Counter, OrderedDict=collections.OrderedDict, deque=collections.deque
    ),
    "pytest": Module(approx=_Approx),
}
try:  # numpy comparisons are evaluated here too, on decoded values, where numpy is installed
    import numpy

    MODULES["numpy"] = Module(
        {
            name: getattr(numpy, name)
            for name in "allclose isclose array_equal array_equiv array asarray all any".split()
        }
    )
except ImportError:  # pragma: no cover - numpy is a dependency
    numpy = None  # type: ignore[assignment]

#: Methods a condition may call on a value (pure, and bounded by the value's size).
METHODS = frozenset(
    (
        "startswith endswith lower upper strip lstrip rstrip split rsplit splitlines count find "
        "rfind index isdigit isalpha isalnum isspace islower isupper istitle isdecimal isnumeric "
        "title capitalize casefold swapcase replace join encode decode keys values items get "
        "issubset issuperset isdisjoint union intersection difference symmetric_difference copy "
        "most_common total all any tolist item conjugate is_integer ljust rjust center "
        "zfill"
    ).split()
)
ATTRIBUTES = frozenset("real imag numerator denominator shape ndim size dtype".split())
_WIDTH_METHODS = frozenset("ljust rjust center zfill".split())

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


# -- evaluation in the parent ----------------------------------------------------------------


def evaluate(check: Check, values: list[Any]) -> bool:
    """Truth of ``check``'s condition with its probes replaced by ``values`` (decoded data).
    Raises :class:`CheckFailed` when the condition itself fails (a ``TypeError`` comparing a
    string with a number, a probe that raised, a value too large), as the assert would."""
    try:
        if check.condition is None:
            return _matches_expected(_value(values[0]), check.expected)
        table = dict(zip(check.probe_nodes, values, strict=True))
        return bool(_eval(check.condition, table, check.names))
    except CheckFailed:
        raise
    except Exception as err:  # noqa: BLE001 - any error of the condition fails the check
        try:
            message = f"{type(err).__name__}: {err}"[:300]
        except Exception:  # noqa: BLE001 - KeyError(<an int too long to print>)
            message = type(err).__name__
        raise CheckFailed(message) from None


def _value(value: Any) -> Any:
    if isinstance(value, ProbeError):
        raise CheckFailed(value.message)
    return value


def _listed(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_listed(v) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


def _matches_expected(got: Any, expected: Any) -> bool:
    """APPS' rule for call-based rows: tuples read as lists; ``[got]`` may match too."""
    got = _listed(got)
    return got == expected or (isinstance(expected, list) and [got] == expected)


def _eval(node: ast.expr, table: dict[int, Any], names: dict) -> Any:
    if id(node) in table:
        return _value(table[id(node)])
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.Attribute):
        owner = _eval(node.value, table, names)
        if isinstance(owner, Module):
            return owner[node.attr]  # a module's supported name
        if node.attr not in ATTRIBUTES:
            raise CheckFailed(f"attribute {node.attr!r} is not supported")
        return getattr(owner, node.attr)
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
        return _compare(node, table, names, elementwise=False)
    if isinstance(node, ast.IfExp):
        test = _eval(node.test, table, names)
        return _eval(node.body if test else node.orelse, table, names)
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, table, names) for e in node.elts)
    if isinstance(node, ast.List):
        return [_eval(e, table, names) for e in node.elts]
    if isinstance(node, ast.Set):
        items = [_eval(e, table, names) for e in node.elts]
        check_hashes(items)
        return set(items)
    if isinstance(node, ast.Dict):
        keys = [_eval(k, table, names) for k in node.keys]  # type: ignore[arg-type]
        check_hashes(keys)
        return dict(zip(keys, (_eval(v, table, names) for v in node.values), strict=True))
    if isinstance(node, ast.Subscript):
        return _eval(node.value, table, names)[_eval(node.slice, table, names)]
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else _eval(p, table, names) for p in parts))
    if isinstance(node, ast.Call):
        return _call(node, table, names)
    raise CheckFailed(f"cannot evaluate {type(node).__name__}")


def _compare(node: ast.Compare, table: dict, names: dict, *, elementwise: bool) -> Any:
    left = _eval(node.left, table, names)
    if elementwise:  # (f(x) == expected).all(): numpy semantics on decoded lists
        if numpy is None or len(node.ops) != 1:
            raise CheckFailed("element-wise comparison needs numpy and one operator")
        right = _eval(node.comparators[0], table, names)
        return _COMPARE[type(node.ops[0])](numpy.asarray(left), numpy.asarray(right))
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _eval(right_node, table, names)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True


def _call(node: ast.Call, table: dict, names: dict) -> Any:
    kwargs = {k.arg: _eval(k.value, table, names) for k in node.keywords}
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr not in _module_names(func.value, names):
        if func.attr not in METHODS:
            raise CheckFailed(f"method {func.attr!r} is not supported")
        if isinstance(func.value, ast.Compare) and func.attr in ("all", "any"):
            owner = _compare(func.value, table, names, elementwise=True)
        else:
            owner = _eval(func.value, table, names)
        args = [_eval(a, table, names) for a in node.args]
        _guard_method(func.attr, owner, args)
        return getattr(owner, func.attr)(*args, **kwargs)
    function = _eval(func, table, names)
    args = _guard_call(function, [_eval(a, table, names) for a in node.args], kwargs)
    return function(*args, **kwargs)


def _module_names(node: ast.expr, names: dict) -> dict:
    if isinstance(node, ast.Name) and isinstance(names.get(node.id), Module):
        return names[node.id]
    return {}


_SET_METHODS = frozenset(
    "union intersection difference symmetric_difference issubset issuperset isdisjoint".split()
)
_FORMAT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")
#: Codecs linear in the text; others (punycode...) may be quadratic on a long returned string.
_LINEAR_CODECS = frozenset("utf-8 utf8 ascii latin-1 latin1 utf-16 utf-32 hex".split())


def _guard_method(name: str, owner: Any, args: list[Any]) -> None:
    if name in ("encode", "decode") and _text_len(owner) > 1_000:
        codec = str(args[0]).lower() if args else "utf-8"
        if codec not in _LINEAR_CODECS:
            raise CheckFailed(f"{name}({codec!r}) of a text that long is refused")
    if name in _WIDTH_METHODS:
        for arg in args:
            _bounded_count(arg)
    if name == "join" and isinstance(owner, (str, bytes)) and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else ()
        if len(owner) * len(items) > LIMITS["text"]:
            raise CheckFailed("join result too large to evaluate")
    if name == "replace" and isinstance(owner, (str, bytes)) and len(args) >= 2:
        if len(owner) * (_text_len(args[1]) + 1) > LIMITS["text"]:
            raise CheckFailed("replace result too large to evaluate")
    if name in _SET_METHODS:  # each builds a set of its argument
        for arg in args:
            check_hashes(arg)
    if name in ("strip", "lstrip", "rstrip") and args:  # each character against each of args
        if _text_len(owner) * _text_len(args[0]) > 100 * LIMITS["text"]:
            raise CheckFailed(f"{name}() of texts that long is refused")


def _guard_size(op: type, left: Any, right: Any) -> None:
    """Refuse arithmetic on returned values that would take the parent's memory or time."""
    if op is ast.Pow and isinstance(right, int) and abs(right) > 1:
        base = left
        if isinstance(base, fractions.Fraction):
            base = max(abs(base.numerator), base.denominator)
        if isinstance(base, int) and abs(base) > 1:
            if abs(right) * abs(base).bit_length() > LIMITS["pow_bits"]:
                raise CheckFailed("power too large to evaluate")
    if op is ast.Mult:
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                if len(seq) * count > LIMITS["text"]:
                    raise CheckFailed("repetition too large to evaluate")
    if op is ast.Mod and isinstance(left, (str, bytes)):
        text = left.decode("latin-1") if isinstance(left, bytes) else left
        for width, precision in _FORMAT_FIELD.findall(text):  # '%999999999d' from the program
            if max(len(width), len(precision)) > 5:
                raise CheckFailed("formatting with a width that large is refused")
        args = right if isinstance(right, tuple) else (right,)
        for arg in args:
            if isinstance(arg, int) and abs(arg) > 100_000:
                raise CheckFailed("formatting with a width that large is refused")
            if (
                isinstance(arg, decimal.Decimal)
                and arg.is_finite()
                and abs(arg.adjusted()) > 10_000
            ):
                raise CheckFailed("formatting that decimal is refused ('%d' makes it exact)")
        if sum(_text_len(a) for a in args) + len(left) > LIMITS["text"]:
            raise CheckFailed("formatting result too large to evaluate")
    if op in (ast.BitOr, ast.BitAnd, ast.BitXor, ast.Sub):
        for side in (left, right):
            if isinstance(side, (set, frozenset, dict)):
                check_hashes(side)


# -- decoding what the runner sent -----------------------------------------------------------


def decode(value: Any) -> Any:
    """Build values from :func:`lit_qwen3.rewards.code_runner.encode`'s JSON, within
    :data:`LIMITS`. Raises ``ValueError`` for anything that is not that encoding."""
    return _Decoder().decode(value, 0)


class _Decoder:
    def __init__(self) -> None:
        self.nodes = 0

    def decode(self, value: Any, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > LIMITS["nodes"]:
            raise ValueError("result too large")
        if depth > LIMITS["depth"]:
            raise ValueError("result nested too deeply")
        if value is None or isinstance(value, (bool, float, str)):
            return value
        if isinstance(value, int):
            if abs(value).bit_length() > LIMITS["int_digits"] * 4:
                raise ValueError("integer too large")
            return value
        if isinstance(value, list):
            return [self.decode(item, depth + 1) for item in value]
        if not (isinstance(value, dict) and len(value) == 1):
            raise ValueError(f"not an encoded value: {str(value)[:60]}")
        ((tag, payload),) = value.items()
        return self.tagged(tag, payload, depth)

    def tagged(self, tag: str, payload: Any, depth: int) -> Any:
        if tag in ("tuple", "set", "frozenset", "iter", "deque") and isinstance(payload, list):
            items = [self.decode(item, depth + 1) for item in payload]
            if tag in ("set", "frozenset"):
                _hash_guard(items)
            kinds = {"tuple": tuple, "set": set, "frozenset": frozenset, "iter": iter,
                     "deque": collections.deque}  # fmt: skip
            return kinds[tag](items)
        if tag in ("dict", "counter") and isinstance(payload, list):
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in payload):
                raise ValueError("malformed dict")
            keys = [self.decode(k, depth + 1) for k, _ in payload]
            _hash_guard(keys)
            values = [self.decode(v, depth + 1) for _, v in payload]
            kind = dict if tag == "dict" else collections.Counter
            return kind(dict(zip(keys, values, strict=True)))
        if tag in _NUMBER_FORMS and isinstance(payload, str):
            if len(payload) > LIMITS["int_digits"] or not _NUMBER_FORMS[tag].fullmatch(payload):
                raise ValueError(f"malformed or too large {tag}")
            if tag == "int":
                return int(payload, 16)
            return {"fraction": fractions.Fraction, "decimal": decimal.Decimal}[tag](payload)
        if tag == "float" and payload in ("nan", "inf", "-inf"):
            return float(payload)
        if tag == "bytes" and isinstance(payload, str):
            return bytes.fromhex(payload)
        if tag == "complex" and isinstance(payload, list) and len(payload) == 2:
            real, imag = (self.decode(p, depth + 1) for p in payload)
            if not all(isinstance(p, float) for p in (real, imag)):
                raise ValueError("malformed complex")
            return complex(real, imag)
        raise ValueError(f"unknown tag {tag!r}")


#: What a number's text may look like: no exponent that would expand it into a huge integer.
_NUMBER_FORMS = {
    "int": re.compile(r"-?[0-9a-f]+"),  # hexadecimal
    "fraction": re.compile(r"-?[0-9]+/[1-9][0-9]*"),
    "decimal": re.compile(r"-?([0-9]+(\.[0-9]*)?(E[-+]?[0-9]{1,4})?|Infinity|s?NaN[0-9]*)"),
}


def _hash_guard(items: list) -> None:
    try:
        check_hashes(items)
    except CheckFailed as err:
        raise ValueError(str(err)) from None
    except TypeError as err:  # an unhashable item: not something encode() sends
        raise ValueError(f"unhashable item ({err})") from None


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
        except (ValueError, TypeError, RecursionError, ArithmeticError) as err:
            values.append(ProbeError(f"unreadable result ({str(err)[:80]})"))
    return "the results end early: the program exited before the tests finished"
