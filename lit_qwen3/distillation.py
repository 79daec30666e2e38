"""What both distillation stages share: the shared-vocabulary check and the divergence choice.

Strong-to-weak distillation (report section 4.5) compares the student's next-token distribution
with the teacher's at every position, so both must index the same vocabulary: a teacher and a
student from different tokenizers would compare unrelated words without any error. The check
names the first ids that differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from lit_qwen3.distill_losses import (  # noqa: F401  (Divergence re-exported for the stages)
    DIVERGENCES,
    Divergence,
    forward_kl,
    generalized_jsd,
    reverse_kl,
)


def check_same_vocabulary(student: Any, teacher: Any, *, limit: int = 5) -> None:
    """Raise ``ValueError`` naming the first mismatching ids when two tokenizers differ."""
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    if s_vocab == t_vocab:
        return
    s_by_id = {i: tok for tok, i in s_vocab.items()}
    t_by_id = {i: tok for tok, i in t_vocab.items()}
    ids = sorted(set(s_by_id) | set(t_by_id))
    diffs = [
        f"id {i}: student {s_by_id.get(i)!r}, teacher {t_by_id.get(i)!r}"
        for i in ids
        if s_by_id.get(i) != t_by_id.get(i)
    ]
    raise ValueError(
        f"teacher and student tokenizers differ ({len(s_vocab)} vs {len(t_vocab)} tokens, "
        f"{len(diffs)} ids differ; first: {'; '.join(diffs[:limit])}): distillation needs a "
        "shared vocabulary"
    )


def make_divergence(name: Divergence, beta: float = 0.5) -> Callable[..., Tensor]:
    """``fn(student_logits, teacher_logits, mask, temperature, reduction)`` for ``name``."""
    if name == "reverse_kl":
        return reverse_kl
    if name == "forward_kl":
        return forward_kl
    if name == "jsd":

        def jsd(student_logits, teacher_logits, mask, temperature=1.0, reduction="mean"):
            return generalized_jsd(
                student_logits, teacher_logits, mask, beta, temperature, reduction
            )

        return jsd
    raise ValueError(f"divergence must be one of {DIVERGENCES}, got {name!r}")
