"""Two short runs with different learning rates, compared through MlflowClient as a person would
in the MLflow UI: names, descriptions, params, figures, series, tables, outputs on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lit_qwen3.cli import main
from tests.probes import TOY_CONFIG, write_tiny
from tests.single_thread import one_thread  # noqa: F401


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_two_runs_are_distinguishable_and_comparable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = write_tiny(tmp_path)
    for lr in ("0.004", "0.001"):
        args = ["--config", str(TOY_CONFIG), "--config", str(tiny)]
        main(["fit", *args, "--model.init_args.optimizer.lr", lr, "--parent_run", "lr-sweep"])

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/toy/mlflow.db")
    experiment = client.get_experiment_by_name("lit-qwen3-toy")
    assert "Runs of lit-qwen3" in experiment.tags["mlflow.note.content"]
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    children = {r.info.run_name: r for r in runs if "stage" in r.data.tags}
    assert set(children) == {"cold_start-tiny-lr=0.004", "cold_start-tiny-lr=0.001"}
    (parent,) = [r for r in runs if r.info.run_name == "lr-sweep"]
    for name, run in children.items():
        lr = name.rpartition("=")[2]
        data = run.data
        assert data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert f"`model.init_args.optimizer.lr` = `{lr}`" in data.tags["mlflow.note.content"]
        assert "lit-qwen3 fit --config" in data.tags["mlflow.note.content"]
        assert len(data.params) <= 60
        assert not [k for k, v in data.params.items() if v in ("None", "null")]
        assert data.params["model.optimizer.lr"] == lr
        assert {"train/lr", "train/loss", "val/loss"} <= set(data.metrics)
        assert any(key.startswith("system/") for key in data.metrics)
        sweep = client.get_metric_history(run.info.run_id, "budget_sweep/think_accuracy")
        assert sorted(m.step for m in sweep) == [0, 8]  # the budgets
        artifacts = _artifacts(client, run.info.run_id)
        assert {"figures/budget_sweep.png", "figures/pass_at_k.png"} <= set(artifacts)
        assert [a for a in artifacts if a.startswith("samples/")] == [
            "samples/pass_at_k.json",
            "samples/thinking_budget.json",
        ]
        table = json.loads(
            Path(client.download_artifacts(run.info.run_id, "samples/pass_at_k.json")).read_text()
        )
        steps = {row[table["columns"].index("step")] for row in table["data"]}
        assert steps == {0, 2, 4}  # one table, appended at every evaluation
        (dataset,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert dataset.dataset.name == "toy-arithmetic"
        outputs = client.get_run(run.info.run_id).outputs.model_outputs
        model = client.get_logged_model(outputs[0].model_id)
        assert model.tags["path"] == data.tags["exported_model"]

    exports = {r.data.tags["exported_model"] for r in children.values()}
    assert len(exports) == 2 and all((Path(p) / "config.json").exists() for p in exports)
    newest = max(children.values(), key=lambda r: r.info.end_time).data.tags["exported_model"]
    assert os.path.realpath(tmp_path / "runs/toy/cold_start/model") == newest
