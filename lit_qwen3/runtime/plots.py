"""The pictures evaluations log: accuracy against thinking budget (the report's Figure 2) and
pass@k against k.

Plain matplotlib ``Figure`` objects (no pyplot, so no global state or display backend), built from
plain numbers, so the callbacks, the pipeline report and a notebook draw the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

#: One sweep: (budget, accuracy) points of thinking mode, and the non-thinking accuracy or None.
Sweep = tuple[Sequence[tuple[int, float]], float | None]


def _budget_axis(ax, budgets: Sequence[int]) -> None:
    positive = [b for b in budgets if b > 0]
    if positive and max(positive) / min(positive) >= 8:
        ax.set_xscale("symlog", linthresh=min(positive), linscale=0.5)
    ax.set_xticks(sorted(set(budgets)))
    ax.set_xticklabels([str(b) for b in sorted(set(budgets))])


def budget_sweep_figure(sweeps: Mapping[int, Sweep], title: str = "") -> Figure:
    """Thinking accuracy against budget, one line per training step (the newest bold), with the
    newest sweep's non-thinking accuracy as a flat dashed line."""
    if not sweeps:
        raise ValueError("budget_sweep_figure() needs at least one sweep")
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = figure.subplots()
    steps = sorted(sweeps)
    budgets: list[int] = []
    for step in steps:
        points, _ = sweeps[step]
        xs = [b for b, _ in points]
        budgets += xs
        newest = step == steps[-1]
        ax.plot(
            xs,
            [a for _, a in points],
            marker="o",
            linewidth=2.0 if newest else 1.0,
            alpha=1.0 if newest else 0.45,
            label=f"thinking, step {step}",
        )
    no_think = sweeps[steps[-1]][1]
    if no_think is not None:
        ax.axhline(no_think, linestyle="--", color="gray", label=f"non-thinking, step {steps[-1]}")
    _budget_axis(ax, budgets)
    ax.set_xlabel("thinking budget (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "Accuracy against thinking budget")
    return figure


def pass_at_k_figure(curves: Mapping[str, Mapping[int, float]], title: str = "") -> Figure:
    """pass@k against k, one line per thinking mode."""
    if not curves:
        raise ValueError("pass_at_k_figure() needs at least one mode")
    figure = Figure(figsize=(5.0, 3.5), layout="constrained")
    ax = figure.subplots()
    ks: list[int] = []
    for mode, points in curves.items():
        xs = sorted(points)
        ks += xs
        ax.plot(xs, [points[k] for k in xs], marker="o", label=mode)
    if max(ks) / min(ks) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(ks)))
    ax.set_xticklabels([str(k) for k in sorted(set(ks))])
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "pass@k")
    return figure


def funnel_figure(rows: Sequence[Mapping[str, object]], title: str = "Curation funnel") -> Figure:
    """The curation funnel: one horizontal bar per filter (``step/filter``), in order, the rows
    kept and, beside them, the rows removed."""
    if not rows:
        raise ValueError("funnel_figure() needs at least one row")
    labels = [f"{r['step']}/{r['filter']}" for r in rows]
    kept = [float(r["out"]) for r in rows]
    removed = [float(r["removed"]) for r in rows]
    figure = Figure(figsize=(7, 0.3 * len(rows) + 1.2))
    ax = figure.subplots()
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, kept, label="kept")
    ax.barh(positions, removed, left=kept, label="removed", alpha=0.5)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_xlabel("rows")
    ax.set_title(title)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
