"""The training forward: row layouts without masks, the lean Qwen3 forward against the Hugging
Face one, and re-scoring on every path against the naive masked forward with full logits."""

from __future__ import annotations

import pytest
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.models import enable_gradient_checkpointing, load_model
from lit_qwen3.ops.training_forward import (
    causal_hidden_states,
    lean_forward_supported,
    pack_rows,
    packed_hidden_states,
    qwen3_hidden_states,
    right_align,
    trailing_padding_only,
    unpack_documents,
)
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.rollout.rescoring import score_completions


def test_right_align_moves_left_padding_to_the_end():
    ids = torch.tensor([[0, 0, 5, 6, 7, 0], [0, 8, 9, 1, 2, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]])
    # row 0 shifts by 2, row 1 by 1; one column is unused by every row afterwards
    assert right_align(ids, mask, pad_token_id=-1).tolist() == [
        [5, 6, 7, -1, -1],
        [8, 9, 1, 2, 3],
    ]


def test_trailing_padding_only():
    assert trailing_padding_only(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not trailing_padding_only(torch.tensor([[0, 1, 1], [1, 1, 1]]))  # left padding
    assert not trailing_padding_only(torch.tensor([[1, 0, 1]]))  # a hole


def test_pack_rows_restarts_positions():
    ids, positions, mask = pack_rows(
        torch.tensor([[1, 2, 0], [3, 0, 0]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    )
    assert ids.tolist() == [[1, 2, 3]] and positions.tolist() == [[0, 1, 0]]
    assert mask.tolist() == [[True, True, False], [True, False, False]]


@pytest.fixture()
def model():
    return load_model("toy-teacher", seed=0)


def test_lean_forward_equals_the_hf_forward_values_and_gradients(model):
    ids = torch.randint(
        0, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0)
    )
    probe = torch.randn(3, 17, model.config.hidden_size)
    ours = qwen3_hidden_states(model, ids)
    (ours * probe).sum().backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    theirs = model.model(input_ids=ids).last_hidden_state
    (theirs * probe).sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ours_grads[name], param.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_lean_forward_only_where_it_is_exact(model):
    assert lean_forward_supported(model)
    hooked = load_model("toy-teacher", seed=0)
    hooked.model.layers[0].register_forward_hook(lambda *a: None)
    assert not lean_forward_supported(hooked)
    checkpointed = load_model("toy-teacher", seed=0)
    enable_gradient_checkpointing(checkpointed)
    assert not lean_forward_supported(checkpointed)
    eager = load_model("toy-teacher", seed=0, attn_implementation="eager")
    assert not lean_forward_supported(eager)


def _naive_scores(model, r, temperature):
    """The obvious way: left-padded rows, the 4D mask, full logits, slicing by hand."""
    logits = model(
        input_ids=r.sequences(), attention_mask=r.attention_mask(), position_ids=r.position_ids()
    ).logits
    width = r.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, width - 1 : -1].float() / temperature, -1)
    return logp.gather(-1, r.completion_ids[..., None]).squeeze(-1) * r.completion_mask


@pytest.mark.parametrize("path", ["lean", "hf", "packed"])
def test_rescoring_equals_the_naive_masked_forward(toy_tokenizer, model, path):
    prompts = [
        toy_tokenizer(f"<|im_start|>user\n{'7' * i}+{i}<|im_end|>\n<|im_start|>assistant\n")[
            "input_ids"
        ]
        for i in (1, 4, 9, 2)
    ]
    sampler = RolloutSampler(toy_tokenizer, SamplingConfig(max_new_tokens=12, temperature=0.7))
    r = sampler.sample(model, prompts, seeds=[1, 2, 3, 4])
    assert r.prompt_mask.float().mean() < 1  # prompts of different lengths: left padding
    naive = _naive_scores(model, r, 0.7)
    (naive.sum()).backward()
    naive_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    if path == "hf":  # a hook makes the lean forward step aside: the model's own, unmasked
        model.model.layers[0].register_forward_hook(lambda *a: None)
    if path == "packed":
        import lit_qwen3.rollout.rescoring as rescoring

        original = rescoring.causal_hidden_states
        rescoring.causal_hidden_states = lambda *a, **k: original(*a, **{**k, "packed": True})
    try:
        scores = score_completions(model, r, temperature=0.7)
    finally:
        if path == "packed":
            rescoring.causal_hidden_states = original
    torch.testing.assert_close(scores.logprobs, naive, rtol=1e-4, atol=1e-5)
    scores.logprobs.sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, naive_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_packed_rows_need_lengths(model):
    with pytest.raises(ValueError, match="length"):
        causal_hidden_states(model, torch.zeros(2, 3, dtype=torch.long), packed=True)


def test_unpack_documents_inverts_pack_rows():
    rows = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 0, 0]])
    ids, positions, _ = pack_rows(rows, rows != 0)
    docs = unpack_documents(ids, positions)
    assert docs.rows.tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert docs.lengths.tolist() == [3, 1, 2]
    assert docs.rows[docs.document, docs.offset].tolist() == ids[0].tolist()
    # every packed row starts a document, even where its positions do not restart at 0
    two = unpack_documents(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [7, 0]]))
    assert two.rows.tolist() == [[1, 2], [3, 0], [4, 0]]
    with pytest.raises(ValueError, match="position_ids"):
        unpack_documents(ids, positions[:, 1:])


@pytest.mark.parametrize("packs", [1, 2])
def test_packed_documents_see_only_themselves(model, packs):
    """Packed documents (position_ids restart) give each document's own forward, in values
    and gradients."""
    torch.manual_seed(0)
    documents = [torch.randint(0, model.config.vocab_size, (n,)) for n in (5, 9, 1, 7)]
    ids = torch.cat(documents).view(packs, -1)
    positions = torch.cat([torch.arange(len(d)) for d in documents]).view(packs, -1)
    if packs == 2:  # the second pack opens mid-document: that part is a document of its own
        documents = [documents[0], documents[1][:6], documents[1][6:], *documents[2:]]
    probe = torch.randn(*ids.shape, model.config.hidden_size)
    ours = packed_hidden_states(model, ids, positions)
    (ours * probe).sum().backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    alone = torch.cat([model.model(input_ids=d[None]).last_hidden_state[0] for d in documents])
    (alone * probe.view(-1, probe.shape[-1])).sum().backward()
    torch.testing.assert_close(ours.view(-1, ours.shape[-1]), alone, rtol=0, atol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ours_grads[name], param.grad, rtol=1e-4, atol=1e-3, msg=name)
