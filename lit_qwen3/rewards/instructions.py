"""Instruction-following reward with IFEval's and IFBench's own verdicts.

Qwen3's general RL (report section 4.4) rewards instruction following, and the report measures it
with IFEval. A reward that disagrees with the benchmark teaches the wrong thing, so the verdicts
come from the benchmarks' reference checkers (:mod:`lit_qwen3.rewards.instruction_reference`),
driven exactly as their evaluation code drives them. A prompt carries its instructions as data,
in either of two forms (both may be given; they are concatenated)::

    # IFEval / IFBench format, as their data sets and public RL data carry it
    metadata = {"instruction_id_list": ["length_constraints:number_words", "punctuation:no_comma"],
                "kwargs": [{"relation": "less than", "num_words": 50}, {}]}
    # one dict per instruction, the id under "type"
    metadata = {"constraints": [{"type": "keywords:existence", "keywords": ["lightning"]},
                                {"type": "char_count", "max": 280}]}

Ids are IFEval's 25 and IFBench's 58 (:func:`available_instructions`), plus the project's own
rules that the benchmarks have no counterpart for (``char_count``, ``starts_with``,
``json_keys``: :mod:`lit_qwen3.rewards.extra_instructions`). ``kwargs`` use the benchmarks'
names; ``None`` values and missing ``kwargs`` entries are allowed as in IFEval's data, but every
parameter of an instruction must be given, since the reference checker would otherwise draw a
random value (and a random verdict).

Verdicts, as the reference computes them on the response text (``Sample.answer``, the text after
``</think>``): strict: ``response.strip()`` is non-empty and the checker passes on it; loose: the
checker passes on any non-empty one of the response and its variants with the first line, the
last line or both removed, each also with every ``*`` removed. Scores: the fraction of
instructions followed (IFEval's instruction-level accuracy), or with ``all_or_nothing`` 1.0 only
when all are (prompt-level accuracy: IFEval's headline "strict prompt accuracy" is
``all_or_nothing=True, loose=False``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lit_qwen3.rewards import instruction_reference as reference
from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward
from lit_qwen3.rewards.extra_instructions import EXTRA_INSTRUCTIONS

__all__ = [
    "InstructionFollowingReward",
    "InstructionSpec",
    "available_instructions",
    "build_checkers",
    "follows",
    "loose_variants",
    "parse_instructions",
]

# Constraint names of earlier versions and the benchmark instruction that replaced each one.
_REPLACED = {
    "word_count": "length_constraints:number_words or count:word_count_range",
    "sentence_count": "length_constraints:number_sentences",
    "paragraph_count": "length_constraints:number_paragraphs",
    "keywords": "keywords:existence",
    "keyword_frequency": "keywords:frequency",
    "forbidden_words": "keywords:forbidden_words",
    "ends_with": "startend:end_checker",
    "lowercase": "change_case:english_lowercase",
    "uppercase": "change_case:english_capital",
    "capital_words": "change_case:capital_word_frequency",
    "bullet_count": "detectable_format:number_bullet_lists",
    "json": "detectable_format:json_format (json_keys for required keys)",
    "sections": "detectable_format:multiple_sections",
    "language": "language:response_language",
    "no_commas": "punctuation:no_comma",
    "placeholders": "detectable_content:number_placeholders",
    "highlights": "detectable_format:number_highlighted_sections",
    "title": "detectable_format:title",
    "postscript": "detectable_content:postscript",
    "quotation": "startend:quotation",
}


@dataclass(frozen=True)
class InstructionSpec:
    """One instruction of a prompt: its id, its kwargs, and where it came from (for errors)."""

    id: str
    kwargs: dict
    where: str


def _registry() -> dict[str, type]:
    return {**reference.reference_checkers(), **EXTRA_INSTRUCTIONS}


def available_instructions() -> list[str]:
    """Every instruction id the reward accepts, sorted (needs the reference package)."""
    return sorted(_registry())


def _listed(value: Any, key: str) -> list:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(f"metadata[{key!r}] must be a list, got {type(value).__name__}")
    return list(value)


def parse_instructions(metadata: Mapping[str, Any]) -> list[InstructionSpec]:
    """The instructions a sample's metadata carries, in order; ``ValueError`` naming the key
    and position when they are malformed (ids and kwargs are checked by :func:`build_checkers`)."""
    has_ids = metadata.get("instruction_id_list") is not None
    has_constraints = metadata.get("constraints") is not None
    if not (has_ids or has_constraints):
        raise ValueError(
            "reward 'instructions' needs metadata 'instruction_id_list' (+ 'kwargs', IFEval "
            f"format) or 'constraints'; the sample has {sorted(metadata)}"
        )
    specs: list[InstructionSpec] = []
    if has_ids:
        ids = _listed(metadata["instruction_id_list"], "instruction_id_list")
        kwargs = metadata.get("kwargs")
        kwargs = [{}] * len(ids) if kwargs is None else _listed(kwargs, "kwargs")
        if len(kwargs) != len(ids):
            raise ValueError(
                f"metadata['kwargs'] has {len(kwargs)} entries for {len(ids)} instruction ids "
                "in metadata['instruction_id_list']: give one dict (or null) per id"
            )
        for i, (iid, kw) in enumerate(zip(ids, kwargs, strict=True)):
            if kw is not None and not isinstance(kw, Mapping):
                raise ValueError(f"metadata['kwargs'][{i}] must be a dict or null, got {kw!r}")
            specs.append(InstructionSpec(iid, dict(kw or {}), f"instruction_id_list[{i}]"))
    if has_constraints:
        constraints = _listed(metadata["constraints"], "constraints")
        for i, spec in enumerate(constraints):
            if not isinstance(spec, Mapping) or "type" not in spec:
                raise ValueError(f"constraints[{i}] must be a dict with a 'type' key, got {spec!r}")
            kw = {k: v for k, v in spec.items() if k != "type"}
            specs.append(InstructionSpec(spec["type"], kw, f"constraints[{i}]"))
    if not specs:
        raise ValueError("the sample's instruction list is empty: give at least one instruction")
    return specs


def _unknown_id(spec: InstructionSpec, known: Sequence[str]) -> ValueError:
    message = f"{spec.where}: unknown instruction id {spec.id!r}; "
    if isinstance(spec.id, str) and spec.id in _REPLACED:
        message += f"this constraint is now the benchmark's {_REPLACED[spec.id]}; "
    else:
        close = difflib.get_close_matches(str(spec.id), known, n=3)
        message += f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return ValueError(f"{message}known ids: {', '.join(known)}")


def build_checkers(specs: Sequence[InstructionSpec], prompt: str | None = None) -> list[Any]:
    """One built checker per spec; ``ValueError`` naming the spec when an id is unknown, a kwarg
    name is wrong, a parameter is missing, NLTK data is missing, or the checker refuses a value."""
    registry = _registry()
    checkers = []
    for spec in specs:
        checker = registry.get(spec.id) if isinstance(spec.id, str) else None
        if checker is None:
            raise _unknown_id(spec, sorted(registry))
        where = f"{spec.where} ({spec.id})"
        names, any_name = reference.parameters(checker)
        given = {k: v for k, v in spec.kwargs.items() if v is not None}
        unknown = sorted(set(given) - set(names)) if not any_name else []
        if unknown:
            raise ValueError(
                f"{where}: unknown kwarg(s) {unknown}; this instruction takes {list(names) or 'none'}"
            )
        # The project's own rules check their optional parameters when built.
        missing = [n for n in names if n not in given] if spec.id not in EXTRA_INSTRUCTIONS else []
        if missing:
            raise ValueError(
                f"{where}: missing kwarg(s) {missing} (the reference checker would draw random "
                "values for them)"
            )
        data = reference.missing_nltk_data(spec.id)
        if data is not None:
            raise ValueError(
                f"{where} needs NLTK's {data!r} data, which no PyPI package ships: run "
                f"`python -m nltk.downloader {data}` (or set NLTK_DATA to a copy of it)"
            )
        try:
            checkers.append(reference.build_checker(checker, spec.id, given, prompt))
        except Exception as err:
            raise ValueError(f"{where}: bad kwargs {given}: {type(err).__name__}: {err}") from err
    return checkers


def loose_variants(response: str) -> list[str]:
    """IFEval's loose variants, in its order: the response, ``*`` removed, first line removed,
    last line removed, both removed, then those three with ``*`` removed (stripped)."""
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip()]
    cut.append("\n".join(lines[1:-1]).strip())
    return [response, response.replace("*", ""), *cut, *(c.replace("*", "") for c in cut)]


def follows(checker: Any, response: str, *, loose: bool = False) -> bool:
    """The reference verdict: strict, or loose (any non-empty variant passes); empty fails."""
    candidates = loose_variants(response) if loose else [response]
    return any(text.strip() and checker.check_following(text) for text in candidates)


def _prompt_text(sample: Sample) -> str | None:
    """The user's request for checkers that read it: ``metadata["prompt"]``, else the last user
    message without its thinking flag (IFEval rows become one user message)."""
    if isinstance(sample.metadata.get("prompt"), str):
        return sample.metadata["prompt"]
    from lit_qwen3.chat import strip_thinking_flags

    users = [m.get("content") for m in sample.prompt if m.get("role") == "user"]
    return strip_thinking_flags(users[-1]) if users and isinstance(users[-1], str) else None


@register_reward("instructions")
class InstructionFollowingReward(Reward):
    """Fraction of the prompt's instructions the answer follows, by the benchmarks' checkers.

    Args:
        all_or_nothing: 1.0 only when every instruction is followed (prompt-level accuracy).
        loose: IFEval's loose verdicts (see the module docstring) instead of strict ones.

    Needs ``metadata["instruction_id_list"]`` (+ ``"kwargs"``) or ``metadata["constraints"]``;
    :meth:`check` builds every checker, so a malformed spec fails before anything is scored.
    Scores ``sample.answer`` only; an empty answer (thinking never closed) follows nothing. A
    checker that raises on a response counts as not followed (``info["errors"]`` names it).
    """

    name: ClassVar[str] = "instructions"

    def __init__(self, *, all_or_nothing: bool = False, loose: bool = False) -> None:
        self.all_or_nothing = all_or_nothing
        self.loose = loose

    def check(self, sample: Sample) -> None:
        self._checkers(sample)

    def _checkers(self, sample: Sample) -> tuple[list[InstructionSpec], list[Any]]:
        specs = parse_instructions(sample.metadata)
        return specs, build_checkers(specs, _prompt_text(sample))

    def score(self, sample: Sample) -> RewardResult:
        specs, checkers = self._checkers(sample)
        answer, results, errors = sample.answer, [], {}
        for i, (spec, checker) in enumerate(zip(specs, checkers, strict=True)):
            try:
                results.append(follows(checker, answer, loose=self.loose))
            except Exception as err:
                results.append(False)
                errors[f"{i}:{spec.id}"] = f"{type(err).__name__}: {err}"
        passed = sum(results)
        value = float(passed == len(results)) if self.all_or_nothing else passed / len(results)
        info: dict[str, Any] = {
            "passed": passed,
            "total": len(results),
            "results": {
                f"{i}:{s.id}": ok for i, (s, ok) in enumerate(zip(specs, results, strict=True))
            },
        }
        if errors:
            info["errors"] = errors
        if not answer.strip():
            info["error"] = "empty answer"
        return RewardResult(score=value, info=info)
