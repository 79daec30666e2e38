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

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs/toy/pipeline_smoke.yaml"


def _command(root: Path) -> list[str]:
    script = Path(sys.executable).parent / "lit-qwen3"
    return [str(script), "pipeline", "--config", str(SMOKE), "--root", str(root)]


def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path):
    root = tmp_path / "pipeline"
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
    assert "cold_start: done earlier, skipped" in rerun.stderr
    assert done.stat().st_mtime == finished_at  # not redone

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
