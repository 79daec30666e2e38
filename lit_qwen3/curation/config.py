"""The curation config: one dataclass per step, their fields the YAML keys of ``lit-qwen3
curate`` (attribute docstrings become ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lit_qwen3.curation.query_filters import (
    JudgeFilter,
    MultipleQuestions,
    OpenEnded,
    SolvedWithoutThinking,
)
from lit_qwen3.curation.response_filters import ResponseFilters
from lit_qwen3.curation.selection import check_shares
from lit_qwen3.curation.toy import ToyProgram, ToyQueries
from lit_qwen3.rollout.generation import SamplingConfig

Step = Literal["queries", "responses", "cold_start", "rl_queries"]
#: The steps in the order they run; each reads what the ones before it wrote.
STEPS: tuple[str, ...] = ("queries", "responses", "cold_start", "rl_queries")


def _positive(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}.{name} must be an int >= 1, got {value!r}")


@dataclass
class Domains:
    """Domain annotation and balance. Rows that carry a ``domain`` keep it (it must be one of
    ``shares``); others get the first matching rule, else the judge's answer (when a judge is
    configured), else ``default``; rows still without one are removed (``no_domain``)."""

    shares: dict[str, float] = field(default_factory=dict)
    """Target share per domain; the query set is balanced to them. Empty: no balancing."""
    rules: dict[str, str] = field(default_factory=dict)
    """Domain -> regular expression on the query text, tried in order."""
    default: str | None = None
    """Domain of rows no rule or judge labels; null removes them."""

    def __post_init__(self) -> None:
        self.shares = check_shares(self.shares, "queries.domains.shares")
        if self.shares:
            named = {**dict.fromkeys(self.rules, "rules")}
            if self.default is not None:
                named[self.default] = "default"
            unknown = {d: where for d, where in named.items() if d not in self.shares}
            if unknown:
                raise ValueError(
                    f"queries.domains: unknown domain name(s) {sorted(unknown)} in "
                    f"{sorted(set(unknown.values()))}; the domains are {list(self.shares)}"
                )


@dataclass
class QueriesStep:
    """Step 1: load queries, reserve validation, filter, annotate and balance domains."""

    source: str = "toy"
    """``toy`` (the arithmetic task's pool, see ``toy``) or a JSONL file / ``datasets``
    directory of query rows (the query format)."""
    toy: ToyQueries = field(default_factory=ToyQueries)
    """The toy pool (``source: toy`` only)."""
    validation_size: int = 0
    """Rows drawn at random (seeded) into the validation set, besides those marked
    ``split: val``; reserved before any filter, so nothing later leaks into it."""
    multiple_questions: MultipleQuestions = field(default_factory=MultipleQuestions)
    open_ended: OpenEnded = field(default_factory=OpenEnded)
    judge: JudgeFilter = field(default_factory=JudgeFilter)
    solved_without_thinking: SolvedWithoutThinking = field(default_factory=SolvedWithoutThinking)
    domains: Domains = field(default_factory=Domains)
    max_queries: int | None = None
    """Most queries kept after balancing (drawn at random within domains); null: all."""

    def __post_init__(self) -> None:
        if not (isinstance(self.validation_size, int) and self.validation_size >= 0):
            raise ValueError(
                f"queries.validation_size must be an int >= 0, got {self.validation_size!r}"
            )
        if self.max_queries is not None:
            _positive("queries", "max_queries", self.max_queries)


@dataclass
class ResponsesStep:
    """Step 2: N candidates per query from the teacher (thinking mode), keep queries with
    pass@N > 0, then the six response filters."""

    teacher: str = "toy-program"
    """Teacher model (local HF directory or preset) or ``toy-program``."""
    samples: int = 4
    """Candidates per query (N)."""
    batch_size: int = 64
    """Rows per generation batch."""
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig.qwen3_thinking(max_new_tokens=4096)
    )
    """Teacher sampling (default: Qwen3's thinking-mode settings)."""
    filters: ResponseFilters = field(default_factory=ResponseFilters)

    def __post_init__(self) -> None:
        _positive("responses", "samples", self.samples)
        _positive("responses", "batch_size", self.batch_size)


@dataclass
class ColdStartStep:
    """Step 3: a small domain-balanced subset of the filtered responses, as conversations."""

    size: int = 1000
    """Most conversations (one query each)."""
    shares: dict[str, float] | None = None
    """Domain shares of the subset; null: the queries step's ``domains.shares``."""
    flag: bool = False
    """End the user message with ``/think`` (the toy model is trained with flags)."""

    def __post_init__(self) -> None:
        _positive("cold_start", "size", self.size)
        if self.shares is not None:
            self.shares = check_shares(self.shares, "cold_start.shares")


@dataclass
class RLQueriesStep:
    """Step 4, after the cold start: queries not used in it whose pass rate under the
    cold-start model over G samples is strictly between the bounds, hardest first, spread
    over domains; written in the query format ``QueryDataModule`` reads."""

    policy: str | None = None
    """The cold-start model directory (or ``toy-program``); required by this step."""
    samples: int = 8
    """Samples per query (G)."""
    batch_size: int = 64
    """Rows per generation batch."""
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig.qwen3_thinking(max_new_tokens=4096)
    )
    """Policy sampling (default: Qwen3's thinking-mode settings)."""
    min_pass_rate: float = 0.0
    """Queries at or below this pass rate are dropped (0: never solved, no learning signal)."""
    max_pass_rate: float = 1.0
    """Queries at or above this pass rate are dropped (1: always solved, nothing to learn)."""
    size: int | None = None
    """Most queries kept, hardest first; null: every learnable one."""
    shares: dict[str, float] | None = None
    """Domain spread of the kept queries; null: the queries step's ``domains.shares``."""
    mode: Literal["think", "no_think", "mixed"] = "think"
    """The ``mode`` written into each row (how the RL stage samples it)."""

    def __post_init__(self) -> None:
        _positive("rl_queries", "samples", self.samples)
        _positive("rl_queries", "batch_size", self.batch_size)
        if not 0.0 <= self.min_pass_rate < self.max_pass_rate <= 1.0:
            raise ValueError(
                "rl_queries needs 0 <= min_pass_rate < max_pass_rate <= 1, got "
                f"{self.min_pass_rate} and {self.max_pass_rate}"
            )
        if self.size is not None:
            _positive("rl_queries", "size", self.size)
        if self.shares is not None:
            self.shares = check_shares(self.shares, "rl_queries.shares")


@dataclass
class MLflowTracking:
    """Where the curation run is recorded (an MLflow run tagged ``stage=curation``)."""

    tracking_uri: str = "sqlite:///runs/mlflow.db"
    experiment_name: str = "lit-qwen3"
    run_name: str = "curation"
    artifact_location: str | None = "runs/mlartifacts"
    """Artifact folder of a newly created experiment (an existing one keeps its own)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra run tags (a pipeline nests the run with ``mlflow.parentRunId``)."""
    run_id: str | None = None
    """An existing run to record into (the pipeline creates it when the stage's process starts,
    so the run spans the process); None: a new run."""


@dataclass
class Curation:
    """``lit-qwen3 curate``: the report's section 4.1/4.2 data curation, in resumable steps."""

    output_dir: str = "runs/curation"
    """Where the JSONL outputs, ``manifest.json`` and the work files go."""
    input_dir: str | None = None
    """Where to read earlier steps' outputs that ``output_dir`` lacks: the first call's
    ``output_dir`` when a pipeline gives the ``rl_queries`` call a folder of its own."""
    steps: list[Step] = field(default_factory=lambda: ["queries", "responses", "cold_start"])
    """Steps to run now (in pipeline order). ``rl_queries`` needs the cold-start model, so
    it runs in a second call after the cold start."""
    seed: int = 0
    """Seed of every random choice (validation draw, balance, sampling)."""
    rewards: dict[str, float] = field(default_factory=lambda: {"arithmetic": 1.0})
    """Reward name -> weight: the composite that verifies answers (rows may route with
    ``reward.names``)."""
    reward_workers: int = 2
    """Worker processes for rewards that run in workers (math, code)."""
    reward_timeout: float = 10.0
    """Seconds per sample for a worker reward."""
    device: str = "auto"
    """Device of the models (``auto``: CUDA when available)."""
    dtype: str | None = None
    """Model dtype (float32, bfloat16, float16); null: as saved."""
    toy_program: ToyProgram = field(default_factory=ToyProgram)
    """The synthetic teacher and direct answerer ``toy-program`` (fault rates)."""
    progress: bool = True
    """Progress bars on generation and on every filter."""
    mlflow: MLflowTracking | None = field(default_factory=MLflowTracking)
    """MLflow run of this call (null: no tracking)."""
    queries: QueriesStep = field(default_factory=QueriesStep)
    responses: ResponsesStep = field(default_factory=ResponsesStep)
    cold_start: ColdStartStep = field(default_factory=ColdStartStep)
    rl_queries: RLQueriesStep = field(default_factory=RLQueriesStep)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("steps is empty: name at least one of " + ", ".join(STEPS))
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; the steps are {list(STEPS)}")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"steps lists a step twice: {self.steps}")
        self.steps = sorted(self.steps, key=STEPS.index)
        if not self.rewards:
            raise ValueError("rewards is empty: name the reward(s) that verify answers")
        if "rl_queries" in self.steps and not self.rl_queries.policy:
            raise ValueError(
                "step rl_queries needs rl_queries.policy: the cold-start model directory "
                "(run the cold start first)"
            )
