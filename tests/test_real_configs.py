"""The real-size configs (configs/qwen3/): every stage and curation step has one, each opens with
what it runs, on what hardware, at what cost and how to try it on a CPU; each pipeline stage's
config, with the pipeline's overrides merged in, parses with the stage's own CLI; and the real
pipeline runs end to end on CPU with a Qwen3-0.6B-shaped tiny model and the real tokenizer."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lit_qwen3.cli import main
from lit_qwen3.recipe.pipeline import _set_dotted, _substitute

REPO = Path(__file__).resolve().parents[1]
QWEN3 = REPO / "configs/qwen3"
STAGES = ["cold_start", "reasoning_rl", "thinking_fusion", "general_rl"]
STAGES += ["distill_off_policy", "distill_on_policy"]
REAL = sorted(QWEN3.glob("*/*.yaml")) + sorted(QWEN3.glob("curate*.yaml"))
PIPELINES = [QWEN3 / "pipeline.yaml", QWEN3 / "pipeline_smoke.yaml"]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])


def test_every_stage_and_curation_step_has_a_real_size_config():
    names = {p.stem for p in REAL}
    assert set(STAGES) <= names
    assert {"curate", "curate_rl_queries", "curate_responses"} <= names


@pytest.mark.parametrize("config", REAL, ids=lambda p: p.relative_to(REPO).as_posix())
def test_real_configs_open_with_cost_hardware_and_a_cpu_try(config):
    header = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header).lower()
    for what in ("gpu", "cost", "cpu"):
        assert what in text, f"{config.name}: the header says nothing about {what}"
    assert "--trainer.accelerator cpu" in text or "--device cpu" in text  # the try-first line
    body = yaml.safe_load(config.read_text())
    if "model" in body:  # a stage: bf16 somewhere, activation checkpointing, sharded strategy
        assert body["model"]["init_args"]["gradient_checkpointing"] is True
        strategy = body["trainer"]["strategy"]["class_path"]
        assert strategy.endswith(("FSDP2Strategy", "ModelParallelStrategy"))
        assert "bf16" in body["trainer"]["precision"] or (
            body["trainer"]["strategy"]["init_args"].get("mixed_precision") == "bfloat16"
        )


def test_rl_configs_use_the_reports_scale():
    rl = yaml.safe_load((QWEN3 / "0.6b/reasoning_rl.yaml").read_text())
    model = rl["model"]["init_args"]
    assert model["sampling"]["max_new_tokens"] == 32768  # 32k thinking in RL
    assert model["loss"]["eps_high"] > model["loss"]["eps_low"]  # DAPO's clip-higher
    assert model["loss"]["kl_coef"] == 0.0 and model["rollout_backend"] == "vllm"
    assert model["group_size"] * rl["data"]["init_args"]["queries_per_step"] >= 256
    sweep = rl["thinking_budget"]["init_args"]["sweep"]
    assert min(sweep) == 1024 and max(sweep) == 32768  # evaluation budgets 1k-32k


def _stage_configs(pipeline: Path, tmp_path: Path) -> list[tuple[str, str, Path]]:
    """(stage, command, merged config file) of each stage, placeholders as the pipeline fills
    them (a stage's output is a path; the models need not exist to parse)."""
    spec = yaml.safe_load(pipeline.read_text())
    paths = {"root": str(tmp_path)} | {s["name"]: str(tmp_path / s["name"]) for s in spec["stages"]}
    out = []
    for stage in spec["stages"]:
        config = yaml.safe_load((REPO / stage["config"]).read_text())
        for key, value in (stage.get("set") or {}).items():
            _set_dotted(config, key, _substitute(value, paths))
        path = tmp_path / f"{stage['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        out.append((stage["name"], stage.get("command", "fit"), path))
    return out


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_pipeline_stages_parse_with_their_overrides(pipeline, tmp_path, capsys):
    stages = _stage_configs(pipeline, tmp_path)
    assert {"cold_start", "general_rl", "distill_on_policy", "student_rl"} <= {s[0] for s in stages}
    for name, command, path in stages:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--config", str(path), "--print_config"])
        assert exit_info.value.code == 0, f"stage {name} does not parse"
        capsys.readouterr()
    report = yaml.safe_load(pipeline.read_text())["report"]
    from lit_qwen3.recipe.report import ReportConfig

    assert ReportConfig(**report).checker() == "math"  # AIME-style rows, checked by math-verify


@pytest.mark.slow
def test_real_pipeline_runs_end_to_end_on_cpu(tmp_path, qwen3_tokenizer_dir):
    """configs/qwen3/pipeline_smoke.yaml: every stage of the real pipeline, one step each."""
    sys.path.insert(0, str(REPO / "scripts"))
    from tiny_qwen3 import write_models

    root = tmp_path / "pipeline"
    models = write_models(root / "models", qwen3_tokenizer_dir)
    script = Path(sys.executable).parent / "lit-qwen3"
    command = [str(script), "pipeline", "--config", str(PIPELINES[1]), "--root", str(root)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]

    spec = yaml.safe_load(PIPELINES[1].read_text())
    for stage in spec["stages"]:
        assert (root / stage["name"] / "DONE.json").exists(), stage["name"]
    exported = json.loads((root / "distill_on_policy/model/config.json").read_text())
    assert exported["hidden_size"] == 32 and exported["vocab_size"] == 151936  # the student
    student = json.loads((models["student"] / "config.json").read_text())
    assert set(student) <= set(exported) | {"transformers_version"}  # Qwen3-0.6B's keys
    data = json.loads((root / "report/report.json").read_text())
    assert set(data["stages"]) == set(STAGES[:4]) and set(data["table21"]) == {
        "off_policy",
        "rl",
        "on_policy",
    }
    assert data["evaluation"]["data"].endswith("aime_eval.jsonl")
    assert data["figure2"]["budgets"] == [2, 4, 8]

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name(spec["experiment"])
    runs = {
        r.data.tags.get("pipeline_stage"): r for r in client.search_runs([experiment.experiment_id])
    }
    assert {s["name"] for s in spec["stages"]} <= set(runs)
    general = runs["general_rl"].data.metrics  # IFEval, RLVR and GSM8K rows, as they are
    assert {"train/reward/instructions", "train/reward/math", "train/reward/format"} <= set(general)
    assert "train/loss" in runs["cold_start"].data.metrics


def _cpu_try(config: Path) -> list[str]:
    """The header's try-it-on-a-CPU command, as arguments after ``lit-qwen3``."""
    lines = config.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Try it first"))
    command, i = "", start + 1
    while True:
        text = lines[i].lstrip("#").strip()
        command += " " + text.rstrip("\\")
        if not text.endswith("\\"):
            break
        i += 1
    args = shlex.split(command)
    assert args[0] == "lit-qwen3", f"{config.name}: no command after 'Try it first'"
    return args[1:]


@pytest.mark.parametrize("config", REAL, ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_cpu_try_in_each_header_parses(config, capsys):
    args = _cpu_try(config)
    assert "--trainer.max_steps" not in args or args[args.index("--trainer.max_steps") + 1] == "2"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    if args[0] == "fit":
        assert resolved["trainer"]["accelerator"] == "cpu"
        assert resolved["model"]["init_args"].get("rollout_backend", "builtin") == "builtin"
    else:
        assert resolved["device"] == "cpu"
