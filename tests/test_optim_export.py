"""Learning-rate schedule, AdamW groups, and the atomic Hugging Face export."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lit_qwen3.models import load_model
from lit_qwen3.runtime.export import export_pretrained
from lit_qwen3.runtime.optim import OptimizerConfig, configure_adamw, warmup_cosine


def test_warmup_cosine_by_hand():
    kw = dict(warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    # warmup: (step + 1) / (warmup + 1) -> 0.2, 0.4, 0.6, 0.8
    assert [warmup_cosine(s, **kw) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    # decay over 10 steps: 0.1 + 0.9 * 0.5 * (1 + cos(pi * p))
    assert warmup_cosine(4, **kw) == pytest.approx(1.0)
    assert warmup_cosine(9, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(14, **kw) == pytest.approx(0.1)
    assert warmup_cosine(99, **kw) == pytest.approx(0.1)  # clamped after the schedule


def test_adamw_skips_decay_on_norms_and_follows_the_schedule():
    model = load_model("toy-student")
    config = OptimizerConfig(lr=1e-2, warmup_steps=1, min_lr_ratio=0.0)
    setup = configure_adamw(model, config, total_steps=3)
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    decay, no_decay = optimizer.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.01
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([5e-3, 1e-2, 5e-3])


def test_adamw_is_fused_on_plain_parameters_and_updates_as_the_loop():
    """None picks the fused kernel for plain CPU parameters; it takes the same steps as the
    per-parameter loop (``fused=False``), up to rounding."""
    models = [load_model("toy-student", seed=0) for _ in range(2)]
    optimizers = [
        configure_adamw(m, OptimizerConfig(lr=1e-2, warmup_steps=0, fused=fused), 5)["optimizer"]
        for m, fused in zip(models, (None, False), strict=True)
    ]
    assert [o.defaults["fused"] for o in optimizers] == [True, None]
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    for fused, loop in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(fused, loop, atol=1e-6, rtol=1e-5)
    moved = (
        models[0].state_dict()["model.norm.weight"]
        - load_model("toy-student", seed=0).state_dict()["model.norm.weight"]
    )
    assert moved.abs().max() > 1e-3  # the steps did change the weights


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, "optimizer.lr must be > 0"),
        ("betas", (0.9, 1.0), "optimizer.betas"),
        ("warmup_steps", -1, "warmup_steps must be >= 0"),
        ("min_lr_ratio", 2.0, "min_lr_ratio"),
        ("fused", "yes", "optimizer.fused must be true, false or null"),
    ],
)
def test_bad_optimizer_settings_name_the_key(field, value, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**{field: value})


def test_export_replaces_the_directory_atomically(tmp_path, toy_tokenizer):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("from an older run")
    model = load_model("toy-student", seed=2)
    export_pretrained(model, toy_tokenizer, target)
    assert not (target / "stale.txt").exists()
    assert not (tmp_path / "model.partial").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(target)
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    assert (target / "tokenizer_config.json").exists()


def test_export_restores_inference_settings(tmp_path, toy_tokenizer):
    model = load_model("toy-student", gradient_checkpointing=True)  # turns use_cache off
    assert model.config.use_cache is False
    export_pretrained(model, toy_tokenizer, tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["use_cache"] is True  # generate() on the export uses the KV cache
    assert model.config.use_cache is False  # training goes on as it was
