"""A real SFT stage and a real GRPO stage under DDP and FSDP2 on two CPU processes (gloo,
launched like torchrun) against one process on the same global batches (tests/distributed_run.py
says why they must agree), and an FSDP2 run resumed from its sharded checkpoint.

Stated tolerance: losses, gradient norms and entropies agree to a relative 1e-5 (float32
reductions in another order); rewards are equal (the same tokens were sampled); the exported
weights' per-tensor absolute sums agree to a relative 1e-6.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("distributed_run.py")
TWO_RANK_JOBS = ["sft:ddp", "sft:fsdp2", "grpo:ddp", "grpo:fsdp2", "grpo:fsdp2:resume"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toy_policy) -> Path:
    """Both launches at once (one process and two ranks); their JSON results."""
    out = tmp_path_factory.mktemp("distributed")
    single = [sys.executable, str(SCRIPT), str(out), str(toy_policy), "sft:single", "grpo:single"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = [*torchrun, "--nproc_per_node", "2", str(SCRIPT), str(out), str(toy_policy)]
    procs = [
        subprocess.Popen(cmd + jobs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, jobs in ((single, []), (two, TWO_RANK_JOBS))
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, output[-4000:]
    return out


def result(out: Path, job: str) -> dict:
    return json.loads((out / f"{job.replace(':', '_')}.json").read_text())


def assert_same_run(ours: dict, reference: dict, *, exact: tuple[str, ...] = ()) -> None:
    assert [s["step"] for s in ours["steps"]] == [s["step"] for s in reference["steps"]]
    for mine, theirs in zip(ours["steps"], reference["steps"], strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            if key in exact:
                assert mine[key] == value, (key, mine["step"])
            else:
                assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, mine["step"])
    for name, total in reference["weights"].items():
        assert ours["weights"][name] == pytest.approx(total, rel=1e-6), name


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_sft_on_two_processes_matches_one(runs, strategy):
    ours, reference = result(runs, f"sft:{strategy}"), result(runs, "sft:single")
    assert ours["world"] == 2 and reference["world"] == 1
    losses = [s["train/loss"] for s in reference["steps"]]
    assert losses[-1] < losses[0]  # it trains
    assert_same_run(ours, reference)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_grpo_on_two_processes_matches_one(runs, strategy):
    ours, reference = result(runs, f"grpo:{strategy}"), result(runs, "grpo:single")
    assert ours["world"] == 2
    assert any(s["train/grad_norm"] > 0 for s in reference["steps"])  # some groups had signal
    assert_same_run(ours, reference, exact=("train/reward",))


def test_fsdp2_resumes_from_its_sharded_checkpoint(runs):
    shards = runs / "grpo_fsdp2_checkpoints" / "epoch=0-step=2.ckpt"
    assert shards.is_dir() and len(list(shards.glob("*.distcp"))) == 2  # one file per rank
    resumed, uninterrupted = result(runs, "grpo:fsdp2:resume"), result(runs, "grpo:fsdp2")
    uninterrupted["steps"] = uninterrupted["steps"][2:]
    assert [s["step"] for s in resumed["steps"]] == [3, 4]
    assert_same_run(resumed, uninterrupted, exact=("train/reward",))
