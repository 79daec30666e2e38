"""scripts/gpu_check.py cannot run its GPU checks in CI; ``--cpu-smoke`` runs the shaped-weights
checks (GRPO, on-policy distillation, SFT with MFU) at toy width, so the script does not rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.probes import REPO


def test_the_gpu_check_script_runs_its_smoke_mode(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--cpu-smoke", "--scratch", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [key for key in results if key.endswith("_error")], results
    for key in ("grpo_step_s", "distill_step_s", "sft_tokens_per_s", "sft_mfu"):
        assert results[key] > 0, key
    assert 0 < results["sft_mfu"] < 1
    assert (tmp_path / "qwen3-0.6b-shaped" / "config.json").exists()
