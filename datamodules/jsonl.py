"""JSONL reading whose every error names the file and the line.

``json.loads`` on the lines of a text-mode file fails without a location on what real files
hold: bytes that are not UTF-8 (``UnicodeDecodeError`` from the file iterator), nesting deeper
than the interpreter's recursion limit (``RecursionError``), integers longer than Python's
4300-digit limit (a bare ``ValueError``); and it accepts escapes of lone UTF-16 surrogates
(``"\\ud800"``), strings no tokenizer can encode, which then fail much later. :func:`iter_jsonl`
turns each into a ``ValueError`` that starts with ``path:line:``. Lines are split at ``\\n``
only (a ``\\r`` inside a line is JSON whitespace), blank lines (JSON whitespace only) are
skipped and a UTF-8 byte-order mark before the first line is allowed.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["iter_jsonl"]

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_JSON_WHITESPACE = " \t\r\n"  # a line of other "whitespace" (\x1c, \u3000) is not blank


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]  # iterative: values may nest as deep as the parser allows
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def iter_jsonl(path: str | Path, what: str = "JSONL file") -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line, ``where`` being ``"path:line"``.

    ``what`` names the file in the error raised when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{what} {str(path)!r} {reason}")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{where}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte "
                    f"{error.start + 1} of the line): re-encode the file as UTF-8"
                ) from None
            if not line.strip(_JSON_WHITESPACE):
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{where}: invalid JSON: {error.msg} (column {error.colno})"
                ) from None
            except RecursionError:
                raise ValueError(f"{where}: JSON nested too deeply to read") from None
            except ValueError as error:  # an integer over Python's digit limit
                raise ValueError(f"{where}: unreadable JSON value: {error}") from None
            if "\\u" in line and _has_lone_surrogate(value):  # only escapes can make one
                raise ValueError(
                    f"{where}: a string holds a lone UTF-16 surrogate (an escape like \\ud800 "
                    "without its pair): not Unicode text any tokenizer can encode"
                )
            yield where, value
