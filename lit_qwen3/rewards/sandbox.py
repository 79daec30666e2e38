"""Run untrusted, model-written programs in a throwaway sandbox (Linux).

Public API: :meth:`Sandbox.run_python` (and :meth:`Sandbox.run` for any argv) returns a
:class:`SandboxResult` of plain data — ``stdout``, ``stderr``, ``returncode``, ``timed_out``,
``output_truncated``, ``oom_killed`` and, when asked for, ``results`` (what the program wrote on
its result pipe, fd 3). :meth:`Sandbox.isolation` says what this machine provides.

What contains what (the child side is :mod:`lit_qwen3.rewards.sandbox_launch`):

- **Processes**: a new PID namespace under a small init process. When the program ends, times
  out or the init dies, the kernel kills everything left in the namespace, including children
  that called ``setsid``. The parent also kills the whole process group on timeout.
- **Privileges**: the program runs under an unprivileged uid (``user="auto"``: a uid leased for
  the run, never shared by two running sandboxes on the host), with ``no_new_privs`` (setuid binaries gain nothing) and a seccomp filter
  (:mod:`lit_qwen3.rewards.sandbox_seccomp`: no nested namespaces, mounts, ptrace, kernel
  modules, BPF, io_uring...; x86_64 and aarch64, elsewhere no filter and a WARNING).
- **Memory**: one limit for the whole sandbox, ``memory_mb``, from a cgroup
  (:mod:`lit_qwen3.rewards.sandbox_cgroup`, v2 or v1, where this process may create one; tmpfs
  pages count). Fallback where no cgroup can be created: ``RLIMIT_AS`` of ``memory_mb`` per
  process and ``RLIMIT_NPROC`` of ``max_processes``, so the sandbox as a whole may use up to
  ``memory_mb * max_processes`` plus ``disk_mb``. ``RLIMIT_AS`` applies in both modes (a single
  process over it gets a ``MemoryError`` rather than a kill). :meth:`Sandbox.isolation` names
  the mode in use.
- **Time**: ``RLIMIT_CPU`` per process plus a wall-clock limit enforced by the parent; a ``cpu``
  cgroup gives the whole sandbox ``cpus`` CPUs (1 by default) and a ``pids`` cgroup
  ``max_processes`` tasks, so one sandbox cannot starve another; where the machine has no such
  cgroup :meth:`Sandbox.isolation` says so.
- **Files**: ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, no core dumps; stdout, stderr and the result
  pipe are read with one cap and the program is killed when it writes more.
- **File system**: a fresh root: read-only bind mounts of ``/usr`` (and ``/lib``, ``/bin``...),
  the interpreter's prefixes (a virtual environment and its base) and ``read_only_paths``; a
  minimal ``/dev``; a fresh ``/proc`` showing only the sandbox's processes; private, size-capped
  tmpfs ``/tmp`` (holding the working directory) and ``/dev/shm``. The host's ``/etc``, ``/home``,
  ``/root``, ``/var``, ``/sys``, the project checkout and everything else are absent.
- **IPC**: a private IPC namespace: System V shared memory, semaphores and message queues die
  with the sandbox and are invisible to the next one and to the host.
- **Input**: stdin is a pipe fed by the parent; no file descriptor of the host leaks in.
- **Environment**: a scrubbed environment; Python runs with ``-I`` (isolated mode).
- **Network**: a new network namespace (only a down loopback device). Where the kernel refuses
  (no ``CAP_SYS_ADMIN``, no user namespaces) the sandbox refuses to start, unless
  ``network="allow-unsafe"``, which logs a WARNING every time a sandbox starts.

The interpreter (``python``; default: this process's, so a virtual environment's packages are
importable) must import ``require_modules`` (numpy by default); :meth:`Sandbox.ensure_available`
checks that inside a sandbox at start-up and raises :class:`SandboxUnavailable` saying what is
missing.

Not run as root, the sandbox uses an unprivileged user namespace for the namespaces; it then
cannot switch uid or create cgroups, so it needs ``user=None`` (the program runs as the calling
user, mapped to root inside its user namespace; logged as a WARNING each start: trusted code
only) and falls back to per-process memory limits.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from lit_qwen3.rewards import sandbox_launch, sandbox_users
from lit_qwen3.rewards.sandbox_cgroup import (
    MemoryCgroup,
    controller_support,
    memory_cgroup_support,
    resource_cgroups,
)
from lit_qwen3.rewards.sandbox_io import collect, kill_group
from lit_qwen3.rewards.sandbox_seccomp import seccomp_filter

logger = logging.getLogger("lit_qwen3.rewards")

__all__ = [
    "Sandbox",
    "SandboxBusy",
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "SandboxUnavailable",
]

_WORKDIR = "/tmp/sandbox"
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_TARGET_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": _WORKDIR,
    "TMPDIR": "/tmp",
    "OMP_NUM_THREADS": "1",  # one CPU each: BLAS thread pools would only fight over it
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
#: The result pipe's descriptor in the program (``results_fd=True``).
RESULTS_FD = sandbox_launch.RESULTS_FD


class SandboxUnavailable(RuntimeError):
    """This machine cannot provide the isolation the configuration asks for."""


class SandboxError(RuntimeError):
    """The launcher failed to set up a sandbox run (not the program's fault)."""


class SandboxBusy(SandboxError):
    """Every sandbox uid is leased by a running sandbox: transient, so never cached as
    :class:`SandboxUnavailable`; retry once a run finishes."""


class _ExecFailed(SandboxError):
    """The program could not be executed (missing, or not readable by the sandbox user)."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sandboxed run. The defaults suit short competitive-programming tests."""

    wall_time_s: float = 5.0
    """Wall-clock limit, enforced by the parent (kills the whole sandbox)."""
    cpu_time_s: float = 5.0
    """CPU seconds per process (``RLIMIT_CPU``, rounded up to whole seconds)."""
    memory_mb: int = 512
    """Memory of the whole sandbox (cgroup) and address space of each process (``RLIMIT_AS``);
    without a cgroup only the per-process limit holds (see the module docstring)."""
    max_processes: int = 32
    """Processes and threads of the sandbox (``pids`` cgroup where there is one; also
    ``RLIMIT_NPROC`` of the sandbox uid)."""
    cpus: float = 1.0
    """CPUs' worth of time the whole sandbox may use at once (``cpu`` cgroup quota), so its
    processes cannot starve the sandboxes beside it; where no cpu cgroup can be had only
    ``cpu_time_s`` per process holds (:meth:`Sandbox.isolation` says so)."""
    max_output_bytes: int = 1 << 20
    """stdout, stderr and result pipe kept; the program is killed when it writes more."""
    max_file_mb: int = 16
    """Largest file the program may write (``RLIMIT_FSIZE``)."""
    disk_mb: int = 64
    """Size of the private ``/tmp`` that holds the working directory."""
    max_open_files: int = 64
    """``RLIMIT_NOFILE``."""
    network: str = "deny"
    """``"deny"``: new network namespace or refuse; ``"allow-unsafe"``: no network isolation."""
    user: int | str | None = "auto"
    """``"auto"`` (a fresh unprivileged uid per sandbox), a uid or user name, or ``None``
    (the calling user: no protection of its files, logged as a WARNING)."""
    python: str | None = None
    """Interpreter for :meth:`Sandbox.run_python`; default: this one, else ``/usr/bin/python3``."""
    require_modules: tuple[str, ...] = ("numpy",)
    """Modules the interpreter must import inside the sandbox (checked at start-up)."""
    read_only_paths: tuple[str, ...] = ()
    """Extra host paths (absolute) the program may read, mounted read-only at the same place."""

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "cpu_time_s", "cpus"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"SandboxConfig.{name} must be > 0, got {value!r}")
        for name in ("memory_mb", "max_processes", "max_output_bytes", "max_file_mb", "disk_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SandboxConfig.{name} must be a positive int, got {value!r}")
        if isinstance(self.max_open_files, bool) or not (
            isinstance(self.max_open_files, int) and self.max_open_files >= 8
        ):
            raise ValueError("SandboxConfig.max_open_files must be an int >= 8")
        if self.network not in ("deny", "allow-unsafe"):
            raise ValueError(
                f"SandboxConfig.network must be 'deny' or 'allow-unsafe', got {self.network!r}"
            )
        if isinstance(self.user, bool) or not (
            self.user is None or isinstance(self.user, (int, str))
        ):
            raise ValueError("SandboxConfig.user must be 'auto', a uid, a name or None")
        for name in ("require_modules", "read_only_paths"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"SandboxConfig.{name} must be a list of str, got {value!r}")
            object.__setattr__(self, name, tuple(value))  # YAML gives lists
        for path in self.read_only_paths:
            if not os.path.isabs(path) or os.path.normpath(path) == "/":
                raise ValueError(
                    f"SandboxConfig.read_only_paths: {path!r} must be an absolute path below /"
                )


@dataclass
class SandboxResult:
    """What a sandboxed run did: plain data (``dataclasses.asdict`` gives a JSON-able dict)."""

    returncode: int | None
    """Exit status; negative: killed by that signal (as in ``subprocess``)."""
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    wall_time_s: float
    oom_killed: bool = False
    """The sandbox's memory cgroup killed a process for going over ``memory_mb``."""
    results: bytes | None = None
    """What the program wrote on fd 3 when run with ``results_fd=True``."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.output_truncated

    def describe(self) -> str:
        """One short reason, for reward info dicts."""
        if self.timed_out:
            return "timeout"
        if self.output_truncated:
            return "output_limit"
        if self.oom_killed and self.returncode != 0:
            return "memory_limit"
        if self.returncode is not None and self.returncode < 0:
            return f"killed_by_{signal.Signals(-self.returncode).name}"
        if self.returncode != 0:
            return f"exit_{self.returncode}"
        return "ok"


class Sandbox:
    """Runs programs under :class:`SandboxConfig` limits; see the module docstring."""

    _available: dict[tuple, str] = {}  # probe results per isolation setup: the interpreter
    _binds: dict[str, list[str]] = {}  # interpreter -> host paths it needs

    def __init__(self, config: SandboxConfig | None = None, **overrides: object) -> None:
        if config is not None and not isinstance(config, SandboxConfig):
            raise TypeError(f"config must be a SandboxConfig, got {type(config).__name__}")
        base = asdict(config) if config is not None else {}
        unknown = sorted(set(overrides) - set(asdict(SandboxConfig())))
        if unknown:
            raise TypeError(f"unknown SandboxConfig field(s) {unknown}")
        self.config = SandboxConfig(**{**base, **overrides})

    # -- public -----------------------------------------------------------------------------

    def ensure_available(self) -> str:
        """Probe once per process and setup: raise :class:`SandboxUnavailable` with the reason
        when the isolation cannot be had or the interpreter lacks ``require_modules``; return the
        Python interpreter the sandbox will use."""
        config = self.config
        key = (config.network, config.user, config.python, config.require_modules, os.geteuid())
        if key in Sandbox._available:
            return Sandbox._available[key]
        self._uid_gid()  # raises for a user that cannot be switched to
        candidates = [config.python] if config.python else _default_pythons()
        probe = "".join(f"import {m}\n" for m in config.require_modules) + "print('ok')"
        tried = []
        for python in candidates:
            try:
                result = self._run([python, "-I", "-c", probe], {}, b"", python, warn=False)
            except _ExecFailed as err:
                tried.append(f"{python} ({err})")
                continue
            except SandboxBusy:
                raise  # the machine can isolate; every uid is just taken right now
            except SandboxError as err:
                raise SandboxUnavailable(
                    f"cannot start a sandbox on this machine: {err}"
                    + (
                        "; set network='allow-unsafe' to run without network isolation"
                        if config.network == "deny" and "unshare" in str(err)
                        else ""
                    )
                ) from None
            if result.ok and result.stdout.strip() == "ok":
                Sandbox._available[key] = python
                logger.info("sandbox ready: python %s; %s", python, self.isolation())
                return python
            tried.append(f"{python} ({result.describe()}: {result.stderr.strip()[-300:]})")
        raise SandboxUnavailable(
            f"no Python interpreter can run in the sandbox and import {list(config.require_modules)}; "
            f"tried {tried}; install the missing modules for one of them (numpy is a dependency "
            "of lit-qwen3: the project's environment has it), set SandboxConfig.python to an "
            "interpreter that has them, or change SandboxConfig.require_modules"
        )

    def isolation(self) -> dict[str, str]:
        """What this machine gives the sandbox: memory limit mode, seccomp, network, user."""
        version, where = memory_cgroup_support() if self._cgroups_possible() else (None, "")
        if version is not None:
            memory = f"cgroup {version} ({where}): {self.config.memory_mb} MB for the whole sandbox"
        else:
            why = where or "not root"
            memory = (
                f"rlimit: {self.config.memory_mb} MB address space per process, at most "
                f"{self.config.max_processes} processes (no cgroup: {why})"
            )
        return {
            "memory": memory,
            "cpu": self._limit_mode(
                "cpu",
                f"{self.config.cpus:g} CPU for the whole sandbox",
                f"{math.ceil(self.config.cpu_time_s)} CPU seconds per process only; its "
                "processes may take every CPU while they last",
            ),
            "processes": self._limit_mode(
                "pids",
                f"{self.config.max_processes} for the whole sandbox",
                "RLIMIT_NPROC of the sandbox uid only"
                + ("" if self.config.user == "auto" else ", shared by every sandbox of that uid"),
            ),
            "seccomp": "filter" if seccomp_filter() is not None else "none (unknown architecture)",
            "network": "isolated" if self.config.network == "deny" else "host (allow-unsafe)",
            "user": {None: "calling user", "auto": "unprivileged uid, one per running sandbox"}.get(
                self.config.user, "unprivileged uid, shared by every sandbox of this config"
            ),
        }

    def _limit_mode(self, controller: str, held: str, fallback: str) -> str:
        version, where = controller_support(controller) if self._cgroups_possible() else (None, "")
        if version is not None:
            return f"cgroup {version} ({where}): {held}"
        return f"{fallback} (no {controller} cgroup: {where or 'not root'})"

    def run(
        self,
        argv: list[str],
        *,
        files: dict[str, str | bytes] | None = None,
        stdin: str | bytes = "",
        timeout: float | None = None,
        results_fd: bool = False,
    ) -> SandboxResult:
        """Run ``argv`` in a fresh working directory holding ``files`` (name -> content).

        ``stdin`` is fed through a pipe; ``timeout`` (seconds) overrides ``wall_time_s`` for this
        run; ``results_fd`` opens a write-only pipe on the program's fd 3 whose bytes come back
        as :attr:`SandboxResult.results`.
        """
        if not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a non-empty list of str")
        if not isinstance(stdin, (str, bytes)):
            raise TypeError(f"stdin must be a str, got {type(stdin).__name__}")
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        python = self.ensure_available()
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return self._run(
            list(argv),
            dict(files or {}),
            data,
            python,
            warn=True,
            timeout=timeout,
            results_fd=results_fd,
        )

    def run_python(
        self,
        source: str,
        *,
        stdin: str | bytes = "",
        files: dict[str, str | bytes] | None = None,
        timeout: float | None = None,
        results_fd: bool = False,
    ) -> SandboxResult:
        """Run Python ``source`` (saved as ``main.py``) with ``stdin``; see :meth:`run`."""
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, got {type(source).__name__}")
        python = self.ensure_available()
        return self.run(
            [python, "-I", "main.py"],
            files={**(files or {}), "main.py": source},
            stdin=stdin,
            timeout=timeout,
            results_fd=results_fd,
        )

    # -- parent side ------------------------------------------------------------------------

    def _cgroups_possible(self) -> bool:
        return os.geteuid() == 0

    def _uid_gid(self) -> tuple[int, int] | None:
        user = self.config.user
        if user is None:
            return None
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                f"the sandbox switches to an unprivileged uid (user={user!r}), which needs root; "
                "run as root, or set user=None to run untrusted code as the current user "
                "(it can then write wherever this user can)"
            )
        if user == "auto":
            return -1, -1  # a uid is leased for each run (sandbox_users.lease_uid)
        if isinstance(user, str):
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise ValueError(f"SandboxConfig.user: no such user {user!r}") from None
            uid, gid = entry.pw_uid, entry.pw_gid
        else:
            uid, gid = user, user
        if uid == 0:
            raise ValueError("SandboxConfig.user must not be root (uid 0)")
        return uid, gid

    def _run(
        self,
        argv: list[str],
        files: dict[str, str | bytes],
        stdin: bytes,
        python: str,
        *,
        warn: bool,
        timeout: float | None = None,
        results_fd: bool = False,
    ) -> SandboxResult:
        config = self.config
        if warn and config.network != "deny":
            logger.warning("sandbox starting WITHOUT network isolation (network='allow-unsafe')")
        if warn and config.user is None:
            logger.warning(
                "sandbox starting as the calling user (user=None): the program can write "
                "wherever uid %d can",
                os.geteuid(),
            )
        if warn and seccomp_filter() is None:
            logger.warning("sandbox starting WITHOUT a seccomp filter (no table for this CPU)")
        ids = self._uid_gid()
        lease = None
        if ids == (-1, -1):
            try:
                uid, lease = sandbox_users.lease_uid()
            except sandbox_users.UidsExhausted as err:
                raise SandboxBusy(str(err)) from None
            ids = (uid, uid)
        staging = tempfile.mkdtemp(prefix="lit-qwen3-sandbox-")
        cgroup, extra = None, []
        try:
            for name, content in files.items():
                if not name or "/" in name or name in (".", ".."):
                    raise ValueError(f"sandbox file name must be a plain file name, got {name!r}")
                mode = "wb" if isinstance(content, bytes) else "w"
                with open(os.path.join(staging, name), mode) as handle:
                    handle.write(content)
            if self._cgroups_possible():
                cgroup = MemoryCgroup.create(config.memory_mb << 20)
                # the launcher and the init process count too
                extra = resource_cgroups(cgroup, config.cpus, config.max_processes + 2)
            filter_bytes = seccomp_filter(any_socket=config.network != "deny")
            spec = {
                "argv": argv,
                "env": _TARGET_ENV,
                "staging": staging,
                "workdir": _WORKDIR,
                "binds": _visible_paths(python, config.read_only_paths),
                "ids": ids,
                "new_net": config.network == "deny",
                "cpu_s": math.ceil(config.cpu_time_s),
                "as_bytes": config.memory_mb << 20,
                # a pids cgroup is the sandbox's own budget; RLIMIT_NPROC would be the uid's,
                # shared with every other sandbox running as a fixed user
                "nproc": None
                if _limits_tasks(cgroup, extra)
                else sandbox_users.nproc_limit(ids, config.max_processes),
                "fsize_bytes": config.max_file_mb << 20,
                "nofile": config.max_open_files,
                "disk_mb": config.disk_mb,
                "cgroup_procs": [g.procs for g in ([cgroup] if cgroup else []) + extra],
                "seccomp": filter_bytes.hex() if filter_bytes else None,
                "pivot_root_nr": sandbox_launch.PIVOT_ROOT_SYSCALL.get(platform.machine()),
            }
            wall = config.wall_time_s if timeout is None else timeout
            result = self._launch(spec, stdin, wall, results_fd)
            result.oom_killed = cgroup is not None and cgroup.oom_killed()
            return result
        finally:
            for group in ([cgroup] if cgroup else []) + extra:
                try:
                    group.remove()
                except OSError as err:
                    logger.warning("could not remove sandbox cgroup %s: %s", group.path, err)
            shutil.rmtree(staging, ignore_errors=True)
            if lease is not None:
                os.close(lease)  # the uid is free again: its processes are gone

    def _launch(self, spec: dict, stdin: bytes, wall: float, results_fd: bool) -> SandboxResult:
        config = self.config
        status_r, status_w = os.pipe()
        stdin_r, stdin_w = os.pipe()
        results_r, results_w = os.pipe() if results_fd else (None, None)
        spec["results_fd"] = results_w
        child_ends = [status_w, stdin_r] + ([results_w] if results_w is not None else [])
        start = time.monotonic()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    sandbox_launch.__file__,
                    json.dumps(spec),
                    str(status_w),
                ],
                stdin=stdin_r,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(fd for fd in child_ends if fd != stdin_r),
                env={"PATH": _TARGET_ENV["PATH"], "LANG": "C.UTF-8"},
                cwd=spec["staging"],
                start_new_session=True,
            )
        except BaseException:
            for fd in [status_r, stdin_w, results_r, *child_ends]:
                if fd is not None:
                    os.close(fd)
            raise
        for fd in child_ends:
            os.close(fd)
        try:
            streams, timed_out, truncated = collect(
                process,
                {"status": status_r, "results": results_r},
                stdin_w,
                stdin,
                deadline=start + wall,
                cap=config.max_output_bytes,
            )
        finally:
            for fd in (status_r, results_r):
                if fd is not None:
                    os.close(fd)
            kill_group(process)
        status = streams["status"].decode(errors="replace").strip()
        if status:
            exec_failed = status.startswith(sandbox_launch.EXEC_FAILED)
            raise (_ExecFailed if exec_failed else SandboxError)(status)
        return SandboxResult(
            returncode=process.returncode,
            stdout=streams["stdout"].decode(errors="replace"),
            stderr=streams["stderr"].decode(errors="replace"),
            timed_out=timed_out,
            output_truncated=truncated,
            wall_time_s=time.monotonic() - start,
            results=streams["results"] if results_fd else None,
        )


def _limits_tasks(memory: MemoryCgroup | None, extra: list[MemoryCgroup]) -> bool:
    """Whether this run's cgroups limit its tasks."""
    return any(os.path.exists(os.path.join(g.path, "pids.max")) for g in [memory, *extra] if g)


def _visible_paths(python: str, extra: tuple[str, ...]) -> list[str]:
    """Host paths bind-mounted (read-only) into the sandbox: system libraries and programs, the
    interpreter's prefixes (a venv and its base), ``extra``; none inside another."""
    key = python + "\0" + "\0".join(extra)
    if key not in Sandbox._binds:
        paths = [p for p in _SYSTEM_PATHS if os.path.lexists(p)]
        prefixes = _prefixes(python)
        paths += prefixes + [os.path.realpath(p) for p in prefixes]
        for path in extra:
            if not os.path.exists(path):
                raise ValueError(f"SandboxConfig.read_only_paths: {path!r} does not exist")
            paths.append(os.path.normpath(path))
        unique = sorted(set(p for p in paths if p != "/"))
        Sandbox._binds[key] = [
            p for p in unique if not any(p.startswith(q + "/") for q in unique if q != p)
        ]
    return Sandbox._binds[key]


def _prefixes(python: str) -> list[str]:
    """``sys.prefix`` and kin of ``python`` (run outside the sandbox: it is our interpreter)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        code = (
            "import sys; print(sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)"
        )
        try:
            out = subprocess.run(
                [python, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30
            )
            found = out.stdout.split() if out.returncode == 0 else []
        except (OSError, subprocess.SubprocessError):
            found = []
    executable = os.path.realpath(python)
    found.append(os.path.dirname(os.path.dirname(executable)))  # .../bin/python -> ...
    return [os.path.normpath(p) for p in found if p and os.path.isabs(p)]


def _default_pythons() -> list[str]:
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]
    return list(dict.fromkeys(c for c in candidates if c and os.path.exists(c)))
