"""RL under truncated sampling (issue 24): the trainer re-scores each sampled token under the
distribution the sampler drew it from (temperature, then top-k / top-p / min-p, renormalised
over the kept support), so the importance ratio of fresh rollouts is 1 for every setting.

Reference: Hugging Face's own logits warpers in float64, autograd through them."""

from __future__ import annotations

import math

import pytest
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from transformers import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lit_qwen3.ops.logprobs import chunked_logprobs_and_entropy, token_logprobs, truncated_logprobs
from lit_qwen3.ops.losses import GRPOLossConfig, grpo_loss
from lit_qwen3.ops.truncation import kept_threshold
from lit_qwen3.queries import Query
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.rollout.rescoring import score_completions
from lit_qwen3.rollout.sampling import sample_next_tokens
from lit_qwen3.stages import ReasoningRL

SETTINGS = {
    "T1": {"temperature": 1.0},
    "T0.6": {"temperature": 0.6},
    "T0.6_topk20": {"temperature": 0.6, "top_k": 20},
    "topp0.95": {"top_p": 0.95},
    "minp0.1": {"min_p": 0.1},
    "all": {"temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.1},
}
TRUNCATING = {name for name, s in SETTINGS.items() if set(s) - {"temperature"}}


def hf_reference(logits, labels, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """log-prob of ``labels`` under HF's warped distribution, the label added to the support."""
    warpers = [TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    if min_p:
        warpers.append(MinPLogitsWarper(min_p))
    warped = logits
    for warper in warpers:
        warped = warper(None, warped)
    keep = torch.isfinite(warped)
    keep[torch.arange(len(labels)), labels] = True
    z = logits / temperature
    kept = z.masked_fill(~keep, float("-inf"))
    return z.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(kept, -1)


# --------------------------------------------------------------------------- pure functions
def test_hand_computed_top_p_and_a_label_outside_the_support():
    # p = [.5, .3, .1, .06, .04]: top-p .85 keeps the first three (mass .9)
    logits = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04], dtype=torch.float64).log().expand(2, 5)
    labels = torch.tensor([0, 3])
    out = truncated_logprobs(logits, labels, top_p=0.85)
    # token 3 lies outside: its support is the three kept plus itself (mass .96), not -inf
    expected = torch.tensor([math.log(0.5 / 0.9), math.log(0.06 / 0.96)], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_values_and_gradients_match_the_hf_warpers(name, chunk_size):
    settings = SETTINGS[name]
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(24, 64, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    labels = torch.randint(0, 64, (24,), generator=gen)
    weights = torch.randn(24, generator=gen, dtype=torch.float64)
    reference = hf_reference(logits, labels, **settings)
    (ref_grad,) = torch.autograd.grad((reference * weights).sum(), logits)
    out = truncated_logprobs(logits, labels, chunk_size=chunk_size, **settings)
    (grad,) = torch.autograd.grad((out * weights).sum(), logits)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)
    # some labels fall outside the support of the truncating settings: covered too
    cut = {k: v for k, v in settings.items() if k != "temperature"}
    z = logits.detach() / settings.get("temperature", 1.0)
    if name in TRUNCATING:
        assert (z.gather(-1, labels[:, None]) < kept_threshold(z, **cut)).any()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_chunked_kernel_matches_logits_path_with_entropy(name):
    settings = SETTINGS[name]
    temperature = settings.get("temperature", 1.0)
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 9, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(40, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 40, (2, 9), generator=gen)
    labels[1, -2:] = -100
    g_lp, g_ent = torch.randn(2, 2, 9, generator=gen, dtype=torch.float64)
    logits = hidden @ weight.T + bias
    ref = truncated_logprobs(logits, labels, **settings)
    z = logits / temperature
    ref_ent = torch.logsumexp(z, -1) - (z.softmax(-1) * z).sum(-1)
    ref_grads = torch.autograd.grad((ref * g_lp + ref_ent * g_ent).sum(), (hidden, weight, bias))
    lp, ent = chunked_logprobs_and_entropy(
        hidden, weight, labels, bias=bias, chunk_size=4, **settings
    )
    torch.testing.assert_close(lp, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((lp * g_lp + ent * g_ent).sum(), (hidden, weight, bias))
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # log-probs alone (no entropy gradient): the other backward branch
    lp, _ = chunked_logprobs_and_entropy(hidden, weight, labels, chunk_size=5, **settings)
    ref = truncated_logprobs(hidden @ weight.T, labels, **settings)
    got = torch.autograd.grad((lp * g_lp).sum(), hidden)[0]
    want = torch.autograd.grad((ref * g_lp).sum(), hidden)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_gradcheck_of_the_renormalised_logprob():
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(4, 12, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    labels = torch.tensor([0, 3, 7, 11])
    assert torch.autograd.gradcheck(
        lambda x: truncated_logprobs(x, labels, 0.6, top_k=6, top_p=0.9, min_p=0.05), (logits,)
    )


def test_untruncated_settings_are_the_plain_tempered_logprob():
    logits = torch.randn(5, 30)
    labels = torch.randint(0, 30, (5,))
    for kwargs in ({}, {"top_k": 30}, {"top_k": 99}):
        assert torch.equal(
            truncated_logprobs(logits, labels, 0.7, **kwargs), token_logprobs(logits, labels, 0.7)
        )


def test_ties_at_the_top_k_boundary_are_all_kept_by_sampler_and_trainer():
    # four tokens tie for the second place: top-k 2 keeps all five (HF's rule), both sides
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    threshold = kept_threshold(logits, top_k=2)
    assert int((logits >= threshold).sum()) == 5
    draws = sample_next_tokens(
        logits.expand(4000, 6), top_k=2, generator=torch.Generator().manual_seed(0)
    )
    assert set(draws.tokens.tolist()) == {0, 1, 2, 3, 4}
    trainer = truncated_logprobs(logits.expand(4000, 6), draws.tokens, top_k=2)
    torch.testing.assert_close(trainer, draws.sampling_logprobs)


# --------------------------------------------------------------------------- a tiny model
@pytest.fixture(scope="module")
def stage():
    module = ReasoningRL("toy-teacher", rewards=[{"name": "arithmetic"}], group_size=2)
    module.configure_model()
    return module


def _prompts(tokenizer):
    return [
        tokenizer(f"<|im_start|>user\n{'7' * i}+{i}<|im_end|>\n<|im_start|>assistant\n")[
            "input_ids"
        ]
        for i in (1, 4, 9, 2)
    ]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_fresh_rollouts_have_ratio_one_under_the_stages_own_logprobs(stage, name):
    config = SamplingConfig(max_new_tokens=16, **SETTINGS[name])
    stage.sampling = config
    rollouts = RolloutSampler(stage.tokenizer, config).sample(
        stage.model, _prompts(stage.tokenizer), seeds=[1, 2, 3, 4]
    )
    policy = rollouts.policy_mask()
    sampler = rollouts.sampling_logprobs[policy]
    trainer = stage.policy_scores(rollouts).logprobs.detach()[policy]
    old = stage.frozen_logprobs(stage.model, rollouts)[policy]  # ppo_epochs > 1: old policy
    torch.testing.assert_close(trainer, sampler, rtol=0, atol=5e-6)  # two forwards, float32
    ratio = (trainer - sampler).exp()
    assert (ratio - 1).abs().max() < 5e-6
    assert torch.equal(old, trainer)  # the trainer against itself: exactly 1
    # the old path (tempered, untruncated) fails this test wherever the sampler truncates
    untruncated = score_completions(stage.model, rollouts, temperature=config.temperature)
    gap = (untruncated.logprobs.detach()[policy] - sampler).abs().max()
    assert (gap > 1e-4) == (name in TRUNCATING), float(gap)


def test_tokens_outside_the_updated_policys_support_stay_finite(stage):
    config = SamplingConfig(max_new_tokens=16, temperature=1.0)
    rollouts = RolloutSampler(stage.tokenizer, config).sample(
        stage.model, _prompts(stage.tokenizer), seeds=[5, 6, 7, 8]
    )
    # top-k 1: the support is the argmax, plus the label when it is not the argmax
    stage.sampling = SamplingConfig(max_new_tokens=16, temperature=0.6, top_k=1)
    updated = type(stage.model)(stage.model.config)  # an update that moved everything
    updated.load_state_dict(stage.model.state_dict())
    with torch.no_grad():
        for p in updated.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    scores = score_completions(updated, rollouts, **stage.sampled_distribution())
    policy = rollouts.policy_mask()
    full = score_completions(updated, rollouts, temperature=0.6).logprobs.detach()
    truncated = scores.logprobs.detach()[policy]
    assert (truncated >= full[policy] - 1e-6).all()  # renormalised over a smaller support
    assert (truncated < -1e-6).any()  # some sampled tokens are not the updated argmax
    assert torch.isfinite(truncated).all()
    loss, _ = grpo_loss(
        scores.logprobs,
        rollouts.sampling_logprobs,
        torch.randn(len(rollouts)),
        policy,
        GRPOLossConfig(tis_cap=2.0),
        rollout_logprobs=rollouts.sampling_logprobs,
        entropy=scores.entropy,
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in updated.parameters() if p.grad is not None)


def test_vllm_refuses_top_p_with_min_p():
    # vLLM applies min-p before top-p, the trainer after: their supports differ
    sampling = SamplingConfig(max_new_tokens=8, top_p=0.9, min_p=0.1)
    with pytest.raises(ValueError, match="min-p before top-p"):
        ReasoningRL("toy-teacher", sampling=sampling, rollout_backend="vllm")


def test_grpo_step_compares_like_with_like_under_qwen3_sampling():
    """Through the stage's own batch and loss: TIS weights, the mismatch and the reference KL
    of fresh rollouts sampled at T 0.6, top-k 20, top-p 0.95 (with the reference = the policy)."""
    module = ReasoningRL(
        "toy-teacher",
        rewards=[{"name": "arithmetic"}],
        group_size=2,
        sampling=SamplingConfig.qwen3_thinking(max_new_tokens=12),
        loss=GRPOLossConfig(tis_cap=2.0, kl_coef=0.1),
        dynamic_sampling=False,
        overlong="none",
        samples_every_n_steps=0,
    )
    module.configure_model()
    queries = [
        Query([{"role": "user", "content": f"{a}+{b}"}], {"reference": str(a + b)})
        for a, b in ((12, 34), (5, 70))
    ]
    batch, _ = module.make_batch(queries)
    assert torch.equal(batch.tensors["rollout_logprobs"], batch.rollouts.sampling_logprobs)
    loss, metrics, _ = module.batch_loss(batch, float(batch.mask.sum()))
    assert abs(float(metrics["mismatch/logprob_diff_max"])) < 5e-6
    assert abs(float(metrics["mismatch/is_weight_mean"]) - 1) < 5e-6
    assert float(metrics["kl"]) == 0.0  # reference and policy truncated alike
    loss.backward()
    assert all(
        torch.isfinite(p.grad).all() for p in module.model.parameters() if p.grad is not None
    )
