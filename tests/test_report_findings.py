"""The report's findings are decided on intervals, its numbers keep their per-problem scores,
and a cached number is reused only for the same model files and the same settings."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from lit_qwen3.models import save_toy_checkpoint
from lit_qwen3.recipe import report
from lit_qwen3.recipe.findings import compute_findings
from lit_qwen3.recipe.report import ReportConfig, evaluate_stages, summarise
from lit_qwen3.recipe.report_render import render_markdown


def _coin(p: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [sum(rng.random() < p for _ in range(4)) / 4 for _ in range(n)]


def _data(rl_gain: float, no_think: float, flops_ratio: float) -> dict:
    base = _coin(0.5, 200, 1)
    after = [min(1.0, s + rl_gain) for s in base]
    stage = {"scores": {"think": base, "think_follow": [1.0] * 200}}
    return {
        "stages": {
            "cold_start": stage,
            "reasoning_rl": {"scores": {"think": after}},
            "thinking_fusion": {"scores": {"no_think": [no_think] * 200}},
            "general_rl": stage,
        },
        "table21": {
            "rl": {"scores": {"pass1": base}, "flops": 100.0, "k": 4, "seconds": 1.0},
            "on_policy": {
                "scores": {"pass1": base},
                "flops": 100.0 * flops_ratio,
                "k": 4,
                "seconds": 1.0,
            },
        },
    }


def test_each_verdict_follows_its_interval():
    found = {f["name"]: f for f in compute_findings(_data(0.25, 0.0, 0.1))}
    assert found["rl_over_cold_start"]["verdict"] == "holds"
    assert found["rl_over_cold_start"]["ci95"][0] > 0
    assert found["no_think_after_fusion"]["verdict"] == "not shown"  # all zero: [0, 0]
    assert found["think_follow_stage4"]["verdict"] == "holds"  # 1.0 everywhere, above 0.95
    assert found["on_policy_vs_rl_pass1"]["verdict"] == "not shown"  # identical scores
    assert found["on_policy_compute"]["verdict"] == "holds"
    assert found["on_policy_compute"]["delta"] == pytest.approx(0.1)
    assert "budget_curve" not in found  # no Figure 2 data: the claim is left out, not passed

    reversed_ = {f["name"]: f for f in compute_findings(_data(-0.25, 0.2, 2.0))}
    assert reversed_["rl_over_cold_start"]["verdict"] == "does NOT hold"
    assert reversed_["no_think_after_fusion"]["verdict"] == "holds"
    assert reversed_["on_policy_compute"]["verdict"] == "does NOT hold"


def test_a_small_gain_inside_the_noise_is_not_shown():
    """+0.02 on 200 noisy problems (the size of the old report's "RL holds") is noise."""
    base, noisy = _coin(0.4, 200, 2), _coin(0.42, 200, 3)
    data = {"stages": {"cold_start": {"scores": {"think": base}}}}
    data["stages"]["reasoning_rl"] = {"scores": {"think": noisy}}
    (finding,) = compute_findings(data)
    assert finding["verdict"] == "not shown", finding


def test_summaries_split_headline_and_longer_problems():
    queries = [{"digits": d} for d in (1, 2, 2, 5, 6)]
    config = ReportConfig(headline_digits=[1, 2])
    summary = summarise("think_pass1", [1.0, 0.5, 0.0, 0.25, 0.75], queries, config)
    assert summary["think_pass1"] == pytest.approx(0.5)
    assert summary["scores"] == [1.0, 0.5, 0.0]
    assert summary["generalisation"] == pytest.approx(0.5)
    assert summary["per_digit"] == {"1": 1.0, "2": 0.25, "5": 0.25, "6": 0.75}
    low, high = summary["think_pass1_ci"]
    assert 0.0 <= low < 0.5 < high <= 1.0


def test_markdown_prints_intervals_and_verdicts():
    data = _data(0.25, 0.0, 0.1)
    data["findings"] = compute_findings(data)
    data["stages"]["cold_start"].update(think_pass1=0.5, think_pass1_ci=[0.45, 0.55])
    text = render_markdown(data, {})
    assert "**holds**: reasoning RL raises thinking pass@1" in text
    assert "**not shown**" in text
    assert "0.500 ± 0.050" in text


def test_cached_numbers_follow_the_model_files_and_the_settings(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate(directory, config, queries):
        calls.append((directory, config.n_samples))
        return {"think_pass1": 0.5, "scores": {"think": [0.5] * len(queries)}}

    monkeypatch.setattr(report, "evaluate_model", fake_evaluate)
    model = save_toy_checkpoint(tmp_path / "cold_start", seed=0)
    pipeline = SimpleNamespace(root=tmp_path, paths={"cold": str(model)})
    config = ReportConfig(stages={"cold_start": "cold"}, n_per_level=2, digits=[1, 2])

    first = evaluate_stages(pipeline, {}, config)
    evaluate_stages(pipeline, {}, config)
    assert len(calls) == 1  # same files, same settings: reused
    cached = json.loads((tmp_path / "report" / "eval_cold.json").read_text())
    assert cached["value"] == first["stages"]["cold_start"]

    evaluate_stages(pipeline, {}, ReportConfig(**{**vars(config), "n_samples": 2}))
    assert len(calls) == 2  # a setting changed
    save_toy_checkpoint(model, seed=1)  # the stage was retrained
    evaluate_stages(pipeline, {}, config)
    assert len(calls) == 3
    evaluate_stages(pipeline, {}, config)
    assert len(calls) == 3
