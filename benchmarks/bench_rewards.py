"""Throughput of the verifiable rewards: math (math-verify) and code (sandboxed tests).

    .venv/bin/python benchmarks/bench_rewards.py                      # small defaults
    .venv/bin/python benchmarks/bench_rewards.py --math 400 --code 60 --workers 4 --repeats 5

For each reward: samples/s scored in this process (one core, no timeouts) and through
``CompositeReward`` worker processes (per-sample timeouts, the way the trainer calls it), as
medians over ``--repeats`` runs after a warm-up batch; worker start-up time is reported apart.
The last line of stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from lit_qwen3.rewards import CompositeReward, Sample
from lit_qwen3.rewards.code import CodeReward
from lit_qwen3.rewards.math_answer import MathReward

PROMPT = [{"role": "user", "content": "Solve the problem. /think"}]


def math_case(i: int) -> tuple[str, str]:
    """(reference, answer) number ``i``: equivalent forms, wrong answers, unboxed answers.
    The numbers change with ``i`` so that no parse is served from a cache."""
    cases = [
        (
            f"\\frac{{{i}}}{{{i + 1}}}",
            f"The answer is $\\boxed{{\\dfrac{{{2 * i}}}{{{2 * i + 2}}}}}$.",
        ),
        (f"$x^2+{i}$", f"So we get \\boxed{{{i} + x^2}}."),
        (f"{936 + i}", f"There are \\boxed{{{936 + i}}} ways."),
        (f"{i}\\sqrt{{2}}/2", f"\\boxed{{\\frac{{{i}}}{{\\sqrt{{2}}}}}}"),
        (f"({i},{i + 1})", f"The interval is \\boxed{{({i}, {i + 1})}}"),
        (f"{i}", f"First \\boxed{{{i + 1}}}, no wait: \\boxed{{{i}}}."),
        (f"{i}.5", f"Therefore $x = \\frac{{{2 * i + 1}}}{{2}}$."),
        (f"{i}", f"\\boxed{{{i + 1}}}"),
    ]
    return cases[i % len(cases)]


SUM = "a, b = map(int, input().split())\nprint(a + b)"
CODE_CASES = [
    (SUM, [{"input": f"{i} {2 * i}\n", "output": f"{3 * i}"} for i in range(3)]),
    ("a, b = map(int, input().split())\nprint(a - b)", [{"input": "5 1\n", "output": "6"}] * 3),
    (
        "def add(a, b):\n    return a + b",
        ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"],
    ),
]


def math_samples(n: int, offset: int = 0) -> list[Sample]:
    out = []
    for i in range(offset, offset + n):
        reference, answer = math_case(i)
        completion = f"<think>\nWorking on case {i}.\n</think>\n\n{answer}"
        out.append(Sample.from_completion(PROMPT, completion, metadata={"reference": reference}))
    return out


def code_samples(n: int, offset: int = 0) -> list[Sample]:
    out = []
    for i in range(n):
        program, tests = CODE_CASES[i % len(CODE_CASES)]
        completion = f"<think>\nplan {i}\n</think>\n\n```python\n{program}\n```"
        out.append(Sample.from_completion(PROMPT, completion, metadata={"tests": tests}))
    return out


def median_rate(score, make_samples, n: int, repeats: int, first: int = 1) -> float:
    """Median samples/s over ``repeats`` batches; every batch holds new samples, so caches
    (math-verify's, our parsed references) serve nothing a real run would not."""
    times = []
    for repeat in range(repeats):
        samples = make_samples(n, offset=(first + repeat) * n)
        start = time.perf_counter()
        score(samples)
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def bench(name: str, reward, make_samples, n: int, workers: int, repeats: int) -> dict:
    in_process = median_rate(lambda b: [reward.score(s) for s in b], make_samples, n, repeats)
    start = time.perf_counter()
    composite = CompositeReward([{"reward": reward, "label": name}], num_workers=workers)
    composite.score_batch(make_samples(workers))  # starts the workers
    startup_s = time.perf_counter() - start
    try:
        pooled = median_rate(composite.score_batch, make_samples, n, repeats, first=repeats + 1)
        errors = composite.error_counts[name]
    finally:
        composite.close()
    return {
        f"{name}_samples_per_s_in_process": round(in_process, 2),
        f"{name}_samples_per_s_workers": round(pooled, 2),
        f"{name}_worker_speedup": round(pooled / in_process, 2),
        f"{name}_worker_startup_s": round(startup_s, 2),
        f"{name}_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--math", type=int, default=96, help="math samples per batch")
    parser.add_argument("--code", type=int, default=18, help="code samples (3 tests each)")
    parser.add_argument("--workers", type=int, default=2, help="reward worker processes")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per setting")
    args = parser.parse_args()

    figures: dict = {"cpus": os.cpu_count(), "workers": args.workers, "repeats": args.repeats}
    figures["math_samples"] = args.math
    figures.update(bench("math", MathReward(), math_samples, args.math, args.workers, args.repeats))
    figures["code_samples"] = args.code
    figures["code_tests_per_sample"] = 3
    code = CodeReward(sandbox={"wall_time_s": 5.0})
    figures.update(bench("code", code, code_samples, args.code, args.workers, args.repeats))
    for key, value in figures.items():
        print(f"{key:>34}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
