"""Agent tools for RL rollouts (report section 4.4, "agent ability"): the policy writes a call,
the environment runs it and answers in the chat format, and sampling goes on.

A call is Qwen3's ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``; the answer is
a ``<tool_response>`` turn, rendered exactly as the chat template renders a ``tool`` message.
Tools never trust their arguments: the calculator evaluates a small arithmetic grammar with size
limits, and the Python tool runs code in the reward sandbox. A tool's failure is a message the
policy reads (``error: ...``), never an exception in the trainer.
"""

from __future__ import annotations

import abc
import ast
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "Calculator",
    "PythonTool",
    "Tool",
    "ToolCall",
    "build_tool",
    "parse_tool_call",
    "register_tool",
    "tool_names",
]

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>\s*$", re.DOTALL)
#: Longest response text handed back to the policy (characters).
MAX_RESPONSE_CHARS = 2000


@dataclass(frozen=True)
class ToolCall:
    """A parsed call: the tool's name and its JSON arguments."""

    name: str
    arguments: dict[str, Any]


def parse_tool_call(text: str) -> ToolCall | str:
    """The call that ``text`` ends with, or a short reason why it is not a valid call."""
    match = _CALL.search(text)
    if match is None:
        return "no <tool_call> block at the end of the turn"
    try:
        payload = json.loads(match.group(1))
    except (json.JSONDecodeError, RecursionError, ValueError) as error:
        return f"invalid JSON in <tool_call>: {error}"
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return 'a tool call must be {"name": str, "arguments": {...}}'
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError, ValueError):
            return "the arguments string is not JSON"
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object"
    return ToolCall(payload["name"], arguments)


class Tool(abc.ABC):
    """Subclass, set ``description`` and ``parameters`` (JSON schema), implement ``run``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    @abc.abstractmethod
    def run(self, arguments: Mapping[str, Any]) -> str:
        """The response text; raise ``ValueError`` for bad arguments (shown to the policy)."""

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        try:
            text = self.run(arguments)
        except (ValueError, TypeError, ArithmeticError, OverflowError) as error:
            text = f"error: {error}"
        return text[:MAX_RESPONSE_CHARS]

    def schema(self) -> dict[str, Any]:
        """The function description ``apply_chat_template(tools=[...])`` renders."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


_TOOLS: dict[str, type[Tool]] = {}


def register_tool(name: str) -> Callable[[type[Tool]], type[Tool]]:
    """Class decorator: make a :class:`Tool` buildable by name (from YAML or query rows)."""

    def decorator(cls: type[Tool]) -> type[Tool]:
        cls.name = name
        _TOOLS[name] = cls
        return cls

    return decorator


def tool_names() -> list[str]:
    return sorted(_TOOLS)


def build_tool(name: str, **kwargs: Any) -> Tool:
    if name not in _TOOLS:
        raise ValueError(f"unknown tool {name!r}; known tools: {', '.join(tool_names())}")
    return _TOOLS[name](**kwargs)


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


@register_tool("calculator")
class Calculator(Tool):
    """Exact integer arithmetic: ``+ - * // % **`` and parentheses, e.g. ``"347*8+12"``.

    Limits keep a hostile expression cheap: at most ``max_chars`` characters, operands and
    results below ``10**max_digits``, exponents at most ``max_exponent``.
    """

    description = "Evaluate an integer arithmetic expression exactly."
    parameters = {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 347*8+12"}},
        "required": ["expression"],
    }

    def __init__(self, max_chars: int = 200, max_digits: int = 100, max_exponent: int = 64):
        self.max_chars, self.max_exponent = max_chars, max_exponent
        self.limit = 10**max_digits

    def run(self, arguments: Mapping[str, Any]) -> str:
        expression = arguments.get("expression")
        if not isinstance(expression, str):
            raise ValueError("'expression' must be a string")
        if len(expression) > self.max_chars:
            raise ValueError(f"expression longer than {self.max_chars} characters")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError:
            raise ValueError(f"cannot parse {expression!r}") from None
        return str(self._eval(tree.body))

    def _eval(self, node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            value = node.value
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self._eval(node.operand)
            value = -value if isinstance(node.op, ast.USub) else value
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and not 0 <= right <= self.max_exponent:
                raise ValueError(f"exponents must be in [0, {self.max_exponent}]")
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
                raise ValueError("division by zero")
            value = _BINARY[type(node.op)](left, right)
        else:
            raise ValueError("only integers, + - * // % ** and parentheses are allowed")
        if abs(value) >= self.limit:
            raise ValueError("number too large")
        return value


@register_tool("python")
class PythonTool(Tool):
    """Run a Python snippet in the reward sandbox and return what it printed."""

    description = "Run Python code in a sandbox and return its standard output."
    parameters = {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python source to run"}},
        "required": ["code"],
    }

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    def run(self, arguments: Mapping[str, Any]) -> str:
        code = arguments.get("code")
        if not isinstance(code, str):
            raise ValueError("'code' must be a string")
        from lit_qwen3.rewards.sandbox import Sandbox

        result = Sandbox(wall_time_s=self.timeout).run_python(code)
        if not result.ok:
            return f"error ({result.describe()}): {result.stderr[-500:]}"
        return result.stdout
