"""Off-policy distillation: the temperature softens the divergence only; the cross-entropy on
the teacher's tokens is the student's plain likelihood (temperature 1), as the docstring says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.stages import OffPolicyDistillation


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_cross_entropy_is_at_temperature_one(temperature):
    module = OffPolicyDistillation(
        "toy-student", teacher="toy-teacher", temperature=temperature, seed=0
    )
    module.configure_model()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, module.model.config.vocab_size, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt
    labels[1, 9:] = -100  # a shorter reply
    with torch.no_grad():
        module._loss({"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)})
        logits = module.model(input_ids=ids).logits[:, :-1]
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(module._last_parts["ce"], expected, rtol=1e-5, atol=1e-6)
    tempered = F.cross_entropy(
        (logits / 2.0).reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    )
    assert not torch.isclose(tempered, expected)  # the test can tell the two apart
