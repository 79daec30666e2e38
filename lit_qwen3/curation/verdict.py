"""What every filter returns (a :class:`Verdict`) and the ledger that counts them.

A filter is a plain function from text (and a few numbers) to a verdict with a reason; the
:class:`FilterLedger` runs it over a list with a progress bar, keeps what passes, remembers what
was removed and why (written to ``rejected.jsonl``), and records counts in and out, the
filter's settings and its time for the manifest. A filter that removes everything stops the run
with an error naming the filter, how many items it saw and a sample reason: an empty training
set is never a silent success.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    """Keep or remove one item, and why (the reason is kept for removed items)."""

    keep: bool
    reason: str = ""

    @classmethod
    def kept(cls, reason: str = "") -> Verdict:
        return cls(True, reason)

    @classmethod
    def removed(cls, reason: str) -> Verdict:
        return cls(False, reason)


class EmptyResultError(ValueError):
    """A filter removed every item it saw."""


def progress_bar(enabled: bool = True) -> Progress:
    """A rich progress bar (count, elapsed, remaining); invisible when ``enabled`` is False."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def track(items: Sequence[T], description: str, enabled: bool = True) -> Iterable[T]:
    """Iterate ``items`` under a progress bar."""
    with progress_bar(enabled) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            yield item
            bar.advance(task)


class FilterLedger:
    """Runs filters in order and records, per filter: ``in``, ``out``, ``removed``, ``seconds``
    and the ``settings`` it ran with; removed items go to ``rejected`` with the filter's name
    and reason, saved to ``rejected_path`` by :meth:`save` (and before an empty-result error).
    ``unit`` names what is counted (queries, responses) in errors."""

    def __init__(
        self, step: str, *, progress: bool = True, rejected_path: Path | None = None
    ) -> None:
        self.step = step
        self.progress = progress
        self.rejected_path = rejected_path
        self.filters: dict[str, dict[str, Any]] = {}
        self.rejected: list[dict[str, Any]] = []

    def save(self) -> None:
        """Write the removed items and why to ``rejected_path`` (JSONL), when there is one."""
        if self.rejected_path is not None:
            from lit_qwen3.curation.data import write_jsonl

            write_jsonl(self.rejected_path, self.rejected)

    def run(
        self,
        name: str,
        items: Sequence[T],
        decide: Callable[[T], Verdict],
        *,
        describe: Callable[[T], Mapping[str, Any]],
        settings: Mapping[str, Any] | None = None,
        unit: str = "items",
        config_key: str | None = None,
    ) -> list[T]:
        """Keep the items ``decide`` keeps; ``describe`` gives what ``rejected.jsonl`` shows of
        a removed item (its id, ...). ``config_key`` is named in the error when nothing is left.
        """
        start = time.perf_counter()
        kept, reasons = [], []
        for item in track(items, f"{self.step}: {name}", self.progress):
            verdict = decide(item)
            if not isinstance(verdict, Verdict):
                raise TypeError(f"filter {name!r} returned {verdict!r}, expected a Verdict")
            if verdict.keep:
                kept.append(item)
            else:
                reasons.append(verdict.reason)
                self.rejected.append({"filter": name, "reason": verdict.reason, **describe(item)})
        self.record(
            name,
            len(items),
            len(kept),
            settings=settings,
            seconds=time.perf_counter() - start,
            unit=unit,
            config_key=config_key,
            example=reasons[0] if reasons else None,
        )
        return kept

    def record(
        self,
        name: str,
        n_in: int,
        n_out: int,
        *,
        settings: Mapping[str, Any] | None = None,
        seconds: float = 0.0,
        unit: str = "items",
        config_key: str | None = None,
        example: str | None = None,
        **extra: Any,
    ) -> None:
        """Record a filter that ran elsewhere (a selection, a split); raise when it left none."""
        self.filters[name] = {
            "unit": unit,
            "in": n_in,
            "out": n_out,
            "removed": n_in - n_out,
            "seconds": round(seconds, 4),
            "settings": dict(settings or {}),
            **extra,
        }
        if n_in > 0 and n_out == 0:
            self.save()  # what was removed, and why, is the first thing to look at
            where = f" (settings: {config_key})" if config_key else ""
            because = f"; e.g. {example}" if example else ""
            raise EmptyResultError(
                f"{self.step}: filter {name!r} removed all {n_in} {unit} it saw{because}. "
                f"Nothing is left to curate: loosen the filter{where} or check the input."
            )
