"""Off-policy strong-to-weak distillation (report section 4.5): the student trains on the
teacher's replies in both ``/think`` and ``/no_think`` modes, with cross-entropy on those tokens
plus a divergence to the teacher's full next-token distribution on the same positions (the
teacher runs frozen beside the student, so its logits need no cache).

This is the first half of distillation: it gives the student the teacher's format, both modes
and a fair share of its accuracy; on-policy distillation then corrects the student's own
mistakes (:class:`~lit_qwen3.stages.on_policy_distillation.OnPolicyDistillation`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lit_qwen3.chat import STOP_THINKING
from lit_qwen3.models import check_same_vocabulary, load_tokenizer
from lit_qwen3.ops.distill_kernel import chunked_distillation
from lit_qwen3.ops.distill_losses import DIVERGENCES, Divergence
from lit_qwen3.ops.logprobs import IGNORE_INDEX, chunked_logprobs_and_entropy
from lit_qwen3.ops.training_forward import batch_hidden_states
from lit_qwen3.runtime.faults import NonFiniteLimits
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages.sft import SupervisedFineTuning


class OffPolicyDistillation(SupervisedFineTuning):
    """SFT on teacher outputs plus a divergence to the frozen teacher's logits.

    Args:
        model: the student (a preset such as ``toy-student``, or a directory).
        teacher: the teacher directory (or preset); same vocabulary as the student.
        ce_weight / kd_weight: weights of the cross-entropy and of the divergence.
        divergence: ``forward_kl`` (default for off-policy: mass covering), ``reverse_kl`` or
            ``jsd`` (``jsd_beta``).
        temperature: softmax temperature of both distributions in the divergence (the
            cross-entropy is always at temperature 1: the plain likelihood of the teacher's tokens).
        Other arguments: as :class:`~lit_qwen3.stages.sft.SupervisedFineTuning`.
    """

    stage: ClassVar[str] = "distill_off_policy"

    def __init__(
        self,
        model: str = "toy-student",
        teacher: str = "toy-teacher",
        tokenizer: str | None = None,
        output_dir: str | None = None,
        optimizer: OptimizerConfig | None = None,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        divergence: Divergence = "forward_kl",
        jsd_beta: float = 0.5,
        temperature: float = 1.0,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        thinking_budget: int | None = None,
        stop_thinking: str = STOP_THINKING,
        allow_download: bool = False,
        nonfinite: NonFiniteLimits | None = None,
    ) -> None:
        super().__init__(
            model=model,
            tokenizer=tokenizer,
            output_dir=output_dir,
            optimizer=optimizer,
            dtype=dtype,
            attn_implementation=attn_implementation,
            gradient_checkpointing=gradient_checkpointing,
            seed=seed,
            thinking_budget=thinking_budget,
            stop_thinking=stop_thinking,
            allow_download=allow_download,
            nonfinite=nonfinite,
        )
        self.save_hyperparameters()
        if ce_weight < 0 or kd_weight < 0 or ce_weight + kd_weight == 0:
            raise ValueError(
                f"need ce_weight, kd_weight >= 0, not both 0; got {ce_weight}, {kd_weight}"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
        check_same_vocabulary(
            self.tokenizer, load_tokenizer(teacher, allow_download=allow_download)
        )
        object.__setattr__(self, "teacher", None)  # frozen: not a submodule

    def build_model(self) -> torch.nn.Module:
        student = super().build_model()
        if self.teacher is None:
            object.__setattr__(self, "teacher", self.load_frozen(self.hparams.teacher))
        return student

    def frozen_models(self) -> list[torch.nn.Module]:
        return [self.teacher] if self.teacher is not None else []

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """CE on the teacher's tokens plus the divergence to its distribution at the same
        positions, both from the chunked kernel (no B x T x V logits for either model)."""
        hp = self.hparams
        extra = {k: batch[k] for k in ("position_ids", "attention_mask") if k in batch}
        student = batch_hidden_states(self.model, batch["input_ids"], **extra)
        with torch.no_grad():
            teacher = batch_hidden_states(self.teacher, batch["input_ids"], **extra)
        labels = batch["input_ids"][:, 1:]
        mask = batch["labels"][:, 1:] != -100
        if "position_ids" in extra:  # a packed row: never predict a document from the previous
            mask = mask & (extra["position_ids"][:, 1:] != 0)
        tokens = mask.sum()
        if tokens == 0:
            raise ValueError("a batch without assistant tokens: nothing to distil")
        student_head = self.model.get_output_embeddings()
        teacher_head = self.teacher.get_output_embeddings()
        terms = chunked_distillation(
            student[:, :-1],
            student_head.weight,
            teacher[:, :-1],
            teacher_head.weight,
            mask,
            hp.divergence,
            beta=hp.jsd_beta,
            temperature=hp.temperature,
            student_bias=getattr(student_head, "bias", None),
            teacher_bias=getattr(teacher_head, "bias", None),
            labels=labels,
        )
        logprobs = terms.logprobs
        if hp.temperature != 1.0 and hp.ce_weight > 0:
            # The temperature belongs to the divergence: the cross-entropy on the teacher's
            # tokens is the plain likelihood (one more chunked pass over the vocabulary).
            logprobs, _ = chunked_logprobs_and_entropy(
                student[:, :-1],
                student_head.weight,
                labels.masked_fill(~mask, IGNORE_INDEX),
                bias=getattr(student_head, "bias", None),
            )
        ce = -(logprobs * mask).sum() / tokens
        kd = terms.divergence.sum() / tokens
        self._last_parts = {"ce": ce.detach(), "kd": kd.detach()}
        return hp.ce_weight * ce + hp.kd_weight * kd, tokens

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train/ce", self._last_parts["ce"])
        self.log("train/divergence", self._last_parts["kd"])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self.log("val/divergence", self._last_parts["kd"], sync_dist=True)
