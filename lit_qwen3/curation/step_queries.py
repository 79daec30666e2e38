"""Step 1, ``queries``: load the queries, reserve validation, filter, annotate and balance.

Order: check every row (verifier spec, known domain) -> reserve the validation set (rows marked
``split: val`` and ``validation_size`` drawn at random) before anything else, so nothing a
later choice depends on leaks into it -> ``multiple_questions`` -> ``open_ended`` ->
``judge_not_verifiable`` (with a judge model) -> domain annotation (``no_domain`` removes rows
nothing labels) -> ``solved_without_thinking`` -> ``domain_balance``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
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
from lit_qwen3.curation.data import (
    VALIDATION_SPLITS,
    check_domains,
    check_verifier_specs,
    load_query_rows,
    query_text,
)
from lit_qwen3.curation.query_filters import (
    judge_verifiable,
    multiple_questions,
    open_ended,
    parse_choice,
    rule_domain,
    solved_without_thinking,
)
from lit_qwen3.curation.selection import balance_domains
from lit_qwen3.curation.verdict import FilterLedger, Verdict


def load_queries(ctx: Context) -> tuple[list[dict[str, Any]], list[str]]:
    """The source's rows and where each came from (for errors)."""
    cfg = ctx.config.queries
    if cfg.source == "toy":
        rows = cfg.toy.rows()
        return rows, [f"toy query {row['id']}" for row in rows]
    return load_query_rows(cfg.source)


def reserve_validation(
    ctx: Context, rows: list[dict[str, Any]], ledger: FilterLedger
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(validation, pool): marked rows plus ``validation_size`` drawn at random (seeded)."""
    size = ctx.config.queries.validation_size
    marked = [row for row in rows if row.get("split") in VALIDATION_SPLITS]
    rest = [row for row in rows if row.get("split") not in VALIDATION_SPLITS]
    if size > len(rest):
        raise ValueError(f"queries.validation_size={size} but only {len(rest)} unmarked rows")
    rng = random.Random(f"lit-qwen3/curation/validation/{ctx.config.seed}")
    drawn = set(rng.sample(range(len(rest)), size))
    validation = marked + [row for i, row in enumerate(rest) if i in drawn]
    pool = [row for i, row in enumerate(rest) if i not in drawn]
    ledger.record(
        "validation_split",
        len(rows),
        len(pool),
        unit="queries",
        settings={"validation_size": size, "marked": len(marked)},
        reserved=len(validation),
        config_key="queries.validation_size",
    )
    return validation, pool


def ask_judge(ctx: Context, rows: Sequence[Row], prompt: str, name: str) -> dict[str, str]:
    """The judge's reply (greedy, non-thinking, answer part) to ``prompt`` about each row."""
    from lit_qwen3.rollout.generation import SamplingConfig

    judge, choices = ctx.config.queries.judge, ", ".join(ctx.config.queries.domains.shares)
    questions = [
        {
            "id": row["id"],
            "messages": [
                {"role": "user", "content": prompt.format(query=query_text(row), choices=choices)}
            ],
        }
        for row in rows
    ]
    replies = ctx.sample(
        "queries",
        name,
        judge.model,
        questions,
        1,
        thinking=False,
        sampling=SamplingConfig(do_sample=False, max_new_tokens=judge.max_new_tokens),
        batch_size=judge.batch_size,
    )
    return {key: split_thinking(value[0]["completion"]).answer for key, value in replies.items()}


def annotate_domains(ctx: Context, pool: list[dict[str, Any]]) -> None:
    """Label rows without a domain: the first matching rule, else the judge (when there is
    one and domains are configured), else the default (``"default"`` without shares)."""
    domains, judge = ctx.config.queries.domains, ctx.config.queries.judge
    unlabelled = [row for row in pool if row.get("domain") is None]
    for row in unlabelled:
        row["domain"] = rule_domain(query_text(row), domains.rules)
    asked = [row for row in unlabelled if row["domain"] is None]
    if judge.model and domains.shares and asked:
        answers = ask_judge(ctx, asked, judge.domain_prompt, "judge_domain")
        for row in asked:
            row["domain"] = parse_choice(answers[row["id"]], list(domains.shares))
    fallback = domains.default or (None if domains.shares else "default")
    for row in unlabelled:
        row["domain"] = row["domain"] or fallback


def run_queries(ctx: Context) -> StepResult:
    """Load, reserve validation, filter (rules, judge, no-think), annotate and balance."""
    cfg = ctx.config.queries
    ledger = ctx.ledger("queries")
    rows, where = load_queries(ctx)
    check_verifier_specs(rows, ctx.composite, where)
    shares = cfg.domains.shares
    if shares:
        check_domains(rows, shares, where)
    validation, pool = reserve_validation(ctx, rows, ledger)
    for row in validation:  # by the rules only (no judge): for per-domain evaluation
        if row.get("domain") is None:
            found = rule_domain(query_text(row), cfg.domains.rules)
            row["domain"] = found or cfg.domains.default or "default"

    def run(name: str, settings: dict, key: str, decide: Callable[[dict], Verdict]) -> None:
        nonlocal pool
        pool = ledger.run(
            name,
            pool,
            decide,
            describe=describe_query,
            settings=settings,
            unit="queries",
            config_key=f"queries.{key}",
        )

    mq, oe, judge = cfg.multiple_questions, cfg.open_ended, cfg.judge
    if mq.enabled:
        run(
            "multiple_questions",
            settings_of(mq),
            "multiple_questions",
            lambda row: multiple_questions(query_text(row), max_questions=mq.max_questions),
        )
    if oe.enabled:
        run(
            "open_ended",
            settings_of(oe),
            "open_ended",
            lambda row: open_ended(query_text(row), markers=oe.markers),
        )
    if judge.model:
        replies = ask_judge(ctx, pool, judge.verifiable_prompt, "judge_verifiable")
        run(
            "judge_not_verifiable",
            {"model": judge.model, "keep_unparsed": judge.keep_unparsed},
            "judge",
            lambda row: judge_verifiable(replies[row["id"]], keep_unparsed=judge.keep_unparsed),
        )

    pool = [dict(row) for row in pool]
    annotate_domains(ctx, pool)
    unlabelled = Verdict.removed("no rule, judge answer or default labels it")
    run(
        "no_domain",
        settings_of(cfg.domains),
        "domains",
        lambda row: Verdict.kept() if row["domain"] else unlabelled,
    )

    no_think = cfg.solved_without_thinking
    if no_think.model:
        from lit_qwen3.rollout.generation import SamplingConfig

        sampling = SamplingConfig.qwen3(False, max_new_tokens=no_think.max_new_tokens)
        samples = ctx.sample(
            "queries",
            "no_think",
            no_think.model,
            pool,
            no_think.samples,
            thinking=False,
            sampling=sampling,
            batch_size=no_think.batch_size,
        )
        rate = ctx.pass_rates(pool, samples, thinking=False, what="no-think samples")
        for row in pool:
            row["no_think_pass_rate"] = rate[row["id"]]
        run(
            "solved_without_thinking",
            settings_of(no_think),
            "solved_without_thinking",
            lambda row: solved_without_thinking(
                rate[row["id"]], max_pass_rate=no_think.max_pass_rate
            ),
        )

    before = len(pool)
    present = Counter(row["domain"] for row in pool)
    empty = [d for d, s in shares.items() if s > 0 and not present[d]]
    if empty:
        raise ValueError(
            f"queries: domain(s) {empty} have a share in queries.domains.shares but no query "
            f"left after filtering ({before} queries: {dict(present)})"
        )
    pool = balance_domains(pool, shares, total=cfg.max_queries, seed=ctx.config.seed)
    ledger.record(
        "domain_balance",
        before,
        len(pool),
        unit="queries",
        settings={"shares": shares, "max_queries": cfg.max_queries},
        domains=dict(Counter(row["domain"] for row in pool)),
        config_key="queries.domains",
    )
    ledger.save()
    outputs = {
        "queries": write_output(ctx.path("queries", "queries"), pool),
        "validation": write_output(ctx.path("queries", "validation"), validation),
    }
    models = {"judge": judge.model, "no_think": no_think.model}
    return StepResult(ledger.filters, outputs, models)
