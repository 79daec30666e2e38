"""Write a stage's result as a Hugging Face directory: the next stage's (or vLLM's) input.

Sharded weights (FSDP2 DTensors) are gathered on every rank, written by rank 0 only, into a
temporary ``<dir>.partial`` directory that then takes the target's place (the old export moves to
``<dir>.old`` for the instant of the swap), so a crash never leaves a half-written directory under
the target's name. Inference settings are restored in the written config: ``use_cache`` is true
even when training turned it off for gradient checkpointing.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_qwen3.atomic import PARTIAL, replace_atomically
from lit_qwen3.generation import is_sharded


def _full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """All ranks must call this: gathering sharded parameters is a collective."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


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
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike
) -> Path:
    """``save_pretrained`` of model, tokenizer and chat template into ``directory`` (replaced)."""
    directory = Path(directory)
    state_dict = _full_state_dict(model)
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
