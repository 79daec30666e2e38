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
def toy_policy(tmp_path_factory):
    """Directory of a briefly cold-started toy policy (see tests/toy_models.py)."""
    from toy_models import train_toy_policy

    return train_toy_policy(tmp_path_factory.mktemp("toy_policy") / "model")


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
