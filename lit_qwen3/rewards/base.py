"""One interface for every reward in the recipe: samples in, scores plus info out.

Both RL stages, curation and evaluation score completions through the same pieces:

- :class:`Sample` holds what a reward may look at (prompt, completion, the parsed thinking and
  answer, the mode the prompt asked for, and metadata such as the reference or the test cases).
- :class:`Reward` subclasses score one sample (or a batch, for model-based rewards) and register
  by name with :func:`register_reward`, so YAML can name them.
- :class:`~lit_qwen3.rewards.composite.CompositeReward` is the weighted sum the trainer calls,
  with worker processes (:mod:`lit_qwen3.rewards.workers`) for slow or unsafe rewards.

This module is the interface only: the composite and the worker pool depend on it, never the
reverse.

Missing metadata (a math sample without ``reference``) is a data bug, not a reward failure: it
raises ``ValueError`` before anything is scored.
"""

from __future__ import annotations

import abc
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Sample:
    """What a reward sees: one completion to one prompt, already split into thinking and answer."""

    prompt: list[dict]
    """Chat messages (``role``/``content``) as given to the policy."""
    completion: str
    """Raw completion text; may contain ``<think>...</think>``."""
    thinking: str | None
    """Parsed thinking; ``None`` when the completion has no think block."""
    answer: str
    """Text after ``</think>`` (the whole completion when there is no block), stripped."""
    well_formed: bool
    """Exactly one ``<think>...</think>`` block, at the start."""
    thinking_mode: bool
    """The mode the prompt asked for (last ``/think``/``/no_think`` flag wins; enable_thinking)."""
    metadata: dict = field(default_factory=dict)
    """Per-sample data for verifiers: ``reference``, ``tests``, ``constraints``, ..."""

    def __post_init__(self) -> None:
        _check_prompt(self.prompt, "Sample.prompt")
        if not isinstance(self.completion, str):
            raise TypeError(
                f"Sample.completion must be a str, got {type(self.completion).__name__}"
            )
        if not isinstance(self.answer, str):
            raise TypeError(f"Sample.answer must be a str, got {type(self.answer).__name__}")
        if self.thinking is not None and not isinstance(self.thinking, str):
            raise TypeError(
                f"Sample.thinking must be a str or None, got {type(self.thinking).__name__}"
            )
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"Sample.metadata must be a dict, got {type(self.metadata).__name__}")
        self.prompt = list(self.prompt)
        self.metadata = dict(self.metadata)

    @classmethod
    def from_completion(
        cls,
        prompt: Sequence[Mapping[str, Any]],
        completion: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        enable_thinking: bool = True,
        opened_in_prompt: bool = False,
    ) -> Sample:
        """Parse ``completion`` with the chat helpers; the mode comes from the prompt's flags.

        ``opened_in_prompt``: the generation prompt already ended with ``<think>`` (templates
        that pre-open the block), so the completion starts inside the thinking.
        """
        if not isinstance(completion, str):
            raise TypeError(
                f"completion must be a str (decoded text), got {type(completion).__name__}"
            )
        _check_prompt(prompt, "prompt")
        from lit_qwen3.chat import split_thinking, thinking_enabled

        parsed = split_thinking(completion, opened_in_prompt=opened_in_prompt)
        return cls(
            prompt=list(prompt),
            completion=completion,
            thinking=parsed.thinking,
            answer=parsed.answer,
            well_formed=parsed.well_formed,
            thinking_mode=thinking_enabled(list(prompt), enable_thinking),
            metadata=dict(metadata or {}),
        )


def _check_prompt(prompt: Any, argument: str) -> None:
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence):
        raise TypeError(f"{argument} must be a list of chat messages, got {type(prompt).__name__}")
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping) or "role" not in message:
            raise TypeError(f"{argument}[{i}] must be a dict with 'role' and 'content'")


@dataclass
class RewardResult:
    """A score and whatever explains it (failed checks, the extracted answer, an error)."""

    score: float
    """A finite real number (``int``, ``float``, numpy floats...); a ``str``, ``bool`` or NaN is
    a failure of the reward, not a score."""
    info: dict = field(default_factory=dict)


class Reward(abc.ABC):
    """Base class: subclass, set ``requires``, implement :meth:`score`, decorate with
    ``@register_reward("name")``. Instances must be picklable when ``run_in_worker`` is set."""

    name: ClassVar[str] = ""
    """Registry name, set by :func:`register_reward`."""
    run_in_worker: ClassVar[bool] = False
    """Slow or unsafe rewards run in worker processes, with a timeout per sample."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Metadata keys every sample must carry, e.g. ``("reference",)``."""

    def check(self, sample: Sample) -> None:
        """Raise ``ValueError`` naming the reward and the missing metadata key(s)."""
        missing = [key for key in self.requires if sample.metadata.get(key) is None]
        if missing:
            raise ValueError(
                f"reward {self.name or type(self).__name__!r} needs metadata key(s) {missing}; "
                f"the sample has {sorted(sample.metadata)}"
            )

    @abc.abstractmethod
    def score(self, sample: Sample) -> RewardResult:
        """Score one sample."""

    def score_batch(self, samples: Sequence[Sample]) -> list[RewardResult]:
        """Score many samples; model-based rewards override this to batch on the device."""
        return [self.score(sample) for sample in samples]


_REGISTRY: dict[str, type[Reward]] = {}


def register_reward(name: str) -> Callable[[type[Reward]], type[Reward]]:
    """Class decorator: make a :class:`Reward` buildable by ``name`` (from YAML)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward name must be a non-empty str, got {name!r}")

    def decorator(cls: type[Reward]) -> type[Reward]:
        if not (isinstance(cls, type) and issubclass(cls, Reward)):
            raise TypeError(f"@register_reward({name!r}) decorates Reward subclasses, got {cls!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and _qualified(existing) != _qualified(cls):
            raise ValueError(
                f"reward name {name!r} is already registered by {_qualified(existing)}; "
                f"cannot register {_qualified(cls)} under it"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_builtin_rewards(name: str | None = None) -> None:
    # Built-in reward modules register themselves on import; the package lists them.
    importlib.import_module("lit_qwen3.rewards").load_builtin_rewards(name)


def available_rewards() -> list[str]:
    """Names that :func:`build_reward` and YAML specs accept."""
    _load_builtin_rewards()
    return sorted(_REGISTRY)


def build_reward(name: str, **kwargs: Any) -> Reward:
    """Instantiate the reward registered as ``name`` with ``kwargs``."""
    if not isinstance(name, str):
        raise TypeError(f"reward name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY:
        _load_builtin_rewards(name)
    if name not in _REGISTRY:
        _load_builtin_rewards()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(_REGISTRY))}")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise TypeError(f"reward {name!r}: bad kwargs {sorted(kwargs)}: {err}") from None
    return cls(**kwargs)
