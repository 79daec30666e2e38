"""Strategy configs: every one resolves with a stage config; DeepSpeed's absence is a clear
error before anything starts; the FSDP2 plan's options; ZeRO-3 partitions keep weight decay."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from lit_qwen3.cli import main
from lit_qwen3.runtime.optim import OptimizerConfig, configure_adamw
from lit_qwen3.runtime.strategies import (
    DecoderFSDPStrategy,
    FSDP2Strategy,
    check_strategy_requirements,
    deepspeed_stage,
    fsdp2_options,
    is_decoder_layer,
)

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = sorted((REPO / "configs/strategies").glob("*.yaml"))
STAGES = ["configs/toy/cold_start.yaml", "configs/toy/reasoning_rl.yaml"]


def test_the_five_strategies_ship():
    names = {path.stem for path in STRATEGIES}
    assert names == {"ddp", "fsdp2", "fsdp", "deepspeed_zero2", "deepspeed_zero3"}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda p: p.stem)
def test_every_strategy_resolves_with_a_stage_config(stage, strategy, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])
    args = ["fit", "--config", str(REPO / stage), "--config", str(strategy), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    wanted = yaml.safe_load(strategy.read_text())
    assert (
        resolved["trainer"]["strategy"]["class_path"] == wanted["trainer"]["strategy"]["class_path"]
    )
    for key, value in wanted["trainer"]["strategy"]["init_args"].items():
        assert resolved["trainer"]["strategy"]["init_args"][key] == value, key
    assert resolved["trainer"]["precision"] == wanted["trainer"]["precision"]
    # the stage stays what its own config says
    assert (
        resolved["model"]["class_path"]
        == yaml.safe_load((REPO / stage).read_text())["model"]["class_path"]
    )


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed installed")
def test_deepspeed_missing_is_a_clear_error_before_anything_runs(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])
    args = [
        "fit",
        "--config",
        str(REPO / "configs/toy/cold_start.yaml"),
        "--config",
        str(REPO / "configs/strategies/deepspeed_zero3.yaml"),
    ]
    with pytest.raises(
        ImportError,
        match=r"trainer.strategy is .*DeepSpeedStrategy.*pip install 'lit-qwen3\[gpu\]'",
    ):
        main(args)
    check_strategy_requirements("ddp")  # nothing needed


def test_fsdp2_plan_options():
    plain, shard = fsdp2_options(FSDP2Strategy())
    assert plain == {"reshard_after_forward": True} and shard
    strategy = FSDP2Strategy(
        mixed_precision="bfloat16",
        cpu_offload=True,
        reshard_after_forward=False,
        frozen_models="replicate",
    )
    kwargs, shard = fsdp2_options(strategy)
    assert not shard and kwargs["reshard_after_forward"] is False
    assert kwargs["mp_policy"].param_dtype == torch.bfloat16
    assert kwargs["mp_policy"].reduce_dtype == torch.float32
    assert type(kwargs["offload_policy"]).__name__ == "CPUOffloadPolicy"
    assert fsdp2_options(DDPStrategy()) == ({}, True)  # plain ModelParallelStrategy defaults


def test_fsdp2_data_parallel_auto_means_every_device(monkeypatch):
    # Lightning's own "auto" would be the number of nodes (2), which fails on 8 devices
    monkeypatch.setattr(ModelParallelStrategy, "setup_environment", lambda self: None)
    strategy = FSDP2Strategy()
    strategy.parallel_devices = [torch.device("cpu")] * 4
    strategy.num_nodes = 2
    strategy.setup_environment()
    assert strategy._data_parallel_size == 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"frozen_models": "all"}, "frozen_models must be"),
        ({"mixed_precision": "fp8"}, "FSDP2Strategy.mixed_precision"),
    ],
)
def test_fsdp2_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FSDP2Strategy(**kwargs)


def test_fsdp1_wraps_decoder_layers():
    from lit_qwen3.models import load_model

    model = load_model("toy-student", seed=0)
    layers = [m for m in model.modules() if is_decoder_layer(m)]
    assert [type(m).__name__ for m in layers] == ["Qwen3DecoderLayer"] * 2
    strategy = DecoderFSDPStrategy(checkpoint_decoder_layers=True)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert policy(model, True, 0) and policy(layers[0], False, 0)
    assert not policy(model.lm_head, False, 0)
    assert deepspeed_stage(strategy) is None


def test_zero3_partitions_keep_weight_decay_by_original_shape():
    model = torch.nn.Linear(4, 4)
    flat = torch.nn.Parameter(torch.zeros(16))
    flat.ds_shape = (4, 4)  # what a ZeRO-3 partition looks like: flat, original shape aside
    model.weight = flat
    groups = configure_adamw(model, OptimizerConfig(weight_decay=0.1), 10)["optimizer"].param_groups
    assert groups[0]["params"] == [flat] and groups[0]["weight_decay"] == 0.1
    assert groups[1]["params"] == [model.bias] and groups[1]["weight_decay"] == 0.0
