"""Every policy-optimisation method runs through the RL stage with off-policy reuse (two
epochs x two mini-batches), gradient accumulation (micro-batches) and dynamic sampling, moves
the policy, and logs the sampler/trainer mismatch; the method keys switch from the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import History, quiet_trainer, two_digit_queries

from lit_qwen3.ops.losses import GRPOLossConfig
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import ReasoningRL

REPO = Path(__file__).resolve().parents[1]

METHODS = {
    "gspo": (
        {"importance_sampling_level": "sequence", "eps_low": 3e-4, "eps_high": 4e-4},
        "clip_frac_high",
    ),
    "gspo_token": ({"importance_sampling_level": "sequence_token"}, "clip_frac_low"),
    "sapo": ({"policy_loss": "sapo"}, "ratio_mean"),
    "cispo": ({"policy_loss": "cispo"}, "cispo_clip_frac"),
    "clip_cov": ({"policy_loss": "clip_cov", "clip_cov_lb": 0.0}, "cov_selected_frac"),
    "kl_cov": ({"policy_loss": "kl_cov", "kl_cov_ratio": 0.01}, "cov_selected_frac"),
    "high_entropy": ({"top_entropy_quantile": 0.2}, "high_entropy_frac"),
    "token_tis": (
        {"rollout_is": "token_truncate", "rollout_is_max": 2.0},
        "mismatch/is_truncated_frac",
    ),
    "sequence_mis": (
        {"rollout_is": "sequence_mask", "rollout_is_min": 0.5},
        "mismatch/is_masked_frac",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_trains_through_the_stage(toy_policy, tmp_path, name):
    loss_keys, metric = METHODS[name]
    data = two_digit_queries(toy_policy, per_step=4, size=64)
    module = ReasoningRL(
        str(toy_policy),
        output_dir=str(tmp_path / "model"),
        rewards=[{"name": "arithmetic"}],
        group_size=4,
        sampling=SamplingConfig(max_new_tokens=32, temperature=1.0),
        loss=GRPOLossConfig(**loss_keys),
        ppo_epochs=2,
        num_minibatches=2,
        micro_batch_size=4,
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=0, min_lr_ratio=1.0),
        samples_every_n_steps=0,
        advantage_estimator="grpo_passk" if name == "sapo" else "grpo",
    )
    module.configure_model()
    before = [p.detach().clone() for p in module.model.parameters()]
    history = History()
    quiet_trainer(4, callbacks=[history]).fit(module, data)
    row = history.rows[-1]
    for key in (f"train/{metric}", "train/mismatch/kl", "train/mismatch/logprob_diff"):
        assert key in row and math.isfinite(row[key]), key
    assert row["train/mismatch/kl"] < 1e-3  # the built-in sampler scores as the trainer does
    if loss_keys.get("rollout_is"):
        assert "train/mismatch/is_weight_mean" in row
    moved = sum(
        float((p.detach() - q).abs().sum())
        for p, q in zip(module.model.parameters(), before, strict=True)
    )
    assert moved > 0


def test_pass_at_k_advantages_in_the_stage(toy_policy):
    module = ReasoningRL(
        str(toy_policy),
        rewards=[{"name": "arithmetic"}],
        group_size=4,
        advantage_estimator="pass_at_k",
        pass_k=2,
    )
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(
        module.advantages(rewards), torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3])
    )
    with pytest.raises(ValueError, match="advantage_estimator must be one of"):
        ReasoningRL(str(toy_policy), advantage_estimator="passk")
    with pytest.raises(ValueError, match="pass_k must be an int in"):
        ReasoningRL(str(toy_policy), group_size=4, advantage_estimator="pass_at_k", pass_k=5)


def test_cli_switches_method_and_names_a_bad_key(monkeypatch, capsys):
    from lit_qwen3.cli import main

    monkeypatch.setattr("sys.argv", ["lit-qwen3"])
    config = str(REPO / "configs/toy/reasoning_rl_gspo.yaml")
    args = ["fit", "--config", config, "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--model.init_args.loss.policy_loss", "cispo"])
    assert exit_info.value.code == 0
    loss = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["loss"]
    assert loss["policy_loss"] == "cispo" and loss["importance_sampling_level"] == "sequence"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--model.init_args.loss.policy_loss", "ppo2"])
    assert exit_info.value.code != 0
    captured = capsys.readouterr()
    assert "policy_loss" in captured.err + captured.out
