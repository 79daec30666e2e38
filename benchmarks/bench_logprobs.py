"""Peak memory and time of per-token log-probs: full logits vs the chunked kernel.

    .venv/bin/python benchmarks/bench_logprobs.py          # the issue's size: 2 x 4096, V 151,936
    .venv/bin/python benchmarks/bench_logprobs.py --tokens 512 --vocab 32000 --repeats 3

Both variants run forward *and* backward (``logprobs.sum().backward()``) from final hidden
states ``(batch x tokens, hidden)`` and an ``lm_head`` weight ``(vocab, hidden)``, fp32:

- naive: ``log_softmax(hidden @ W.T / T).gather(labels)``, what a plain training loop does;
- chunked: ``chunked_logprobs_and_entropy`` (also returns the entropy, which naive skips).

Each variant runs in its own subprocess so that peaks do not mix. Peak memory is the growth of
peak RSS over the baseline taken after the inputs exist (``torch.cuda.max_memory_allocated``
on a GPU); both include the weight gradient (vocab x hidden floats), which any trainer needs.
The naive variant needs about ``3 x tokens x vocab x 4`` bytes (~15 GB at the default size);
it is skipped, with a message, when the machine has less memory available than that.
Timings are medians over ``--repeats``. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from lit_qwen3.ops.losses import chunked_logprobs_and_entropy

GIB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per sequence")
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def naive(hidden, weight, labels, temperature):
    logits = hidden @ weight.T
    if temperature != 1.0:
        logits.div_(temperature)  # in place, as TRL does
    logp = torch.log_softmax(logits, dim=-1)
    del logits
    return logp.gather(-1, labels[:, None]).squeeze(-1)


def chunked(hidden, weight, labels, temperature, chunk_size):
    logprobs, _entropy = chunked_logprobs_and_entropy(
        hidden, weight, labels, temperature=temperature, chunk_size=chunk_size
    )
    return logprobs


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_worker(args: argparse.Namespace) -> dict:
    """One variant, in this process: returns peak growth, timings and a checksum."""
    torch.manual_seed(0)
    n, device = args.batch * args.tokens, args.device
    # in-place scaling: a temporary copy would inflate the baseline peak
    hidden = torch.randn(n, args.hidden, device=device).requires_grad_()
    weight = torch.randn(args.vocab, args.hidden, device=device).mul_(0.02).requires_grad_()
    labels = torch.randint(0, args.vocab, (n,), device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_bytes(device)
    times = []
    for _ in range(args.repeats):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        if args.worker == "naive":
            logprobs = naive(hidden, weight, labels, args.temperature)
        else:
            logprobs = chunked(hidden, weight, labels, args.temperature, args.chunk_size)
        logprobs.sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "peak_gib": (peak_bytes(device) - baseline) / GIB,
        "median_s": statistics.median(times),
        "logprob_sum": logprobs.sum().item(),
        "grad_hidden_norm": hidden.grad.norm().item(),
        "grad_weight_norm": weight.grad.norm().item(),
    }


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info["MemAvailable"]


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    forwarded = sys.argv[1:]
    n = args.batch * args.tokens
    naive_need = 3 * n * args.vocab * 4 + 2 * args.vocab * args.hidden * 4
    results = {}
    for variant in ("chunked", "naive"):
        if variant == "naive" and args.device == "cpu" and naive_need > 0.9 * available_bytes():
            print(
                f"skipping naive: needs ~{naive_need / GIB:.1f} GiB, "
                f"{available_bytes() / GIB:.1f} GiB available"
            )
            continue
        cmd = [sys.executable, __file__, *forwarded, "--worker", variant]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:8s} peak {r['peak_gib']:7.2f} GiB   median {r['median_s']:7.2f} s")
    summary = {
        "batch": args.batch,
        "tokens": args.tokens,
        "vocab": args.vocab,
        "hidden": args.hidden,
        "chunk_size": args.chunk_size,
        "device": args.device,
        "repeats": args.repeats,
        "chunked_peak_gib": results["chunked"]["peak_gib"],
        "chunked_median_s": results["chunked"]["median_s"],
    }
    if "naive" in results:
        c, v = results["chunked"], results["naive"]
        summary.update(
            naive_peak_gib=v["peak_gib"],
            naive_median_s=v["median_s"],
            peak_ratio=c["peak_gib"] / v["peak_gib"],
            time_ratio=c["median_s"] / v["median_s"],
            logprob_sum_rel_diff=abs(c["logprob_sum"] - v["logprob_sum"]) / abs(v["logprob_sum"]),
            grad_weight_norm_rel_diff=abs(c["grad_weight_norm"] - v["grad_weight_norm"])
            / v["grad_weight_norm"],
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
