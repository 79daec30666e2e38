"""``report.md`` and its figure from ``report.json``'s data: every compared number as value ±
half-width of its 95 % interval, every finding with its verdict and the interval it rests on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_figure2", "render_markdown"]

STAGE_ORDER = ("cold_start", "reasoning_rl", "thinking_fusion", "general_rl")
TABLE21_ROWS = ("off_policy", "rl", "on_policy")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def _pm(row: dict[str, Any], name: str) -> str:
    """``value ± half-width`` when the row has the value's interval, else the value alone."""
    value, ci = row.get(name), row.get(f"{name}_ci")
    if value is None or not ci:
        return _fmt(value)
    return f"{value:.3f} ± {(ci[1] - ci[0]) / 2:.3f}"


def _finding_lines(findings: list[dict[str, Any]]) -> list[str]:
    lines = []
    for f in findings:
        low, high = f["ci95"]
        lines.append(
            f"- **{f['verdict']}**: {f['claim']} (`{f['name']}`: {f['delta']:+.3f}, "
            f"95 % interval [{low:+.3f}, {high:+.3f}])"
        )
    return lines or ["- (nothing to compare)"]


def _per_digit_lines(stages: dict[str, Any]) -> list[str]:
    digits = sorted(
        {d for r in stages.values() for d in r.get("per_digit", {}).get("think", {})}, key=int
    )
    if not digits:
        return []
    lines = ["", "### Accuracy per digit count (thinking / non-thinking)", ""]
    lines += ["| stage | " + " | ".join(f"{d} digits" for d in digits) + " |"]
    lines += ["|---" * (len(digits) + 1) + "|"]
    for row in STAGE_ORDER:
        if row in stages:
            per = stages[row].get("per_digit", {})
            think, no_think = per.get("think", {}), per.get("no_think", {})
            cells = [f"{_fmt(think.get(d), 2)} / {_fmt(no_think.get(d), 2)}" for d in digits]
            lines += [f"| {row} | " + " | ".join(cells) + " |"]
    return lines


def render_markdown(data: dict[str, Any], plots: dict[str, str]) -> str:
    lines = ["# lit-qwen3 pipeline report", ""]
    lines += [f"Wall time: {data.get('wall_seconds', 0):.0f} s.", "", "## Findings", ""]
    lines += [
        "Each claim is decided on a 95 % interval from the evaluation itself (a paired bootstrap "
        "over the same held-out problems): it *holds* when the interval lies wholly on the "
        "paper's side, is *not shown* when it contains the threshold, and *does NOT hold* when "
        "it lies on the other side.",
        "",
    ]
    lines += _finding_lines(data.get("findings", []))
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
            f"| student | pass@1 | pass@{k} | training seconds | stage seconds | FLOPs (est.) |",
            "|---|---|---|---|---|---|",
        ]
        for row in TABLE21_ROWS:
            if row in t21:
                r = t21[row]
                lines += [
                    f"| {row} | {_pm(r, 'pass1')} | {_pm(r, 'pass_k')} | "
                    f"{_fmt(r.get('train_seconds'), 0)} | {_fmt(r['seconds'], 0)} | "
                    f"{_fmt(r['flops'], 3)} |"
                ]
    st = data.get("stages")
    if st:
        lines += ["", "## Table 22: per stage, both modes", ""]
        lines += [
            "| stage | thinking pass@1 | non-thinking pass@1 | ThinkFollow (multi-turn) | "
            "flag following (single turn) | instruction following | longer problems "
            "(thinking / non-thinking) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in STAGE_ORDER:
            if row in st:
                r = st[row]
                general = r.get("generalisation") or {}
                lines += [
                    f"| {row} | {_pm(r, 'think_pass1')} | {_pm(r, 'no_think_pass1')} | "
                    f"{_pm(r, 'think_follow')} | {_pm(r, 'flag_following')} | "
                    f"{_pm(r, 'instruction_following')} | "
                    f"{_fmt(general.get('think_pass1'))} / {_fmt(general.get('no_think_pass1'))} |"
                ]
        lines += _per_digit_lines(st)
    e = data.get("evaluation", {})
    held_out = (
        f"{e.get('problems')} queries of {e['data']} (checked by {e.get('verifier')})"
        if e.get("data")
        else f"{e.get('problems')} held-out toy problems of {e.get('digits')} digits (the test "
        "split, never trained on); the headline numbers and findings cover "
        f"{e.get('headline_problems')} problems of {e.get('headline_digits')} digits (what the "
        "models trained on), longer ones are the generalisation column"
    )
    lines += [
        "",
        f"Evaluation: {held_out}. Qwen3's sampling "
        f"settings per mode, {e.get('n_samples')} samples each for pass@1 and {e.get('k')} for "
        "pass@k; ± is half the 95 % interval over problems. ThinkFollow asks by the flag only, "
        "in multi-turn dialogues whose earlier turns carry random flags. FLOPs: 2N per sampled "
        "or frozen-scored token, 6N per trained token (N: parameters), every token sampled counted "
        "(RL's dropped groups and refills too), summed over ranks; the off-policy student's "
        "count is its training, not the teacher's generation of its data. Training seconds: "
        "sampling, forward, backward and optimizer steps only; stage seconds: the whole process "
        "(start-up, evaluation).",
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
