"""The four curation steps by name, in the order they run; each reads what the ones before it
wrote (see :mod:`.context` for the files) and reports to the manifest."""

from __future__ import annotations

from collections.abc import Callable

from lit_qwen3.curation.context import NEEDS, OUTPUTS, Context, StepResult
from lit_qwen3.curation.step_queries import run_queries
from lit_qwen3.curation.step_responses import run_responses
from lit_qwen3.curation.step_selection import run_cold_start, run_rl_queries

__all__ = ["NEEDS", "OUTPUTS", "STEP_FUNCTIONS", "Context", "StepResult"]

STEP_FUNCTIONS: dict[str, Callable[[Context], StepResult]] = {
    "queries": run_queries,
    "responses": run_responses,
    "cold_start": run_cold_start,
    "rl_queries": run_rl_queries,
}
