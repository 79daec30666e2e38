"""Model FLOPs utilisation of an SFT training step on CPU, against this machine's measured peak.

    .venv/bin/python benchmarks/bench_mfu.py                 # hidden 1024, 2 layers, 4 x 512
    .venv/bin/python benchmarks/bench_mfu.py --threads 2 --batch 8 --seq 256 --no-compile
    .venv/bin/python benchmarks/bench_mfu.py --profile       # + torch.profiler's top ops

The step is our SFT stage's training math (``ColdStartSFT._loss``: the lean Qwen3 forward of
:mod:`lit_qwen3.ops.training_forward`, the LM head, the assistant-only cross-entropy), its backward
and the AdamW update, fp32, on a random ``Qwen3ForCausalLM`` (default hidden 1024, intermediate
3072, 16 heads of 64, 8 KV heads, 2 layers, the toy tokenizer's vocabulary) and rows with no
padding (every row is full length; the first quarter of each is the prompt, not trained on).

Peak: the median FLOP/s of ``torch.matmul`` on two 4096 x 4096 fp32 matrices (2 n^3 FLOPs),
measured in the same run with the same threads. The load of other processes changes both, so
peak and step are timed alternately (one matmul, one step, ...) and each reported as a median.

Model FLOPs of a step (the PaLM / Megatron convention, forward + backward = 3 x forward):

* ``6 * N * tokens``, ``N`` = the weights of every matrix product the step runs: all
  parameters except the input embedding table (looked up, not multiplied), plus the LM head
  (``vocab x hidden``, counted even when tied to the embedding: the product runs);
* attention ``6 * layers * tokens * seq * heads * head_dim``: QK^T and AV are
  ``2 * seq * head_dim`` FLOPs per token and head each, halved for causal attention, times 3.

Norms, rotary embeddings, activations, softmax and the optimizer are not model FLOPs (they are
time the step spends, which is the point of the measure). ``peak_fraction`` = model FLOPs per
second over the measured matmul peak; the last stdout line is one JSON object.

What measured on the 2-core shared development machine (Intel, MKL, fp32; peak ~100-150
GFLOP/s per core depending on the load), default shape, ``peak_fraction`` medians:

* compiled forward + fused AdamW, 1 thread: 0.84 (load 3.9), 0.74 (load 7.6);
* eager forward + fused AdamW: 0.75; eager + the per-parameter AdamW loop: 0.64 (the loop costs
  206 ms a step against 49 ms fused, for 26M parameters);
* 2 threads: 0.43 (the other core is busy with other jobs: a 2-thread GEMM waits for its slower
  half); 8 x 256 rows: 0.76, 2 x 1024: 0.70 (eager), against 0.75 for 4 x 512.

Where the time goes (``--profile``, compiled, one step): matrix products (``aten::mm``) 77%,
attention (SDPA's CPU flash kernel) 11% (backward 8.6%, forward 2.8%) for 4% of the model FLOPs,
the compiled elementwise kernels (norms, rotary, SiLU, residuals) 8.5%, fused AdamW 2%. What
would close the rest: attention at matmul efficiency (longer head dims or a better CPU kernel),
larger GEMMs (hidden 2048+: elementwise work grows with hidden, matmul work with its square).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import warnings

import torch

PEAK_N = 4096


def matmul_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    torch.matmul(a, b)
    return time.perf_counter() - start


def build(args):
    """(module, optimizer, batch, model FLOPs of one step) for the arguments."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from lit_qwen3.runtime.optim import OptimizerConfig, configure_adamw
    from lit_qwen3.stages import ColdStartSFT
    from lit_qwen3.tokenizer import build_toy_tokenizer

    tokenizer = build_toy_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate or 3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // args.head_dim,
        num_key_value_heads=max(args.hidden // args.head_dim // 2, 1),
        head_dim=args.head_dim,
        max_position_embeddings=max(args.seq, 1024),
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    optim = OptimizerConfig(
        lr=1e-4, warmup_steps=0, min_lr_ratio=1.0, fused=args.optimizer == "fused"
    )
    module = ColdStartSFT(model="toy-student", optimizer=optim, compile=args.compile)
    module.model = Qwen3ForCausalLM(config).train()  # configure_model keeps a model it is given
    optimizer = configure_adamw(module.model, optim, total_steps=1000)["optimizer"]
    ids = torch.randint(10, len(tokenizer), (args.batch, args.seq))
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    embedding = module.model.get_input_embeddings().weight.numel()
    head = config.vocab_size * config.hidden_size
    matmul_params = sum(p.numel() for p in module.model.parameters()) - embedding + head
    tokens = args.batch * args.seq
    attention = 6 * args.layers * tokens * args.seq * config.num_attention_heads * args.head_dim
    flops = 6 * matmul_params * tokens + attention
    return module, optimizer, batch, flops, matmul_params


def step(module, optimizer, batch) -> None:
    loss, _ = module._loss(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def profile_table(module, optimizer, batch, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(module, optimizer, batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=None, help="default 3 x hidden")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="compile forward"
    )
    parser.add_argument(
        "--optimizer", choices=["fused", "loop"], default="fused", help="AdamW implementation"
    )
    parser.add_argument("--profile", action="store_true", help="print the top ops of one step")
    args = parser.parse_args()
    if args.hidden < 512:
        parser.error("--hidden must be >= 512")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    module, optimizer, batch, flops, params = build(args)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step(module, optimizer, batch)
    warmup_s = time.perf_counter() - start
    a, b = torch.randn(PEAK_N, PEAK_N), torch.randn(PEAK_N, PEAK_N)
    matmul_seconds(a, b)  # warm
    peaks, steps = [], []
    for _ in range(args.steps):  # alternate, so that other processes' load hits both alike
        peaks.append(2 * PEAK_N**3 / matmul_seconds(a, b))
        start = time.perf_counter()
        step(module, optimizer, batch)
        steps.append(time.perf_counter() - start)
    if args.profile:
        print(profile_table(module, optimizer, batch))
    peak = statistics.median(peaks)
    step_s = statistics.median(steps)
    achieved = flops / step_s
    result = {
        "benchmark": "sft_step_mfu",
        "peak_fraction": achieved / peak,
        "achieved_gflops": achieved / 1e9,
        "peak_gflops": peak / 1e9,
        "median_step_s": step_s,
        "step_fractions": [flops / s / p for s, p in zip(steps, peaks, strict=True)],
        "model_gflop_per_step": flops / 1e9,
        "matmul_params": params,
        "shape": {
            "batch": args.batch,
            "seq": args.seq,
            "tokens": args.batch * args.seq,
            "hidden": args.hidden,
            "intermediate": args.intermediate or 3 * args.hidden,
            "layers": args.layers,
            "head_dim": args.head_dim,
        },
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "optimizer": args.optimizer,
        "dtype": "float32",
        "warmup_s": warmup_s,
        "load_average": os.getloadavg()[0],
    }
    print(
        f"{result['achieved_gflops']:.1f} GFLOP/s of {result['peak_gflops']:.1f} peak: "
        f"{result['peak_fraction']:.2f} (step {step_s:.2f} s, load {result['load_average']:.1f})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
