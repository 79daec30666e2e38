#!/usr/bin/env bash
# GPU checks for a lent machine (a few minutes): installs the project into a fresh venv with the
# machine's CUDA torch, then runs scripts/gpu_check.py. Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv --system-site-packages /tmp/gpu-venv
/tmp/gpu-venv/bin/python -m pip install --quiet --no-deps -e .
/tmp/gpu-venv/bin/python -m pip install --quiet lightning torchmetrics omegaconf "jsonargparse[signatures]" math-verify 2>/dev/null || true
/tmp/gpu-venv/bin/python scripts/gpu_check.py
