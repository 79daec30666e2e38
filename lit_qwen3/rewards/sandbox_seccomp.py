"""The sandbox's seccomp filter: a small classic-BPF program assembled by hand.

libseccomp's Python bindings are not installable everywhere, and the filter is short: refuse
(``EPERM``) the system calls an unprivileged program in a sandbox has no business making and
that widen what it can reach — new user, mount, PID... namespaces (``unshare``, ``setns``,
``clone`` with namespace flags), mounts (``mount``, the new mount API, ``pivot_root``,
``chroot``), ``ptrace`` and cross-process memory access, kernel modules, kexec, BPF, perf,
io_uring and the AIO calls, keyrings, userfaultfd, file handles, swap, reboot; ``setsid``; and
the kernel state one sandbox shares with another (:data:`ARGUMENT_CHECKS`: sockets other than
``AF_UNIX``, such as vsock, which the network namespace does not cover; ``flock``, record locks,
inotify, ``mincore``, ``preadv2`` and page eviction (``fadvise``, ``madvise`` cold/pageout) on
the read-only files every sandbox sees; timing reads of the shared page cache remain possible). ``clone3`` (whose flags live in
memory a filter cannot read) answers ``ENOSYS``, so libc falls back to ``clone``, which is
checked. A system call of another ABI (x32, i386 on x86_64) kills the process.

Everything else is allowed: this is a deny list on top of namespaces, an unprivileged uid and
``no_new_privs``, not a replacement for them. The syscall numbers come from the kernel headers
(``asm/unistd_64.h`` for x86_64, ``asm-generic/unistd.h`` for aarch64); other architectures get
no filter (:func:`seccomp_filter` returns ``None`` and the sandbox logs it).
"""

from __future__ import annotations

import platform
import struct

__all__ = ["ARGUMENT_CHECKS", "DENIED_SYSCALLS", "seccomp_filter"]

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K, _JGE_K, _JSET_K = 0x15, 0x35, 0x45
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_EPERM, _ENOSYS = 1, 38
# offsets in struct seccomp_data: nr, arch, then args[0] (low 32 bits on little endian)
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16
#: CLONE_NEWTIME | NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
CLONE_NAMESPACE_FLAGS |= 0x20000000 | 0x40000000
_X32_SYSCALL_BIT = 0x40000000

#: name -> (x86_64 number, aarch64 number); None where the call does not exist.
DENIED_SYSCALLS: dict[str, tuple[int | None, int | None]] = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438),
    "kcmp": (312, 272),
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "userfaultfd": (323, 282),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
    "fanotify_init": (300, 262),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "syslog": (103, 116),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
    "iopl": (172, None),
    "ioperm": (173, None),
    # issue 29: what one sandbox could take from another, or signal to it through the kernel
    "setsid": (112, 157),  # a session of its own: out of the process group the parent kills
    "io_setup": (206, 0),  # the host-wide aio-max-nr budget
    "io_destroy": (207, 1),
    "io_getevents": (208, 4),
    "io_submit": (209, 2),
    "io_cancel": (210, 3),
    "io_pgetevents": (333, 292),
    "flock": (73, 32),  # locks on the shared read-only files: a channel between sandboxes
    "inotify_init": (253, None),
    "inotify_init1": (294, 26),
    "mincore": (27, 232),  # page-cache residency of shared files: a channel
    "cachestat": (451, 451),
    "preadv2": (327, 286),  # RWF_NOWAIT reads tell cached pages apart
    "pwritev2": (328, 287),
    "fadvise64": (221, 223),  # DONTNEED evicts a shared file's pages: the other end
}
#: Calls allowed only for some values of one argument: name -> (numbers, argument, allowed or
#: refused values, whether the values are the allowed ones).
ARGUMENT_CHECKS: dict[str, tuple[tuple[int, int], int, tuple[int, ...], bool]] = {
    "socket": ((41, 198), 0, (1,), True),  # AF_UNIX only: no vsock, netlink, packet...
    "socketpair": ((53, 199), 0, (1,), True),
    # F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW: record locks
    "fcntl": ((72, 25), 1, (5, 6, 7, 36, 37, 38), False),
    "madvise": ((28, 233), 2, (20, 21), False),  # MADV_COLD, MADV_PAGEOUT: evict shared pages
}
_CLONE = {"x86_64": 56, "aarch64": 220}
_CLONE3 = 435
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}


def seccomp_filter(machine: str | None = None, *, any_socket: bool = False) -> bytes | None:
    """The filter as packed ``struct sock_filter`` records for ``machine`` (default: this one),
    ready for ``prctl(PR_SET_SECCOMP)``; ``None`` where no syscall table is known.
    ``any_socket`` lifts the socket-family check (``network="allow-unsafe"``)."""
    machine = machine or platform.machine()
    if machine not in _AUDIT_ARCH:
        return None
    column = 0 if machine == "x86_64" else 1
    denied = sorted({nums[column] for nums in DENIED_SYSCALLS.values() if nums[column] is not None})
    # [arch check][load nr][x32 check][one JEQ per denied call][clone][clone3]
    # then the exits: ALLOW, DENY, NOSYS and the check of clone's flags.
    x32 = machine == "x86_64"  # x32 ABI calls carry bit 30: refuse them all
    checks = [
        (nums[column], arg, values, allowed)
        for name, (nums, arg, values, allowed) in ARGUMENT_CHECKS.items()
        if not (any_socket and name.startswith("socket"))
    ]
    allow = 4 + int(x32) + len(denied) + 2 + len(checks)
    deny, nosys, clone_check = allow + 1, allow + 2, allow + 3
    code: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _OFF_NR),
    ]

    def jump(target: int) -> int:  # BPF jumps count from the next instruction, in one byte
        offset = target - (len(code) + 1)
        assert 0 <= offset <= 255, offset
        return offset

    if x32:
        code.append((_JGE_K, jump(deny), 0, _X32_SYSCALL_BIT))
    for number in denied:
        code.append((_JEQ_K, jump(deny), 0, number))
    code.append((_JEQ_K, jump(clone_check), 0, _CLONE[machine]))
    code.append((_JEQ_K, jump(nosys), 0, _CLONE3))
    # each argument check's block starts after clone's (4 instructions), one after another
    block = clone_check + 4
    for number, _, values, _ in checks:
        code.append((_JEQ_K, jump(block), 0, number))
        block += 3 + len(values)
    assert len(code) == allow
    code.append((_RET_K, 0, 0, _RET_ALLOW))
    code.append((_RET_K, 0, 0, _RET_ERRNO | _EPERM))
    code.append((_RET_K, 0, 0, _RET_ERRNO | _ENOSYS))
    code.append((_LD_W_ABS, 0, 0, _OFF_ARG0))  # clone(flags, ...): flags is argument 0
    code.append((_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS))  # BPF jumps only go forward
    code.append((_RET_K, 0, 0, _RET_ERRNO | _EPERM))
    code.append((_RET_K, 0, 0, _RET_ALLOW))
    for _, argument, values, allowed in checks:
        code.append((_LD_W_ABS, 0, 0, _OFF_ARG0 + 8 * argument))  # low 32 bits
        for k, value in enumerate(values):  # a match jumps to the verdict for listed values
            code.append((_JEQ_K, len(values) - k, 0, value))
        listed, unlisted = (_RET_ALLOW, _RET_ERRNO | _EPERM)
        if not allowed:
            listed, unlisted = unlisted, listed
        code.append((_RET_K, 0, 0, unlisted))
        code.append((_RET_K, 0, 0, listed))
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in code)
