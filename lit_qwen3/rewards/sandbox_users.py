"""Which uid a sandbox runs as, and the process budget that uid gets.

``user="auto"`` leases each run a uid from a range no one else uses (:func:`lease_uid`): an
exclusive ``flock`` on that uid's lock file, held until the run's processes are gone, so no two
running sandboxes on the host share a uid, whatever process or thread started them.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

__all__ = ["AUTO_UID_BASE", "AUTO_UID_COUNT", "UidsExhausted", "lease_uid", "nproc_limit"]

AUTO_UID_BASE = 200_000
AUTO_UID_COUNT = 4096 * 16
UID_LOCKS = os.path.join(tempfile.gettempdir(), "lit-qwen3-sandbox-uids")


class UidsExhausted(RuntimeError):
    """Every uid of the range is leased by a running sandbox."""


def lease_uid() -> tuple[int, int]:
    """A uid no other running sandbox on this host has, and the descriptor holding it.

    Each uid of the range has a lock file; a run holds an exclusive ``flock`` on its uid's file
    until its processes are gone, so concurrent sandboxes (threads, worker processes, other
    trainers on the host) never share a uid, its process budget or its files in ``/dev/shm``.
    """
    os.makedirs(UID_LOCKS, mode=0o700, exist_ok=True)
    for step in range(AUTO_UID_COUNT):  # the lowest free one: as many lock files as runs at once
        uid = AUTO_UID_BASE + step
        fd = os.open(
            os.path.join(UID_LOCKS, str(uid)), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return uid, fd
    raise UidsExhausted(f"all {AUTO_UID_COUNT} sandbox uids are in use")


def nproc_limit(ids: tuple[int, int] | None, max_processes: int) -> int | None:
    """``RLIMIT_NPROC`` counts every task (process or thread) of the real uid, system-wide.

    With a uid of our own the budget is the sandbox's alone. As the calling user (``user=None``)
    the count already includes the caller's own tasks, so the limit adds to that. As root with
    ``user=None`` the limit is not enforced at all: only the wall clock and the PID namespace
    contain a fork bomb then.
    """
    if ids is not None:
        return max_processes
    uid = os.getuid()
    if uid == 0:
        return None
    tasks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            tasks += int(fields.get("Threads", "1"))
    return tasks + max_processes
