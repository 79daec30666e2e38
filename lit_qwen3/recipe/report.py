"""The pipeline's report: the Qwen3 report's Figure 2 and Tables 21-22 in miniature.

Data first: :func:`evaluate_stages` samples every stage's model on held-out problems (graded
toy problems of 1-8 digits, a spread of required thinking lengths, as TOY_NOTES asks for a
smooth budget curve) and returns plain numbers; :func:`write_report` stores them in
``report.json`` (keys below), renders ``report.md`` with PNG plots, and logs all three to the
pipeline's parent MLflow run.

``report.json``:
``stages.<stage>.{think_pass1, no_think_pass1, think_follow, instruction_following}`` for
``cold_start``, ``reasoning_rl``, ``thinking_fusion``, ``general_rl``;
``figure2.{budgets, think_pass1, no_think_pass1, models}`` (the final model's curve first-class,
each model's under ``models``); ``table21.{off_policy, rl, on_policy}.{pass1, pass_k, k,
seconds, flops}``; ``wall_seconds``. Nothing is tuned to the outcome: where a result of the
paper does not come out, the report says so next to the figures.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportConfig", "evaluate_stages", "write_report"]

STAGE_ORDER = ("cold_start", "reasoning_rl", "thinking_fusion", "general_rl")
TABLE21_ROWS = ("off_policy", "rl", "on_policy")


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
    the toy problems (``n_per_level`` and ``digits`` then do nothing)."""
    num_queries: int | None = None
    """The first this many rows of ``data`` (None: all)."""
    verifier: str | None = None
    """How answers are checked: a reward name (``math``, ``code``); default ``arithmetic`` for
    the toy problems, ``math`` for ``data``."""
    seed: int = 0

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
        {"messages": [{"role": "user", "content": p.question}], "answer": str(p.answer)}
        for p in problems
    ]


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


def evaluate_model(directory: str, config: ReportConfig, queries: list) -> dict[str, float]:
    """Table 22's columns for one model: accuracy in both modes, ThinkFollow, instructions."""
    from lit_qwen3.evaluation import multi_turn_queries
    from lit_qwen3.models import load_model, load_tokenizer

    model, tokenizer = load_model(directory).eval(), load_tokenizer(directory)
    common = {
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "verifier": config.checker(),
    }
    think = _evaluate(model, tokenizer, queries, True, n_samples=config.n_samples, **common)
    no_think = _evaluate(model, tokenizer, queries, False, n_samples=config.n_samples, **common)
    follow = []
    for thinking in (True, False):
        for prompts in (queries, multi_turn_queries(queries, config.seed)):
            result = _evaluate(model, tokenizer, prompts, thinking, template_switch=False, **common)
            follow.append(result.metrics["think_follow"])
    return {
        "think_pass1": think.metrics["accuracy"],
        "no_think_pass1": no_think.metrics["accuracy"],
        "think_follow": sum(follow) / len(follow),
        "instruction_following": instruction_rate(model, tokenizer, config),
    }


def instruction_rate(model: Any, tokenizer: Any, config: ReportConfig) -> float | None:
    """IFEval strict prompt-level accuracy on the toy instruction prompts (None if absent)."""
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
    result = _evaluate_with(model, tokenizer, queries, verifier, config)
    return result.metrics["accuracy"]


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
    """Figure 2 for one model: thinking pass@1 per budget, and the non-thinking line."""
    from lit_qwen3.models import load_model, load_tokenizer

    model, tokenizer = load_model(directory).eval(), load_tokenizer(directory)
    common = {
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "verifier": config.checker(),
    }
    think = []
    for budget in config.budgets:
        result = _evaluate(
            model,
            tokenizer,
            queries,
            True,
            n_samples=1,
            thinking_budget=budget,
            stop_thinking=config.stop_thinking,
            **common,
        )
        think.append(result.metrics["accuracy"])
    no_think = _evaluate(model, tokenizer, queries, False, n_samples=1, **common)
    return {"think_pass1": think, "no_think_pass1": no_think.metrics["accuracy"]}


def pass_at_k(directory: str, config: ReportConfig, queries: list) -> dict[str, float]:
    """Table 21's thinking-mode pass@1 and pass@k from ``k`` samples per problem."""
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
    return {"pass1": result.metrics["pass_at_1"], "pass_k": result.metrics[f"pass_at_{config.k}"]}


def stage_flops(pipeline: Any, stage: str) -> float | None:
    """Estimated training FLOPs of a stage from the token counters its MLflow run logged:
    2N per sampled or frozen-scored token (N: the policy's or the frozen model's
    parameters), 6N per trained token."""
    from lit_qwen3.models import count_parameters, load_model

    record = pipeline.done(next(s for s in pipeline.config.stages if s.name == stage))
    run_id = (record or {}).get("run_id")
    if not run_id:
        return None
    metrics = pipeline.client.get_run(run_id).data.metrics
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


def evaluate_stages(pipeline: Any, records: dict[str, Any], config: ReportConfig) -> dict:
    """Every number of the report, cached per stage under ``root/report/`` (reruns reuse)."""
    queries = eval_queries(config)
    cache_dir = pipeline.root / "report"
    cache_dir.mkdir(parents=True, exist_ok=True)

    def cached(name: str, compute) -> Any:
        path = cache_dir / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        value = compute()
        path.write_text(json.dumps(value))
        return value

    out: dict[str, Any] = {"stages": {}, "figure2": {}, "table21": {}}
    out["evaluation"] = {
        "problems": len(queries),
        "digits": f"{min(config.digits)}-{max(config.digits)}" if not config.data else None,
        "data": config.data,
        "verifier": config.checker(),
        "n_samples": config.n_samples,
        "k": config.k,
    }
    for row, stage in config.stages.items():
        directory = pipeline.paths[stage]
        out["stages"][row] = cached(
            f"eval_{stage}", lambda d=directory: evaluate_model(d, config, queries)
        )
    curves = {
        stage: cached(
            f"budgets_{stage}", lambda d=pipeline.paths[stage]: budget_curve(d, config, queries)
        )
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
        scores = cached(
            f"passk_{stage}", lambda d=pipeline.paths[stage]: pass_at_k(d, config, queries)
        )
        out["table21"][row] = {
            **scores,
            "k": config.k,
            "seconds": records.get(stage, {}).get("seconds"),
            "flops": stage_flops(pipeline, stage),
        }
    return out


def findings(data: dict[str, Any]) -> list[str]:
    """The paper's claims, checked against the figures (said plainly when they fail)."""
    lines = []
    st, f2, t21 = data.get("stages", {}), data.get("figure2", {}), data.get("table21", {})

    def check(ok: bool, claim: str, figures: str) -> None:
        lines.append(f"- {'holds' if ok else 'does NOT hold'}: {claim} ({figures})")

    if {"cold_start", "reasoning_rl"} <= set(st):
        a, b = st["cold_start"]["think_pass1"], st["reasoning_rl"]["think_pass1"]
        check(
            b > a, "reasoning RL raises thinking pass@1 over the cold start", f"{a:.3f} -> {b:.3f}"
        )
    if f2:
        acc, flat = f2["think_pass1"], f2["no_think_pass1"]
        check(
            acc[-1] - acc[0] >= 0.3 and acc[-1] > flat,
            "pass@1 rises with the thinking budget, above the non-thinking line",
            f"{acc[0]:.3f} -> {acc[-1]:.3f} vs no-think {flat:.3f}",
        )
    if "general_rl" in st:
        tf = st["general_rl"]["think_follow"]
        check(tf >= 0.95, "ThinkFollow after general RL is at least 0.95", f"{tf:.3f}")
    if {"rl", "on_policy"} <= set(t21):
        on, rl = t21["on_policy"], t21["rl"]
        check(
            on["pass1"] >= rl["pass1"] and on["pass_k"] >= rl["pass_k"],
            "on-policy distillation matches or beats RL on the same student in pass@1 and pass@k",
            f"pass@1 {on['pass1']:.3f} vs {rl['pass1']:.3f}, pass@{on['k']} "
            f"{on['pass_k']:.3f} vs {rl['pass_k']:.3f}",
        )
        if on.get("seconds") and rl.get("seconds"):
            check(
                on["seconds"] <= rl["seconds"],
                "with less compute",
                f"{on['seconds']:.0f} s vs {rl['seconds']:.0f} s",
            )
    return lines


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def render_markdown(data: dict[str, Any], plots: dict[str, str]) -> str:
    lines = ["# lit-qwen3 pipeline report", ""]
    lines += [f"Wall time: {data.get('wall_seconds', 0):.0f} s.", "", "## Findings", ""]
    lines += findings(data) or ["- (nothing to compare)"]
    f2 = data.get("figure2")
    if f2:
        lines += ["", "## Figure 2: pass@1 against the thinking budget", ""]
        if "figure2" in plots:
            lines += [f"![Figure 2]({plots['figure2']})", ""]
        lines += ["| budget | " + " | ".join(map(str, f2["budgets"])) + " | no-think |"]
        lines += ["|---" * (len(f2["budgets"]) + 2) + "|"]
        for name, curve in f2.get("models", {}).items():
            cells = " | ".join(_fmt(v) for v in curve["think_pass1"])
            lines += [f"| {name} | {cells} | {_fmt(curve['no_think_pass1'])} |"]
    t21 = data.get("table21")
    if t21:
        lines += ["", "## Table 21: on-policy distillation vs RL from the same student", ""]
        k = next(iter(t21.values()))["k"]
        lines += [
            f"| student | pass@1 | pass@{k} | seconds | FLOPs (est.) |",
            "|---|---|---|---|---|",
        ]
        for row in TABLE21_ROWS:
            if row in t21:
                r = t21[row]
                lines += [
                    f"| {row} | {_fmt(r['pass1'])} | {_fmt(r['pass_k'])} | "
                    f"{_fmt(r['seconds'], 0)} | {_fmt(r['flops'], 3)} |"
                ]
    st = data.get("stages")
    if st:
        lines += ["", "## Table 22: per stage, both modes", ""]
        lines += [
            "| stage | thinking pass@1 | non-thinking pass@1 | ThinkFollow | instruction following |",
            "|---|---|---|---|---|",
        ]
        for row in STAGE_ORDER:
            if row in st:
                r = st[row]
                lines += [
                    f"| {row} | {_fmt(r['think_pass1'])} | {_fmt(r['no_think_pass1'])} | "
                    f"{_fmt(r['think_follow'])} | {_fmt(r.get('instruction_following'))} |"
                ]
    e = data.get("evaluation", {})
    held_out = (
        f"{e.get('problems')} queries of {e['data']} (checked by {e.get('verifier')})"
        if e.get("data")
        else f"{e.get('problems')} held-out toy problems of {e.get('digits')} digits "
        "(the test split, never trained on)"
    )
    lines += [
        "",
        f"Evaluation: {held_out}, Qwen3's sampling settings per mode, "
        f"{e.get('n_samples')} samples each for pass@1 and {e.get('k')} for pass@k; ThinkFollow "
        "asks by the flag only, single- and multi-turn. FLOPs: 2N per sampled or frozen-scored "
        "token, 6N per trained token (N: parameters); the off-policy student's count is its "
        "training, not the teacher's generation of its data.",
        "",
    ]
    return "\n".join(lines)


def plot_figure2(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f2 = data["figure2"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in f2["models"].items():
        (line,) = ax.plot(
            f2["budgets"], curve["think_pass1"], marker="o", label=f"{name} (thinking)"
        )
        ax.axhline(
            curve["no_think_pass1"],
            linestyle="--",
            color=line.get_color(),
            label=f"{name} (non-thinking)",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(f2["budgets"], [str(b) for b in f2["budgets"]])
    ax.set_xlabel("thinking budget (tokens)")
    ax.set_ylabel("pass@1")
    ax.set_ylim(0, 1)
    ax.set_title("Pass@1 against thinking budget (toy Figure 2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    (directory / "report.md").write_text(render_markdown(data, plots))
    for name in ("report.json", "report.md", *plots.values()):
        pipeline.client.log_artifact(pipeline.parent_id, str(directory / name), "report")
    for row, values in data.get("stages", {}).items():
        for key, value in values.items():
            if isinstance(value, (int, float)):
                pipeline.client.log_metric(pipeline.parent_id, f"{row}/{key}", value)
    return data
