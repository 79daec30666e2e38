"""Thinking-mode fusion data (report section 4.3): one chat template, both modes, budgets.

``FusionDataModule`` builds the SFT mix of stage 3 and trains it like any conversation data
(it is a :class:`~lit_qwen3.datamodules.conversations.ConversationDataModule`):

- **thinking** replies by rejection sampling with the stage-2 model itself on the stage-1
  queries (``rejection_queries``, e.g. the curated cold-start file; by default fresh toy
  problems of stage 1's distribution; ``rejection_samples`` per query, verified, the first
  correct one kept), so fusion does not erase what RL gained; or read from ``thinking_data``;
- **non-thinking** replies with the empty ``<think>\\n\\n</think>`` block, from
  ``non_thinking_data`` or, by default, the toy task's direct answers (``non_thinking_digits``
  sets their operand lengths: the queries a model answers without reasoning are the short ones);
- **flags**: ``/think`` or ``/no_think`` in the user turn or in a system turn; a share of
  thinking prompts carries no flag (thinking is the default); multi-turn dialogs carry random
  flags in earlier turns, and the reply follows the **last** one;
- **cut thinking**: a share of thinking replies is cut at a point drawn uniformly over the whole
  scratchpad (from its very start, a budget of 0, when the stop text writes a sentence into the
  block; else keeping at least its first character, so no /think block is empty) and closed with the stop-thinking text, then answered, so that a budget anywhere
  gives a sensible answer (TOY_NOTES: a narrow spread of cut points gives a step, not a curve).
  The stop text itself stays out of the loss (the reply's ``forced`` text): the sampler writes
  it, and a model trained to write it stops thinking at random points on its own;
  ``cut_stop_text`` is what the sampler forces at the budget (keep it equal to the stage's and
  ``ThinkingBudget``'s ``stop_thinking``): Qwen's docs' sentence, the report's, or the
  template's bare ``</think>``;
- optionally **agent** replies that call the calculator and **instruction** prompts (IFEval
  format), which general RL then rewards.

The builder logs the share of each kind (``self.mix``) and refuses a mix without thinking or
without non-thinking examples. Departure from the report: the report says the budget ability
emerges from fusion untrained; the toy trains on cut-off thinking (TOY_NOTES), and the report's
own sentence is available as ``cut_stop_text``.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from transformers import PreTrainedTokenizerBase

from lit_qwen3.chat import (
    EMPTY_THINKING,
    STOP_THINKING,
    THINK_END,
    split_thinking,
    strip_thinking_flags,
)
from lit_qwen3.datamodules.arithmetic import earlier_exchange
from lit_qwen3.datamodules.conversations import (
    ConversationDataModule,
    read_conversations,
    validate_conversation,
)

__all__ = [
    "FusionDataModule",
    "cut_reasoning",
    "first_cut",
    "forced_close",
    "lowest_cut",
    "rejection_sample",
    "stage_one_queries",
]


def cut_reasoning(reasoning: str, cut: int, stop_thinking: str) -> str:
    """``reasoning`` cut after ``cut`` characters and closed with the stop text's part before
    ``</think>``, so the rendered block reads exactly as the sampler forces it at a budget."""
    if stop_thinking.count(THINK_END) != 1:
        raise ValueError(f"stop_thinking must contain {THINK_END!r} once, got {stop_thinking!r}")
    before = stop_thinking.split(THINK_END)[0].rstrip("\n")
    return reasoning[:cut].rstrip("\n") + before


def forced_close(stop_thinking: str, at_start: bool = False) -> str:
    """The text a reply cut by :func:`cut_reasoning` shows from the cut through ``</think>``
    (the chat template closes the block with a newline and the tag): what the sampler forces
    at a budget, kept out of the loss. ``at_start``: the cut kept nothing, and the template
    strips the block's leading newlines."""
    text = stop_thinking.split(THINK_END)[0].rstrip("\n") + "\n" + THINK_END
    return text.lstrip("\n") if at_start else text


def first_cut(reasoning: str) -> int:
    """The first cut that keeps some thinking: one character past the leading whitespace."""
    start = len(reasoning) - len(reasoning.lstrip())
    return min(start + 1, max(len(reasoning) - 1, 0))


def lowest_cut(reasoning: str, stop_thinking: str) -> int:
    """Where cuts may start: at 0 (a budget of 0) when the stop text leaves words in the block
    (Qwen's or the report's sentence), else at :func:`first_cut`: with the bare ``</think>`` a
    cut at 0 would make a /think row whose think block is empty."""
    if stop_thinking.split(THINK_END)[0].strip():
        return 0
    return first_cut(reasoning)


def stage_one_queries(path: str, n: int) -> list[dict[str, Any]]:
    """``n`` queries (the messages up to the last user turn, and the answer) from stage 1's
    conversations, cycled; rows without an answer cannot be verified and are skipped."""
    from lit_qwen3.datamodules.conversations import read_conversations

    queries = []
    for row in read_conversations(path):
        messages = row["messages"]
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None or row.get("answer") is None:
            continue
        queries.append({"messages": messages[: last_user + 1], "answer": str(row["answer"])})
    if not queries:
        raise ValueError(f"{path}: no conversation with a user turn and an 'answer' to re-answer")
    return [queries[i % len(queries)] for i in range(n)]


def _has_flag(text: str) -> bool:
    return strip_thinking_flags(text) != text.strip()


def rejection_sample(
    model_dir: str,
    queries: list[dict[str, Any]],
    *,
    samples: int,
    max_new_tokens: int,
    thinking: bool = True,
    verifier: str | None = "arithmetic",
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Replies of ``model_dir`` to ``queries`` in one mode, ``samples`` tries each, verified
    (``verifier=None`` keeps the first try): the first correct one per query as a conversation
    (thinking in ``reasoning_content``). Returns (rows, counts)."""
    import torch

    from lit_qwen3.evaluation import evaluate_mode
    from lit_qwen3.models import load_model, load_tokenizer
    from lit_qwen3.rollout.generation import SamplingConfig

    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    with torch.no_grad():
        result = evaluate_mode(
            model,
            tokenizer,
            queries,
            thinking=thinking,
            n_samples=samples,
            verifier=verifier or (lambda completion, query: True),
            sampling=SamplingConfig.qwen3(thinking, max_new_tokens=max_new_tokens),
            batch_size=batch_size,
            seed=seed,
        )
    rows, kept = [], set()
    prefill = "" if thinking else EMPTY_THINKING
    for sample in result.samples:
        if not sample["correct"] or sample["query"] in kept:
            continue
        parsed = split_thinking(prefill + sample["completion"])
        if not parsed.well_formed or bool(parsed.thinking) != thinking or not parsed.answer:
            continue
        kept.add(sample["query"])
        query = queries[sample["query"]]
        reply = {
            "role": "assistant",
            "content": parsed.answer,
            "reasoning_content": parsed.thinking,
        }
        rows.append({"messages": [*query["messages"], reply], "answer": query.get("answer")})
    counts = {
        "queries": len(queries),
        "kept": len(rows),
        "no_correct_sample": len(queries) - len(rows),
    }
    return rows, counts


class FusionDataModule(ConversationDataModule):
    """The stage-3 mix; see the module docstring. Batching arguments as the parent's.

    Args:
        tokenizer: the policy's tokenizer (linked from the model by the CLI).
        rejection_model: the stage-2 model that writes the thinking replies; default: the
            ``tokenizer`` argument when it is a model directory.
        thinking_data: JSONL of thinking conversations instead of rejection sampling.
        rejection_queries: stage 1's conversations (e.g. the curated ``cold_start.jsonl``):
            their prompts and answers are the queries the stage-2 model re-answers (report 4.3);
            default: fresh toy problems of stage 1's distribution. Validation always uses
            held-out toy problems.
        non_thinking_data: JSONL of non-thinking conversations instead of the toy answers.
        size: conversations in the mix (train and validation).
        think_share: share of thinking conversations (the rest: non-thinking).
        rejection_samples: samples per query when rejection sampling.
        rejection_max_new_tokens: reply length limit when rejection sampling.
        no_flag_share: share of thinking prompts without a flag.
        system_flag_share: share of flags written in a system turn.
        multi_turn_share: share of conversations with an earlier exchange (random flag).
        cut_share: share of thinking replies cut short and closed with ``cut_stop_text``.
        cut_stop_text: the text a budget forces (must hold ``</think>`` once): the same as the
            module's and ``ThinkingBudget``'s ``stop_thinking``.
        tool_share / instruction_share: shares of calculator-calling replies and IFEval-format
            instruction conversations (toy task).
        tool_digits: digits of the large factor of the products the calculator replies solve.
        rejection_fallback: when the policy gets no query right (smoke runs of untrained
            models), use the toy task's own scratchpads instead of failing.
        non_thinking_digits: ``(fewest, most)`` digits of the toy non-thinking problems (sum
            operands and the product's long factor); default: ``toy_min_digits`` to
            ``toy_max_digits``. A small model learns direct answers to short problems only
            (TOY_NOTES), so a mix of long ones teaches the format and not the sums; but when
            the thinking rows are longer, the mode becomes a function of the problem's length
            and flags stop deciding it (measured on the toy: direct answers of 1-2 digits beside
            2-5-digit scratchpads took ThinkFollow from 0.98 to 0.85).
        toy_min_digits / toy_max_digits / toy_mul_fraction: the toy problems (stage 1's).
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase = "toy",
        rejection_model: str | None = None,
        thinking_data: str | None = None,
        non_thinking_data: str | None = None,
        rejection_queries: str | None = None,
        size: int = 6000,
        think_share: float = 0.5,
        rejection_samples: int = 4,
        rejection_max_new_tokens: int = 128,
        no_flag_share: float = 0.2,
        system_flag_share: float = 0.2,
        multi_turn_share: float = 0.2,
        cut_share: float = 0.33,
        cut_stop_text: str = STOP_THINKING,
        tool_share: float = 0.0,
        instruction_share: float = 0.0,
        tool_digits: tuple[int, int] = (6, 8),
        rejection_fallback: bool = False,
        non_thinking_digits: tuple[int, int] | None = None,
        toy_min_digits: int = 2,
        toy_max_digits: int = 4,
        toy_mul_fraction: float = 0.25,
        max_tokens_per_batch: int = 4096,
        max_length: int = 256,
        packing: bool = False,
        val_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            tokenizer=tokenizer,
            data=None,
            max_tokens_per_batch=max_tokens_per_batch,
            max_length=max_length,
            packing=packing,
            val_size=val_size,
            num_workers=num_workers,
            seed=seed,
            toy_min_digits=toy_min_digits,
            toy_max_digits=toy_max_digits,
            toy_mul_fraction=toy_mul_fraction,
            train_on_all_assistant_turns=False,  # multi-turn rows train the last reply only
            verifier="arithmetic",
        )
        shares = {
            "think_share": think_share,
            "no_flag_share": no_flag_share,
            "system_flag_share": system_flag_share,
            "multi_turn_share": multi_turn_share,
            "cut_share": cut_share,
            "tool_share": tool_share,
            "instruction_share": instruction_share,
        }
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if think_share in (0.0, 1.0):
            kind = "non-thinking" if think_share == 1.0 else "thinking"
            raise ValueError(
                f"think_share={think_share} leaves no {kind} examples: fusion mixes both modes "
                "(report 4.3); use the cold-start SFT for one mode only"
            )
        if tool_share + instruction_share >= 1.0:
            raise ValueError("tool_share + instruction_share must leave room for plain rows")
        if THINK_END not in cut_stop_text:
            raise ValueError(f"cut_stop_text must contain {THINK_END!r}, got {cut_stop_text!r}")
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        if non_thinking_digits is not None:
            if (
                len(non_thinking_digits) != 2
                or not 1 <= non_thinking_digits[0] <= non_thinking_digits[1]
            ):
                raise ValueError(
                    "non_thinking_digits must be (fewest, most) with 1 <= fewest <= most, got "
                    f"{non_thinking_digits!r}"
                )
            non_thinking_digits = (int(non_thinking_digits[0]), int(non_thinking_digits[1]))
        if rejection_model is None and thinking_data is None:
            source = tokenizer if isinstance(tokenizer, str) else None
            if source is None or not Path(source).is_dir():
                raise ValueError(
                    "set rejection_model (the stage-2 model directory) or thinking_data: the "
                    "thinking half of the mix comes from one of them"
                )
            rejection_model = source
        self.hparams.update(
            rejection_model=rejection_model,
            thinking_data=thinking_data,
            non_thinking_data=non_thinking_data,
            rejection_queries=rejection_queries,
            size=size,
            rejection_samples=rejection_samples,
            rejection_max_new_tokens=rejection_max_new_tokens,
            cut_stop_text=cut_stop_text,
            tool_digits=tuple(tool_digits),
            rejection_fallback=rejection_fallback,
            non_thinking_digits=non_thinking_digits,
            **shares,
        )
        self.mix: dict[str, float] = {}

    # -- the mix ----------------------------------------------------------------------------
    def _task(self, digits: tuple[int, int] | None = None) -> Any:
        """The toy task of stage 1, or with sums and products of ``digits`` digits."""
        from lit_qwen3.datamodules.arithmetic import ArithmeticTask

        hp = self.hparams
        task = ArithmeticTask(
            seed=hp.seed,
            min_digits=hp.toy_min_digits,
            max_digits=hp.toy_max_digits,
            mul_fraction=hp.toy_mul_fraction,
            check=False,
        )
        if digits is None:
            return task
        return dataclasses.replace(
            task, min_digits=digits[0], max_digits=digits[1], mul_digits=digits
        )

    def thinking_rows(self, n: int, split: str) -> list[dict[str, Any]]:
        hp = self.hparams
        if hp.thinking_data is not None:
            rows = read_conversations(hp.thinking_data)
            return [rows[i % len(rows)] for i in range(n)]
        task = self._task()
        if hp.rejection_queries is not None and split == "train":
            queries = stage_one_queries(hp.rejection_queries, n)
        else:
            queries = [
                {"messages": task.prompt(problem), "answer": str(problem.answer)}
                for problem in task.problems(n, split)
            ]
        rows, counts = rejection_sample(
            hp.rejection_model,
            queries,
            samples=hp.rejection_samples,
            max_new_tokens=hp.rejection_max_new_tokens,
            seed=hp.seed,
        )
        self.mix[f"{split}/rejection_kept"] = counts["kept"] / max(counts["queries"], 1)
        if not rows and hp.rejection_fallback:  # too weak a policy: the task's own scratchpads
            rows = [
                {"messages": task.messages(p, thinking=True), "answer": str(p.answer)}
                for p in task.problems(n, split)
            ]
        if not rows:
            raise ValueError(
                f"rejection sampling kept no thinking reply: {hp.rejection_model} answered none "
                f"of {len(queries)} {split} queries correctly in {hp.rejection_samples} tries"
            )
        return [rows[i % len(rows)] for i in range(n)]

    def non_thinking_rows(self, n: int, split: str) -> list[dict[str, Any]]:
        hp = self.hparams
        if hp.non_thinking_data is not None:
            rows = read_conversations(hp.non_thinking_data)
            return [rows[i % len(rows)] for i in range(n)]
        task = self._task(hp.non_thinking_digits)
        return [
            {"messages": task.messages(p, thinking=False), "answer": str(p.answer)}
            for p in task.problems(n, split)
        ]

    def build_mix(self, n: int, split: str) -> list[dict[str, Any]]:
        """``n`` conversations of ``split`` in the configured shares, shuffled."""
        hp = self.hparams
        rng = random.Random(f"lit-qwen3/fusion/{hp.seed}/{split}")
        n_extra = {"tool": round(n * hp.tool_share), "instruction": round(n * hp.instruction_share)}
        n_plain = n - sum(n_extra.values())
        n_think = round(n_plain * hp.think_share)
        thinking = self.thinking_rows(n_think, split)
        plain = [(r, True) for r in thinking]
        plain += [(r, False) for r in self.non_thinking_rows(n_plain - n_think, split)]
        rows, kinds = [], Counter()
        for row, think in plain:
            messages = [dict(m) for m in row["messages"]]
            reply = messages[-1]
            if think and rng.random() < hp.cut_share and reply.get("reasoning_content"):
                reasoning = reply["reasoning_content"]
                cut = rng.randrange(lowest_cut(reasoning, hp.cut_stop_text), len(reasoning))
                reply["reasoning_content"] = cut_reasoning(reasoning, cut, hp.cut_stop_text)
                # the sampler's text, not the model's: out of the loss
                at_start = not reasoning[:cut].strip("\n")
                reply["forced"] = forced_close(hp.cut_stop_text, at_start)
                kinds["cut"] += 1
            messages = self._flagged(messages, think, rng, kinds)
            if rng.random() < hp.multi_turn_share:
                at = int(messages[0]["role"] == "system")  # after a system turn, if any
                flags = ["/think", "/no_think", ""]
                if not _has_flag(messages[-2]["content"]):  # the earlier flag would decide
                    flags = ["/think" if think else "/no_think", ""]
                messages[at:at] = earlier_exchange(rng, rng.choice(flags))
                kinds["multi_turn"] += 1
            kinds["think" if think else "no_think"] += 1
            rows.append({"messages": messages, "answer": row.get("answer")})
        from lit_qwen3.datamodules.arithmetic import ArithmeticTask

        task = ArithmeticTask(seed=hp.seed + 2000, mul_fraction=1.0, mul_digits=hp.tool_digits)
        for problem in task.problems(n_extra["tool"], split):
            rows.append({"messages": task.tool_messages(problem), "answer": str(problem.answer)})
            kinds["tool"] += 1
        rows += self.instruction_rows(n_extra["instruction"], split)
        kinds["instruction"] += n_extra["instruction"]
        rng.shuffle(rows)
        if kinds["think"] == 0 or kinds["no_think"] == 0:
            raise ValueError(
                f"the {split} mix has no {'thinking' if not kinds['think'] else 'non-thinking'} examples: {dict(kinds)}"
            )
        self.mix.update({f"{split}/{k}": v / len(rows) for k, v in kinds.items()})
        return rows

    def _flagged(
        self, messages: list[dict], think: bool, rng: random.Random, kinds: Counter
    ) -> list[dict]:
        """Write the mode's flag in the user turn or a system turn (or none, for thinking)."""
        hp = self.hparams
        user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[user]["content"] = strip_thinking_flags(messages[user]["content"])
        flag = "/think" if think else "/no_think"
        if think and rng.random() < hp.no_flag_share:
            kinds["no_flag"] += 1
            return messages
        if rng.random() < hp.system_flag_share and messages[0]["role"] != "system":
            kinds["system_flag"] += 1
            return [{"role": "system", "content": flag}, *messages]
        messages[user]["content"] += f" {flag}"
        return messages

    def instruction_rows(self, n: int, split: str) -> list[dict[str, Any]]:
        """IFEval-format toy prompts with compliant replies, half thinking (the scratchpad),
        half ``/no_think``, so general RL starts from a policy that knows the formats."""
        if n == 0:
            return []
        import re

        from lit_qwen3.datamodules.arithmetic import ArithmeticProblem
        from lit_qwen3.datamodules.toy_instructions import toy_ifeval_reply, toy_ifeval_rows

        rows = []
        for i, row in enumerate(toy_ifeval_rows(n, seed=self.hparams.seed, split=split)):
            a, op, b = re.fullmatch(r"(\d+)([+*])(\d+)", row["question"]).groups()
            thinking = i % 2 == 0
            reasoning = ArithmeticProblem(int(a), int(b), op).thinking(check=False)
            flag = "" if thinking else " /no_think"
            reply = {
                "role": "assistant",
                "content": toy_ifeval_reply(row),
                "reasoning_content": reasoning if thinking else "",
            }
            messages = [{"role": "user", "content": row["prompt"] + flag}, reply]
            rows.append({"messages": messages, "answer": row["answer"]})
        return rows

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        hp = self.hparams
        train = self.build_mix(hp.size - hp.val_size, "train")
        val = self.build_mix(hp.val_size, "val") if hp.val_size else []
        rank_zero_info(
            "[thinking_fusion] mix: "
            + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(self.mix.items()) if k.startswith("train/")
            )
        )
        check = [validate_conversation(r, f"fusion train row {i}") for i, r in enumerate(train)]
        return check, [validate_conversation(r, f"fusion val row {i}") for i, r in enumerate(val)]
