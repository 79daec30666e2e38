"""The report's query filters (section 4.1): pure functions on the question text or a pass rate.

The report filters queries with a strong instruct model (Qwen2.5-72B-Instruct): it drops
queries that are not easily verifiable (several sub-questions, open-ended generation) and
queries it answers correctly without chain of thought, and it annotates each query's domain.
Here the textual criteria are rules first (cheap, exact, and all the toy task can use) and a
judge model second, when one is configured (:mod:`.generators`); "answered without chain of
thought" is measured by sampling any model in non-thinking mode and scoring it with the query's
reward. Each function returns a :class:`Verdict`; thresholds live in the dataclasses beside them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lit_qwen3.curation.verdict import Verdict

__all__ = [
    "DEFAULT_OPEN_ENDED",
    "JudgeFilter",
    "MultipleQuestions",
    "OpenEnded",
    "SolvedWithoutThinking",
    "count_sub_questions",
    "judge_verifiable",
    "multiple_questions",
    "open_ended",
    "parse_choice",
    "rule_domain",
    "solved_without_thinking",
]

#: Phrases that ask for open-ended text or a proof: answers no program can check exactly.
DEFAULT_OPEN_ENDED: tuple[str, ...] = (
    "write a story",
    "write a short story",
    "write an essay",
    "write a poem",
    "write a letter",
    "explain why",
    "explain how",
    "describe",
    "discuss",
    "in your opinion",
    "what do you think",
    "prove that",
    "show that",
)

# "(a)", "(b)", "(ii)", "b)", and list items "1." / "2)" at the start of a line.
_LETTER_PART = re.compile(r"(?<!\S)\(?([a-h]|i{1,3}|iv|v|vi{0,3})\)(?=\s)", re.IGNORECASE)
_NUMBERED_PART = re.compile(r"(?m)^\s*\d{1,2}[.)]\s+\S")


def count_sub_questions(text: str) -> int:
    """How many questions ``text`` asks: the most of its question marks, lettered parts
    ("(a)", "b)", "(ii)") and numbered list items; at least 1."""
    marks = text.count("?") + text.count("？")
    lettered = len({m.group(1).lower() for m in _LETTER_PART.finditer(text)})
    numbered = len(_NUMBERED_PART.findall(text))
    return max(1, marks, lettered if lettered >= 2 else 0, numbered if numbered >= 2 else 0)


@dataclass
class MultipleQuestions:
    """Remove queries that ask several questions (each needs its own verifier)."""

    enabled: bool = True
    max_questions: int = 1
    """Most sub-questions a kept query may ask."""

    def __post_init__(self) -> None:
        if not (isinstance(self.max_questions, int) and self.max_questions >= 1):
            raise ValueError(
                f"MultipleQuestions.max_questions must be an int >= 1, got {self.max_questions!r}"
            )


def multiple_questions(text: str, *, max_questions: int = 1) -> Verdict:
    """Keep queries asking at most ``max_questions`` questions."""
    count = count_sub_questions(text)
    if count <= max_questions:
        return Verdict.kept()
    return Verdict.removed(f"asks {count} questions (max {max_questions})")


@dataclass
class OpenEnded:
    """Remove queries that ask for open-ended text or proofs (whole-word, case-insensitive)."""

    enabled: bool = True
    markers: list[str] = field(default_factory=lambda: list(DEFAULT_OPEN_ENDED))
    """Phrases that mark an open-ended request."""


def open_ended(text: str, *, markers: Sequence[str] = DEFAULT_OPEN_ENDED) -> Verdict:
    """Keep queries containing none of ``markers``."""
    lowered = text.lower()
    for marker in markers:
        if re.search(rf"(?<!\w){re.escape(marker.lower())}(?!\w)", lowered):
            return Verdict.removed(f"open-ended request: {marker!r}")
    return Verdict.kept()


@dataclass
class SolvedWithoutThinking:
    """Remove queries a model answers correctly without chain of thought (non-thinking mode,
    scored by the query's reward): they do not need reasoning. ``model: null`` skips it."""

    model: str | None = "toy-program"
    """A local HF causal LM (directory or preset) or ``toy-program`` (the toy's direct
    answers, see :mod:`.toy`); null disables the filter."""
    samples: int = 4
    """Non-thinking samples per query."""
    max_pass_rate: float = 0.5
    """Highest share of correct samples a kept query may have."""
    max_new_tokens: int = 256
    """Longest non-thinking answer sampled."""
    batch_size: int = 64
    """Rows per generation batch."""

    def __post_init__(self) -> None:
        if not (isinstance(self.samples, int) and self.samples >= 1):
            raise ValueError(f"SolvedWithoutThinking.samples must be >= 1, got {self.samples!r}")
        if not 0.0 <= self.max_pass_rate < 1.0:
            raise ValueError(
                f"SolvedWithoutThinking.max_pass_rate must be in [0, 1), got {self.max_pass_rate}"
            )


def solved_without_thinking(pass_rate: float, *, max_pass_rate: float = 0.5) -> Verdict:
    """Keep queries whose non-thinking pass rate is at most ``max_pass_rate``."""
    if pass_rate <= max_pass_rate:
        return Verdict.kept()
    return Verdict.removed(
        f"answered correctly without thinking at pass rate {pass_rate:.2f} > {max_pass_rate:g}"
    )


# -- judge model: verifiability and domain -------------------------------------------------------

VERIFIABLE_PROMPT = (
    "Can the following question be answered with one short final answer (a number, an "
    "expression, a choice or a short phrase) that a program could check against a reference? "
    "Reply with yes or no only.\n\nQuestion:\n{query}"
)
DOMAIN_PROMPT = (
    "Which of these domains does the following question belong to: {choices}? Reply with the "
    "domain's name only.\n\nQuestion:\n{query}"
)


@dataclass
class JudgeFilter:
    """A judge model (any local HF causal LM with a chat template) asked, in non-thinking mode
    with greedy decoding, whether each query is easily verifiable and, for queries the domain
    rules leave unlabelled, which domain it belongs to. ``model: null`` skips the judge."""

    model: str | None = None
    """Judge model directory or preset; null: rules only."""
    verifiable_prompt: str = VERIFIABLE_PROMPT
    """Prompt with ``{query}``; the reply must start with yes or no."""
    domain_prompt: str = DOMAIN_PROMPT
    """Prompt with ``{query}`` and ``{choices}`` (the configured domain names)."""
    keep_unparsed: bool = True
    """Keep a query when the judge's reply is neither yes nor no."""
    batch_size: int = 32
    """Queries per judge batch."""
    max_new_tokens: int = 8
    """Longest judge reply."""


def parse_choice(reply: str, choices: Sequence[str]) -> str | None:
    """The choice a reply starts with (case-insensitive, whole word, after markdown and quotes),
    the longest first (``multiplication`` before ``multi``); None when it names none."""
    text = reply.strip().lstrip("*_\"'`#> ").lower()
    for choice in sorted(choices, key=len, reverse=True):
        if re.match(rf"{re.escape(choice.lower())}(?!\w)", text):
            return choice
    return None


def judge_verifiable(reply: str, *, keep_unparsed: bool = True) -> Verdict:
    """Keep a query the judge calls verifiable ("yes"); "no" removes it."""
    choice = parse_choice(reply, ("yes", "no"))
    if choice == "yes":
        return Verdict.kept()
    if choice == "no":
        return Verdict.removed("judge: not easily verifiable")
    if keep_unparsed:
        return Verdict.kept(f"judge reply not yes/no: {reply.strip()[:40]!r}")
    return Verdict.removed(f"judge reply not yes/no: {reply.strip()[:40]!r}")


def rule_domain(text: str, rules: Mapping[str, str]) -> str | None:
    """The first domain whose regular expression matches ``text`` (rules in config order)."""
    for domain, pattern in rules.items():
        if re.search(pattern, text):
            return domain
    return None
