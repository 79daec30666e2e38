"""Run the configured steps in order, keep ``manifest.json`` current, record the run in MLflow.

The manifest is the curation's record: per step its settings, time, outputs (file and row
count), models and, per filter, counts in and out with the filter's settings; ``counts`` repeats
every filter's numbers flat (``responses/repetition/removed``) as MLflow logs them. It is
rewritten after every step, so a killed run shows what finished.

Resuming (``resume=True``): a listed step whose outputs are on disk and whose recorded settings
equal the current ones is skipped; an unfinished step reuses its generation cache. A step run
anew makes the later steps' records stale, so they are dropped from the manifest.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lit_qwen3.curation.config import STEPS, Curation
from lit_qwen3.curation.steps import NEEDS, OUTPUTS, STEP_FUNCTIONS, Context

MANIFEST = "manifest.json"
VERSION = 1


def step_settings(config: Curation, step: str) -> dict[str, Any]:
    """What a step's result depends on: its section, the seed, the rewards, the toy program
    and, for the selections, the domain shares."""
    settings: dict[str, Any] = {
        step: asdict(getattr(config, step)),
        "seed": config.seed,
        "rewards": dict(config.rewards),
        "toy_program": asdict(config.toy_program),
    }
    if step in ("cold_start", "rl_queries"):
        settings["shares"] = dict(config.queries.domains.shares)
    return json.loads(json.dumps(settings, default=str))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if path.exists():
        return json.loads(path.read_text())
    return {"version": VERSION, "steps": {}}


def _finished(out: Path, manifest: dict[str, Any], step: str) -> bool:
    return step in manifest["steps"] and all((out / f).exists() for f in OUTPUTS[step].values())


def _check_unfinished_cache(ctx: Context, step: str, settings: dict[str, Any]) -> None:
    """A step's work folder remembers the settings it started with: resuming with others
    would mix two configs' generations, so it is an error."""
    record = ctx.out / "work" / step / "settings.json"
    if ctx.resume and record.exists():
        started = json.loads(record.read_text())
        if started != settings:
            raise ValueError(
                f"step {step!r} was started in {ctx.out} with other settings; resume with the "
                f"same config, or run without --resume to start the step over"
            )
    record.parent.mkdir(parents=True, exist_ok=True)
    _write_json(record, settings)


def _find_input(ctx: Context, manifest: dict[str, Any], step: str, need: str) -> None:
    """Where the outputs of ``need`` are: ``output_dir``, else ``input_dir``; else an error."""
    if _finished(ctx.out, manifest, need):
        ctx.inputs.pop(need, None)
        return
    other = ctx.config.input_dir
    if other is not None and _finished(Path(other), load_manifest(Path(other)), need):
        ctx.inputs[need] = Path(other)
        return
    where = ctx.out if other is None else f"{ctx.out} or {other}"
    raise ValueError(
        f"step {step!r} needs the outputs of step {need!r} "
        f"({', '.join(OUTPUTS[need].values())} in {where}); add {need!r} to steps"
        + ("" if other else " or set input_dir to the folder of an earlier curation")
    )


def flat_counts(manifest: dict[str, Any], steps: list[str] | None = None) -> dict[str, float]:
    """``step/filter/{in,out,removed}`` and ``step/seconds`` of the given (default: all) steps."""
    counts: dict[str, float] = {}
    for step, record in manifest["steps"].items():
        if steps is not None and step not in steps:
            continue
        for name, numbers in record["filters"].items():
            for key in ("in", "out", "removed"):
                counts[f"{step}/{name}/{key}"] = numbers[key]
        counts[f"{step}/seconds"] = record["seconds"]
    return counts


def curate(config: Curation, *, resume: bool = False, config_text: str | None = None) -> dict:
    """Run ``config.steps``; return the manifest (also written to ``output_dir``)."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    ctx = Context(config, resume=resume)
    ran: list[str] = []
    try:
        for step in config.steps:
            settings = step_settings(config, step)
            if resume and _finished(out, manifest, step):
                if manifest["steps"][step]["settings"] != settings:
                    raise ValueError(
                        f"step {step!r} finished in {out} with other settings; run it again "
                        f"without --resume (or use another output_dir)"
                    )
                print(f"curate: step {step} already done in {out}, skipped (--resume)")
                continue
            for need in NEEDS[step]:
                _find_input(ctx, manifest, step, need)
            _check_unfinished_cache(ctx, step, settings)
            started = time.perf_counter()
            try:
                result = STEP_FUNCTIONS[step](ctx)
            finally:
                ctx.release_models()
            inputs = {need: str(ctx.inputs[need]) for need in NEEDS[step] if need in ctx.inputs}
            manifest["steps"][step] = {
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **({"inputs": inputs} if inputs else {}),
                "seconds": round(time.perf_counter() - started, 3),
                "models": result.models,
                "outputs": result.outputs,
                "filters": result.filters,
                **result.details,
                "settings": settings,
            }
            for later in STEPS[STEPS.index(step) + 1 :]:
                manifest["steps"].pop(later, None)
            ran.append(step)
            _summarise(manifest, config)
            _write_json(out / MANIFEST, manifest)
    finally:
        ctx.close()
    _summarise(manifest, config)
    _write_json(out / MANIFEST, manifest)
    if config.mlflow is not None and ran:
        run_id = log_to_mlflow(config, manifest, ran, config_text)
        manifest.setdefault("mlflow_runs", []).append({"run_id": run_id, "steps": ran})
        _write_json(out / MANIFEST, manifest)
    return manifest


def _summarise(manifest: dict[str, Any], config: Curation) -> None:
    """The run-level fields: seeds, models, outputs and flat counts of every finished step."""
    models: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for step in STEPS:
        record = manifest["steps"].get(step)
        if record:
            models.update(record["models"])
            outputs.update(record["outputs"])
    steps = {s: manifest["steps"][s] for s in STEPS if s in manifest["steps"]}
    summary = {
        "version": VERSION,
        "output_dir": config.output_dir,
        "seeds": {
            "seed": config.seed,
            "toy_queries": config.queries.toy.seed,
            "toy_program": config.toy_program.seed,
        },
        "models": models,
        "outputs": outputs,
        "counts": flat_counts({"steps": steps}),
        "steps": steps,
    }
    runs = manifest.get("mlflow_runs")
    manifest.clear()
    manifest.update(summary)
    if runs:
        manifest["mlflow_runs"] = runs


def funnel_rows(manifest: dict[str, Any], steps: list[str]) -> list[dict[str, Any]]:
    """The curation funnel: one row per filter of each step, in order (step, filter, in, out,
    removed)."""
    return [
        {"step": step, "filter": name, **{k: numbers[k] for k in ("in", "out", "removed")}}
        for step, record in manifest["steps"].items()
        if step in steps
        for name, numbers in record["filters"].items()
    ]


def log_to_mlflow(
    config: Curation, manifest: dict[str, Any], ran: list[str], config_text: str | None
) -> str:
    """One MLflow run tagged ``stage=curation`` (``rl_queries`` when that step alone ran): the
    funnel of the steps run now as one table (``curation/funnel.json``) and one figure, each
    step's seconds as a metric, seeds and models as params, ``manifest.json`` (and the config)
    as artifacts."""
    from mlflow.tracking import MlflowClient

    from lit_qwen3.runtime.plots import funnel_figure
    from lit_qwen3.runtime.tracking import absolute_tracking_uri, relative_path

    tracking = config.mlflow
    assert tracking is not None
    uri = absolute_tracking_uri(tracking.tracking_uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(tracking.experiment_name)
    if experiment is None:
        experiment_id = client.create_experiment(
            tracking.experiment_name, artifact_location=tracking.artifact_location
        )
    else:
        experiment_id = experiment.experiment_id
    tags = {
        **tracking.tags,
        "stage": "rl_queries" if ran == ["rl_queries"] else "curation",
        "steps": ",".join(ran),
        "output_dir": str(relative_path(str(Path(config.output_dir).resolve()))),
    }
    if tracking.run_id is not None:
        run_id = tracking.run_id
        client.update_run(run_id, status="RUNNING")
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    else:
        run_id = client.create_run(experiment_id, run_name=tracking.run_name, tags=tags).info.run_id
    try:
        for step in ran:
            client.log_metric(run_id, f"{step}/seconds", float(manifest["steps"][step]["seconds"]))
        rows = funnel_rows(manifest, ran)
        if rows:
            columns = {key: [row[key] for row in rows] for key in rows[0]}
            client.log_table(run_id, data=columns, artifact_file="curation/funnel.json")
            figure = funnel_figure(rows)
            client.log_figure(run_id, figure, "figures/funnel.png")
        params = {"seed": config.seed, "steps": ",".join(ran), "rewards": dict(config.rewards)}
        params.update({f"model.{k}": v for k, v in manifest["models"].items()})
        for key, value in params.items():
            client.log_param(run_id, key, str(relative_path(str(value)))[:6000])
        client.log_dict(run_id, manifest, MANIFEST)
        if config_text is not None:
            client.log_text(run_id, config_text, "config.yaml")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
