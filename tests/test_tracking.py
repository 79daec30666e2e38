"""MLflow params a person can diff, and the figures evaluations log."""

from __future__ import annotations

import pytest

from lit_qwen3.runtime.plots import budget_sweep_figure, pass_at_k_figure
from lit_qwen3.runtime.tracking import absolute_tracking_uri, config_params, param_value

CONFIG = {
    "seed_everything": 0,
    "config": ["configs/toy/cold_start.yaml"],
    "run_name": None,
    "ckpt_path": None,
    "model": {
        "class_path": "lit_qwen3.stages.ColdStartSFT",
        "init_args": {
            "model": "toy-teacher",
            "tokenizer": None,
            "output_dir": None,
            "optimizer": {"lr": 0.002, "betas": [0.9, 0.98]},
            "seed": 0,  # the default, kept: the stage module's arguments all count
        },
    },
    "data": {
        "class_path": "lit_qwen3.datamodules.conversations.ConversationDataModule",
        "init_args": {"toy_size": 30000, "max_length": 1024, "packing": False, "data": None},
    },
    "trainer": {
        "accelerator": "cpu",
        "devices": "auto",  # Trainer's default: dropped
        "max_steps": 30,
        "max_epochs": None,
        "default_root_dir": "runs/toy/cold_start",
        "logger": {"class_path": "lightning.pytorch.loggers.MLFlowLogger", "init_args": {}},
        "strategy": {
            "class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
            "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 1},
        },
        "callbacks": [
            {
                "class_path": "lit_qwen3.callbacks.ThinkingBudget",
                "init_args": {"stop_thinking": "\n</think>\n\n", "sweep": [0, 8], "seed": 0},
            }
        ],
    },
    "pass_at_k": {
        "class_path": "lit_qwen3.callbacks.PassAtK",
        "init_args": {"ks": [1, 4], "n_samples": 8, "num_queries": 64},
    },
    "thinking_budget": None,
}


def test_params_are_short_without_none_plumbing_or_trainer_defaults():
    params = config_params(CONFIG)
    assert params == {
        "model": "ColdStartSFT",
        "model.model": "toy-teacher",
        "model.optimizer.lr": "0.002",
        "model.optimizer.betas": "[0.9, 0.98]",
        "model.seed": "0",
        "data": "ConversationDataModule",
        "data.toy_size": "30000",
        "data.packing": "false",
        "data.max_length": "1024",  # the datamodule's default, kept as the module's are
        "trainer.accelerator": "cpu",
        "trainer.max_steps": "30",
        "trainer.strategy": "ModelParallelStrategy",
        "trainer.strategy.data_parallel_size": "2",
        "trainer.strategy.tensor_parallel_size": "1",  # its default is "auto"
        "ThinkingBudget.stop_thinking": '"\\n</think>\\n\\n"',
        "ThinkingBudget.sweep": "[0, 8]",
        "PassAtK.ks": "[1, 4]",
        "PassAtK.num_queries": "64",
        "callbacks": "PassAtK, ThinkingBudget",
        "seed_everything": "0",
    }


def test_params_name_each_setting_once_and_paths_relative_to_the_pipeline_root(tmp_path):
    root = tmp_path / "pipeline"
    config = {
        "model": {
            "class_path": "lit_qwen3.stages.ReasoningRL",
            "init_args": {"model": str(root / "cold_start/model"), "stop_thinking": "\n</think>"},
        },
        "data": {
            "class_path": "lit_qwen3.datamodules.queries.QueryDataModule",
            "init_args": {
                "data": str(root / "rl_queries/rl_queries.jsonl"),
                "tokenizer": str(root / "cold_start/model"),  # linked to the model: not again
                "seed": 0,
            },
        },
        "trainer": {
            "callbacks": [
                {
                    "class_path": "lit_qwen3.callbacks.ThinkingBudget",
                    "init_args": {"stop_thinking": "\n</think>", "seed": 0},
                }
            ]
        },
    }
    params = config_params(config, root=str(root))
    assert params["model.model"] == "cold_start/model"
    assert params["data.data"] == "rl_queries/rl_queries.jsonl"
    assert not [k for k, v in params.items() if str(tmp_path) in v], params
    assert "data.tokenizer" not in params
    assert [k for k in params if k.endswith("stop_thinking")] == ["model.stop_thinking"]
    assert params["data.seed"] == "0"  # numbers stay, equal or not
    assert config_params(config)["model.model"] == str(root / "cold_start/model")  # no root


def test_params_stay_under_the_limit():
    params = config_params(CONFIG, limit=12)
    assert len(params) == 12
    assert "model.seed" not in params  # the module's defaults go first
    assert params["model"] == "ColdStartSFT" and params["trainer.max_steps"] == "30"


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (3, "3"), (0.5, "0.5"), ("toy", "toy"), ([1, 2], "[1, 2]"), (" x", '" x"')],
)
def test_param_value(value, text):
    assert param_value(value) == text


def test_budget_sweep_figure_draws_every_sweep_and_the_no_think_line():
    sweeps = {100: ([(0, 0.1), (8, 0.4), (64, 0.8)], 0.3), 50: ([(0, 0.0), (8, 0.2)], 0.1)}
    figure = budget_sweep_figure(sweeps)
    (ax,) = figure.axes
    lines = ax.get_lines()
    assert [list(line.get_xdata()) for line in lines[:2]] == [[0, 8], [0, 8, 64]]
    assert list(lines[1].get_ydata()) == [0.1, 0.4, 0.8]  # the newest sweep, drawn last and bold
    assert lines[1].get_linewidth() > lines[0].get_linewidth()
    assert list(lines[2].get_ydata()) == [0.3, 0.3]  # non-thinking accuracy of the newest sweep
    assert ax.get_xscale() == "symlog"  # budgets from 8 to 64: a log axis, 0 on its linear part
    with pytest.raises(ValueError, match="at least one sweep"):
        budget_sweep_figure({})


def test_pass_at_k_figure_one_line_per_mode():
    figure = pass_at_k_figure({"think": {1: 0.5, 8: 0.9}, "no_think": {1: 0.2, 8: 0.4}})
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.get_lines()] == ["think", "no_think"]
    assert list(ax.get_lines()[0].get_ydata()) == [0.5, 0.9]
    assert ax.get_xscale() == "log"


def test_relative_tracking_uris_are_pinned_to_the_directory_they_were_given_in(
    tmp_path, monkeypatch
):
    """MLflow keeps one store per URI string for the whole process: a relative sqlite URI reused
    after a chdir would write into the first directory's database (seen in the suite)."""
    from mlflow.tracking import MlflowClient

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        uri = absolute_tracking_uri("sqlite:///runs/mlflow.db")
        assert uri == f"sqlite:///{tmp_path / name}/runs/mlflow.db"
        (tmp_path / name / "runs").mkdir()
        MlflowClient(uri).create_experiment(f"in-{name}")
    for name, other in (("a", "b"), ("b", "a")):
        client = MlflowClient(f"sqlite:///{tmp_path / name}/runs/mlflow.db")
        assert client.get_experiment_by_name(f"in-{name}") is not None
        assert client.get_experiment_by_name(f"in-{other}") is None
    for kept in ("sqlite:////abs/mlflow.db", "http://127.0.0.1:5000", "databricks", None):
        assert absolute_tracking_uri(kept) == kept


def test_published_metrics_reach_monitors_and_the_progress_bar(tmp_path):
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_qwen3.runtime.tracking import publish_metrics

    scores = [0.1, 0.9, 0.3, 0.2]  # the best step is the second

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            self.optimizers().step()
            publish_metrics(
                self, {"train/score": scores[batch_idx], "train/other": -1.0}, ["train/score"]
            )

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    best = ModelCheckpoint(tmp_path, monitor="train/score", mode="max", every_n_train_steps=1)
    trainer = L.Trainer(
        max_steps=len(scores),
        logger=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[best],
    )
    trainer.fit(Module(), train_dataloaders=torch.utils.data.DataLoader(range(len(scores))))
    assert float(best.best_model_score) == pytest.approx(0.9)
    assert "step=2" in best.best_model_path  # saved after the second step
    assert float(trainer.callback_metrics["train/other"]) == -1.0
    assert float(trainer.progress_bar_metrics["train/score"]) == pytest.approx(0.2)
    assert "train/other" not in trainer.progress_bar_metrics
