"""Query rows in and curated rows out: reading, checking, and the JSONL the datamodules read.

Input rows are RL query rows (:mod:`lit_qwen3.queries`, what ``QueryDataModule`` reads):
``{"messages": [...], "answer": "936", "reward": {"names": [...], ...}, "domain": ...}``, or
IFEval rows ``{"prompt", "instruction_id_list", "kwargs"}``; optional ``id`` (default
``file:line``) and ``split`` (``val``/``validation`` rows are the reserved validation set).
Bad input is reported with the file and line: a row without messages, a row whose rewards
lack what they need to verify it (no verifier spec), a domain the config does not know.

Outputs: query rows in the same format (plus ``id``, ``domain`` and measured fields such as
``pass_rate``), and conversations ``{"messages": [user, assistant with reasoning_content]}``
for ``ConversationDataModule``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_qwen3.chat import strip_thinking_flags
from lit_qwen3.formats import query_row
from lit_qwen3.queries import parse_query
from lit_qwen3.rewards.base import Sample
from lit_qwen3.rewards.composite import ROUTING_KEY, CompositeReward

__all__ = [
    "VALIDATION_SPLITS",
    "check_domains",
    "check_verifier_specs",
    "load_query_rows",
    "normalize_query_row",
    "query_text",
    "read_jsonl",
    "reward_metadata",
    "write_jsonl",
]

#: ``split`` values that mark a row as part of the reserved validation set.
VALIDATION_SPLITS = ("val", "validation")


def normalize_query_row(row: Any, where: str, default_id: str) -> dict[str, Any]:
    """One input row checked by the RL query reader (:func:`lit_qwen3.queries.parse_query`:
    messages, roles, mode, reward, answer) and kept as a dict in the query format, with an
    ``id``; IFEval rows are rewritten with one user message and their lists in ``reward``."""
    if isinstance(row, Mapping):
        row = query_row(row, where)  # public layouts (math, code, RLVR) in the native format
    query = parse_query(row, where)
    out = dict(row)
    if "messages" not in out:  # an IFEval row
        for key in ("prompt", "instruction_id_list", "kwargs", "key", "metadata"):
            out.pop(key, None)
        names = {"names": query.rewards} if query.rewards is not None else {}
        out["reward"] = {**names, **query.metadata}
    out["messages"] = query.messages
    if out.get("answer") is not None:
        out["answer"] = str(out["answer"])
    out["id"] = str(out.get("id", default_id))
    return out


def query_text(row: Mapping[str, Any]) -> str:
    """The last user message without thinking flags: what query filters read."""
    users = [m for m in row["messages"] if m.get("role") == "user"]
    return strip_thinking_flags(users[-1]["content"])


def reward_metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    """The reward ``Sample.metadata`` of a query row, as the RL stages build it (``reward``'s
    keys, ``names`` as the routing list, ``answer`` as ``reference`` when there is none)."""
    return parse_query(row, str(row.get("id", "query"))).reward_metadata()


def check_verifier_specs(
    rows: Sequence[Mapping[str, Any]], composite: CompositeReward, where: Sequence[str]
) -> None:
    """Raise unless every row names only the composite's rewards and carries the metadata each
    of them requires (a math query needs its reference answer, a code query its tests)."""
    labels = {c.label: c for c in composite.components}
    for row, place in zip(rows, where, strict=True):
        metadata = reward_metadata(row)
        routed = metadata.get(ROUTING_KEY)
        if routed is not None:
            if isinstance(routed, str) or not isinstance(routed, Sequence) or not routed:
                raise ValueError(f"{place}: reward.names must be a non-empty list of names")
            unknown = [name for name in routed if name not in labels]
            if unknown:
                raise ValueError(
                    f"{place}: reward.names {unknown} are not among the configured rewards "
                    f"{sorted(labels)} (set `rewards` in the config)"
                )
        sample = Sample(
            prompt=list(row["messages"]),
            completion="",
            thinking=None,
            answer="",
            well_formed=False,
            thinking_mode=True,
            metadata=metadata,
        )
        for label in routed or list(labels):
            try:
                labels[label].reward.check(sample)
            except ValueError as error:
                raise ValueError(
                    f"{place}: no verifier spec: {error}. Give the row an 'answer' or a "
                    f"'reward' object with what the reward needs (e.g. 'reference', 'tests')"
                ) from None


def check_domains(
    rows: Sequence[Mapping[str, Any]], known: Iterable[str], where: Sequence[str]
) -> None:
    """Raise on a row whose ``domain`` is not among the configured ones."""
    known = list(known)
    for row, place in zip(rows, where, strict=True):
        domain = row.get("domain")
        if domain is not None and domain not in known:
            raise ValueError(
                f"{place}: unknown domain {domain!r}; the config's domains are {known} "
                f"(queries.domains.shares)"
            )


def _read_json_lines(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: invalid JSON: {error.msg}") from None


def load_query_rows(source: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a JSONL file or a ``datasets`` directory, normalised, with where each came
    from (``file:line``) for error messages. Ids default to ``file:line`` / ``dir[row]``."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"query source {str(path)!r} does not exist")
    rows, where = [], []
    if path.is_dir():
        import datasets  # lazy: only this source needs it

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise ValueError(f"{path}: splits {list(loaded)}, expected a 'train' split")
            loaded = loaded["train"]
        for i, row in enumerate(loaded):
            place = f"{path}[row {i}]"
            rows.append(normalize_query_row(row, place, f"{path.name}:{i}"))
            where.append(place)
    else:
        for number, row in _read_json_lines(path):
            place = f"{path}:{number}"
            rows.append(normalize_query_row(row, place, f"{path.name}:{number}"))
            where.append(place)
    if not rows:
        raise ValueError(f"query source {str(path)!r} holds no rows")
    seen: dict[str, str] = {}
    for row, place in zip(rows, where, strict=True):
        if row["id"] in seen:
            raise ValueError(f"{place}: duplicate id {row['id']!r} (first at {seen[row['id']]})")
        seen[row["id"]] = place
    return rows, where


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows this tool wrote (a cut-off last line from a killed run is ignored)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: invalid JSON") from None
    return rows


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows atomically (a temporary file renamed into place); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def append_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows and flush (generation caches grow one batch at a time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
