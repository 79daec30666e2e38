"""Checks that need a GPU, run in a few minutes on a lent machine (see scripts/gpu_check.sh).

1. The sampler on CUDA: greedy output equals ``model.generate`` token for token, budgets hold.
2. ColdStartSFT trains on the toy task in bf16 on one GPU (loss falls) and exports a model.
3. flash-attn (when installed): packed rows give the same per-document logits as separate rows.
Prints one JSON object with the figures as its last line.
"""

from __future__ import annotations

import json
import time

import lightning as L
import torch

from lit_qwen3.datamodules.conversations import ConversationDataModule
from lit_qwen3.generation import RolloutSampler, SamplingConfig
from lit_qwen3.models import flash_attention_available, load_model
from lit_qwen3.optim import OptimizerConfig
from lit_qwen3.stages import ColdStartSFT
from lit_qwen3.tokenizer import build_toy_tokenizer


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


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device: run this on the GPU machine"
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for check in (check_sampler, check_training, check_flash_attention_packing):
        try:
            check(results)
        except Exception as error:  # report every check, even after one fails
            results[f"{check.__name__}_error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
