"""Run untrusted, model-written programs in a throwaway sandbox (Linux).

What contains what:

- **Processes**: the program runs in a new PID namespace under a small init process. When the
  program ends, times out or the init dies, the kernel kills everything left in the namespace,
  including children that called ``setsid`` to leave the process group. The parent also kills
  the whole process group (``start_new_session``) on timeout.
- **Fork bombs**: ``RLIMIT_NPROC`` is not enforced for root, so the program never runs as root:
  it runs under an unprivileged uid (``user="auto"``: a fresh uid per concurrent sandbox, so one
  sandbox's fork bomb cannot use up another's process budget) with ``RLIMIT_NPROC`` set.
- **Time**: ``RLIMIT_CPU`` per process plus a wall-clock limit enforced by the parent.
- **Memory and files**: ``RLIMIT_AS`` (address space), ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, no
  core dumps; stdout and stderr are read with a cap and the program is killed when it writes more.
- **File system**: a new mount namespace with private, size-capped tmpfs mounts on the
  world-writable directories (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``); the program's
  working directory is a fresh directory in that ``/tmp``. Everything else is owned by other
  users, so the unprivileged uid cannot write outside its directory; all of it vanishes with the
  namespace. A fresh ``/proc`` hides the host's processes (and their command lines).
- **Environment**: a scrubbed environment (``PATH``, ``LANG``, ``HOME``) and no inherited file
  descriptors; Python runs with ``-I`` (isolated mode).
- **Network**: a new network namespace (only a down loopback device). Where the kernel refuses
  (no ``CAP_SYS_ADMIN``, no user namespaces) the sandbox refuses to start, unless
  ``network="allow-unsafe"``, which logs a WARNING every time a sandbox starts.

Not run as root, the sandbox uses an unprivileged user namespace for the namespaces; it then
cannot switch uid, so it needs ``user=None`` (the program runs as the calling user and can write
wherever that user can; logged as a WARNING each start: for trusted code only).

This file also serves as the launcher: the parent runs it with ``python -I -S sandbox.py SPEC FD``
so that unshare, mounts, rlimits and the uid switch happen in a fresh single-threaded process
(``preexec_fn`` is unsafe in a trainer full of threads). It imports the standard library only.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

logger = logging.getLogger("lit_qwen3.rewards")

__all__ = ["Sandbox", "SandboxConfig", "SandboxError", "SandboxResult", "SandboxUnavailable"]

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
_PR_SET_PDEATHSIG = 1
_PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_WORKDIR = "/tmp/sandbox"
_AUTO_UID_BASE = 200_000
_TARGET_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": _WORKDIR,
    "TMPDIR": "/tmp",
}


class SandboxUnavailable(RuntimeError):
    """This machine cannot provide the isolation the configuration asks for."""


class SandboxError(RuntimeError):
    """The launcher failed to set up a sandbox run (not the program's fault)."""


class _ExecFailed(SandboxError):
    """The program could not be executed (missing, or not readable by the sandbox user)."""


_EXEC_FAILED = "sandbox exec failed"


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sandboxed run. The defaults suit short competitive-programming tests."""

    wall_time_s: float = 5.0
    """Wall-clock limit, enforced by the parent (kills the whole sandbox)."""
    cpu_time_s: float = 5.0
    """CPU seconds per process (``RLIMIT_CPU``, rounded up to whole seconds)."""
    memory_mb: int = 512
    """Address space per process (``RLIMIT_AS``)."""
    max_processes: int = 32
    """Processes and threads of the sandbox uid (``RLIMIT_NPROC``)."""
    max_output_bytes: int = 1 << 20
    """stdout plus stderr kept; the program is killed when it writes more."""
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
    """Interpreter for :meth:`Sandbox.run_python`; default: this one if the sandbox user can run
    it, else ``/usr/bin/python3``."""

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "cpu_time_s"):
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


@dataclass
class SandboxResult:
    """What a sandboxed run did."""

    returncode: int | None
    """Exit status; negative: killed by that signal (as in ``subprocess``)."""
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    wall_time_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.output_truncated

    def describe(self) -> str:
        """One short reason, for reward info dicts."""
        if self.timed_out:
            return "timeout"
        if self.output_truncated:
            return "output_limit"
        if self.returncode is not None and self.returncode < 0:
            return f"killed_by_{signal.Signals(-self.returncode).name}"
        if self.returncode != 0:
            return f"exit_{self.returncode}"
        return "ok"


class Sandbox:
    """Runs programs under :class:`SandboxConfig` limits; see the module docstring."""

    _available: dict[tuple, str] = {}  # probe results per isolation setup: the interpreter
    _counter = 0
    _counter_lock = threading.Lock()

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
        when the isolation cannot be had; return the Python interpreter the sandbox will use."""
        key = (self.config.network, self.config.user, self.config.python, os.geteuid())
        if key in Sandbox._available:
            return Sandbox._available[key]
        self._uid_gid()  # raises for a user that cannot be switched to
        candidates = [self.config.python] if self.config.python else _default_pythons()
        tried = []
        for python in candidates:
            try:
                result = self._run([python, "-I", "-c", "print('ok')"], {}, b"", warn=False)
            except _ExecFailed as err:
                tried.append(f"{python} ({err})")
                continue
            except SandboxError as err:
                raise SandboxUnavailable(
                    f"cannot start a sandbox on this machine: {err}"
                    + (
                        "; set network='allow-unsafe' to run without network isolation"
                        if self.config.network == "deny" and "unshare" in str(err)
                        else ""
                    )
                ) from None
            if result.ok and result.stdout.strip() == "ok":
                Sandbox._available[key] = python
                return python
            tried.append(f"{python} ({result.describe()}: {result.stderr.strip()[-200:]})")
        raise SandboxUnavailable(
            f"no Python interpreter the sandbox user can run; tried {tried}; "
            "set SandboxConfig.python to one readable by all users"
        )

    def run(
        self, argv: list[str], *, files: dict[str, str | bytes] | None = None, stdin: str = ""
    ) -> SandboxResult:
        """Run ``argv`` in a fresh working directory holding ``files`` (name -> content)."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a non-empty list of str")
        if not isinstance(stdin, (str, bytes)):
            raise TypeError(f"stdin must be a str, got {type(stdin).__name__}")
        self.ensure_available()
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return self._run(list(argv), dict(files or {}), data, warn=True)

    def run_python(
        self, source: str, *, stdin: str = "", files: dict[str, str | bytes] | None = None
    ) -> SandboxResult:
        """Run Python ``source`` (saved as ``main.py``) with ``stdin``."""
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, got {type(source).__name__}")
        python = self.ensure_available()
        return self.run(
            [python, "-I", "main.py"], files={**(files or {}), "main.py": source}, stdin=stdin
        )

    # -- parent side ------------------------------------------------------------------------

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
            with Sandbox._counter_lock:
                Sandbox._counter += 1
                slot = Sandbox._counter % 16
            uid = _AUTO_UID_BASE + (os.getpid() % 4096) * 16 + slot
            return uid, uid
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
        self, argv: list[str], files: dict[str, str | bytes], stdin: bytes, *, warn: bool
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
        ids = self._uid_gid()
        staging = tempfile.mkdtemp(prefix="lit-qwen3-sandbox-")
        try:
            for name, content in files.items():
                if not name or "/" in name or name in (".", ".."):
                    raise ValueError(f"sandbox file name must be a plain file name, got {name!r}")
                mode = "wb" if isinstance(content, bytes) else "w"
                with open(os.path.join(staging, name), mode) as handle:
                    handle.write(content)
            spec = {
                "argv": argv,
                "env": _TARGET_ENV,
                "staging": staging,
                "ids": ids,
                "new_net": config.network == "deny",
                "cpu_s": math.ceil(config.cpu_time_s),
                "as_bytes": config.memory_mb << 20,
                "nproc": _nproc_limit(ids, config.max_processes),
                "fsize_bytes": config.max_file_mb << 20,
                "nofile": config.max_open_files,
                "disk_mb": config.disk_mb,
            }
            with tempfile.TemporaryFile() as stdin_file:
                stdin_file.write(stdin)
                stdin_file.seek(0)
                return self._launch(spec, stdin_file)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _launch(self, spec: dict, stdin_file: object) -> SandboxResult:
        config = self.config
        status_r, status_w = os.pipe()
        start = time.monotonic()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    os.path.abspath(__file__),
                    json.dumps(spec),
                    str(status_w),
                ],
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w,),
                env={"PATH": _TARGET_ENV["PATH"], "LANG": "C.UTF-8"},
                cwd=spec["staging"],
                start_new_session=True,
            )
        finally:
            os.close(status_w)
        try:
            streams, timed_out, truncated = _collect(
                process, status_r, deadline=start + config.wall_time_s, cap=config.max_output_bytes
            )
        finally:
            os.close(status_r)
            _kill_group(process)
        status = streams["status"].decode(errors="replace").strip()
        if status:
            raise (_ExecFailed if status.startswith(_EXEC_FAILED) else SandboxError)(status)
        return SandboxResult(
            returncode=process.returncode,
            stdout=streams["stdout"].decode(errors="replace"),
            stderr=streams["stderr"].decode(errors="replace"),
            timed_out=timed_out,
            output_truncated=truncated,
            wall_time_s=time.monotonic() - start,
        )


def _nproc_limit(ids: tuple[int, int] | None, max_processes: int) -> int | None:
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


def _default_pythons() -> list[str]:
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]
    return list(dict.fromkeys(c for c in candidates if c and os.path.exists(c)))


def _collect(
    process: subprocess.Popen, status_fd: int, *, deadline: float, cap: int
) -> tuple[dict[str, bytes], bool, bool]:
    """Read stdout, stderr and the launcher's status pipe until EOF, the deadline or the cap."""
    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": [], "status": []}
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    selector.register(status_fd, selectors.EVENT_READ, "status")
    timed_out = truncated = False
    total = 0
    try:
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=min(left, 0.25)):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                if key.data != "status":
                    total += len(data)
                    if total > cap:
                        data = data[: len(data) - (total - cap)]
                        truncated = True
                chunks[key.data].append(data)
            if truncated:
                break
        if not (timed_out or truncated):
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        selector.close()
    return {name: b"".join(parts) for name, parts in chunks.items()}, timed_out, truncated


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


# -- launcher side (runs as ``python -I -S sandbox.py SPEC FD``; standard library only) --------


def _launcher_main(spec: dict, status_fd: int) -> None:
    """Outside the namespaces: unshare, fork the init (PID 1), relay its exit status."""
    libc = ctypes.CDLL(None, use_errno=True)

    def fail(message: str) -> None:
        os.write(status_fd, message.encode())
        os._exit(127)

    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the worker died: die with it
    flags = _CLONE_NEWPID | _CLONE_NEWNS | (_CLONE_NEWNET if spec["new_net"] else 0)
    rootless = os.geteuid() != 0
    if rootless:
        flags |= _CLONE_NEWUSER
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(flags) != 0:
        names = "+".join(
            n
            for n, f in (
                ("NEWUSER", _CLONE_NEWUSER),
                ("NEWPID", _CLONE_NEWPID),
                ("NEWNS", _CLONE_NEWNS),
                ("NEWNET", _CLONE_NEWNET),
            )
            if flags & f
        )
        fail(f"unshare(CLONE_{names}) failed: {os.strerror(ctypes.get_errno())}")
    if rootless:  # map ourselves to root inside the user namespace, to be allowed to mount
        try:
            for path, text in (
                ("/proc/self/setgroups", "deny"),
                ("/proc/self/uid_map", f"0 {uid} 1"),
                ("/proc/self/gid_map", f"0 {gid} 1"),
            ):
                with open(path, "w") as handle:
                    handle.write(text)
        except OSError as err:
            fail(f"user namespace id mapping failed: {err}")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    exit_r, exit_w = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(exit_r)
        try:
            _init_main(spec, status_fd, exit_w, libc)
        except BaseException as err:  # noqa: BLE001 - report anything, never run the program
            fail(f"sandbox init failed: {type(err).__name__}: {err}")
    os.close(status_fd)
    os.close(exit_w)
    os.waitpid(init, 0)
    reported = os.read(exit_r, 64)
    if not reported:  # init killed (timeout, parent gone): nothing to relay
        os._exit(137)
    _exit_like(int(reported))


def _init_main(spec: dict, status_fd: int, exit_fd: int, libc: ctypes.CDLL) -> None:
    """PID 1 of the new namespace: private mounts, then fork the program and reap until it ends.

    The program is not PID 1 itself: the kernel ignores signals without a handler sent to PID 1
    from inside its namespace, which would make ``RLIMIT_CPU`` toothless. For the same reason the
    init cannot re-raise the program's fatal signal: it passes the wait status up a pipe.
    """
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE, None)
    _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    staged = {}
    for name in os.listdir(spec["staging"]):
        with open(os.path.join(spec["staging"], name), "rb") as handle:
            staged[name] = handle.read()
    for directory in _PRIVATE_DIRS:
        if os.path.isdir(directory) and not os.path.islink(directory):
            size = spec["disk_mb"] if directory == "/tmp" else 1
            _mount(
                libc, "tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={size}m,mode=1777"
            )
    ids = spec["ids"]
    os.mkdir(_WORKDIR, 0o700)
    for name, content in staged.items():
        with open(os.path.join(_WORKDIR, name), "wb") as handle:
            handle.write(content)
        if ids:
            os.chown(os.path.join(_WORKDIR, name), *ids)
    if ids:
        os.chown(_WORKDIR, *ids)
    os.chdir(_WORKDIR)
    program = os.fork()
    if program == 0:
        os.close(exit_fd)
        try:
            _exec_program(spec, status_fd)
        except BaseException as err:  # noqa: BLE001
            os.write(status_fd, f"{_EXEC_FAILED}: {type(err).__name__}: {err}".encode())
            os._exit(127)
    os.close(status_fd)
    while True:
        pid, status = os.wait()
        if pid == program:  # PID 1 exits: the kernel kills whatever is left
            os.write(exit_fd, str(status).encode())
            os._exit(0)


def _exec_program(spec: dict, status_fd: int) -> None:
    limits = [
        (resource.RLIMIT_CPU, spec["cpu_s"], spec["cpu_s"] + 1),
        (resource.RLIMIT_AS, spec["as_bytes"], spec["as_bytes"]),
        (resource.RLIMIT_FSIZE, spec["fsize_bytes"], spec["fsize_bytes"]),
        (resource.RLIMIT_NOFILE, spec["nofile"], spec["nofile"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if spec["nproc"] is not None:
        limits.append((resource.RLIMIT_NPROC, spec["nproc"], spec["nproc"]))
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    if spec["ids"]:
        uid, gid = spec["ids"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    os.set_inheritable(status_fd, False)
    argv = spec["argv"]
    os.execve(argv[0], argv, spec["env"])


def _mount(libc: ctypes.CDLL, source, target, fstype, flags, data) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        raise OSError(
            ctypes.get_errno(),
            f"mount {fstype or ''} on {target}: {os.strerror(ctypes.get_errno())}",
        )


def _exit_like(status: int) -> None:
    """Exit with the status of the waited-for child (re-raise its signal)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    _launcher_main(json.loads(sys.argv[1]), int(sys.argv[2]))
