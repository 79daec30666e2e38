"""Input checks, masks and reductions that every loss module shares.

At the bottom of the import graph: :mod:`lit_qwen3.ops.logprobs`, :mod:`lit_qwen3.ops.distill_losses`,
:mod:`lit_qwen3.ops.distill_kernel` and :mod:`lit_qwen3.ops.losses` import these, and this module
imports nothing of the project's. Every error names the argument at fault.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def check_shape(name: str, tensor: Tensor, shape: torch.Size, ref_name: str) -> None:
    """Raise unless ``tensor`` is a tensor of exactly ``shape`` (the shape of ``ref_name``)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.shape != shape:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but {ref_name} has shape {tuple(shape)}; "
            "they must match"
        )


def check_temperature(temperature: float) -> None:
    ok = isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    if not ok:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def check_chunk_size(chunk_size: int, name: str = "chunk_size") -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"{name} must be a positive int, got {chunk_size!r}")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def check_labels(labels: Tensor, vocab_size: int, ignore_index: int) -> None:
    """Integer ids in ``[0, vocab_size)``, or ``ignore_index``."""
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if not labels.numel():
        return
    bad = ((labels < 0) & (labels != ignore_index)) | (labels >= vocab_size)
    if bad.any():
        value = labels[bad][0].item()
        raise ValueError(
            f"labels hold id {value}, outside [0, {vocab_size}) (vocabulary size) and not "
            f"ignore_index={ignore_index}"
        )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype softmax maths runs in: float64 for float64 input, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def float_mask(mask: Tensor, like: Tensor, name: str = "mask") -> Tensor:
    """``mask`` as 0/1 in ``like``'s dtype; rejects a wrong shape and values other than 0 and 1."""
    check_shape(name, mask, like.shape, "the per-token values")
    if mask.dtype != torch.bool and mask.numel() and not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{name} must be boolean or hold only 0 and 1")
    return mask.to(like.dtype)


def masked_reduce(
    per_token: Tensor,
    mask: Tensor,
    reduction: str,
    empty_error: str = "mask selects no token: nothing to distil (check mask alignment)",
) -> Tensor:
    """Zero the unmasked tokens, then return them (``none``), their sum, or their mean.

    Masked-out values are replaced, not multiplied, so an ``inf`` or ``NaN`` there never leaks
    into the result. A mean over an empty mask raises ``ValueError(empty_error)``: nothing
    would be trained.
    """
    keep = float_mask(mask, per_token).bool()
    per_token = torch.where(keep, per_token, torch.zeros((), dtype=per_token.dtype))
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    num = keep.sum()
    if num.item() == 0:
        raise ValueError(empty_error)
    return per_token.sum() / num


def check_group_rewards(rewards: Tensor, group_size: int) -> None:
    """``rewards`` (B,) in whole groups of ``group_size`` consecutive rollouts."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (batch,), got shape {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2, got {group_size!r}")
    if rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a positive multiple of "
            f"group_size={group_size}"
        )
