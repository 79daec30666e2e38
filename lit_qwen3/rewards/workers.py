"""Worker processes of :class:`~lit_qwen3.rewards.base.CompositeReward`: timeouts and kills.

Slow or unsafe rewards (math-verify, code execution) score one sample per task in a process
pool, so that a reward stuck on one sample cannot stall training. Two clocks guard each task: an
interval timer inside the worker, and, for code stuck in C where signals never arrive, the
parent, which kills the pool after ``timeout + kill_grace`` and starts a new one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # base imports this module; the types are only needed for annotations
    from lit_qwen3.rewards.base import Reward, RewardResult, Sample

_POLL_S = 0.05

#: ``(component label, sample index)``: one reward scoring one sample.
Task = tuple[str, int]


@dataclass(frozen=True)
class Failure:
    """A reward that raised, timed out or returned garbage for one sample."""

    message: str

    @classmethod
    def from_exception(cls, err: BaseException) -> Failure:
        text = f"{type(err).__name__}: {err}"
        return cls(text if len(text) <= 500 else text[:497] + "...")


class RewardWorkerPool:
    """Scores ``(label, sample)`` tasks in ``num_workers`` processes, each task under a timeout.

    The processes start on the first :meth:`score` (and again after :meth:`close`), each with
    its own copy of ``rewards`` (label -> picklable :class:`Reward`). ``mp_context`` is
    ``"forkserver"`` or ``"spawn"``: never fork a process that holds torch and its threads.
    """

    def __init__(
        self,
        rewards: Mapping[str, Reward],
        *,
        num_workers: int,
        timeout: float,
        kill_grace: float,
        startup_timeout: float,
        mp_context: str,
    ) -> None:
        self.rewards = dict(rewards)
        self.num_workers = num_workers
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.startup_timeout = startup_timeout
        self.mp_context = mp_context
        self._executor: ProcessPoolExecutor | None = None

    def score(
        self, tasks: Sequence[Task], samples: Sequence[Sample]
    ) -> dict[Task, RewardResult | Failure]:
        """Keep at most ``num_workers`` tasks in flight so each task's clock starts when it does.

        A task that overruns ``timeout + kill_grace`` fails; the pool is killed and rebuilt and the
        other in-flight tasks are resubmitted. When a worker dies (the pool breaks) the tasks in
        flight are retried one at a time, so only the one that kills its worker fails.
        """
        out: dict[Task, RewardResult | Failure] = {}
        queue: deque[tuple[str, int, bool]] = deque((label, i, False) for label, i in tasks)
        running: dict[Future, tuple[str, int, bool, float]] = {}
        deadline = self.timeout + self.kill_grace
        while queue or running:
            executor = self._ensure_started()
            while queue and len(running) < self.num_workers:
                if queue[0][2] and running:  # a suspect runs alone
                    break
                label, i, suspect = queue.popleft()
                future = executor.submit(_worker_score, label, samples[i], self.timeout)
                running[future] = (label, i, suspect, time.monotonic())
                if suspect:
                    break
            done, _ = wait(list(running), timeout=_POLL_S, return_when=FIRST_COMPLETED)
            alone = len(running) == 1
            broken = _collect(done, running, out)
            if broken:  # a dead worker fails every future in flight: gather them all
                done, _ = wait(list(running), timeout=1.0)
                broken += _collect(done, running, out)
            now = time.monotonic()
            overdue = [f for f, (*_, start) in running.items() if now - start > deadline]
            if not (broken or overdue):
                continue
            for future in overdue:
                label, i, _, _ = running.pop(future)
                out[(label, i)] = Failure(
                    f"TimeoutError: no result after {deadline:g}s; worker process killed"
                )
            for label, i, suspect, _ in running.values():  # innocent: resubmit, clock restarts
                queue.appendleft((label, i, suspect))
            running.clear()
            for label, i, suspect in broken:
                if suspect or alone:
                    out[(label, i)] = Failure("BrokenProcessPool: the worker process died")
                else:
                    queue.appendleft((label, i, True))
            self._kill()
        return out

    def close(self, *, wait: bool = True) -> None:
        """Shut the worker processes down (they restart on the next :meth:`score`)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def _ensure_started(self) -> ProcessPoolExecutor:
        if self._executor is not None:
            return self._executor
        executor = ProcessPoolExecutor(
            max_workers=self.num_workers,
            mp_context=multiprocessing.get_context(self.mp_context),
            initializer=_worker_init,
            initargs=(self.rewards,),
        )
        self._executor = executor
        # Start every worker (imports, reward construction) before any task's clock runs.
        started = time.monotonic()
        pids: set[int] = set()
        try:
            while len(pids) < self.num_workers:
                pings = [executor.submit(_worker_ping, 0.05) for _ in range(self.num_workers)]
                left = self.startup_timeout - (time.monotonic() - started)
                done, not_done = wait(pings, timeout=max(left, 0.0))
                if not_done:
                    raise TimeoutError(
                        f"reward workers did not start within {self.startup_timeout:g}s"
                    )
                pids.update(f.result() for f in done)
        except Exception as err:
            self._kill()
            raise RuntimeError(f"could not start reward worker processes: {err}") from err
        return executor

    def _kill(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # ProcessPoolExecutor has no public way to kill its workers before Python 3.14.
        processes = list((getattr(executor, "_processes", None) or {}).values())
        for process in processes:
            with contextlib.suppress(Exception):
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=5)


def _collect(
    done: set[Future],
    running: dict[Future, tuple[str, int, bool, float]],
    out: dict[Task, RewardResult | Failure],
) -> list[tuple[str, int, bool]]:
    """Move finished futures from ``running`` to ``out``; return those whose worker died."""
    broken = []
    for future in done:
        label, i, suspect, _ = running.pop(future)
        try:
            out[(label, i)] = future.result()
        except BrokenProcessPool:
            broken.append((label, i, suspect))
        except Exception as err:
            out[(label, i)] = Failure.from_exception(err)
    return broken


# --------------------------------------------------------------------------------------------
# Worker side (module level so that spawn/forkserver workers can unpickle them)

_WORKER_REWARDS: dict[str, Reward] = {}


class _DeadlineExceeded(BaseException):
    """Raised by the interval timer. A BaseException, so ``except Exception`` in reward code (as
    in math-verify) cannot turn a timeout into a silent wrong answer."""


def _worker_init(rewards: dict[str, Reward]) -> None:
    _WORKER_REWARDS.clear()
    _WORKER_REWARDS.update(rewards)
    # Ctrl-C goes to the whole foreground group; let the parent decide, not every worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_ping(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@contextlib.contextmanager
def _interval_timer(seconds: float) -> Iterator[None]:
    """Raise :class:`_DeadlineExceeded` after ``seconds``; workers run tasks in their main
    thread, where signals work (unlike math-verify's own alarm called from a thread)."""

    def _expire(signum: int, frame: Any) -> None:
        raise _DeadlineExceeded

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _worker_score(label: str, sample: Sample, timeout: float) -> RewardResult:
    try:
        with _interval_timer(timeout):
            return _WORKER_REWARDS[label].score(sample)
    except _DeadlineExceeded:
        raise TimeoutError(f"reward {label!r} took longer than {timeout:g}s") from None
