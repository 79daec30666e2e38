"""Numerical faults: skip an optimizer step whose loss or gradients are not finite, and stop a
run that keeps producing them, before it overwrites a good checkpoint with NaNs.

One NaN batch (an overflow in bf16, a degenerate sample) should cost one step, not a run; a run
whose every step is NaN (a learning rate too high, weights already gone) should stop with a clear
message. :class:`NonFiniteGuard` makes that decision for one step and counts:

    guard = NonFiniteGuard(max_consecutive=3, max_total=20)
    loss.backward()
    if guard.check(loss, model):   # False: gradients were dropped, skip the step
        optimizer.step()

``check`` agrees across ranks (the verdict is all-reduced), works on FSDP2 DTensor gradients,
and raises :class:`NonFiniteError` when a limit is passed. Its counters go into checkpoints
through ``state_dict``/``load_state_dict``. ``HFStageModule`` calls it before every automatic
optimizer step; manual-optimisation stages call it themselves between backward and step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class NonFiniteError(RuntimeError):
    """Training stopped: too many steps with a non-finite loss or gradients."""


@dataclass
class NonFiniteLimits:
    """When a run with non-finite losses or gradients stops (each bad step is skipped)."""

    max_consecutive: int = 3
    """Stop after this many bad steps in a row."""
    max_total: int | None = 50
    """Stop after this many bad steps in the whole run (resumes included); None: no limit."""

    def __post_init__(self) -> None:
        if self.max_consecutive < 1:
            raise ValueError(f"nonfinite.max_consecutive must be >= 1, got {self.max_consecutive}")
        if self.max_total is not None and self.max_total < 1:
            raise ValueError(f"nonfinite.max_total must be >= 1 or None, got {self.max_total}")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2), the tensor itself otherwise."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def local_norm(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The 2-norm over this rank's elements of ``tensors`` (non-finite if any element is)."""
    local = [_local(t).detach() for t in tensors]
    if not local:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(local, norm_type=2.0)


def all_ranks_agree(flag: torch.Tensor) -> bool:
    """A 0-d bool tensor and-ed over every rank, as a Python bool (one device sync)."""
    flag = flag.to(torch.int32).reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def parameters_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter of ``module`` is finite on every rank (call on all ranks)."""
    return all_ranks_agree(torch.isfinite(local_norm(module.parameters())))


class NonFiniteGuard:
    """Decide, once per optimizer step, whether the step may run; count the skipped ones.

    Args:
        max_consecutive: raise :class:`NonFiniteError` at this many bad steps in a row.
        max_total: raise at this many bad steps in total (None: never for the total).

    Attributes (saved by ``state_dict``): ``skipped`` (bad steps so far), ``consecutive`` (bad
    steps since the last good one); ``last_grad_norm`` (a 0-d tensor: the gradient norm of the
    last ``check``, this rank's share under FSDP2; not saved).
    """

    def __init__(self, max_consecutive: int = 3, max_total: int | None = 50) -> None:
        limits = NonFiniteLimits(max_consecutive, max_total)  # validates
        self.max_consecutive, self.max_total = limits.max_consecutive, limits.max_total
        self.skipped = 0
        self.consecutive = 0
        self.last_grad_norm = torch.tensor(math.nan)

    @classmethod
    def from_limits(cls, limits: NonFiniteLimits | None) -> NonFiniteGuard:
        limits = limits or NonFiniteLimits()
        return cls(limits.max_consecutive, limits.max_total)

    def check(
        self, loss: torch.Tensor | float | None, model: torch.nn.Module, *, step: int | None = None
    ) -> bool:
        """True when ``loss`` and every gradient of ``model`` are finite on every rank.

        On False the gradients are dropped (``zero_grad(set_to_none=True)``, so an optimizer step
        changes nothing) and the step is counted; past a limit :class:`NonFiniteError` is raised.
        Call it on every rank after backward, before the optimizer step. ``step`` only labels
        the error message.
        """
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = local_norm(grads)
        self.last_grad_norm = norm
        finite = torch.isfinite(norm)
        if isinstance(loss, torch.Tensor):
            finite = finite & torch.isfinite(loss.detach().to(norm.device)).all()
        elif loss is not None:
            finite = finite & math.isfinite(loss)
        if all_ranks_agree(finite):
            self.consecutive = 0
            return True
        model.zero_grad(set_to_none=True)
        self.skipped += 1
        self.consecutive += 1
        at = f" at step {step}" if step is not None else ""
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(
                f"training stopped{at}: {self.consecutive} steps in a row had a non-finite loss "
                f"or gradients (limit nonfinite.max_consecutive={self.max_consecutive}); "
                "the last checkpoint holds the last good weights. Lower the learning rate, "
                "check the data, or raise the limit"
            )
        if self.max_total is not None and self.skipped >= self.max_total:
            raise NonFiniteError(
                f"training stopped{at}: {self.skipped} steps had a non-finite loss or gradients "
                f"(limit nonfinite.max_total={self.max_total}); the last checkpoint holds the "
                "last good weights"
            )
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state["skipped"])
        self.consecutive = int(state["consecutive"])
