"""The package's layout cannot decay silently: imports run one way, read from the source (ast).

The rules (``lit_qwen3/__init__.py`` reads them as layers):

- ``ops/`` is pure tensor math: it imports nothing else of ours, and no Lightning or MLflow;
- ``rollout/`` imports only ``ops/``, ``chat`` and itself: no stage, no run plumbing, no reward;
- ``runtime/`` imports no stage, recipe, CLI, curation, data module or callback;
- ``stages/`` import no recipe and no CLI; nothing imports the CLI or the recipe but the CLI;
- no cycle between modules, and none between the parts of ``lit_qwen3/`` (a subpackage counts
  as one part; ``datamodules/`` and ``callbacks/``, which install inside the package from the
  repository's top level, count module by module).

Imports inside functions count too: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "lit_qwen3": ROOT / "lit_qwen3",
    "lit_qwen3.datamodules": ROOT / "datamodules",
    "lit_qwen3.callbacks": ROOT / "callbacks",
}
SUBPACKAGES = ("ops", "rollout", "runtime", "recipe", "rewards", "stages", "curation")
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric", "mlflow")

# part -> the parts of ours it may not import (a part: a subpackage or a top-level module).
FORBIDDEN = {
    "ops": "*",
    "rollout": "*",
    "runtime": {"stages", "recipe", "cli", "curation", "datamodules", "callbacks"},
    "stages": {"recipe", "cli"},
}
ALLOWED_FOR_ALL_FORBIDDEN = {"ops": {"ops"}, "rollout": {"ops", "rollout", "chat"}}
NO_THIRD_PARTY = {"ops": LIGHTNING}


def module_name(package: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def read_modules(sources: dict[str, Path]) -> dict[str, Path]:
    """Every module of the package, by dotted name, with its file."""
    nested = {str(r) for r in sources.values()}
    modules = {}
    for package, root in sources.items():
        for path in sorted(root.rglob("*.py")):
            if any(str(parent) in nested and parent != root for parent in path.parents):
                continue
            modules[module_name(package, root, path)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules (ours, or third-party top-level names) that ``name`` imports anywhere."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in modules else target)
    return found


def part_of(module: str) -> str | None:
    """The part of the package a module belongs to; ``None`` for third-party modules."""
    if not module.startswith("lit_qwen3"):
        return None
    rest = module.split(".")[1:]
    if not rest:
        return "lit_qwen3"
    if rest[0] in ("datamodules", "callbacks"):
        return ".".join(rest[:2])
    return rest[0]


def layout_violations(sources: dict[str, Path]) -> list[str]:
    """Every import that breaks the rules, and every cycle, as readable lines."""
    modules = read_modules(sources)
    problems = []
    module_edges: dict[str, set[str]] = defaultdict(set)
    part_edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        source = part_of(name)
        for target in imports_of(name, path, modules):
            if target.split(".")[0] in NO_THIRD_PARTY.get(source, ()):
                problems.append(f"{name} imports {target}: {source}/ must not use it")
            dest = part_of(target)
            if dest is None or dest == "lit_qwen3":
                continue
            if target in modules and target != name:
                module_edges[name].add(target)
            if dest == source:
                continue
            part_edges[source].add(dest)
            top = dest.split(".")[0]
            forbidden = FORBIDDEN.get(source, set())
            if forbidden == "*":
                if dest not in ALLOWED_FOR_ALL_FORBIDDEN[source]:
                    problems.append(f"{name} imports {target}: {source}/ may not import {top}")
            elif top in forbidden:
                problems.append(f"{name} imports {target}: {source}/ may not import {top}")
            if top in ("cli", "recipe") and source != "cli":
                problems.append(f"{name} imports {target}: only the CLI imports {top}")
    problems += [f"module cycle: {' -> '.join(c)}" for c in cycles(module_edges)]
    problems += [f"cycle between parts: {' -> '.join(c)}" for c in cycles(part_edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of nodes (depth-first search, three colours)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_package_imports_run_one_way():
    problems = layout_violations(SOURCES)
    assert not problems, "\n".join(problems)


def test_every_subpackage_is_there_and_says_what_it_holds():
    for sub in SUBPACKAGES:
        init = ROOT / "lit_qwen3" / sub / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


def write_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = tmp_path / "lit_qwen3" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for d in [tmp_path / "lit_qwen3", *(tmp_path / "lit_qwen3").rglob("*")]:
        if d.is_dir() and not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")
    return {"lit_qwen3": tmp_path / "lit_qwen3"}


CLEAN = {
    "chat.py": "X = 1\n",
    "ops/losses.py": "import torch\n",
    "rollout/generation.py": "from lit_qwen3.ops.losses import torch\nfrom lit_qwen3.chat import X\n",
    "runtime/optim.py": "from lit_qwen3.rollout import generation\n",
    "stages/sft.py": "from lit_qwen3.runtime.optim import x\nfrom lit_qwen3.ops import losses\n",
    "recipe/pipeline.py": "from lit_qwen3.stages.sft import y\n",
    "cli.py": "from lit_qwen3.recipe.pipeline import z\n",
}


def test_a_clean_package_passes_the_check(tmp_path):
    assert layout_violations(write_package(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("path", "line", "message"),
    [
        (
            "ops/losses.py",
            "from lit_qwen3.rollout.generation import g",
            "ops/ may not import rollout",
        ),
        ("ops/losses.py", "import lightning.pytorch as pl", "ops/ must not use it"),
        ("ops/losses.py", "from lit_qwen3.chat import X", "ops/ may not import chat"),
        (
            "rollout/generation.py",
            "from lit_qwen3.stages import sft",
            "rollout/ may not import stages",
        ),
        ("rollout/generation.py", "from lit_qwen3.runtime import optim", "may not import runtime"),
        (
            "runtime/optim.py",
            "from lit_qwen3.stages.sft import S",
            "runtime/ may not import stages",
        ),
        (
            "stages/sft.py",
            "from lit_qwen3.recipe.pipeline import p",
            "stages/ may not import recipe",
        ),
        ("chat.py", "from lit_qwen3.cli import main", "only the CLI imports cli"),
        ("chat.py", "from lit_qwen3.stages.sft import S", "cycle between parts"),
        (
            "ops/losses.py",
            "def f():\n    from lit_qwen3.rollout import generation",
            "may not import",
        ),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path, path, line, message):
    files = dict(CLEAN)
    files[path] = files[path] + line + "\n"
    problems = layout_violations(write_package(tmp_path, files))
    assert any(message in p for p in problems), problems


def test_a_cycle_inside_one_part_is_caught(tmp_path):
    files = dict(CLEAN)
    files["ops/a.py"] = "from lit_qwen3.ops.b import x\n"
    files["ops/b.py"] = "from lit_qwen3.ops.a import y\n"
    problems = layout_violations(write_package(tmp_path, files))
    assert any(p.startswith("module cycle: lit_qwen3.ops.a") for p in problems), problems


def test_the_top_level_stays_small_and_every_module_short():
    top = [p for p in (ROOT / "lit_qwen3").glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 12, sorted(p.name for p in top)
    long = {
        str(p.relative_to(ROOT)): n
        for folder in ("lit_qwen3", "datamodules", "callbacks")
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long
