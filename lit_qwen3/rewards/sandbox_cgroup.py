"""Cgroups per sandbox run: one memory, CPU and process limit for all of a program's processes.

``RLIMIT_AS`` bounds each process, so a program that forks ``n`` children may use ``n`` times
the limit. A cgroup bounds them all, tmpfs pages included. This module finds a place where this
process may create cgroups with the memory controller:

- **cgroup v2**: this process's own cgroup or the hierarchy's root, when ``memory`` is enabled
  (or can be enabled) in its ``cgroup.subtree_control`` and the directory is writable (root on
  a systemd host: the root cgroup; a delegated subtree; not a container whose only cgroup holds
  its processes, since v2 forbids controllers in a cgroup that has processes);
- **cgroup v1**: this process's cgroup in the ``memory`` hierarchy, when writable.

Each run gets a leaf ``lit-qwen3-sandbox-<pid>-<n>`` with ``memory.max`` (v2, swap off) or
``memory.limit_in_bytes`` (v1, plus ``memsw`` when swap is accounted); the launcher joins it
before it forks. When neither is available, :func:`memory_cgroup_support` says why and the
sandbox falls back to per-process limits (see :mod:`lit_qwen3.rewards.sandbox`).

The same leaf (v2) or one leaf per hierarchy (v1) limits CPU time (``cpu.max`` /
``cpu.cfs_quota_us``: about one CPU per sandbox, so a program's spinning children cannot starve
the sandboxes beside it) and tasks (``pids.max``: a budget of its own, not one shared by every
sandbox of a uid); :func:`resource_cgroups`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import signal
import time

__all__ = [
    "MemoryCgroup",
    "controller_support",
    "memory_cgroup_support",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "resource_cgroups",
]

_PREFIX = "lit-qwen3-sandbox-"
_counter = itertools.count()


def memory_cgroup_support() -> tuple[str | None, str]:
    """``(version, parent directory)`` where runs get their cgroups, or ``(None, reason)``."""
    return controller_support("memory")


@functools.cache
def controller_support(controller: str) -> tuple[str | None, str]:
    """``(version, parent directory)`` where runs get a cgroup with ``controller`` (``memory``,
    ``cpu``, ``pids``), or ``(None, reason)``."""
    reasons = []
    mounts = _cgroup_mounts()
    own = _own_cgroups()
    v2_mount = mounts.get("cgroup2")
    if v2_mount is not None and "" in own:
        candidates = [_join(v2_mount, own[""]), v2_mount[0]]
        for directory in dict.fromkeys(candidates):
            usable, why = _usable("v2", directory, controller)
            if usable:
                return "v2", directory
            reasons.append(f"cgroup v2 at {directory}: {why}")
    v1_mount = mounts.get(controller)
    if v1_mount is not None and controller in own:
        directory = _join(v1_mount, own[controller])
        usable, why = _usable("v1", directory, controller)
        if usable:
            return "v1", directory
        reasons.append(f"cgroup v1 {controller} at {directory}: {why}")
    if not reasons:
        reasons.append(f"no cgroup hierarchy with the {controller} controller is mounted")
    return None, "; ".join(reasons)


class MemoryCgroup:
    """One leaf cgroup limiting the memory of everything that joins it (and its children)."""

    def __init__(self, version: str, path: str) -> None:
        self.version = version
        self.path = path

    @classmethod
    def create(cls, limit_bytes: int) -> MemoryCgroup | None:
        """A new cgroup limited to ``limit_bytes`` (swap not allowed), or None where
        :func:`memory_cgroup_support` found no place for one."""
        version, parent = memory_cgroup_support()
        if version is None:
            return None
        path = os.path.join(parent, f"{_PREFIX}{os.getpid()}-{next(_counter)}")
        os.mkdir(path)
        group = cls(version, path)
        try:
            group._limit(limit_bytes)
        except OSError:
            group.remove()
            raise
        return group

    @property
    def procs(self) -> str:
        """Write a pid here to move that process into the cgroup."""
        return os.path.join(self.path, "cgroup.procs")

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this cgroup for going over the limit."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        counts = _read_keyed(os.path.join(self.path, name))
        if "oom_kill" in counts:
            return counts["oom_kill"] > 0
        return _read_int(os.path.join(self.path, "memory.failcnt")) > 0  # v1 before Linux 4.13

    def remove(self) -> None:
        """Kill whatever is left in the cgroup and delete it (retrying while it empties)."""
        kill = os.path.join(self.path, "cgroup.kill")
        deadline = time.monotonic() + 2.0
        while True:
            if os.path.exists(kill):
                with contextlib.suppress(OSError):
                    _write(kill, "1")
            else:
                for pid in _read_pids(self.procs):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def limit(self, controller: str, value: float) -> None:
        """Set ``controller``'s limit: bytes (memory), CPUs (cpu) or tasks (pids)."""
        if controller == "memory":
            self._limit(int(value))
        elif controller == "cpu":
            period = 100_000
            quota = max(1000, int(value * period))
            if self.version == "v2":
                _write(os.path.join(self.path, "cpu.max"), f"{quota} {period}")
            else:
                _write(os.path.join(self.path, "cpu.cfs_period_us"), str(period))
                _write(os.path.join(self.path, "cpu.cfs_quota_us"), str(quota))
        elif controller == "pids":
            _write(os.path.join(self.path, "pids.max"), str(int(value)))
        else:
            raise ValueError(f"unknown cgroup controller {controller!r}")

    def _limit(self, limit_bytes: int) -> None:
        if self.version == "v2":
            _write(os.path.join(self.path, "memory.max"), str(limit_bytes))
            swap = os.path.join(self.path, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")
            return
        _write(os.path.join(self.path, "memory.limit_in_bytes"), str(limit_bytes))
        memsw = os.path.join(self.path, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            _write(memsw, str(limit_bytes))


def _usable(version: str, directory: str, controller: str = "memory") -> tuple[bool, str]:
    """Try creating, limiting and deleting a cgroup under ``directory``; say why not."""
    if version == "v2":
        controllers = _read_words(os.path.join(directory, "cgroup.controllers"))
        if controller not in controllers:
            return False, f"the {controller} controller is not available there"
        subtree = os.path.join(directory, "cgroup.subtree_control")
        if controller not in _read_words(subtree):
            try:
                _write(subtree, f"+{controller}")
            except OSError as err:
                return False, f"cannot enable the {controller} controller for children ({err})"
    _remove_stale(directory)
    try:
        path = os.path.join(directory, f"{_PREFIX}{os.getpid()}-probe-{controller}")
        os.mkdir(path)
    except OSError as err:
        return False, f"cannot create a cgroup ({err})"
    group = MemoryCgroup(version, path)
    try:
        group.limit(controller, _PROBE_LIMITS[controller])
    except OSError as err:
        return False, f"cannot set a {controller} limit ({err})"
    finally:
        with contextlib.suppress(OSError):
            group.remove()
    return True, "ok"


_PROBE_LIMITS = {"memory": 64 << 20, "cpu": 1.0, "pids": 64}


def resource_cgroups(memory: MemoryCgroup | None, cpus: float, pids: int) -> list[MemoryCgroup]:
    """CPU (``cpus`` CPUs' worth of time) and process (``pids`` tasks) limits for one run.

    On cgroup v2 a process belongs to one cgroup, so the limits go into ``memory``'s when it is
    there (returns nothing new); on v1 each controller has its own hierarchy and gets a leaf of
    its own, returned for the launcher to join and the caller to remove. Controllers this
    machine does not offer are skipped (:func:`controller_support` says why).
    """
    created: dict[str, MemoryCgroup] = {}
    try:
        for controller, value in (("cpu", cpus), ("pids", pids)):
            version, parent = controller_support(controller)
            if version is None:
                continue
            if memory is not None and memory.version == version == "v2":
                if os.path.dirname(memory.path) == parent:
                    memory.limit(controller, value)
                    continue
            if parent not in created:
                path = os.path.join(parent, f"{_PREFIX}{os.getpid()}-{next(_counter)}")
                os.mkdir(path)
                created[parent] = MemoryCgroup(version, path)
            created[parent].limit(controller, value)
    except OSError:
        for group in created.values():
            with contextlib.suppress(OSError):
                group.remove()
        raise
    return list(created.values())


def _remove_stale(directory: str) -> None:
    """Delete empty sandbox cgroups left by processes that died before cleaning up."""
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if not name.startswith(_PREFIX):
                continue
            pid = name[len(_PREFIX) :].split("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(directory, name))


def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    return parse_mountinfo(_read_text("/proc/self/mountinfo"))


def _own_cgroups() -> dict[str, str]:
    return parse_proc_cgroup(_read_text("/proc/self/cgroup"))


def parse_mountinfo(text: str) -> dict[str, tuple[str, str]]:
    """``"cgroup2"`` and v1 controller names -> (mount point, root of the mount)."""
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point = fields[4].replace("\\040", " ")
        if tail[0] == "cgroup2":
            found.setdefault("cgroup2", (point, fields[3]))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                found.setdefault(option, (point, fields[3]))
    return found


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """A process's cgroup path per v1 controller, and ``""`` for v2 (``/proc/PID/cgroup``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for name in controllers.split(",") if controllers else [""]:
            out[name] = path
    return out


def _read_text(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _join(mount: tuple[str, str], path: str) -> str:
    point, root = mount
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return os.path.join(point, path.lstrip("/")).rstrip("/") or "/"


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _read_words(path: str) -> list[str]:
    try:
        with open(path) as handle:
            return handle.read().split()
    except OSError:
        return []


def _read_keyed(path: str) -> dict[str, int]:
    out = {}
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    out[key] = int(value)
    except OSError:
        pass
    return out


def _read_int(path: str) -> int:
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _read_pids(path: str) -> list[int]:
    return [int(word) for word in _read_words(path) if word.isdigit()]
