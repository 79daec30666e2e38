"""The project's own instructions: only rules IFEval and IFBench have no counterpart for.

Each is a checker class with the benchmarks' interface (``build_description(**kwargs)``,
``get_instruction_args()``, ``check_following(response)``), so the instruction reward treats them
like the reference checkers. Their ids have no ``group:`` prefix, which keeps them apart from the
benchmarks' ids. Counting rules share one convention: ``n`` means exactly n, ``min``/``max``
bound the count (give ``n`` or at least one bound).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["EXTRA_INSTRUCTIONS", "CharCount", "JsonKeys", "StartsWith"]


def _count_bounds(n: Any, min: Any, max: Any) -> dict[str, int]:
    given = {k: v for k, v in (("n", n), ("min", min), ("max", max)) if v is not None}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key!r} must be an int >= 0, got {value!r}")
    if not given:
        raise ValueError("give 'n' (exact) or 'min'/'max'")
    if "n" in given and len(given) > 1:
        raise ValueError("give 'n' or 'min'/'max', not both")
    if given.get("min", 0) > given.get("max", float("inf")):
        raise ValueError(f"min {given['min']} > max {given['max']}")
    return given


class _Extra:
    def __init__(self, instruction_id: str) -> None:
        self.id = instruction_id
        self._args: dict[str, Any] = {}

    def get_instruction_args(self) -> dict[str, Any]:
        return dict(self._args)


class CharCount(_Extra):
    """Characters of the stripped reply: exactly ``n``, or within ``min``/``max``."""

    def build_description(self, *, n=None, min=None, max=None):
        self._args = _count_bounds(n, min, max)
        return f"Answer in {self._args} characters."

    def check_following(self, value: str) -> bool:
        count, bounds = len(value.strip()), self._args
        if "n" in bounds:
            return count == bounds["n"]
        return bounds.get("min", 0) <= count <= bounds.get("max", count)


class StartsWith(_Extra):
    """The stripped reply starts with ``text`` (case ignored unless ``case_sensitive``)."""

    def build_description(self, *, text=None, case_sensitive=None):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"'text' must be a non-empty str, got {text!r}")
        if case_sensitive is not None and not isinstance(case_sensitive, bool):
            raise ValueError(f"'case_sensitive' must be a bool, got {case_sensitive!r}")
        self._args = {"text": text, "case_sensitive": bool(case_sensitive)}
        return f"Start your reply with {text!r}."

    def check_following(self, value: str) -> bool:
        reply, text = value.strip(), self._args["text"].strip()
        if not self._args["case_sensitive"]:
            reply, text = reply.casefold(), text.casefold()
        return reply.startswith(text)


class JsonKeys(_Extra):
    """The whole reply is a JSON object (a ```json fence around it allowed) with these ``keys``."""

    def build_description(self, *, keys=None):
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"'keys' must be a non-empty list of str, got {keys!r}")
        self._args = {"keys": list(keys)}
        return f"Answer with a JSON object that has the keys {keys}."

    def check_following(self, value: str) -> bool:
        body = re.sub(r"^```(?:json)?\s*|\s*```$", "", value.strip(), flags=re.IGNORECASE)
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, RecursionError):
            return False
        return isinstance(parsed, dict) and all(k in parsed for k in self._args["keys"])


#: id -> checker class, merged with the benchmarks' registries by the instruction reward.
EXTRA_INSTRUCTIONS: dict[str, type] = {
    "char_count": CharCount,
    "starts_with": StartsWith,
    "json_keys": JsonKeys,
}
