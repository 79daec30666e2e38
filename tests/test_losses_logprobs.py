"""Per-token log-probs and entropy: hand-worked values, the chunked kernel against full logits."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lit_qwen3.ops.losses import chunked_logprobs_and_entropy, token_entropy, token_logprobs


def naive_logprobs_and_entropy(hidden, weight, labels, bias=None, temperature=1.0):
    """The reference: full logits, full log-softmax, gather."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float() / temperature
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1), entropy


def test_token_logprobs_and_entropy_hand_worked():
    # logits ln(1, 2, 3) -> p = (1/6, 2/6, 3/6); log p(2) = ln(1/2) = -0.693147
    # H = -(1/6 ln 1/6 + 1/3 ln 1/3 + 1/2 ln 1/2) = 0.298627 + 0.366204 + 0.346574 = 1.011404
    logits = torch.tensor([[[0.0, math.log(2), math.log(3)]]])
    labels = torch.tensor([[2]])
    assert_close(token_logprobs(logits, labels), torch.tensor([[-0.693147]]))
    assert_close(token_entropy(logits), torch.tensor([[1.011404]]))
    # temperature 2 halves the logits: weights (1, sqrt 2, sqrt 3), sum 4.146264,
    # p(2) = 1.732051 / 4.146264 = 0.417738 -> ln = -0.872902
    assert_close(token_logprobs(logits, labels, temperature=2.0), torch.tensor([[-0.872902]]))


def test_token_logprobs_ignore_index_gives_zero_and_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5))
    labels[1, 3] = -100
    out = token_logprobs(logits, labels, 0.7, chunk_size=3)
    ref = (logits / 0.7).log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    ref = ref.masked_fill(labels == -100, 0.0)
    assert_close(out, ref)
    out.sum().backward()
    assert logits.grad[1, 3].abs().max() == 0  # an ignored position gets no gradient


def test_token_entropy_gradient_matches_autograd_of_definition():
    torch.manual_seed(1)
    logits = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: token_entropy(z, 1.3, chunk_size=2), (logits,))


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1024])
def test_chunked_equals_naive_values_and_grads(chunk_size):
    torch.manual_seed(0)
    b, t, h, v = 2, 19, 16, 50
    hidden = torch.randn(b, t, h, requires_grad=True)
    weight = (torch.randn(v, h) * 0.3).requires_grad_()
    bias = torch.randn(v, requires_grad=True)
    labels = torch.randint(0, v, (b, t))
    coef_lp, coef_ent = torch.randn(b, t), torch.randn(b, t)

    lp, ent = chunked_logprobs_and_entropy(
        hidden, weight, labels, bias=bias, temperature=0.6, chunk_size=chunk_size
    )
    ((lp * coef_lp).sum() + (ent * coef_ent).sum()).backward()
    grads = [x.grad.clone() for x in (hidden, weight, bias)]
    for x in (hidden, weight, bias):
        x.grad = None
    ref_lp, ref_ent = naive_logprobs_and_entropy(hidden, weight, labels, bias, 0.6)
    ((ref_lp * coef_lp).sum() + (ref_ent * coef_ent).sum()).backward()

    assert_close(lp, ref_lp, atol=1e-5, rtol=1e-5)
    assert_close(ent, ref_ent, atol=1e-5, rtol=1e-5)
    for got, x in zip(grads, (hidden, weight, bias), strict=True):
        assert_close(got, x.grad, atol=1e-5, rtol=1e-4)


def test_chunked_gradcheck_float64():
    torch.manual_seed(0)
    hidden = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 6, -100], [0, 3, 3]])

    def both(h, w, b):
        return chunked_logprobs_and_entropy(h, w, labels, bias=b, temperature=0.7, chunk_size=4)

    assert torch.autograd.gradcheck(both, (hidden, weight, bias))
    # only one of the two outputs used: the other's gradient arrives as None
    assert torch.autograd.gradcheck(lambda h, w, b: both(h, w, b)[0], (hidden, weight, bias))
    assert torch.autograd.gradcheck(lambda h, w, b: both(h, w, b)[1], (hidden, weight, bias))


def test_chunked_frozen_weight_and_no_grad():
    torch.manual_seed(0)
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(30, 8)  # frozen lm_head: no weight gradient requested
    labels = torch.randint(0, 30, (5,))
    lp, _ = chunked_logprobs_and_entropy(hidden, weight, labels, chunk_size=2)
    lp.sum().backward()
    ref_hidden = hidden.detach().clone().requires_grad_()
    naive_logprobs_and_entropy(ref_hidden, weight, labels)[0].sum().backward()
    assert_close(hidden.grad, ref_hidden.grad)
    with torch.no_grad():
        lp, ent = chunked_logprobs_and_entropy(hidden, weight, labels)
    assert not lp.requires_grad and not ent.requires_grad


def test_chunked_saves_no_tokens_by_vocab_tensor():
    """Autograd keeps only inputs and per-token floats; the naive path keeps T x V logits."""
    torch.manual_seed(0)
    n, h, v = 256, 8, 1000
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    labels = torch.randint(0, v, (n,))

    def saved_numel(fn):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return max(sizes)

    chunked = saved_numel(
        lambda: chunked_logprobs_and_entropy(hidden, weight, labels, chunk_size=32)
    )
    naive = saved_numel(lambda: naive_logprobs_and_entropy(hidden, weight, labels))
    assert naive >= n * v
    assert chunked == v * h  # the largest saved tensor is the weight itself


def test_chunked_bfloat16_matches_bfloat16_logits_upcast():
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, dtype=torch.bfloat16)
    weight = torch.randn(40, 16, dtype=torch.bfloat16)
    labels = torch.randint(0, 40, (2, 9))
    lp, ent = chunked_logprobs_and_entropy(hidden, weight, labels, chunk_size=5)
    assert lp.dtype == torch.float32
    ref_lp, ref_ent = naive_logprobs_and_entropy(hidden, weight, labels)
    assert_close(lp, ref_lp, atol=1e-5, rtol=1e-5)
    assert_close(ent, ref_ent, atol=1e-5, rtol=1e-5)


def test_chunked_on_a_qwen3_model_matches_its_logits_and_learns():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        tie_word_embeddings=True,
    )
    model = Qwen3ForCausalLM(config)
    ids = torch.randint(0, 64, (2, 12))
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    lp, ent = chunked_logprobs_and_entropy(hidden, model.lm_head.weight, ids[:, 1:], chunk_size=5)
    logits = model(input_ids=ids).logits[:, :-1]
    assert_close(lp, token_logprobs(logits, ids[:, 1:]), atol=1e-5, rtol=1e-5)
    assert_close(ent, token_entropy(logits), atol=1e-5, rtol=1e-5)

    # maximise the sequence log-likelihood through the chunked kernel: it must go up
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    first = None
    for _ in range(8):
        hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
        lp, _ = chunked_logprobs_and_entropy(hidden, model.lm_head.weight, ids[:, 1:], chunk_size=7)
        loss = -lp.mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first  # ln 64 = 4.16 at the start


def test_bad_inputs_raise_clear_errors():
    hidden, weight = torch.randn(2, 3, 4), torch.randn(10, 4)
    with pytest.raises(ValueError, match="labels has shape"):
        chunked_logprobs_and_entropy(hidden, weight, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden has size 4"):
        chunked_logprobs_and_entropy(hidden, torch.randn(10, 5), torch.zeros(2, 3).long())
    with pytest.raises(ValueError, match="outside \\[0, 10\\)"):
        chunked_logprobs_and_entropy(hidden, weight, torch.full((2, 3), 10))
    with pytest.raises(TypeError, match="integer"):
        chunked_logprobs_and_entropy(hidden, weight, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        chunked_logprobs_and_entropy(hidden, weight, torch.zeros(2, 3).long(), temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_logprobs_and_entropy(hidden, weight, torch.zeros(2, 3).long(), chunk_size=0)
    with pytest.raises(ValueError, match="bias must have shape"):
        chunked_logprobs_and_entropy(hidden, weight, torch.zeros(2, 3).long(), bias=torch.zeros(9))
    with pytest.raises(ValueError, match="labels has shape"):
        token_logprobs(torch.randn(2, 3, 5), torch.zeros(3, 2).long())
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(torch.randn(2, 3, 5), chunk_size=0)
    with pytest.raises(ValueError, match="id -3"):
        token_logprobs(torch.randn(2, 3, 5), torch.full((2, 3), -3))
