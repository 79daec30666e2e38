"""What the steps share: the files each writes and reads, the config, the reward composite,
completion sources, and sampling-then-scoring with the cache that makes a step resumable.

Files under ``output_dir`` (the datamodules read the first five):

- ``validation.jsonl``: the reserved validation queries (query format);
- ``queries.jsonl``: filtered, domain-balanced queries (query format, ``id``, ``domain``);
- ``responses.jsonl``: every response that passed the six filters, as conversations;
- ``cold_start.jsonl``: the cold-start subset (``ConversationDataModule``);
- ``rl_queries.jsonl``: the RL query set (``QueryDataModule``), hardest first, ``pass_rate``;
- ``work/<step>/``: generation caches and ``rejected.jsonl`` (filter and reason per item).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lit_qwen3.chat import with_thinking_flag
from lit_qwen3.curation.config import Curation
from lit_qwen3.curation.data import query_text, reward_metadata, write_jsonl
from lit_qwen3.curation.generators import build_source, generate_cached
from lit_qwen3.curation.verdict import FilterLedger, track

#: Files each step writes under ``output_dir``; a step is finished when they exist and the
#: manifest records it.
OUTPUTS: dict[str, dict[str, str]] = {
    "queries": {"queries": "queries.jsonl", "validation": "validation.jsonl"},
    "responses": {"responses": "responses.jsonl"},
    "cold_start": {"cold_start": "cold_start.jsonl"},
    "rl_queries": {"rl_queries": "rl_queries.jsonl"},
}
#: What a step reads: the steps whose outputs must be on disk first.
NEEDS: dict[str, tuple[str, ...]] = {
    "queries": (),
    "responses": ("queries",),
    "cold_start": ("responses",),
    "rl_queries": ("queries", "cold_start"),
}

Row = Mapping[str, Any]


@dataclass
class StepResult:
    """What a step reports to the manifest."""

    filters: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    models: dict[str, str | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Context:
    """The config, the output folder and the reward composite, shared by the steps."""

    def __init__(self, config: Curation, *, resume: bool) -> None:
        self.config = config
        self.resume = resume
        self.out = Path(config.output_dir)
        self.inputs: dict[str, Path] = {}  # step -> folder of its outputs, when not ``out``
        self._composite = None
        self.models: dict[str, Any] = {}  # loaded models of the running step, by name

    @property
    def composite(self) -> Any:
        """The configured rewards as one :class:`~lit_qwen3.rewards.CompositeReward`."""
        if self._composite is None:
            from lit_qwen3.rewards import CompositeReward

            self._composite = CompositeReward(
                dict(self.config.rewards),
                timeout=self.config.reward_timeout,
                num_workers=self.config.reward_workers,
            )
        return self._composite

    def release_models(self) -> None:
        """Drop the step's models (the next step may need the memory for another)."""
        if self.models:
            self.models.clear()
            import gc

            gc.collect()

    def close(self) -> None:
        self.release_models()
        if self._composite is not None:
            self._composite.close()

    def path(self, step: str, name: str) -> Path:
        """Output ``name`` of ``step``: in ``output_dir``, or where ``input_dir`` holds it."""
        return self.inputs.get(step, self.out) / OUTPUTS[step][name]

    def work(self, step: str) -> Path:
        path = self.out / "work" / step
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ledger(self, step: str) -> FilterLedger:
        return FilterLedger(
            step, progress=self.config.progress, rejected_path=self.work(step) / "rejected.jsonl"
        )

    def source(self, name: str, sampling: Any = None) -> Any:
        c = self.config
        return build_source(
            name,
            sampling=sampling,
            toy_program=c.toy_program,
            device=c.device,
            dtype=c.dtype,
            loaded=self.models,
        )

    def sample(
        self,
        step: str,
        cache: str,
        model: str,
        rows: Sequence[Row],
        n: int,
        *,
        thinking: bool,
        sampling: Any,
        batch_size: int,
    ) -> dict[str, list[dict[str, Any]]]:
        """``n`` completions per row from ``model``, cached in ``work/<step>/<cache>.jsonl``."""
        return generate_cached(
            self.source(model, sampling),
            rows,
            n,
            thinking=thinking,
            batch_size=batch_size,
            seed=self.config.seed,
            cache=self.work(step) / f"{cache}.jsonl",
            resume=self.resume,
            progress=self.config.progress,
            description=f"{step}: {cache}",
        )

    def scores(self, pairs: Sequence[tuple[Row, str]], *, thinking: bool, what: str) -> list[float]:
        """The composite's score of each (query row, completion), in batches under a bar."""
        from lit_qwen3.rewards import Sample

        samples = [
            Sample.from_completion(
                with_thinking_flag(query["messages"], thinking),
                completion,
                metadata=reward_metadata(query),
            )
            for query, completion in pairs
        ]
        batches = [samples[i : i + 256] for i in range(0, len(samples), 256)]
        scores: list[float] = []
        for batch in track(batches, f"score {what}", self.config.progress):
            scores.extend(result.score for result in self.composite.score_batch(batch))
        return scores

    def pass_rates(
        self,
        rows: Sequence[Row],
        samples: Mapping[str, list[dict[str, Any]]],
        *,
        thinking: bool,
        min_score: float = 1.0,
        what: str,
    ) -> dict[str, float]:
        """Share of each row's samples that score at least ``min_score``, by row id."""
        pairs = [(row, s["completion"]) for row in rows for s in samples[row["id"]]]
        scores = iter(self.scores(pairs, thinking=thinking, what=what))
        rates = {}
        for row in rows:
            n = len(samples[row["id"]])
            rates[row["id"]] = sum(next(scores) >= min_score for _ in range(n)) / n
        return rates


def describe_query(row: Row) -> dict[str, Any]:
    """What ``rejected.jsonl`` shows of a removed query."""
    out = {"id": row["id"], "query": query_text(row)[:200]}
    if row.get("toy_fault"):
        out["toy_fault"] = row["toy_fault"]
    return out


def settings_of(section: Any) -> dict[str, Any]:
    """A filter's settings for the manifest (its dataclass without ``enabled``)."""
    return {k: v for k, v in asdict(section).items() if k != "enabled"}


def write_output(path: Path, rows: Sequence[Row]) -> dict[str, Any]:
    """Write an output file; the manifest's record of it."""
    write_jsonl(path, rows)
    return {"path": path.name, "rows": len(rows)}
