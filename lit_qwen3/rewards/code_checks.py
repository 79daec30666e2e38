"""Assert-style code tests split in two: calls of the program, and what the parent checks.

``assert add(1, 2) == 3`` becomes a *probe*, ``add(1, 2)``, evaluated in the sandbox by
:mod:`lit_qwen3.rewards.code_runner`, and a *condition*, ``PROBE == 3``, evaluated by
:mod:`lit_qwen3.rewards.code_judge` on the plain value that came back.

A probe is only ever a call of one of the row's *entry points* (``add(1, 2)``,
``Solution().two_sum([2, 7], 9)``, or an entry point's bare name), on arguments made of
literals (names the test bound to one are written out), built-ins, the test's imports and other
entry points: inputs, never the other side of a comparison. The entry points are named by the row (``entry_point``, ``fn_name``) or, when
it names none, are the names the tests use that neither Python nor the parent knows; an assert
with two such names (``compare(f(x), 3)``: is ``compare`` the program's, or a helper the row
did not ship?) is refused. Everything else runs here: comparisons, arithmetic, the built-ins in
:data:`~lit_qwen3.rewards.code_judge.FUNCTIONS`, ``math``, ``cmath``, ``fractions``,
``decimal``, ``collections``, ``pytest.approx`` and numpy comparisons
(:data:`~lit_qwen3.rewards.code_judge.MODULES`), pure methods of the returned values
(``f(x).startswith("ab")``). So the expected value never enters the sandbox, and neither an
overloaded ``__eq__`` nor a patched module can make a wrong answer pass.

Refused, with the test's name and line, when the row is loaded: any statement but asserts,
imports, literal assignments and a HumanEval ``def check(candidate)``; loops, comprehensions,
lambdas, f-strings in a condition; names the parent does not know; a check that calls no entry
point (``assert sorted([2, 1]) == [1, 2]`` for a task *named* ``sorted`` needs ``entry_point``:
otherwise the parent alone would decide it, and the empty program would pass).
"""

from __future__ import annotations

import ast
import builtins
import copy
from collections.abc import Iterable

from lit_qwen3.rewards.code_judge import (
    FUNCTIONS,
    METHODS,
    MODULES,
    Check,
    CheckFailed,
    Module,
    ProbeError,
    decode,
    evaluate,
    read_results,
)

__all__ = [
    "Check",
    "CheckFailed",
    "ProbeError",
    "decode",
    "entry_points_of",
    "evaluate",
    "parse_assert_tests",
    "program_names",
    "read_results",
]

#: Names a test may use without importing them (MBPP keeps its imports in another field).
_DEFAULT_NAMES = {
    **{name: MODULES[name] for name in MODULES},
    "np": MODULES.get("numpy"),
    "Fraction": MODULES["fractions"]["Fraction"],
    "Decimal": MODULES["decimal"]["Decimal"],
    **{name: MODULES["collections"][name] for name in ("Counter", "OrderedDict", "deque")},
}
_KEYWORDS = {
    "sorted": {"reverse"},
    "isclose": {"rel_tol", "abs_tol", "rtol", "atol", "equal_nan"},
    "allclose": {"rtol", "atol", "equal_nan"},
    "approx": {"rel", "abs"},
    "round": {"ndigits"},
    "split": {"sep", "maxsplit"},
    "rsplit": {"sep", "maxsplit"},
    "array_equal": {"equal_nan"},
}
_COMPOUND = (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Subscript,
             ast.Slice, ast.Tuple, ast.List, ast.Set, ast.Dict)  # fmt: skip


#: Built-ins that may wrap a call of the program in a probe: they only feed it inputs.
_FEEDERS = frozenset({"map", "filter", "zip", "enumerate", "callable"})
#: Method names that compare: never evaluated in the sandbox on an expected argument.
_COMPARING = frozenset(
    "equals equal eq ne lt le gt ge compare isclose allclose approx match fullmatch search "
    "assertequal same_as issame contains".split()
)


class _Unsupported:
    """A name the test imported from a module the parent does not evaluate."""

    def __init__(self, origin: str) -> None:
        self.origin = origin


def parse_assert_tests(
    text: str, where: str, *, entry_points: Iterable[str] | None = None, imports: str = ""
) -> list[Check]:
    """Parse a test (asserts, imports; a HumanEval ``check`` function) into checks.

    ``where`` names the test in error messages (``"metadata['tests'][2]"``); ``entry_points``
    are the program's names the test calls (default: inferred, see the module docstring);
    ``imports`` are import lines the row keeps apart from its tests (MBPP ``test_imports``).
    """
    tree = _parse(text, where)
    head = _parse(imports, f"{where} (imports)").body if imports.strip() else []
    entries = (
        frozenset(entry_points)
        if entry_points is not None
        else entry_points_of([text], where, imports)
    )
    parser = _Parser(entries, where)
    for statement in head:
        parser.statement(statement, f"{where} (imports) line {statement.lineno}")
    for statement in tree.body:
        parser.statement(statement, f"{where} line {statement.lineno}")
    if not parser.checks:
        raise ValueError(f"{where} has no assert statement that calls the program")
    return parser.checks


def entry_points_of(
    texts: Iterable[str], where: str, imports: str = "", *, indexed: bool = False
) -> frozenset[str]:
    """The names the tests call that are neither Python's nor the parent's (nor imported): at
    most one per assert, since ``compare(f(x), 3)`` may be a helper the row did not ship."""
    known = set(_DEFAULT_NAMES) | set(dir(builtins))
    found: set[str] = set()
    trees = [_parse(text, where) for text in [imports, *texts]]
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.alias):
            known.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg) or (
            isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
        ):
            known.add(node.arg if isinstance(node, ast.arg) else node.id)
    for index, tree in enumerate(trees[1:]):
        name = f"{where}[{index}]" if indexed else where
        for statement in (n for n in ast.walk(tree) if isinstance(n, ast.Assert)):
            mine = {
                n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and n.id not in known
            }
            if len(mine) > 1:
                raise ValueError(
                    f"{name} line {statement.lineno}: the assert uses several names this "
                    f"process does not know ({', '.join(sorted(mine))}); which is the program's? "
                    "Name the entry point(s) in metadata 'entry_point' (a helper the test needs "
                    "cannot be checked outside the sandbox)"
                )
            found |= mine
    return frozenset(found)


def _parse(text: str, where: str) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as err:
        raise ValueError(f"{where} line {err.lineno}: not valid Python ({err.msg})") from None


class _Parser:
    """Walks a test's statements; collects checks, the imports and what names mean."""

    def __init__(self, entries: frozenset[str], where: str) -> None:
        self.entries = entries
        self.where = where
        self.names: dict[str, object] = {
            k: v for k, v in {**FUNCTIONS, **_DEFAULT_NAMES}.items() if v is not None
        }
        for name in entries:
            self.names.pop(name, None)  # the program's `sorted` is not the built-in
        self.prelude: list[str] = []
        self.checks: list[Check] = []
        self.rename: dict[str, str] = {}
        self.literals: dict[str, ast.expr] = {}
        """Names bound to a literal: written out where a call of the program uses them."""

    def statement(self, statement: ast.stmt, line: str) -> None:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            self._import(statement, line)
        elif isinstance(statement, ast.Assert):
            self._assert(statement, line)
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            return  # a docstring or a bare string
        elif isinstance(statement, ast.Pass):
            return
        elif isinstance(statement, ast.Assign) and _is_literal(statement.value):
            for target in statement.targets:  # HumanEval's METADATA = {...}
                if not isinstance(target, ast.Name) or target.id in self.entries:
                    raise ValueError(f"{line}: only literal assignments to new names are allowed")
                self.names[target.id] = ast.literal_eval(statement.value)
                self.literals[target.id] = statement.value
        elif isinstance(statement, ast.FunctionDef) and _is_check_function(statement):
            self._check_function(statement, line)
        elif (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Call)
            and isinstance(statement.value.func, ast.Name)
            and statement.value.func.id == "check"
        ):
            return  # HumanEval's trailing check(entry_point)
        else:
            raise ValueError(
                f"{line}: only assert statements, imports and literal assignments can be checked "
                f"outside the sandbox; got {type(statement).__name__}: "
                f"{ast.unparse(statement)[:80]!r}"
            )

    def _check_function(self, function: ast.FunctionDef, line: str) -> None:
        """HumanEval: ``def check(candidate)``, its parameter being the entry point."""
        if len(self.entries) != 1:
            raise ValueError(f"{line}: def check(candidate) needs metadata 'entry_point'")
        (entry,) = self.entries
        self.rename = {function.args.args[0].arg: entry}
        base = self.where
        for statement in function.body:
            self.statement(statement, f"{base} line {statement.lineno}")
        self.rename = {}

    def _import(self, statement: ast.Import | ast.ImportFrom, line: str) -> None:
        self.prelude.append(ast.unparse(statement))
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                root = alias.name.split(".")[0]
                if alias.asname is None and "." in alias.name:
                    self.names[root] = MODULES.get(root) or _Unsupported(alias.name)
                    continue
                self.names[alias.asname or root] = MODULES.get(alias.name) or _Unsupported(
                    alias.name
                )
            return
        module = MODULES.get(statement.module or "")
        for alias in statement.names:
            if alias.name == "*":
                self.names.update(module or {})
                continue
            value = module.get(alias.name) if module is not None else None
            self.names[alias.asname or alias.name] = (
                value if value is not None else _Unsupported(f"{statement.module}.{alias.name}")
            )

    def _assert(self, statement: ast.Assert, line: str) -> None:
        test = _Renamer(self.rename).visit(statement.test) if self.rename else statement.test
        if isinstance(test, ast.Constant) and test.value:
            return  # HumanEval's `assert True`: checks nothing
        probes: list[ast.expr] = []
        names = {k: v for k, v in self.names.items() if not isinstance(v, _Unsupported)}
        _Splitter(self, line).split(test, probes)
        if not probes:
            raise ValueError(
                f"{line}: {ast.unparse(test)[:80]!r} calls no function of the program, so it "
                "would pass without one; name the function in metadata 'entry_point' (when it "
                "shares a built-in's name) or drop the test"
            )
        self.checks.append(
            Check(
                source=ast.unparse(ast.Assert(test=test, msg=None)),
                condition=test,
                probes=tuple(
                    ast.unparse(_Inliner(self.literals).visit(copy.deepcopy(p))) for p in probes
                ),  # fmt: skip
                probe_nodes=tuple(id(p) for p in probes),
                names=names,
                prelude="\n".join(self.prelude),
                entries=tuple(
                    frozenset({n.id})
                    for p in probes
                    for n in ast.walk(p)
                    if isinstance(n, ast.Name) and n.id in self.entries
                ),
            )
        )


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:  # noqa: N802 - ast API
        return ast.copy_location(ast.Name(self.mapping.get(node.id, node.id), node.ctx), node)


class _Inliner(ast.NodeTransformer):
    """``f(xs)`` after ``xs = [1, 2]`` becomes ``f([1, 2])``: an input, by its position."""

    def __init__(self, literals: dict[str, ast.expr]) -> None:
        self.literals = literals

    def visit_Name(self, node: ast.Name) -> ast.expr:  # noqa: N802 - ast API
        return copy.deepcopy(self.literals[node.id]) if node.id in self.literals else node


class _Splitter:
    """Splits one condition: probes go to the sandbox, everything else must be evaluable here."""

    def __init__(self, parser: _Parser, line: str) -> None:
        self.entries = parser.entries
        self.names = parser.names
        self.literals = parser.literals
        self.line = line

    def refuse(self, node: ast.AST, why: str) -> ValueError:
        return ValueError(f"{self.line}: {ast.unparse(node)[:60]!r} {why}")

    def split(self, node: ast.expr, probes: list[ast.expr]) -> None:
        if self._is_probe(node):
            self._check_inputs(node)
            probes.append(node)
        elif isinstance(node, ast.Constant):
            return
        elif isinstance(node, ast.Name):
            self._parent_name(node)
        elif isinstance(node, ast.Attribute):
            if self._module_member(node) is None:
                if node.attr not in ("real", "imag", "numerator", "denominator", "shape"):
                    raise self.refuse(node, "uses an attribute the parent does not support")
                self.split(node.value, probes)
        elif isinstance(node, ast.Call):
            self._call(node, probes)
        elif isinstance(node, _COMPOUND):
            for child in self._children(node):
                self.split(child, probes)
        else:
            raise self.refuse(
                node,
                f"({type(node).__name__}) cannot be checked outside the sandbox; write the test "
                "as assert <call> == <value>",
            )

    def _is_probe(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.entries
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in self.entries:
                return True
            # map(double, xs): a built-in the parent does not run, fed the program's function
            return node.func.id in _FEEDERS and any(
                isinstance(n, ast.Name) and n.id in self.entries for n in ast.walk(node)
            )
        # Solution().method(...): a method of an instance of the program's class; never one the
        # parent evaluates itself or one that compares (F(x).startswith(E), F(x).equals(E)):
        # the expected argument would enter the sandbox and the program would decide
        inner = node.func if isinstance(node, ast.Call) else node
        return (
            isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Call)
            and isinstance(inner.value.func, ast.Name)
            and inner.value.func.id in self.entries
            and inner.value.func.id[:1].isupper()
            and inner.attr not in METHODS
            and inner.attr.lower() not in _COMPARING
            and not inner.attr.startswith("_")
        )

    def _check_inputs(self, probe: ast.expr) -> None:
        """A probe's arguments: literals, built-ins, imported names and entry points only."""
        bound = {
            a.arg
            for n in ast.walk(probe)
            if isinstance(n, ast.Lambda)
            for a in (*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs)
        }
        for node in ast.walk(probe):
            if isinstance(node, (ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
                raise self.refuse(node, "is not allowed in a call of the program")
            if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                raise self.refuse(node, "(a comprehension) is not allowed in a call's arguments")
            if isinstance(node, ast.Name):
                value = self.names.get(node.id)
                known = node.id in self.entries or node.id in bound or node.id in self.literals
                known = known or hasattr(builtins, node.id)
                if not (known or isinstance(value, (Module, _Unsupported)) or callable(value)):
                    raise self.refuse(
                        node,
                        "is not an input the sandbox may see (only literals, built-ins, imports "
                        "and the program's entry points)",
                    )

    def _parent_name(self, node: ast.Name) -> None:
        value = self.names.get(node.id)
        if node.id not in self.names:
            raise self.refuse(node, "is a name this process does not know")
        if isinstance(value, Module):
            raise self.refuse(node, "is a module; use one of its supported functions")

    def _module_member(self, node: ast.Attribute) -> object | None:
        if isinstance(node.value, ast.Name) and node.value.id not in self.entries:
            owner = self.parser_value(node.value.id)
            if isinstance(owner, Module):
                if node.attr not in owner:
                    raise self.refuse(node, "is not supported in a test condition")
                return owner[node.attr]
            if isinstance(owner, _Unsupported):
                raise self.refuse(node, f"comes from {owner.origin}, which tests cannot use")
        return None

    def parser_value(self, name: str) -> object:
        if name not in self.names and name not in self.entries:
            raise ValueError(f"{self.line}: name {name!r} is not known to this process")
        return self.names.get(name)

    def _call(self, node: ast.Call, probes: list[ast.expr]) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            value = self.parser_value(func.id)
            if isinstance(value, _Unsupported):
                raise self.refuse(func, f"comes from {value.origin}, which tests cannot use")
            if not callable(value) or isinstance(value, Module):
                raise self.refuse(func, "cannot be called in a test condition")
            name = func.id
        elif isinstance(func, ast.Attribute) and self._module_member(func) is not None:
            name = func.attr
        elif isinstance(func, ast.Attribute) and func.attr in METHODS:
            name = func.attr
            if isinstance(func.value, ast.Compare) and name in ("all", "any"):
                for child in self._children(func.value):
                    self.split(child, probes)
            else:
                self.split(func.value, probes)
        else:
            raise self.refuse(func, "cannot be called by the parent (not a supported function)")
        for keyword in node.keywords:
            if keyword.arg not in _KEYWORDS.get(name, set()):
                raise self.refuse(node, f"uses keyword {keyword.arg!r}, which is not supported")
            self.split(keyword.value, probes)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse(arg, "(*args) is not supported in a test condition")
            self.split(arg, probes)

    def _children(self, node: ast.expr) -> list[ast.expr]:
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, (ast.LShift, ast.RShift, ast.MatMult)):
                raise self.refuse(node, "uses an operator that is not supported")
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
                raise self.refuse(node, "has starred items, which are not supported")
            return list(node.elts)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.refuse(node, "uses ** in a dict, which is not supported")
            return [*node.keys, *node.values]  # type: ignore[list-item]
        if isinstance(node, ast.Subscript):
            return [node.value, node.slice]
        assert isinstance(node, ast.Slice)
        return [p for p in (node.lower, node.upper, node.step) if p is not None]


def program_names(program: str) -> frozenset[str]:
    """Names the program binds at its top level (functions, classes, assignments, imports,
    also inside a top-level ``try``), and never deletes; empty when it does not parse. A name
    bound only in dead code (``if False: def sorted(...)``) is not the program's."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return frozenset()
    found: set[str] = set()
    statements = list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.Try):
            statements += [*node.body, *node.orelse, *node.finalbody]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                found.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update((a.asname or a.name).split(".")[0] for a in node.names)
    deleted = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Del)
    }
    return frozenset(found - deleted)


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _is_check_function(node: ast.FunctionDef) -> bool:
    args = node.args
    return (
        node.name == "check"
        and not node.decorator_list
        and len(args.args) == 1
        and not (args.posonlyargs or args.kwonlyargs or args.vararg or args.kwarg)
    )
