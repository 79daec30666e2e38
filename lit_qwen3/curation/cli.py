"""``lit-qwen3 curate``: the curation steps from YAML (jsonargparse, the conventions of ``fit``).

    lit-qwen3 curate --config configs/toy/curate.yaml                       # queries, responses, cold_start
    lit-qwen3 curate --config configs/toy/curate.yaml --steps '[rl_queries]'  # after the cold start
    lit-qwen3 curate --config configs/toy/curate.yaml --resume               # continue a killed run
    lit-qwen3 curate --config configs/toy/curate.yaml --responses.samples 8 --print_config

``--config`` may be repeated (later files win) and any key overridden with a dotted flag;
omegaconf ``${...}`` interpolation works as in ``fit``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from typing import Any

from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

from lit_qwen3.curation.config import Curation


def _attribute_docstrings() -> None:
    """Show the config dataclasses' attribute docstrings in ``--help`` (a jsonargparse-wide
    setting; its name changed in 4.49)."""
    import jsonargparse

    if hasattr(jsonargparse, "set_parsing_settings"):
        jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)
    else:  # pragma: no cover - jsonargparse < 4.49
        jsonargparse.set_docstring_parse_options(attribute_docstrings=True)


def build_parser() -> ArgumentParser:
    _attribute_docstrings()
    parser = ArgumentParser(
        prog="lit-qwen3 curate",
        description=(
            "Curate cold-start and RL data as the Qwen3 report's section 4.1/4.2 describes: "
            "query filters, teacher responses and their six filters, the cold-start subset, "
            "RL query selection. Writes JSONL for the datamodules and manifest.json."
        ),
        parser_mode="omegaconf",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config (repeatable).")
    parser.add_argument(
        "--resume",
        action=ActionYesNo,
        default=False,
        help="Continue in output_dir: skip finished steps, reuse generation caches.",
    )
    parser.add_class_arguments(Curation, as_group=False)
    return parser


def to_config(parser: ArgumentParser, cfg: Any) -> Curation:
    """The :class:`Curation` of parsed arguments (sections instantiated, checks run)."""
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    init = instantiate(cfg)
    return Curation(**{f.name: init[f.name] for f in fields(Curation)})


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (the arguments after ``curate``), run the steps, print the summary."""
    from lit_qwen3.curation.runner import curate

    parser = build_parser()
    cfg = parser.parse_args(argv)
    with warnings.catch_warnings():  # skip_none is deprecated in jsonargparse >= 4.49, not gone
        warnings.simplefilter("ignore", DeprecationWarning)
        text = parser.dump(cfg, skip_none=False)  # keep null keys in the logged config
    config = to_config(parser, cfg)
    manifest = curate(config, resume=bool(cfg.resume), config_text=text)
    print(summary(manifest, config.output_dir))


def summary(manifest: dict, output_dir: str) -> str:
    """Counts per filter, one line each, and where the outputs are."""
    lines = []
    for step, record in manifest["steps"].items():
        lines.append(f"{step} ({record['seconds']:.1f} s)")
        for name, n in record["filters"].items():
            lines.append(f"  {name:<24} {n['in']:>7} -> {n['out']:<7} ({n['unit']})")
    outputs = ", ".join(f"{k}: {v['rows']}" for k, v in manifest["outputs"].items())
    lines.append(f"outputs in {output_dir}: {outputs}")
    lines.append(f"manifest: {output_dir}/manifest.json")
    if manifest.get("mlflow_runs"):
        lines.append(f"MLflow run: {json.dumps(manifest['mlflow_runs'][-1])}")
    return "\n".join(lines)
