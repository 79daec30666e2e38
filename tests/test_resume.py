"""Kill -9 and rerun the same command: the run resumes from its last checkpoint (weights,
optimiser, schedule, data position, callback state), logs into the same MLflow run, and ends
bit-identical to an uninterrupted run.

One run is killed four times in a row, each time at a different point (tests/probes.py's
KillSwitch), rerunning the same command in between:

1. ``setup``        before any checkpoint: the rerun starts over, in the same MLflow run;
2. ``step:1``       after the start evaluation's checkpoint (step 0) and one step: the rerun
                    continues from step 0 without evaluating again;
3. ``checkpoint:6`` between writing ``last.ckpt.partial`` and renaming it: step 4's stays, the
                    rerun continues from there;
4. ``export``       between writing ``model.partial`` and renaming it: no ``model`` appears;
then a last rerun finishes (it trains nothing: the step-8 checkpoint is final) and exports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from lit_qwen3.cli import main
from lit_qwen3.runtime.runs import read_run_record
from tests.probes import REPO, TOY_CONFIG, write_tiny
from tests.single_thread import one_thread  # noqa: F401


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])


def _command(tmp_path: Path, root: str) -> list[str]:
    tiny = write_tiny(
        tmp_path,
        "resume",
        trainer={
            "max_steps": 8,
            "val_check_interval": 4,
            "limit_val_batches": 1,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [{"class_path": "tests.probes.KillSwitch"}],
        },
        pass_at_k={"init_args": {"ks": [1], "n_samples": 1, "every_n_steps": 4, "num_queries": 2}},
        thinking_budget={"init_args": {"sweep": [0, 8], "num_queries": 2, "max_new_tokens": 8}},
    )
    return ["fit", "--config", str(TOY_CONFIG), "--config", str(tiny)] + [
        "--trainer.default_root_dir",
        root,
    ]


def _killed(tmp_path: Path, command: list[str], point: str) -> None:
    env = {**os.environ, "LIT_QWEN3_KILL": point, "PYTHONPATH": str(REPO)}
    env["OMP_NUM_THREADS"] = "1"
    script = Path(sys.executable).parent / "lit-qwen3"
    done = subprocess.run(
        [str(script), *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -signal.SIGKILL, f"{point}: {done.stderr[-2000:]}"


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["global_step"]


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, list[float]]:
    values = defaultdict(list)
    for metric in client.get_metric_history(run_id, key):
        values[metric.step].append(metric.value)
    return dict(values)


def test_kill_9_at_four_points_then_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(_command(tmp_path, "reference"))
    command = _command(tmp_path, "killed")
    run_dir = tmp_path / "killed" / "cold_start-resume"
    checkpoints = run_dir / "checkpoints"

    _killed(tmp_path, command, "setup")
    assert not checkpoints.exists()
    first_run_id = read_run_record(run_dir)["mlflow_run_id"]
    _killed(tmp_path, command, "step:1")
    assert _step(checkpoints / "last.ckpt") == 0
    _killed(tmp_path, command, "checkpoint:6")
    assert (checkpoints / "last.ckpt.partial").exists()  # complete, never renamed
    assert _step(checkpoints / "last.ckpt") == 4
    _killed(tmp_path, command, "export")
    assert _step(checkpoints / "last.ckpt") == 8
    assert (run_dir / "model.partial" / "config.json").exists() and not (run_dir / "model").exists()
    main(command)

    reference = load_file(tmp_path / "reference/cold_start-resume/model/model.safetensors")
    resumed = load_file(run_dir / "model" / "model.safetensors")
    assert reference.keys() == resumed.keys()
    for name, tensor in reference.items():
        assert torch.equal(tensor, resumed[name]), name
    assert os.readlink(tmp_path / "killed" / "model") == "cold_start-resume/model"

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/toy/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lit-qwen3-toy").experiment_id])
    ours = [r for r in runs if r.data.tags.get("run_dir") == str(run_dir.relative_to(tmp_path))]
    (run,) = ours  # one MLflow run for the five processes
    assert run.info.run_id == first_run_id and run.info.status == "FINISHED"
    (ref,) = [r for r in runs if r is not run and r.info.run_id != run.info.run_id]
    expected = _history(client, ref.info.run_id, "train/loss")
    got = _history(client, run.info.run_id, "train/loss")
    assert got.keys() == expected.keys() == set(range(8))
    for step, values in got.items():  # steps replayed after a kill log the same values again
        assert set(values) == set(expected[step]), step
    # callback state: every evaluation ran once, none repeated on resume
    evals = _history(client, run.info.run_id, "val/think/pass_at_1")
    assert evals == _history(client, ref.info.run_id, "val/think/pass_at_1")
    assert sorted(evals) == [0, 4, 8]
    sweep = _history(client, run.info.run_id, "budget_sweep/think_accuracy")
    assert {step: len(v) for step, v in sweep.items()} == {0: 1, 8: 1}
