"""The real-size path on a small scale: a model loaded from a ``save_pretrained`` directory (not a
preset) trains through the CLI with gradient checkpointing really on, exports for inference, and
every error a user can cause is one clear line."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from lit_qwen3.cli import main
from lit_qwen3.models import save_toy_checkpoint
from tests.probes import TOY_CONFIG, write_tiny
from tests.single_thread import one_thread  # noqa: F401


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))


def _fit(*args: str) -> None:
    main(["fit", "--config", str(TOY_CONFIG), *args])


def test_loaded_checkpoint_trains_with_gradient_checkpointing(tmp_path):
    base = save_toy_checkpoint(tmp_path / "base", preset="toy-student")
    tiny = write_tiny(tmp_path)
    probes = {}
    for checkpointing in ("true", "false"):
        probe = tmp_path / f"probe-{checkpointing}.json"
        callbacks = [
            {"class_path": "tests.probes.SavedActivations", "init_args": {"path": str(probe)}}
        ]
        _fit(
            *("--config", str(tiny), "--model.init_args.model", str(base)),
            *("--model.init_args.gradient_checkpointing", checkpointing),
            *("--model.init_args.output_dir", str(tmp_path / f"out-{checkpointing}")),
            *("--trainer.max_steps", "1", "--pass_at_k", "null", "--thinking_budget", "null"),
            f"--trainer.callbacks={json.dumps(callbacks)}",
        )
        probes[checkpointing] = json.loads(probe.read_text())
    on, off = probes["true"], probes["false"]
    assert on["training"] and on["modules_in_eval_mode"] == 0 and on["gradient_checkpointing"]
    assert off["training"] and not off["gradient_checkpointing"]
    print("saved for backward:", on["saved_bytes"], "with checkpointing,", off["saved_bytes"])
    assert on["saved_bytes"] < 0.6 * off["saved_bytes"]
    exported = AutoConfig.from_pretrained(tmp_path / "out-true")
    assert exported.use_cache is True  # training turned it off; inference wants the KV cache


def _error_lines(capsys, *args: str) -> list[str]:
    with pytest.raises(SystemExit) as exit_info:
        _fit(*args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("lit-qwen3: error:")]


def test_a_missing_model_is_one_clear_message(capsys):
    (line,) = _error_lines(capsys, "--model.init_args.model", "Qwen/Qwen3-0.6B")
    assert "'Qwen/Qwen3-0.6B' is neither a local directory nor in the local Hugging Face" in line
    assert "`hf download Qwen/Qwen3-0.6B`" in line
    assert "--model.init_args.allow_download true" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model.init_args.model", "no/such/dir"), "model directory not found: no/such/dir"),
        (
            ("--model.init_args.optimizer.lr", "0"),
            "optimizer.lr must be > 0 (a finite number), got 0.0",
        ),
        (("--data.init_args.data", "nope.jsonl"), "conversation data 'nope.jsonl' does not exist"),
    ],
    ids=["model-dir", "bad-value", "data-file"],
)
def test_user_errors_are_one_line(capsys, tmp_path, args, message):
    tiny = write_tiny(tmp_path)
    (line,) = _error_lines(capsys, "--config", str(tiny), *args)
    assert line.startswith(f"lit-qwen3: error: {message} (LIT_QWEN3_TRACEBACK=1")


def test_a_directory_without_tokenizer_files_says_so(capsys, tmp_path):
    base = save_toy_checkpoint(tmp_path / "base")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (base / name).unlink(missing_ok=True)
    (line,) = _error_lines(capsys, "--model.init_args.model", str(base))
    assert "has no tokenizer files" in line
