"""Data curation of the Qwen3 report's sections 4.1 and 4.2 (``lit-qwen3 curate``); no Lightning.

Four steps, each resumable, each writing JSONL the datamodules read:

1. ``queries``: reserve the validation set, drop queries that ask several questions or for
   open-ended text (rules, and a judge model when configured) and queries a model answers
   correctly without thinking; annotate domains and balance them (:mod:`.query_filters`).
2. ``responses``: N teacher responses per query in thinking mode, keep queries with pass@N > 0,
   then the six response filters (:mod:`.response_filters`).
3. ``cold_start``: a small domain-balanced subset, as conversations (:mod:`.selection`).
4. ``rl_queries``: after the cold start, queries not used in it whose pass rate under the
   cold-start model is strictly between 0 and 1, hardest first, spread over domains.

Modules: ``text`` (measures), ``verdict`` (filter results and their ledger), ``similarity``
(near-duplicate index), ``query_filters``, ``response_filters``, ``selection``, ``data`` (rows
in and out), ``generators`` (HF models and the toy program), ``toy`` (the toy sources),
``config``, ``context`` (files and shared step helpers), ``step_queries``, ``step_responses``,
``step_selection``, ``steps`` (by name), ``runner`` (manifest, resume, MLflow), ``cli``.
"""

from lit_qwen3.curation.config import Curation
from lit_qwen3.curation.runner import curate
from lit_qwen3.curation.verdict import EmptyResultError, Verdict

__all__ = ["Curation", "EmptyResultError", "Verdict", "curate"]
