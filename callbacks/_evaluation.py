"""What the evaluation callbacks share: queries, each rank's share, and metrics synced over ranks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torchmetrics import MeanMetric

from lit_qwen3.queries import evaluation_rows


def evaluation_queries(
    trainer: Trainer, queries: Sequence[dict[str, Any]] | str | None, limit: int | None
) -> list[dict[str, Any]]:
    """The callback's own queries (a list, or a file of query rows), else the datamodule's
    ``val_queries``; at most ``limit``."""
    if isinstance(queries, str):
        queries = evaluation_rows(queries)
    if queries is None:
        queries = getattr(trainer.datamodule, "val_queries", None)
        if queries is None:
            raise ValueError(
                "no evaluation queries: pass `queries=[{'messages': [...], 'answer': ...}]` to "
                "the callback or use a datamodule with a `val_queries` attribute"
            )
    queries = list(queries)[:limit] if limit is not None else list(queries)
    if not queries:
        raise ValueError("the evaluation query list is empty")
    return queries


def rank_share(queries: list[dict[str, Any]], trainer: Trainer) -> list[dict[str, Any]]:
    """This rank's strided share; every rank gets the same count (the last items repeat)."""
    world, rank = trainer.world_size, trainer.global_rank
    if world == 1:
        return queries
    per_rank = -(-len(queries) // world)
    padded = queries + queries[: per_rank * world - len(queries)]
    return padded[rank::world]


def prompt_text(query: dict[str, Any]) -> str:
    """The text of a query's last user turn (what a samples table shows as the prompt)."""
    users = [m for m in query.get("messages", []) if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def sample_rows(
    samples: list[dict[str, Any]], queries: list[dict[str, Any]], step: int, limit: int
) -> list[dict[str, Any]]:
    """Rows of an evaluation's samples table: step, mode, budget, prompt, completion, verdict,
    reference, thinking tokens (the first ``limit`` samples)."""
    return [
        {
            "step": step,
            "mode": s["mode"],
            "budget": s["budget"],
            "prompt": prompt_text(queries[s["query"]]),
            "completion": s["completion"],
            "verdict": "correct" if s["correct"] else "wrong",
            "reference": s["reference"],
            "thinking_tokens": s["thinking_tokens"],
        }
        for s in samples[:limit]
    ]


def default_verifier(trainer: Trainer, verifier: str | None) -> str:
    """The callback's verifier, else the datamodule's ``verifier``, else math-verify."""
    return verifier or getattr(trainer.datamodule, "verifier", None) or "math"


def require_sampling_module(pl_module: LightningModule, callback: str) -> None:
    for attribute in ("model", "tokenizer"):
        if getattr(pl_module, attribute, None) is None:
            raise AttributeError(
                f"{callback} needs the LightningModule to expose `{attribute}` (a Hugging Face "
                f"causal LM and its tokenizer); {type(pl_module).__name__} has none"
            )


def synced_mean(value: float, weight: int, device: torch.device) -> float:
    """The weight-averaged ``value`` over all ranks (each rank passes its local mean)."""
    mean = MeanMetric().to(device)
    mean.update(torch.tensor(value, device=device), weight=weight)
    return float(mean.compute())
