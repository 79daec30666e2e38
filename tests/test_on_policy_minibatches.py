"""On-policy distillation in minibatches: a batch split into parts gives the loss of the whole
(the teacher's hidden states, (B, T, H), are cut to each part's width like every (B, T) tensor),
and a step with ``num_minibatches`` and ``micro_batch_size`` above 1 trains."""

from __future__ import annotations

import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import quiet_trainer

from lit_qwen3.datamodules.queries import QueryDataModule
from lit_qwen3.rollout.generation import SamplingConfig
from lit_qwen3.stages import OnPolicyDistillation


def _module(policy, **overrides) -> OnPolicyDistillation:
    """The toy policy distilled toward itself: its rows end at different lengths."""
    module = OnPolicyDistillation(
        str(policy),
        teacher=str(policy),
        sampling=SamplingConfig(max_new_tokens=48, temperature=1.0),
        samples_every_n_steps=0,
        **overrides,
    )
    module.configure_model()
    return module


def _queries(policy, per_step: int) -> QueryDataModule:
    data = QueryDataModule(str(policy), queries_per_step=per_step, toy_size=32, val_size=0)
    data.setup("fit")
    return data


def test_parts_of_a_batch_add_up_to_the_whole(toy_policy):
    module = _module(toy_policy)
    torch.manual_seed(0)
    batch, _ = module.make_batch(_queries(toy_policy, 6).train_queries[:6])
    lengths = batch.rollouts.completion_mask.sum(-1)
    assert lengths.min() < lengths.max()  # parts of different widths: the cut matters
    normalizer = float(batch.mask.sum())
    with torch.no_grad():
        whole, _, _ = module.batch_loss(batch, normalizer)
        order = torch.argsort(lengths)  # the short rows together: a narrower part
        parts = [batch.select(order[:3]), batch.select(order[3:])]
        assert parts[0].tensors["teacher_hidden"].shape[1] < batch.mask.shape[1]
        split = sum(module.batch_loss(part, normalizer)[0] for part in parts)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)


def test_a_step_in_minibatches_and_micro_batches_trains(toy_policy):
    module = _module(toy_policy, num_minibatches=2, micro_batch_size=2)
    before = [p.detach().clone() for p in module.model.parameters()]
    quiet_trainer(1, limit_val_batches=0).fit(module, _queries(toy_policy, 4))
    after = module.model.parameters()
    moved = sum(not torch.equal(a, p) for a, p in zip(before, after, strict=True))
    assert moved > 0
