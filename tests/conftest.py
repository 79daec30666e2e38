"""Shared fixtures: the real Qwen3 tokenizer (found by tests/qwen3_tokenizer.py) and the toy one.

Tests that need the real tokenizer take ``qwen3_tokenizer`` (or ``qwen3_tokenizer_dir``); when
it cannot be found anywhere they skip, and one line at the end of the run says how many and why.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from qwen3_tokenizer import SKIP_REASON, find_qwen3_tokenizer

# Under pytest -n N each worker gets one core: one torch thread here and in every process a test
# starts (more threads than cores make OpenMP's waiting threads spin against each other).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# The instruction reward writes NLTK's punkt tables on first use: the suite writes its own copy.
if "LIT_QWEN3_NLTK_DATA" not in os.environ:
    os.environ["LIT_QWEN3_NLTK_DATA"] = tempfile.mkdtemp(prefix="lit_qwen3_nltk_")
    atexit.register(shutil.rmtree, os.environ["LIT_QWEN3_NLTK_DATA"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def _qwen3_tokenizer_location() -> tuple[Path | None, str]:
    return find_qwen3_tokenizer()  # once per run: the download attempt is not repeated


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir() -> Path:
    """The directory of the official Qwen3 tokenizer (test data kept outside the repo)."""
    directory, why = _qwen3_tokenizer_location()
    if directory is None:
        pytest.skip(f"{SKIP_REASON}: {why}")
    return directory


@pytest.fixture(scope="session")
def qwen3_tokenizer(qwen3_tokenizer_dir):
    """The official Qwen3 tokenizer and chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)


@pytest.fixture(scope="session")
def toy_tokenizer():
    from lit_qwen3.tokenizer import build_toy_tokenizer

    return build_toy_tokenizer()


@pytest.fixture(scope="session")
def toy_policies(tmp_path_factory) -> dict[str, Path]:
    """The briefly cold-started toy policy and a weaker snapshot of the same run (see
    tests/toy_models.py), trained once per test run: pytest-xdist's workers share them (the
    first to ask trains, the others wait on a file lock and load the result)."""
    from filelock import FileLock
    from toy_models import RL_START_STEPS, SEED, STEPS, WEAK_STEPS, toy_threads, train_toy_policy

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's base folder, above each worker's own
    root = shared / f"toy_policy_seed{SEED}_threads{toy_threads(2)}"
    snapshots = {step: root / f"step{step}" for step in {WEAK_STEPS, *RL_START_STEPS} - {STEPS}}
    policies = {"policy": root / "model", **{f"step{s}": d for s, d in snapshots.items()}}
    policies["weak"] = policies[f"step{WEAK_STEPS}"]
    with FileLock(f"{root}.lock"):
        if not (policies["policy"] / "config.json").exists():
            train_toy_policy(policies["policy"], snapshots=snapshots)
    return policies


@pytest.fixture(scope="session")
def toy_policy(toy_policies) -> Path:
    """Directory of the briefly cold-started toy policy (greedy pass@1 about 0.5-0.95)."""
    return toy_policies["policy"]


@pytest.fixture(scope="session")
def weak_policy(toy_policies) -> Path:
    """Directory of the same run's snapshot at ``WEAK_STEPS``: few right answers, room to learn."""
    return toy_policies["weak"]


@pytest.fixture(scope="session")
def rl_start_policy(toy_policies) -> Path:
    """The snapshot of the same run whose pass@1 is nearest 0.5 (``toy_models.rl_start``): RL's
    learning tests start there, whatever the seed and the machine made of the cold start."""
    from toy_models import RL_START_STEPS, STEPS, rl_start

    candidates = {
        step: toy_policies["policy"] if step == STEPS else toy_policies[f"step{step}"]
        for step in RL_START_STEPS
    }
    chosen, figures = rl_start(candidates, extra=toy_policies["policy"].parent / "slow_seed")
    print(f"RL start: {chosen.name} of pass@1 by step {figures}")
    return chosen


#: Test files that start sandboxes: they run on one xdist worker, one after another, so that
#: one file's process and memory limits never meet another's sandboxes.
SANDBOX_FILES = {
    "test_code_checks.py",
    "test_code_red_team.py",
    "test_harness_adversarial.py",
    "test_rewards_base.py",
    "test_rewards_code.py",
    "test_sandbox.py",
    "test_sandbox_hardening.py",
    "test_sandbox_resources.py",
    "test_tools.py",
}


#: Test files whose tests run the CLI, a pipeline or several processes: ``make test-fast``
#: leaves them out (``make test`` runs everything).
SLOW_FILES = {
    "test_cli.py",
    "test_compiled_decoding.py",
    "test_curation_cli.py",
    "test_distributed.py",
    "test_fusion_distill_cli.py",
    "test_gpu_check_script.py",
    "test_mlflow_compare.py",
    "test_pipeline.py",
    "test_real_size.py",
    "test_resume.py",
    "test_reuse.py",
    "test_reuse_script.py",
    "test_rl_cli.py",
}
#: Fixtures that train a model: a test that asks for one is slow.
TRAINED_FIXTURES = {"toy_policy", "weak_policy", "rl_start_policy", "toy_policies"}


#: Module-scoped fixtures cheap enough to build once per worker: they do not hold a file's tests
#: on one worker.
CHEAP_MODULE_FIXTURES = {"one_thread"}

#: The longest tests and files, longest first (measured under ``make test``): they start first,
#: so that no worker is left running one of them alone at the end.
LONGEST_FIRST = (
    "test_real_configs.py::test_real_pipeline_runs_end_to_end_on_cpu",
    "test_fusion_learning.py",
    "test_pipeline.py",
    "test_compiled_decoding.py",
    "test_distillation_learning.py",
    "test_rl_learning.py",
    "test_cli.py",
    "test_distributed.py",
)


def _shares_module_fixture(item) -> bool:
    """Whether ``item`` uses a module- or class-scoped fixture worth building only once."""
    info = getattr(item, "_fixtureinfo", None)
    for name, definitions in info.name2fixturedefs.items() if info else ():
        if name not in CHEAP_MODULE_FIXTURES and any(
            d.scope in ("module", "class", "package") for d in definitions
        ):
            return True
    return False


def _start_rank(item) -> int:
    """Where ``item`` starts under ``pytest -n``: the longest first, then other slow tests."""
    nodeid = item.nodeid.split("/")[-1]
    for rank, prefix in enumerate(LONGEST_FIRST):
        if nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Mark slow tests (see ``SLOW_FILES`` and ``TRAINED_FIXTURES``). Under ``pytest -n N
    --dist loadgroup`` tests spread one by one over the workers, longest first, except that a
    file whose tests share a module fixture (a trained model, a started process pool) stays on
    one worker, and the sandbox files share one worker."""
    for item in items:
        name = item.path.name
        if name in SLOW_FILES or TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("xdist_group") is None:
            if name in SANDBOX_FILES:
                item.add_marker(pytest.mark.xdist_group("sandbox"))
            elif _shares_module_fixture(item):
                item.add_marker(pytest.mark.xdist_group(name))
    if config.getoption("dist", "no") != "no":
        items.sort(key=_start_rank)  # stable: a file's tests keep their order


def pytest_terminal_summary(terminalreporter) -> None:
    """One line for every test skipped without the real Qwen3 tokenizer, with the reason."""
    reasons = [
        report.longrepr[2]
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and SKIP_REASON in report.longrepr[2]
    ]
    if reasons:
        why = reasons[0].split(f"{SKIP_REASON}: ", 1)[-1]
        terminalreporter.write_line(
            f"lit-qwen3: {len(reasons)} test(s) skipped: {SKIP_REASON} ({why}); put it in "
            "../shared/qwen3-tokenizer or $QWEN3_TOKENIZER_DIR, or in the Hugging Face cache "
            "(`hf download Qwen/Qwen3-0.6B tokenizer.json tokenizer_config.json vocab.json "
            "merges.txt`)",
            yellow=True,
        )
