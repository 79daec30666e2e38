"""Distillation: the chunked kernel's peak memory against full logits, and TRL's on-policy step.

    .venv/bin/python benchmarks/bench_distill.py                   # the issue's sizes
    .venv/bin/python benchmarks/bench_distill.py --tokens 2048     # a kernel case that fits 24 GB
    .venv/bin/python benchmarks/bench_distill.py --skip-kernel --runs 9 --trl-trainers gkd

Kernel half (``measure_kernel_memory``): forward *and* backward of a per-token divergence
(reverse KL by default) between a student and a frozen teacher, from final hidden states
``(batch x tokens, hidden)`` and ``lm_head`` weights ``(vocab, hidden)``, fp32, at Qwen3's
vocabulary:

- naive: both models' full logits, ``log_softmax``, the divergence summed over the vocabulary
  (what a plain training loop, or TRL's ``GKDTrainer.generalized_jsd_loss``, does);
- kernel: ``chunked_distillation`` (which also returns the student's entropy).

Each runs in its own subprocess so that peaks do not mix; peak memory is the growth of peak
RSS over the baseline taken after the inputs exist (``torch.cuda.max_memory_allocated`` on a
GPU), and both include the student's weight gradient. Naive needs about ``5 x tokens x vocab``
floats (~23 GiB at 2 x 4096 tokens); when the machine has less memory available, the ratio is
measured with both at the largest halving of ``--tokens`` that fits (``"ratio_tokens"``; a
conservative ratio, as naive grows with the tokens and the kernel's chunk buffers do not), and
the kernel alone at the full size. A smaller case checks that both give the same loss and
gradients.

TRL half (``trl_distill_steps.py``), and ours beside it: one on-policy step of TRL's
``GKDTrainer`` (``time_trl_gkd_step``: ``lmbda=1``, the student samples every batch) and of its
``DistillationTrainer`` (``time_trl_distillation_step``, TRL's maintained on-policy trainer), both with ``beta=1`` (reverse KL, our on-policy default),
on a ~0.4M-parameter random Qwen3 student and a ~3.2M teacher with the toy tokenizer, batch
8 x exactly 64 new tokens (``min_new_tokens``), fp32, no gradient checkpointing (TRL's SFT
defaults turn on bf16 and checkpointing; both are off so that steps compare like with like),
``--threads`` torch threads. A step is what the ``Trainer`` runs between ``on_step_begin`` and
``on_step_end``: sampling, both models' forwards, loss, backward, clipping, optimizer step;
figures are medians over ``--runs`` steps after ``--warmup`` (wall clock, and process CPU
time, which other jobs on a shared machine disturb less); ``--rounds`` repeats every side in
turn, so that load which changes during the run hits all sides alike.

Ours (``time_our_step``) is ``OnPolicyDistillation`` on the same models, prompts, batch and
token count, in a Lightning ``Trainer``, timed the same way. ``"speedup"`` is the faster TRL
trainer's median step time over ours (``"speedup_cpu_time"`` the same in CPU time).

``main`` merges each half's dict into the last stdout line, one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from trl_distill_steps import (
    bench_models,
    time_trl_distillation_step,
    time_trl_gkd_step,
    toy_conversations,
)

from lit_qwen3.models import count_parameters
from lit_qwen3.ops.distill_kernel import chunked_distillation

GIB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kernel = parser.add_argument_group("kernel memory")
    kernel.add_argument("--skip-kernel", action="store_true")
    kernel.add_argument("--batch", type=int, default=2)
    kernel.add_argument("--tokens", type=int, default=4096, help="tokens per sequence")
    kernel.add_argument("--vocab", type=int, default=151_936)
    kernel.add_argument("--hidden", type=int, default=1024, help="student hidden size")
    kernel.add_argument("--teacher-hidden", type=int, default=1024)
    kernel.add_argument(
        "--divergence", choices=["forward_kl", "reverse_kl", "jsd"], default="reverse_kl"
    )
    kernel.add_argument("--beta", type=float, default=0.5, help="JSD's beta")
    kernel.add_argument("--temperature", type=float, default=1.0)
    kernel.add_argument("--chunk-size", type=int, default=1024)
    kernel.add_argument(
        "--check-tokens", type=int, default=128, help="tokens per sequence of the correctness case"
    )
    kernel.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    kernel.add_argument("--worker", choices=["naive", "kernel"], help=argparse.SUPPRESS)
    trl = parser.add_argument_group("TRL on-policy step")
    trl.add_argument("--skip-trl", action="store_true")
    trl.add_argument("--trl-batch", type=int, default=8)
    trl.add_argument("--new-tokens", type=int, default=64)
    trl.add_argument("--runs", type=int, default=5)
    trl.add_argument("--warmup", type=int, default=1)
    trl.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternating rounds of every side (load from other jobs then hits all alike); "
        "medians over every round's runs",
    )
    trl.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    trl.add_argument("--seed", type=int, default=0)
    trl.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="our stage's compile option (torch.compile of the student's lean training forward "
        "and decode step; compiled during the warm-up steps, which then number at least 2)",
    )
    trl.add_argument(
        "--trl-trainers",
        nargs="+",
        choices=["gkd", "distillation"],
        default=["gkd", "distillation"],
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- kernel half
def naive_divergence(hidden, weight, t_hidden, t_weight, divergence, beta, temperature):
    """Per-token divergence from full logits, written the plain way (one vocab-sized tensor
    per step of the formula); the teacher under ``no_grad``."""
    logp = F.log_softmax(hidden @ weight.T / temperature, dim=-1)
    with torch.no_grad():
        logq = F.log_softmax(t_hidden @ t_weight.T / temperature, dim=-1)
    if divergence == "reverse_kl":
        return (logp.exp() * (logp - logq)).sum(-1)
    if divergence == "forward_kl":
        return (logq.exp() * (logq - logp)).sum(-1)
    logm = torch.logaddexp(logp + torch.log1p(torch.tensor(-beta)), logq + torch.tensor(beta).log())
    return beta * (logq.exp() * (logq - logm)).sum(-1) + (1 - beta) * (
        logp.exp() * (logp - logm)
    ).sum(-1)


def kernel_divergence(hidden, weight, t_hidden, t_weight, divergence, beta, temperature, chunk):
    mask = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    out = chunked_distillation(
        hidden,
        weight,
        t_hidden,
        t_weight,
        mask,
        divergence,
        beta=beta,
        temperature=temperature,
        chunk_size=chunk,
    )
    return out.divergence


def make_case(n: int, args: argparse.Namespace, seed: int = 0):
    """Student hidden + weight (with grad), teacher hidden + weight, scaled in place so that
    no temporary copy inflates the baseline."""
    torch.manual_seed(seed)
    device, v = args.device, args.vocab
    hidden = torch.randn(n, args.hidden, device=device).requires_grad_()
    weight = torch.randn(v, args.hidden, device=device).mul_(0.05).requires_grad_()
    t_hidden = torch.randn(n, args.teacher_hidden, device=device)
    t_weight = torch.randn(v, args.teacher_hidden, device=device).mul_(0.05)
    return hidden, weight, t_hidden, t_weight


def run_variant(variant: str, case, args: argparse.Namespace) -> torch.Tensor:
    common = (args.divergence, args.beta, args.temperature)
    if variant == "naive":
        return naive_divergence(*case, *common)
    return kernel_divergence(*case, *common, args.chunk_size)


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_worker(args: argparse.Namespace) -> dict:
    """One variant, in this process: peak growth over forward + backward, time, a checksum."""
    case = make_case(args.batch * args.tokens, args)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_bytes(args.device)
    start = time.perf_counter()
    loss = run_variant(args.worker, case, args).sum()
    loss.backward()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return {
        "peak_gib": (peak_bytes(args.device) - baseline) / GIB,
        "seconds": time.perf_counter() - start,
        "loss": loss.item(),
    }


def check_correctness(args: argparse.Namespace) -> dict:
    """Max abs differences of loss and gradients, kernel vs naive, on a smaller case."""
    case = make_case(args.batch * args.check_tokens, args, seed=1)
    results = []
    for variant in ("naive", "kernel"):
        loss = run_variant(variant, case, args).sum()
        grads = torch.autograd.grad(loss, case[:2])
        results.append((loss.detach(), *grads))
    (loss_n, gh_n, gw_n), (loss_k, gh_k, gw_k) = results
    return {
        "check_tokens": args.batch * args.check_tokens,
        "loss_abs_diff": (loss_k - loss_n).abs().item(),
        "loss_rel_diff": ((loss_k - loss_n).abs() / loss_n.abs()).item(),
        "grad_hidden_max_abs_diff": (gh_k - gh_n).abs().max().item(),
        "grad_weight_max_abs_diff": (gw_k - gw_n).abs().max().item(),
        "grad_weight_max_abs": gw_n.abs().max().item(),
    }


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info["MemAvailable"]


def measure_kernel_memory(args: argparse.Namespace, forwarded: list[str]) -> dict:
    """Peak memory of kernel and naive (subprocesses), their ratio, and the correctness case."""
    n = args.batch * args.tokens

    def naive_need(tokens: int) -> int:
        return 5 * args.batch * tokens * args.vocab * 4 + 2 * args.vocab * args.hidden * 4

    def run(variant: str, tokens: int) -> dict:
        cmd = [sys.executable, __file__, *forwarded, "--tokens", str(tokens), "--worker", variant]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{variant:7s} {args.batch} x {tokens} tokens: peak {r['peak_gib']:7.2f} GiB   "
            f"forward+backward {r['seconds']:7.1f} s"
        )
        return r

    results, summary = {"kernel": run("kernel", args.tokens)}, {}
    # Naive at the full size when it fits; else both at the largest halving that fits (the
    # ratio is then conservative: naive grows with tokens, the kernel's chunk buffers do not).
    available = available_bytes()
    tokens = args.tokens
    while args.device == "cpu" and naive_need(tokens) > 0.9 * available and tokens > 64:
        tokens //= 2
    if args.device == "cpu" and naive_need(tokens) > 0.9 * available:
        print(f"skipping naive: {available / GIB:.1f} GiB available")
    else:
        if tokens != args.tokens:
            print(
                f"naive at {args.batch} x {args.tokens} tokens needs ~"
                f"{naive_need(args.tokens) / GIB:.1f} GiB of {available / GIB:.1f} available: "
                f"the ratio is measured at {args.batch} x {tokens}"
            )
            results["ratio_kernel"] = run("kernel", tokens)
        results["naive"] = run("naive", tokens)
        summary["ratio_tokens"] = args.batch * tokens
    summary.update(
        kernel_tokens=n,
        vocab=args.vocab,
        hidden=args.hidden,
        teacher_hidden=args.teacher_hidden,
        divergence=args.divergence,
        chunk_size=args.chunk_size,
        device=args.device,
        kernel_peak_gib=results["kernel"]["peak_gib"],
        kernel_seconds=results["kernel"]["seconds"],
    )
    if "naive" in results:
        k, v = results.get("ratio_kernel", results["kernel"]), results["naive"]
        summary.update(
            naive_peak_gib=v["peak_gib"],
            naive_seconds=v["seconds"],
            peak_ratio=k["peak_gib"] / v["peak_gib"],
            full_size_loss_rel_diff=abs(k["loss"] - v["loss"]) / abs(v["loss"]),
        )
    check = check_correctness(args)
    print("correctness (kernel vs naive):", json.dumps(check))
    summary.update(check)
    return summary


# ----------------------------------------------------------------------------- main
def time_our_step(
    student,
    teacher,
    tokenizer,
    *,
    batch: int = 8,
    new_tokens: int = 64,
    runs: int = 5,
    warmup: int = 1,
    beta: float = 1.0,
    seed: int = 0,
    compile: bool = False,
) -> dict:
    """Step seconds of our ``OnPolicyDistillation`` in a Lightning ``Trainer``: the same
    models (saved and loaded as Hugging Face directories), prompts, batch and token count as
    TRL's, reverse KL (``beta=1``) through the chunked kernel."""

    import lightning as L
    from torch.utils.data import DataLoader

    from lit_qwen3.queries import Query
    from lit_qwen3.rollout.generation import SamplingConfig
    from lit_qwen3.runtime.optim import OptimizerConfig
    from lit_qwen3.stages import OnPolicyDistillation

    divergence = "reverse_kl" if beta == 1 else "forward_kl" if beta == 0 else "jsd"
    rows = toy_conversations(batch, seed)
    queries = [Query(r["messages"][:1], mode="auto") for r in rows]
    seconds, cpu = [], []

    class Timer(L.Callback):
        def on_train_batch_start(self, *a, **k):
            self._start, self._cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, *a, **k):
            seconds.append(time.perf_counter() - self._start)
            cpu.append(time.process_time() - self._cpu)

    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("student", student), ("teacher", teacher)):
            model.save_pretrained(f"{tmp}/{name}")
            tokenizer.save_pretrained(f"{tmp}/{name}")
        module = OnPolicyDistillation(
            f"{tmp}/student",
            teacher=f"{tmp}/teacher",
            output_dir=f"{tmp}/export",  # not into the working directory
            divergence=divergence,
            jsd_beta=beta,
            sampling=SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, ignore_eos=True),
            optimizer=OptimizerConfig(lr=1e-4, warmup_steps=0, min_lr_ratio=1.0),
            samples_every_n_steps=0,
            seed=seed,
            compile=compile,
        )
        loader = DataLoader([queries] * (warmup + runs + 1), batch_size=None)
        L.Trainer(
            max_steps=warmup + runs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Timer()],
        ).fit(module, train_dataloaders=loader)
    return {
        "ours_step_s": statistics.median(seconds[warmup:]),
        "ours_step_cpu_s": statistics.median(cpu[warmup:]),
        "ours_step_runs_s": [round(x, 4) for x in seconds[warmup:]],
    }


def merge_rounds(prefix: str, rounds: list[dict]) -> dict:
    """One side's figures over every round: medians of all its timed steps (CPU seconds:
    the median of the rounds' medians)."""
    merged = {
        key: [x for r in rounds for x in r[key]] if isinstance(value, list) else value
        for key, value in rounds[0].items()
    }  # the timed runs and the tokens each step sampled, every round's
    merged[f"{prefix}_step_s"] = statistics.median(merged[f"{prefix}_step_runs_s"])
    merged[f"{prefix}_step_cpu_s"] = statistics.median(r[f"{prefix}_step_cpu_s"] for r in rounds)
    return merged


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    forwarded = sys.argv[1:]
    results: dict = {}
    if not args.skip_kernel:
        results.update(measure_kernel_memory(args, forwarded))
    if not args.skip_trl:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        initial_student, teacher, tokenizer = bench_models(args.seed)
        results.update(
            trl_batch=args.trl_batch,
            new_tokens=args.new_tokens,
            student_params=count_parameters(initial_student),
            teacher_params=count_parameters(teacher),
            threads=torch.get_num_threads(),
            runs=args.runs,
        )
        timed: dict[str, list[dict]] = {}
        for _ in range(args.rounds):
            for name, timer in (
                ("gkd", time_trl_gkd_step),
                ("distillation", time_trl_distillation_step),
            ):
                if name not in args.trl_trainers:
                    continue
                student = copy.deepcopy(
                    initial_student
                )  # each trainer starts from the same weights
                figures = timer(
                    student,
                    teacher,
                    tokenizer,
                    batch=args.trl_batch,
                    new_tokens=args.new_tokens,
                    runs=args.runs,
                    warmup=args.warmup,
                    seed=args.seed,
                )
                median, runs = figures[f"trl_{name}_step_s"], figures[f"trl_{name}_step_runs_s"]
                print(f"TRL {name} step: median {median:.3f} s, runs {runs}")
                timed.setdefault(f"trl_{name}", []).append(figures)
            ours = time_our_step(
                copy.deepcopy(initial_student),
                teacher,
                tokenizer,
                batch=args.trl_batch,
                new_tokens=args.new_tokens,
                runs=args.runs,
                warmup=max(args.warmup, 2) if args.compile else args.warmup,
                seed=args.seed,
                compile=args.compile,
            )
            print(f"our on-policy distillation step: median {ours['ours_step_s']:.3f} s")
            timed.setdefault("ours", []).append(ours)
        for prefix, rounds in timed.items():
            results.update(merge_rounds(prefix, rounds))
        trl = [
            results[f"trl_{n}_step_s"]
            for n in ("gkd", "distillation")
            if f"trl_{n}_step_s" in results
        ]
        if trl:  # against TRL's faster on-policy trainer
            results["speedup"] = min(trl) / results["ours_step_s"]
            cpu = [
                results[f"trl_{n}_step_cpu_s"]
                for n in ("gkd", "distillation")
                if f"trl_{n}_step_cpu_s" in results
            ]
            results["speedup_cpu_time"] = min(cpu) / results["ours_step_cpu_s"]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
