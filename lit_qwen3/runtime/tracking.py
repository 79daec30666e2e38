"""Send metrics, tables and figures to whatever loggers the Trainer has, MLflow first among them,
and describe a run in MLflow so that runs can be compared: params a person can diff, the
training data as a dataset input, the exported model as a logged model, system metrics.

Callbacks log from hooks where ``LightningModule.log`` is not allowed (``on_train_end``) and
log tables and figures, which only MLflow stores; these helpers keep that logic in one place.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

#: Config keys that say where things go or how they are logged, not what a run computes; they
#: stay in ``config.yaml`` and the run's tags, not in its params.
PLUMBING_KEYS = frozenset(
    {"config", "ckpt_path", "run_name", "parent_run", "logger", "default_root_dir", "output_dir"}
    | {"dirpath", "enable_progress_bar", "enable_model_summary"}
)
#: Top-level config keys that are not callbacks even when they hold a ``class_path``.
_NOT_CALLBACKS = frozenset({"model", "data", "trainer", "optimizer", "lr_scheduler"})
MAX_PARAMS = 60
#: Set by ``lit-qwen3 pipeline`` for each stage's process: the pipeline's root, which params and
#: tags then name paths relative to (the root itself is a tag of the pipeline's run, once).
ROOT_VARIABLE = "LIT_QWEN3_PIPELINE_ROOT"


def pipeline_root() -> str | None:
    """The pipeline root this process runs under (``ROOT_VARIABLE``), else None."""
    root = os.environ.get(ROOT_VARIABLE)
    return os.path.realpath(root) if root else None


def relative_path(value: Any, root: str | None = None) -> Any:
    """``value`` with an absolute path under ``root`` (default: :func:`pipeline_root`) made
    relative to it (``cold_start/model``; the root itself is ``.``), inside lists too; anything
    else unchanged."""
    root = root or pipeline_root()
    if isinstance(value, list | tuple):
        return [relative_path(v, root) for v in value]
    if not root or not isinstance(value, str) or not os.path.isabs(value):
        return value
    for base in {root, os.path.abspath(root)}:
        real = os.path.realpath(value) if os.path.exists(value) else os.path.abspath(value)
        for candidate in (os.path.abspath(value), real):
            if candidate == base or candidate.startswith(base + os.sep):
                return os.path.relpath(candidate, base)
    return value


@rank_zero_only
def log_metrics(trainer: Trainer, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log scalar metrics to every logger at ``step`` (default: the trainer's global step)."""
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)


def publish_metrics(
    module: LightningModule, metrics: Mapping[str, float], progress_bar: Sequence[str] = ()
) -> None:
    """Put a step's ``metrics`` in ``trainer.callback_metrics``, where checkpoint and
    early-stopping monitors and other callbacks read them; ``progress_bar`` keys also go to
    the progress bar (through ``module.log``).

    ``LightningModule.log`` costs about a millisecond per key (it walks each stored result's
    attributes on every call): for an RL step's forty metrics, a tenth of a toy step. The
    loggers get the metrics from :func:`log_metrics`, so only the dict callbacks read is set.
    """
    for key in progress_bar:
        if key in metrics:
            module.log(key, metrics[key], prog_bar=True, logger=False, batch_size=1)
    module.trainer.callback_metrics.update(
        {key: torch.tensor(float(value)) for key, value in metrics.items()}
    )


@rank_zero_only
def log_series(trainer: Trainer, key: str, points: Sequence[tuple[int, float]]) -> None:
    """Log ``key`` once per ``(step, value)``: a curve whose x axis is not the training step
    (e.g. accuracy against thinking budget), which runs overlay in MLflow's charts."""
    for logger in trainer.loggers:
        for step, value in points:
            logger.log_metrics({key: float(value)}, step=int(step))


def absolute_tracking_uri(uri: str | None) -> str | None:
    """``uri`` with a relative sqlite path made absolute, from the current directory.

    MLflow caches one store per URI string for the life of a process, so a relative
    ``sqlite:///runs/mlflow.db`` opened again after a ``chdir`` (a notebook, a test suite, the
    pipeline) would silently write to the first directory's database.
    """
    if not uri:
        return uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def mlflow_loggers(trainer: Trainer) -> list[MLFlowLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)]


@rank_zero_only
def log_table(trainer: Trainer, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
    """Log rows (dicts with the same keys) as an MLflow table artifact; rows logged to the same
    file at later steps are appended to it (MLflow's ``log_table``). Other loggers skip it."""
    if not rows:
        return
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    for logger in mlflow_loggers(trainer):
        logger.experiment.log_table(logger.run_id, data=columns, artifact_file=artifact_file)


@rank_zero_only
def log_figure(trainer: Trainer, figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as an image artifact (replacing one of the same name)."""
    for logger in mlflow_loggers(trainer):
        logger.experiment.log_figure(logger.run_id, figure, artifact_file)


# -- params -------------------------------------------------------------------------------------
def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def signature_defaults(target: Any) -> dict[str, Any]:
    """``{argument: default}`` of a class's ``__init__`` (or a function); {} if unknown."""
    try:
        if isinstance(target, str):
            target = _import(target)
        signature = inspect.signature(target)
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}
    empty = inspect.Parameter.empty
    return {k: p.default for k, p in signature.parameters.items() if p.default is not empty}


def _normal(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def param_value(value: Any) -> str:
    """A param's text: numbers and plain words as is, anything else as JSON (escapes visible)."""
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
        text = json.dumps(_normal(value))
    elif isinstance(value, str) and (not value.isprintable() or value != value.strip()):
        text = json.dumps(value)
    else:
        text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _short_class(class_path: str) -> str:
    return class_path.rpartition(".")[2]


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def _section(
    name: str, values: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[tuple[str, Any, bool]]:
    """(key, value, equals its default) of one class's arguments, plumbing and None dropped."""
    entries = []
    for arg, value in values.items():
        if arg in PLUMBING_KEYS or value is None:
            continue
        if isinstance(value, dict) and "class_path" in value:
            entries.append((f"{name}.{arg}", _short_class(value["class_path"]), False))
            args, defaults_of = value.get("init_args") or {}, value["class_path"]
            entries += _section(f"{name}.{arg}", args, signature_defaults(defaults_of))
            continue
        default = arg in defaults and _normal(defaults[arg]) == _normal(value)
        for key, leaf in _flatten(value, f"{name}.{arg}").items():
            if leaf is not None and key.rpartition(".")[2] not in PLUMBING_KEYS:
                entries.append((key, leaf, default))
    return entries


def _callbacks(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    listed = (config.get("trainer") or {}).get("callbacks") or []
    listed = listed if isinstance(listed, list) else [listed]
    named = [
        value
        for key, value in config.items()
        if key not in _NOT_CALLBACKS and isinstance(value, dict) and "class_path" in value
    ]
    return [c for c in [*listed, *named] if isinstance(c, dict) and "class_path" in c]


def _without_repeats(entries: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Each setting once: a key whose last part and text repeat an earlier key's
    (``ThinkingBudget.stop_thinking`` after ``model.stop_thinking``), and a tokenizer that is
    the model's, go. Numbers and flags stay (``data.seed`` = ``model.seed`` is a coincidence a
    compare view must show)."""
    seen: set[tuple[str, str]] = set()
    models = {param_value(v) for k, v in entries if k in ("model.model", "model.tokenizer")}
    kept = []
    for key, value in entries:
        leaf, text = key.rpartition(".")[2], param_value(value)
        if not isinstance(value, str | list):
            kept.append((key, value))
            continue
        tokenizer = leaf == "tokenizer" and key != "model.tokenizer" and text in models
        if (leaf, text) in seen or tokenizer:
            continue
        seen.add((leaf, text))
        kept.append((key, value))
    return kept


def config_params(
    config: Mapping[str, Any], limit: int = MAX_PARAMS, root: str | None = None
) -> dict[str, str]:
    """MLflow params of a resolved LightningCLI config (``Namespace.as_dict()``) that a person
    can diff: short keys (``model.optimizer.lr``, ``trainer.max_steps``, ``PassAtK.num_queries``),
    the classes by name, no ``None``, no plumbing (logger, paths), each setting once, paths under
    the pipeline ``root`` (default: :func:`pipeline_root`) relative to it, at most ``limit``.

    Every argument of the stage module and the datamodule is kept, defaults included (runs that
    differ there must show it in the compare view); of the trainer and the callbacks only what
    differs from the code's defaults. Past ``limit``, the datamodule's defaults go first, then
    the module's, then the keys past ``limit``.
    """
    entries: list[tuple[str, Any, bool]] = []
    must: list[tuple[str, Any]] = []
    for name in ("model", "data"):
        node = config.get(name)
        if isinstance(node, dict) and "class_path" in node:
            must.append((name, _short_class(node["class_path"])))
            args = node.get("init_args") or {}
            entries += _section(name, args, signature_defaults(node["class_path"]))
    trainer = {k: v for k, v in (config.get("trainer") or {}).items() if k != "callbacks"}
    from lightning.pytorch import Trainer as _Trainer

    entries += _section("trainer", trainer, signature_defaults(_Trainer))
    seen: dict[str, int] = {}
    for callback in _callbacks(config):
        short = _short_class(callback["class_path"])
        seen[short] = seen.get(short, 0) + 1
        label = short if seen[short] == 1 else f"{short}#{seen[short]}"
        defaults = signature_defaults(callback["class_path"])
        entries += _section(label, callback.get("init_args") or {}, defaults)
    if seen:
        must.append(("callbacks", ", ".join(sorted(seen))))
    seed = config.get("seed_everything")
    if seed is not None and seed is not False:
        must.append(("seed_everything", seed))

    entries = [(k, relative_path(v, root), d) for k, v, d in entries]
    changed = [(k, v) for k, v, is_default in entries if not is_default]
    defaults = [(k, v) for k, v, is_default in entries if is_default]
    ordered = [e for e in defaults if e[0].startswith("model.")]
    ordered += [e for e in defaults if e[0].startswith("data.")]
    kept = {k for k, _ in _without_repeats(changed + ordered)}
    changed = [(k, v) for k, v in changed if k in kept]
    module_defaults = [(k, v) for k, v in ordered if k in kept and k.startswith("model.")]
    data_defaults = [(k, v) for k, v in ordered if k in kept and k.startswith("data.")]
    chosen = must + changed
    for extra in (module_defaults, data_defaults):
        if len(chosen) + len(extra) <= limit:
            chosen += extra
    if len(chosen) > limit:  # model, data, trainer, callbacks: the first ones win
        rank_zero_warn(f"{len(chosen)} config params: logging the first {limit} (see config.yaml)")
        chosen = must + changed[: max(0, limit - len(must))]
    return {key: param_value(value) for key, value in chosen}


# -- what a run is ------------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    """Size, mtime and the first and last MiB: a fingerprint that does not read a 50 GB file."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files[:1000]:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if stat.st_size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def log_dataset_input(
    client: Any, run_id: str, datamodule: LightningDataModule | None, context: str = "training"
) -> None:
    """Record the datamodule's data as the run's dataset input (MLflow's Datasets column).

    A file or directory (``datamodule.hparams.data``) is named by its file name and fingerprinted;
    generated data (``data`` None, the toy task) by the datamodule's settings.
    """
    if datamodule is None:
        return
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import CodeDatasetSource, LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    hparams = dict(getattr(datamodule, "hparams", {}) or {})
    data = hparams.get("data")
    settings = json.dumps({k: _normal(v) for k, v in sorted(hparams.items())}, sort_keys=True)
    if data is not None and Path(str(data)).exists():
        path = Path(str(data)).resolve()
        source = LocalArtifactDatasetSource(str(path))
        name, digest = path.name, _file_digest(path)
    else:
        source = CodeDatasetSource({"datamodule": type(datamodule).__name__})
        name = "toy-arithmetic" if data is None else str(data)
        digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    dataset = MetaDataset(source, name=name, digest=digest)
    tags = [InputTag(key="mlflow.data.context", value=context)]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])


def log_exported_model(
    client: Any,
    run_id: str,
    experiment_id: str,
    directory: str | Path,
    *,
    name: str,
    step: int,
    copy_below_bytes: int = 64 << 20,
) -> str:
    """Register an exported Hugging Face directory on the run as an MLflow logged model.

    The model records its path (external: the weights stay where they are); an export smaller
    than ``copy_below_bytes`` (toy models) is also copied into the model's artifacts. Returns
    the model id.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

    directory = Path(directory).resolve()
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    config = json.loads((directory / "config.json").read_text())
    params = {
        k: param_value(config[k])
        for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "torch_dtype")
        if k in config
    }
    small = size < copy_below_bytes
    tags = {"path": str(relative_path(str(directory))), "size_bytes": str(size)}
    if not small:
        tags[MLFLOW_MODEL_IS_EXTERNAL] = "true"
    model = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, tags=tags, params=params,
        model_type="transformers-causal-lm",
    )  # fmt: skip
    if small:
        client.log_model_artifacts(model.model_id, str(directory))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    return model.model_id


EXPERIMENT_DESCRIPTION = """\
Runs of lit-qwen3, the Qwen3 post-training recipe as Lightning parts. One run per stage and
command: the run name is the stage plus the command-line overrides (a short hash when they are
long), the description holds the full command. Compare runs by selecting them in the runs table:
params are the resolved config with short keys (config.yaml has all of it); charts show
`train/*` (x axis = optimizer step), `val/*` (the validation queries: loss, pass@k per
thinking mode; `eval/*`: a callback's own query set) and `budget_sweep/*` (x axis = thinking
budget); a pipeline adds its report's numbers
on the held-out problems as `heldout/*` (see the README, "Comparing runs in MLflow");
artifacts hold `figures/*.png` and `samples/*.json` tables (Evaluation view).
"""


def describe_experiment(
    client: Any, experiment_id: str, text: str = EXPERIMENT_DESCRIPTION
) -> None:
    """Give the experiment a description and mark it as model development (the runs table
    opens first), unless it already has a description."""
    experiment = client.get_experiment(experiment_id)
    if not experiment.tags.get("mlflow.note.content"):
        client.set_experiment_tag(experiment_id, "mlflow.note.content", text)
    if not experiment.tags.get("mlflow.experimentKind"):
        client.set_experiment_tag(
            experiment_id, "mlflow.experimentKind", "custom_model_development"
        )


class SystemMetrics(Callback):
    """MLflow's system metrics (``system/cpu_utilization_percentage``, memory, disk, network and,
    with ``nvidia-ml-py``, GPU) for every MLflow logger, sampled every ``interval_s`` seconds
    from rank 0 while fitting; one last sample at the end, so short runs have one too."""

    def __init__(self, interval_s: float = 10.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._monitors: list[Any] = []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or self._monitors:
            return
        import logging

        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        for logger in mlflow_loggers(trainer):
            monitor = SystemMetricsMonitor(
                logger.run_id,
                sampling_interval=self.interval_s,
                resume_logging=True,
                tracking_uri=logger._tracking_uri,
            )
            monitor.start()
            self._monitors.append(monitor)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stop(final_sample=True)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, error: BaseException
    ) -> None:
        self._stop(final_sample=False)

    def _stop(self, final_sample: bool) -> None:
        monitors, self._monitors = self._monitors, []
        for monitor in monitors:
            monitor.finish()
            if final_sample:
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
