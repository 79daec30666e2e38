"""The sandbox contains hostile programs: each attack fails inside, and the parent is unharmed."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_qwen3.rewards import sandbox as sandbox_module
from lit_qwen3.rewards import sandbox_users
from lit_qwen3.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox(SandboxConfig(wall_time_s=2.0, cpu_time_s=1.0, memory_mb=256, max_processes=16))
    box.ensure_available()
    return box


def processes_of_uids(low: int, high: int) -> list[int]:
    """Host pids whose real uid is in [low, high): the sandbox's unprivileged uids."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if low <= uid < high:
            found.append(int(entry))
    return found


def no_sandbox_processes_left() -> bool:
    base = sandbox_users.AUTO_UID_BASE
    deadline = time.monotonic() + 2.0
    while processes_of_uids(base, base + sandbox_users.AUTO_UID_COUNT):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_runs_a_program_with_stdin(sandbox):
    result = sandbox.run_python(
        "import sys\nprint(sum(map(int, sys.stdin.read().split())))", stdin="2 40\n"
    )
    assert result.ok and result.stdout == "42\n" and result.describe() == "ok"
    failing = sandbox.run_python("raise SystemExit(3)")
    assert failing.returncode == 3 and failing.describe() == "exit_3" and not failing.ok


def test_infinite_loop_is_stopped(sandbox):
    start = time.monotonic()
    result = sandbox.run_python("while True:\n    pass")
    assert not result.ok
    assert result.describe() in ("killed_by_SIGXCPU", "killed_by_SIGKILL", "timeout")
    assert time.monotonic() - start < 4


def test_sleeping_program_hits_the_wall_clock(sandbox):
    start = time.monotonic()
    result = sandbox.run_python("import time\ntime.sleep(30)")
    assert result.timed_out and result.describe() == "timeout"
    assert time.monotonic() - start < 4


def test_fork_bomb_is_contained_and_cleaned_up(sandbox):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    start = time.monotonic()
    result = sandbox.run_python(bomb)
    assert not result.ok
    assert time.monotonic() - start < 5
    assert no_sandbox_processes_left()
    assert subprocess.run(["true"]).returncode == 0  # the parent can still fork


def test_escaped_daemon_dies_with_the_sandbox(sandbox):
    # A child that tries to leave the process group (setsid, refused by seccomp since issue 29)
    # and lingers still dies with the PID namespace.
    source = (
        "import os, time\nif os.fork() == 0:\n    try:\n        os.setsid()\n"
        "    except OSError:\n        pass\n    time.sleep(60)\nprint('parent done')"
    )
    result = sandbox.run_python(source)
    assert result.ok and result.stdout.strip() == "parent done"
    assert no_sandbox_processes_left()


def test_memory_bomb_fails_inside(sandbox):
    result = sandbox.run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))")
    assert not result.ok
    assert "MemoryError" in result.stderr or result.returncode < 0


def test_huge_output_is_capped():
    box = Sandbox(wall_time_s=5.0, max_output_bytes=10_000)
    start = time.monotonic()
    result = box.run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 4096)")
    assert result.output_truncated and result.describe() == "output_limit"
    assert len(result.stdout) + len(result.stderr) <= 10_000
    assert time.monotonic() - start < 3  # killed at the cap, not at the wall clock


def test_environment_secrets_do_not_leak(sandbox, monkeypatch):
    monkeypatch.setenv("LIT_QWEN3_TEST_SECRET", "hunter2-token")
    source = (
        "import os\n"
        "print(dict(os.environ))\n"
        "for pid in ['1', str(os.getppid()), 'self']:\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as err:\n"
        "        print('denied', err)\n"
        "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    result = sandbox.run_python(source)
    assert result.ok, result.stderr
    assert "hunter2-token" not in result.stdout + result.stderr
    assert "LIT_QWEN3_TEST_SECRET" not in result.stdout
    # a fresh /proc: only the sandbox's own init and program are visible
    assert result.stdout.strip().splitlines()[-1] == "['1', '2']"


def test_writes_outside_the_working_directory_are_contained(sandbox, tmp_path):
    os.chmod(tmp_path, 0o777)  # even a world-writable host directory
    target = tmp_path / "pwned.txt"
    scratch = f"/tmp/lit-qwen3-sandbox-test-{os.getpid()}.txt"
    source = (
        "import os\n"
        "open('local.txt', 'w').write('fine')\n"
        f"open({scratch!r}, 'w').write('private tmp')\n"
        "print(os.getcwd(), sorted(os.listdir('.')))\n"
        "for path in ['/etc/passwd', '/root/x', " + repr(str(target)) + "]:\n"
        "    try:\n"
        "        open(path, 'a').write('x')\n"
        "        print('WROTE', path)\n"
        "    except OSError as err:\n"
        "        print('blocked', path, type(err).__name__)\n"
    )
    result = sandbox.run_python(source)
    assert result.ok, result.stderr
    assert "WROTE" not in result.stdout and result.stdout.count("blocked") == 3
    assert "['local.txt', 'main.py']" in result.stdout
    assert not os.path.exists(scratch)  # /tmp inside was a private tmpfs
    assert not target.exists()  # the host's world-writable dir was out of reach


def test_network_is_unreachable(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    source = (
        "import socket\n"
        "try:\n"  # creating an AF_INET socket is refused already (seccomp, issue 29)
        "    s = socket.socket()\n"
        f"    s.settimeout(1); s.connect(('127.0.0.1', {port})); print('CONNECTED')\n"
        "except OSError as err:\n"
        "    print('blocked', err)\n"
        "try:\n"
        "    socket.create_connection(('8.8.8.8', 53), timeout=1); print('CONNECTED')\n"
        "except OSError as err:\n"
        "    print('blocked', err)\n"
    )
    try:
        result = sandbox.run_python(source)
        assert result.ok, result.stderr
        assert "CONNECTED" not in result.stdout and result.stdout.count("blocked") == 2
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the parent's server
        # the weaker mode really is weaker, and says so in the log at every start
        unsafe = Sandbox(sandbox.config, network="allow-unsafe")
        with pytest.MonkeyPatch.context() as patch:
            records = []
            handler = logging.Handler()
            handler.emit = records.append
            logger = logging.getLogger("lit_qwen3.rewards")
            patch.setattr(logger, "handlers", [handler])
            assert "CONNECTED" in unsafe.run_python(source).stdout
        assert any("WITHOUT network isolation" in r.getMessage() for r in records)
    finally:
        server.close()


def test_refuses_without_root_unless_told_to_run_as_the_caller(monkeypatch):
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable, match="needs root.*set user=None"):
        Sandbox().ensure_available()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"wall_time_s": 0}, r"wall_time_s must be > 0"),
        ({"memory_mb": 1.5}, r"memory_mb must be a positive int"),
        ({"network": "off"}, r"network must be 'deny' or 'allow-unsafe'"),
        ({"user": 0}, r"must not be root"),
        ({"user": "no-such-user-xyz"}, r"no such user 'no-such-user-xyz'"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sandbox(**kwargs).run_python("print(1)")


def test_bad_arguments_are_rejected(sandbox):
    with pytest.raises(TypeError, match="unknown SandboxConfig field"):
        Sandbox(wall_time=1)
    with pytest.raises(TypeError, match="source must be a str, got bytes"):
        sandbox.run_python(b"print(1)")
    with pytest.raises(ValueError, match="plain file name"):
        sandbox.run_python("print(1)", files={"../evil.py": ""})


ROOTLESS_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")
# the sandbox modules use the standard library only: the system Python (without the project's
# dependencies, numpy included) imports them from the checkout
sys.path.insert(0, sys.argv[1])
from lit_qwen3.rewards.sandbox import Sandbox, SandboxUnavailable
try:
    Sandbox().ensure_available()
except SandboxUnavailable as err:
    print("REFUSED", err)
box = Sandbox(user=None, wall_time_s=2.0, max_processes=8, require_modules=())
print("ISOLATION", box.isolation())
probe = (
    "import os, socket\\n"
    "open('/tmp/rootless-probe', 'w').write('x')\\n"
    "try:\\n"
    "    socket.create_connection(('8.8.8.8', 53), timeout=1)\\n"
    "except OSError:\\n"
    "    print('NET-BLOCKED')\\n"
    "for i in range(30):\\n"
    "    try:\\n"
    "        if os.fork() == 0:\\n"
    "            import time; time.sleep(30)\\n"
    "    except OSError:\\n"
    "        print('FORK-BLOCKED'); break\\n"
    "status = open('/proc/self/status').read()\\n"
    "print('NNP' if 'NoNewPrivs:\\\\t1' in status else 'privs', os.path.exists('/etc/passwd'))\\n"
    "print('unshare', ctypes.CDLL(None, use_errno=True).unshare(0x10000000), ctypes.get_errno())\\n"
)
print(box.run_python("import ctypes\\n" + probe).stdout)
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("setpriv") and os.path.exists("/usr/bin/python3")),
    reason="needs root, setpriv and /usr/bin/python3 to drop to an ordinary user",
)
def test_ordinary_user_gets_a_refusal_or_the_logged_weaker_mode():
    checkout = str(Path(sandbox_module.__file__).resolve().parents[2])
    drop = ["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups"]
    run = subprocess.run(
        [*drop, "/usr/bin/python3", "-c", ROOTLESS_SCRIPT, checkout],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    out = run.stdout
    assert run.returncode == 0, run.stderr
    assert "REFUSED" in out and "needs root" in out  # the default refuses, with the reason
    assert "LOG sandbox starting as the calling user (user=None)" in out
    assert "NET-BLOCKED" in out and "FORK-BLOCKED" in out
    assert not os.path.exists("/tmp/rootless-probe")
    # the same file system view, no_new_privs and seccomp filter; memory falls back to rlimits
    assert "NNP False" in out and "unshare -1 1" in out  # EPERM
    assert "'memory': 'rlimit: 512 MB address space per process" in out
