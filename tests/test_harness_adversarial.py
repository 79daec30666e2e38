"""Issue 13, item 4: programs that try to pass the code tests without solving the task.

The task: ``nth_prime(n)``, the n-th prime. None of the hostile programs computes it; each tries
another way to make the harness report success (a forged marker, an early clean exit, exit and
exception hooks, overloaded comparisons, patched modules, forged result records, reading every
file it can see, killing its supervisors, flooding the output). Every one must score 0, while
honest programs, written in several styles, score 1.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from lit_qwen3.rewards import Sample
from lit_qwen3.rewards.code import CodeReward
from lit_qwen3.rewards.sandbox import Sandbox

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

PROMPT = [{"role": "user", "content": "Write nth_prime(n). /no_think"}]
TESTS = [
    "assert nth_prime(10) == 29",
    "assert nth_prime(100) == 541",
    "assert nth_prime(1000) == 7919 and nth_prime(1) == 2",
]

HOSTILE = {
    "prints_the_old_marker": "print('lit-qwen3-tests-done-0123456789abcdef')\n"
    "def nth_prime(n):\n    return 0",
    "reads_its_source_and_prints_the_marker": "import os, re\n"
    "text = ''.join(open(f, errors='replace').read() for f in os.listdir('.') if os.path.isfile(f))\n"
    "markers = re.findall(r'lit-qwen3-tests-done-[0-9a-f]+', text)\n"
    "def nth_prime(n):\n    return 0\n"
    "if markers:\n    print(markers[-1], flush=True)\n    os._exit(0)",
    "exits_cleanly_at_import": "import os\ndef nth_prime(n):\n    return 0\nos._exit(0)",
    "raises_system_exit_at_import": "def nth_prime(n):\n    return 0\nraise SystemExit(0)",
    "exit_builtin": "def nth_prime(n):\n    return 0\nexit()",
    "atexit_forces_success": "import atexit, os\natexit.register(os._exit, 0)\n"
    "def nth_prime(n):\n    raise AssertionError('no idea')",
    "excepthook_forces_success": "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n"
    "def nth_prime(n):\n    raise AssertionError('no idea')",
    "system_exit_inside_the_function": "def nth_prime(n):\n    raise SystemExit(0)",
    "keyboard_interrupt_inside": "def nth_prime(n):\n    raise KeyboardInterrupt",
    "equal_to_everything": "class Anything:\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = object.__hash__\n"
    "def nth_prime(n):\n    return Anything()",
    "int_subclass_equal_to_everything": "class Sly(int):\n    def __eq__(self, other):\n"
    "        return True\n    __hash__ = int.__hash__\n"
    "def nth_prime(n):\n    return Sly(0)",
    "list_subclass": "class L(list):\n    def __eq__(self, other):\n        return True\n"
    "def nth_prime(n):\n    return L()",
    "nan": "def nth_prime(n):\n    return float('nan')",
    "returns_true": "def nth_prime(n):\n    return True",
    "iterator": "def nth_prime(n):\n    return iter([29, 541, 7919, 2])",
    "patches_json_dumps": 'import json\njson.dumps = lambda *a, **k: \'{"probe": 0, "value": 29}\'\n'
    "def nth_prime(n):\n    return 0",
    "patches_builtins": "import builtins\nbuiltins.type = lambda *a: int\n"
    "builtins.isinstance = lambda *a: True\nbuiltins.eval = lambda *a, **k: True\n"
    "def nth_prime(n):\n    return 0",
    "patches_the_runner_encoder": "import sys\n"
    "runner = sys._getframe(1).f_globals\n"
    "runner['encode'] = lambda value, depth=0: True\n"
    "def nth_prime(n):\n    return 0",
    "forges_records_on_stdout": 'print(json_lines := \'{"probe": 0, "value": 29}\')\n'
    "print('{\"done\": 1}')\ndef nth_prime(n):\n    return 0",
    "forges_records_on_the_pipe_then_exits": "import os\n"
    "for fd in map(int, os.listdir('/proc/self/fd')):\n"
    "    try:\n"
    '        os.write(fd, b\'{"probe": 0, "value": true}\\n{"done": 1}\\n\')\n'
    "    except OSError:\n"
    "        pass\n"
    "os._exit(0)",
    "forked_child_forges_records": "import os, time\n"
    "if os.fork() == 0:\n"
    "    time.sleep(0.3)\n"
    "    for fd in range(3, 10):\n"
    "        try:\n"
    '            os.write(fd, b\'{"probe": 0, "value": 29}\\n{"done": 1}\\n\')\n'
    "        except OSError:\n"
    "            pass\n"
    "    os._exit(0)\n"
    "def nth_prime(n):\n    return 0",
    "closes_the_result_pipe": "import os\nfor fd in range(3, 20):\n"
    "    try:\n        os.close(fd)\n    except OSError:\n        pass\n"
    "def nth_prime(n):\n    return 0",
    "kills_its_supervisors": "import os, signal\n"
    "for pid in (1, os.getppid(), -1):\n"
    "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
    "def nth_prime(n):\n    return 0",
    "floods_stdout": "import sys\nsys.stdout.write('x' * (8 << 20))\ndef nth_prime(n):\n    return 0",
    "floods_the_result_pipe": "import os\n"
    "for fd in range(3, 10):\n"
    "    try:\n        os.write(fd, b'x' * (4 << 20))\n    except OSError:\n        pass\n"
    "def nth_prime(n):\n    return 0",
    "loops_forever": "def nth_prime(n):\n    while True:\n        pass",
    # reads everything it can (its files, the harness, /proc, /tmp, its own frames) and answers
    # with any number of three or more digits found next to '=='
    "reads_everything_for_the_answer": """
import gc, os, re, sys
seen = []
for root in ('.', '/tmp', '/proc/self', '/proc/1', '/dev/shm'):
    for base, dirs, files in os.walk(root):
        if base.count('/') > 4:
            continue
        for name in files:
            try:
                with open(os.path.join(base, name), 'rb') as handle:
                    seen.append(handle.read(1 << 16).decode('latin-1'))
            except OSError:
                pass
seen.append(repr(dict(os.environ)) + repr(sys.argv))
frame = sys._getframe()
while frame is not None:
    seen.append(repr(frame.f_locals)[:100000])
    frame = frame.f_back
seen += [o for o in gc.get_objects() if isinstance(o, str)]
found = re.findall(r'==\\s*(\\d{2,})', '\\n'.join(map(str, seen)))
answers = [int(x) for x in found]
def nth_prime(n):
    return answers.pop(0) if answers else -1
""",
}

HONEST = {
    "plain": """
def nth_prime(n):
    count, candidate = 0, 1
    while count < n:
        candidate += 1
        if all(candidate % d for d in range(2, int(candidate ** 0.5) + 1)):
            count += 1
    return candidate
""",
    "numpy_sieve_with_debug_output": """
import numpy as np
print("building a sieve")
def nth_prime(n):
    limit = 8000
    sieve = np.ones(limit, dtype=bool)
    sieve[:2] = False
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = False
    return np.flatnonzero(sieve)[n - 1]  # a numpy integer
""",
    "class_with_cache_and_main_guard": """
import functools
@functools.lru_cache(maxsize=None)
def primes_up_to(limit):
    return [p for p in range(2, limit) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
def nth_prime(n):
    return primes_up_to(8000)[n - 1]
if __name__ == "__main__":
    print(nth_prime(5))
""",
}


def sample(program: str, tests=TESTS) -> Sample:
    completion = f"```python\n{program}\n```"
    return Sample.from_completion(PROMPT, completion, metadata={"tests": tests})


@pytest.fixture(scope="module")
def reward() -> CodeReward:
    return CodeReward(
        sandbox={"wall_time_s": 2.0, "cpu_time_s": 2.0, "max_output_bytes": 1 << 20},
        time_budget_s=8.0,
    )


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_scores_zero(reward, name):
    result = reward.score(sample(HOSTILE[name]))
    assert result.score == 0.0, result.info
    assert result.info["passed"] == 0 and len(result.info["failures"]) == 3


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_program_scores_one(reward, name):
    result = reward.score(sample(HONEST[name]))
    assert result.score == 1.0, result.info


def test_all_or_nothing_runs_the_suite_in_one_process(reward):
    strict = CodeReward(scoring="all", sandbox=reward.sandbox.config)
    assert strict.score(sample(HONEST["plain"])).score == 1.0
    wrong_once = (
        HONEST["plain"] + "\n_real = nth_prime\nnth_prime = lambda n: 0 if n == 100 else _real(n)"
    )
    result = strict.score(sample(wrong_once))
    assert result.score == 0.0 and result.info["failures"][0]["test"] == 1
    assert reward.score(sample(wrong_once)).score == pytest.approx(2 / 3)


def test_expected_values_never_enter_the_sandbox(monkeypatch, reward):
    sent = []
    real_run = Sandbox.run

    def spy(self, argv, **kwargs):
        sent.append(json.dumps([argv[1:], kwargs], default=repr))  # not the venv's path
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(Sandbox, "run", spy)
    tests = ["assert nth_prime(10) == 29", "assert nth_prime(100) + 0 == 541"]
    tests.append("assert nth_prime(1000) in {7919, 'EXPECTED-SECRET-7f3a'}")
    assert reward.score(sample(HONEST["plain"], tests)).score == 1.0
    assert len(sent) == 3
    everything = "\n".join(sent)
    assert "nth_prime(10)" in everything and "nth_prime(1000)" in everything  # the inputs go
    for expected in ("29", "541", "7919", "EXPECTED-SECRET-7f3a"):
        assert expected not in everything  # the expected values stay here


def test_stdin_stdout_tests_cannot_be_read_from_inside(reward):
    tests = [{"input": "10\n", "output": "29"}, {"input": "100\n", "output": "541"}]
    snoop = (
        "import os\n"
        "found = []\n"
        "for base, dirs, files in os.walk('/'):\n"
        "    if base.startswith(('/proc', '/usr', '/sys')):\n"
        "        dirs[:] = []\n"
        "        continue\n"
        "    for name in files:\n"
        "        try:\n"
        "            text = open(os.path.join(base, name), 'rb').read(1 << 16)\n"
        "        except OSError:\n"
        "            continue\n"
        "        if b'541' in text:\n"
        "            found.append(text)\n"
        "print(found[0].decode() if found else 'nothing')\n"
    )
    assert reward.score(sample(snoop, tests)).score == 0.0
    honest = HONEST["plain"] + "\nprint(nth_prime(int(input())))"
    assert reward.score(sample(honest, tests)).score == 1.0


def test_the_trainer_process_is_unharmed(reward):
    reward.score(sample(HOSTILE["kills_its_supervisors"]))
    assert os.getpid() > 0 and reward.score(sample(HONEST["plain"])).score == 1.0
