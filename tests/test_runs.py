"""Run names and run directories: same command, same place; different settings, different places."""

from __future__ import annotations

import os

import pytest

from lit_qwen3.runtime.runs import (
    command_line_overrides,
    describe_command,
    point_to,
    read_run_record,
    run_name,
    write_run_record,
)

BASE = ["--config", "configs/toy/cold_start.yaml"]


def test_no_overrides_is_the_stage():
    assert run_name("cold_start", BASE) == "cold_start"
    assert run_name("cold_start", [*BASE, "--print_config"]) == "cold_start"


def test_overrides_spelled_out_sorted_by_short_key():
    args = [*BASE, "--trainer.max_steps", "30", "--model.init_args.optimizer.lr=0.004"]
    assert run_name("cold_start", args) == "cold_start-lr=0.004-max_steps=30"
    swapped = [*BASE, "--model.init_args.optimizer.lr", "0.004", "--trainer.max_steps=30"]
    assert run_name("cold_start", swapped) == "cold_start-lr=0.004-max_steps=30"


def test_the_last_of_a_repeated_key_counts_and_neutral_keys_do_not():
    args = [*BASE, "--trainer.max_steps", "5", "--trainer.max_steps", "20"]
    assert run_name("cold_start", args) == "cold_start-max_steps=20"
    neutral = [
        *args,
        "--trainer.default_root_dir",
        "/elsewhere",
        "--run_name",
        "x",
        "--parent_run",
        "sweep",
        "--ckpt_path",
        "a.ckpt",
    ]
    assert run_name("cold_start", neutral) == "cold_start-max_steps=20"


def test_same_short_key_is_qualified_and_extra_configs_named():
    args = [*BASE, "--config", "more/small_eval.yaml", "--pass_at_k.init_args.n", "4"]
    args += ["--thinking_budget.n", "8", "--trainer.max_steps", "9"]
    expected = "cold_start-small_eval-max_steps=9-pass_at_k.n=4-thinking_budget.n=8"
    assert run_name("cold_start", args) == expected


def test_paths_and_long_overrides_become_a_stable_hash():
    args = [*BASE, "--model.init_args.model", "/data/ckpt/step_900"]
    name = run_name("cold_start", args)
    assert name.startswith("cold_start-") and len(name) == len("cold_start-") + 8
    assert run_name("cold_start", args) == name
    other = run_name("cold_start", [*BASE, "--model.init_args.model", "/data/ckpt/step_901"])
    assert other != name
    long = [*BASE] + [f"--trainer.k{i}={i}" for i in range(20)]
    assert len(run_name("cold_start", long)) == len("cold_start-") + 8


def test_command_line_overrides():
    args = [*BASE, "-c", "b.yaml", "--x.y", "-1", "--flag", "--z=a=b"]
    assert command_line_overrides(args) == (["b.yaml"], {"x.y": "-1", "z": "a=b"})


def test_description_holds_command_and_overrides():
    args = [*BASE, "--trainer.max_steps", "30"]
    text = describe_command(["lit-qwen3", "fit", *args], args, "runs/x/y")
    assert "`lit-qwen3 fit --config configs/toy/cold_start.yaml --trainer.max_steps 30`" in text
    assert "`trainer.max_steps` = `30`" in text and "`runs/x/y`" in text
    assert "none (the config as shipped)" in describe_command(["lit-qwen3"], BASE, "d")


def test_run_record_round_trip(tmp_path):
    assert read_run_record(tmp_path / "run") == {}
    write_run_record(tmp_path / "run", {"mlflow_run_id": "abc"})
    assert read_run_record(tmp_path / "run") == {"mlflow_run_id": "abc"}
    (tmp_path / "run" / "run.json").write_text("{not json")
    assert read_run_record(tmp_path / "run") == {}


def test_pointer_is_a_relative_symlink_replaced_atomically(tmp_path):
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    for d in (first, second):
        d.mkdir(parents=True)
        (d / "config.json").write_text(d.parent.name)
    link = tmp_path / "model"
    assert point_to(link, first)
    assert os.readlink(link) == os.path.join("a", "model")
    assert point_to(link, second)
    assert (link / "config.json").read_text() == "b"
    assert not (tmp_path / "model.partial").exists()
    real = tmp_path / "old" / "model"
    real.mkdir(parents=True)
    assert not point_to(real, first)  # a real directory is never replaced


@pytest.mark.parametrize("stage", ["reasoning_rl", "reward_model"])
def test_other_stages_name_the_same_way(stage):
    assert run_name(stage, [*BASE, "--trainer.max_steps=3"]) == f"{stage}-max_steps=3"
