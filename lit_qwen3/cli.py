"""``lit-qwen3``: every stage from YAML through LightningCLI, tracked in MLflow.

    lit-qwen3 fit --config configs/toy/cold_start.yaml
    lit-qwen3 fit --config configs/toy/cold_start.yaml --trainer.max_steps 50 --print_config
    lit-qwen3 curate --config configs/toy/curate.yaml      # data curation (no Lightning loop)
    lit-qwen3 pipeline --config configs/toy/pipeline.yaml  # every stage in order, one report

Configs use ``class_path``/``init_args`` for the stage module and datamodule, omegaconf
``${...}`` interpolation, and may be repeated (later files override earlier ones). The data's
tokenizer follows the model's unless set. The resolved config is logged to MLflow as params and
as ``config.yaml``, and the run is tagged with its stage, model and dataset.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from lit_qwen3.strategies import check_strategy_requirements
from lit_qwen3.tracking import mlflow_loggers


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): config}


def _describe_data(datamodule: LightningDataModule | None) -> str:
    if datamodule is None:
        return "none"
    data = getattr(datamodule, "hparams", {}).get("data", "n/a")
    return "toy-arithmetic" if data is None else str(data)


class MLflowConfig(SaveConfigCallback):
    """Log the resolved config to MLflow: flattened as params, whole as ``config.yaml``; tag the run."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        config = self.config.clone().as_dict()
        params = {k: v for k, v in _flatten(config).items() if not k.startswith("config")}
        tags = {
            "stage": getattr(pl_module, "stage", type(pl_module).__name__),
            "model": str(getattr(pl_module, "hparams", {}).get("model", type(pl_module).__name__)),
            "dataset": _describe_data(trainer.datamodule),
        }
        for logger in mlflow_loggers(trainer):
            client, run_id = logger.experiment, logger.run_id
            for key, value in params.items():
                client.log_param(run_id, f"config.{key}"[:250], str(value)[:6000])
            client.log_text(run_id, text, "config.yaml")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)


class LitQwen3CLI(LightningCLI):
    """LightningCLI with omegaconf interpolation and the model → data tokenizer link."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            ("model.init_args.model", "model.init_args.tokenizer"),
            "data.init_args.tokenizer",
            compute_fn=lambda model, tokenizer: tokenizer or model,
        )

    def before_instantiate_classes(self) -> None:
        """Fail before any process starts when the strategy needs a missing extra (DeepSpeed)."""
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        trainer = config.get("trainer") or {}
        strategy = trainer.get("strategy") if hasattr(trainer, "get") else None
        if strategy is not None:
            if hasattr(strategy, "class_path"):
                strategy = strategy.class_path
            check_strategy_requirements(strategy)

    def after_fit(self) -> None:
        trainer, module = self.trainer, self.model
        if not trainer.is_global_zero:
            return
        output_dir = getattr(module, "hparams", {}).get("output_dir")
        if output_dir:
            rank_zero_info(f"Exported model: {output_dir}")
        for logger in mlflow_loggers(trainer):
            rank_zero_info(
                f"MLflow run {logger.run_id} (experiment {logger.experiment_id}): "
                f"mlflow ui --backend-store-uri {logger._tracking_uri}"
            )


#: MLflow unless a config says otherwise: a local sqlite store (the ``file:`` store is legacy).
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.MLFlowLogger",
    "init_args": {
        "experiment_name": "lit-qwen3",
        "tracking_uri": "sqlite:///runs/mlflow.db",
        "artifact_location": "runs/mlartifacts",
    },
}


#: Subcommands that are not a Lightning loop: name -> "module:function" taking the remaining args.
SUBCOMMANDS: dict[str, str] = {
    "curate": "lit_qwen3.curation.cli:main",
    "pipeline": "lit_qwen3.pipeline:main",
}


def main(args: list[str] | None = None) -> None:
    """The ``lit-qwen3`` console script (returns None: its value becomes the exit status).

    ``fit``/``validate``/... go to LightningCLI; the names in ``SUBCOMMANDS`` to their own parser.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in SUBCOMMANDS:
        module, function = SUBCOMMANDS[argv[0]].split(":")
        getattr(importlib.import_module(module), function)(argv[1:])
        return
    LitQwen3CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=MLflowConfig,
        save_config_kwargs={"save_to_log_dir": False},
        trainer_defaults={"logger": DEFAULT_LOGGER},
        parser_kwargs={"parser_mode": "omegaconf"},
        args=args,
    )


if __name__ == "__main__":
    main()
