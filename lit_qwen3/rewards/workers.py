"""Worker processes of :class:`~lit_qwen3.rewards.composite.CompositeReward`: timeouts, kills,
recycling.

Slow or unsafe rewards (math-verify, code execution) score one sample per task in a process
pool, so that a reward stuck on one sample cannot stall training. Two clocks guard each task: an
interval timer inside the worker, and, for code stuck in C where signals never arrive, the
parent, which kills the pool after ``timeout + kill_grace`` and starts a new one. Whatever a
reward raises in a worker (``SystemExit`` and ``KeyboardInterrupt`` included) comes back as a
:class:`~lit_qwen3.rewards.outcome.Failure`.

Each result also carries the worker's task count and resident memory. When one worker has done
``max_tasks_per_worker`` tasks or holds more than ``max_worker_memory_mb``, the pool stops
handing out tasks, lets those in flight finish, and replaces all its workers (``concurrent.
futures`` cannot retire a single worker before Python 3.11, and recycling them together keeps
start-up cost in one place).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import pickletools
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from lit_qwen3.rewards.base import Reward, RewardResult, Sample
from lit_qwen3.rewards.outcome import Failure, Task

logger = logging.getLogger("lit_qwen3.rewards")

_POLL_S = 0.05


@dataclass(frozen=True)
class _Done:
    """A worker's answer for one task, with what the parent needs to decide on recycling."""

    result: RewardResult | Failure
    pid: int
    tasks: int
    rss_bytes: int


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
        max_tasks_per_worker: int | None = None,
        max_worker_memory_mb: int | None = None,
        recycles: int = 0,
    ) -> None:
        self.rewards = dict(rewards)
        self.max_tasks_per_worker = max_tasks_per_worker
        self.max_worker_memory_mb = max_worker_memory_mb
        self.recycles = recycles
        """How many times the workers were replaced for tasks done or memory held."""
        self._recycle_reason: str | None = None
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
            if self._recycle_reason is not None and not running:
                self._recycle()
            executor = self._ensure_started()
            while queue and len(running) < self.num_workers and self._recycle_reason is None:
                if queue[0][2] and running:  # a suspect runs alone
                    break
                label, i, suspect = queue.popleft()
                future = executor.submit(_worker_score, label, samples[i], self.timeout)
                running[future] = (label, i, suspect, time.monotonic())
                if suspect:
                    break
            done, _ = wait(list(running), timeout=_POLL_S, return_when=FIRST_COMPLETED)
            alone = len(running) == 1
            broken = self._collect(done, running, out)
            if broken:  # a dead worker fails every future in flight: gather them all
                done, _ = wait(list(running), timeout=1.0)
                broken += self._collect(done, running, out)
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
        hide_main = not _needs_main_module(self.rewards)
        try:
            with _main_module_hidden(hide_main):
                self._start_workers(executor, pids, started)
        except Exception as err:
            self._kill()
            raise RuntimeError(f"could not start reward worker processes: {err}") from err
        return executor

    def _start_workers(self, executor: ProcessPoolExecutor, pids: set[int], started: float) -> None:
        """Ping until every worker has answered once (each ping may land on any worker)."""
        while len(pids) < self.num_workers:
            pings = [executor.submit(_worker_ping, 0.05) for _ in range(self.num_workers)]
            left = self.startup_timeout - (time.monotonic() - started)
            done, not_done = wait(pings, timeout=max(left, 0.0))
            if not_done:
                raise TimeoutError(f"reward workers did not start within {self.startup_timeout:g}s")
            pids.update(f.result() for f in done)

    def _collect(
        self,
        done: set[Future],
        running: dict[Future, tuple[str, int, bool, float]],
        out: dict[Task, RewardResult | Failure],
    ) -> list[tuple[str, int, bool]]:
        """Move finished futures from ``running`` to ``out``; return those whose worker died.
        Note a worker that asks to be recycled."""
        broken = []
        for future in done:
            label, i, suspect, _ = running.pop(future)
            try:
                answer = future.result()
            except BrokenProcessPool:
                broken.append((label, i, suspect))
                continue
            except BaseException as err:  # noqa: BLE001 - raised in the worker, sent back
                out[(label, i)] = Failure.from_exception(err)
                continue
            out[(label, i)] = answer.result
            self._note_worker(answer)
        return broken

    def _note_worker(self, answer: _Done) -> None:
        if self._recycle_reason is not None:
            return
        if self.max_tasks_per_worker is not None and answer.tasks >= self.max_tasks_per_worker:
            self._recycle_reason = f"worker {answer.pid} scored {answer.tasks} samples"
        elif (
            self.max_worker_memory_mb is not None
            and answer.rss_bytes > self.max_worker_memory_mb << 20
        ):
            self._recycle_reason = (
                f"worker {answer.pid} holds {answer.rss_bytes >> 20} MB "
                f"(max_worker_memory_mb={self.max_worker_memory_mb})"
            )

    def _recycle(self) -> None:
        logger.info("recycling reward workers: %s", self._recycle_reason)
        self._recycle_reason = None
        self.recycles += 1
        self.close(wait=True)

    def _kill(self) -> None:
        self._recycle_reason = None  # the replacements start fresh anyway
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


# --------------------------------------------------------------------------------------------
# Worker side (module level so that spawn/forkserver workers can unpickle them)

_WORKER_REWARDS: dict[str, Reward] = {}
_WORKER_TASKS = [0]


class _DeadlineExceeded(BaseException):
    """Raised by the interval timer. A BaseException, so ``except Exception`` in reward code (as
    in math-verify) cannot turn a timeout into a silent wrong answer."""


def _needs_main_module(rewards: Mapping[str, Reward]) -> bool:
    """Whether unpickling the rewards in a worker needs the parent's ``__main__`` module (a
    reward class or function the user's script defines)."""
    try:
        data = pickle.dumps(dict(rewards))
    except Exception:  # noqa: BLE001 - the pool reports what cannot be pickled when it starts
        return True
    return any(
        op.name in ("GLOBAL", "INST")
        and str(arg).startswith("__main__ ")
        or op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE")
        and arg == "__main__"
        for op, arg, _ in pickletools.genops(data)
    )


@contextlib.contextmanager
def _main_module_hidden(hide: bool) -> Iterator[None]:
    """Start processes without re-running the user's script in each of them.

    ``spawn`` and ``forkserver`` children import the parent's ``__main__`` from its file or
    module name. A script without an ``if __name__ == "__main__":`` guard would then run again
    in every worker and fail there (Python refuses to start processes while one bootstraps).
    The workers need nothing from ``__main__`` unless a reward is defined there, so while they
    start, ``__main__`` shows no file and no module name, as in an interactive session.
    """
    main = sys.modules.get("__main__")
    if not hide or main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


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


def _worker_score(label: str, sample: Sample, timeout: float) -> _Done:
    """Score one task; anything the reward raises becomes a :class:`Failure`."""
    result: RewardResult | Failure
    try:
        with _interval_timer(timeout):
            result = _WORKER_REWARDS[label].score(sample)
    except _DeadlineExceeded:
        result = Failure(f"TimeoutError: reward {label!r} took longer than {timeout:g}s")
    except BaseException as err:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: the reward's bug
        result = Failure.from_exception(err)
    _WORKER_TASKS[0] += 1
    return _Done(result, os.getpid(), _WORKER_TASKS[0], _resident_bytes())


def _resident_bytes() -> int:
    """Current resident memory (Linux); elsewhere the peak, which only grows."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
