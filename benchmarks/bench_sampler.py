"""Rollout sampler throughput against ``model.generate`` on the same model and prompts.

    .venv/bin/python benchmarks/bench_sampler.py                  # toy student, batch 64 x 128
    .venv/bin/python benchmarks/bench_sampler.py --batch 16 --new-tokens 32 --runs 3
    .venv/bin/python benchmarks/bench_sampler.py --threads 0      # torch's default threads

All sample at temperature 1 with no truncation (top-k 0, top-p 1) from left-padded prompts of
mixed lengths (~20 tokens) and generate exactly ``--new-tokens`` tokens per row (ours:
``ignore_eos``; generate: ``min_new_tokens``). Three samplers: ours (lean Qwen3 decode step),
ours through the model's own forward (``fast_path=False``), and ``model.generate``. Runs
alternate between them after one warm-up each, so load from other processes hits all alike;
figures are medians of wall-clock time (CPU-time medians alongside). One thread by default: at
toy size every op is tiny, and a second thread mostly adds contention on a shared machine.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lit_qwen3.models import load_model
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.tokenizer import build_toy_tokenizer


def make_prompts(tokenizer, batch: int, seed: int) -> list[list[int]]:
    """Chat prompts of mixed lengths (about 20 tokens with the toy tokenizer)."""
    rng = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(batch):
        a, b = torch.randint(
            1, 10 ** int(torch.randint(1, 4, (1,), generator=rng)), (2,), generator=rng
        )
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{a}+{b}"}], tokenize=False, add_generation_prompt=True
        )
        prompts.append(tokenizer.encode(text, add_special_tokens=False))
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-student", help="preset name or model directory")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    tokenizer = build_toy_tokenizer()
    model = load_model(args.model, seed=args.seed).eval()
    prompts = make_prompts(tokenizer, args.batch, args.seed)
    config = SamplingConfig(max_new_tokens=args.new_tokens, ignore_eos=True)
    sampler = RolloutSampler(tokenizer, config)
    hf_forward = RolloutSampler(tokenizer, config, fast_path=False)
    padded = tokenizer.pad(
        {"input_ids": prompts}, padding=True, padding_side="left", return_tensors="pt"
    )
    generator = torch.Generator().manual_seed(args.seed)

    def ours() -> int:
        rollouts = sampler.sample(model, prompts, generator=generator)
        return int(rollouts.completion_mask.sum())

    def ours_hf_forward() -> int:
        rollouts = hf_forward.sample(model, prompts, generator=generator)
        return int(rollouts.completion_mask.sum())

    def generate() -> int:
        with torch.no_grad():
            out = model.generate(
                **padded,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=list(sampler.think_tokens.eos_token_ids),
            )
        return (out.shape[1] - padded["input_ids"].shape[1]) * out.shape[0]

    runners = {"ours": ours, "ours_hf_forward": ours_hf_forward, "generate": generate}
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    tokens: dict[str, int] = {}
    for name, run in runners.items():
        tokens[name] = run()  # warm-up
    for _ in range(args.runs):
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            tokens[name] = run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    median = {name: statistics.median(values) for name, values in wall.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    for name in runners:
        runs = [round(s, 3) for s in wall[name]]
        print(f"{name:>15}: {tokens[name]} tokens, wall-clock runs (s): {runs}")
    result = {
        "model": args.model,
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "ours_tok_s": round(tokens["ours"] / median["ours"], 1),
        "ours_hf_forward_tok_s": round(tokens["ours_hf_forward"] / median["ours_hf_forward"], 1),
        "generate_tok_s": round(tokens["generate"] / median["generate"], 1),
        "speedup": round(median["generate"] / median["ours"], 3),
        "speedup_hf_forward": round(median["generate"] / median["ours_hf_forward"], 3),
        "speedup_cpu_time": round(median_cpu["generate"] / median_cpu["ours"], 3),
        "ours_ms_per_step": round(1e3 * median["ours"] / args.new_tokens, 3),
        "generate_ms_per_step": round(1e3 * median["generate"] / args.new_tokens, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
