"""Sample n completions per query in one thinking mode, verify them, and summarise.

The evaluation behind the ``PassAtK`` and ``ThinkingBudget`` callbacks, usable on its own:

    result = evaluate_mode(model, tokenizer, queries, thinking=True, n_samples=8, ks=(1, 8),
                           verifier="arithmetic")
    result.metrics  # {"pass_at_1": ..., "pass_at_8": ..., "thinking_tokens": ..., ...}

A query is ``{"messages": [...], "answer": "936", ...}``: the conversation before the reply
and its reference. The mode is set both ways Qwen3 knows: the ``/think`` or ``/no_think`` flag
on the last user message and the template's ``enable_thinking`` switch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lit_qwen3.chat import (
    EMPTY_THINKING,
    STOP_THINKING,
    split_thinking,
    strip_thinking_flags,
    with_thinking_flag,
)
from lit_qwen3.ops.metrics import PassAtK
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig
from lit_qwen3.rollout.placement import model_device

Query = Mapping[str, Any]
#: (completion text, query) -> correct?
Verifier = Callable[[str, Query], bool]


def _arithmetic_verifier(completion: str, query: Query) -> bool:
    from lit_qwen3.datamodules.arithmetic import verify

    return verify(split_thinking(completion).answer, query["answer"])


class RewardVerifier:
    """Correct when a registered reward scores 1 (math-verify, code tests, ...).

    Scores go through a :class:`~lit_qwen3.rewards.CompositeReward`, so slow or hostile
    completions run in worker processes under a per-sample ``timeout`` and score 0 on failure.
    The query's ``answer`` is passed as the reward's ``reference``.
    """

    def __init__(self, name: str, *, timeout: float = 10.0, num_workers: int = 1) -> None:
        from lit_qwen3.rewards import CompositeReward

        self.composite = CompositeReward({name: 1.0}, timeout=timeout, num_workers=num_workers)

    def batch(self, completions: Sequence[str], queries: Sequence[Query]) -> list[bool]:
        from lit_qwen3.rewards import Sample

        samples = [
            Sample.from_completion(
                list(query["messages"]),
                completion,
                metadata={"reference": query.get("answer"), **query.get("metadata", {})},
            )
            for completion, query in zip(completions, queries, strict=True)
        ]
        return [result.score >= 1.0 for result in self.composite.score_batch(samples)]

    def __call__(self, completion: str, query: Query) -> bool:
        return self.batch([completion], [query])[0]


def resolve_verifier(verifier: str | Verifier) -> Verifier:
    """A verifier from a name: ``arithmetic`` (the toy task) or any registered reward name."""
    if callable(verifier):
        return verifier
    if verifier == "arithmetic":
        return _arithmetic_verifier
    return RewardVerifier(verifier)


def verify_batch(
    verifier: Verifier, completions: Sequence[str], queries: Sequence[Query]
) -> list[bool]:
    """Check many completions at once when the verifier can batch (rewards), else one by one."""
    if hasattr(verifier, "batch"):
        return verifier.batch(completions, queries)
    return [bool(verifier(c, q)) for c, q in zip(completions, queries, strict=True)]


@dataclass
class ModeEvaluation:
    """Metrics of one (mode, budget) evaluation and its samples (one dict per completion)."""

    metrics: dict[str, float]
    correct: torch.Tensor
    """(num_queries, n_samples) bool."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    follows: torch.Tensor | None = None
    """(num_queries, n_samples) bool: the reply's think block obeys the mode (ThinkFollow)."""

    def per_query(self, what: str = "correct") -> list[float]:
        """Each query's share of samples that are ``correct`` (or that ``follows`` the mode):
        the unit a confidence interval resamples."""
        values = self.correct if what == "correct" else self.follows
        if values is None:
            raise ValueError(f"this evaluation recorded no {what!r} per sample")
        return values.float().mean(1).tolist()

    def per_query_pass_at_k(self, k: int) -> list[float]:
        """Each query's unbiased pass@k estimate, ``1 - C(n - c, k) / C(n, k)``."""
        n = self.correct.shape[1]
        if not 1 <= k <= n:
            raise ValueError(f"pass@{k} needs 1 <= k <= n_samples ({n})")
        return [1.0 - math.comb(n - c, k) / math.comb(n, k) for c in self.correct.sum(1).tolist()]


def encode_prompts(
    tokenizer: Any, queries: Sequence[Query], *, thinking: bool, template_switch: bool = True
) -> list[list[int]]:
    """Token ids of each query's generation prompt in the given mode.

    The mode is always asked for by the flag on the last user message; ``template_switch``
    also sets the template's ``enable_thinking`` (for Qwen3, a non-thinking prompt then ends
    with the empty thinking block, so the model cannot disobey).
    """
    prompts = []
    for query in queries:
        messages = with_thinking_flag(query["messages"], thinking)
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=thinking if template_switch else True,
        )
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompts


def follows_mode(completion: str, thinking: bool) -> bool:
    """ThinkFollow of one reply: a non-empty think block in thinking mode, an empty one in
    non-thinking mode (report Table 22). ``completion`` includes any block the prompt wrote."""
    parsed = split_thinking(completion)
    return parsed.thinking is not None and bool(parsed.thinking) == thinking


def multi_turn_queries(queries: Sequence[Query], seed: int = 0) -> list[dict[str, Any]]:
    """ThinkFollow's multi-turn form of ``queries``: each is preceded by an earlier exchange
    (another query and its reference answer) whose user turn carries a random flag, so only the
    last flag (which the evaluation writes) decides the mode."""
    rng = random.Random(f"lit-qwen3/multi-turn/{seed}")
    out = []
    for i, query in enumerate(queries):
        earlier = queries[(i + 1) % len(queries)]
        flag = rng.choice([" /think", " /no_think", ""])
        first = [dict(m) for m in earlier["messages"]]
        first[-1]["content"] = strip_thinking_flags(first[-1].get("content") or "") + flag
        reply = {"role": "assistant", "content": f"\\boxed{{{earlier.get('answer')}}}"}
        out.append({**query, "messages": [*first, reply, *query["messages"]]})
    return out


@torch.no_grad()
def evaluate_mode(
    model: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[Query],
    *,
    thinking: bool,
    n_samples: int = 1,
    ks: Sequence[int] = (1,),
    verifier: str | Verifier = "math",
    sampling: SamplingConfig | None = None,
    thinking_budget: int | None = None,
    stop_thinking: str = STOP_THINKING,
    batch_size: int = 64,
    seed: int = 0,
    template_switch: bool = True,
) -> ModeEvaluation:
    """Sample ``n_samples`` completions per query and report pass@k and thinking statistics.

    ``sampling`` defaults to Qwen3's recommended settings for the mode. Metrics:
    ``pass_at_{k}`` (unbiased estimator), ``accuracy`` (share of correct samples),
    ``thinking_tokens`` (mean), ``budget_forced`` and ``truncated`` (shares of samples),
    ``think_follow`` (share of replies whose think block obeys the mode; trivially 1 in
    non-thinking mode with ``template_switch``, which writes the empty block into the prompt).
    """
    if not queries:
        raise ValueError("evaluate_mode() got no queries")
    if n_samples < max(ks):
        raise ValueError(f"n_samples={n_samples} is smaller than the largest k={max(ks)}")
    if sampling is None:
        sampling = SamplingConfig.qwen3(thinking)
    check = resolve_verifier(verifier)
    sampler = RolloutSampler(tokenizer, sampling, stop_thinking=stop_thinking)
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)

    prompts = encode_prompts(tokenizer, queries, thinking=thinking, template_switch=template_switch)
    prefill = EMPTY_THINKING if template_switch and not thinking else ""
    rows = [(q, s) for q in range(len(queries)) for s in range(n_samples)]
    correct = torch.zeros(len(queries), n_samples, dtype=torch.bool)
    followed = torch.zeros(len(queries), n_samples, dtype=torch.bool)
    thinking_tokens, forced, truncated, follows, samples = [], [], [], [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            rollouts = sampler.sample(
                model,
                [prompts[q] for q, _ in chunk],
                thinking_budget=thinking_budget,
                generator=generator,
            )
            texts = rollouts.texts(tokenizer)
            verdicts = verify_batch(check, texts, [queries[q] for q, _ in chunk])
            for i, ((q, s), text) in enumerate(zip(chunk, texts, strict=True)):
                correct[q, s] = verdicts[i]
                follows.append(follows_mode(prefill + text, thinking))
                followed[q, s] = follows[-1]
                samples.append(
                    {
                        "query": q,
                        "sample": s,
                        "mode": "think" if thinking else "no_think",
                        "budget": -1 if thinking_budget is None else thinking_budget,
                        "completion": text,
                        "reference": str(queries[q].get("answer")),
                        "correct": bool(correct[q, s]),
                        "thinking_tokens": int(rollouts.thinking_length[i]),
                    }
                )
            thinking_tokens.append(rollouts.thinking_length.float())
            forced.append(rollouts.budget_forced.float())
            truncated.append(rollouts.truncated.float())
    finally:
        model.train(was_training)

    pass_at_k = PassAtK(ks=ks)
    pass_at_k.update(correct)
    metrics = {
        name.replace("pass@", "pass_at_"): float(v) for name, v in pass_at_k.compute().items()
    }
    metrics["accuracy"] = correct.float().mean().item()
    metrics["thinking_tokens"] = torch.cat(thinking_tokens).mean().item()
    metrics["budget_forced"] = torch.cat(forced).mean().item()
    metrics["truncated"] = torch.cat(truncated).mean().item()
    metrics["think_follow"] = sum(follows) / len(follows)
    return ModeEvaluation(metrics, correct, samples, followed)
