"""Thinking-mode fusion and both distillation stages from their toy YAMLs through the real CLI:
each exports a directory that reloads with transformers and logs its metrics to MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM

from lit_qwen3.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])


def _run(tmp_path: Path, config: str, name: str, override: dict) -> dict:
    """Run one stage with ``override`` merged over its toy YAML; return its MLflow metrics."""
    logger = {
        "class_path": "lightning.pytorch.loggers.MLFlowLogger",
        "init_args": {
            "experiment_name": "stages",
            "run_name": name,
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "artifact_location": str(tmp_path / "artifacts"),
        },
    }
    evaluation = {
        "class_path": "lit_qwen3.callbacks.PassAtK",
        "init_args": {
            "ks": [1],
            "n_samples": 1,
            "every_n_steps": 0,
            "on_start": False,
            "num_queries": 4,
            "max_new_tokens": 32,
        },
    }
    trainer = {
        "default_root_dir": str(tmp_path / name),
        "enable_progress_bar": False,
        "logger": logger,
        "callbacks": [evaluation],
        **override.pop("trainer", {}),
    }
    override.setdefault("model", {}).setdefault("init_args", {})["output_dir"] = str(
        tmp_path / name / "model"
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**override, "trainer": trainer}))
    main(["fit", "--config", str(REPO / "configs/toy" / config), "--config", str(path)])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / name / "model").num_parameters() > 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("stages")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{name}'")
    assert run.info.status == "FINISHED"
    return run.data.metrics


def test_fusion_then_off_and_on_policy_distillation(tmp_path, toy_policy):
    sft_steps = {
        "max_steps": 3,
        "val_check_interval": 3,
        "limit_val_batches": 1,
        "log_every_n_steps": 1,
    }
    fusion = _run(
        tmp_path,
        "thinking_fusion.yaml",
        "fusion",
        {
            "model": {"init_args": {"model": str(toy_policy)}},
            "data": {
                "init_args": {
                    "size": 80,
                    "val_size": 8,
                    "toy_max_digits": 2,  # what the 2-digit toy policy can answer
                    "toy_mul_fraction": 0.0,
                    "rejection_samples": 2,
                    "rejection_max_new_tokens": 48,
                    "max_tokens_per_batch": 1024,
                    "tool_share": 0.1,
                    "instruction_share": 0.1,
                }
            },
            "trainer": sft_steps,
        },
    )
    for key in (
        "train/loss",
        "data/train/think",
        "data/train/no_think",
        "data/train/cut",
        "data/train/multi_turn",
        "data/train/tool",
        "val/think/think_follow",
        "val/no_think/think_follow_multi_turn",
    ):
        assert key in fusion, key
    assert abs(fusion["data/train/think"] - fusion["data/train/no_think"]) < 0.1
    # compute counters for the report's FLOPs: no frozen model in fusion
    assert fusion["stats/trained_tokens"] > 0 and fusion["stats/frozen_tokens"] == 0

    off = _run(
        tmp_path,
        "distill_off_policy.yaml",
        "off",
        {
            "model": {"init_args": {"teacher": str(toy_policy)}},
            "data": {
                "init_args": {
                    "teacher": str(toy_policy),
                    "queries": 40,
                    "val_size": 8,
                    "samples": 1,
                    "verify": False,
                    "max_new_tokens": 48,
                    "max_tokens_per_batch": 1024,
                }
            },
            "trainer": sft_steps,
        },
    )
    for key in (
        "train/loss",
        "train/ce",
        "train/divergence",
        "val/divergence",
        "val/think/pass_at_1",
        "val/no_think/pass_at_1",
    ):
        assert key in off, key
    assert off["stats/trained_tokens"] > 0  # the teacher scores every trained token once
    assert off["stats/frozen_tokens"] == off["stats/trained_tokens"]

    on = _run(
        tmp_path,
        "distill_on_policy.yaml",
        "on",
        {
            "model": {
                "init_args": {
                    "model": str(tmp_path / "off" / "model"),
                    "teacher": str(toy_policy),
                    "samples_per_query": 2,
                    "sampling": {"max_new_tokens": 32},
                }
            },
            "data": {
                "init_args": {
                    "queries_per_step": 4,
                    "toy_size": 32,
                    "val_size": 4,
                    "toy_exclude_sft": 300,
                }
            },
            "trainer": {"max_steps": 2},
        },
    )
    for key in (
        "train/divergence",
        "train/teacher_logprob",
        "train/think_share",
        "train/entropy",  # the stage's own; EntropyMonitor adds the span split
        "stats/sampled_tokens",
        "val/think/pass_at_1",
    ):
        assert key in on, key


def test_a_teacher_with_another_vocabulary_is_refused_naming_ids(tmp_path):
    from lit_qwen3.models import check_same_vocabulary
    from lit_qwen3.tokenizer import build_toy_tokenizer

    student, teacher = build_toy_tokenizer(), build_toy_tokenizer()
    teacher.add_tokens(["<extra_a>", "<extra_b>"])
    with pytest.raises(ValueError, match=r"id \d+: student None, teacher '<extra_a>'"):
        check_same_vocabulary(student, teacher)
    check_same_vocabulary(student, build_toy_tokenizer())  # same vocabulary: no error
