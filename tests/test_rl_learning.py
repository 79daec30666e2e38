"""The RL stages learn: about half a minute of GRPO raises a cold-started toy policy's reward
and held-out pass@1; a GRPO update moves probability toward the rewarded rollouts; a
policy that saw calculator calls calls the tool in general RL and is rewarded; IFEval-format rows
train through GeneralRL as they are."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import SEED, History, held_out_scores, quiet_trainer, two_digit_queries

from lit_qwen3.datamodules.queries import QueryDataModule
from lit_qwen3.ops.intervals import paired_difference
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import GeneralRL, ReasoningRL

pytestmark = [pytest.mark.slow, pytest.mark.learning]


#: GRPO's learning test: batches of 16 sums x G 8. 40 left seed 2's start (pass@1 0.59) at
#: +0.034 [-0.006, 0.074] on the held-out set; 60 give the signal room on every seed measured.
BATCHES = 60


def _trainer(steps: int, history: History, root) -> L.Trainer:
    """A plain Trainer; ``root`` holds what the stage exports (never the working directory)."""
    return quiet_trainer(steps, default_root_dir=root, callbacks=[history])


def _grpo(policy, **overrides) -> ReasoningRL:
    """ReasoningRL on the arithmetic reward, G 8 at T 1, built."""
    module = ReasoningRL(
        str(policy),
        rewards=[{"name": "arithmetic"}],
        group_size=8,
        sampling=SamplingConfig(max_new_tokens=48, temperature=1.0),
        samples_every_n_steps=0,
        **overrides,
    )
    module.configure_model()
    return module


def test_grpo_raises_reward_and_held_out_pass1(rl_start_policy, tmp_path):
    """``BATCHES`` batches of 16 fresh 2-digit sums x G 8 (two optimizer steps each), sampled
    as the pipeline's reasoning RL samples (Qwen3's thinking settings: T 0.6, top-p 0.95, top-k
    20), lr 1e-4, from the cold-start snapshot nearest pass@1 0.5 (RL needs room above and
    signal in its groups: from 0.82 one machine's RL moved pass@1 by 0.02, from 0.09 not at
    all). The claim is the method's: held-out pass@1 (the 400 sums of the 'val' split x 4
    samples at T 0.6) rises with a paired 95 % interval above zero, and the training reward
    rises. Measured with 40 batches on 256 sums: 0.358 -> 0.578 (seed 0), +0.094 (seed 1);
    seed 2 from its step-600 start +0.034 [-0.006, 0.074]; with 60 batches on 400 sums seed 2
    gives +0.054 [0.022, 0.086]."""
    data = two_digit_queries(rl_start_policy, per_step=16, size=2400, val_size=400)
    module = ReasoningRL(
        str(rl_start_policy),
        rewards=[{"name": "arithmetic"}],
        group_size=8,
        num_minibatches=2,
        sampling=SamplingConfig(max_new_tokens=48, temperature=0.6, top_p=0.95, top_k=20),
        optimizer=OptimizerConfig(lr=1e-4, warmup_steps=0, min_lr_ratio=1.0),
        samples_every_n_steps=0,
    )
    module.configure_model()
    before = held_out_scores(module, data.val_queries)
    history = History()
    L.seed_everything(SEED, verbose=False)
    _trainer(2 * BATCHES, history, tmp_path).fit(module, data)
    after = held_out_scores(module, data.val_queries)
    gain = paired_difference(after, before)
    rewards = [row["train/reward"] for row in history.rows]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    print(f"held-out pass@1 gain {gain} (seed {SEED}); reward {first:.3f} -> {last:.3f}")
    assert len(rewards) == BATCHES
    assert last > first  # the training reward rises too
    assert gain.low > 0  # held-out pass@1 rises beyond the evaluation's own noise (95 %)


def test_a_grpo_update_moves_probability_toward_rewarded_rollouts(toy_policy):
    """One GRPO batch from the toy policy: every advantage has the sign of its reward against
    the group mean, and a small gradient step on the stage's own loss moves log-probability
    toward the rewarded rollouts and away from the others (re-scored on the same tokens)."""
    from lit_qwen3.chat import split_thinking
    from lit_qwen3.datamodules.arithmetic import verify

    data = two_digit_queries(toy_policy, per_step=8, size=64)
    module = _grpo(toy_policy, dynamic_sampling=False)
    queries = data.train_queries[:8]
    batch, metrics = module.make_batch(queries)
    rollouts, advantages = batch.rollouts, batch.tensors["advantages"]
    texts = module.tokenizer.batch_decode(
        [
            ids[mask.bool()].tolist()
            for ids, mask in zip(rollouts.completion_ids, rollouts.completion_mask, strict=True)
        ],
        skip_special_tokens=True,
    )
    correct = torch.tensor(
        [
            verify(split_thinking(t).answer, queries[i // 8].metadata["reference"])
            for i, t in enumerate(texts)
        ]
    ).float()
    assert 0.1 < correct.mean() < 0.9  # groups with signal: the test means something
    group_mean = correct.view(8, 8).mean(1, keepdim=True).expand(8, 8).reshape(-1)
    assert torch.equal(torch.sign(advantages), torch.sign(correct - group_mean))

    def completion_logprob() -> torch.Tensor:
        with torch.no_grad():
            scores = module.policy_scores(rollouts)
        return (scores.logprobs * batch.mask).sum(-1)

    before = completion_logprob()
    loss, _, _ = module.batch_loss(batch, float(batch.mask.sum()))
    loss.backward()
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    step = 1e-2 / float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    with torch.no_grad():  # a small plain SGD step: the direction of the loss alone
        for parameter in module.model.parameters():
            if parameter.grad is not None:
                parameter -= step * parameter.grad
    change = completion_logprob() - before
    rewarded, penalised = change[advantages > 0].mean(), change[advantages < 0].mean()
    print(
        f"reward {metrics['train/reward']:.3f}; dlogp rewarded {rewarded:.2e}, others {penalised:.2e}"
    )
    # to first order, sum_i A_i * dlogp_i = step * |grad|^2 > 0 for the policy-gradient loss
    assert float((advantages * change).sum()) > 0
    assert rewarded > penalised


def test_the_calculator_is_called_and_rewarded(toy_policy, tmp_path):
    """A short fusion SFT with calculator replies (90 % of rows), then general RL on products
    with the calculator offered: the policy calls it in most rollouts and the calls work, so
    ``tool_use`` pays (measured: 0.78-0.88 calls per rollout, 0.44-0.66 paid). The tiny policy
    does not yet copy the tool's result into its boxed answer (``arithmetic`` 0 in every step):
    that is measured, not asserted."""
    from lit_qwen3.datamodules.fusion import FusionDataModule
    from lit_qwen3.stages import ThinkingModeFusion

    fusion = ThinkingModeFusion(
        str(toy_policy),
        output_dir=str(tmp_path / "fused"),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=10),
    )
    data = FusionDataModule(
        str(toy_policy),
        size=2000,
        val_size=0,
        tool_share=0.9,
        tool_digits=(2, 3),  # operands the tiny policy can copy into the call
        rejection_samples=1,
        rejection_max_new_tokens=48,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        max_tokens_per_batch=4096,
    )
    _trainer(300, History(), tmp_path).fit(fusion, data)

    queries = QueryDataModule(
        str(tmp_path / "fused"),
        queries_per_step=8,
        toy_size=256,
        val_size=0,
        toy_tool_fraction=1.0,
        toy_tool_digits=(2, 3),
        toy_exclude_sft=0,
    )
    module = GeneralRL(
        str(tmp_path / "fused"),
        rewards=[{"name": "arithmetic"}, {"name": "tool_use", "weight": 0.5}],
        group_size=4,
        sampling=SamplingConfig(max_new_tokens=160, temperature=1.0),
        max_tool_turns=1,
        optimizer=OptimizerConfig(lr=5e-5, warmup_steps=0),
        samples_every_n_steps=0,
    )
    history = History()
    _trainer(4, history, tmp_path).fit(module, queries)
    calls = [row["train/tool_calls_per_rollout"] for row in history.rows]
    used = [row["train/reward/tool_use"] for row in history.rows]
    correct = [row["train/reward/arithmetic"] for row in history.rows]
    print(f"calls/rollout {calls}; tool_use {used}; correct {correct}")
    assert sum(calls) / len(calls) > 0.5
    assert sum(used) / len(used) > 0.3


def test_ifeval_rows_train_through_general_rl_as_they_are(toy_policy, tmp_path):
    from lit_qwen3.datamodules.toy_instructions import toy_ifeval_rows

    rows = [
        {k: r[k] for k in ("prompt", "instruction_id_list", "kwargs")}
        for r in toy_ifeval_rows(24, seed=1)
    ]
    path = tmp_path / "ifeval.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = QueryDataModule(str(toy_policy), data=str(path), queries_per_step=4, val_size=0)
    module = GeneralRL(
        str(toy_policy),
        rewards=[{"name": "instructions", "kwargs": {"all_or_nothing": True}}],
        group_size=2,
        sampling=SamplingConfig(max_new_tokens=32),
        samples_every_n_steps=0,
    )
    history = History()
    _trainer(2, history, tmp_path).fit(module, data)
    # one reward: its score is train/reward, not repeated as train/reward/instructions
    assert history.rows and not any("train/reward/instructions" in row for row in history.rows)
    assert all(torch.isfinite(torch.tensor(row["train/reward"])) for row in history.rows)
