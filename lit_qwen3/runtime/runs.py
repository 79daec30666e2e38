"""Run names and run directories: each run's outputs in a directory of its own, and the same
command always in the same one (that is how a rerun finds its checkpoint and its MLflow run).

A run is named after its stage and what its command line changes::

    lit-qwen3 fit --config configs/toy/cold_start.yaml                      -> cold_start
    ... --trainer.max_steps 30 --model.init_args.optimizer.lr 0.004         -> cold_start-lr=0.004-max_steps=30
    ... --config my_overrides.yaml                                          -> cold_start-my_overrides
    ... --model.init_args.model /data/ckpt/step_900                         -> cold_start-3f9c1a2b (hash)

Overrides are sorted by key (argument order does not matter; a key given twice counts once, the
last value, as jsonargparse reads it); config files after the first keep their order. Keys that
only choose places or names (``trainer.default_root_dir``, ``run_name``, ``parent_run``,
``ckpt_path``) do not change the name. The run directory is ``<trainer.default_root_dir>/<name>``
and holds ``checkpoints/``, ``model/`` (the export) and ``run.json`` (the MLflow run id, so a
rerun logs into the same run). ``<trainer.default_root_dir>/model`` is a symlink to the newest
default export of that stage, replaced atomically after each successful export, the way
``last.ckpt`` names the newest checkpoint; the next stage's config reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Keys that choose where or under which name a run is recorded, not what it computes.
NAME_NEUTRAL_KEYS = frozenset({"trainer.default_root_dir", "run_name", "parent_run", "ckpt_path"})
_READABLE = re.compile(r"[A-Za-z0-9._+-]{1,32}")
MAX_NAME_LENGTH = 80
RUN_RECORD = "run.json"


def command_line_overrides(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(config files after the first, ``{key: value}`` of the other ``--key value`` pairs).

    ``args`` are the arguments after the subcommand (``fit``). Flags without a value (``--help``,
    ``--print_config``) are ignored; ``-c`` is ``--config``.
    """
    configs: list[str] = []
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "-c":
            token = "--config"
        if not token.startswith("--"):
            continue
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if i < len(args) and not args[i].startswith("--"):
                value, i = args[i], i + 1
            else:
                continue
        if key == "config":
            configs.append(value)
        else:
            values.pop(key, None)
            values[key] = value
    return configs[1:], values


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key (``init_args`` dropped) that no other key shares."""
    parts = {key: [p for p in key.split(".") if p != "init_args"] for key in keys}
    depth = dict.fromkeys(keys, 1)
    while True:
        short = {key: ".".join(parts[key][-depth[key] :]) for key in keys}
        clashes = {k for k in keys if list(short.values()).count(short[k]) > 1}
        grow = [k for k in clashes if depth[k] < len(parts[k])]
        if not grow:
            return short
        for key in grow:
            depth[key] += 1


def run_name(stage: str, args: Sequence[str]) -> str:
    """The stage, then the overrides as ``key=value`` (short keys, sorted), or a hash of them."""
    extra_configs, values = command_line_overrides(args)
    values = {k: v for k, v in values.items() if k not in NAME_NEUTRAL_KEYS}
    if not extra_configs and not values:
        return stage
    short = _short_keys(list(values))
    words = [Path(c).stem for c in extra_configs]
    words += [f"{short[k]}={v}" for k, v in sorted(values.items(), key=lambda kv: short[kv[0]])]
    name = "-".join([stage, *words])
    readable = all(_READABLE.fullmatch(v) for v in values.values()) and all(
        _READABLE.fullmatch(w) for w in words[: len(extra_configs)]
    )
    if readable and len(name) <= MAX_NAME_LENGTH:
        return name
    canonical = json.dumps([extra_configs, sorted(values.items())])
    return f"{stage}-{hashlib.sha1(canonical.encode()).hexdigest()[:8]}"


def describe_command(command: Sequence[str], args: Sequence[str], run_dir: str | Path) -> str:
    """The MLflow run description (markdown): the command, its overrides, the run directory."""
    extra_configs, values = command_line_overrides(args)
    lines = [f"**Command:** `{shlex.join(command)}`", ""]
    if extra_configs or values:
        lines.append("**Overrides:**")
        lines += [f"- config file `{c}`" for c in extra_configs]
        lines += [f"- `{k}` = `{v}`" for k, v in values.items()]
    else:
        lines.append("**Overrides:** none (the config as shipped)")
    lines += ["", f"**Run directory:** `{run_dir}`"]
    return "\n".join(lines)


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``run.json`` (empty when absent or unreadable)."""
    path = Path(run_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_run_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically (a temporary file renamed over the old one)."""
    path = Path(run_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
    return path


def point_to(link: str | Path, target: str | Path) -> bool:
    """Make ``link`` a relative symlink to ``target``, replaced atomically; False (and nothing
    changed) when ``link`` exists and is not a symlink, e.g. a directory of an older layout."""
    link, target = Path(link), Path(target)
    if link.exists() and not link.is_symlink():
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    partial = link.with_name(link.name + ".partial")
    if partial.is_symlink() or partial.exists():
        partial.unlink()
    partial.symlink_to(os.path.relpath(target, link.parent))
    os.replace(partial, link)
    return True
