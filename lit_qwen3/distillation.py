"""What both distillation stages check first: that teacher and student share a vocabulary.

Strong-to-weak distillation (report section 4.5) compares the student's next-token distribution
with the teacher's at every position, so both must index the same vocabulary: a teacher and a
student from different tokenizers would compare unrelated words without any error. The check
names the first ids that differ.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_same_vocabulary"]


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
