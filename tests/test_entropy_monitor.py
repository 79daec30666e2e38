"""EntropyMonitor: exact span/mode averages, and the control that keeps entropy in a band."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lit_qwen3.callbacks import EntropyMonitor
from lit_qwen3.callbacks.entropy_monitor import without_repeats
from lit_qwen3.ops.losses import GRPOLossConfig


def _record():
    # Two rows, four tokens. Row 0 (think mode): tokens 0-1 thinking, 2-3 answer.
    # Row 1 (no_think mode): tokens 0-2 answer, token 3 padding.
    entropy = torch.tensor([[1.0, 3.0, 0.5, 0.5], [2.0, 2.0, 5.0, 9.0]])
    thinking = torch.tensor([[True, True, False, False], [False, False, False, False]])
    answer = torch.tensor([[False, False, True, True], [True, True, True, False]])
    return {
        "entropy": entropy,
        "thinking_span": thinking,
        "answer_span": answer,
        "thinking_mode": torch.tensor([True, False]),
    }


def test_entropy_is_averaged_per_span_and_mode():
    metrics = EntropyMonitor().measure([_record(), _record()], torch.device("cpu"))
    assert metrics["train/entropy/thinking"] == pytest.approx(2.0)  # (1 + 3) / 2
    assert metrics["train/entropy/answer"] == pytest.approx((0.5 + 0.5 + 2 + 2 + 5) / 5)
    assert metrics["train/entropy/all"] == pytest.approx((1 + 3 + 0.5 + 0.5 + 2 + 2 + 5) / 7)
    assert metrics["train/entropy/think/answer"] == pytest.approx(0.5)
    assert metrics["train/entropy/no_think/answer"] == pytest.approx(3.0)
    assert "train/entropy/no_think/thinking" not in metrics  # no such tokens: no NaN logged


def test_logged_entropy_repeats_no_other_series():
    both = EntropyMonitor().measure([_record()], torch.device("cpu"))
    logged = without_repeats(both, stage_logs_entropy=False)
    assert "train/entropy/think/thinking" not in logged  # only thinking mode thinks: = thinking
    assert {"train/entropy/think/answer", "train/entropy/no_think/answer"} <= set(logged)
    record = _record()
    record["thinking_mode"] = torch.tensor([True, True])  # one mode: its spans are the spans
    one = without_repeats(EntropyMonitor().measure([record], torch.device("cpu")), True)
    assert not [k for k in one if "/think/" in k or "/no_think/" in k]
    assert "train/entropy/all" not in one and "train/entropy/answer" in one  # the stage's


def _module(step: int = 0):
    return SimpleNamespace(loss_config=GRPOLossConfig(), global_step=step)


def test_control_raises_the_bonus_and_clip_below_the_band_and_lowers_them_above():
    monitor = EntropyMonitor(
        control="both",
        target_low=1.0,
        target_high=2.0,
        coef_step=0.002,
        max_entropy_coef=0.003,
        eps_step=0.05,
        max_eps_high=0.35,
    )
    module = _module()
    assert monitor.adjust(module, 0.5) == {
        "entropy_control/entropy_coef": pytest.approx(0.002),
        "entropy_control/eps_high": pytest.approx(0.33),
    }
    monitor.adjust(module, 0.5)  # capped at the maxima
    assert module.loss_config.entropy_coef == pytest.approx(0.003)
    assert module.loss_config.eps_high == pytest.approx(0.35)
    assert monitor.adjust(module, 1.5) == {}  # inside the band: nothing changes
    monitor.adjust(module, 3.0)
    assert module.loss_config.entropy_coef == pytest.approx(0.001)
    assert module.loss_config.eps_high == pytest.approx(0.30)
    assert len(monitor.changes) == 3

    # The state survives a resume and is applied to the new module at train start.
    restored = EntropyMonitor(control="both")
    restored.load_state_dict(monitor.state_dict())
    fresh = _module()
    restored.on_train_start(None, fresh)
    assert fresh.loss_config.entropy_coef == pytest.approx(0.001)
    assert fresh.loss_config.eps_high == pytest.approx(0.30)


def test_rising_floor_follows_the_first_value():
    monitor = EntropyMonitor(control="entropy_coef", rise_per_step=0.1, target_high=10.0)
    module = _module()
    monitor.steps = 0
    assert monitor.adjust(module, 1.0) == {}  # the first value sets the floor
    monitor.steps = 5  # floor is now 1.5
    assert "entropy_control/entropy_coef" in monitor.adjust(module, 1.2)


def test_control_needs_a_grpo_module_and_bad_settings_are_rejected():
    with pytest.raises(AttributeError, match="loss_config"):
        EntropyMonitor(control="entropy_coef").adjust(SimpleNamespace(global_step=0), 0.1)
    with pytest.raises(ValueError, match="watch"):
        EntropyMonitor(watch="prompt")
    with pytest.raises(ValueError, match="target_low < target_high"):
        EntropyMonitor(target_low=2.0, target_high=1.0)
