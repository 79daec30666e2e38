"""``lit-qwen3 pipeline`` on the smoke config: every stage runs as a nested MLflow run under one
parent, the report has its three sections and its data, and a pipeline killed mid-stage reruns
without redoing finished stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs/toy/pipeline_smoke.yaml"


def _command(root: Path) -> list[str]:
    script = Path(sys.executable).parent / "lit-qwen3"
    return [str(script), "pipeline", "--config", str(SMOKE), "--root", str(root)]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The smoke pipeline killed at its second stage, then run again to its end: (root, the
    rerun's stderr, the cold start's DONE.json mtime before the rerun). One run for the module."""
    root = tmp_path_factory.mktemp("smoke") / "pipeline"
    first = subprocess.Popen(
        _command(root),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while time.time() < deadline and not (root / "rl_queries" / "log.txt").exists():
        time.sleep(1)
        assert first.poll() is None, "the pipeline ended before its second stage started"
    os.killpg(first.pid, signal.SIGKILL)  # kill -9 of the pipeline and the stage it runs
    first.wait()
    done = root / "cold_start" / "DONE.json"
    assert done.exists() and not (root / "reasoning_rl" / "DONE.json").exists()
    time.sleep(1)  # a redone stage would get a later modification time
    finished_at = done.stat().st_mtime

    rerun = subprocess.run(_command(root), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return root, rerun.stderr, finished_at


def test_killed_pipeline_resumes_without_redoing_finished_stages(resumed):
    root, stderr, finished_at = resumed
    assert "cold_start: done earlier, skipped" in stderr
    assert (root / "cold_start" / "DONE.json").stat().st_mtime == finished_at  # not redone

    report = (root / "report" / "report.md").read_text()
    for section in ("Figure 2", "Table 21", "Table 22"):
        assert section in report
    data = json.loads((root / "report" / "report.json").read_text())
    assert set(data["stages"]) == {"cold_start", "reasoning_rl", "thinking_fusion", "general_rl"}
    assert set(data["table21"]) == {"off_policy", "rl", "on_policy"}
    assert len(data["figure2"]["budgets"]) == len(data["figure2"]["think_pass1"]) >= 6
    assert (root / "report" / "figure2.png").stat().st_size > 1000

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("lit-qwen3-pipeline-smoke")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    stages = [r.data.tags["pipeline_stage"] for r in children]
    assert sorted(stages) == sorted(
        [
            "curation",
            "cold_start",
            "rl_queries",
            "reasoning_rl",
            "thinking_fusion",
            "general_rl",
            "distill_off_policy",
            "distill_on_policy",
            "student_rl",
        ]
    )  # one run per stage: the killed stage resumed into its own run
    (general,) = [r for r in children if r.data.tags["pipeline_stage"] == "general_rl"]
    assert "train/reward/format" in general.data.metrics  # flag following scored every query
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.json", "report/report.md", "report/figure2.png"} <= artifacts


STAGES = {"cold_start", "reasoning_rl", "thinking_fusion", "general_rl", "distill_off_policy"}
STAGES |= {"distill_on_policy", "curation", "rl_queries", "pipeline"}


def _table(client: MlflowClient, run_id: str, path: str) -> list[dict]:
    table = json.loads(Path(client.download_artifacts(run_id, path)).read_text())
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def test_mlflow_tells_the_story_of_the_report(resumed):
    """What a person comparing runs in MLflow reads equals report.json: Table 21 and Figure 2
    from the stage runs' metrics and the pipeline run's tables; clean params and tags; one step
    axis; no series twice; each run as long as its process."""
    root = resumed[0]
    report = json.loads((root / "report" / "report.json").read_text())
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("lit-qwen3-pipeline-smoke")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags.get("pipeline_stage", r.data.tags["stage"]): r for r in runs}
    parent = by_stage["pipeline"]

    k = report["table21"]["rl"]["k"]
    table21 = {r["row"]: r for r in _table(client, parent.info.run_id, "tables/table21.json")}
    rows = {
        "off_policy": "distill_off_policy",
        "rl": "student_rl",
        "on_policy": "distill_on_policy",
    }
    for row, stage in rows.items():
        expected = report["table21"][row]
        metrics = by_stage[stage].data.metrics
        for name, key in (
            ("pass1", "heldout/think/pass_at_1"),
            ("pass_k", f"heldout/think/pass_at_{k}"),
        ):
            assert metrics[key] == pytest.approx(expected[name]), (stage, key)
            low, high = expected[f"{name}_ci"]
            assert (metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"]) == pytest.approx(
                (low, high)
            )
            assert table21[row][name] == pytest.approx(expected[name]), (row, name)
        assert metrics["time/train_s"] == pytest.approx(expected["train_seconds"])
        assert metrics["compute/flops"] == pytest.approx(expected["flops"])
    assert by_stage["student_rl"].data.tags["role"] == "table21_rl_control"

    figure2 = report["figure2"]
    for stage, curve in figure2["models"].items():
        run_id = by_stage[stage].info.run_id
        history = client.get_metric_history(run_id, "heldout/budget/think/pass_at_1")
        points = sorted((m.step, m.value) for m in history)
        assert [step for step, _ in points] == figure2["budgets"], stage
        assert [value for _, value in points] == pytest.approx(curve["think_pass1"]), stage
        rows = [
            r
            for r in _table(client, parent.info.run_id, "tables/figure2.json")
            if r["model"] == stage
        ]
        assert [r["think_pass1"] for r in rows] == pytest.approx(curve["think_pass1"])
    table22 = {r["row"] for r in _table(client, parent.info.run_id, "tables/table22.json")}
    assert table22 == set(report["stages"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.html" in artifacts
    page = (root / "report" / "report.html").read_text()
    assert "data:image/png;base64," in page and "Table 21" in page

    models = [m.name for m in client.search_logged_models([experiment.experiment_id])]
    assert len(models) == len(set(models)), models
    for run in runs:
        name, data = run.info.run_name, run.data
        assert data.tags["stage"] in STAGES, (name, data.tags["stage"])
        assert len(data.params) <= 60, name
        for key, value in data.params.items():
            assert str(root) not in value and "/tmp/" not in value, (name, key, value)
        absolute = [k for k, v in data.tags.items() if str(root) in v and k != "root"]
        assert not absolute, (name, absolute)  # the root once, as the pipeline run's tag
        series: dict[tuple, list[str]] = {}
        steps: dict[str, set[int]] = {}
        for key in data.metrics:
            history = client.get_metric_history(run.info.run_id, key)
            if len(history) > 1:
                series.setdefault(tuple((m.step, m.value) for m in history), []).append(key)
            if key.startswith("train/"):
                steps[key] = {m.step for m in history}
        assert not [keys for keys in series.values() if len(keys) > 1], name
        axis = steps.get("train/lr", set())  # logged at every optimizer step
        assert not [k for k, s in steps.items() if not s <= axis], (name, steps)  # one axis
        if name != parent.info.run_name:
            done = json.loads((root / name / "DONE.json").read_text())
            seconds = (run.info.end_time - run.info.start_time) / 1000
            if done["resumed"]:  # the killed attempt, the pause and the rerun
                assert seconds >= done["seconds"] * 0.9, name
            else:
                assert abs(seconds - done["seconds"]) <= 0.1 * done["seconds"], (name, seconds)


def test_one_seed_key_reseeds_every_stage_and_an_explicit_override_wins(tmp_path):
    """``seed`` (YAML key or ``--seed``) reaches every stage's training seeds; the report's
    held-out problems keep their own seed."""
    import yaml

    from lit_qwen3.recipe.pipeline import Pipeline, PipelineConfig, StageSpec

    spec = yaml.safe_load((REPO / "configs/toy/pipeline.yaml").read_text())
    stages = [StageSpec(**s) for s in spec["stages"]]
    stages[1].set["data.init_args.seed"] = 7  # the cold start's data: an explicit choice
    for seed in (None, 3):
        pipeline = Pipeline(
            PipelineConfig(root=str(tmp_path / str(seed)), stages=stages, seed=seed, report={})
        )
        configs = {s.name: (s.command, pipeline.stage_config(s)) for s in stages}
        for name, (command, config) in configs.items():
            if command == "curate":
                assert config["seed"] == (0 if seed is None else seed), name
                continue
            assert config["seed_everything"] == (0 if seed is None else seed), name
            model_seed = config["model"]["init_args"].get("seed")
            assert model_seed == seed, name  # the stage YAMLs leave it at its default
            data_seed = config["data"]["init_args"].get("seed")
            assert data_seed == (7 if name == "cold_start" else seed), name
