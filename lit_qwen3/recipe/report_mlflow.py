"""The report in MLflow, so that the runs table and charts tell what ``report.md`` tells.

- On each stage's run, the numbers the report gives about it, as metrics named for the
  evaluation set (``heldout/...``: the report's held-out problems; the runs' own ``val/*`` come
  from their validation queries), each with its 95 % interval beside it
  (``<key>_ci_low``, ``<key>_ci_high``):
  Table 22's ``heldout/think/pass_at_1``, ``heldout/no_think/pass_at_1``,
  ``heldout/think_follow``, ``heldout/flag_following``, ``heldout/instruction_following`` and
  the longer problems' ``heldout_longer/{think,no_think}/pass_at_1``; Table 21's
  ``heldout/think/pass_at_1`` and ``heldout/think/pass_at_<k>`` (``pass_at_1_of_<k>`` on a run
  that is a Table 22 row too: another sample count); Figure 2's
  ``heldout/budget/think/pass_at_1`` with the budget as its step (step 0:
  ``heldout/budget/no_think/pass_at_1``, the non-thinking mode); ``compute/flops`` (the report's
  estimate; ``time/train_s`` and ``time/stage_s`` the stage and the pipeline logged).
- On the pipeline's run: Table 21, Table 22 and Figure 2 as MLflow tables (``tables/*.json``),
  the figures as images (``figures/*.png``), the findings as metrics, and ``report/`` with
  ``report.json``, ``report.md`` and ``report.html`` (the page MLflow's viewer renders whole).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["log_report", "stage_metric_values"]

#: Table 22's columns: ``report.json`` name -> metric key.
TABLE22_KEYS = {
    "think_pass1": "heldout/think/pass_at_1",
    "no_think_pass1": "heldout/no_think/pass_at_1",
    "think_follow": "heldout/think_follow",
    "flag_following": "heldout/flag_following",
    "instruction_following": "heldout/instruction_following",
}
BUDGET_THINK = "heldout/budget/think/pass_at_1"
BUDGET_NO_THINK = "heldout/budget/no_think/pass_at_1"


def _with_interval(out: dict[str, float], key: str, row: dict[str, Any], name: str) -> None:
    value = row.get(name)
    if value is None:
        return
    out[key] = float(value)
    interval = row.get(f"{name}_ci")
    if interval:
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = map(float, interval)


def stage_metric_values(data: dict[str, Any], config: dict[str, Any]) -> dict[str, dict]:
    """``{stage: {key: value}}``: every number the report gives about a stage, under the keys
    of this module's docstring (Figure 2's curve apart: it has a step per budget)."""
    out: dict[str, dict[str, float]] = {}
    table22_stages = set((config.get("stages") or {}).values())
    for row, stage in (config.get("stages") or {}).items():
        values = data.get("stages", {}).get(row)
        if values is None:
            continue
        metrics = out.setdefault(stage, {})
        for name, key in TABLE22_KEYS.items():
            _with_interval(metrics, key, values, name)
        for name, mode in (("think_pass1", "think"), ("no_think_pass1", "no_think")):
            longer = (values.get("generalisation") or {}).get(name)
            if longer is not None:
                metrics[f"heldout_longer/{mode}/pass_at_1"] = float(longer)
    for row, stage in (config.get("table21") or {}).items():
        values = data.get("table21", {}).get(row)
        if values is None:
            continue
        metrics = out.setdefault(stage, {})
        k = values["k"]
        first = f"heldout/think/pass_at_1_of_{k}" if stage in table22_stages else None
        _with_interval(metrics, first or "heldout/think/pass_at_1", values, "pass1")
        _with_interval(metrics, f"heldout/think/pass_at_{k}", values, "pass_k")
    return out


def _run_id(pipeline: Any, stage: str) -> str | None:
    spec = next((s for s in pipeline.config.stages if s.name == stage), None)
    if spec is None:
        return None
    return (pipeline.done(spec) or {}).get("run_id") or pipeline.stage_run_id(spec)


def _log(client: Any, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(key, float(v), now, step) for key, v in metrics.items() if v is not None]
    for start in range(0, len(entries), 500):
        client.log_batch(run_id, metrics=entries[start : start + 500])


def evaluation_sets(data: dict[str, Any]) -> str:
    """What each evaluation set of the runs is, for their descriptions."""
    e = data.get("evaluation", {})
    held_out = (
        f"{e.get('problems')} queries of {e['data']}"
        if e.get("data")
        else f"{e.get('headline_problems')} held-out toy problems of {e.get('headline_digits')} "
        f"digits (the test split, never trained on; `heldout_longer/*`: the longer ones of "
        f"{e.get('digits')} digits)"
    )
    return (
        "\n\n**Evaluation sets.** `heldout/*`: the pipeline report's evaluation (Table 21, Table "
        f"22, Figure 2) on {held_out}, {e.get('n_samples')} samples per problem for pass@1, "
        f"{e.get('k')} for pass@k, 95 % interval in `*_ci_low`/`*_ci_high`; "
        "`heldout/budget/*` has the thinking budget as its step. `val/*`: the stage's "
        "validation queries during training (loss; pass@k per mode, ThinkFollow), at the "
        "optimizer step; `budget_sweep/*`: the same queries against the thinking budget (step: "
        "the budget); `eval/*`: an evaluation callback's own query set. `train/*`: per "
        "optimizer step."
    )


def _append_description(client: Any, run_id: str, text: str) -> None:
    note = client.get_run(run_id).data.tags.get("mlflow.note.content", "")
    if "**Evaluation sets.**" not in note:
        client.set_tag(run_id, "mlflow.note.content", note + text)


def _tables(data: dict[str, Any], config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    def interval(row: dict[str, Any], name: str) -> dict[str, Any]:
        low, high = row.get(f"{name}_ci") or (None, None)
        return {name: row.get(name), f"{name}_ci_low": low, f"{name}_ci_high": high}

    table21 = [
        {"row": row, "stage": (config.get("table21") or {}).get(row), "k": r["k"]}
        | interval(r, "pass1")
        | interval(r, "pass_k")
        | {k: r.get(k) for k in ("train_seconds", "seconds", "flops")}
        for row, r in data.get("table21", {}).items()
    ]
    table22 = [
        {"row": row, "stage": (config.get("stages") or {}).get(row)}
        | {k: v for name in TABLE22_KEYS for k, v in interval(r, name).items()}
        | {f"longer_{k}": v for k, v in (r.get("generalisation") or {}).items()}
        for row, r in data.get("stages", {}).items()
    ]
    f2 = data.get("figure2") or {}
    figure2 = [
        {
            "model": name,
            "budget": budget,
            "think_pass1": value,
            "no_think_pass1": curve["no_think_pass1"],
        }
        for name, curve in (f2.get("models") or {}).items()
        for budget, value in zip(f2["budgets"], curve["think_pass1"], strict=True)
    ]
    return {"table21": table21, "table22": table22, "figure2": figure2}


def table21_figure(data: dict[str, Any]) -> Any:
    """Table 21 as bars: pass@1 and pass@k of each student with their 95 % intervals."""
    from matplotlib.figure import Figure

    rows = data["table21"]
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    names = list(rows)
    k = next(iter(rows.values()))["k"]
    for offset, (name, label) in enumerate((("pass1", "pass@1"), ("pass_k", f"pass@{k}"))):
        values = [rows[r][name] for r in names]
        errors = [
            [
                v - (rows[r].get(f"{name}_ci") or [v, v])[0]
                for r, v in zip(names, values, strict=True)
            ],
            [
                (rows[r].get(f"{name}_ci") or [v, v])[1] - v
                for r, v in zip(names, values, strict=True)
            ],
        ]
        positions = [i + 0.4 * offset for i in range(len(names))]
        ax.bar(positions, values, width=0.4, yerr=errors, capsize=3, label=label)
    ax.set_xticks([i + 0.2 for i in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out thinking accuracy")
    ax.set_title("Table 21: distillation vs RL from the same student (95 % intervals)")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def log_report(
    pipeline: Any, data: dict[str, Any], directory: Path, flops: dict[str, float | None]
) -> None:
    """Log the report to the pipeline's run and its numbers to the stages' runs (see above)."""
    client, parent = pipeline.client, pipeline.parent_id
    config = pipeline.config.report
    description = evaluation_sets(data)
    per_stage = stage_metric_values(data, config)
    for stage, value in flops.items():
        if value is not None:
            per_stage.setdefault(stage, {})["compute/flops"] = float(value)
    curves = (data.get("figure2") or {}).get("models") or {}
    for spec in pipeline.config.stages:
        run_id = _run_id(pipeline, spec.name)
        if run_id is None:
            continue
        _log(client, run_id, per_stage.get(spec.name, {}))
        curve = curves.get(spec.name)
        if curve is not None:
            for budget, value in zip(data["figure2"]["budgets"], curve["think_pass1"], strict=True):
                _log(client, run_id, {BUDGET_THINK: value}, step=int(budget))
            _log(client, run_id, {BUDGET_NO_THINK: curve["no_think_pass1"]}, step=0)
        if spec.command == "fit":  # a curation run evaluates nothing
            _append_description(client, run_id, description)
    _append_description(client, parent, description)
    for name, rows in _tables(data, config).items():
        if rows:
            columns = {key: [row.get(key) for row in rows] for key in rows[0]}
            client.log_table(parent, data=columns, artifact_file=f"tables/{name}.json")
    if (directory / "figure2.png").exists():
        client.log_artifact(parent, str(directory / "figure2.png"), "figures")
    if data.get("table21"):
        client.log_figure(parent, table21_figure(data), "figures/table21.png")
    for name in ("report.json", "report.md", "report.html", "figure2.png"):
        if (directory / name).exists():
            client.log_artifact(parent, str(directory / name), "report")
    metrics = {"time/wall_s": data.get("wall_seconds")}
    for finding in data.get("findings", []):
        low, high = finding["ci95"]
        for key, value in (("delta", finding["delta"]), ("ci_low", low), ("ci_high", high)):
            metrics[f"finding/{finding['name']}/{key}"] = value
    _log(client, parent, metrics)
