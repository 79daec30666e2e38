"""Write a stage's result as a Hugging Face directory: the next stage's (or vLLM's) input.

Whatever the strategy split, the export is whole (it loads in one process): FSDP2 DTensors and
FSDP1 flat parameters are gathered with ``torch.distributed.checkpoint``'s full state dict,
ZeRO-3 partitions one parameter at a time. Every rank takes part (gathering is a collective);
rank 0 writes into a temporary ``<dir>.partial`` directory that then takes the target's place (the
old export moves to ``<dir>.old`` for the instant of the swap), so a crash never leaves a
half-written directory under the target's name. Inference settings are restored in the written
config: ``use_cache`` is true even when training turned it off for gradient checkpointing.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_qwen3.rollout.placement import is_sharded
from lit_qwen3.runtime.atomic import PARTIAL, replace_atomically


def _has_fsdp1_units(module: torch.nn.Module | None) -> bool:
    if module is None:
        return False
    from torch.distributed.fsdp import FullyShardedDataParallel

    return any(isinstance(m, FullyShardedDataParallel) for m in module.modules())


def _zero3_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gather ZeRO-3 partitions one parameter at a time (rank 0 keeps a CPU copy)."""
    import deepspeed

    rank0 = _rank() == 0
    names = set(model.state_dict().keys())
    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if rank0 and name in names:
                state[name] = param.detach().to("cpu", copy=True)
    for name, buffer in model.named_buffers():
        if rank0 and name in names:
            state[name] = buffer.detach().to("cpu", copy=True)
    return state


def _full_state_dict(
    model: torch.nn.Module, root: torch.nn.Module | None = None
) -> dict[str, torch.Tensor] | None:
    """All ranks must call this: gathering sharded parameters is a collective. None when the
    model is whole on every rank (``save_pretrained`` reads it directly)."""
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        return _zero3_state_dict(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if is_sharded(model):  # FSDP2 DTensors
        return get_model_state_dict(model, options=options)
    if _has_fsdp1_units(root) and root is not model:
        # FSDP1 wraps the LightningModule: gather from its root, keep the model's own keys
        full = get_model_state_dict(root, options=options)
        prefix = next(n for n, m in root.named_modules() if m is model) + "."
        prefix = prefix.replace("_fsdp_wrapped_module.", "")
        return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
    return None


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@contextmanager
def inference_config(model: PreTrainedModel):
    """The model's config with inference settings (KV cache on) while it is being saved."""
    saved = model.config.use_cache
    model.config.use_cache = True
    try:
        yield
    finally:
        model.config.use_cache = saved


def export_pretrained(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | os.PathLike,
    *,
    root: torch.nn.Module | None = None,
) -> Path:
    """``save_pretrained`` of model, tokenizer and chat template into ``directory`` (replaced).

    ``root``: the module the strategy wrapped (FSDP1 shards from there), when not ``model``.
    """
    directory = Path(directory)
    state_dict = _full_state_dict(model, root)
    if _rank() == 0:
        partial = directory.with_name(directory.name + PARTIAL)
        shutil.rmtree(partial, ignore_errors=True)
        with inference_config(model):
            model.save_pretrained(partial, state_dict=state_dict)
        tokenizer.save_pretrained(partial)
        replace_atomically(partial, directory)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return directory
