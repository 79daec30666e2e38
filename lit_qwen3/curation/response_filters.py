"""The report's six response filters (section 4.1): each a pure function, text in, verdict out.

Responses that (1) have a wrong final answer, (2) repeat substantially, (3) guess without
adequate reasoning, (4) disagree between thinking and summary, (5) mix languages or scripts,
(6) look too similar to validation items are removed. The dataclass beside each function holds
its thresholds as YAML sets them (``responses.filters.<name>``); defaults are chosen to hold for
the toy scratchpads and for real chains of thought alike (each docstring says why).

How these depart from the report, which gives criteria but no measures:

1. Correctness is the query's reward (``rewards``), exactly as RL would score it.
2. Repetition is the share of repeated word 4-grams, not a judgement of a model.
3. "Guessing" is measured against the query's own responses: thinking far shorter than the
   median of the query's surviving responses, or a hedge ("probably") where the thinking
   concludes. The report's judgement of "adequate reasoning" is a model's; ours is a proxy.
4. The answer the thinking reaches is its last ``\\boxed{}`` or a configured statement pattern,
   compared after normalisation (``0.5`` and ``1/2`` disagree: conservative).
5. Language mixing counts letters of scripts that neither the allowed list nor the query use;
   style shifts are not detected.
6. Similarity to validation items compares the query (see :mod:`.similarity`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lit_qwen3.curation.similarity import NgramIndex
from lit_qwen3.curation.text import (
    ANSWER_STATEMENT,
    letter_scripts,
    repeated_ngram_ratio,
    same_answer,
    stated_answer,
    words,
)
from lit_qwen3.curation.verdict import Verdict

__all__ = [
    "DEFAULT_HEDGES",
    "Guess",
    "LanguageMix",
    "NearDuplicate",
    "Repetition",
    "ResponseFilters",
    "ThinkAnswerMismatch",
    "WrongAnswer",
    "guess",
    "language_mix",
    "near_duplicate",
    "repetition",
    "think_answer_mismatch",
    "wrong_answer",
]

#: Words that hedge a conclusion. Looked for only where the thinking concludes (its tail) and in
#: the final answer. "Maybe" and "perhaps" are left out: real chains of thought use them all the
#: time while exploring and re-checking, right up to a sound conclusion.
DEFAULT_HEDGES: tuple[str, ...] = (
    "probably",
    "most likely",
    "i guess",
    "my guess",
    "not sure",
    "roughly",
)


def _check_fraction(owner: str, name: str, value: float, *, open_low: bool = False) -> None:
    low_ok = value > 0 if open_low else value >= 0
    if not (isinstance(value, (int, float)) and low_ok and value <= 1):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{owner}.{name} must be in {interval}, got {value!r}")


# -- (1) wrong final answer -------------------------------------------------------------------


@dataclass
class WrongAnswer:
    """Remove responses whose final answer the query's reward does not accept."""

    enabled: bool = True
    min_score: float = 1.0
    """Lowest reward that counts as correct (1.0: a verifier's full mark)."""


def wrong_answer(score: float, *, min_score: float = 1.0) -> Verdict:
    """Keep a response whose reward reaches ``min_score``."""
    if score >= min_score:
        return Verdict.kept()
    return Verdict.removed(f"reward {score:g} < {min_score:g}")


# -- (2) repetition ---------------------------------------------------------------------------


@dataclass
class Repetition:
    """Remove responses that repeat themselves: the share of word n-grams that repeat an
    earlier one. Text that loops on a block scores 1 - 1/k after k rounds, less the part that
    does not loop (four rounds of a two-line toy scratchpad score 0.47); reasoning that
    re-checks a step or reuses stock phrases stays well below 0.4 (toy scratchpads score 0)."""

    enabled: bool = True
    n: int = 4
    """n-gram length in words."""
    max_ratio: float = 0.4
    """Highest share of repeated n-grams kept."""

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"Repetition.n must be an int >= 1, got {self.n!r}")
        _check_fraction("Repetition", "max_ratio", self.max_ratio)


def repetition(text: str, *, n: int = 4, max_ratio: float = 0.4) -> Verdict:
    """Keep text whose repeated word ``n``-gram share is at most ``max_ratio``."""
    ratio = repeated_ngram_ratio(words(text), n)
    if ratio <= max_ratio:
        return Verdict.kept()
    return Verdict.removed(f"repeated {n}-gram share {ratio:.2f} > {max_ratio:g}")


# -- (3) guessing -----------------------------------------------------------------------------


@dataclass
class Guess:
    """Remove responses that guess: no thinking, thinking far shorter than the query's other
    responses need (a proxy for what its difficulty warrants), or a hedge where it concludes."""

    enabled: bool = True
    min_ratio: float = 0.3
    """Shortest thinking kept, as a share of the median thinking length (words) of the query's
    responses still in the running."""
    hedges: list[str] = field(default_factory=lambda: list(DEFAULT_HEDGES))
    """Hedging words or phrases (case-insensitive, whole words)."""
    tail_chars: int = 200
    """How much of the end of the thinking counts as its conclusion."""

    def __post_init__(self) -> None:
        _check_fraction("Guess", "min_ratio", self.min_ratio)
        if not (isinstance(self.tail_chars, int) and self.tail_chars >= 0):
            raise ValueError(f"Guess.tail_chars must be an int >= 0, got {self.tail_chars!r}")


def _hedge(text: str, hedges: list[str] | tuple[str, ...]) -> str | None:
    lowered = text.lower()
    for hedge in hedges:
        if re.search(rf"(?<!\w){re.escape(hedge.lower())}(?!\w)", lowered):
            return hedge
    return None


def guess(
    thinking: str | None,
    answer: str,
    *,
    expected_words: float | None,
    min_ratio: float = 0.3,
    hedges: list[str] | tuple[str, ...] = DEFAULT_HEDGES,
    tail_chars: int = 200,
) -> Verdict:
    """Keep thinking of at least ``min_ratio * expected_words`` words whose conclusion (last
    ``tail_chars`` characters) and final ``answer`` carry no hedge. ``expected_words`` None
    skips the length test."""
    if not thinking or not thinking.strip():
        return Verdict.removed("no thinking")
    length = len(words(thinking))
    if expected_words and length < min_ratio * expected_words:
        return Verdict.removed(
            f"thinking of {length} words, {length / expected_words:.2f}x the {expected_words:g} "
            f"its query's responses take (min {min_ratio:g}x)"
        )
    tail = thinking[-tail_chars:] if tail_chars else ""
    hedge = _hedge(tail, hedges) or _hedge(answer, hedges)
    if hedge is not None:
        return Verdict.removed(f"hedged conclusion: {hedge!r}")
    return Verdict.kept()


# -- (4) thinking and summary disagree ---------------------------------------------------------


@dataclass
class ThinkAnswerMismatch:
    """Remove responses whose thinking reaches one answer and whose summary gives another.
    The thinking's answer is its last ``\\boxed{}`` or, failing that, the last match of
    ``pattern`` (group 1); thinking that states no answer is kept (nothing to compare)."""

    enabled: bool = True
    pattern: str = ANSWER_STATEMENT
    """Regular expression of an answer statement in the thinking; group 1 is the answer."""

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as error:
            raise ValueError(f"ThinkAnswerMismatch.pattern is not a regex: {error}") from None


def think_answer_mismatch(
    thinking: str | None, answer: str, *, pattern: str = ANSWER_STATEMENT
) -> Verdict:
    """Keep responses whose thinking's stated answer equals the final answer (normalised)."""
    if not thinking:
        return Verdict.kept("no thinking")
    reached = stated_answer(thinking, pattern)
    if reached is None:
        return Verdict.kept("the thinking states no answer")
    final = stated_answer(answer, pattern)
    if final is None:
        final = answer
    if same_answer(reached, final):
        return Verdict.kept()
    return Verdict.removed(f"thinking reaches {reached!r}, the answer says {final.strip()!r}")


# -- (5) language and script mixing ------------------------------------------------------------


@dataclass
class LanguageMix:
    """Remove responses with letters of scripts that are neither allowed nor used by the query
    (a Chinese query may be answered in Chinese). Scripts are Unicode name prefixes."""

    enabled: bool = True
    allowed_scripts: list[str] = field(default_factory=lambda: ["LATIN", "GREEK", "MATHEMATICAL"])
    """Scripts every response may use (Greek for math symbols, MATHEMATICAL for 𝑥-style)."""
    max_share: float = 0.01
    """Highest share of the response's letters in other scripts: a stray symbol in a long
    real response passes, a foreign word in a short one does not."""

    def __post_init__(self) -> None:
        _check_fraction("LanguageMix", "max_share", self.max_share)
        self.allowed_scripts = [s.upper() for s in self.allowed_scripts]


def language_mix(
    text: str,
    *,
    query: str = "",
    allowed_scripts: list[str] | tuple[str, ...] = ("LATIN", "GREEK", "MATHEMATICAL"),
    max_share: float = 0.01,
) -> Verdict:
    """Keep text whose letters outside the allowed and the query's scripts are at most
    ``max_share`` of its letters."""
    allowed = {s.upper() for s in allowed_scripts} | set(letter_scripts(query))
    counts = letter_scripts(text)
    total = sum(counts.values())
    foreign = {script: n for script, n in counts.items() if script not in allowed}
    n_foreign = sum(foreign.values())
    if total == 0 or n_foreign / total <= max_share:
        return Verdict.kept()
    scripts = ", ".join(f"{script} {n}" for script, n in sorted(foreign.items()))
    return Verdict.removed(
        f"{n_foreign} of {total} letters in other scripts ({scripts}), share "
        f"{n_foreign / total:.3f} > {max_share:g}"
    )


# -- (6) near-duplicates of validation items ---------------------------------------------------


@dataclass
class NearDuplicate:
    """Remove responses to queries that contain most of a validation query: the share of the
    validation query's term 5-grams found in the response's query (contamination check). A
    light paraphrase keeps most 5-grams; another question in the same stock phrasing ("What is
    the sum of the first ...") shares its opening only. Questions shorter than n terms (the
    toy's ``347+589``) count as found when they occur whole."""

    enabled: bool = True
    n: int = 5
    """n-gram length in terms (words and punctuation, lowercased)."""
    threshold: float = 0.6
    """Lowest containment that counts as a near-duplicate."""

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"NearDuplicate.n must be an int >= 1, got {self.n!r}")
        _check_fraction("NearDuplicate", "threshold", self.threshold, open_low=True)


def near_duplicate(text: str, index: NgramIndex, *, threshold: float = 0.6) -> Verdict:
    """Keep text that contains less than ``threshold`` of every indexed validation item."""
    match = index.best_match(text)
    if match is None or match.containment < threshold:
        return Verdict.kept()
    return Verdict.removed(
        f"contains {match.containment:.2f} of validation item {match.key!r} (>= {threshold:g})"
    )


@dataclass
class ResponseFilters:
    """Thresholds of the six response filters, applied in this order."""

    wrong_answer: WrongAnswer = field(default_factory=WrongAnswer)
    repetition: Repetition = field(default_factory=Repetition)
    guess: Guess = field(default_factory=Guess)
    think_answer_mismatch: ThinkAnswerMismatch = field(default_factory=ThinkAnswerMismatch)
    language_mix: LanguageMix = field(default_factory=LanguageMix)
    near_duplicate: NearDuplicate = field(default_factory=NearDuplicate)
