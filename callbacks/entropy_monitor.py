"""``EntropyMonitor``: the policy's token entropy on every RL update, and optional control of it.

The report keeps entropy "increasing steadily or stable" during reasoning RL (section 4.2):
collapsing entropy means the policy stopped exploring, so later groups carry no signal. This
callback measures the entropy the training forward already computed (no extra pass), split by
span (thinking tokens, answer tokens) and by mode (``think``, ``no_think``), averaged over ranks
with torchmetrics, and logs ``train/entropy/{span}`` and ``train/entropy/{mode}/{span}``.

Control (``control`` not ``none``): after each step, when the watched entropy leaves the band
``[target_low, target_high]`` (or, with ``rise_per_step``, falls below a floor rising from the
first value by that much per step), the callback nudges the module's loss config: the entropy
bonus coefficient (``loss_config.entropy_coef``, within ``[0, max_entropy_coef]``) and/or the
upper clip (``loss_config.eps_high``, clip-higher, within ``[eps_low, max_eps_high]``). Every
change is logged (``entropy_control/...``) and kept in the callback's state, so a resumed run
continues with the same settings.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_qwen3.ops.metrics import MeanTokenEntropy
from lit_qwen3.runtime.tracking import log_metrics

SPANS = ("thinking", "answer", "all")
MODES = {"think": True, "no_think": False}


class EntropyMonitor(Callback):
    """Log per-update policy entropy by span and mode; optionally keep it in a band.

    Args:
        watch: the span the control looks at: ``thinking``, ``answer`` or ``all``.
        control: ``none``, ``entropy_coef``, ``clip_higher`` or ``both``.
        target_low / target_high: the band (nats per token) for the watched entropy.
        rise_per_step: instead of a fixed low bound, require the entropy to stay above its first
            value plus this much per step (0: use ``target_low``).
        coef_step / max_entropy_coef: how much one adjustment changes the bonus, and its cap.
        eps_step / max_eps_high: how much one adjustment raises ``eps_high``, and its cap.
    """

    def __init__(
        self,
        watch: Literal["thinking", "answer", "all"] = "all",
        control: Literal["none", "entropy_coef", "clip_higher", "both"] = "none",
        target_low: float = 0.3,
        target_high: float = 2.0,
        rise_per_step: float = 0.0,
        coef_step: float = 1e-3,
        max_entropy_coef: float = 0.01,
        eps_step: float = 0.01,
        max_eps_high: float = 0.4,
    ) -> None:
        if watch not in SPANS:
            raise ValueError(f"watch must be one of {SPANS}, got {watch!r}")
        if control not in ("none", "entropy_coef", "clip_higher", "both"):
            raise ValueError(
                f"control must be 'none', 'entropy_coef', 'clip_higher' or 'both', got {control!r}"
            )
        if not 0 <= target_low < target_high:
            raise ValueError(f"need 0 <= target_low < target_high, got {target_low}, {target_high}")
        for name, value in (("coef_step", coef_step), ("eps_step", eps_step)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.watch, self.control = watch, control
        self.target_low, self.target_high = target_low, target_high
        self.rise_per_step = rise_per_step
        self.coef_step, self.max_entropy_coef = coef_step, max_entropy_coef
        self.eps_step, self.max_eps_high = eps_step, max_eps_high
        self.first: float | None = None
        self.steps = 0
        self.entropy_coef: float | None = None
        """The coefficient the control set last (None: never touched)."""
        self.eps_high: float | None = None
        self.changes: list[dict[str, float]] = []

    # -- measuring --------------------------------------------------------------------------
    def measure(self, records: list[dict[str, Any]], device: torch.device) -> dict[str, float]:
        """Mean entropy per span and per (mode, span), synced over ranks."""
        metrics: dict[str, MeanTokenEntropy] = {}

        def update(key: str, entropy: torch.Tensor, mask: torch.Tensor) -> None:
            metric = metrics.setdefault(key, MeanTokenEntropy().to(device))
            metric.update(entropy.float(), mask)

        for record in records:
            spans = {
                "thinking": record["thinking_span"],
                "answer": record["answer_span"],
                "all": record["thinking_span"] | record["answer_span"],
            }
            for span, mask in spans.items():
                update(span, record["entropy"], mask)
                for mode, thinking in MODES.items():
                    rows = (record["thinking_mode"] == thinking)[:, None]
                    update(f"{mode}/{span}", record["entropy"], mask & rows)
        values = {f"train/entropy/{key}": float(m.compute()) for key, m in metrics.items()}
        return {key: value for key, value in values.items() if value == value}  # no NaN: no tokens

    # -- controlling ------------------------------------------------------------------------
    def low_bound(self, value: float) -> float:
        if self.rise_per_step <= 0:
            return self.target_low
        if self.first is None:
            self.first = value
        return self.first + self.rise_per_step * self.steps

    def adjust(self, pl_module: LightningModule, value: float) -> dict[str, float]:
        config = getattr(pl_module, "loss_config", None)
        if config is None or not hasattr(config, "entropy_coef"):
            raise AttributeError(
                f"EntropyMonitor(control={self.control!r}) needs a module with a GRPO "
                f"`loss_config`; {type(pl_module).__name__} has none"
            )
        low = self.low_bound(value)
        direction = 1 if value < low else -1 if value > self.target_high else 0
        changed: dict[str, float] = {}
        if direction and self.control in ("entropy_coef", "both"):
            coef = min(
                max(config.entropy_coef + direction * self.coef_step, 0.0), self.max_entropy_coef
            )
            if coef != config.entropy_coef:
                config.entropy_coef = changed["entropy_control/entropy_coef"] = coef
        if direction and self.control in ("clip_higher", "both"):
            eps = min(
                max(config.eps_high + direction * self.eps_step, config.eps_low), self.max_eps_high
            )
            if eps != config.eps_high:
                config.eps_high = changed["entropy_control/eps_high"] = eps
        if changed:
            self.entropy_coef, self.eps_high = config.entropy_coef, config.eps_high
            self.changes.append({"step": float(pl_module.global_step), "entropy": value, **changed})
            rank_zero_info(
                f"EntropyMonitor: {self.watch} entropy {value:.3f} outside [{low:.3f}, "
                f"{self.target_high:.3f}] at step {pl_module.global_step}: set "
                + ", ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in changed.items())
            )
        return changed

    # -- hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        config = getattr(pl_module, "loss_config", None)
        if config is not None:  # a resumed run continues with the settings the control chose
            if self.entropy_coef is not None:
                config.entropy_coef = self.entropy_coef
            if self.eps_high is not None:
                config.eps_high = self.eps_high

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        records = outputs.get("entropy_records") if isinstance(outputs, dict) else None
        if not records:
            return
        metrics = self.measure(records, pl_module.device)
        self.steps += 1
        watched = metrics.get(f"train/entropy/{self.watch}")
        if self.control != "none" and watched is not None:
            metrics.update(self.adjust(pl_module, watched))
        log_metrics(trainer, without_repeats(metrics, "train/entropy" in trainer.callback_metrics))

    def state_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "steps": self.steps,
            "entropy_coef": self.entropy_coef,
            "eps_high": self.eps_high,
            "changes": self.changes,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, value in state_dict.items():
            setattr(self, key, value)


def without_repeats(metrics: dict[str, float], stage_logs_entropy: bool) -> dict[str, float]:
    """The metrics to log, none a copy of another: a mode's span when the other mode has none of
    it this step (``think/thinking`` always; ``think/answer`` in a thinking-only run) is the
    span's own value, and ``all`` is the stage's ``train/entropy`` when the stage logs that."""
    out = dict(metrics)
    for key in metrics:
        parts = key.split("/")
        if len(parts) == 4 and parts[2] in MODES:
            other = "no_think" if parts[2] == "think" else "think"
            if f"train/entropy/{other}/{parts[3]}" not in metrics:
                out.pop(key)
    if stage_logs_entropy:
        out.pop("train/entropy/all", None)
    return out
