"""One GRPO step, ours against TRL's ``GRPOTrainer``, side by side on the same model and prompts.

    .venv/bin/python benchmarks/bench_grpo.py                 # 8 prompts x 8 rollouts x 64 tokens
    .venv/bin/python benchmarks/bench_grpo.py --runs 7 --threads 2

Both train the same tiny random ``Qwen3ForCausalLM`` (the ``toy-teacher`` preset: hidden 128,
2 layers, ~0.43M parameters) with the toy tokenizer, fp32 on CPU, on 8 chat prompts x 8 rollouts
of exactly 64 new tokens (ours: ``ignore_eos``; TRL: ``min_new_tokens``), temperature 1, no
top-k/top-p, no KL (beta 0), one optimizer step per generation batch (TRL: ``num_iterations``
1, ``steps_per_generation`` 1), the same cheap reward function, Lightning and HF Trainer each
with their logging off. A step is timed from the start to the end of a training batch by a
callback in each framework: sampling, rewards, advantages, forward, backward, optimizer step.
After ``--warmup`` steps, ``--runs`` steps are timed per framework, alternating frameworks so
that load from other processes hits both alike; figures are medians. The last stdout line is
one JSON object: both step times, our rollout/update split, ``"speedup"`` (TRL's over ours),
and ``"matmul_floor_s"``: the step's matrix products alone at the same shapes and threads, with
``"speedup_at_floor"``, the speedup a step spending nothing on anything else would show.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import warnings

import torch

from lit_qwen3.rewards import Reward, RewardResult

PROMPTS = ["347+589", "12*7", "9+1234", "88+99", "5+5", "1000*3", "42+58", "316+201"]


def digit_share(text: str) -> float:
    """The shared reward: share of digits in the reply (varies across rollouts: GRPO has signal)."""
    return sum(c.isdigit() for c in text) / max(len(text), 1)


class DigitShare(Reward):
    """Our side of the shared reward, in process."""

    def score(self, sample) -> RewardResult:
        return RewardResult(digit_share(sample.completion))


def trl_step_times(args, n: int) -> list[float]:
    """Step seconds of TRL's GRPOTrainer (``n`` steps after ``args.warmup``)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lit_qwen3.models import load_model
    from lit_qwen3.tokenizer import build_toy_tokenizer

    tokenizer = build_toy_tokenizer()
    model = load_model("toy-teacher", seed=0)
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS]
    dataset = Dataset.from_list(rows * (args.warmup + n + 2))
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.start)

    def reward(completions, **kwargs):
        return [digit_share(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    config = GRPOConfig(
        output_dir=args.scratch,
        per_device_train_batch_size=len(PROMPTS) * args.group,
        num_generations=args.group,
        max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens},
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        num_iterations=1,
        steps_per_generation=1,
        learning_rate=1e-5,
        max_steps=args.warmup + n,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()
    return times[args.warmup :]


def our_step_times(args, n: int) -> tuple[list[float], list[float], list[float]]:
    """Step, rollout and update seconds of our ReasoningRL (``n`` steps after the warm-up)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from lit_qwen3.queries import Query
    from lit_qwen3.rollout.generation import SamplingConfig
    from lit_qwen3.runtime.optim import OptimizerConfig
    from lit_qwen3.stages import ReasoningRL

    module = ReasoningRL(
        "toy-teacher",
        output_dir=f"{args.scratch}/ours_model",  # the export, not into the working directory
        rewards=[{"reward": DigitShare()}],
        group_size=args.group,
        sampling=SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0, ignore_eos=True),
        optimizer=OptimizerConfig(lr=1e-5, warmup_steps=0, min_lr_ratio=1.0),
        dynamic_sampling=False,
        overlong="none",
        samples_every_n_steps=0,
        compile=args.compile,
    )
    queries = [Query([{"role": "user", "content": p}], mode="auto") for p in PROMPTS]
    loader = DataLoader([queries] * (args.warmup + n + 2), batch_size=None, collate_fn=None)
    steps, split = [], []

    class Timer(L.Callback):
        def on_train_batch_start(self, *a, **k):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, *a, **k):
            steps.append(time.perf_counter() - self.start)
            split.append((pl_module.last_timing["rollout_s"], pl_module.last_timing["update_s"]))

    trainer = L.Trainer(
        max_steps=args.warmup + n,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timer()],
    )
    trainer.fit(module, train_dataloaders=loader)
    rollout = [r for r, _ in split[args.warmup :]]
    update = [u for _, u in split[args.warmup :]]
    return steps[args.warmup :], rollout, update


def matmul_floor_s(args) -> float:
    """Seconds of the step's matrix products alone, at the same shapes and threads: each linear
    layer's forward and two backward products over every rollout's prompt and completion, plus
    its forward at each decode step. What the step would take if nothing else cost anything."""
    from lit_qwen3.models import load_model
    from lit_qwen3.tokenizer import build_toy_tokenizer

    config = load_model("toy-teacher", seed=0).config
    tokenizer = build_toy_tokenizer()
    prompt = statistics.mean(
        len(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True
            )
        )
        for p in PROMPTS
    )
    rows = len(PROMPTS) * args.group
    tokens = round(rows * (prompt + args.new_tokens))
    hidden, inner = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or hidden // heads
    layer = [
        (hidden, (heads + 2 * kv) * dim),
        (heads * dim, hidden),
        (hidden, 2 * inner),
        (inner, hidden),
    ]
    shapes = layer * config.num_hidden_layers + [(hidden, config.vocab_size)]
    train = [(torch.randn(tokens, k), torch.randn(n, k), torch.randn(tokens, n)) for k, n in shapes]
    decode = [(torch.randn(rows, k), torch.randn(n, k)) for k, n in shapes]

    def products() -> None:
        for x, w, dy in train:
            x @ w.T, dy @ w, dy.T @ x
        for _ in range(args.new_tokens):
            for x, w in decode:
                x @ w.T

    times = []
    for _ in range(args.runs + 1):
        start = time.perf_counter()
        products()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5, help="timed steps per framework")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of --runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    parser.add_argument("--scratch", default="/tmp/bench_grpo_trl")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="our stage's compile option (torch.compile of the lean training forward and "
        "decode step; compiled during the warm-up steps)",
    )
    parser.add_argument("--only", choices=["ours", "trl"], help="time one side only (profiling)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    ours, rollout, update, theirs = [], [], [], []
    for _ in range(args.rounds):
        if args.only != "trl":
            steps, r, u = our_step_times(args, args.runs)
            ours += steps
            rollout += r
            update += u
        if args.only != "ours":
            theirs += trl_step_times(args, args.runs)
    if args.only:
        times = ours or theirs
        print(
            json.dumps(
                {"benchmark": "grpo_step", "side": args.only, "step_s": statistics.median(times)}
            )
        )
        return
    result = {
        "benchmark": "grpo_step",
        "rollouts": len(PROMPTS) * args.group,
        "new_tokens": args.new_tokens,
        "threads": torch.get_num_threads(),
        "ours_step_s": statistics.median(ours),
        "ours_rollout_s": statistics.median(rollout),
        "ours_update_s": statistics.median(update),
        "trl_step_s": statistics.median(theirs),
        "runs": len(ours),
    }
    result["speedup"] = result["trl_step_s"] / result["ours_step_s"]
    result["matmul_floor_s"] = matmul_floor_s(args)
    result["speedup_at_floor"] = result["trl_step_s"] / result["matmul_floor_s"]
    print(
        f"ours {result['ours_step_s']:.3f} s/step (rollout {result['ours_rollout_s']:.3f} s, "
        f"update {result['ours_update_s']:.3f} s); TRL {result['trl_step_s']:.3f} s/step; "
        f"speedup {result['speedup']:.2f}x; matrix products alone {result['matmul_floor_s']:.3f} s "
        f"(a step of nothing else would be {result['speedup_at_floor']:.2f}x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
