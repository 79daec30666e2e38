"""The real CLI on the toy task: configs parse, a short run exports a model and fills MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_qwen3.cli import main
from lit_qwen3.models import count_parameters, load_model

REPO = Path(__file__).resolve().parents[1]
ALL_CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
#: Stage configs (``lit-qwen3 fit``); pipeline configs list ``stages`` (``lit-qwen3 pipeline``).
PIPELINES = [p for p in ALL_CONFIGS if "stages" in (yaml.safe_load(p.read_text()) or {})]
CONFIGS = [p for p in ALL_CONFIGS if p not in PIPELINES]


def _opening(config: Path) -> str:
    return "\n".join(config.read_text().splitlines()[:3])


# Configs of the other subcommands (curate, pipeline) are parsed by their own tests, and the
# strategy overlays (merged over a stage config) by test_strategies.
FIT_CONFIGS = [
    p for p in CONFIGS if "lit-qwen3 fit --config" in _opening(p) and p.parent.name != "strategies"
]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """LightningCLI(args=...) warns when sys.argv also holds pytest's arguments."""
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])


def test_configs_exist():
    names = {p.relative_to(REPO / "configs").as_posix() for p in CONFIGS}
    assert {"toy/cold_start.yaml", "qwen3/0.6b/cold_start.yaml"} <= names


@pytest.mark.parametrize("config", PIPELINES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_pipeline_configs_open_with_their_command(config):
    first_lines = config.read_text().splitlines()[:3]
    command = f"lit-qwen3 pipeline --config {config.relative_to(REPO).as_posix()}"
    assert any(command in line for line in first_lines)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_shipped_config_opens_with_its_command(config):
    # strategy overlays come after the stage config they are merged over
    path = re.escape(config.relative_to(REPO).as_posix())
    command = rf"lit-qwen3 \w+ (--config \S+ )?--config {path}\b"
    assert re.search(command, _opening(config)), f"{config}: no command in its first 3 lines"


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_shipped_config_parses_and_opens_with_its_command(config, capsys):
    first_lines = config.read_text().splitlines()[:3]
    assert any(f"--config {config.relative_to(REPO).as_posix()}" in line for line in first_lines)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"].startswith("lit_qwen3.stages.")
    assert "tokenizer" not in resolved["data"]["init_args"]  # linked from the model's


def test_mlflow_is_the_default_logger(tmp_path, capsys):
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text(
        "model:\n  class_path: lit_qwen3.stages.ColdStartSFT\n"
        "data:\n  class_path: lit_qwen3.datamodules.conversations.ConversationDataModule\n"
    )
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(minimal), "--print_config"])
    logger = yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]
    assert logger["class_path"] == "lightning.pytorch.loggers.MLFlowLogger"
    assert logger["init_args"]["tracking_uri"].startswith("sqlite:///")


def test_bad_config_key_names_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    learning_rate: 0.1\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/toy/cold_start.yaml"), "--config", str(bad)])
    assert "learning_rate" in capsys.readouterr().err


def _override(tmp_path: Path) -> Path:
    override = {
        "trainer": {
            "max_steps": 6,
            "val_check_interval": 3,
            "limit_val_batches": 1,
            "log_every_n_steps": 1,
            "default_root_dir": str(tmp_path / "cold_start"),
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.MLFlowLogger",
                "init_args": {
                    "experiment_name": "cli-test",
                    "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                    "artifact_location": str(tmp_path / "artifacts"),
                },
            },
        },
        "pass_at_k": {
            "init_args": {
                "ks": [1, 2],
                "n_samples": 2,
                "every_n_steps": 3,
                "num_queries": 4,
                "max_new_tokens": 32,
                "log_samples": 3,
            }
        },
        "thinking_budget": {
            "init_args": {
                "stop_thinking": "\n</think>\n\n",
                "sweep": [0, 8],
                "num_queries": 4,
                "max_new_tokens": 32,
            }
        },
        "model": {"init_args": {"output_dir": str(tmp_path / "export")}},
        "data": {"init_args": {"toy_size": 400, "val_size": 16, "max_tokens_per_batch": 1024}},
    }
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    return path


def test_cli_run_exports_a_model_and_fills_mlflow(tmp_path):
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/toy/cold_start.yaml"),
            "--config",
            str(_override(tmp_path)),
        ]
    )

    export = tmp_path / "export"
    model = AutoModelForCausalLM.from_pretrained(export)
    tokenizer = AutoTokenizer.from_pretrained(export)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "12+34 /think"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert model(**prompt).logits.shape[-1] == model.config.vocab_size
    assert "<think>" in tokenizer.get_vocab() and tokenizer.chat_template

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("cli-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "cold_start-override"  # the stage and the extra config file
    assert run.data.tags["stage"] == "cold_start"
    assert run.data.tags["model"] == "toy-teacher"
    assert run.data.tags["dataset"] == "toy-arithmetic"
    assert run.data.params["model"] == "ColdStartSFT"
    assert run.data.params["trainer.max_steps"] == "6"
    assert run.data.params["ThinkingBudget.stop_thinking"] == '"\\n</think>\\n\\n"'
    metrics = run.data.metrics
    for key in (
        "train/loss",
        "train/lr",
        "val/loss",
        "val/think/pass_at_1",
        "val/think/pass_at_2",
        "val/no_think/pass_at_1",
        "budget_sweep/think_accuracy",
        "budget_sweep/no_think_accuracy",
    ):
        assert key in metrics, key
    assert not any(key.startswith("budget/") for key in metrics)  # one series, not a key a budget
    history = client.get_metric_history(run.info.run_id, "val/think/pass_at_1")
    assert sorted(m.step for m in history) == [0, 3, 6]
    val = client.get_metric_history(run.info.run_id, "val/loss")
    assert sorted(m.step for m in val) == [3, 6]  # the steps the evaluations use
    sweep = client.get_metric_history(run.info.run_id, "budget_sweep/think_accuracy")
    assert sorted(m.step for m in sweep) == [0, 8]  # x axis: the budget
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert all(torch.isfinite(torch.tensor(losses)))

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "samples", "figures", "budget_sweep.json"} <= artifacts
    config = yaml.safe_load(
        Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    )
    assert config["trainer"]["max_steps"] == 6
    assert config["trainer"]["default_root_dir"] == str(tmp_path / "cold_start")  # as written
    table_path = client.download_artifacts(run.info.run_id, "samples/pass_at_k.json", str(tmp_path))
    table = json.loads(Path(table_path).read_text())
    columns = table["columns"]
    assert {"step", "mode", "budget", "prompt", "completion", "verdict"} <= set(columns)
    rows = table["data"]
    assert {row[columns.index("mode")] for row in rows} == {"think", "no_think"}
    assert sorted({row[columns.index("step")] for row in rows}) == [0, 3, 6]  # appended
    assert all(any(c.isdigit() for c in row[columns.index("prompt")]) for row in rows)


FSDP2 = {
    "class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
    "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 1},
}


@pytest.mark.parametrize("strategy", ["ddp", FSDP2], ids=["ddp", "fsdp2"])
def test_console_script_runs_two_cpu_processes(tmp_path, strategy):
    """Two ranks on CPU (DDP, or FSDP2 sharding): evaluation shards its queries and syncs the
    metrics, the export gathers the weights, one MLflow run, exit status 0. FSDP2 writes a
    sharded checkpoint; the same command, rerun with more steps in its config, resumes from it."""
    override = yaml.safe_load(_override(tmp_path).read_text())
    override["trainer"].update(strategy=strategy, devices=2, max_steps=4, val_check_interval=2)
    override["pass_at_k"]["init_args"].update(every_n_steps=2, num_queries=5)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(override))
    script = Path(sys.executable).parent / "lit-qwen3"
    config = REPO / "configs/toy/cold_start.yaml"
    command = [str(script), "fit", "--config", str(config), "--config", str(path)]

    def run() -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]

    run()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    full = load_model("toy-teacher")  # every shard gathered: the exported model is whole
    assert count_parameters(model) == count_parameters(full)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run_info,) = client.search_runs([client.get_experiment_by_name("cli-test").experiment_id])
    assert run_info.info.status == "FINISHED"
    history = client.get_metric_history(run_info.info.run_id, "val/think/pass_at_2")
    assert sorted(m.step for m in history) == [0, 2, 4]  # logged once per evaluation, by rank 0
    if strategy != FSDP2:
        return
    last = tmp_path / "cold_start" / "cold_start-ddp" / "checkpoints" / "last.ckpt"
    assert last.is_dir()  # sharded: one file per rank
    override["trainer"]["max_steps"] = 6
    path.write_text(yaml.safe_dump(override))
    run()
    (again,) = client.search_runs([client.get_experiment_by_name("cli-test").experiment_id])
    assert again.info.run_id == run_info.info.run_id
    history = client.get_metric_history(again.info.run_id, "val/think/pass_at_2")
    assert sorted(m.step for m in history) == [0, 2, 4, 6]  # continued, nothing evaluated twice
