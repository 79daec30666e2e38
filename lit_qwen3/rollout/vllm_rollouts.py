"""Rollouts sampled with vLLM (the ``vllm`` extra): the built-in sampler's interface on a
colocated vLLM engine, for RL and on-policy distillation on GPUs.

``VLLMRolloutSampler.sample(model, prompts, ...)`` returns the same :class:`Rollouts` as
:class:`~lit_qwen3.rollout.generation.RolloutSampler`, so the stages pick one or the other by their
``rollout_backend`` argument (``builtin``, the default and the CPU path, or ``vllm``):

* **Colocated engine.** The first call writes the policy's config and tokenizer to a scratch
  directory and starts a ``vllm.LLM`` on it in this process, on this rank's GPU, with
  placeholder weights (``gpu_memory_utilization`` is its share; the trainer keeps the rest). vLLM's engine core
  must run in-process for that (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here before the
  engine starts). With several ranks each runs its own engine (``external_launcher``).
* **Weights synced before every sampling call** (so after every update): the policy's state
  dict, gathered when sharded (FSDP2 ``full_tensor``, ZeRO-3 ``GatheredParameters``), goes to
  the engine model's ``load_weights``, then the prefix cache is reset (cached keys and values
  were computed with the old weights).
* **Thinking budget**, the built-in sampler's rule, as rounds of ``generate``
  (:mod:`lit_qwen3.rollout.budget_rounds`): rows inside an open block ask for no more tokens than the
  budget has left; where a row's budget ran out the stop-thinking text and ``</think>`` are
  appended (``forced_mask``: no gradient) and the row continues in a second call.
* **Log-probs for truncated importance sampling**: the engine runs with
  ``logprobs_mode="processed_logprobs"``, the log-prob of each sampled token under the
  distribution it was drawn from (after temperature, top-k, top-p, min-p): that is
  ``sampling_logprobs``. vLLM reports one kind per engine, so ``logprobs`` holds the same
  values; they equal the built-in ``logprobs`` (raw policy at the temperature) whenever no
  truncation is configured. The trainer re-scores under the same truncation
  (:mod:`lit_qwen3.ops.truncation`), so TIS compares like with like. Forced tokens get 0 in
  both (they are never trained on).
* **Seeds**: per-row seeds become per-request vLLM seeds (mixed with the round), so a row's
  sample does not depend on its batch.

vLLM and CUDA are imported lazily; without them, constructing the sampler raises one line
saying what to install. Not exercised in this repository's tests (they run on CPU without
vLLM): the bookkeeping is, exactly, in ``tests/test_vllm_rollouts.py``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import torch

from lit_qwen3.chat import STOP_THINKING, ThinkTokens
from lit_qwen3.rollout.budget_rounds import BudgetRules, generate_in_rounds
from lit_qwen3.rollout.generation import MIN_TEMPERATURE, Rollouts, SamplingConfig
from lit_qwen3.rollout.sampling import (
    CLOSE_EMPTY_THINKING,
    encode_stop_text,
    mix_seed,
    resolve_thinking_budget,
)

__all__ = ["ROLLOUT_BACKENDS", "VLLMRolloutSampler", "check_vllm_truncation", "require_vllm"]

#: The values of the on-policy stages' ``rollout_backend`` argument.
ROLLOUT_BACKENDS = ("builtin", "vllm")


def require_vllm() -> Any:
    """The ``vllm`` module, or a one-line error saying what is missing and what to install."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "rollout_backend 'vllm' needs vLLM, which is not installed: on a CUDA machine run "
            "`pip install 'lit-qwen3[vllm]'`, or use rollout_backend: builtin"
        ) from error
    if not torch.cuda.is_available():
        raise RuntimeError(
            "rollout_backend 'vllm' needs a CUDA GPU and none is visible: use "
            "rollout_backend: builtin (the CPU sampler)"
        )
    return vllm


def check_vllm_truncation(sampling: SamplingConfig | None) -> None:
    """Refuse settings whose vLLM support differs from the trainer's: vLLM applies min-p before
    top-p (its v1 sampler), the trainer Hugging Face's order (top-p, then min-p), and top-p's
    mass differs between the two as soon as both cut."""
    if sampling is not None and sampling.top_p < 1.0 and sampling.min_p > 0.0:
        raise ValueError(
            "rollout_backend 'vllm' with both top_p < 1 and min_p > 0: vLLM applies min-p "
            "before top-p, so the trainer could not re-score the distribution it sampled; "
            "use one of the two, or rollout_backend: builtin"
        )


class VLLMRolloutSampler:
    """Samples :class:`Rollouts` with a colocated vLLM engine (see the module docstring).

    Args:
        tokenizer: the policy's tokenizer (written with the policy's config for the engine).
        config: sampling settings, as for the built-in sampler.
        stop_thinking / close_empty: the texts forced when a budget runs out (budget > 0 / 0).
        gpu_memory_utilization: the engine's share of GPU memory (weights and KV cache).
        max_model_len: longest prompt + completion; None: prompts are capped by the engine's
            default (the model's context length).
        enable_sleep_mode: free the engine's GPU memory between sampling calls (``sleep``
            after generating, ``wake_up`` before the next sync): more room for training.
        engine_kwargs: more ``vllm.LLM`` arguments (``enforce_eager``, ``dtype``...).
    """

    def __init__(
        self,
        tokenizer: Any,
        config: SamplingConfig | None = None,
        stop_thinking: str | Sequence[int] = STOP_THINKING,
        close_empty: str | Sequence[int] = CLOSE_EMPTY_THINKING,
        *,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        enable_sleep_mode: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.vllm = require_vllm()
        self.tokenizer = tokenizer
        self.think_tokens = ThinkTokens.from_tokenizer(tokenizer)
        self.config = config or SamplingConfig()
        end = self.think_tokens.think_end_id
        self.stop_ids = encode_stop_text(stop_thinking, tokenizer, end, "stop_thinking")
        self.empty_ids = encode_stop_text(close_empty, tokenizer, end, "close_empty")
        self.engine_kwargs = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "enable_sleep_mode": enable_sleep_mode,
            **(engine_kwargs or {}),
        }
        self.llm: Any = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._asleep = False

    # -- engine -------------------------------------------------------------------------------
    def _start(self, model: torch.nn.Module) -> None:
        """Start the engine from the policy's config and tokenizer, with placeholder weights
        (``load_format="dummy"``): the first sync loads the real ones. Every rank writes its
        own scratch directory and runs its own engine."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the model in-process
        self._scratch = tempfile.TemporaryDirectory(prefix="lit_qwen3_vllm_")
        model.config.save_pretrained(self._scratch.name)
        self.tokenizer.save_pretrained(self._scratch.name)
        kwargs = {k: v for k, v in self.engine_kwargs.items() if v is not None}
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_world_size() > 1:
            kwargs.setdefault("distributed_executor_backend", "external_launcher")
            kwargs.setdefault("seed", 0)
        self.llm = self.vllm.LLM(
            model=self._scratch.name,
            load_format="dummy",
            logprobs_mode="processed_logprobs",
            **kwargs,
        )

    def _engine_model(self) -> torch.nn.Module:
        """The engine's model object (in-process engine core; the path differs by version)."""
        executor = self.llm.llm_engine.model_executor
        worker = executor.driver_worker
        worker = getattr(worker, "worker", worker)  # V1 wraps the worker
        return worker.model_runner.model

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load the policy's current weights into the engine (gathered when sharded)."""
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False
        target = self._engine_model()
        for name, tensor in _full_state(model):
            target.load_weights([(name, tensor)])
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()

    # -- sampling -----------------------------------------------------------------------------
    def sample(
        self,
        model: torch.nn.Module,
        prompts: Sequence[Sequence[int]] | torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        thinking_budget: int | Sequence[int | None] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        stop_token_ids: Sequence[int] = (),
        progress: Any = None,
        seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> Rollouts:
        """One completion per prompt from the policy's current weights (as
        :meth:`RolloutSampler.sample`; ``generator`` seeds rows without ``seeds``)."""
        rows_ids = _prompt_lists(prompts, attention_mask)
        budgets = resolve_thinking_budget(thinking_budget, len(rows_ids)).tolist()
        if seeds is None:
            device = generator.device if generator is not None else None
            base = int(torch.randint(0, 2**62, (), generator=generator, device=device))
            seeds = [mix_seed(base, i) for i in range(len(rows_ids))]
        seeds = [int(s) for s in torch.as_tensor(seeds, dtype=torch.long).flatten()]
        if len(seeds) != len(rows_ids):
            raise ValueError(
                f"seeds has {len(seeds)} entries but the batch has {len(rows_ids)} prompts"
            )
        if self.llm is None:
            self._start(model)
        self.sync_weights(model)
        cfg = self.config

        def generate(contexts, max_tokens, round_seeds):
            params = [
                self._params(n, stop_token_ids, seed)
                for n, seed in zip(max_tokens, round_seeds, strict=True)
            ]
            prompts = [{"prompt_token_ids": ids} for ids in contexts]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            if progress is not None:
                progress.update(1)
            return [_continuation(output.outputs[0]) for output in outputs]

        rules = BudgetRules(
            max_new_tokens=cfg.max_new_tokens,
            eos_ids=() if cfg.ignore_eos else (*self.think_tokens.eos_token_ids, *stop_token_ids),
            think_start=self.think_tokens.think_start_id,
            think_end=self.think_tokens.think_end_id,
            stop_ids=tuple(self.stop_ids),
            empty_ids=tuple(self.empty_ids),
        )
        rollouts = generate_in_rounds(
            rows_ids, budgets, seeds, generate, rules, self.think_tokens.pad_token_id
        )
        if self.engine_kwargs.get("enable_sleep_mode"):
            self.llm.sleep(level=2)  # weights come back with the next sync
            self._asleep = True
        return rollouts

    def _params(self, max_tokens: int, stop_token_ids: Sequence[int], seed: int) -> Any:
        cfg = self.config
        greedy = not cfg.do_sample or cfg.temperature < MIN_TEMPERATURE
        return self.vllm.SamplingParams(
            n=1,
            max_tokens=max_tokens,
            temperature=0.0 if greedy else cfg.temperature,
            top_k=cfg.top_k if cfg.top_k > 0 else -1,
            top_p=cfg.top_p,
            min_p=cfg.min_p,
            logprobs=0,  # the sampled token's own log-prob
            seed=seed & (2**63 - 1),
            stop_token_ids=[int(t) for t in stop_token_ids],
            ignore_eos=cfg.ignore_eos,
            detokenize=False,
        )


def _prompt_lists(prompts: Any, attention_mask: torch.Tensor | None) -> list[list[int]]:
    """Token-id lists from lists or a left-padded (B, P) tensor and its mask."""
    if isinstance(prompts, torch.Tensor):
        mask = torch.ones_like(prompts) if attention_mask is None else attention_mask
        return [row[m.bool()].tolist() for row, m in zip(prompts, mask, strict=True)]
    if attention_mask is not None:
        raise ValueError("attention_mask is only for a prompts tensor, not token-id lists")
    if len(prompts) == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be non-empty token-id lists")
    return [[int(t) for t in p] for p in prompts]


def _continuation(completion: Any) -> tuple[list[int], list[float], bool]:
    """(token ids, each one's log-prob, ended on a stop condition) of a vLLM completion."""
    ids = list(completion.token_ids)
    steps = completion.logprobs or [None] * len(ids)
    logprobs = [
        0.0 if step is None else step[t].logprob for step, t in zip(steps, ids, strict=True)
    ]
    return ids, logprobs, completion.finish_reason == "stop"


def _full_state(model: torch.nn.Module) -> Any:
    """(name, full tensor) pairs of the policy: FSDP2 shards gathered, ZeRO-3 partitions
    gathered, detached."""
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            for name, tensor in model.state_dict().items():
                yield name, tensor.detach().clone()
        return
    for name, tensor in model.state_dict().items():
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        yield name, tensor.detach()
