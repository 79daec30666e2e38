"""Steps 3 and 4: the cold-start subset and, after the cold start, the RL query set.

``cold_start``: one filtered response per query, a domain-balanced subset of at most ``size``
(the report trains briefly on few samples: instil the pattern, don't chase the score).

``rl_queries``: the report's four conditions on query-verifier pairs: (1) not used in the cold
start (``used_in_cold_start``); (2) learnable by the cold-start model: pass rate over G samples
strictly between the bounds (``unlearnable_unsolved``: never right, no signal;
``unlearnable_solved``: always right, nothing to learn); (3) as hard as possible and (4) spread
over domains (``rl_selection``: hardest first within each domain's share).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from lit_qwen3.chat import with_thinking_flag
from lit_qwen3.curation.context import Context, StepResult, describe_query, write_output
from lit_qwen3.curation.data import read_jsonl
from lit_qwen3.curation.selection import balance_domains, select_hardest
from lit_qwen3.curation.verdict import Verdict


def run_cold_start(ctx: Context) -> StepResult:
    """One response per query (seeded choice), a domain-balanced subset of at most ``size``."""
    cfg, seed = ctx.config.cold_start, ctx.config.seed
    ledger = ctx.ledger("cold_start")
    by_query: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_jsonl(ctx.path("responses", "responses")):
        by_query[row["query_id"]].append(row)
    rng = random.Random(f"lit-qwen3/curation/cold-start/{seed}")
    one_each = [rng.choice(by_query[key]) for key in sorted(by_query)]
    shares = ctx.config.queries.domains.shares if cfg.shares is None else cfg.shares
    chosen = balance_domains(one_each, shares, total=cfg.size, seed=seed)
    ledger.record(
        "cold_start_subset",
        len(one_each),
        len(chosen),
        unit="queries",
        settings={"size": cfg.size, "shares": shares},
        domains=dict(Counter(row["domain"] for row in chosen)),
        config_key="cold_start",
    )
    if cfg.flag:
        chosen = [{**row, "messages": with_thinking_flag(row["messages"], True)} for row in chosen]
    output = write_output(ctx.path("cold_start", "cold_start"), chosen)
    return StepResult(ledger.filters, {"cold_start": output})


def run_rl_queries(ctx: Context) -> StepResult:
    """Queries not in the cold start, learnable by the policy, hardest first, spread."""
    cfg, seed = ctx.config.rl_queries, ctx.config.seed
    ledger = ctx.ledger("rl_queries")
    queries = read_jsonl(ctx.path("queries", "queries"))
    used = {row["query_id"] for row in read_jsonl(ctx.path("cold_start", "cold_start"))}
    trained = Verdict.removed("trained on in the cold start")
    pool = ledger.run(
        "used_in_cold_start",
        queries,
        lambda q: trained if q["id"] in used else Verdict.kept(),
        describe=describe_query,
        unit="queries",
    )
    thinking = cfg.mode != "no_think"
    samples = ctx.sample(
        "rl_queries",
        "policy_samples",
        cfg.policy,
        pool,
        cfg.samples,
        thinking=thinking,
        sampling=cfg.sampling,
        batch_size=cfg.batch_size,
    )
    rate = ctx.pass_rates(pool, samples, thinking=thinking, what="policy samples")
    bounds = {
        "g": cfg.samples,
        "min_pass_rate": cfg.min_pass_rate,
        "max_pass_rate": cfg.max_pass_rate,
    }
    low, high = cfg.min_pass_rate, cfg.max_pass_rate
    pool = ledger.run(
        "unlearnable_unsolved",
        pool,
        lambda q: (
            Verdict.removed(f"pass rate {rate[q['id']]:.2f} <= {low:g}")
            if rate[q["id"]] <= low
            else Verdict.kept()
        ),
        describe=describe_query,
        settings=bounds,
        unit="queries",
        config_key="rl_queries.min_pass_rate",
    )
    pool = ledger.run(
        "unlearnable_solved",
        pool,
        lambda q: (
            Verdict.removed(f"pass rate {rate[q['id']]:.2f} >= {high:g}")
            if rate[q["id"]] >= high
            else Verdict.kept()
        ),
        describe=describe_query,
        settings=bounds,
        unit="queries",
        config_key="rl_queries.max_pass_rate",
    )
    rows = [{**row, "pass_rate": rate[row["id"]], "mode": cfg.mode} for row in pool]
    shares = ctx.config.queries.domains.shares if cfg.shares is None else cfg.shares
    chosen = select_hardest(rows, size=cfg.size, shares=shares, seed=seed)
    ledger.record(
        "rl_selection",
        len(rows),
        len(chosen),
        unit="queries",
        settings={"size": cfg.size, "shares": shares},
        domains=dict(Counter(row["domain"] for row in chosen)),
        pass_rates={str(p): n for p, n in sorted(Counter(r["pass_rate"] for r in chosen).items())},
    )
    ledger.save()
    output = write_output(ctx.path("rl_queries", "rl_queries"), chosen)
    return StepResult(ledger.filters, {"rl_queries": output}, {"policy": cfg.policy})
