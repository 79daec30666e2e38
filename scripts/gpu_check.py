"""Checks that need a GPU, run in a few minutes on a lent machine (see scripts/gpu_check.sh).

1. The sampler on CUDA: greedy output equals ``model.generate`` token for token, budgets hold;
   the compiled decode step (``compile=True``) samples what the eager one samples, and how fast.
2. ColdStartSFT trains on the toy task in bf16 on one GPU (loss falls) and exports a model.
3. flash-attn (when installed): packed rows give the same per-document logits as separate rows.
4. Qwen3-0.6B-shaped random weights (the real model's layers, heads and widths; the toy
   vocabulary, so nothing is downloaded), saved and loaded like a checkpoint: a GRPO step, an
   on-policy distillation step and an SFT step (seconds, tokens/s), and the SFT step's MFU
   against this GPU's bf16 matmul peak measured in the same run.
5. Strategy smoke runs of SFT on one GPU: FSDP, DeepSpeed ZeRO-2 and ZeRO-3 (when installed).
Prints one JSON object with the figures as its last line. ``--cpu-smoke`` runs checks 4 and 5
on CPU at toy width (hidden 64, 2 layers): it tests this script, not the GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch

from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.models import flash_attention_available, load_model
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT
from lit_qwen3.tokenizer import build_toy_tokenizer

#: Qwen3-0.6B's body (config.json of Qwen/Qwen3-0.6B); the vocabulary is the toy tokenizer's.
QWEN3_0_6B_SHAPE = {
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
}
#: ``--cpu-smoke``: the same checks at toy width.
SMOKE_SHAPE = {
    **QWEN3_0_6B_SHAPE,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
}


def check_sampler(results: dict) -> None:
    tokenizer = build_toy_tokenizer()
    model = load_model("toy-teacher", seed=0).cuda()
    prompts = [
        tokenizer(f"<|im_start|>user\n{i}+{i}<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
        for i in range(8, 40)
    ]
    sampler = RolloutSampler(tokenizer, SamplingConfig(max_new_tokens=48, do_sample=False))
    ours = sampler.sample(model, prompts)
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts]).cuda()
    mask = (
        torch.arange(width).cuda()[None]
        >= torch.tensor([width - len(p) for p in prompts]).cuda()[:, None]
    ).long()
    reference = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=48,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )[:, width:]
    n = min(reference.shape[1], ours.completion_ids.shape[1])
    same = (ours.completion_ids[:, :n] == reference[:, :n]) | (ours.completion_mask[:, :n] == 0)
    results["sampler_greedy_matches_generate"] = bool(same.all())
    budgeted = RolloutSampler(tokenizer, SamplingConfig(max_new_tokens=48)).sample(
        model,
        [p + [tokenizer.convert_tokens_to_ids("<think>")] for p in prompts],
        thinking_budget=5,
    )
    results["sampler_budget_respected"] = bool((budgeted.thinking_length <= 5).all())


def check_compiled_sampler(results: dict) -> None:
    """Seeded rows under a budget: compiled and eager sampling agree on CUDA; seconds of each."""
    from lit_qwen3.rollout.sampling import mix_seed

    tokenizer = build_toy_tokenizer()
    model = load_model("toy-teacher", seed=0).cuda()
    prompts = [
        tokenizer(f"<|im_start|>user\n{i}+{i}<|im_end|>\n<|im_start|>assistant\n<think>\n")[
            "input_ids"
        ]
        for i in range(64)
    ]
    config = SamplingConfig(max_new_tokens=64, temperature=0.7, top_k=40, ignore_eos=True)
    seeds = [mix_seed(7, i) for i in range(len(prompts))]
    runs = {}
    for compile in (False, True):
        sampler = RolloutSampler(tokenizer, config, compile=compile)
        times = []
        for _ in range(4):
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = sampler.sample(model, prompts, seeds=seeds, thinking_budget=16)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        runs[compile] = out
        results[f"sampler_{'compiled' if compile else 'eager'}_s"] = sorted(times[1:])[1]
    eager, compiled = runs[False], runs[True]
    results["compiled_sampler_matches_eager"] = bool(
        torch.equal(eager.completion_ids, compiled.completion_ids)
        and torch.equal(eager.thinking_length, compiled.thinking_length)
    )
    results["compiled_sampler_logprob_max_diff"] = float(
        (eager.logprobs - compiled.logprobs).abs().max()
    )


def check_training(results: dict, directory: str = "/tmp/gpu_check_model") -> None:
    data = ConversationDataModule(
        "toy-teacher",
        toy_size=4000,
        max_tokens_per_batch=4096,
        max_length=256,
        packing=False,
        val_size=32,
    )
    module = ColdStartSFT(
        model="toy-teacher",
        dtype="bfloat16",
        output_dir=directory,
        optimizer=OptimizerConfig(lr=3e-3),
    )
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, *args):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_steps=100,
        accelerator="gpu",
        devices=1,
        precision="bf16-true",
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        callbacks=[Record()],
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    results["train_steps_per_s"] = 100 / (time.perf_counter() - start)
    results["train_loss_first_last"] = [losses[0], losses[-1]]
    results["train_loss_falls"] = losses[-1] < 0.5 * losses[0]


def check_flash_attention_packing(results: dict) -> None:
    results["flash_attention"] = flash_attention_available()
    if not results["flash_attention"]:
        return
    model = load_model("toy-teacher", seed=0, dtype="bfloat16").cuda()
    model.config._attn_implementation = "flash_attention_2"
    a, b = torch.randint(0, 250, (1, 37)).cuda(), torch.randint(0, 250, (1, 21)).cuda()
    packed = torch.cat([a, b], 1)
    position_ids = torch.cat([torch.arange(37), torch.arange(21)])[None].cuda()
    with torch.no_grad():
        together = model(packed, position_ids=position_ids, use_cache=False).logits
        alone = torch.cat([model(a, use_cache=False).logits, model(b, use_cache=False).logits], 1)
    results["flash_packed_max_abs_diff"] = float((together - alone).abs().max())


def shaped_checkpoint(directory: Path, shape: dict, dtype: torch.dtype) -> Path:
    """Random weights of ``shape`` with the toy tokenizer, written as an HF directory."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_toy_tokenizer()
    config = Qwen3Config(vocab_size=len(tokenizer), **shape)
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).to(dtype).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _trainer(device: str, steps: int, **kwargs) -> L.Trainer:
    gpu = device == "cuda"
    settings = dict(
        max_steps=steps,
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-true" if gpu else "32-true",
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**settings, **kwargs})


class StepTimes(L.Callback):
    """Seconds per training batch (the first ``skip`` are warm-up)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.start)

    def median(self, skip: int = 1) -> float:
        kept = sorted(self.times[skip:] or self.times)
        return kept[len(kept) // 2]


def _queries(directory: Path, per_step: int):
    from lit_qwen3.datamodules.queries import QueryDataModule

    return QueryDataModule(str(directory), queries_per_step=per_step, toy_size=256, val_size=0)


def check_rl_and_distillation(results: dict, directory: Path, device: str) -> None:
    """A GRPO and an on-policy distillation step on the shaped weights (8 x 8 x 64 tokens)."""
    from lit_qwen3.stages import OnPolicyDistillation, ReasoningRL

    sampling = SamplingConfig(max_new_tokens=64, temperature=1.0, ignore_eos=True)
    common = dict(sampling=sampling, samples_every_n_steps=0, dtype=_dtype_name(device))
    timer = StepTimes()
    rl = ReasoningRL(
        str(directory),
        output_dir=str(directory.parent / "grpo_out"),
        rewards=[{"name": "arithmetic"}],
        group_size=8,
        dynamic_sampling=False,
        overlong="none",
        **common,
    )
    _trainer(device, 4, callbacks=[timer]).fit(rl, _queries(directory, 8))
    results["grpo_step_times_s"] = timer.times
    results["grpo_step_s"] = timer.median()
    results["grpo_rollout_s"] = rl.last_timing["rollout_s"]
    results["grpo_update_s"] = rl.last_timing["update_s"]
    results["grpo_tokens_per_s"] = 8 * 8 * 64 / timer.median()
    timer = StepTimes()
    distill = OnPolicyDistillation(
        str(directory),
        teacher=str(directory),
        output_dir=str(directory.parent / "distill_out"),
        **common,
    )
    _trainer(device, 3, callbacks=[timer]).fit(distill, _queries(directory, 64))
    results["distill_step_s"] = timer.median()
    results["distill_tokens_per_s"] = 64 * 64 / timer.median()


def _dtype_name(device: str) -> str:
    return "bfloat16" if device == "cuda" else "float32"


def _sft_data(directory: Path, tokens_per_batch: int):
    return ConversationDataModule(
        str(directory),
        toy_size=2000,
        max_tokens_per_batch=tokens_per_batch,
        max_length=256,
        packing=True,
        val_size=0,
    )


def matmul_peak(device: str, dtype: torch.dtype, n: int = 8192) -> float:
    """FLOP/s of a large square matmul (the peak MFU is measured against)."""
    n = n if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def check_sft_mfu(results: dict, directory: Path, device: str) -> None:
    """SFT steps on the shaped weights; MFU = (6 N + attention) FLOPs per token x tokens/s
    over the measured bf16 matmul peak."""
    tokens_per_batch = 16384 if device == "cuda" else 2048
    module = ColdStartSFT(
        model=str(directory), dtype=_dtype_name(device), output_dir=str(directory.parent / "sft")
    )
    timer = StepTimes()
    _trainer(device, 6, callbacks=[timer]).fit(module, _sft_data(directory, tokens_per_batch))
    config = module.model.config
    params = sum(p.numel() for p in module.model.parameters())
    embedding = config.vocab_size * config.hidden_size
    attention = 12 * config.num_hidden_layers * config.hidden_size * 256  # ~6 x 2 x L x d x T
    flops_per_token = 6 * (params - embedding) + attention
    tokens_per_s = tokens_per_batch / timer.median(skip=2)
    peak = matmul_peak(device, torch.bfloat16 if device == "cuda" else torch.float32)
    results["sft_params"] = params
    results["sft_step_s"] = timer.median(skip=2)
    results["sft_tokens_per_s"] = tokens_per_s
    results["matmul_peak_tflops"] = peak / 1e12
    results["sft_mfu"] = flops_per_token * tokens_per_s / peak


def check_strategies(results: dict, directory: Path, device: str) -> None:
    """Two SFT steps under each single-device sharded strategy Lightning ships."""
    from lightning.pytorch.strategies import FSDPStrategy

    strategies = {"fsdp": lambda: FSDPStrategy()}
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        results["deepspeed"] = "not installed (pip install -e '.[deepspeed]')"
    else:
        from lightning.pytorch.strategies import DeepSpeedStrategy

        strategies["deepspeed_zero2"] = lambda: DeepSpeedStrategy(stage=2)
        strategies["deepspeed_zero3"] = lambda: DeepSpeedStrategy(stage=3)
    if device != "cuda":
        results["strategies"] = f"{sorted(strategies)}: GPU only, not run"
        return
    for name, strategy in strategies.items():
        try:
            module = ColdStartSFT(model=str(directory), output_dir=str(directory.parent / name))
            trainer = _trainer(device, 2, strategy=strategy())
            trainer.fit(module, _sft_data(directory, 2048))
            results[f"{name}_ok"] = trainer.global_step == 2
        except Exception as error:
            results[f"{name}_error"] = f"{type(error).__name__}: {error}"[:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="checks 4-5 on CPU, toy width")
    parser.add_argument("--scratch", default="/tmp/gpu_check")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run these checks only")
    args = parser.parse_args()
    scratch = Path(args.scratch)
    if args.cpu_smoke:
        device, shape, results = "cpu", SMOKE_SHAPE, {"device": "cpu (smoke)"}
        checks = {}
    else:
        assert torch.cuda.is_available(), "no CUDA device: run this on the GPU machine"
        device, shape = "cuda", QWEN3_0_6B_SHAPE
        results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
        checks = {
            c.__name__: c
            for c in (
                check_sampler,
                check_compiled_sampler,
                check_training,
                check_flash_attention_packing,
            )
        }
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shaped = shaped_checkpoint(scratch / "qwen3-0.6b-shaped", shape, dtype)
    for check in (check_rl_and_distillation, check_sft_mfu, check_strategies):
        checks[check.__name__] = lambda r, check=check: check(r, shaped, device)
    if args.only:
        unknown = sorted(set(args.only) - set(checks))
        if unknown:
            parser.error(f"unknown checks {unknown}; they are {sorted(checks)}")
        checks = {name: checks[name] for name in args.only}
    for name, check in checks.items():
        try:
            check(results)
        except Exception as error:  # report every check, even after one fails
            results[f"{name}_error"] = f"{type(error).__name__}: {error}"[:500]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
