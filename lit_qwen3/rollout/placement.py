"""Where a model's weights live: their device, whether they are shards (FSDP2 DTensors, ZeRO-3
partitions), and whether ranks must then run its forward in lockstep."""

from __future__ import annotations

import torch

__all__ = ["global_alive", "is_sharded", "model_device", "needs_lockstep"]


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether the model's parameters are shards: FSDP2 DTensors or ZeRO-3 partitions."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


def needs_lockstep(model: torch.nn.Module) -> bool:
    """Sharded models gather weights in every forward: all ranks must step together."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    return is_sharded(model)


def global_alive(n_alive: int, lockstep: bool) -> int:
    """Rows still generating: on this rank, or on all ranks when they decode in lockstep.

    A rank whose rows all finished keeps calling the model (on its finished rows) until every
    rank is done, so that the sharded forward's collectives match.
    """
    if not lockstep:
        return n_alive
    total = torch.tensor([n_alive], dtype=torch.long)
    if torch.distributed.get_backend() == "nccl":
        total = total.cuda()
    torch.distributed.all_reduce(total)
    return int(total.item())


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (HF models also say it as ``model.device``)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
