"""Runs inside the sandbox: the program, then each probe expression; results to the parent.

Staged by :class:`~lit_qwen3.rewards.code.CodeReward` as ``runner.py`` next to ``solution.py``
(the program) and ``probes.json`` (the test's import lines, then the calls of the program whose
values the tests need, e.g. ``add(1, 2)``: inputs only, never an expected value). Run as
``python -I runner.py``. Standard library only.

It runs the test's imports (MBPP programs rely on them), executes the program as ``__main__``, evaluates each probe in the program's namespace and
writes one JSON line per probe on the result pipe (fd 3): ``{"probe": i, "value": V}`` or
``{"probe": i, "error": "..."}``, then ``{"done": n}``. ``V`` is a tagged encoding of built-in
types (:func:`encode`); anything else is an error for that probe. Nothing here is trusted by the
parent: the program runs in this same process and could rewrite any of it. The parent only ever
learns what the program claims its function returns, and compares that with expected values it
never sent.
"""

from __future__ import annotations

import json
import math
import os
import sys
import types

MAX_DEPTH = 64
MAX_ITEMS = 100_000
_dumps = json.dumps  # bound before the program runs (it may patch the json module)


def encode(value: object, depth: int = 0) -> object:
    """JSON for built-in values: scalars as themselves (non-finite floats as
    ``{"float": "nan"}``), lists as arrays, everything else as a one-key object naming its type;
    iterators (map, generators...) are drained into ``{"iter": [...]}``."""
    if depth > MAX_DEPTH:
        raise ValueError("result nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        # big ones in hex: no decimal conversion (quadratic, and capped by Python) on either side
        return value if abs(value).bit_length() < 4000 else {"int": format(value, "x")}
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is list:
        return [encode(item, depth + 1) for item in _bounded(value)]
    if kind in (tuple, set, frozenset):
        items = [encode(item, depth + 1) for item in _bounded(value)]
        return {kind.__name__: items}
    if kind is dict:
        pairs = [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in _bounded(value.items())]
        return {"dict": pairs}
    if kind is bytes or kind is bytearray:
        return {"bytes": bytes(value).hex()}
    if kind is complex:
        return {"complex": [encode(value.real), encode(value.imag)]}
    numpy_value = _from_numpy(value)
    if numpy_value is not value:
        return encode(numpy_value, depth)
    if isinstance(value, (bool, int, float, str, bytes, complex)):  # subclasses: the base value
        for base in (bool, int, float, str, bytes, complex):
            if isinstance(value, base):
                return encode(base(value), depth)
    exact = _from_library(value, kind, depth)
    if exact is not None:
        return exact
    if hasattr(value, "__next__") or kind is range:
        return {"iter": [encode(item, depth + 1) for item in _bounded(value)]}
    raise TypeError(f"result of type {kind.__name__} is not a built-in value")


def _from_library(value: object, kind: type, depth: int) -> object | None:
    """Fraction, Decimal, Counter, OrderedDict, defaultdict and deque (tests compare them)."""
    name = f"{kind.__module__}.{kind.__qualname__}"
    if name == "fractions.Fraction":
        return {"fraction": f"{value.numerator}/{value.denominator}"}
    if name == "decimal.Decimal":
        return {"decimal": str(value)}
    if name == "collections.Counter":
        pairs = [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in _bounded(value.items())]
        return {"counter": pairs}
    if name in ("collections.OrderedDict", "collections.defaultdict"):
        return encode(dict(value), depth)
    if name == "collections.deque":
        return {"deque": [encode(item, depth + 1) for item in _bounded(value)]}
    return None


def _bounded(items):
    out = []
    for item in items:
        out.append(item)
        if len(out) > MAX_ITEMS:
            raise ValueError(f"result has more than {MAX_ITEMS} items")
    return out


def _from_numpy(value: object) -> object:
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return value
    if isinstance(value, numpy.ndarray):
        return value.tolist()
    if isinstance(value, numpy.generic):
        return value.item()
    return value


def _describe(err: BaseException) -> str:
    try:
        text = f"{type(err).__name__}: {err}"
    except BaseException:  # noqa: BLE001 - the program's own __str__ may raise
        text = type(err).__name__
    return str(text)[:300]


def main() -> None:
    out = os.dup(3)  # not inheritable: the program's children do not get the pipe
    os.close(3)
    with open("probes.json") as handle:
        prelude, probes = json.load(handle)
    with open("solution.py") as handle:
        source = handle.read()
    for name in ("probes.json", "runner.py"):
        os.unlink(name)

    def send(record: dict) -> None:
        data = (_dumps(record) + "\n").encode()
        while data:
            data = data[os.write(out, data) :]

    module = types.ModuleType("__main__")
    module.__file__ = os.path.abspath("solution.py")
    sys.modules["__main__"] = module
    exec(compile(prelude, "<test imports>", "exec"), module.__dict__)
    exec(compile(source, "solution.py", "exec"), module.__dict__)
    for index, probe in enumerate(probes):
        try:
            value = encode(eval(compile(probe, f"<probe {index}>", "eval"), module.__dict__))
            record = {"probe": index, "value": value}
        except BaseException as err:  # noqa: BLE001 - SystemExit in a probe fails that probe
            record = {"probe": index, "error": _describe(err)}
        send(record)
    send({"done": len(probes)})


if __name__ == "__main__":
    main()
