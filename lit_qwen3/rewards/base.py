"""One interface for every reward in the recipe: samples in, scores plus info out.

Both RL stages, curation and evaluation score completions through the same three pieces:

- :class:`Sample` holds what a reward may look at (prompt, completion, the parsed thinking and
  answer, the mode the prompt asked for, and metadata such as the reference or the test cases).
- :class:`Reward` subclasses score one sample (or a batch, for model-based rewards) and register
  by name with :func:`register_reward`, so YAML can name them.
- :class:`CompositeReward` is the weighted sum the trainer calls. Rewards that are slow or unsafe
  (``run_in_worker = True``: math, code) run in worker processes with a timeout per sample
  (:mod:`lit_qwen3.rewards.workers`). A reward that raises or times out scores 0 for that
  sample, is counted in ``error_counts`` and logged on the ``lit_qwen3.rewards`` logger: one bad
  sample never stops a run.

Missing metadata (a math sample without ``reference``) is a data bug, not a reward failure: it
raises ``ValueError`` before anything is scored.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import inspect
import logging
import math
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lit_qwen3.rewards.workers import Failure, RewardWorkerPool, Task

logger = logging.getLogger("lit_qwen3.rewards")

#: Metadata key that restricts a sample to some of a composite's rewards (a list of labels), so a
#: batch mixing math and code queries can go through one ``CompositeReward``.
ROUTING_KEY = "rewards"


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


# --------------------------------------------------------------------------------------------
# Composite: weighted sum, routing, error accounting


@dataclass(frozen=True)
class _Component:
    label: str
    reward: Reward
    weight: float
    in_worker: bool


_SPEC_KEYS = {"name", "weight", "kwargs", "label", "in_worker", "reward"}


class CompositeReward:
    """Weighted sum of rewards, built from YAML: ``[{name: math, weight: 1.0, kwargs: {...}}]``.

    Args:
        rewards: a list of specs or a ``{name: weight}`` mapping. A spec is a dict with ``name``
            (registry name) or ``reward`` (a built :class:`Reward`), and optional ``weight``
            (1.0), ``kwargs`` (constructor arguments), ``label`` (defaults to the name; needed
            when one reward appears twice) and ``in_worker`` (overrides the reward's default).
            A bare :class:`Reward` instance is accepted as a spec of weight 1.
        timeout: seconds one worker reward may spend on one sample. It is enforced inside the
            worker by an interval timer (whose exception, a ``BaseException``, cannot be
            swallowed by a reward's ``except Exception``) and, as a backstop for code stuck in C,
            by the parent, which kills the workers after ``timeout + kill_grace`` and starts new
            ones. Rewards that run in this process (model-based ones) have no timeout.
        num_workers: worker processes for ``in_worker`` rewards; 0 scores everything in this
            process, without timeouts (debugging).
        mp_context: ``"forkserver"`` (default on Linux) or ``"spawn"``; never ``"fork"``, since
            the trainer process holds torch and its threads.
        kill_grace: extra seconds the parent waits before it kills a worker that overran.
        startup_timeout: seconds allowed for the workers to start and import the rewards.

    A sample's ``metadata["rewards"]`` (list of labels), when present, limits it to those
    components, so mixed-task batches (math and code queries) share one composite.
    ``info`` of each result holds ``scores`` (label -> unweighted score), ``details``
    (label -> that reward's info) and, when some component failed, ``errors`` (label -> message).
    """

    def __init__(
        self,
        rewards: Sequence[Mapping[str, Any] | Reward] | Mapping[str, float],
        *,
        timeout: float = 10.0,
        num_workers: int = 2,
        mp_context: str | None = None,
        kill_grace: float = 2.0,
        startup_timeout: float = 120.0,
    ) -> None:
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not (isinstance(num_workers, int) and num_workers >= 0):
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if mp_context is None:
            mp_context = "forkserver" if sys.platform.startswith("linux") else "spawn"
        if mp_context not in ("forkserver", "spawn"):
            raise ValueError(
                f"mp_context must be 'forkserver' or 'spawn' (not fork: torch is loaded in the "
                f"parent), got {mp_context!r}"
            )
        self.timeout = float(timeout)
        self.num_workers = num_workers
        self.mp_context = mp_context
        self.kill_grace = float(kill_grace)
        self.startup_timeout = float(startup_timeout)
        self.components = _parse_specs(rewards, use_workers=num_workers > 0)
        self.error_counts: dict[str, int] = {c.label: 0 for c in self.components}
        self._by_label = {c.label: c for c in self.components}
        self._workers: RewardWorkerPool | None = None

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.components]

    def score(self, sample: Sample) -> RewardResult:
        return self.score_batch([sample])[0]

    def score_batch(self, samples: Sequence[Sample]) -> list[RewardResult]:
        """Score every sample with every (routed) component; failures score 0 and are counted."""
        samples = list(samples)
        plan = self._plan(samples)
        outcome: dict[Task, RewardResult | Failure] = {}
        worker_tasks: list[Task] = []
        for comp in self.components:
            indices = [i for i, labels in enumerate(plan) if comp.label in labels]
            if not indices:
                continue
            if comp.in_worker:
                worker_tasks.extend((comp.label, i) for i in indices)
            else:
                outcome.update(self._score_in_process(comp, indices, samples))
        if worker_tasks:
            outcome.update(self._score_in_workers(worker_tasks, samples))
        return [self._combine(i, plan[i], outcome) for i in range(len(samples))]

    def close(self) -> None:
        """Shut the worker processes down (they restart on the next worker batch)."""
        workers, self._workers = self._workers, None
        if workers is not None:
            workers.close()

    def __enter__(self) -> CompositeReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._workers is not None:
                self._workers.close(wait=False)

    # -- planning and combining ---------------------------------------------------------------

    def _plan(self, samples: list[Sample]) -> list[list[str]]:
        plan = []
        for i, sample in enumerate(samples):
            if not isinstance(sample, Sample):
                raise TypeError(f"samples[{i}] must be a Sample, got {type(sample).__name__}")
            routed = sample.metadata.get(ROUTING_KEY)
            if routed is None:
                labels = self.labels
            else:
                if isinstance(routed, str) or not isinstance(routed, Sequence):
                    raise TypeError(
                        f"samples[{i}].metadata[{ROUTING_KEY!r}] must be a list of reward labels"
                    )
                unknown = [label for label in routed if label not in self._by_label]
                if unknown:
                    raise ValueError(
                        f"samples[{i}].metadata[{ROUTING_KEY!r}] names {unknown}, not in this "
                        f"composite; its rewards are {self.labels}"
                    )
                labels = [label for label in self.labels if label in routed]
            for label in labels:
                try:
                    self._by_label[label].reward.check(sample)
                except (TypeError, ValueError) as err:
                    raise type(err)(f"samples[{i}]: {err}") from None
            plan.append(labels)
        return plan

    def _combine(
        self, index: int, labels: list[str], outcome: dict[Task, RewardResult | Failure]
    ) -> RewardResult:
        total, scores, details, errors = 0.0, {}, {}, {}
        for label in labels:
            result = _validated(outcome.get((label, index), Failure("no result")))
            if isinstance(result, Failure):
                self.error_counts[label] += 1
                errors[label] = result.message
                scores[label] = 0.0
                logger.warning("reward %r failed on sample %d: %s", label, index, result.message)
                continue
            scores[label] = result.score
            details[label] = result.info
            total += self._by_label[label].weight * result.score
        info: dict[str, Any] = {"scores": scores, "details": details}
        if errors:
            info["errors"] = errors
        return RewardResult(score=total, info=info)

    # -- in this process ----------------------------------------------------------------------

    @staticmethod
    def _score_in_process(
        comp: _Component, indices: list[int], samples: list[Sample]
    ) -> dict[Task, RewardResult | Failure]:
        batch = [samples[i] for i in indices]
        try:
            results: list[RewardResult | Failure] = list(comp.reward.score_batch(batch))
            if len(results) != len(batch):
                raise ValueError(f"score_batch returned {len(results)} results for {len(batch)}")
        except Exception as err:  # isolate the failing sample(s) by scoring one at a time
            if len(batch) == 1:
                results = [Failure.from_exception(err)]
            else:
                results = []
                for sample in batch:
                    try:
                        results.append(comp.reward.score(sample))
                    except Exception as one_err:
                        results.append(Failure.from_exception(one_err))
        return {(comp.label, i): r for i, r in zip(indices, results, strict=True)}

    # -- in worker processes ------------------------------------------------------------------

    def _score_in_workers(
        self, tasks: list[Task], samples: list[Sample]
    ) -> dict[Task, RewardResult | Failure]:
        """Score in the worker pool, started on first use with this composite's settings."""
        if self._workers is None:
            self._workers = RewardWorkerPool(
                {c.label: c.reward for c in self.components if c.in_worker},
                num_workers=self.num_workers,
                timeout=self.timeout,
                kill_grace=self.kill_grace,
                startup_timeout=self.startup_timeout,
                mp_context=self.mp_context,
            )
        return self._workers.score(tasks, samples)


def _parse_specs(
    rewards: Sequence[Mapping[str, Any] | Reward] | Mapping[str, float], *, use_workers: bool
) -> list[_Component]:
    if isinstance(rewards, Mapping):
        specs: list[Any] = [{"name": name, "weight": weight} for name, weight in rewards.items()]
    elif isinstance(rewards, Sequence) and not isinstance(rewards, (str, bytes)):
        specs = list(rewards)
    else:
        raise TypeError(
            f"rewards must be a list of specs or a {{name: weight}} dict, got {type(rewards).__name__}"
        )
    if not specs:
        raise ValueError("CompositeReward needs at least one reward")
    components: list[_Component] = []
    for index, spec in enumerate(specs):
        where = f"rewards[{index}]"
        if isinstance(spec, Reward):
            spec = {"reward": spec}
        if not isinstance(spec, Mapping):
            raise TypeError(f"{where} must be a dict spec or a Reward, got {type(spec).__name__}")
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}")
        if ("name" in spec) == ("reward" in spec):
            raise ValueError(f"{where} needs exactly one of 'name' (registry name) or 'reward'")
        if "reward" in spec:
            reward = spec["reward"]
            if not isinstance(reward, Reward):
                raise TypeError(f"{where}.reward must be a Reward, got {type(reward).__name__}")
            if spec.get("kwargs"):
                raise ValueError(f"{where}: 'kwargs' only applies together with 'name'")
        else:
            kwargs = spec.get("kwargs") or {}
            if not isinstance(kwargs, Mapping):
                raise TypeError(f"{where}.kwargs must be a dict, got {type(kwargs).__name__}")
            reward = build_reward(spec["name"], **dict(kwargs))
        label = spec.get("label", reward.name or type(reward).__name__)
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"{where}.weight must be a number, got {weight!r}")
        if not math.isfinite(weight):
            raise ValueError(f"{where}.weight must be finite, got {weight!r}")
        if any(c.label == label for c in components):
            raise ValueError(f"{where}: reward label {label!r} is used twice; set 'label'")
        in_worker = bool(spec.get("in_worker", reward.run_in_worker)) and use_workers
        if in_worker:
            try:
                pickle.dumps(reward)
            except Exception as err:
                raise TypeError(
                    f"{where}: reward {label!r} runs in worker processes and must be picklable "
                    f"({err}); set in_worker: false to score it in this process"
                ) from err
        components.append(_Component(label, reward, float(weight), in_worker))
    return components


def _validated(result: RewardResult | Failure | Any) -> RewardResult | Failure:
    if isinstance(result, Failure):
        return result
    if not isinstance(result, RewardResult):
        return Failure(f"TypeError: returned {type(result).__name__}, expected RewardResult")
    try:
        score = float(result.score)
    except (TypeError, ValueError):
        return Failure(f"TypeError: score {result.score!r} is not a number")
    if not math.isfinite(score):
        return Failure(f"ValueError: score {score} is not finite")
    info = result.info if isinstance(result.info, dict) else {"info": result.info}
    return RewardResult(score=score, info=info)
