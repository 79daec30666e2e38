"""``lit-qwen3``: every stage from YAML through LightningCLI, tracked in MLflow.

    lit-qwen3 fit --config configs/toy/cold_start.yaml
    lit-qwen3 fit --config configs/toy/cold_start.yaml --trainer.max_steps 50 --print_config
    lit-qwen3 curate --config configs/toy/curate.yaml      # data curation (no Lightning loop)
    lit-qwen3 pipeline --config configs/toy/pipeline.yaml  # every stage in order, one report

Configs use ``class_path``/``init_args`` for the stage module and datamodule, omegaconf
``${...}`` interpolation, and may be repeated (later files override earlier ones). The data's
tokenizer follows the model's unless set.

Each run is named after its stage and its command-line overrides and writes into
``<trainer.default_root_dir>/<run name>/`` (``lit_qwen3.runtime.runs``); rerunning the same command
resumes from that directory's last checkpoint and logs into the same MLflow run. ``--run_name``
(or a ``run_name`` the config gives its MLflow logger) picks the name, ``--parent_run
NAME_OR_ID`` nests the run under a parent (a sweep; the pipeline sets the parent itself).
Evaluation and checkpointing callbacks have named keys the command line reaches one setting at a
time: ``--pass_at_k.init_args.num_queries 8``, ``--thinking_budget.init_args.sweep '[0, 64]'``,
``--checkpoint.init_args.every_n_train_steps 100`` (``--pass_at_k null`` turns one off).

MLflow gets params a person can diff, ``config.yaml``, tags (stage, model, dataset, run
directory), a description with the command, the training data as a dataset input, system
metrics, and the exported model as a logged model. An error a user can cause (a missing model
or data file, a bad value) prints one line, no traceback (``LIT_QWEN3_TRACEBACK=1`` shows it).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_qwen3.callbacks import PassAtK, ThinkingBudget
from lit_qwen3.rollout.vllm_rollouts import require_vllm
from lit_qwen3.runtime.checkpointing import resume_checkpoint
from lit_qwen3.runtime.faults import NonFiniteError
from lit_qwen3.runtime.runs import (
    command_line_overrides,
    describe_command,
    point_to,
    read_run_record,
    run_name,
    write_run_record,
)
from lit_qwen3.runtime.strategies import check_strategy_requirements
from lit_qwen3.runtime.tracking import (
    SystemMetrics,
    absolute_tracking_uri,
    config_params,
    describe_experiment,
    log_dataset_input,
    log_exported_model,
    mlflow_loggers,
    pipeline_root,
    relative_path,
)

MLFLOW_LOGGER = "lightning.pytorch.loggers.MLFlowLogger"
PARENT_TAG = "lit_qwen3.parent"


def _describe_data(datamodule: LightningDataModule | None) -> str:
    if datamodule is None:
        return "none"
    data = getattr(datamodule, "hparams", {}).get("data", "n/a")
    return "toy-arithmetic" if data is None else str(data)


class MLflowConfig(SaveConfigCallback):
    """Describe the run in MLflow: params a person can diff (``tracking.config_params``), the
    whole config as ``config.yaml``, tags, and the training data as a dataset input."""

    def __init__(self, *args: Any, user_config: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_config = user_config  # as written and parsed, before the run directory

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        config = self.user_config if self.user_config is not None else self.config
        text = self.parser.dump(config, skip_none=False)
        params = config_params(config.clone().as_dict())
        tags = {
            "stage": getattr(pl_module, "stage", type(pl_module).__name__),
            "model": str(
                relative_path(getattr(pl_module, "hparams", {}).get("model"))
                or type(pl_module).__name__
            ),
            "dataset": str(relative_path(_describe_data(trainer.datamodule))),
            "run_dir": str(relative_path(str(trainer.default_root_dir))),
        }
        for logger in mlflow_loggers(trainer):
            client, run_id = logger.experiment, logger.run_id
            existing = client.get_run(run_id).data.params
            new = [Param(k, v) for k, v in params.items() if existing.get(k) != v]
            try:
                for start in range(0, len(new), 100):
                    client.log_batch(run_id, params=new[start : start + 100])
            except MlflowException as error:  # a resumed run whose settings changed
                rank_zero_warn(f"MLflow params not updated ({error.message.splitlines()[0]})")
            client.log_text(run_id, text, "config.yaml")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
            if not client.get_run(run_id).inputs.dataset_inputs:
                log_dataset_input(client, run_id, trainer.datamodule)


def _stage_of(class_path: str) -> str:
    """A stage module's ``stage`` name (``cold_start``), else its class name in snake case."""
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    stage = getattr(cls, "stage", None)
    if isinstance(stage, str) and stage not in ("stage", ""):
        return stage
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _logger_configs(trainer_config: Any) -> list[Any]:
    loggers = trainer_config.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    return [c for c in loggers if hasattr(c, "class_path") and hasattr(c, "init_args")]


def _existing_run(tracking_uri: str, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def _parent_run_id(client: Any, experiment_id: str, parent: str) -> str:
    """The run id of ``parent`` (an id, or the name of a parent run, created when missing)."""
    from mlflow.exceptions import MlflowException

    if re.fullmatch(r"[0-9a-f]{32}", parent):
        try:
            return client.get_run(parent).info.run_id
        except MlflowException:
            pass
    found = client.search_runs(
        [experiment_id],
        f"tags.mlflow.runName = '{parent}' and tags.`{PARENT_TAG}` = 'true'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=parent, tags={PARENT_TAG: "true"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


class LitQwen3CLI(LightningCLI):
    """LightningCLI with omegaconf interpolation, the model → data tokenizer link, named
    evaluation and checkpoint callbacks, per-run directories and resume."""

    def __init__(self, *args: Any, command: list[str] | None = None, **kwargs: Any) -> None:
        self.command = command or ["lit-qwen3", *sys.argv[1:]]
        self.run_dir: Path | None = None
        self.stage_root: Path | None = None
        self.resumed_run_id: str | None = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            ("model.init_args.model", "model.init_args.tokenizer"),
            "data.init_args.tokenizer",
            compute_fn=lambda model, tokenizer: tokenizer or model,
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run and of its directory (default: stage + command-line overrides).",
        )
        parser.add_argument(
            "--parent_run",
            type=str | None,
            default=None,
            help="Nest the MLflow run under this run (an id, or a name: created when missing).",
        )
        parser.add_lightning_class_args(PassAtK, "pass_at_k", subclass_mode=True, required=False)
        parser.add_lightning_class_args(
            ThinkingBudget, "thinking_budget", subclass_mode=True, required=False
        )
        parser.add_lightning_class_args(
            ModelCheckpoint, "checkpoint", subclass_mode=True, required=False
        )
        parser.set_defaults(
            {"checkpoint": {"class_path": "lit_qwen3.runtime.checkpointing.PeriodicCheckpoint"}}
        )

    # -- run directory and resume ---------------------------------------------------------------
    def _arguments_after_subcommand(self) -> list[str]:
        args = self.command[1:]
        return args[args.index(self.subcommand) + 1 :] if self.subcommand in args else args

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        strategy = config.trainer.get("strategy")
        # fail before any process starts when the strategy needs a missing extra (DeepSpeed)
        check_strategy_requirements(getattr(strategy, "class_path", strategy))
        if config.model.get("init_args", {}).get("rollout_backend") == "vllm":
            require_vllm()  # the same for vLLM rollouts: before the stage and trainer are built
        self.save_config_kwargs["user_config"] = config.clone()
        stage = _stage_of(config.model.class_path)
        root = Path(config.trainer.get("default_root_dir") or f"runs/{stage}")
        loggers = _logger_configs(config.trainer)
        # --run_name, else a name a config gives its logger on purpose (the pipeline does),
        # else the stage and the command-line overrides
        named = [c.init_args.get("run_name") for c in loggers if c.init_args.get("run_name")]
        name = config.get("run_name") or (named[0] if named else None)
        name = name or run_name(stage, self._arguments_after_subcommand())
        self.stage_root, self.run_dir = root, root / name
        config.trainer.default_root_dir = str(self.run_dir)
        record = read_run_record(self.run_dir)
        for logger in loggers:
            args = logger.init_args
            if "run_name" in args and not args.get("run_name"):
                args.run_name = name
            uri = args.get("tracking_uri")
            if uri:
                args.tracking_uri = uri = absolute_tracking_uri(uri)
            if self.subcommand == "fit" and "run_id" in args and record.get("tracking_uri") == uri:
                run_id = record.get("mlflow_run_id")
                if run_id and _existing_run(uri, run_id):
                    args.run_id = self.resumed_run_id = run_id

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer with the named callbacks (unset ones dropped; the named checkpoint too
        when ``trainer.callbacks`` has its own) and MLflow system metrics."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        listed = config["trainer"].get("callbacks") or []
        extra = []
        for key in self._parser(self.subcommand).callback_keys:
            callback = self._get(self.config_init, key)
            if callback is None:
                continue
            if key == "checkpoint" and any(isinstance(c, ModelCheckpoint) for c in listed):
                continue
            extra.append(callback)
        if not any(isinstance(c, SystemMetrics) for c in listed):
            extra.append(SystemMetrics())
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, extra)

    def before_fit(self) -> None:
        trainer, run_dir = self.trainer, self.run_dir
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.realpath(run_dir / "checkpoints")
        kwargs = self.config_init[self.subcommand]
        if kwargs.get("ckpt_path") is None:
            directories = [Path(c.dirpath) for c in trainer.checkpoint_callbacks if c.dirpath]
            found = next(filter(None, (resume_checkpoint(d) for d in directories)), None)
            if found is not None:
                kwargs["ckpt_path"] = str(found)
                rank_zero_info(f"Resuming run {run_dir.name} from {found}")
        # the config is logged once, as params a person can diff: not Lightning's hparams too
        self.model._log_hyperparams = False
        if self.datamodule is not None:
            self.datamodule._log_hyperparams = False
        if trainer.is_global_zero:
            self._start_mlflow_runs()

    def _start_mlflow_runs(self) -> None:
        config = self.config[self.subcommand]
        args = self._arguments_after_subcommand()
        description = describe_command(  # in a pipeline: paths relative to its root
            [str(relative_path(a)) for a in self.command],
            [str(relative_path(a)) for a in args],
            str(relative_path(str(self.run_dir))),
        )
        if pipeline_root() is not None:
            description += "\n\nPaths are relative to the pipeline's root (its run's `root` tag)."
        for logger in mlflow_loggers(self.trainer):
            client, run_id = logger.experiment, logger.run_id  # creates the run if new
            if run_id == self.resumed_run_id:
                client.update_run(run_id, status="RUNNING")
            write_run_record(
                self.run_dir,
                {
                    "mlflow_run_id": run_id,
                    "experiment_id": logger.experiment_id,
                    "tracking_uri": logger._tracking_uri,
                    "run_name": self.run_dir.name,
                    "command": self.command,
                    "overrides": command_line_overrides(args)[1],
                },
            )
            describe_experiment(client, logger.experiment_id)
            client.set_tag(run_id, "mlflow.note.content", description)
            if config.get("parent_run"):
                parent = _parent_run_id(client, logger.experiment_id, config.parent_run)
                client.set_tag(run_id, "mlflow.parentRunId", parent)

    def after_fit(self) -> None:
        trainer, module = self.trainer, self.model
        if not trainer.is_global_zero:
            return
        exported = getattr(module, "exported_to", None)
        if exported is not None:
            rank_zero_info(f"Exported model: {exported}")
            default = getattr(module, "hparams", {}).get("output_dir") is None
            if default and self.stage_root is not None:
                link = self.stage_root / "model"
                if point_to(link, exported):
                    rank_zero_info(f"  {link} -> {exported} (the stage's newest export)")
                else:
                    rank_zero_warn(f"{link} is not a symlink: left as it is")
        for logger in mlflow_loggers(trainer):
            client = logger.experiment
            outputs = client.get_run(logger.run_id).outputs
            logged = {m.step for m in (outputs.model_outputs if outputs else [])}
            if exported is not None and trainer.global_step not in logged:
                path = relative_path(str(Path(exported).resolve()))
                client.set_tag(logger.run_id, "exported_model", path)
                tags = client.get_run(logger.run_id).data.tags
                log_exported_model(
                    client,
                    logger.run_id,
                    logger.experiment_id,
                    exported,
                    # a pipeline's stage name is unique in it (two RL stages share a module)
                    name=tags.get("pipeline_stage") or getattr(module, "stage", "model"),
                    step=trainer.global_step,
                )
            if client.get_run(logger.run_id).info.status == "RUNNING":
                # a finished fit ends its run, even if a late write (a resumed run's reopening,
                # a monitor thread under load) landed after the logger's own finalize
                client.set_terminated(logger.run_id, "FINISHED")
            rank_zero_info(
                f"MLflow run {logger.run_id} (experiment {logger.experiment_id}): "
                f"mlflow ui --backend-store-uri {logger._tracking_uri}"
            )


#: MLflow unless a config says otherwise: a local sqlite store (the ``file:`` store is legacy).
DEFAULT_LOGGER = {
    "class_path": MLFLOW_LOGGER,
    "init_args": {
        "experiment_name": "lit-qwen3",
        "tracking_uri": "sqlite:///runs/mlflow.db",
        "artifact_location": "runs/mlartifacts",
    },
}


#: Subcommands that are not a Lightning loop: name -> "module:function" taking the remaining args.
SUBCOMMANDS: dict[str, str] = {
    "curate": "lit_qwen3.curation.cli:main",
    "pipeline": "lit_qwen3.recipe.pipeline:main",
}

#: Exceptions a user's input can cause, when raised by this project or by Lightning's checks of
#: its settings (``val_check_interval`` larger than the data...): one line, not a traceback.
USER_ERRORS = (OSError, ValueError, NonFiniteError, MisconfigurationException)
_OUR_SOURCES = tuple(
    str(Path(importlib.import_module(m).__file__).parent) + os.sep
    for m in ("lit_qwen3", "lit_qwen3.datamodules", "lit_qwen3.callbacks", "lightning.pytorch")
)


def _raised_here(error: BaseException) -> bool:
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_code.co_filename.startswith(_OUR_SOURCES)


def user_error_message(error: BaseException) -> str | None:
    """The message to show for ``error`` (or an exception it was raised from), when a user's
    input caused it; None for anything else (a bug: the traceback matters)."""
    seen: set[int] = set()
    chain: BaseException | None = error
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, USER_ERRORS) and (
            _raised_here(chain) or isinstance(chain, MisconfigurationException)
        ):
            return " ".join(str(chain).split())
        chain = chain.__cause__ or chain.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """The ``lit-qwen3`` console script (returns None: its value becomes the exit status).

    ``fit``/``validate``/... go to LightningCLI; the names in ``SUBCOMMANDS`` to their own parser.
    """
    argv = list(sys.argv[1:] if args is None else args)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if argv and argv[0] in SUBCOMMANDS:
        module, function = SUBCOMMANDS[argv[0]].split(":")
        getattr(importlib.import_module(module), function)(argv[1:])
        return
    try:
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
            command=["lit-qwen3", *argv],
        )
    except USER_ERRORS as error:
        message = user_error_message(error)
        if message is None or os.environ.get("LIT_QWEN3_TRACEBACK"):
            raise
        hint = "(LIT_QWEN3_TRACEBACK=1 shows where it was raised)"
        print(f"lit-qwen3: error: {message} {hint}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
