"""The chunked distillation kernel against autograd of the full-logit divergences."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from lit_qwen3.ops.losses import (
    chunked_distillation,
    chunked_logprobs_and_entropy,
    forward_kl,
    generalized_jsd,
    reverse_kl,
)
from tests.single_thread import one_thread  # noqa: F401

F64 = torch.float64
# float64 kernel vs float64 autograd: they differ only by summation order (seen: <= 5e-13)
TIGHT = {"atol": 1e-11, "rtol": 1e-10}


def full_logit_divergence(name, student_logits, teacher_logits, mask, beta, temperature):
    """The reference: the full-logit divergences of distill_losses, per token."""
    kwargs = {"temperature": temperature, "reduction": "none"}
    if name == "forward_kl":
        return forward_kl(student_logits, teacher_logits, mask, **kwargs)
    if name == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, mask, **kwargs)
    return generalized_jsd(student_logits, teacher_logits, mask, beta=beta, **kwargs)


def make_inputs(seed=0, b=2, t=7, h=5, ht=6, v=11, dtype=F64):
    torch.manual_seed(seed)
    return {
        "hidden": torch.randn(b, t, h, dtype=dtype, requires_grad=True),
        "weight": torch.randn(v, h, dtype=dtype, requires_grad=True),
        "bias": torch.randn(v, dtype=dtype, requires_grad=True),
        "t_hidden": torch.randn(b, t, ht, dtype=dtype),
        "t_weight": torch.randn(v, ht, dtype=dtype),
        "mask": torch.rand(b, t) > 0.3,
        "labels": torch.randint(0, v, (b, t)),
    }


def grads(loss, x):
    return torch.autograd.grad(loss, (x["hidden"], x["weight"], x["bias"]))


DIVERGENCES = [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3), ("jsd", 0.9)]


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_grads_match_full_logit_autograd_float64(name, beta, temperature):
    x = make_inputs()
    mask, labels = x["mask"], x["labels"]
    out = chunked_distillation(
        x["hidden"],
        x["weight"],
        x["t_hidden"],
        x["t_weight"],
        mask,
        name,
        beta=beta,
        temperature=temperature,
        student_bias=x["bias"],
        labels=labels,
        chunk_size=3,
    )
    # random weights per token and output, so every output's gradient is exercised
    w_div, w_ent, w_lp = torch.randn(3, *mask.shape, dtype=F64)
    loss = (out.divergence * w_div + out.entropy * w_ent + out.logprobs * w_lp).sum()
    got = grads(loss, x)

    student = torch.nn.functional.linear(x["hidden"], x["weight"], x["bias"])
    teacher = x["t_hidden"] @ x["t_weight"].T
    divergence = full_logit_divergence(name, student, teacher, mask, beta, temperature)
    logp = (student / temperature).log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1) * mask
    label_logp = logp.gather(-1, labels[..., None])[..., 0] * mask
    teacher_logp = (teacher / temperature).log_softmax(-1).gather(-1, labels[..., None])[..., 0]
    ref_loss = (divergence * w_div + entropy * w_ent + label_logp * w_lp).sum()

    assert_close(out.divergence, divergence, **TIGHT)
    assert_close(out.entropy, entropy, **TIGHT)
    assert_close(out.logprobs, label_logp, **TIGHT)
    assert_close(out.teacher_logprobs, teacher_logp * mask, **TIGHT)
    assert not out.teacher_logprobs.requires_grad
    for g, ref in zip(got, grads(ref_loss, x), strict=True):
        assert_close(g, ref, **TIGHT)


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES[:3])
def test_minus_inf_entries_match_full_logits_and_stay_finite(name, beta):
    """A top-k-truncated teacher (-inf outside its top 4), a student id at -inf (bias), a masked
    row whose teacher logits are all -inf: finite values and gradients, equal to the reference."""
    x = make_inputs(seed=1, v=9)
    with torch.no_grad():
        x["bias"][3] = float("-inf")
    teacher = x["t_hidden"] @ x["t_weight"].T
    cut = teacher.topk(4, -1).values[..., -1:]
    teacher = teacher.masked_fill(teacher < cut, float("-inf"))
    mask = x["mask"].clone()
    mask[0, 1] = False
    teacher[0, 1] = float("-inf")
    out = chunked_distillation(
        x["hidden"],
        x["weight"],
        None,
        None,
        mask,
        name,
        beta=beta,
        temperature=0.8,
        student_bias=x["bias"],
        teacher_logits=teacher,
        chunk_size=4,
    )
    w = torch.randn(mask.shape, dtype=F64)
    got = grads((out.divergence * w).sum(), x)

    student = torch.nn.functional.linear(x["hidden"], x["weight"], x["bias"])
    ref = full_logit_divergence(name, student, teacher, mask, beta, 0.8)
    ref_grads = grads((ref * w).sum(), x)
    assert torch.isfinite(out.divergence).all() and torch.isfinite(ref).all()
    assert out.divergence[0, 1] == 0
    assert_close(out.divergence, ref, **TIGHT)
    for g, r in zip(got, ref_grads, strict=True):
        assert torch.isfinite(g).all()
        assert_close(g, r, **TIGHT)
    if name == "reverse_kl":
        # the student's mass m outside the teacher's top 4 costs about 708 m (the float64
        # floor): sum ps (ls - lt) >= 708 m + sum over ids of x log x (>= -1/e each, 9 ids)
        outside = ((student / 0.8).softmax(-1) * teacher.isinf()).sum(-1)
        assert (out.divergence[mask] >= 708 * outside[mask] - 9 / torch.e).all()
        assert out.divergence[mask].max() > 100


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES[:3])
def test_gradcheck_float64(name, beta):
    x = make_inputs(seed=2, b=2, t=3, h=3, ht=4, v=6)

    def outputs(hidden, weight, bias):
        out = chunked_distillation(
            hidden,
            weight,
            x["t_hidden"],
            x["t_weight"],
            x["mask"],
            name,
            beta=beta,
            temperature=1.3,
            student_bias=bias,
            labels=x["labels"],
            chunk_size=2,
        )
        return out.divergence, out.entropy, out.logprobs

    inputs = (x["hidden"], x["weight"], x["bias"])
    assert torch.autograd.gradcheck(outputs, inputs)
    # the divergence alone: the other outputs' gradients arrive as None
    assert torch.autograd.gradcheck(lambda *a: outputs(*a)[0], inputs)


def test_masked_rows_are_never_computed():
    """NaN hidden states and a -inf teacher on masked rows: zeros out, zero gradient there."""
    x = make_inputs(seed=3)
    mask = x["mask"]
    with torch.no_grad():
        x["hidden"][~mask] = float("nan")
    t_hidden = x["t_hidden"].masked_fill(~mask[..., None], float("nan"))
    out = chunked_distillation(
        x["hidden"], x["weight"], t_hidden, x["t_weight"], mask, "jsd", labels=x["labels"]
    )
    for value in out:
        assert torch.isfinite(value).all() and (value[~mask] == 0).all()
    loss = out.divergence.sum() + out.entropy.sum()
    g_hidden, g_weight = torch.autograd.grad(loss, (x["hidden"], x["weight"]))
    assert torch.isfinite(g_weight).all() and (g_hidden[~mask] == 0).all()
    assert torch.isfinite(g_hidden[mask]).all()


def test_teacher_logits_path_equals_teacher_head_and_takes_bf16():
    x = make_inputs(seed=4)
    args = (x["hidden"], x["weight"])
    teacher = x["t_hidden"] @ x["t_weight"].T
    by_head = chunked_distillation(*args, x["t_hidden"], x["t_weight"], x["mask"], "forward_kl")
    by_logits = chunked_distillation(
        *args, None, None, x["mask"], "forward_kl", teacher_logits=teacher
    )
    assert_close(by_logits.divergence, by_head.divergence, **TIGHT)
    bf16 = teacher.to(torch.bfloat16)
    from_bf16 = chunked_distillation(
        *args, None, None, x["mask"], "forward_kl", teacher_logits=bf16, chunk_size=4
    )
    ref = forward_kl(args[0] @ args[1].T, bf16.to(F64), x["mask"], reduction="none")
    assert_close(from_bf16.divergence, ref, **TIGHT)


def test_jsd_ends_are_the_two_kls():
    x = make_inputs(seed=5)
    args = (x["hidden"], x["weight"], x["t_hidden"], x["t_weight"], x["mask"])
    for beta, kl in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        jsd = chunked_distillation(*args, "jsd", beta=beta).divergence
        assert_close(jsd, chunked_distillation(*args, kl).divergence)


def test_float32_matches_naive_and_logprobs_kernel():
    torch.manual_seed(6)
    n, h, v = 40, 16, 300
    hidden = torch.randn(n, h, requires_grad=True)
    weight = (torch.randn(v, h) * 0.3).requires_grad_()
    t_hidden, t_weight = torch.randn(n, 24), torch.randn(v, 24) * 0.3
    mask, labels = torch.ones(n, dtype=torch.bool), torch.randint(0, v, (n,))
    out = chunked_distillation(
        hidden, weight, t_hidden, t_weight, mask, labels=labels, temperature=0.9, chunk_size=16
    )
    assert out.divergence.dtype == torch.float32
    g = torch.autograd.grad(out.divergence.sum(), (hidden, weight))
    ref = reverse_kl(hidden @ weight.T, t_hidden @ t_weight.T, mask, 0.9, reduction="none")
    g_ref = torch.autograd.grad(ref.sum(), (hidden, weight))
    assert_close(out.divergence, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        assert_close(a, b, atol=1e-5, rtol=1e-4)
    lp, ent = chunked_logprobs_and_entropy(hidden, weight, labels, temperature=0.9)
    assert_close(out.logprobs, lp, atol=1e-5, rtol=1e-5)
    assert_close(out.entropy, ent, atol=1e-5, rtol=1e-5)


def test_saves_no_tokens_by_vocab_tensor():
    """Autograd keeps the inputs and per-token floats; the naive path keeps T x V logits."""
    torch.manual_seed(7)
    n, h, v = 256, 8, 1000
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    t_hidden, t_weight = torch.randn(n, 12), torch.randn(v, 12)
    mask = torch.ones(n, dtype=torch.bool)

    def saved_numel(fn):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return max(sizes)

    kernel = saved_numel(
        lambda: chunked_distillation(hidden, weight, t_hidden, t_weight, mask, chunk_size=32)
    )
    naive = saved_numel(lambda: reverse_kl(hidden @ weight.T, t_hidden @ t_weight.T, mask))
    assert naive >= n * v
    assert kernel == v * h  # the largest saved tensor is the student's weight


def test_distils_a_tiny_qwen3_student_toward_its_teacher():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    def tiny(hidden, seed):
        torch.manual_seed(seed)
        config = Qwen3Config(
            vocab_size=48,
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            intermediate_size=2 * hidden,
            tie_word_embeddings=True,
        )
        return Qwen3ForCausalLM(config)

    student, teacher = tiny(16, 0), tiny(32, 1).eval()
    ids = torch.randint(0, 48, (2, 10))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :3] = False  # a "prompt" that is not distilled
    with torch.no_grad():
        t_hidden = teacher.model(input_ids=ids).last_hidden_state[:, :-1]
        t_logits = teacher(input_ids=ids).logits[:, :-1]

    def divergence():
        hidden = student.model(input_ids=ids).last_hidden_state[:, :-1]
        out = chunked_distillation(
            hidden, student.lm_head.weight, t_hidden, teacher.lm_head.weight, mask, chunk_size=5
        )
        return out.divergence.sum() / mask.sum()

    first = divergence()
    ref = reverse_kl(student(input_ids=ids).logits[:, :-1], t_logits, mask)
    assert_close(first, ref, atol=1e-5, rtol=1e-5)
    opt = torch.optim.Adam(student.parameters(), lr=3e-2)
    for _ in range(10):
        loss = divergence()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert divergence().item() < 0.5 * first.item()


def test_bad_inputs_raise_clear_errors():
    x = make_inputs()
    h, w, th, tw, mask = x["hidden"], x["weight"], x["t_hidden"], x["t_weight"], x["mask"]
    with pytest.raises(ValueError, match="shared vocabulary"):
        chunked_distillation(h, w, th, torch.randn(12, 6, dtype=F64), mask)
    with pytest.raises(ValueError, match="shared vocabulary"):
        chunked_distillation(h, w, None, None, mask, teacher_logits=torch.randn(2, 7, 12))
    with pytest.raises(ValueError, match="not both"):
        chunked_distillation(h, w, th, tw, mask, teacher_logits=torch.randn(2, 7, 11))
    with pytest.raises(ValueError, match="or teacher_logits"):
        chunked_distillation(h, w, None, None, mask)
    with pytest.raises(ValueError, match="teacher_hidden has shape"):
        chunked_distillation(h, w, th[:, :3], tw, mask)
    with pytest.raises(ValueError, match="mask has shape"):
        chunked_distillation(h, w, th, tw, mask[:, :3])
    with pytest.raises(ValueError, match="student_hidden has size 5"):
        chunked_distillation(h, torch.randn(11, 4, dtype=F64), th, tw, mask)
    with pytest.raises(ValueError, match="teacher_bias must have shape"):
        chunked_distillation(h, w, th, tw, mask, teacher_bias=torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="divergence must be one of"):
        chunked_distillation(h, w, th, tw, mask, "kl")
    with pytest.raises(ValueError, match="beta"):
        chunked_distillation(h, w, th, tw, mask, "jsd", beta=1.5)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_distillation(h, w, th, tw, mask, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        chunked_distillation(h, w, th, tw, mask, temperature=0.0)
    labels = x["labels"].masked_fill(~mask, -100)
    chunked_distillation(h, w, th, tw, mask, labels=labels)  # ignore_index where masked: fine
    with pytest.raises(ValueError, match="ignore_index=-100 at a masked-in"):
        chunked_distillation(h, w, th, tw, torch.ones_like(mask), labels=labels)
    with pytest.raises(ValueError, match="outside \\[0, 11\\)"):
        chunked_distillation(h, w, th, tw, mask, labels=labels.masked_fill(mask, 11))


def test_bfloat16_heads_match_bfloat16_logits_upcast():
    torch.manual_seed(8)
    hidden = torch.randn(2, 9, 16, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(40, 16, dtype=torch.bfloat16, requires_grad=True)
    t_hidden, t_weight = torch.randn(2, 9, 24, dtype=torch.bfloat16), torch.randn(40, 24)
    mask = torch.rand(2, 9) > 0.2
    out = chunked_distillation(hidden, weight, t_hidden, t_weight.bfloat16(), mask, chunk_size=5)
    assert out.divergence.dtype == torch.float32
    g = torch.autograd.grad(out.divergence.sum(), (hidden, weight))
    assert g[0].dtype == g[1].dtype == torch.bfloat16
    ref = reverse_kl(hidden @ weight.T, t_hidden @ t_weight.bfloat16().T, mask, reduction="none")
    g_ref = torch.autograd.grad(ref.sum(), (hidden, weight))
    assert_close(out.divergence, ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(g, g_ref, strict=True):  # both round the same float32 gradient to bf16
        assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)
