"""Where completions come from: a local Hugging Face model through the rollout sampler, or the
toy task's synthetic ``toy-program``; and :func:`generate_cached`, which samples N per query in
batches under a progress bar and appends each finished batch to a JSONL cache, so a killed run
resumes at the first unfinished batch and writes what an uninterrupted one would.

A source is anything with ``name`` and ``generate(queries, indices, *, thinking, seed)``
returning one ``{"completion": str, ...}`` per (query, sample index).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from lit_qwen3.curation.data import append_jsonl, read_jsonl, write_jsonl
from lit_qwen3.curation.toy import TOY_PROGRAM, ToyProgram
from lit_qwen3.curation.verdict import progress_bar

__all__ = [
    "CompletionSource",
    "ModelSource",
    "build_source",
    "generate_cached",
    "resolve_device",
]


class CompletionSource(Protocol):
    name: str

    def generate(
        self,
        queries: Sequence[Mapping[str, Any]],
        indices: Sequence[int],
        *,
        thinking: bool,
        seed: int,
    ) -> list[dict[str, Any]]: ...


def resolve_device(device: str) -> str:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelSource:
    """A local causal LM with a chat template (directory, preset or cached Qwen3 name), sampled
    with :class:`~lit_qwen3.rollout.generation.RolloutSampler` in the requested thinking mode."""

    def __init__(
        self,
        name: str,
        sampling: Any,
        *,
        device: str = "auto",
        dtype: str | None = None,
    ) -> None:
        import torch

        from lit_qwen3.models import load_model, load_tokenizer
        from lit_qwen3.rollout.generation import RolloutSampler

        self.name = str(name)
        self.device = torch.device(resolve_device(device))
        self.tokenizer = load_tokenizer(name)
        self.model = load_model(name, dtype=dtype, seed=0)  # seed: presets init reproducibly
        self.model.to(self.device).eval()
        self.sampler = RolloutSampler(self.tokenizer, sampling)

    def with_sampling(self, sampling: Any) -> ModelSource:
        """The same loaded model with other sampling settings (no second copy of the weights)."""
        from lit_qwen3.rollout.generation import RolloutSampler

        other = copy.copy(self)
        other.sampler = RolloutSampler(self.tokenizer, sampling)
        return other

    def generate(
        self,
        queries: Sequence[Mapping[str, Any]],
        indices: Sequence[int],
        *,
        thinking: bool,
        seed: int,
    ) -> list[dict[str, Any]]:
        import torch

        from lit_qwen3.evaluation import encode_prompts

        del indices  # the batch seed decides the draws
        prompts = encode_prompts(self.tokenizer, queries, thinking=thinking)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        rollouts = self.sampler.sample(self.model, prompts, generator=generator)
        texts = rollouts.texts(self.tokenizer)
        return [
            {"completion": text, "truncated": bool(cut)}
            for text, cut in zip(texts, rollouts.truncated.tolist(), strict=True)
        ]


def build_source(
    name: str,
    *,
    sampling: Any = None,
    toy_program: ToyProgram | None = None,
    device: str = "auto",
    dtype: str | None = None,
    loaded: dict[str, ModelSource] | None = None,
) -> CompletionSource:
    """``toy-program`` (the synthetic source) or a model loaded by :class:`ModelSource`;
    ``loaded`` (name -> source) reuses a model already in memory."""
    if name == TOY_PROGRAM:
        return toy_program if toy_program is not None else ToyProgram()
    if sampling is None:
        from lit_qwen3.rollout.generation import SamplingConfig

        sampling = SamplingConfig.qwen3(True)
    if loaded is not None and name in loaded:
        return loaded[name].with_sampling(sampling)
    source = ModelSource(name, sampling, device=device, dtype=dtype)
    if loaded is not None:
        loaded[name] = source
    return source


def _batch_seed(seed: int, batch: int) -> int:
    return zlib.crc32(f"{seed}/{batch}".encode())


def generate_cached(
    source: CompletionSource,
    queries: Sequence[Mapping[str, Any]],
    n: int,
    *,
    thinking: bool,
    batch_size: int,
    seed: int,
    cache: Path,
    resume: bool,
    progress: bool = True,
    description: str = "generate",
) -> dict[str, list[dict[str, Any]]]:
    """``n`` completions per query (by query ``id``, in sample order), sampled in batches of
    ``batch_size`` rows; each finished batch is appended to ``cache``. With ``resume`` the
    batches already in the cache are not sampled again (a batch's seed depends on its
    position, so the result is the same as one uninterrupted run)."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    rows = [(query, j) for query in queries for j in range(n)]
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if resume and cache.exists():
        kept = read_jsonl(cache)
        write_jsonl(cache, kept)  # drop a line cut off by a kill before appending
        done = {(r["id"], r["index"]): r for r in kept}
    elif cache.exists():
        cache.unlink()
    with progress_bar(progress) as bar:
        task = bar.add_task(f"{description} ({source.name})", total=len(rows))
        for batch, start in enumerate(range(0, len(rows), batch_size)):
            chunk = rows[start : start + batch_size]
            todo = [(q, j) for q, j in chunk if (q["id"], j) not in done]
            if todo:
                outputs = source.generate(
                    [q for q, _ in todo],
                    [j for _, j in todo],
                    thinking=thinking,
                    seed=_batch_seed(seed, batch),
                )
                records = [
                    {"id": q["id"], "index": j, **out}
                    for (q, j), out in zip(todo, outputs, strict=True)
                ]
                append_jsonl(cache, records)
                done.update({(r["id"], r["index"]): r for r in records})
            bar.advance(task, len(chunk))
    return {q["id"]: [done[(q["id"], j)] for j in range(n)] for q in queries}
