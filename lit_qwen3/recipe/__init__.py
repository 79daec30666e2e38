"""The recipe end to end: ``lit-qwen3 pipeline`` runs every stage in order from one YAML, and the
report compares their checkpoints as the Qwen3 report's Figure 2 and Tables 21-22 do."""

from lit_qwen3.recipe.pipeline import PipelineConfig, StageSpec, run_pipeline
from lit_qwen3.recipe.report import ReportConfig, write_report

__all__ = ["PipelineConfig", "ReportConfig", "StageSpec", "run_pipeline", "write_report"]
