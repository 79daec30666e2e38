"""Step 2, ``responses``: N teacher candidates per query in thinking mode, keep queries with
pass@N > 0 (``pass_at_n``), then the six response filters in the report's order:
``wrong_answer``, ``repetition``, ``guess``, ``think_answer_mismatch``, ``language_mix``,
``near_duplicate``. Each removed response is counted once, by the first filter that removes it.
The survivors are written as conversations (``reasoning_content`` and ``content``)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lit_qwen3.chat import split_thinking
from lit_qwen3.curation.context import (
    Context,
    Row,
    StepResult,
    describe_query,
    settings_of,
    write_output,
)
from lit_qwen3.curation.data import query_text, read_jsonl
from lit_qwen3.curation.response_filters import (
    guess,
    language_mix,
    near_duplicate,
    repetition,
    think_answer_mismatch,
    wrong_answer,
)
from lit_qwen3.curation.similarity import NgramIndex
from lit_qwen3.curation.verdict import Verdict


def candidates_of(
    queries: Sequence[Row], generations: Mapping[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One record per generated response: its query, index, text split into thinking and
    answer, and (toy only) the fault the generator injected."""
    out = []
    for query in queries:
        for record in generations[query["id"]]:
            parsed = split_thinking(record["completion"])
            out.append(
                {
                    "query": query,
                    "index": record["index"],
                    "completion": record["completion"],
                    "thinking": parsed.thinking,
                    "answer": parsed.answer,
                    "toy_fault": record.get("toy_fault"),
                }
            )
    return out


def describe_candidate(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """What ``rejected.jsonl`` shows of a removed response."""
    out = {"id": candidate["query"]["id"], "index": candidate["index"]}
    if candidate.get("toy_fault"):
        out["toy_fault"] = candidate["toy_fault"]
    if candidate["query"].get("toy_fault"):
        out["query_toy_fault"] = candidate["query"]["toy_fault"]
    out["completion"] = candidate["completion"][:500]
    return out


def body(candidate: Mapping[str, Any]) -> str:
    """Thinking and answer, without the think tags."""
    return f"{candidate['thinking'] or ''}\n{candidate['answer']}"


def conversation(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """A kept response as a ``ConversationDataModule`` row."""
    query = candidate["query"]
    reply = {
        "role": "assistant",
        "reasoning_content": candidate["thinking"] or "",
        "content": candidate["answer"],
    }
    row = {
        "id": f"{query['id']}#{candidate['index']}",
        "query_id": query["id"],
        "messages": [*query["messages"], reply],
        "answer": query.get("answer"),
        "domain": query["domain"],
    }
    if query.get("difficulty") is not None:
        row["difficulty"] = query["difficulty"]
    return row


def median_thinking_words(candidates: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per query, the median thinking length (words) of its responses: the length its
    difficulty warrants, as far as the teacher shows it."""
    lengths: dict[str, list[int]] = defaultdict(list)
    for c in candidates:
        lengths[c["query"]["id"]].append(len((c["thinking"] or "").split()))
    return {key: statistics.median(values) for key, values in lengths.items()}


def run_responses(ctx: Context) -> StepResult:
    """N teacher candidates per query, pass@N > 0, then the six response filters."""
    cfg = ctx.config.responses
    ledger = ctx.ledger("responses")
    queries = read_jsonl(ctx.path("queries", "queries"))
    validation = read_jsonl(ctx.path("queries", "validation"))
    generations = ctx.sample(
        "responses",
        "candidates",
        cfg.teacher,
        queries,
        cfg.samples,
        thinking=True,
        sampling=cfg.sampling,
        batch_size=cfg.batch_size,
    )
    candidates = candidates_of(queries, generations)
    pairs = [(c["query"], c["completion"]) for c in candidates]
    for c, score in zip(
        candidates, ctx.scores(pairs, thinking=True, what="candidates"), strict=True
    ):
        c["score"] = score
    f = cfg.filters
    solved = {c["query"]["id"] for c in candidates if c["score"] >= f.wrong_answer.min_score}
    unsolved = Verdict.removed(f"none of {cfg.samples} candidates correct")
    queries = ledger.run(
        "pass_at_n",
        queries,
        lambda q: Verdict.kept() if q["id"] in solved else unsolved,
        describe=describe_query,
        settings={"n": cfg.samples, "min_score": f.wrong_answer.min_score},
        unit="queries",
        config_key="responses.samples",
    )
    kept_ids = {q["id"] for q in queries}
    candidates = [c for c in candidates if c["query"]["id"] in kept_ids]

    def run(name: str, decide: Callable[[dict], Verdict]) -> None:
        nonlocal candidates
        section = getattr(f, name)
        if not section.enabled:
            return
        candidates = ledger.run(
            name,
            candidates,
            decide,
            describe=describe_candidate,
            settings=settings_of(section),
            unit="responses",
            config_key=f"responses.filters.{name}",
        )

    run("wrong_answer", lambda c: wrong_answer(c["score"], min_score=f.wrong_answer.min_score))
    run(
        "repetition",
        lambda c: repetition(body(c), n=f.repetition.n, max_ratio=f.repetition.max_ratio),
    )
    median = median_thinking_words(candidates)  # after repetition: loops would inflate it
    run(
        "guess",
        lambda c: guess(
            c["thinking"],
            c["answer"],
            expected_words=median[c["query"]["id"]],
            min_ratio=f.guess.min_ratio,
            hedges=f.guess.hedges,
            tail_chars=f.guess.tail_chars,
        ),
    )
    run(
        "think_answer_mismatch",
        lambda c: think_answer_mismatch(
            c["thinking"], c["answer"], pattern=f.think_answer_mismatch.pattern
        ),
    )
    run(
        "language_mix",
        lambda c: language_mix(
            body(c),
            query=query_text(c["query"]),
            allowed_scripts=f.language_mix.allowed_scripts,
            max_share=f.language_mix.max_share,
        ),
    )
    index = NgramIndex(((v["id"], query_text(v)) for v in validation), n=f.near_duplicate.n)
    by_query: dict[str, Verdict] = {}

    def near(c: dict) -> Verdict:
        key = c["query"]["id"]
        if key not in by_query:
            text = query_text(c["query"])
            by_query[key] = near_duplicate(text, index, threshold=f.near_duplicate.threshold)
        return by_query[key]

    run("near_duplicate", near)

    ledger.save()
    rows = [conversation(c) for c in candidates]
    return StepResult(
        ledger.filters,
        {"responses": write_output(ctx.path("responses", "responses"), rows)},
        {"teacher": cfg.teacher},
        {"queries_with_responses": len({c["query"]["id"] for c in candidates})},
    )
