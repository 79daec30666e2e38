"""A DataLoader that a run killed mid-epoch resumes at the right batch.

Lightning saves the state of every train DataLoader that has ``state_dict``/``load_state_dict``
in its checkpoints and restores it before iterating again; a plain DataLoader has neither, so a
resumed run starts its epoch over (and trains on some batches twice). :class:`ResumableDataLoader`
counts the batches it handed out in the current epoch and, after ``load_state_dict``, skips that
many at the start of the same epoch. With a sampler that is a function of (seed, epoch) -- such as
``EpochShuffleSampler`` -- the resumed run sees exactly the batches the uninterrupted run would.

Skipping iterates the skipped batches (their collation runs, the training step does not): cheap
for precomputed batches, proportional to the skipped share for datasets that work per item.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """``DataLoader`` (same arguments) whose position in the epoch survives a checkpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches_in_epoch = 0
        self._resume: dict[str, Any] | None = None

    def _epoch(self) -> int | None:
        return getattr(self.sampler, "epoch", None)

    def __iter__(self) -> Iterator[Any]:
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        # a generator: runs at the first next(), after Lightning has set the sampler's epoch
        resume, self._resume = self._resume, None
        skip = 0
        if resume is not None and resume.get("epoch") == self._epoch():
            skip = resume["batches"]
        self._batches_in_epoch = 0
        iterator = super().__iter__()
        for _ in range(skip):
            try:
                next(iterator)
            except StopIteration:
                return
            self._batches_in_epoch += 1
        for batch in iterator:
            self._batches_in_epoch += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Batches of the current epoch already handed out, and the epoch they belong to."""
        return {"epoch": self._epoch(), "batches": self._batches_in_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Skip ``batches`` at the start of the next iteration, if it is the saved epoch."""
        self._resume = {"epoch": state_dict.get("epoch"), "batches": int(state_dict["batches"])}
