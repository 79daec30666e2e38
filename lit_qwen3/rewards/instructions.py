"""Instruction-following reward: IFEval-style verifiable constraints stored with the prompt.

Qwen3's general RL (report section 4.4) rewards "instruction following": content, format,
length and structured-output rules that a program can check. Each rule here is a small
function in a registry, and a prompt carries its rules as data::

    metadata = {"constraints": [
        {"type": "word_count", "min": 50, "max": 100},
        {"type": "keywords", "words": ["lightning"]},
        {"type": "bullet_count", "n": 3},
    ]}

Counting rules share one convention: ``n`` means exactly n, ``min``/``max`` bound the count
(give ``n`` or at least one bound). Where IFEval says "at least" (sections, placeholders,
highlights), write ``min``. Text rules (keywords, starts/ends) ignore case unless
``case_sensitive: true``. The score is the fraction of rules satisfied; ``all_or_nothing``
gives IFEval's strict prompt-level score, ``loose`` its loose variant (a rule also passes when
it holds after dropping the first/last line or markdown ``*``).

Call :func:`available_constraints` for the list, :func:`register_constraint` to add one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lit_qwen3.rewards.base import Reward, RewardResult, Sample, register_reward

__all__ = [
    "ConstraintType",
    "InstructionFollowingReward",
    "available_constraints",
    "check_constraint",
    "detect_language",
    "register_constraint",
    "validate_constraints",
]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ConstraintType:
    """One checkable rule: ``check(reply, /, **params) -> bool`` and the parameters it takes."""

    name: str
    check: Callable[..., bool]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    counting: bool  # takes n / min / max


_CONSTRAINTS: dict[str, ConstraintType] = {}
_PARAM_TYPES: dict[str, type | tuple[type, ...]] = {
    "n": int,
    "min": int,
    "max": int,
    "words": list,
    "word": str,
    "text": str,
    "marker": str,
    "lang": str,
    "keys": list,
    "separator": str,
    "case_sensitive": bool,
}


def register_constraint(
    name: str, *, required: Sequence[str] = (), optional: Sequence[str] = (), counting=False
) -> Callable[[Callable[..., bool]], Callable[..., bool]]:
    """Register ``fn(reply, /, **params) -> bool`` as constraint type ``name``.

    ``counting=True`` adds the shared ``n``/``min``/``max`` parameters; ``fn`` then receives
    ``count_ok``, a function that says whether a count satisfies them.
    """

    def decorator(fn: Callable[..., bool]) -> Callable[..., bool]:
        if name in _CONSTRAINTS:
            raise ValueError(f"constraint type {name!r} is already registered")
        _CONSTRAINTS[name] = ConstraintType(name, fn, tuple(required), tuple(optional), counting)
        return fn

    return decorator


def available_constraints() -> list[str]:
    """Names of the registered constraint types, sorted."""
    return sorted(_CONSTRAINTS)


def _count_checker(params: Mapping[str, Any]) -> Callable[[int], bool]:
    if "n" in params:
        return lambda count: count == params["n"]
    low, high = params.get("min"), params.get("max")
    return lambda count: (low is None or count >= low) and (high is None or count <= high)


def validate_constraints(constraints: Any) -> list[dict]:
    """Check a ``metadata["constraints"]`` value; return it as a list of dicts.

    Raises ``ValueError``/``TypeError`` naming the rule's position and the bad parameter, so a
    broken data set fails before training, not in the middle of it.
    """
    if not isinstance(constraints, list) or not constraints:
        raise ValueError(
            "metadata['constraints'] must be a non-empty list of constraint dicts, "
            f"got {constraints!r}"
        )
    for index, spec in enumerate(constraints):
        where = f"constraints[{index}]"
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"{where} must be a dict with a 'type' key, got {spec!r}")
        kind = _CONSTRAINTS.get(spec["type"])
        if kind is None:
            raise ValueError(
                f"{where}: unknown constraint type {spec['type']!r}; "
                f"known types: {', '.join(available_constraints())}"
            )
        allowed = set(kind.required) | set(kind.optional)
        if kind.counting:
            allowed |= {"n", "min", "max"}
        params = {k: v for k, v in spec.items() if k != "type"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(
                f"{where} ({kind.name}): unknown parameter(s) {unknown}; "
                f"allowed: {sorted(allowed) or 'none'}"
            )
        missing = [p for p in kind.required if p not in params]
        if missing:
            raise ValueError(f"{where} ({kind.name}): missing parameter(s) {missing}")
        for key, value in params.items():
            expected = _PARAM_TYPES.get(key)
            # bool is an int subclass: refuse {"n": True} explicitly.
            bad_bool = expected is int and isinstance(value, bool)
            if expected is not None and (not isinstance(value, expected) or bad_bool):
                raise TypeError(
                    f"{where} ({kind.name}): parameter {key!r} must be "
                    f"{getattr(expected, '__name__', expected)}, got {value!r}"
                )
            if key in ("n", "min", "max") and value < 0:
                raise ValueError(f"{where} ({kind.name}): {key!r} must be >= 0, got {value}")
            if key in ("words", "keys"):
                if not value or not all(isinstance(w, str) and w.strip() for w in value):
                    raise ValueError(
                        f"{where} ({kind.name}): {key!r} must be a non-empty list of "
                        f"non-empty strings, got {value!r}"
                    )
            if key in ("word", "text", "marker", "lang") and not value.strip():
                raise ValueError(f"{where} ({kind.name}): {key!r} must not be empty")
        if kind.counting:
            if "n" in params and ("min" in params or "max" in params):
                raise ValueError(f"{where} ({kind.name}): give 'n' or 'min'/'max', not both")
            if not {"n", "min", "max"} & set(params):
                raise ValueError(f"{where} ({kind.name}): give 'n' (exact) or 'min'/'max'")
            if params.get("min", 0) > params.get("max", float("inf")):
                raise ValueError(
                    f"{where} ({kind.name}): min {params['min']} > max {params['max']}"
                )
        if kind.name == "language" and params["lang"] not in _LANGUAGES:
            raise ValueError(
                f"{where} (language): unsupported lang {params['lang']!r}; "
                f"supported: {', '.join(sorted(_LANGUAGES))}"
            )
    return [dict(spec) for spec in constraints]


def check_constraint(text: str, spec: Mapping[str, Any]) -> bool:
    """Whether ``text`` satisfies one constraint ``spec`` (validated first)."""
    (spec,) = validate_constraints([spec])
    return _check(text, spec)


def _check(text: str, spec: dict) -> bool:
    kind = _CONSTRAINTS[spec["type"]]
    params = {k: v for k, v in spec.items() if k not in ("type", "n", "min", "max")}
    if kind.counting:
        params["count_ok"] = _count_checker(spec)
    return bool(kind.check(text, **params))


# --------------------------------------------------------------------------- text helpers

_WORD = re.compile(r"\w+")
_ABBREVIATIONS = (
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "a.m",
    "p.m",
)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*(?:\s+|$)")
_BULLET = re.compile(r"^\s*[*\-•]\s+\S", re.MULTILINE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _sentences(text: str) -> list[str]:
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        head = text[start : match.start()].rstrip(".!?\"')]”’ ")
        last_word = head.rsplit(None, 1)[-1].lower() if head.split() else ""
        if last_word in _ABBREVIATIONS or len(last_word) == 1 and last_word.isalpha():
            continue  # "Dr. Smith", "e.g. this", "J. Doe": not a sentence end
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [p for p in pieces if _WORD.search(p)]


def _paragraphs(text: str, separator: str | None) -> list[str]:
    parts = re.split(r"\n\s*\n", text) if separator is None else text.split(separator)
    return [p for p in parts if p.strip()]


def _contains(text: str, phrase: str, case_sensitive: bool) -> int:
    flags = 0 if case_sensitive else re.IGNORECASE
    return len(re.findall(rf"(?<!\w){re.escape(phrase.strip())}(?!\w)", text, flags))


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


def _has_cased_letter(text: str) -> bool:
    return any(c.lower() != c.upper() for c in text)


# --------------------------------------------------------------------------- language

# Script ranges and stop words: a heuristic on purpose (no network, no model, no extra
# dependency). It tells scripts apart reliably and English/French/German/Spanish apart on a
# sentence or more; it cannot tell languages that share a script and stop words (e.g. Russian
# from Ukrainian: both report "ru"). Use a real detector (fastText lid) when that matters.
_SCRIPTS = {
    "han": r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]",
    "kana": r"[\u3040-\u30ff]",
    "hangul": r"[\u1100-\u11ff\uac00-\ud7af]",
    "cyrillic": r"[\u0400-\u04ff]",
    "arabic": r"[\u0600-\u06ff]",
    "greek": r"[\u0370-\u03ff]",
    "devanagari": r"[\u0900-\u097f]",
    "latin": r"[A-Za-z\u00c0-\u024f]",
}
_SCRIPT_LANGUAGE = {
    "cyrillic": "ru",
    "arabic": "ar",
    "greek": "el",
    "devanagari": "hi",
    "hangul": "ko",
}
_STOP_WORDS = {
    "en": "the and of to is in that it was for with as on are be this have not you but they by",
    "fr": "le la les des est et un une du que qui dans pour pas sur au avec ce il sont nous vous",
    "de": "der die das und ist nicht ein eine zu den mit von sich des auf für dem im auch sie wir",
    "es": "el la los las de que y en un una es por con para no se lo del al como más pero sus",
}
_STOP_SETS = {lang: set(words.split()) for lang, words in _STOP_WORDS.items()}
_LANGUAGES = {"zh", "ja", "ko", "ru", "ar", "el", "hi", *_STOP_WORDS}


def detect_language(text: str) -> str | None:
    """Best-guess ISO 639-1 code of ``text``, or None when there is too little to tell.

    Heuristic: the majority script decides (Han with any kana is Japanese); Latin text is
    told apart by counting English/French/German/Spanish stop words.
    """
    counts = {script: len(re.findall(pattern, text)) for script, pattern in _SCRIPTS.items()}
    if not any(counts.values()):
        return None
    cjk = counts["han"] + counts["kana"]
    script = max(counts, key=counts.get)
    if script in ("han", "kana") or cjk > counts["latin"] and cjk >= counts[script]:
        return "ja" if counts["kana"] else "zh"
    if script != "latin":
        return _SCRIPT_LANGUAGE[script]
    words = [w.casefold() for w in _words(text)]
    hits = {lang: sum(w in stop for w in words) for lang, stop in _STOP_SETS.items()}
    best = max(hits, key=hits.get)
    return best if hits[best] > 0 else None


# --------------------------------------------------------------------------- checkers


@register_constraint("word_count", counting=True)
def _word_count(text, *, count_ok):
    return count_ok(len(_words(text)))


@register_constraint("sentence_count", counting=True)
def _sentence_count(text, *, count_ok):
    return count_ok(len(_sentences(text)))


@register_constraint("paragraph_count", optional=("separator",), counting=True)
def _paragraph_count(text, *, count_ok, separator=None):
    """Paragraphs are split by blank lines, or by ``separator`` (IFEval uses ``***``)."""
    return count_ok(len(_paragraphs(text, separator)))


@register_constraint("char_count", counting=True)
def _char_count(text, *, count_ok):
    return count_ok(len(text.strip()))


@register_constraint("keywords", required=("words",), optional=("case_sensitive",))
def _keywords(text, *, words, case_sensitive=False):
    """Every word or phrase appears at least once (whole-word match)."""
    return all(_contains(text, w, case_sensitive) for w in words)


@register_constraint(
    "keyword_frequency", required=("word",), optional=("case_sensitive",), counting=True
)
def _keyword_frequency(text, *, word, count_ok, case_sensitive=False):
    return count_ok(_contains(text, word, case_sensitive))


@register_constraint("forbidden_words", required=("words",), optional=("case_sensitive",))
def _forbidden_words(text, *, words, case_sensitive=False):
    return not any(_contains(text, w, case_sensitive) for w in words)


@register_constraint("starts_with", required=("text",), optional=("case_sensitive",))
def _starts_with(reply, /, *, text, case_sensitive=False):
    return _fold(reply.strip(), case_sensitive).startswith(_fold(text.strip(), case_sensitive))


@register_constraint("ends_with", required=("text",), optional=("case_sensitive",))
def _ends_with(reply, /, *, text, case_sensitive=False):
    return _fold(reply.strip(), case_sensitive).endswith(_fold(text.strip(), case_sensitive))


@register_constraint("lowercase")
def _lowercase(text):
    return _has_cased_letter(text) and text == text.lower()


@register_constraint("uppercase")
def _uppercase(text):
    return _has_cased_letter(text) and text == text.upper()


@register_constraint("capital_words", counting=True)
def _capital_words(text, *, count_ok):
    """Count of words written in capitals (``NOTE``, ``AI``), as IFEval's frequency rule."""
    return count_ok(sum(w.isupper() for w in _words(text)))


@register_constraint("bullet_count", counting=True)
def _bullet_count(text, *, count_ok):
    """Markdown bullets: lines starting with ``*``, ``-`` or ``•`` and a space."""
    return count_ok(len(_BULLET.findall(text)))


@register_constraint("json", optional=("keys",))
def _json(text, *, keys=None):
    """The whole reply is JSON (a ```json fence around it is allowed); ``keys`` must exist."""
    body = re.sub(r"^```(?:json|JSON)?\s*|\s*```$", "", text.strip())
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return False
    return keys is None or isinstance(value, dict) and all(k in value for k in keys)


@register_constraint("sections", required=("marker",), counting=True)
def _sections(text, *, marker, count_ok):
    """Lines that open with ``marker N`` (e.g. ``Section 1``, ``## SECTION 2``), case kept."""
    pattern = rf"^\s*(?:#+\s*)?{re.escape(marker.strip())}\s*\d+"
    return count_ok(len(re.findall(pattern, text, re.MULTILINE)))


@register_constraint("language", required=("lang",))
def _language(text, *, lang):
    return detect_language(text) == lang


@register_constraint("no_commas")
def _no_commas(text):
    return "," not in text and "，" not in text


@register_constraint("placeholders", counting=True)
def _placeholders(text, *, count_ok):
    """Square-bracket placeholders such as ``[address]``; markdown links do not count."""
    return count_ok(len(re.findall(r"\[[^\[\]\n]+\](?!\()", text)))


@register_constraint("highlights", counting=True)
def _highlights(text, *, count_ok):
    """Markdown-highlighted spans ``*like this*`` or ``**like this**``."""
    return count_ok(len(re.findall(r"\*{1,2}[^\s*][^\n*]*\*{1,2}", text)))


@register_constraint("title")
def _title(text):
    """A title wrapped in double angle brackets, ``<<like this>>``."""
    return re.search(r"<<[^\n<>]*\w[^\n<>]*>>", text) is not None


@register_constraint("postscript", optional=("marker",))
def _postscript(text, *, marker="P.S."):
    return re.search(rf"^\s*{re.escape(marker.strip())}", text, re.MULTILINE) is not None


@register_constraint("quotation")
def _quotation(text):
    """The whole reply is wrapped in double quotes."""
    body = text.strip()
    return len(body) > 1 and body[0] in '"“' and body[-1] in '"”'


def _loose_variants(text: str) -> list[str]:
    """IFEval's loose variants: drop the first and/or last line, and/or markdown ``*``."""
    lines = text.split("\n")
    bases = [text, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return bases + [b.replace("*", "") for b in bases]


# --------------------------------------------------------------------------- reward


@register_reward("instructions")
class InstructionFollowingReward(Reward):
    """Fraction of the prompt's constraints that the answer satisfies (IFEval style).

    Needs ``metadata["constraints"]`` (see the module docstring). Scores ``sample.answer``
    only; an empty answer (e.g. thinking never closed) scores 0 whatever the rules say, so
    that "no commas" or "no forbidden words" cannot be won by saying nothing.
    """

    name: ClassVar[str] = "instructions"
    requires: ClassVar[tuple[str, ...]] = ("constraints",)

    def __init__(self, *, all_or_nothing: bool = False, loose: bool = False) -> None:
        self.all_or_nothing = all_or_nothing
        self.loose = loose

    def check(self, sample: Sample) -> None:
        super().check(sample)
        validate_constraints(sample.metadata["constraints"])

    def score(self, sample: Sample) -> RewardResult:
        self.check(sample)
        if not isinstance(sample.answer, str):
            raise TypeError(f"sample.answer must be a str, got {type(sample.answer).__name__}")
        constraints = validate_constraints(sample.metadata["constraints"])
        answer = sample.answer.strip()
        if not answer:
            results = [False] * len(constraints)
        else:
            variants = _loose_variants(answer) if self.loose else [answer]
            results = [any(_check(v, spec) for v in variants) for spec in constraints]
        passed = sum(results)
        if self.all_or_nothing:
            value = float(passed == len(results))
        else:
            value = passed / len(results)
        info: dict[str, Any] = {
            "passed": passed,
            "total": len(results),
            "results": {
                f"{i}:{c['type']}": ok
                for i, (c, ok) in enumerate(zip(constraints, results, strict=True))
            },
        }
        if not answer:
            info["error"] = "empty answer"
        return RewardResult(score=value, info=info)
