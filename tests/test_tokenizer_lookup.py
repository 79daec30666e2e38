"""Finding the real Qwen3 tokenizer on a fresh machine: cache lookup, a bounded download attempt,
and the one summary line when tests skip without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import qwen3_tokenizer
from qwen3_tokenizer import REPO_ID, SKIP_REASON, download, from_cache

REPO = Path(__file__).resolve().parents[1]


def fake_cache(root: Path, files: list[str]) -> Path:
    """The Hugging Face cache layout of ``REPO_ID`` at one commit, holding ``files``."""
    commit = "0" * 40
    repo = root / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")
    return snapshot


def test_tokenizer_is_found_in_the_hugging_face_cache_offline(tmp_path):
    assert from_cache(tmp_path) is None  # empty cache
    snapshot = fake_cache(tmp_path, ["tokenizer_config.json", "tokenizer.json"])
    assert from_cache(tmp_path) == snapshot


def test_incomplete_cache_entry_is_not_used(tmp_path):
    fake_cache(tmp_path, ["config.json"])  # a model's config, no tokenizer
    assert from_cache(tmp_path) is None


def test_unreachable_hub_gives_up_with_the_reason(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path, why = download("http://127.0.0.1:9")  # the discard port: connection refused
    assert path is None
    assert why.startswith("http://127.0.0.1:9 not reachable within 3 s (URLError")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download("http://127.0.0.1:9") == (None, "HF_HUB_OFFLINE is set")


def test_hub_that_never_answers_costs_seconds(monkeypatch):
    """A probe that hangs is abandoned after the timeout (the thread is left to die)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(qwen3_tokenizer, "PROBE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(
        qwen3_tokenizer.urllib.request, "urlopen", lambda *a, **k: __import__("time").sleep(30)
    )
    path, why = download("http://hub.invalid")
    assert path is None and "not reachable within 0.2 s (no answer)" in why


def test_missing_tokenizer_is_one_summary_line(tmp_path):
    """Without the tokenizer anywhere, the run ends with one line saying what and why."""
    env = {
        **os.environ,
        "QWEN3_TOKENIZER_DIR": str(tmp_path / "absent"),
        "HF_HUB_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    test = "tests/test_fuzz_chat.py::test_render_equals_the_official_qwen3_template"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("lit-qwen3:")]
    assert lines == [
        f"lit-qwen3: 1 test(s) skipped: {SKIP_REASON} (not at {tmp_path / 'absent'}, not in the "
        f"Hugging Face cache ({REPO_ID}), no download: HF_HUB_OFFLINE is set); put it in "
        "../shared/qwen3-tokenizer or $QWEN3_TOKENIZER_DIR, or in the Hugging Face cache "
        "(`hf download Qwen/Qwen3-0.6B tokenizer.json tokenizer_config.json vocab.json "
        "merges.txt`)"
    ]
