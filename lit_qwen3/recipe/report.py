"""The pipeline's report: the Qwen3 report's Figure 2 and Tables 21-22 in miniature.

Data first: :func:`evaluate_stages` samples every stage's model on held-out problems (graded
toy problems of 1-8 digits, a spread of required thinking lengths, as TOY_NOTES asks for a
smooth budget curve) and returns plain numbers with their per-problem scores; the headline
numbers cover ``headline_digits`` (the range the models were trained on), the rest is a
generalisation column. :func:`write_report` decides each claim on a 95 % interval
(:mod:`lit_qwen3.recipe.findings`), stores everything in ``report.json`` (keys below), renders
``report.md`` (and ``report.html``, its figures embedded) with PNG plots, and logs them to the
pipeline's parent MLflow run and each number to the run of the stage it describes
(:mod:`lit_qwen3.recipe.report_mlflow`).

``report.json``:
``stages.<stage>.{think_pass1, no_think_pass1, think_follow, flag_following,
instruction_following}`` (each with ``<name>_ci``, ``per_digit``, ``generalisation`` and the
per-problem ``scores``) for ``cold_start``, ``reasoning_rl``, ``thinking_fusion``,
``general_rl``; ``figure2.{budgets, think_pass1, no_think_pass1, models}`` (the final model's
curve first-class, each model's under ``models``); ``table21.{off_policy, rl, on_policy}.{pass1,
pass_k, k, seconds, flops}``; ``findings: [{name, claim, verdict, delta, ci95}]``;
``wall_seconds``. A number is cached under ``root/report/`` with the hash of its model's files
and of every setting that produced it, and reused only while both are unchanged. Nothing is
tuned to the outcome: where a result of the paper does not come out, the report says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lit_qwen3.ops.intervals import bootstrap_mean
from lit_qwen3.recipe.findings import compute_findings
from lit_qwen3.recipe.report_html import render_html
from lit_qwen3.recipe.report_mlflow import log_report
from lit_qwen3.recipe.report_render import plot_figure2, render_markdown

__all__ = ["ReportConfig", "evaluate_stages", "write_report"]


@dataclass
class ReportConfig:
    """What the report evaluates; stage names are the pipeline's."""

    stages: dict[str, str] = field(default_factory=dict)
    """Table 22 rows (``cold_start``...) -> pipeline stage names."""
    table21: dict[str, str] = field(default_factory=dict)
    """``off_policy``, ``rl``, ``on_policy`` -> pipeline stage names."""
    figure2: list[str] = field(default_factory=list)
    """Stages whose budget curves are drawn (the fused and the final model)."""
    n_per_level: int = 24
    """Held-out problems per digit count (1-8 digits)."""
    digits: list[int] = field(default_factory=lambda: list(range(1, 9)))
    n_samples: int = 4
    """Samples per problem for pass@1 (the mean of the per-sample accuracy)."""
    k: int = 16
    """Table 21's pass@k (``k`` samples per problem)."""
    budgets: list[int] = field(default_factory=lambda: [8, 16, 32, 48, 64, 96, 128])
    max_new_tokens: int = 192
    stop_thinking: str = "\n</think>\n\n"
    instruction_queries: int = 64
    """Toy IFEval-format prompts for Table 22's instruction column (0: leave it out)."""
    data: str | None = None
    """An evaluation file (JSONL or a ``datasets`` directory) in any query format, public ones
    included (AIME's ``problem``/``answer``, MATH-500, LiveCodeBench): evaluated instead of
    the toy problems (``n_per_level``, ``digits`` and ``headline_digits`` then do nothing)."""
    num_queries: int | None = None
    """The first this many rows of ``data`` (None: all)."""
    verifier: str | None = None
    """How answers are checked: a reward name (``math``, ``code``); default ``arithmetic`` for
    the toy problems, ``math`` for ``data``."""
    seed: int = 0
    headline_digits: list[int] | None = None
    """Digit counts of the headline numbers and findings (the range the models were trained
    on); problems of other lengths form the generalisation column. ``None``: every problem."""

    def checker(self) -> str:
        """The verifier in effect."""
        return self.verifier or ("math" if self.data else "arithmetic")


def eval_queries(config: ReportConfig) -> list[dict[str, Any]]:
    """``data``'s queries, else held-out graded problems (the toy task's test split, never
    trained on)."""
    if config.data is not None:
        from lit_qwen3.queries import evaluation_rows

        rows = evaluation_rows(config.data)
        return rows[: config.num_queries] if config.num_queries is not None else rows
    from lit_qwen3.datamodules.arithmetic import eval_problems

    problems = eval_problems(config.seed, config.n_per_level, config.digits)
    return [
        {
            "messages": [{"role": "user", "content": p.question}],
            "answer": str(p.answer),
            "digits": len(str(p.a)),
        }
        for p in problems
    ]


def headline_mask(queries: list[dict[str, Any]], config: ReportConfig) -> list[bool]:
    """Which queries the headline numbers cover."""
    if config.headline_digits is None or config.data is not None:
        return [True] * len(queries)
    return [q.get("digits") in config.headline_digits for q in queries]


def summarise(
    name: str, scores: list[float], queries: list[dict[str, Any]], config: ReportConfig
) -> dict[str, Any]:
    """A per-problem score list as the report keeps it: the headline value with its 95 %
    interval, accuracy per digit count, the generalisation value and the headline scores."""
    inside = headline_mask(queries, config)
    headline = [s for s, keep in zip(scores, inside, strict=True) if keep]
    rest = [s for s, keep in zip(scores, inside, strict=True) if not keep]
    interval = bootstrap_mean(headline, seed=config.seed)
    per_digit: dict[str, list[float]] = {}
    for score, query in zip(scores, queries, strict=True):
        if "digits" in query:  # the toy's graded problems; an evaluation file has none
            per_digit.setdefault(str(query["digits"]), []).append(score)
    return {
        name: interval.value,
        f"{name}_ci": [interval.low, interval.high],
        "per_digit": {d: sum(v) / len(v) for d, v in per_digit.items()},
        "generalisation": sum(rest) / len(rest) if rest else None,
        "scores": headline,
    }


@functools.cache
def _shared_verifier(name: str) -> Any:
    """One verifier per name for the whole report: a reward's worker process starts once, not
    at each of the dozens of evaluations."""
    from lit_qwen3.evaluation import resolve_verifier

    return resolve_verifier(name)


def _evaluate(model: Any, tokenizer: Any, queries, thinking: bool, **kwargs) -> Any:
    from lit_qwen3.evaluation import evaluate_mode
    from lit_qwen3.rollout.generation import SamplingConfig

    max_new_tokens = kwargs.pop("max_new_tokens")
    verifier = _shared_verifier(kwargs.pop("verifier", "arithmetic"))
    return evaluate_mode(
        model,
        tokenizer,
        queries,
        thinking=thinking,
        verifier=verifier,
        sampling=SamplingConfig.qwen3(thinking, max_new_tokens=max_new_tokens),
        **kwargs,
    )


def evaluate_model(directory: str, config: ReportConfig, queries: list) -> dict[str, Any]:
    """Table 22's columns for one model: accuracy in both modes, ThinkFollow (multi-turn
    dialogues with flags at random turns, judged on the last turn, as the report defines it),
    single-turn flag following, and instruction following."""
    from lit_qwen3.evaluation import multi_turn_queries
    from lit_qwen3.models import load_model, load_tokenizer

    model, tokenizer = load_model(directory).eval(), load_tokenizer(directory)
    common = {
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "verifier": config.checker(),
    }
    out: dict[str, Any] = {"scores": {}, "per_digit": {}, "generalisation": {}}

    def keep(name: str, key: str, scores: list[float], qs: list) -> None:
        summary = summarise(name, scores, qs, config)
        out[name], out[f"{name}_ci"] = summary[name], summary[f"{name}_ci"]
        out["scores"][key] = summary["scores"]
        out["per_digit"][key] = summary["per_digit"]
        out["generalisation"][name] = summary["generalisation"]

    for thinking, name, key in (
        (True, "think_pass1", "think"),
        (False, "no_think_pass1", "no_think"),
    ):
        result = _evaluate(
            model, tokenizer, queries, thinking, n_samples=config.n_samples, **common
        )
        keep(name, key, result.per_query(), queries)
    follow: dict[str, list[list[float]]] = {"multi": [], "single": []}
    multi = multi_turn_queries(queries, config.seed)
    for thinking in (True, False):
        for form, prompts in (("single", queries), ("multi", multi)):
            result = _evaluate(model, tokenizer, prompts, thinking, template_switch=False, **common)
            follow[form].append(result.per_query("follows"))
    for form, name, key in (
        ("multi", "think_follow", "think_follow"),
        ("single", "flag_following", "flag_following"),
    ):
        both_modes = [sum(pair) / 2 for pair in zip(*follow[form], strict=True)]
        keep(name, key, both_modes, queries)
    instructions = instruction_scores(model, tokenizer, config)
    out["instruction_following"] = None
    if instructions is not None:
        interval = bootstrap_mean(instructions, seed=config.seed)
        out["instruction_following"] = interval.value
        out["instruction_following_ci"] = [interval.low, interval.high]
        out["scores"]["instructions"] = instructions
    return out


def instruction_scores(model: Any, tokenizer: Any, config: ReportConfig) -> list[float] | None:
    """IFEval strict prompt-level accuracy per toy instruction prompt (None if absent)."""
    if not config.instruction_queries:
        return None
    try:
        from lit_qwen3.datamodules.toy_instructions import toy_ifeval_rows
    except ImportError:
        return None
    from lit_qwen3.evaluation import RewardVerifier
    from lit_qwen3.queries import parse_query

    rows = toy_ifeval_rows(config.instruction_queries, seed=config.seed, split="test")
    queries = []
    for i, row in enumerate(rows):
        query = parse_query(row, f"toy instruction {i}")
        queries.append(
            {"messages": query.messages, "answer": row.get("answer"), "metadata": query.metadata}
        )
    verifier = RewardVerifier("instructions", num_workers=0)
    return _evaluate_with(model, tokenizer, queries, verifier, config).per_query()


def _evaluate_with(model, tokenizer, queries, verifier, config):
    from lit_qwen3.evaluation import evaluate_mode
    from lit_qwen3.rollout.generation import SamplingConfig

    return evaluate_mode(
        model,
        tokenizer,
        queries,
        thinking=True,
        verifier=verifier,
        sampling=SamplingConfig.qwen3(True, max_new_tokens=config.max_new_tokens),
        seed=config.seed,
    )


def budget_curve(directory: str, config: ReportConfig, queries: list) -> dict[str, Any]:
    """Figure 2 for one model: thinking pass@1 per budget, and the non-thinking line, over every
    problem (the spread of lengths is what makes the curve), with per-problem scores."""
    from lit_qwen3.models import load_model, load_tokenizer

    model, tokenizer = load_model(directory).eval(), load_tokenizer(directory)
    common = {
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "verifier": config.checker(),
    }
    think, scores = [], {}
    for budget in config.budgets:
        result = _evaluate(
            model,
            tokenizer,
            queries,
            True,
            n_samples=config.n_samples,
            thinking_budget=budget,
            stop_thinking=config.stop_thinking,
            **common,
        )
        think.append(result.metrics["accuracy"])
        scores[f"budget_{budget}"] = result.per_query()
    no_think = _evaluate(model, tokenizer, queries, False, n_samples=config.n_samples, **common)
    scores["no_think"] = no_think.per_query()
    return {"think_pass1": think, "no_think_pass1": no_think.metrics["accuracy"], "scores": scores}


def pass_at_k(directory: str, config: ReportConfig, queries: list) -> dict[str, Any]:
    """Table 21's thinking-mode pass@1 and pass@k from ``k`` samples per problem, with their
    intervals and per-problem scores (headline problems)."""
    from lit_qwen3.models import load_model, load_tokenizer

    model, tokenizer = load_model(directory).eval(), load_tokenizer(directory)
    result = _evaluate(
        model,
        tokenizer,
        queries,
        True,
        n_samples=config.k,
        ks=(1, config.k),
        max_new_tokens=config.max_new_tokens,
        verifier=config.checker(),
        seed=config.seed,
    )
    out: dict[str, Any] = {"scores": {}, "per_digit": {}}
    for name, scores in (
        ("pass1", result.per_query()),
        ("pass_k", result.per_query_pass_at_k(config.k)),
    ):
        summary = summarise(name, scores, queries, config)
        out[name], out[f"{name}_ci"] = summary[name], summary[f"{name}_ci"]
        out["scores"][name], out["per_digit"][name] = summary["scores"], summary["per_digit"]
    return out


def stage_metrics(pipeline: Any, stage: str) -> dict[str, float] | None:
    """The last values the stage's MLflow run logged (None when it has no run)."""
    record = pipeline.done(next(s for s in pipeline.config.stages if s.name == stage))
    run_id = (record or {}).get("run_id")
    if not run_id:
        return None
    return pipeline.client.get_run(run_id).data.metrics


def stage_flops(pipeline: Any, stage: str) -> float | None:
    """Estimated training FLOPs of a stage from the token counters its MLflow run logged
    (summed over ranks, dropped RL groups included): 2N per sampled or frozen-scored token
    (N: the policy's or the frozen model's parameters), 6N per trained token."""
    from lit_qwen3.models import count_parameters, load_model

    metrics = stage_metrics(pipeline, stage)
    if metrics is None:
        return None
    params = count_parameters(load_model(pipeline.paths[stage]))
    sampled = metrics.get("stats/sampled_tokens", 0.0)
    trained = metrics.get("stats/trained_tokens", 0.0)
    frozen = metrics.get("stats/frozen_tokens", 0.0)
    frozen_params = params
    spec = next(s for s in pipeline.config.stages if s.name == stage)
    teacher = spec.set.get("model.init_args.teacher")
    if teacher is not None:
        frozen_params = count_parameters(load_model(_resolve(teacher, pipeline.paths)))
    return 2 * params * sampled + 6 * params * trained + 2 * frozen_params * frozen


def _resolve(value: str, paths: dict[str, str]) -> str:
    for name, path in paths.items():
        value = value.replace("{" + name + "}", path)
    return value


def model_fingerprint(directory: str | Path) -> str:
    """SHA-256 of every file under a model directory (names and bytes): a retrained stage
    changes it, a rerun that reuses the stage does not."""
    digest = hashlib.sha256()
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def evaluate_stages(pipeline: Any, records: dict[str, Any], config: ReportConfig) -> dict:
    """Every number of the report, cached under ``root/report/``: a cached number is reused only
    when its model's files and every report setting are those that produced it."""
    queries = eval_queries(config)
    cache_dir = pipeline.root / "report"
    cache_dir.mkdir(parents=True, exist_ok=True)
    settings = json.dumps(asdict(config), sort_keys=True)

    def cached(kind: str, stage: str, compute) -> Any:
        directory = pipeline.paths[stage]
        key = hashlib.sha256(
            f"{kind}\0{settings}\0{model_fingerprint(directory)}".encode()
        ).hexdigest()
        path = cache_dir / f"{kind}_{stage}.json"
        if path.exists():
            entry = json.loads(path.read_text())
            if isinstance(entry, dict) and entry.get("key") == key:
                return entry["value"]
        value = compute(directory)
        path.write_text(json.dumps({"key": key, "value": value}))
        return value

    out: dict[str, Any] = {"stages": {}, "figure2": {}, "table21": {}}
    inside = headline_mask(queries, config)
    out["evaluation"] = {
        "problems": len(queries),
        "headline_problems": sum(inside),
        "digits": f"{min(config.digits)}-{max(config.digits)}" if not config.data else None,
        "headline_digits": (config.headline_digits or list(config.digits))
        if not config.data
        else None,
        "data": config.data,
        "verifier": config.checker(),
        "n_samples": config.n_samples,
        "k": config.k,
    }
    for row, stage in config.stages.items():
        out["stages"][row] = cached("eval", stage, lambda d: evaluate_model(d, config, queries))
    curves = {
        stage: cached("budgets", stage, lambda d: budget_curve(d, config, queries))
        for stage in config.figure2
    }
    if curves:
        final = curves[config.figure2[-1]]
        out["figure2"] = {
            "budgets": list(config.budgets),
            "think_pass1": final["think_pass1"],
            "no_think_pass1": final["no_think_pass1"],
            "models": curves,
        }
    for row, stage in config.table21.items():
        scores = cached("passk", stage, lambda d: pass_at_k(d, config, queries))
        out["table21"][row] = {
            **scores,
            "k": config.k,
            "seconds": records.get(stage, {}).get("seconds"),
            "train_seconds": (stage_metrics(pipeline, stage) or {}).get("time/train_s"),
            "flops": stage_flops(pipeline, stage),
        }
    out["findings"] = compute_findings(out, seed=config.seed)
    return out


def write_report(pipeline: Any, records: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    """Evaluate, write ``report.json`` / ``report.md`` / PNGs, log them to the parent run."""
    config = ReportConfig(**pipeline.config.report)
    start = time.time()
    data = evaluate_stages(pipeline, records, config)
    # every stage's own time (kept across reruns) plus this evaluation
    stages = sum(r.get("seconds") or 0.0 for r in records.values())
    data["wall_seconds"] = max(wall_seconds, stages + time.time() - start)
    directory = pipeline.root / "report"
    plots = {}
    if data.get("figure2"):
        plot_figure2(data, directory / "figure2.png")
        plots["figure2"] = "figure2.png"
    (directory / "report.json").write_text(json.dumps(data, indent=2))
    markdown = render_markdown(data, plots)
    (directory / "report.md").write_text(markdown)
    (directory / "report.html").write_text(render_html(markdown, directory))
    table21 = {stage: data["table21"][row]["flops"] for row, stage in config.table21.items()}
    flops = {  # every training stage's estimate, Table 21's as the table has it
        spec.name: table21[spec.name] if spec.name in table21 else stage_flops(pipeline, spec.name)
        for spec in pipeline.config.stages
        if spec.command == "fit" and spec.name in records
    }
    log_report(pipeline, data, directory, flops)
    return data
