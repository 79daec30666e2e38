"""bench_distill's TRL half: the benchmark's models and prompts, and one on-policy step of TRL's
``GKDTrainer`` (``lmbda=1``) and ``DistillationTrainer`` (``beta=1``), timed between the HF
``Trainer``'s ``on_step_begin`` and ``on_step_end`` (see bench_distill's docstring)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings

import torch
from transformers import Qwen3ForCausalLM, TrainerCallback

from lit_qwen3.models import TinyQwen3, load_model, tiny_qwen3_config
from lit_qwen3.tokenizer import build_toy_tokenizer

#: the benchmark's models: student ~0.43M (the toy-teacher preset), teacher ~3.2M parameters
STUDENT = "toy-teacher"
TEACHER = TinyQwen3(256, 4, 4, 2, 64, 768)


def bench_models(seed: int = 0):
    """The random student (~0.43M) and teacher (~3.2M) Qwen3s on the toy vocabulary."""
    tokenizer = build_toy_tokenizer()
    student = load_model(STUDENT, seed=seed, attn_implementation="sdpa")
    torch.manual_seed(seed + 1)
    config = tiny_qwen3_config(
        TEACHER,
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config._attn_implementation = "sdpa"
    teacher = Qwen3ForCausalLM(config).eval()
    return student, teacher, tokenizer


def toy_conversations(count: int, seed: int) -> list[dict]:
    """``count`` one-turn sums as ``messages`` (the format TRL's ChatML collator reads: the
    prompt is every turn but the last, which it replaces by the student's sample)."""
    rng = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        digits = int(torch.randint(1, 4, (1,), generator=rng))
        a, b = (int(x) for x in torch.randint(1, 10**digits, (2,), generator=rng))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"{a}+{b}"},
                    {"role": "assistant", "content": str(a + b)},
                ]
            }
        )
    return rows


class StepTimer(TrainerCallback):
    """Wall-clock and process CPU seconds of each optimizer step, as the ``Trainer`` loop
    brackets it (CPU time is less disturbed by other jobs on a shared machine)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._start = self._start_cpu = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start, self._start_cpu = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._start_cpu)


def _common_trainer_args(out_dir: str, batch: int, steps: int, seed: int) -> dict:
    """The ``TrainingArguments`` both TRL trainers get: fp32, no checkpointing, no I/O."""
    return {
        "output_dir": out_dir,
        "per_device_train_batch_size": batch,
        "max_steps": steps,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant",
        "gradient_checkpointing": False,
        "bf16": False,
        "use_cpu": not torch.cuda.is_available(),
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": seed,
    }


def _summary(prefix: str, timer: StepTimer, sampled: list[int], warmup: int) -> dict:
    timed = timer.seconds[warmup:]
    return {
        f"{prefix}_step_s": statistics.median(timed),
        f"{prefix}_step_cpu_s": statistics.median(timer.cpu_seconds[warmup:]),
        f"{prefix}_step_runs_s": [round(s, 4) for s in timed],
        f"{prefix}_sampled_tokens_per_step": sampled[warmup:],
    }


def time_trl_gkd_step(
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
) -> dict:
    """Median seconds of one on-policy ``GKDTrainer`` step (``lmbda=1``), see the module doc.

    The student is trained in place (copy it first to reuse its initial weights). Every
    sample is exactly ``new_tokens`` long (``min_new_tokens``), as ours with ``ignore_eos``.
    Returns ``trl_gkd_step_s`` (the median), the timed runs and the tokens each step sampled.
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset

    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError:  # TRL < 0.24 kept GKD at the top level
        from trl import GKDConfig, GKDTrainer

    steps, timer = warmup + runs, StepTimer()
    with tempfile.TemporaryDirectory() as out_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = GKDConfig(
            **_common_trainer_args(out_dir, batch, steps, seed),
            lmbda=1.0,  # every batch sampled by the student: on-policy
            beta=beta,
            temperature=1.0,
            max_new_tokens=new_tokens,
        )
        trainer = GKDTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=Dataset.from_list(toy_conversations(batch * steps, seed)),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        # exactly new_tokens per sample: a random student rarely samples <|im_end|>, but may
        trainer.generation_config.min_new_tokens = new_tokens
        trainer.generation_kwargs["min_new_tokens"] = new_tokens
        sampled = []  # completion tokens per step, to show every step sampled batch x new_tokens
        generate = trainer.generate_on_policy_outputs

        def counting_generate(model, inputs, generation_config):
            ids, attention_mask, labels = generate(model, inputs, generation_config)
            sampled.append(int(attention_mask[:, inputs["prompts"].shape[1] :].sum()))
            return ids, attention_mask, labels

        trainer.generate_on_policy_outputs = counting_generate
        trainer.train()
    return _summary("trl_gkd", timer, sampled, warmup)


def time_trl_distillation_step(
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
) -> dict:
    """Median seconds of one ``DistillationTrainer`` step (TRL's maintained on-policy trainer,
    with its own chunked divergence), set up as :func:`time_trl_gkd_step`."""
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    steps, timer = warmup + runs, StepTimer()
    prompts = [{"prompt": row["messages"][:1]} for row in toy_conversations(batch * steps, seed)]
    with tempfile.TemporaryDirectory() as out_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = DistillationConfig(
            **_common_trainer_args(out_dir, batch, steps, seed),
            beta=beta,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_completion_length=new_tokens,
            generation_kwargs={"min_new_tokens": new_tokens},
        )
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=Dataset.from_list(prompts),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        sampled = []
        score = trainer._generate_and_score_completions

        def counting_score(inputs):
            out = score(inputs)
            sampled.append(int(out["completion_mask"].sum()))
            return out

        trainer._generate_and_score_completions = counting_score
        trainer.train()
    return _summary("trl_distillation", timer, sampled, warmup)
