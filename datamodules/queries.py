"""RL queries as batches: the DataModule of reasoning RL, general RL and on-policy distillation.

Rows are :mod:`lit_qwen3.queries` queries (JSONL or a ``datasets`` directory; IFEval rows as
they are), or, with ``data=None``, the toy task's held-out harder problems. A batch is a list of
``queries_per_step`` :class:`~lit_qwen3.queries.Query` objects; the stage samples a group of
rollouts for each. ``refill_queries(n)`` hands out fresh training queries for dynamic sampling,
from a seeded stream whose position is saved in checkpoints.

    dm = QueryDataModule(data="rl_queries.jsonl", queries_per_step=16)
    dm.setup("fit")
    queries = next(iter(dm.train_dataloader()))  # 16 Query objects

A three-line JSONL example::

    {"messages": [{"role": "user", "content": "What is 17*23?"}], "answer": "391", "domain": "math"}
    {"messages": [{"role": "user", "content": "2+2? /no_think"}], "reward": {"names": ["math"], "reference": "4"}, "mode": "auto"}
    {"prompt": "Write a haiku about rain. Use no commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
"""

from __future__ import annotations

import random
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_qwen3.datamodules.arithmetic import earlier_exchange
from lit_qwen3.datamodules.conversations import EpochShuffleSampler, split_indices
from lit_qwen3.datamodules.resumable import ResumableDataLoader
from lit_qwen3.queries import MODES, Query, encode_query, parse_query, read_queries

#: The cold start's toy defaults (ConversationDataModule): RL queries never repeat its problems.
_SFT_TOY = {"min_digits": 2, "max_digits": 4, "mul_fraction": 0.25, "mul_digits": (2, 3)}


def _as_list(batch: list[Query]) -> list[Query]:
    return batch


class QueryDataModule(LightningDataModule):
    """Batches of RL queries; see the module docstring.

    Args:
        tokenizer: the policy's tokenizer (prompts longer than ``max_prompt_tokens`` are
            dropped and counted).
        data: a ``.jsonl`` file or a ``datasets`` directory of query rows; None: the toy task.
        val_data: validation queries (same format); None: ``val_size`` rows split off ``data``.
        queries_per_step: queries per training step (each gets a group of rollouts).
        val_size: validation queries held out (evaluation callbacks read ``val_queries``).
        mode: override every row's mode (``think``, ``no_think``, ``mixed``, ``auto``).
        max_prompt_tokens: longest prompt kept, in tokens.
        verifier: how evaluation callbacks check answers; default ``arithmetic`` for the toy
            task, else ``math``.
        seed: shuffling, refills and the toy problems.
        toy_size: toy training queries.
        toy_min_digits / toy_max_digits / toy_mul_fraction / toy_mul_digits: the toy problems
            (harder than the cold start's 2-4 digits; none of the cold start's own problems).
        toy_mode: the toy queries' mode.
        toy_tool_fraction: share of toy queries that are large products with the calculator
            tool available (agent turns), scored by ``arithmetic`` and ``tool_use``.
        toy_tool_digits: digits of those products' large factor.
        toy_instruction_fraction: share of toy queries in IFEval format (an arithmetic question
            plus a verifiable instruction), scored by ``arithmetic`` and ``instructions``.
        toy_exclude_sft: the first this many toy cold-start problems are never RL queries.
        toy_multi_turn_fraction: share of plain toy training queries asked after an earlier
            exchange whose user turn carries a random flag (or none): with ``mixed`` or a
            fixed mode only the last flag decides, so flag following is trained on multi-turn
            prompts too (ThinkFollow's multi-turn case). Validation queries stay single-turn.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase = "toy",
        data: str | None = None,
        val_data: str | None = None,
        queries_per_step: int = 8,
        val_size: int = 64,
        mode: str | None = None,
        max_prompt_tokens: int = 1024,
        verifier: str | None = None,
        seed: int = 0,
        num_workers: int = 0,
        toy_size: int = 4096,
        toy_min_digits: int = 3,
        toy_max_digits: int = 5,
        toy_mul_fraction: float = 0.25,
        toy_mul_digits: tuple[int, int] = (3, 4),
        toy_mode: str = "think",
        toy_tool_fraction: float = 0.0,
        toy_tool_digits: tuple[int, int] = (6, 8),
        toy_instruction_fraction: float = 0.0,
        toy_exclude_sft: int = 30000,
        toy_multi_turn_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        if queries_per_step < 1:
            raise ValueError(f"queries_per_step must be >= 1, got {queries_per_step}")
        for name, value in (("mode", mode), ("toy_mode", toy_mode)):
            if value is not None and value not in MODES:
                raise ValueError(f"{name} must be one of {MODES}, got {value!r}")
        for name, value in (
            ("toy_tool_fraction", toy_tool_fraction),
            ("toy_instruction_fraction", toy_instruction_fraction),
            ("toy_multi_turn_fraction", toy_multi_turn_fraction),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if toy_tool_fraction + toy_instruction_fraction > 1.0:
            raise ValueError("toy_tool_fraction + toy_instruction_fraction must be <= 1")
        self.save_hyperparameters(ignore=["tokenizer"])
        from lit_qwen3.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer)
        self.verifier = verifier or ("arithmetic" if data is None else "math")
        self.train_queries: list[Query] = []
        self.val_queries: list[dict[str, Any]] = []
        self.stats: dict[str, int] = {}
        self._refill = random.Random(f"lit-qwen3/queries/refill/{seed}")
        self._ready = False

    # -- data -----------------------------------------------------------------------------------
    def load(self) -> tuple[list[Query], list[Query]]:
        """(train, validation) queries before length filtering."""
        hp = self.hparams
        if hp.data is None:
            return self._toy("train", hp.toy_size), self._toy("val", hp.val_size)
        rows = read_queries(hp.data)
        if hp.val_data is not None:
            return rows, read_queries(hp.val_data)
        if not hp.val_size:
            return rows, []
        train, val = split_indices(len(rows), val_fraction=0.0, val_size=hp.val_size, seed=hp.seed)
        return [rows[i] for i in train], [rows[i] for i in val]

    def _toy(self, split: str, n: int) -> list[Query]:
        from lit_qwen3.datamodules.arithmetic import ArithmeticTask

        hp = self.hparams
        if n == 0:
            return []
        task = ArithmeticTask(
            seed=hp.seed + 1000,
            min_digits=hp.toy_min_digits,
            max_digits=hp.toy_max_digits,
            mul_fraction=hp.toy_mul_fraction,
            mul_digits=tuple(hp.toy_mul_digits),
        )
        excluded = set()
        if split == "train" and hp.toy_exclude_sft:
            sft = ArithmeticTask(seed=hp.seed, **_SFT_TOY)
            excluded = {p._key for p in sft.problems(hp.toy_exclude_sft, "train")}
        rng = random.Random(f"lit-qwen3/queries/toy/{hp.seed}/{split}")
        problems = _fresh_problems(task, n, split, excluded)
        if split == "val" and len(problems) < n:
            raise ValueError(
                f"val_size={n}: the 'val' split of {hp.toy_min_digits}-{hp.toy_max_digits} digit "
                f"problems holds only {len(problems)} distinct ones; ask for fewer or widen "
                "toy_max_digits"
            )
        tools = ArithmeticTask(
            seed=hp.seed + 2000, mul_fraction=1.0, mul_digits=tuple(hp.toy_tool_digits)
        ).problems(n, split, distinct=True)
        queries = []
        for i, problem in enumerate(problems[:n]):
            draw = rng.random()
            if draw < hp.toy_tool_fraction:
                queries.append(self._toy_tool_query(tools[i]))
            elif draw < hp.toy_tool_fraction + hp.toy_instruction_fraction:
                queries.append(self._toy_instruction_query(problem, i, split))
            else:
                messages = [{"role": "user", "content": problem.question}]
                if split == "train" and rng.random() < hp.toy_multi_turn_fraction:
                    flag = rng.choice(["/think", "/no_think", ""])
                    messages = [*earlier_exchange(rng, flag), *messages]
                row = {
                    "messages": messages,
                    "answer": str(problem.answer),
                    "reward": {"names": ["arithmetic"]},
                    "domain": "addition" if problem.op == "+" else "product",
                    "mode": hp.toy_mode,
                    "difficulty": problem.difficulty,
                }
                queries.append(parse_query(row, f"toy {split} query {i}"))
        return queries

    def _toy_tool_query(self, problem: Any) -> Query:
        row = {
            "messages": [{"role": "user", "content": problem.question}],
            "answer": str(problem.answer),
            "reward": {"names": ["arithmetic", "tool_use"]},
            "domain": "tool_product",
            "mode": "think",  # the toy's tool replies think first (see ArithmeticTask.tool_messages)
            "tools": ["calculator"],
        }
        return parse_query(row, "toy tool query")

    def _toy_instruction_query(self, problem: Any, index: int, split: str) -> Query:
        from lit_qwen3.datamodules.toy_instructions import toy_instruction_row

        row = toy_instruction_row(problem, seed=self.hparams.seed + index)
        row.update(
            {
                "reward": {"names": ["arithmetic", "instructions"], "reference": row["answer"]},
                "domain": "instructions",
                "mode": self.hparams.toy_mode,
            }
        )
        return parse_query(row, f"toy instruction query {index} ({split})")

    def _fits(self, query: Query, thinking: bool) -> bool:
        _, ids, _ = encode_query(self.tokenizer, query, thinking)
        return len(ids) <= self.hparams.max_prompt_tokens

    def setup(self, stage: str | None = None) -> None:
        """Read, override modes, drop over-long prompts (once; later calls do nothing)."""
        if self._ready:
            return
        train, val = self.load()
        if self.hparams.mode is not None:
            for query in train + val:
                query.mode = self.hparams.mode
        kept = [q for q in train if self._fits(q, q.default_thinking() is not False)]
        self.stats = {"train_queries": len(kept), "dropped_long": len(train) - len(kept)}
        if len(kept) < self.hparams.queries_per_step:
            raise ValueError(
                f"{len(kept)} training queries (of {len(train)}; {len(train) - len(kept)} longer "
                f"than max_prompt_tokens={self.hparams.max_prompt_tokens}) is fewer than "
                f"queries_per_step={self.hparams.queries_per_step}"
            )
        self.train_queries = kept
        self.val_queries = [
            {
                "messages": q.messages,
                "answer": q.metadata.get("reference"),
                "metadata": q.reward_metadata(),
            }
            for q in val
        ]
        self._ready = True

    # -- loaders and refills ----------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        sampler = EpochShuffleSampler(len(self.train_queries), seed=self.hparams.seed)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
        # resumable: a run killed mid-epoch continues at the next batch of queries
        return ResumableDataLoader(
            self.train_queries,
            batch_size=self.hparams.queries_per_step,
            sampler=sampler,
            drop_last=True,
            collate_fn=_as_list,
            num_workers=self.hparams.num_workers,
        )

    def refill_queries(self, n: int) -> list[Query]:
        """``n`` training queries from a seeded stream (dynamic sampling's refills)."""
        self.setup("fit")
        return [self._refill.choice(self.train_queries) for _ in range(n)]

    def state_dict(self) -> dict[str, Any]:
        return {"refill_state": self._refill.getstate()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("refill_state")
        if state is not None:
            self._refill.setstate(_as_state(state))


def _fresh_problems(task: Any, n: int, split: str, excluded: set) -> list[Any]:
    """Up to ``n`` distinct problems of ``split`` outside ``excluded`` (fewer when a small
    digit range runs out)."""
    wanted = n
    while True:
        drawn = task.problems(wanted, split, distinct=True, at_most=True)
        problems = [p for p in drawn if p._key not in excluded][:n]
        if len(problems) == n or len(drawn) < wanted:  # enough, or the split ran out
            return problems
        wanted += n - len(problems)


def _as_state(state: Any) -> tuple:
    """``random.Random`` state back from a checkpoint (lists where tuples were)."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
