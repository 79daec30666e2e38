"""The evaluation callbacks in a user's plain script: no ``if __name__ == "__main__":`` guard.

Reward workers start with ``forkserver`` or ``spawn``, whose children import the parent's
``__main__``; an unguarded script used to run again in each worker and stop at the first
evaluation ("could not start reward worker processes"). The script here is the user's own: their
LightningModule holding an HF model and tokenizer loaded with ``from_pretrained``, their loop,
``PassAtK`` and ``ThinkingBudget`` with the math verifier (math-verify in worker processes).
"""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

from lit_qwen3.models import load_model, load_tokenizer
from lit_qwen3.rewards.workers import _needs_main_module

USER_SCRIPT = textwrap.dedent(
    """
    import sys

    import lightning as L
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_qwen3.callbacks import PassAtK, ThinkingBudget

    model_dir, log_dir = sys.argv[1], sys.argv[2]
    print("script body ran")  # once: a worker that re-ran the script would print it again


    class MyModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = AutoModelForCausalLM.from_pretrained(model_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

        def training_step(self, batch, batch_idx):
            return self.model(input_ids=batch[0], labels=batch[0]).loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)


    queries = [
        {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "answer": "5"},
        {"messages": [{"role": "user", "content": "What is 7 - 4?"}], "answer": "3"},
    ]
    callbacks = [
        PassAtK(ks=[1, 2], n_samples=2, queries=queries, verifier="math", max_new_tokens=8,
                every_n_steps=0),
        ThinkingBudget(budget=4, sweep=[0, 4], queries=queries, verifier="math",
                       max_new_tokens=8),
    ]
    ids = torch.randint(0, 100, (4, 8))
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(log_dir, name="user"),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=2)
    trainer.fit(MyModule(), data)
    """
)


def test_an_unguarded_user_script_evaluates_with_reward_workers(tmp_path):
    model_dir = tmp_path / "model"
    load_model("toy-student").save_pretrained(model_dir)
    load_tokenizer("toy-student").save_pretrained(model_dir)
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT)

    run = subprocess.run(
        [sys.executable, str(script), str(model_dir), str(tmp_path / "logs")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("script body ran") == 1, run.stdout
    with open(tmp_path / "logs" / "user" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"eval/think/pass_at_2", "eval/no_think/pass_at_1", "budget_sweep/think_accuracy"} <= (
        logged
    )
    assert sorted({int(r["step"]) for r in rows if r.get("eval/think/pass_at_1")}) == [0, 2]


class MainReward:  # stands for a reward class defined in the user's script
    def __call__(self, sample):
        return 1.0


MainReward.__module__ = "__main__"


def test_workers_keep_main_only_when_a_reward_comes_from_it(monkeypatch):
    import __main__
    from lit_qwen3.rewards.math_answer import MathReward

    monkeypatch.setattr(__main__, "MainReward", MainReward, raising=False)
    assert not _needs_main_module({"math": MathReward()})
    assert _needs_main_module({"mine": MainReward()})
    assert _needs_main_module({"math": MathReward(), "mine": MainReward()})
