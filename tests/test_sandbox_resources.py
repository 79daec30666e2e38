"""Issue 29, item D: what one sandbox can take from another, and what it can signal to it.

Each sandbox gets its own CPU share and task budget (cgroups where the machine has them; the
isolation report says when it has not), a uid no concurrent sandbox shares, and no kernel
channel to its siblings: sockets other than AF_UNIX, setsid, the AIO calls, locks, inotify and
mincore are refused by the seccomp filter.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from lit_qwen3.rewards import Sample, sandbox_users
from lit_qwen3.rewards.code import CodeReward
from lit_qwen3.rewards.sandbox import Sandbox, SandboxBusy
from lit_qwen3.rewards.sandbox_cgroup import controller_support
from lit_qwen3.rewards.sandbox_seccomp import seccomp_filter

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's uid switch and cgroups need root"),
]

CHANNELS = r"""
import ctypes, errno, fcntl, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, call):
    try:
        result = call()
    except OSError as err:
        print(name, "refused" if err.errno == errno.EPERM else f"error {err.errno}")
        return
    print(name, "ALLOWED", result)
def syscall(number, *args):
    def call():
        if libc.syscall(number, *args) == -1:
            raise OSError(ctypes.get_errno(), "")
        return "ok"
    return call
attempt("vsock", lambda: socket.socket(40, socket.SOCK_STREAM))
attempt("netlink", lambda: socket.socket(16, socket.SOCK_RAW, 0))
attempt("inet", lambda: socket.socket())
attempt("inet_pair", lambda: socket.socketpair(socket.AF_INET))
attempt("setsid", os.setsid)
context = ctypes.c_ulong(0)
attempt("io_setup", syscall(206, 8, ctypes.byref(context)))
attempt("inotify", syscall(294, 0))
shared = os.open("/usr/lib/os-release" if os.path.exists("/usr/lib/os-release") else
                 os.path.realpath(os.__file__), os.O_RDONLY)
attempt("flock", lambda: fcntl.flock(shared, fcntl.LOCK_SH | fcntl.LOCK_NB))
attempt("lockf", lambda: fcntl.lockf(shared, fcntl.LOCK_SH | fcntl.LOCK_NB))
attempt("fadvise", lambda: os.posix_fadvise(shared, 0, 0, os.POSIX_FADV_DONTNEED))
attempt("preadv2", lambda: os.preadv(shared, [bytearray(8)], 0, os.RWF_NOWAIT))
page = ctypes.create_string_buffer(1)
attempt("mincore", syscall(27, 0, 4096, page))
left, right = socket.socketpair()  # AF_UNIX inside the sandbox still works
left.sendall(b"x")
print("unix", right.recv(1) == b"x")
print("fcntl_flags", fcntl.fcntl(shared, fcntl.F_GETFD) >= 0)
"""


@pytest.mark.skipif(seccomp_filter("x86_64") is None or os.uname().machine != "x86_64",
                    reason="the probe uses x86_64 syscall numbers")  # fmt: skip
def test_kernel_channels_between_sandboxes_are_refused():
    result = Sandbox(wall_time_s=5.0).run_python(CHANNELS)
    assert result.ok, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for name in ("vsock", "netlink", "inet", "inet_pair", "setsid", "io_setup", "inotify",
                 "flock", "lockf", "fadvise", "preadv2"):  # fmt: skip
        assert lines[name] == "refused", (name, result.stdout)
    assert lines["mincore"] in ("refused", "error 12")  # ENOMEM: the kernel may check first
    assert lines["unix"] == "True" and lines["fcntl_flags"] == "True"
    # the weaker network mode keeps its promise: sockets of every family
    unsafe = Sandbox(wall_time_s=5.0, network="allow-unsafe").run_python(CHANNELS)
    assert "inet ALLOWED" in unsafe.stdout, unsafe.stdout


def test_concurrent_sandboxes_never_share_a_uid():
    box = Sandbox(wall_time_s=5.0, require_modules=())
    uids: list[str] = []

    def run() -> None:
        uids.append(box.run_python("import os, time\nprint(os.getuid())\ntime.sleep(0.5)").stdout)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(uids) == 6 and len(set(uids)) == 6, uids


@pytest.mark.parametrize("probed", [False, True], ids=["first-run-probes", "already-probed"])
def test_a_leased_uid_is_not_handed_out_again(monkeypatch, probed):
    # Whether this process has probed the sandbox yet must not matter: a full uid pool is
    # transient (SandboxBusy), never cached as "this machine cannot isolate".
    monkeypatch.setattr(Sandbox, "_available", {})
    if probed:
        Sandbox(require_modules=()).ensure_available()
    # A one-uid pool at the far end of the range, which sandboxes run by other test workers
    # (they take the lowest free uid) never reach.
    last = sandbox_users.AUTO_UID_BASE + sandbox_users.AUTO_UID_COUNT - 1
    monkeypatch.setattr(sandbox_users, "AUTO_UID_BASE", last)
    monkeypatch.setattr(sandbox_users, "AUTO_UID_COUNT", 1)
    uid, lease = sandbox_users.lease_uid()  # held, as by another process's running sandbox
    try:
        assert uid == last
        with pytest.raises(SandboxBusy, match="uids are in use"):
            Sandbox(require_modules=()).run_python("print(1)")
    finally:
        os.close(lease)
    assert Sandbox(require_modules=()).run_python("print(1)").stdout == "1\n"


def test_isolation_names_each_limit_and_where_it_comes_from():
    report = Sandbox(require_modules=()).isolation()
    for key in ("cpu", "processes"):
        version, _ = controller_support("cpu" if key == "cpu" else "pids")
        if version is None:
            assert "only" in report[key] and "no " in report[key], report[key]
        else:
            assert report[key].startswith(f"cgroup {version}"), report[key]
    fixed = Sandbox(user=65534, require_modules=()).isolation()
    assert "shared" in fixed["user"]


@pytest.mark.skipif(controller_support("pids")[0] is None, reason="no pids cgroup here")
def test_a_fixed_user_does_not_share_one_process_budget():
    holder = (
        "import os, time\nkids = 0\n"
        "try:\n    for _ in range(64):\n        if os.fork() == 0:\n            time.sleep(3)\n"
        "            os._exit(0)\n        kids += 1\nexcept OSError:\n    pass\n"
        "print('held', kids, flush=True)\ntime.sleep(1.5)"
    )
    forker = (
        "import os, time\ntime.sleep(0.7)\nfor _ in range(5):\n    if os.fork() == 0:\n"
        "        os._exit(0)\n    os.wait()\nprint('forked 5')"
    )
    box = Sandbox(user=65534, max_processes=8, wall_time_s=5.0, require_modules=())
    out: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda: out.update(holder=box.run_python(holder).stdout)),
        threading.Thread(target=lambda: out.update(forker=box.run_python(forker).stdout)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out["holder"].startswith("held") and int(out["holder"].split()[1]) <= 8
    assert out["forker"].strip() == "forked 5", out


SPINNERS = (
    "import os\n"
    "for _ in range(16):\n"
    "    if os.fork() == 0:\n"
    "        try:\n            os.setsid()\n        except OSError:\n            pass\n"
    "        while True:\n            pass\n"
    "while True:\n    pass\n"
)
WORK = (
    "def work(n):\n    total = 0\n    for i in range(n):\n        total += i % 7\n    return total"
)


@pytest.mark.skipif(controller_support("cpu")[0] is None, reason="no cpu cgroup here")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: a sandbox's share is all of it")
def test_a_spinning_sibling_does_not_starve_an_honest_rollout():
    n = 8_000_000
    expected = sum(i % 7 for i in range(n))
    honest = Sample.from_completion(
        [{"role": "user", "content": "work"}],
        f"```python\n{WORK}\n```",
        metadata={"tests": [f"assert work({n}) == {expected}"]},
    )
    start = time.monotonic()
    calibrate = CodeReward(sandbox={"wall_time_s": 20.0, "cpu_time_s": 20.0})
    assert calibrate.score(honest).score == 1.0
    alone = time.monotonic() - start
    # alone it takes `alone`; starved by 17 spinners on two cores it would take about nine
    # times that; with one CPU per sandbox it keeps about its own pace. The margin of 3x leaves
    # room for the test runner's other worker, which shares the cores (pytest -n 2)
    wall = max(3.0 * alone, 2.0)
    reward = CodeReward(sandbox={"wall_time_s": wall, "cpu_time_s": wall}, time_budget_s=wall + 1)
    hog = CodeReward(sandbox={"wall_time_s": wall + 1.0, "cpu_time_s": wall + 1.0})
    spinner = Sample.from_completion(
        [{"role": "user", "content": "work"}],
        f"```python\n{WORK}\n{SPINNERS}```",
        metadata={"tests": [f"assert work({n}) == {expected}"]},
    )
    results = {}
    sibling = threading.Thread(target=lambda: results.update(hog=hog.score(spinner)))
    sibling.start()
    time.sleep(0.5)  # the spinners are running
    results["honest"] = reward.score(honest)
    sibling.join()
    assert results["hog"].score == 0.0
    assert results["honest"].score == 1.0, (alone, wall, results["honest"].info)


def test_the_filter_lists_the_new_calls_for_both_architectures():
    import struct

    from lit_qwen3.rewards.sandbox_seccomp import ARGUMENT_CHECKS, DENIED_SYSCALLS

    for column, machine in enumerate(("x86_64", "aarch64")):
        program = seccomp_filter(machine)
        constants = {
            struct.unpack("=HBBI", program[i : i + 8])[3] for i in range(0, len(program), 8)
        }
        for name in ("setsid", "io_setup", "flock", "inotify_init1", "mincore"):
            assert DENIED_SYSCALLS[name][column] in constants, (machine, name)
        socket_nr = ARGUMENT_CHECKS["socket"][0][column]
        assert socket_nr in constants
        lax = seccomp_filter(machine, any_socket=True)
        lax_constants = {struct.unpack("=HBBI", lax[i : i + 8])[3] for i in range(0, len(lax), 8)}
        assert socket_nr not in lax_constants and len(lax) < len(program)
