"""Off-policy distillation data (report section 4.5): the teacher's own replies in both modes.

``TeacherOutputsDataModule`` asks the teacher (a model directory) for replies to the toy task's
queries, in thinking mode for ``think_share`` of them and non-thinking mode for the rest,
``samples`` tries each, keeps the first verified one, and trains the student on them like any
conversation data (assistant tokens only). Or it reads the teacher's outputs from ``data``
(JSONL conversations). The stage (:class:`~lit_qwen3.stages.OffPolicyDistillation`) adds the
divergence to the teacher's logits on the same tokens.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from transformers import PreTrainedTokenizerBase

from lit_qwen3.datamodules.conversations import ConversationDataModule, validate_conversation
from lit_qwen3.datamodules.fusion import rejection_sample

__all__ = ["TeacherOutputsDataModule"]


class TeacherOutputsDataModule(ConversationDataModule):
    """Teacher replies in both modes as SFT data; batching arguments as the parent's.

    Args:
        tokenizer: the student's tokenizer (linked from the model by the CLI).
        teacher: the teacher's directory (generates the replies); ignored with ``data``.
        data: JSONL of teacher conversations instead of generating them.
        queries: toy queries to ask the teacher (train and validation).
        think_share: share asked in thinking mode (the rest with ``/no_think``).
        samples: tries per query; the first verified reply is kept.
        max_new_tokens: reply length limit.
        verify: keep only correct replies (the toy task's checker).
        toy_min_digits / toy_max_digits / toy_mul_fraction: the toy queries.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase = "toy",
        teacher: str | None = None,
        data: str | None = None,
        queries: int = 4000,
        think_share: float = 0.5,
        samples: int = 2,
        max_new_tokens: int = 128,
        verify: bool = True,
        toy_min_digits: int = 2,
        toy_max_digits: int = 4,
        toy_mul_fraction: float = 0.25,
        max_tokens_per_batch: int = 4096,
        max_length: int = 256,
        packing: bool = False,
        val_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            tokenizer=tokenizer,
            data=data,
            max_tokens_per_batch=max_tokens_per_batch,
            max_length=max_length,
            packing=packing,
            val_size=val_size,
            num_workers=num_workers,
            seed=seed,
            toy_min_digits=toy_min_digits,
            toy_max_digits=toy_max_digits,
            toy_mul_fraction=toy_mul_fraction,
            verifier="arithmetic",
        )
        if data is None and teacher is None:
            raise ValueError("set `teacher` (a model directory) or `data` (its outputs as JSONL)")
        if not 0.0 < think_share < 1.0:
            raise ValueError(
                f"think_share must be in (0, 1): the report distills both modes, got {think_share}"
            )
        self.hparams.update(
            teacher=teacher,
            queries=queries,
            think_share=think_share,
            samples=samples,
            max_new_tokens=max_new_tokens,
            verify=verify,
        )
        self.kept: dict[str, float] = {}

    def teacher_rows(self, split: str, n: int) -> list[dict[str, Any]]:
        from lit_qwen3.datamodules.arithmetic import ArithmeticTask

        hp = self.hparams
        task = ArithmeticTask(
            seed=hp.seed,
            min_digits=hp.toy_min_digits,
            max_digits=hp.toy_max_digits,
            mul_fraction=hp.toy_mul_fraction,
        )
        problems = task.problems(n, split)
        n_think = round(n * hp.think_share)
        rows = []
        for thinking, chunk in ((True, problems[:n_think]), (False, problems[n_think:])):
            queries = [
                {"messages": task.prompt(p, thinking=thinking), "answer": str(p.answer)}
                for p in chunk
            ]
            if not queries:
                continue
            kept, counts = rejection_sample(
                hp.teacher,
                queries,
                samples=hp.samples,
                max_new_tokens=hp.max_new_tokens,
                thinking=thinking,
                verifier="arithmetic" if hp.verify else None,
                seed=hp.seed,
            )
            mode = "think" if thinking else "no_think"
            self.kept[f"{split}/{mode}_kept"] = counts["kept"] / max(counts["queries"], 1)
            rows += kept
        if not rows:
            raise ValueError(f"the teacher {hp.teacher} gave no verified {split} reply")
        return rows

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        hp = self.hparams
        if hp.data is not None:
            return super().load_rows()
        val = self.teacher_rows("val", hp.val_size) if hp.val_size else []
        train = self.teacher_rows("train", hp.queries - hp.val_size)
        rank_zero_info(f"[distillation] teacher replies kept: {self.kept}")
        return (
            [validate_conversation(r, f"teacher train row {i}") for i, r in enumerate(train)],
            [validate_conversation(r, f"teacher val row {i}") for i, r in enumerate(val)],
        )
