"""``lit-qwen3 pipeline``: every stage of the recipe in order, from one YAML, then the report.

    lit-qwen3 pipeline --config configs/toy/pipeline.yaml        # the whole toy recipe
    lit-qwen3 pipeline --config configs/toy/pipeline_smoke.yaml  # every stage for a few steps

Each stage is a ``lit-qwen3 fit`` (or ``curate``) run of a stage YAML with overrides, in a
process of its own, writing under ``root/<stage>/``: its full config (``config.yaml``), its log,
checkpoints and its output (``model/``, a Hugging Face directory; a curation's JSONL files).
``{<stage>}`` in an override is that stage's output path, so each output feeds the next, and
``{root}`` is the pipeline's root.

MLflow: one parent run for the pipeline and one nested run per stage, in the pipeline's store.
The pipeline creates each stage's run when it starts the stage's process and ends it when the
process ends, so the run's duration is the stage's (``time/stage_s``); tags: ``stage`` (the
recipe stage), ``role`` (what the run is for: ``table21_rl_control``...), ``pipeline``,
``pipeline_stage``; the parent carries the absolute ``root`` once, params hold paths relative
to it (``LIT_QWEN3_PIPELINE_ROOT`` tells the stage's process). Reruns: a stage whose output is
complete (``root/<stage>/DONE.json``) is skipped; a stage killed midway resumes from its last
checkpoint and logs into the same MLflow run; the parent run is reused too. The report
(:mod:`lit_qwen3.recipe.report`) evaluates the stages' models on held-out problems and writes
``report.json``, ``report.md`` and plots under ``root/report/``, logged to the parent run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["PipelineConfig", "StageSpec", "main", "run_pipeline"]


@dataclass
class StageSpec:
    """One stage of the pipeline."""

    name: str
    """Unique name: the directory under ``root``, the MLflow run name, ``{name}`` in overrides."""
    config: str
    """The stage's YAML (a ``fit`` or ``curate`` config)."""
    command: Literal["fit", "curate"] = "fit"
    set: dict[str, Any] = field(default_factory=dict)
    """Overrides as dotted keys (``model.init_args.model: "{cold_start}"``)."""
    output: str = "model"
    """What ``{name}`` points to, relative to the stage directory (``.``: the directory)."""


@dataclass
class PipelineConfig:
    """A pipeline: stages in order, where they write, and what the report compares."""

    name: str = "toy"
    """Tags every run (``pipeline``) and names the parent MLflow run."""
    root: str = "runs/pipeline"
    """Every stage writes under ``root/<stage>``; the report under ``root/report``."""
    tracking_uri: str | None = None
    """MLflow store; default ``sqlite:///<root>/mlflow.db``."""
    experiment: str = "lit-qwen3-pipeline"
    stages: list[StageSpec] = field(default_factory=list)
    seed: int | None = None
    """The training seed of every stage: a fit's ``seed_everything`` and its model's and data's
    ``seed`` (where their class takes one), a curation's ``seed``; a stage's own ``set`` still
    wins. None keeps each stage YAML's seeds. The report's held-out problems keep their own seed
    (``report.seed``), so runs of two seeds are judged on the same problems."""
    report: dict[str, Any] = field(default_factory=dict)
    """What :func:`lit_qwen3.recipe.report.write_report` evaluates (see its ``ReportConfig``)."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if not names:
            raise ValueError("the pipeline lists no stages")
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"stage names must be unique; repeated: {sorted(duplicates)}")
        for spec in self.stages:
            if not Path(spec.config).is_file():
                raise FileNotFoundError(f"stage {spec.name!r}: config {spec.config!r} not found")
        from lit_qwen3.runtime.tracking import absolute_tracking_uri  # lazily: it imports Lightning

        default = f"sqlite:///{Path(self.root).resolve()}/mlflow.db"
        self.tracking_uri = absolute_tracking_uri(self.tracking_uri) or default


# ----------------------------------------------------------------------------- configs
def _set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _takes_seed(class_path: Any) -> bool:
    """Whether the class at ``class_path`` has a ``seed`` argument (False if it cannot load)."""
    import importlib
    import inspect

    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return "seed" in inspect.signature(cls).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def _seed(config: dict[str, Any], command: str, seed: int) -> None:
    """Write the pipeline's training ``seed`` into a stage config (see ``PipelineConfig.seed``)."""
    if command == "curate":
        config["seed"] = seed
        return
    config["seed_everything"] = seed
    for section in ("model", "data"):
        node = config.get(section)
        if isinstance(node, dict) and _takes_seed(node.get("class_path")):
            _set_dotted(node, "init_args.seed", seed)


def _substitute(value: Any, paths: dict[str, str]) -> Any:
    """``{stage}`` and ``{root}`` placeholders in strings (recursively)."""
    if isinstance(value, str):
        for name, path in paths.items():
            value = value.replace("{" + name + "}", path)
        return value
    if isinstance(value, list):
        return [_substitute(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, paths) for k, v in value.items()}
    return value


def _replace_root_dir(value: Any, directory: str) -> Any:
    """Resolve ``${trainer.default_root_dir}`` ourselves: the stage directory."""
    if isinstance(value, str):
        return value.replace("${trainer.default_root_dir}", directory)
    if isinstance(value, list):
        return [_replace_root_dir(v, directory) for v in value]
    if isinstance(value, dict):
        return {k: _replace_root_dir(v, directory) for k, v in value.items()}
    return value


class Pipeline:
    """Runs a :class:`PipelineConfig`; see the module docstring."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.root = Path(config.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.paths = {"root": str(self.root)}
        for spec in config.stages:
            output = self.stage_dir(spec) / spec.output
            self.paths[spec.name] = str(output.resolve())
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(config.tracking_uri)
        self.experiment_id = self._experiment()
        self.parent_id = self._parent_run()

    # -- MLflow -------------------------------------------------------------------------------
    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.config.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(
            self.config.experiment, artifact_location=str(self.root / "mlartifacts")
        )

    def _parent_run(self) -> str:
        """The pipeline's parent run: reused when a rerun finds it unfinished."""
        marker = self.root / "parent_run_id"
        if marker.exists():
            run_id = marker.read_text().strip()
            try:
                self.client.get_run(run_id)
                return run_id
            except Exception:  # the store was removed: start over
                pass
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"pipeline-{self.config.name}",
            tags={
                "pipeline": self.config.name,
                "stage": "pipeline",
                "role": "pipeline",
                "root": str(self.root),
                "mlflow.note.content": f"lit-qwen3 pipeline {self.config.name}: "
                + " -> ".join(s.name for s in self.config.stages),
            },
        )
        marker.write_text(run.info.run_id)
        return run.info.run_id

    def stage_run_id(self, spec: StageSpec) -> str | None:
        """The MLflow run of an earlier attempt at this stage (resume into it)."""
        marker = self.stage_dir(spec) / "mlflow_run_id"
        return marker.read_text().strip() if marker.exists() else None

    # -- stages -------------------------------------------------------------------------------
    def stage_dir(self, spec: StageSpec) -> Path:
        return self.root / spec.name

    def done(self, spec: StageSpec) -> dict[str, Any] | None:
        marker = self.stage_dir(spec) / "DONE.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def stage_config(self, spec: StageSpec) -> dict[str, Any]:
        """The stage's YAML with the pipeline's overrides and its own directories."""
        config = yaml.safe_load(Path(spec.config).read_text()) or {}
        directory = str(self.stage_dir(spec))
        if self.config.seed is not None:
            _seed(config, spec.command, self.config.seed)
        for key, value in spec.set.items():
            _set_dotted(config, key, _substitute(copy.deepcopy(value), self.paths))
        if spec.command == "curate":  # lit_qwen3.curation.config.Curation's keys
            config["output_dir"] = directory
            config["resume"] = True  # a rerun of a killed curation continues it
            tracking = config.get("mlflow") or {}
            config["mlflow"] = {
                **tracking,
                "tracking_uri": self.config.tracking_uri,
                "experiment_name": self.config.experiment,
                "run_name": spec.name,
                "artifact_location": str(self.root / "mlartifacts"),
                "tags": {**(tracking.get("tags") or {}), **self.tags(spec)},
                "run_id": self.stage_run_id(spec),
            }
            return config
        _set_dotted(config, "trainer.default_root_dir", directory)
        _set_dotted(config, "model.init_args.output_dir", str(self.stage_dir(spec) / "model"))
        config = _replace_root_dir(config, directory)
        logger = {
            "class_path": "lightning.pytorch.loggers.MLFlowLogger",
            "init_args": {
                "experiment_name": self.config.experiment,
                "run_name": spec.name,
                "tracking_uri": self.config.tracking_uri,
                "artifact_location": str(self.root / "mlartifacts"),
                "tags": self.tags(spec),
                "run_id": self.stage_run_id(spec),
            },
        }
        config.setdefault("trainer", {})["logger"] = logger
        last = self.stage_dir(spec) / "checkpoints" / "last.ckpt"
        config["ckpt_path"] = str(last) if last.exists() else None
        return config

    def tags(self, spec: StageSpec) -> dict[str, str]:
        return {
            "mlflow.parentRunId": self.parent_id,
            "pipeline": self.config.name,
            "pipeline_stage": spec.name,
            "role": self.role(spec),
        }

    def role(self, spec: StageSpec) -> str:
        """What the stage's run is for in this pipeline: the report rows it fills
        (``table21_rl_control``, ``table22_general_rl``, ``figure2``), else ``data`` (curation)
        or ``intermediate``."""
        report = self.config.report
        roles = [
            "table21_rl_control" if row == "rl" else f"table21_{row}"
            for row, stage in (report.get("table21") or {}).items()
            if stage == spec.name
        ]
        roles += [
            f"table22_{row}" for row, s in (report.get("stages") or {}).items() if s == spec.name
        ]
        roles += ["figure2"] if spec.name in (report.get("figure2") or []) else []
        if roles:
            return "+".join(roles)
        return "data" if spec.command == "curate" else "intermediate"

    def _open_stage_run(self, spec: StageSpec, start: float) -> str:
        """The stage's MLflow run, created as its process starts (an earlier attempt's when it
        was killed), so that the run's start is the process's."""
        run_id = self.stage_run_id(spec) or self._remember_run(spec)
        if run_id is not None:
            return run_id
        run = self.client.create_run(  # the process tags its recipe ``stage`` itself
            self.experiment_id,
            start_time=int(start * 1000),
            run_name=spec.name,
            tags=self.tags(spec),
        )
        (self.stage_dir(spec) / "mlflow_run_id").write_text(run.info.run_id)
        return run.info.run_id

    def run_stage(self, spec: StageSpec, status: Any) -> dict[str, Any]:
        directory = self.stage_dir(spec)
        directory.mkdir(parents=True, exist_ok=True)
        earlier = self.stage_seconds(spec)  # a killed attempt's time counts too
        start = time.time()
        run_id = self._open_stage_run(spec, start)
        config_path = directory / "config.yaml"
        config_path.write_text(yaml.safe_dump(self.stage_config(spec), sort_keys=False))
        command = [
            sys.executable,
            "-m",
            "lit_qwen3.cli",
            spec.command,
            "--config",
            str(config_path),
        ]
        log_path = directory / "log.txt"
        from lit_qwen3.runtime.tracking import ROOT_VARIABLE

        environment = {**os.environ, ROOT_VARIABLE: str(self.root)}
        with log_path.open("a") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
            log.flush()
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment
            )
            while process.poll() is None:
                elapsed = time.time() - start
                (directory / "seconds").write_text(str(earlier + elapsed))
                status(f"{spec.name} {elapsed:5.0f}s  {_last_line(log_path)[:100]}")
                time.sleep(0.2)
        end = time.time()
        seconds = earlier + end - start
        (directory / "seconds").write_text(str(seconds))
        self.client.log_metric(run_id, "time/stage_s", seconds, timestamp=int(end * 1000))
        self.client.set_terminated(  # the process's end, after whatever it logged last
            run_id, "FINISHED" if process.returncode == 0 else "FAILED", end_time=int(end * 1000)
        )
        if process.returncode != 0:
            raise RuntimeError(
                f"stage {spec.name!r} failed (exit {process.returncode}); its log: {log_path}\n"
                + "\n".join(log_path.read_text().splitlines()[-15:])
            )
        output = Path(self.paths[spec.name])
        if not output.exists():
            raise RuntimeError(f"stage {spec.name!r} finished but wrote no {output}")
        record = {
            "seconds": seconds,
            "run_id": run_id,
            "output": str(output),
            "resumed": earlier > 0,
        }
        (directory / "DONE.json").write_text(json.dumps(record, indent=2))
        return record

    def stage_seconds(self, spec: StageSpec) -> float:
        """Wall seconds spent by earlier (killed) attempts, kept across resumes."""
        marker = self.stage_dir(spec) / "seconds"
        return float(marker.read_text()) if marker.exists() else 0.0

    def _remember_run(self, spec: StageSpec) -> str | None:
        """Record the stage's MLflow run as soon as it exists, so a killed stage resumes into
        it instead of starting a second run."""
        marker = self.stage_dir(spec) / "mlflow_run_id"
        if marker.exists():
            return marker.read_text().strip()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.pipeline_stage = '{spec.name}' and "
            f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
        )
        if not runs:
            return None
        marker.write_text(runs[0].info.run_id)
        return runs[0].info.run_id

    # -- the whole thing ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from rich.console import Console

        console = Console(stderr=True)
        start = time.time()
        records: dict[str, dict[str, Any]] = {}
        total = len(self.config.stages)
        with console.status("") as spinner:
            for index, spec in enumerate(self.config.stages, start=1):
                done = self.done(spec)
                if done is not None:
                    console.print(f"[{index}/{total}] {spec.name}: done earlier, skipped")
                    records[spec.name] = done
                    continue
                console.print(f"[{index}/{total}] {spec.name}: running ({spec.config})")

                records[spec.name] = self.run_stage(
                    spec, lambda text, index=index: spinner.update(f"[{index}/{total}] {text}")
                )
                console.print(
                    f"[{index}/{total}] {spec.name}: {records[spec.name]['seconds']:.0f}s"
                )
            spinner.update("evaluating the stages' models for the report")
            from lit_qwen3.recipe.report import write_report

            report = write_report(self, records, time.time() - start)
        self.client.set_terminated(self.parent_id)
        console.print(f"report: {self.root / 'report' / 'report.md'}")
        return report


def _last_line(path: Path) -> str:
    """The last non-empty line of a (growing) log, progress bars' carriage returns resolved."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(handle.tell() - 4096, 0))
        tail = handle.read().decode("utf-8", "replace")
    lines = [chunk.strip() for chunk in tail.replace("\r", "\n").splitlines() if chunk.strip()]
    return lines[-1] if lines else ""


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    """Run every stage of ``config`` (skipping finished ones) and write the report."""
    return Pipeline(config).run()


def main(argv: list[str] | None = None) -> None:
    """``lit-qwen3 pipeline --config FILE [--root DIR ...]``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="lit-qwen3 pipeline", description="Run every stage of the recipe from one YAML."
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(PipelineConfig, nested_key=None, fail_untyped=False)
    args = parser.parse_args(argv)
    config = parser.instantiate_classes(args)
    values = {k: v for k, v in vars(config).items() if k in PipelineConfig.__dataclass_fields__}
    run_pipeline(PipelineConfig(**values))
