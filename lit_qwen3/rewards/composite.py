"""The weighted sum the trainer calls: routing, worker processes, failures scored 0 and counted.

:class:`CompositeReward` scores each sample with its (routed) rewards. Rewards that are slow or
unsafe (``run_in_worker = True``: math, code) run in worker processes with a timeout per sample
(:mod:`lit_qwen3.rewards.workers`), recycled after ``max_tasks_per_worker`` tasks or above
``max_worker_memory_mb``. A reward that raises (anything, ``SystemExit`` and
``KeyboardInterrupt`` included), times out, or returns something that is not a finite real score
scores 0 for that sample, is counted in ``error_counts`` and logged on the ``lit_qwen3.rewards``
logger: one bad sample or buggy reward never stops a run. The one exception is a real Ctrl-C
(SIGINT) arriving while a reward runs in this process: it still interrupts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lit_qwen3.rewards.base import Reward, RewardResult, Sample, build_reward
from lit_qwen3.rewards.outcome import Failure, Task, validated
from lit_qwen3.rewards.workers import RewardWorkerPool

__all__ = ["ROUTING_KEY", "CompositeReward"]

logger = logging.getLogger("lit_qwen3.rewards")

#: Metadata key that restricts a sample to some of a composite's rewards (a list of labels), so a
#: batch mixing math and code queries can go through one ``CompositeReward``.
ROUTING_KEY = "rewards"


@dataclass(frozen=True)
class _Component:
    label: str
    reward: Reward
    weight: float
    in_worker: bool
    every_query: bool = False


_SPEC_KEYS = {"name", "weight", "kwargs", "label", "in_worker", "reward", "every_query"}


class CompositeReward:
    """Weighted sum of rewards, built from YAML: ``[{name: math, weight: 1.0, kwargs: {...}}]``.

    Args:
        rewards: a list of specs or a ``{name: weight}`` mapping. A spec is a dict with ``name``
            (registry name) or ``reward`` (a built :class:`Reward`), and optional ``weight``
            (1.0), ``kwargs`` (constructor arguments), ``label`` (defaults to the name; needed
            when one reward appears twice), ``in_worker`` (overrides the reward's default) and
            ``every_query`` (score every sample, whatever its routing: a flag-following or
            length reward that holds across tasks).
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
        max_tasks_per_worker: recycle the workers (all of them, between tasks) once one has
            scored this many samples; None never recycles on count. Bounds slow leaks (caches
            in math-verify, sympy) over days-long runs.
        max_worker_memory_mb: recycle the workers once one's resident memory exceeds this;
            None never recycles on memory.

    A sample's ``metadata["rewards"]`` (list of labels), when present, limits it to those
    components (and the ``every_query`` ones), so mixed-task batches (math and code queries)
    share one composite.
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
        max_tasks_per_worker: int | None = 1000,
        max_worker_memory_mb: int | None = 2048,
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
        for name, value in (
            ("max_tasks_per_worker", max_tasks_per_worker),
            ("max_worker_memory_mb", max_worker_memory_mb),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        self.max_tasks_per_worker = max_tasks_per_worker
        self.max_worker_memory_mb = max_worker_memory_mb
        self.timeout = float(timeout)
        self.num_workers = num_workers
        self.mp_context = mp_context
        self.kill_grace = float(kill_grace)
        self.startup_timeout = float(startup_timeout)
        self.components = _parse_specs(rewards, use_workers=num_workers > 0)
        self.error_counts: dict[str, int] = {c.label: 0 for c in self.components}
        self._by_label = {c.label: c for c in self.components}
        self._workers: RewardWorkerPool | None = None
        self._recycled = 0

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.components]

    @property
    def worker_recycles(self) -> int:
        """How many times the worker processes were replaced for tasks done or memory."""
        return self._workers.recycles if self._workers is not None else self._recycled

    def score(self, sample: Sample) -> RewardResult:
        return self.score_batch([sample])[0]

    def check(self, samples: Sequence[Sample]) -> None:
        """Raise what scoring would for these samples' metadata (routing, each routed reward's
        :meth:`~lit_qwen3.rewards.base.Reward.check`) without scoring: a data set's errors
        surface when it is loaded, not in the middle of a run."""
        self._plan(list(samples))

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
            self._recycled = workers.recycles
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
                labels = [c.label for c in self.components if c.label in routed or c.every_query]
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
            result = validated(outcome.get((label, index), Failure("no result")))
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
        """Score the batch; if it raises, score one sample at a time to isolate the failure."""
        batch = [samples[i] for i in indices]
        with _real_interrupts() as interrupted:
            try:
                results: list[RewardResult | Failure] = list(comp.reward.score_batch(batch))
                if len(results) != len(batch):
                    raise ValueError(
                        f"score_batch returned {len(results)} results for {len(batch)}"
                    )
            except BaseException as err:  # noqa: BLE001 - SystemExit from a reward is its bug
                if interrupted():
                    raise
                if len(batch) == 1:
                    results = [Failure.from_exception(err)]
                else:
                    results = []
                    for sample in batch:
                        try:
                            results.append(comp.reward.score(sample))
                        except BaseException as one_err:  # noqa: BLE001
                            if interrupted():
                                raise
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
                max_tasks_per_worker=self.max_tasks_per_worker,
                max_worker_memory_mb=self.max_worker_memory_mb,
                recycles=self._recycled,
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
        every_query = spec.get("every_query", False)
        if not isinstance(every_query, bool):
            raise TypeError(f"{where}.every_query must be true or false, got {every_query!r}")
        components.append(_Component(label, reward, float(weight), in_worker, every_query))
    return components


@contextlib.contextmanager
def _real_interrupts() -> Iterator[Callable[[], bool]]:
    """Tell a real Ctrl-C from a reward that raises ``KeyboardInterrupt``: while a reward runs in
    this process, SIGINT (main thread only: where Python delivers it) sets a flag before the
    usual handler runs. Yields a function that says whether one arrived."""
    seen = [False]
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    installed = previous is not None  # None: a handler not set from Python; leave it alone
    if installed:

        def on_sigint(signum: int, frame: Any) -> None:
            seen[0] = True
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: seen[0]
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)
