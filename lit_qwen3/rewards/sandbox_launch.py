"""The child side of :mod:`lit_qwen3.rewards.sandbox`: namespaces, a fresh root, limits, exec.

The parent runs this file as ``python -I -S sandbox_launch.py SPEC STATUS_FD``, so that unshare,
mounts, rlimits, the uid switch and the seccomp filter happen in a fresh single-threaded process
(``preexec_fn`` is unsafe in a trainer full of threads). It imports the standard library only.

Three processes, each with one job:

- the **launcher** (outside the namespaces) joins the memory cgroup, unshares the PID, mount,
  IPC and network namespaces, forks the init and relays the program's exit status;
- the **init** (PID 1 inside) builds the program's root file system and pivots into it, forks
  the program and reaps until it ends; when the init exits the kernel kills everything left;
- the **program** sets rlimits, drops to the sandbox uid, sets ``no_new_privs``, installs the
  seccomp filter and execs.

The new root is a small read-only tmpfs holding read-only bind mounts of the interpreter's
directories (``spec["binds"]``), symlinks for merged-/usr layouts, a minimal ``/dev``, a fresh
``/proc`` and a private, size-capped ``/tmp`` with the working directory. The host's ``/etc``,
``/home``, ``/root``, ``/var``, ``/sys``, the project checkout and other processes are not in it.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import signal
import sys

_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 0x400, 0x800, 0x200000
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP = 1, 38, 22
_SECCOMP_MODE_FILTER = 2
#: pivot_root(2) numbers; elsewhere (the parent passes None) the new root is moved over / and
#: chrooted into, which hides the host's root under it instead of detaching it.
PIVOT_ROOT_SYSCALL = {"x86_64": 155, "aarch64": 41}
#: statvfs flags a bind mount inherits and, inside a user namespace, must keep when remounted.
_LOCKED_FLAGS = (
    (os.ST_NOSUID, _MS_NOSUID),
    (os.ST_NODEV, _MS_NODEV),
    (os.ST_NOEXEC, _MS_NOEXEC),
    (os.ST_NOATIME, _MS_NOATIME),
    (os.ST_NODIRATIME, _MS_NODIRATIME),
    (os.ST_RELATIME, _MS_RELATIME),
)
_DEVICES = ("null", "zero", "full", "random", "urandom")
_DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
              "stderr": "/proc/self/fd/2"}  # fmt: skip
#: The program's result pipe (``SandboxResult.results``) is this descriptor.
RESULTS_FD = 3
EXEC_FAILED = "sandbox exec failed"


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def launcher_main(spec: dict, status_fd: int) -> None:
    """Outside the namespaces: cgroup, unshare, fork the init (PID 1), relay its exit status."""
    libc = ctypes.CDLL(None, use_errno=True)

    def fail(message: str) -> None:
        os.write(status_fd, message.encode())
        os._exit(127)

    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the worker died: die with it
    for procs in spec["cgroup_procs"]:  # before any fork: every descendant is accounted
        try:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        except OSError as err:
            fail(f"joining the cgroup {procs} failed: {err}")
    flags = _CLONE_NEWPID | _CLONE_NEWNS | _CLONE_NEWIPC | (_CLONE_NEWNET if spec["new_net"] else 0)
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
                ("NEWIPC", _CLONE_NEWIPC),
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
    if spec["results_fd"] is not None:
        os.close(spec["results_fd"])
    os.waitpid(init, 0)
    reported = os.read(exit_r, 64)
    if not reported:  # init killed (timeout, parent gone): nothing to relay
        os._exit(137)
    _exit_like(int(reported))


def _init_main(spec: dict, status_fd: int, exit_fd: int, libc: ctypes.CDLL) -> None:
    """PID 1 of the new namespace: the new root, then fork the program and reap until it ends.

    The program is not PID 1 itself: the kernel ignores signals without a handler sent to PID 1
    from inside its namespace, which would make ``RLIMIT_CPU`` toothless. For the same reason the
    init cannot re-raise the program's fatal signal: it passes the wait status up a pipe.
    """
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.umask(0o022)
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE, None)
    staged = {}
    for name in os.listdir(spec["staging"]):
        with open(os.path.join(spec["staging"], name), "rb") as handle:
            staged[name] = handle.read()
    _build_root(libc, spec["staging"], spec)
    _pivot_root(libc, spec["staging"], spec["pivot_root_nr"])
    ids = spec["ids"]
    workdir = spec["workdir"]
    os.mkdir(workdir, 0o700)
    for name, content in staged.items():
        with open(os.path.join(workdir, name), "wb") as handle:
            handle.write(content)
        if ids:
            os.chown(os.path.join(workdir, name), *ids)
    if ids:
        os.chown(workdir, *ids)
    os.chdir(workdir)
    program = os.fork()
    if program == 0:
        os.close(exit_fd)
        # out of the way of fd 3 and closed by exec: the program must never write the status pipe
        moved = fcntl.fcntl(status_fd, fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(status_fd)
        status_fd = moved
        try:
            _exec_program(spec, libc)
        except BaseException as err:  # noqa: BLE001
            os.write(status_fd, f"{EXEC_FAILED}: {type(err).__name__}: {err}".encode())
            os._exit(127)
    os.close(status_fd)
    if spec["results_fd"] is not None:
        os.close(spec["results_fd"])
    while True:
        pid, status = os.wait()
        if pid == program:  # PID 1 exits: the kernel kills whatever is left
            os.write(exit_fd, str(status).encode())
            os._exit(0)


def _build_root(libc: ctypes.CDLL, root: str, spec: dict) -> None:
    """A tmpfs at ``root`` holding only what the program needs; read-only once pivoted into."""
    _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755")
    os.makedirs(root + "/proc", 0o755, exist_ok=True)
    _mount(libc, "proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    dev = root + "/dev"
    os.makedirs(dev, 0o755, exist_ok=True)
    _mount(libc, "tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,mode=755")
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            open(f"{dev}/{name}", "a").close()
            _mount(libc, f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND, None)
    for name, target in _DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")
    for directory, size in (("/dev/shm", 1), ("/tmp", spec["disk_mb"])):
        os.makedirs(root + directory, 0o755, exist_ok=True)
        _mount(
            libc,
            "tmpfs",
            root + directory,
            "tmpfs",
            _MS_NOSUID | _MS_NODEV,
            f"size={size}m,mode=1777",
        )
    for path in spec["binds"]:
        target = root + path
        if os.path.islink(path) and os.path.dirname(path) == "/":  # /lib -> usr/lib and kin
            os.symlink(os.readlink(path), target)
            continue
        if os.path.isdir(path):
            os.makedirs(target, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            open(target, "a").close()
        _mount(libc, path, target, None, _MS_BIND | _MS_REC, None)
        locked = os.statvfs(path).f_flag
        extra = sum(ms for st, ms in _LOCKED_FLAGS if locked & st)
        _mount(
            libc,
            None,
            target,
            None,
            _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | extra,
            None,
        )


def _pivot_root(libc: ctypes.CDLL, root: str, number: int | None) -> None:
    """Make ``root`` the root and detach the host's: nothing of it stays reachable."""
    os.chdir(root)
    if number is not None:
        if libc.syscall(number, b".", b".") != 0:
            raise OSError(ctypes.get_errno(), f"pivot_root: {os.strerror(ctypes.get_errno())}")
        if libc.umount2(b".", _MNT_DETACH) != 0:
            raise OSError(ctypes.get_errno(), f"umount old root: {os.strerror(ctypes.get_errno())}")
    else:  # no syscall number known here: move the new root over / and chroot into it
        _mount(libc, ".", "/", None, 0x2000, None)  # MS_MOVE
        os.chroot(".")
    os.chdir("/")
    _mount(libc, None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)


def _exec_program(spec: dict, libc: ctypes.CDLL) -> None:
    if spec["results_fd"] is not None:
        results = fcntl.fcntl(spec["results_fd"], fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(spec["results_fd"])
        os.dup2(results, RESULTS_FD, inheritable=True)
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
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:  # setuid binaries gain nothing
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if spec["seccomp"]:
        _install_seccomp(libc, bytes.fromhex(spec["seccomp"]))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    argv = spec["argv"]
    os.execve(argv[0], argv, spec["env"])


def _install_seccomp(libc: ctypes.CDLL, program: bytes) -> None:
    count = len(program) // ctypes.sizeof(_SockFilter)
    instructions = (_SockFilter * count).from_buffer_copy(program)
    fprog = _SockFprog(count, instructions)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"seccomp filter: {os.strerror(ctypes.get_errno())}")


def _mount(libc: ctypes.CDLL, source, target, fstype, flags, data) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        raise OSError(
            ctypes.get_errno(),
            f"mount {fstype or source or ''} on {target}: {os.strerror(ctypes.get_errno())}",
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
    launcher_main(json.loads(sys.argv[1]), int(sys.argv[2]))
