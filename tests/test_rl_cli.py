"""The RL stages through the real CLI: cold start, then ReasoningRL from their toy YAMLs; the
metrics the issue names land in MLflow; GRPO under DDP and FSDP2 on two CPU processes."""

from __future__ import annotations

import subprocess
import sys
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


def _logger(tmp_path: Path, run_name: str) -> dict:
    return {
        "class_path": "lightning.pytorch.loggers.MLFlowLogger",
        "init_args": {
            "experiment_name": "rl-cli-test",
            "run_name": run_name,
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "artifact_location": str(tmp_path / "artifacts"),
        },
    }


def rl_override(tmp_path: Path, policy: Path, **trainer) -> Path:
    """A few small RL steps: 4 queries x 4 rollouts, short replies, a tiny evaluation."""
    override = {
        "model": {
            "init_args": {
                "model": str(policy),
                "output_dir": str(tmp_path / "rl_export"),
                "group_size": 4,
                "sampling": {"max_new_tokens": 40},
                "loss": {"kl_coef": 0.01},  # loads a frozen reference: the KL metric is logged
                "samples_every_n_steps": 1,
            }
        },
        "data": {
            "init_args": {
                "queries_per_step": 4,
                "toy_size": 64,
                "val_size": 8,
                "toy_exclude_sft": 500,
            }
        },
        "trainer": {
            "max_steps": 4,
            "default_root_dir": str(tmp_path / "rl"),
            "enable_progress_bar": False,
            "logger": _logger(tmp_path, "reasoning_rl"),
            "callbacks": [
                {"class_path": "lit_qwen3.callbacks.EntropyMonitor"},
                {
                    "class_path": "lit_qwen3.callbacks.PassAtK",
                    "init_args": {
                        "ks": [1],
                        "n_samples": 1,
                        "modes": ["think"],
                        "every_n_steps": 2,
                        "num_queries": 4,
                        "max_new_tokens": 40,
                    },
                },
            ],
            **trainer,
        },
    }
    path = tmp_path / "rl_override.yaml"
    path.write_text(yaml.safe_dump(override))
    return path


def test_cold_start_then_reasoning_rl_through_the_cli(tmp_path):
    cold = {
        "model": {"init_args": {"output_dir": str(tmp_path / "cold_export")}},
        "data": {"init_args": {"toy_size": 300, "val_size": 8, "max_tokens_per_batch": 1024}},
        "trainer": {
            "max_steps": 10,
            "val_check_interval": 10,
            "limit_val_batches": 1,
            "default_root_dir": str(tmp_path / "cold"),
            "enable_progress_bar": False,
            "logger": _logger(tmp_path, "cold_start"),
            "callbacks": [],
        },
        "pass_at_k": None,  # the cold start's evaluation callbacks have named keys
        "thinking_budget": None,
    }
    (tmp_path / "cold.yaml").write_text(yaml.safe_dump(cold))
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/toy/cold_start.yaml"),
            "--config",
            str(tmp_path / "cold.yaml"),
        ]
    )
    policy = tmp_path / "cold_export"
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/toy/reasoning_rl.yaml"),
            "--config",
            str(rl_override(tmp_path, policy)),
        ]
    )

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "rl_export").config.vocab_size > 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("rl-cli-test").experiment_id])
    (rl,) = [r for r in runs if r.data.tags.get("stage") == "reasoning_rl"]
    assert rl.info.status == "FINISHED"
    metrics = set(rl.data.metrics)
    for key in (
        "train/reward",
        "train/reward_std",
        "train/groups_with_signal",
        "train/clip_frac_low",
        "train/clip_frac_high",
        "train/kl",
        "train/thinking_length",
        "train/rollout_length",
        "train/truncated",
        "time/rollout_s",
        "time/update_s",
        "time/tokens_per_s",
        "train/entropy",
        "train/entropy/answer",
        "val/think/pass_at_1",
    ):
        assert key in metrics, key
    # Metrics are logged at the optimizer step, like evaluations: two per batch of rollouts.
    # one reward: its score is train/reward; the stage's entropy is train/entropy, once
    # and a thinking-only run's per-mode entropy is the span's (train/entropy/answer)
    assert not {"train/reward/arithmetic", "train/entropy/all", "epoch"} & metrics
    assert not {"train/entropy/think/answer", "train/entropy/think/thinking"} & metrics
    for key in ("train/reward", "train/lr"):  # one step axis for every train/* metric
        steps = [m.step for m in client.get_metric_history(rl.info.run_id, key)]
        assert sorted(steps) == [2, 4], key
    evals = [m.step for m in client.get_metric_history(rl.info.run_id, "val/think/pass_at_1")]
    assert sorted(evals) == [0, 2, 4]
    samples = {a.path for a in client.list_artifacts(rl.info.run_id, "samples")}
    assert any(path.startswith("samples/reasoning_rl_step") for path in samples)


FSDP2 = {
    "class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
    "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 1},
}


@pytest.mark.parametrize("strategy", ["ddp", FSDP2], ids=["ddp", "fsdp2"])
def test_grpo_on_two_cpu_processes(tmp_path, strategy, toy_policy):
    """Each rank samples its own queries' groups; the sharded policy decodes in lockstep; the
    export is whole; one MLflow run with the metrics."""
    path = rl_override(tmp_path, toy_policy, strategy=strategy, devices=2)
    script = Path(sys.executable).parent / "lit-qwen3"
    done = subprocess.run(
        [
            str(script),
            "fit",
            "--config",
            str(REPO / "configs/toy/reasoning_rl.yaml"),
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "rl_export")
    reference = AutoModelForCausalLM.from_pretrained(toy_policy)
    assert exported.num_parameters() == reference.num_parameters()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rl-cli-test").experiment_id])
    assert run.info.status == "FINISHED"
    assert "train/reward" in run.data.metrics and "train/entropy" in run.data.metrics
