"""The parent's side of a sandbox run's pipes: feed stdin, read stdout, stderr and the extra
pipes under one byte cap and a deadline, then kill the launcher's process group.

Everything is non-blocking around one selector, so a program that never reads its stdin, or
writes faster than we read, cannot stall the parent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import subprocess
import time

__all__ = ["collect", "kill_group"]


def collect(
    process: subprocess.Popen,
    extra: dict[str, int | None],
    stdin_fd: int,
    stdin: bytes,
    *,
    deadline: float,
    cap: int,
) -> tuple[dict[str, bytes], bool, bool]:
    """Feed stdin; read stdout, stderr and the ``extra`` pipes until EOF, the deadline or the
    cap (the launcher's status pipe does not count towards it)."""
    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": [], **{k: [] for k in extra}}
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    for name, fd in extra.items():
        if fd is not None:
            selector.register(fd, selectors.EVENT_READ, name)
    pending = memoryview(stdin)
    if pending:
        os.set_blocking(stdin_fd, False)
        selector.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
    else:
        os.close(stdin_fd)
    timed_out = truncated = False
    total = 0
    try:
        while any(key.data != "stdin" for key in selector.get_map().values()):
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=min(left, 0.25)):
                if key.data == "stdin":
                    try:
                        pending = pending[os.write(stdin_fd, pending[: 1 << 16]) :]
                    except BlockingIOError:
                        continue
                    except OSError as err:  # the program closed stdin or ended: stop feeding
                        if err.errno not in (errno.EPIPE, errno.EBADF):
                            raise
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(stdin_fd)
                        os.close(stdin_fd)
                    continue
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
        if "stdin" in {key.data for key in selector.get_map().values()}:
            os.close(stdin_fd)
        selector.close()
    return {name: b"".join(parts) for name, parts in chunks.items()}, timed_out, truncated


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
