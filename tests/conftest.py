"""Shared fixtures: the real Qwen3 tokenizer from ../shared and the built-in toy tokenizer."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The instruction reward writes NLTK's punkt tables on first use: the suite writes its own copy.
if "LIT_QWEN3_NLTK_DATA" not in os.environ:
    os.environ["LIT_QWEN3_NLTK_DATA"] = tempfile.mkdtemp(prefix="lit_qwen3_nltk_")
    atexit.register(shutil.rmtree, os.environ["LIT_QWEN3_NLTK_DATA"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
QWEN3_TOKENIZER_DIR = REPO.parent / "shared" / "qwen3-tokenizer"


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    """The official Qwen3 tokenizer and chat template (test data kept outside the repo)."""
    if not (QWEN3_TOKENIZER_DIR / "tokenizer_config.json").exists():
        pytest.skip(
            f"real Qwen3 tokenizer not found at {QWEN3_TOKENIZER_DIR} (kept outside the repo)"
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(QWEN3_TOKENIZER_DIR)


@pytest.fixture(scope="session")
def toy_tokenizer():
    from lit_qwen3.tokenizer import build_toy_tokenizer

    return build_toy_tokenizer()


@pytest.fixture(scope="session")
def toy_policy(tmp_path_factory):
    """Directory of a briefly cold-started toy policy (see tests/toy_models.py)."""
    from toy_models import train_toy_policy

    return train_toy_policy(tmp_path_factory.mktemp("toy_policy") / "model")
