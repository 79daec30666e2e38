"""Model loading: presets, local directories, Qwen3 names without the network, clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_qwen3.models import (
    QWEN3_MODELS,
    TOY_PRESETS,
    count_parameters,
    load_model,
    load_tokenizer,
    resolve_attn_implementation,
    save_toy_checkpoint,
)


def test_toy_presets_are_small_and_the_student_about_four_times_smaller():
    teacher = count_parameters(load_model("toy-teacher"))
    student = count_parameters(load_model("toy-student"))
    assert 0.4e6 <= teacher <= 1.0e6
    assert 0.1e6 <= student <= 0.25e6
    assert 3.0 <= teacher / student <= 5.0


def test_seed_makes_the_random_init_reproducible():
    a, b = load_model("toy-student", seed=3), load_model("toy-student", seed=3)
    c = load_model("toy-student", seed=4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_saved_checkpoint_reloads_with_transformers(tmp_path):
    directory = save_toy_checkpoint(tmp_path / "student", seed=1)
    ours = load_model(directory)
    theirs = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    ids = tokenizer("<|im_start|>user\n12+34<|im_end|>", return_tensors="pt")["input_ids"]
    expected = load_model("toy-student", seed=1)(ids).logits
    torch.testing.assert_close(ours(ids).logits, expected)
    torch.testing.assert_close(theirs(ids).logits, expected)
    assert load_tokenizer(directory).chat_template == tokenizer.chat_template


def test_dtype_attention_and_gradient_checkpointing(tmp_path):
    model = load_model("toy-student", dtype="bfloat16", gradient_checkpointing=True)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.config.use_cache is False
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_model("toy-student", dtype="fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_flash_attention_is_refused_without_cuda():
    assert resolve_attn_implementation() == "sdpa"
    with pytest.raises(ValueError, match="needs CUDA and the flash-attn package"):
        load_model("toy-student", attn_implementation="flash_attention_2")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'toy-giant'") as error:
        load_model("toy-giant")
    for name in [*TOY_PRESETS, *QWEN3_MODELS]:
        assert name in str(error.value)


def test_missing_directory_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_model(tmp_path / "nope" / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model(tmp_path / "empty")


def test_qwen3_names_never_download_silently(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(FileNotFoundError, match="downloads are off") as error:
        load_model("qwen3-0.6b")
    assert "Qwen/Qwen3-0.6B" in str(error.value)
    with pytest.raises(FileNotFoundError, match="allow_download=True"):
        load_tokenizer("Qwen/Qwen3-8B")


def test_vocab_size_only_for_presets(tmp_path):
    assert load_model("toy-student", vocab_size=512).config.vocab_size == 512
    directory = save_toy_checkpoint(tmp_path / "m")
    with pytest.raises(ValueError, match="tiny presets only"):
        load_model(directory, vocab_size=512)


def test_tokenizer_without_chat_template_is_refused(tmp_path, toy_tokenizer):
    toy_tokenizer.save_pretrained(tmp_path)
    bare = AutoTokenizer.from_pretrained(tmp_path)
    bare.chat_template = None
    bare.save_pretrained(tmp_path / "bare")
    (tmp_path / "bare" / "chat_template.jinja").unlink(missing_ok=True)
    (tmp_path / "bare" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="has no chat template"):
        load_tokenizer(tmp_path / "bare")
