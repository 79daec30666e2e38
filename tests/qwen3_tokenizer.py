"""Where the tests find the real Qwen3 tokenizer, so a fresh machine skips as little as possible.

In order: ``$QWEN3_TOKENIZER_DIR`` or else ``../shared/qwen3-tokenizer`` (kept outside the
repo), the Hugging Face cache (``Qwen/Qwen3-0.6B``, looked up offline), then a download of the
tokenizer files alone when the hub answers within a few seconds. Every network step runs in a
daemon thread joined with a timeout, so a hub that never answers (DNS that hangs, a firewall
that drops packets) costs seconds, never the run. ``HF_HUB_OFFLINE=1`` skips the download.
Tests that still cannot have it skip with ``SKIP_REASON``; conftest.py counts them in one line
at the end of the run.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ID = "Qwen/Qwen3-0.6B"
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "qwen3-tokenizer"
SKIP_REASON = "needs the real Qwen3 tokenizer"
#: The files a tokenizer needs (the weights are never fetched).
TOKENIZER_FILES = ["tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt"]
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 60.0


def _within(seconds: float, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """(finished, result or exception) of ``fn`` run in a daemon thread for at most ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except Exception as error:  # reported to the caller, who says why it skipped
            box["result"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), box.get("result")


def _complete(directory: Path) -> bool:
    return (directory / "tokenizer_config.json").is_file() and (
        (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file()
    )


def from_cache(cache_dir: str | Path | None = None) -> Path | None:
    """The snapshot of ``REPO_ID`` in the Hugging Face cache, if its tokenizer files are there."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                REPO_ID, allow_patterns=TOKENIZER_FILES, local_files_only=True, cache_dir=cache_dir
            )
        )
    except Exception:  # not cached (LocalEntryNotFoundError), or a broken cache entry
        return None
    return path if _complete(path) else None


def download(endpoint: str | None = None) -> tuple[Path | None, str]:
    """Fetch the tokenizer files when the hub answers in ``PROBE_TIMEOUT_S``; (path, why not)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None, "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants, snapshot_download

    base = endpoint or constants.ENDPOINT
    probe = urllib.request.Request(f"{base}/api/models/{REPO_ID}", method="HEAD")
    finished, answer = _within(
        PROBE_TIMEOUT_S + 1, lambda: urllib.request.urlopen(probe, timeout=PROBE_TIMEOUT_S)
    )
    if not finished or isinstance(answer, Exception):
        reason = "no answer" if not finished else f"{type(answer).__name__}: {answer}"
        return None, f"{base} not reachable within {PROBE_TIMEOUT_S:g} s ({reason})"
    finished, answer = _within(
        DOWNLOAD_TIMEOUT_S,
        lambda: snapshot_download(REPO_ID, allow_patterns=TOKENIZER_FILES, endpoint=base),
    )
    if not finished or isinstance(answer, Exception):
        reason = "timed out" if not finished else f"{type(answer).__name__}: {answer}"
        return None, f"downloading the tokenizer from {base} failed ({reason})"
    path = Path(answer)
    return (path, "") if _complete(path) else (None, f"{path} lacks the tokenizer files")


def find_qwen3_tokenizer() -> tuple[Path | None, str]:
    """(directory, "") where the tokenizer is, else (None, why it is not)."""
    first = Path(os.environ.get("QWEN3_TOKENIZER_DIR") or SHARED_DIR)
    if _complete(first):
        return first, ""
    cached = from_cache()
    if cached is not None:
        return cached, ""
    path, why = download()
    if path is not None:
        return path, ""
    return None, f"not at {first}, not in the Hugging Face cache ({REPO_ID}), no download: {why}"
