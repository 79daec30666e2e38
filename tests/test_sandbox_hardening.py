"""Issue 13, sandbox hardening: one attack per property, each of which worked before it.

Private IPC, a minimal file system, no_new_privs + seccomp, one memory limit for the whole
sandbox (or the documented per-process fallback), stdin as a pipe, an interpreter with numpy,
and the result pipe the code harness reads.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from lit_qwen3.rewards import sandbox as sandbox_module
from lit_qwen3.rewards import sandbox_cgroup, sandbox_launch
from lit_qwen3.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailable
from lit_qwen3.rewards.sandbox_seccomp import DENIED_SYSCALLS, seccomp_filter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox(SandboxConfig(wall_time_s=5.0, cpu_time_s=2.0, memory_mb=256, max_processes=16))
    box.ensure_available()
    return box


def run_ok(box: Sandbox, source: str, **kwargs) -> str:
    result = box.run_python(source, **kwargs)
    assert result.ok, (result.describe(), result.stderr)
    return result.stdout


def test_system_v_shared_memory_does_not_outlive_the_sandbox(sandbox):
    key = 0x4C510000 + os.getpid() % 0xFFFF
    libc = ctypes.CDLL(None, use_errno=True)
    create = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"shmid = libc.shmget({key}, 4096, 0o1000 | 0o666)\n"  # IPC_CREAT
        "print('created' if shmid >= 0 else f'failed {ctypes.get_errno()}')\n"
    )
    find = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"print('found' if libc.shmget({key}, 0, 0o666) >= 0 else 'absent')\n"
    )
    try:
        assert run_ok(sandbox, create).strip() == "created"
        assert run_ok(sandbox, find).strip() == "absent"  # the next sandbox cannot see it
        assert libc.shmget(key, 0, 0) == -1  # nor can the host
    finally:
        leaked = libc.shmget(key, 0, 0)
        if leaked >= 0:
            libc.shmctl(leaked, 0, None)  # IPC_RMID


def test_the_program_sees_a_minimal_file_system(sandbox):
    secrets = ["/etc/passwd", "/etc/hostname", "/etc/shadow", str(CHECKOUT / "README.md"),
               str(CHECKOUT / "pyproject.toml"), "/root/.bashrc", "/home", "/var/log", "/sys/kernel",
               "/dev/vda", "/dev/kvm", "/work/shared"]  # fmt: skip
    source = (
        "import os, json\n"
        f"paths = {secrets!r}\n"
        "print(json.dumps({\n"
        "    'top': sorted(os.listdir('/')),\n"
        "    'visible': [p for p in paths if os.path.exists(p)],\n"
        "    'dev': sorted(os.listdir('/dev')),\n"
        "    'root_writable': os.access('/', os.W_OK),\n"
        "}))\n"
        "for target in ['/newfile', '/usr/pwned', '/dev/pwned']:\n"
        "    try:\n"
        "        open(target, 'w')\n"
        "        print('WROTE', target)\n"
        "    except OSError as err:\n"
        "        print('blocked', target, err.strerror)\n"
    )
    out = run_ok(sandbox, source)
    seen = json.loads(out.splitlines()[0])
    assert seen["visible"] == []
    allowed = {"bin", "dev", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr"}
    interpreter_tops = {Path(p).parts[1] for p in (sys.prefix, sys.base_prefix)}
    assert set(seen["top"]) <= allowed | interpreter_tops
    assert "etc" not in seen["top"] and "home" not in seen["top"]
    assert set(seen["dev"]) <= {"null", "zero", "full", "random", "urandom", "shm", "fd",
                                "stdin", "stdout", "stderr"}  # fmt: skip
    assert "WROTE" not in out and out.count("blocked") == 3
    # the interpreter's own prefix is there, read-only, but not its neighbours in the checkout
    if str(sys.prefix).startswith(str(CHECKOUT)):
        listing = run_ok(sandbox, f"import os\nprint(sorted(os.listdir({str(CHECKOUT)!r})))")
        assert listing.strip() == repr([Path(sys.prefix).relative_to(CHECKOUT).parts[0]])


def test_without_a_pivot_root_number_the_chroot_fallback_hides_the_host_too(sandbox, monkeypatch):
    monkeypatch.setattr(sandbox_launch, "PIVOT_ROOT_SYSCALL", {})  # as on an unknown CPU
    source = (
        "import os\n"
        "print(sorted(os.listdir('/')))\n"
        f"print([p for p in ['/etc/passwd', '/home', {str(CHECKOUT / 'README.md')!r}]"
        " if os.path.exists(p)])\n"
        "print(os.path.exists('/proc/1/root/etc/passwd'))\n"
    )
    top, visible, through_init = run_ok(sandbox, source).splitlines()
    assert "etc" not in top and visible == "[]" and through_init == "False"


def test_no_new_privileges_and_no_nested_namespaces(sandbox):
    source = (
        "import ctypes, os, threading, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "status = open('/proc/self/status').read()\n"
        "print([l for l in status.splitlines() if l.startswith(('NoNewPrivs', 'Seccomp:'))])\n"
        "def attempt(name, call):\n"
        "    result = call()\n"
        "    if result == 0:\n"
        "        os._exit(0) if name == 'clone' else None\n"
        "    print(name, 'OK' if result >= 0 else os.strerror(ctypes.get_errno()))\n"
        "attempt('unshare_user', lambda: libc.unshare(0x10000000))\n"
        "attempt('unshare_user_mount', lambda: libc.unshare(0x10000000 | 0x20000))\n"
        "attempt('clone', lambda: libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))\n"
        "attempt('mount', lambda: libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None))\n"
        "attempt('ptrace', lambda: libc.ptrace(0, 0, 0, 0))\n"  # PTRACE_TRACEME
        "attempt('chroot', lambda: libc.chroot(b'/tmp'))\n"
        "attempt('x32', lambda: libc.syscall(0x40000000 | 39))\n"  # getpid, x32 ABI
        "t = threading.Thread(target=print, args=('thread ran',)); t.start(); t.join()\n"
        "print(subprocess.run(['/bin/echo', 'child ran'], capture_output=True).stdout)\n"
        "pid = os.fork()\n"
        "os._exit(0) if pid == 0 else print('fork', os.waitpid(pid, 0)[1])\n"
    )
    out = run_ok(sandbox, source)
    assert "'NoNewPrivs:\\t1'" in out
    if seccomp_filter() is None:
        pytest.skip("no seccomp table for this architecture (documented)")
    assert "'Seccomp:\\t2'" in out
    for name in ("unshare_user", "unshare_user_mount", "clone", "mount", "ptrace", "chroot"):
        assert f"{name} Operation not permitted" in out, out
    if os.uname().machine == "x86_64":
        assert "x32 Operation not permitted" in out
    # what ordinary programs need still works: threads (clone3 -> ENOSYS -> clone), fork, exec
    assert "thread ran" in out and "b'child ran\\n'" in out and "fork 0" in out


def test_setuid_binaries_gain_nothing(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/id"):
        pytest.skip("needs root to make a setuid-root binary")
    os.chmod(tmp_path, 0o755)
    shutil.copy("/usr/bin/id", tmp_path / "id")
    os.chmod(tmp_path / "id", 0o4755)  # setuid root
    box = Sandbox(wall_time_s=5.0, read_only_paths=(str(tmp_path),))
    out = run_ok(
        box,
        f"import subprocess\nprint(subprocess.run([{str(tmp_path / 'id')!r}], capture_output=True, text=True).stdout)",
    )
    assert out.startswith("uid=") and "euid=0" not in out and "uid=0(" not in out


def test_seccomp_filter_covers_the_namespace_and_mount_calls():
    program = seccomp_filter("x86_64")
    assert program is not None and len(program) % 8 == 0
    assert {"unshare", "setns", "mount", "ptrace", "bpf", "io_uring_setup"} <= set(DENIED_SYSCALLS)
    assert seccomp_filter("aarch64") is not None
    assert seccomp_filter("riscv64") is None  # no table: no filter, and the sandbox warns


MEMORY_HOGS = (  # six children each hold 60 MB: 360 MB in all, each under 200 MB
    "import os, time\n"
    "kids = []\n"
    "for _ in range(6):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        blob = b'x' * (60 << 20)\n"
    "        time.sleep(2)\n"
    "        os._exit(0)\n"
    "    kids.append(pid)\n"
    "statuses = [os.waitpid(pid, 0)[1] for pid in kids]\n"
    "print('survivors', sum(1 for s in statuses if s == 0))\n"
)


@pytest.mark.parametrize("setup", ["this machine", "no cgroup"])
def test_memory_limit_for_the_whole_sandbox_or_the_documented_fallback(setup, monkeypatch):
    if setup == "no cgroup":
        monkeypatch.setattr(sandbox_module, "memory_cgroup_support", lambda: (None, "test"))
        monkeypatch.setattr(sandbox_module.MemoryCgroup, "create", lambda limit: None)
    box = Sandbox(wall_time_s=8.0, cpu_time_s=4.0, memory_mb=200, max_processes=16)
    box.ensure_available()
    mode = box.isolation()["memory"]
    result = box.run_python(MEMORY_HOGS)
    survivors = int(result.stdout.split()[-1]) if result.stdout else 0
    if mode.startswith("cgroup"):
        # at most 200 MB at once: no more than three of the six could hold their 60 MB
        assert survivors <= 3 and result.oom_killed, (mode, result)
        parent = sandbox_cgroup.memory_cgroup_support()[1]
        mine = f"lit-qwen3-sandbox-{os.getpid()}-"
        assert not [name for name in os.listdir(parent) if name.startswith(mine)]  # removed
    else:
        # the documented fallback: each process alone is limited (RLIMIT_AS), so the sandbox
        # may hold memory_mb per process, up to max_processes processes
        assert mode.startswith("rlimit: 200 MB address space per process, at most 16 processes")
        assert survivors == 6 and not result.oom_killed
        single = box.run_python("blob = b'x' * (300 << 20)")
        assert not single.ok and "MemoryError" in single.stderr


def test_stdin_is_a_read_only_pipe(sandbox):
    source = (
        "import os, stat, sys\n"
        "print(stat.S_ISFIFO(os.fstat(0).st_mode), sys.stdin.read().strip())\n"
        "try:\n"
        "    os.write(0, b'overwrite')\n"
        "    print('WROTE')\n"
        "except OSError as err:\n"
        "    print('blocked', err.strerror)\n"
    )
    out = run_ok(sandbox, source, stdin="hello")
    assert out.splitlines() == ["True hello", "blocked Bad file descriptor"]
    big = "x" * (1 << 20) + "\n"  # more than a pipe buffer, fed while the program reads
    assert run_ok(sandbox, "import sys\nprint(len(sys.stdin.read()))", stdin=big).strip() == str(
        len(big)
    )


def test_the_interpreter_imports_numpy_and_missing_modules_are_a_clear_error(sandbox):
    assert run_ok(sandbox, "import numpy\nprint(int(numpy.arange(4).sum()))").strip() == "6"
    with pytest.raises(
        SandboxUnavailable, match=r"import \['no_such_module_xyz'\].*ModuleNotFound"
    ):
        Sandbox(require_modules=("no_such_module_xyz",)).ensure_available()


def test_result_pipe_and_timeout_argument(sandbox):
    result = sandbox.run_python(
        "import os\nos.write(3, b'from fd 3')\nprint('out')", results_fd=True
    )
    assert result.ok and result.results == b"from fd 3" and result.stdout == "out\n"
    fds = "import os\nprint(sorted(map(int, os.listdir('/proc/self/fd'))))"
    assert run_ok(sandbox, fds).strip() == "[0, 1, 2, 3]"  # 3: listdir's own
    assert sandbox.run_python(fds, results_fd=True).stdout.strip() == "[0, 1, 2, 3, 4]"
    closed = sandbox.run_python("import os\nos.write(3, b'x')")
    assert not closed.ok and "Bad file descriptor" in closed.stderr and closed.results is None
    slow = sandbox.run_python("import time\ntime.sleep(5)", timeout=0.5)
    assert slow.timed_out and slow.wall_time_s < 2
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        sandbox.run_python("print(1)", timeout=0)


def test_bad_paths_are_rejected():
    with pytest.raises(ValueError, match="read_only_paths: 'relative' must be an absolute path"):
        SandboxConfig(read_only_paths=("relative",))
    with pytest.raises(ValueError, match="require_modules must be a list of str"):
        SandboxConfig(require_modules="numpy")
    with pytest.raises(ValueError, match="read_only_paths: '/no/such/dir' does not exist"):
        Sandbox(read_only_paths=["/no/such/dir"]).run_python("print(1)")


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu\\040x rw,relatime - cgroup cgroup rw,cpu,cpuacct
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
"""


def test_cgroup_discovery_reads_v1_and_v2_layouts():
    mounts = sandbox_cgroup.parse_mountinfo(MOUNTINFO)
    assert mounts["cgroup2"] == ("/sys/fs/cgroup", "/")
    assert mounts["memory"] == ("/sys/fs/cgroup/memory", "/docker/abc")
    assert mounts["cpuacct"] == ("/sys/fs/cgroup/cpu x", "/")
    own = sandbox_cgroup.parse_proc_cgroup("0::/user.slice/run.scope\n4:memory:/docker/abc/w\n")
    assert own == {"": "/user.slice/run.scope", "memory": "/docker/abc/w"}
    # a v1 mount whose root is the container's cgroup: paths are relative to it
    assert sandbox_cgroup._join(mounts["memory"], own["memory"]) == "/sys/fs/cgroup/memory/w"
    assert sandbox_cgroup._join(mounts["cgroup2"], own[""]) == "/sys/fs/cgroup/user.slice/run.scope"


@pytest.mark.parametrize(
    ("version", "name", "text", "killed"),
    [
        ("v2", "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", True),
        ("v2", "memory.events", "low 0\nmax 3\noom 0\noom_kill 0\n", False),
        ("v1", "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", True),
        ("v1", "memory.failcnt", "4\n", True),  # kernels before 4.13: no oom_kill line
    ],
)
def test_oom_kills_are_read_from_the_cgroup(tmp_path, version, name, text, killed):
    (tmp_path / name).write_text(text)
    assert sandbox_cgroup.MemoryCgroup(version, str(tmp_path)).oom_killed() is killed
