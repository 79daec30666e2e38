#!/usr/bin/env bash
# GPU checks for a lent machine (a few minutes): installs the project, without its dependencies and
# without a network (the machine's own torch, transformers and Lightning are used), into a venv
# that sees the machine's packages, then runs scripts/gpu_check.py. Usage: bash scripts/gpu_check.sh
# Extra arguments go to gpu_check.py; GPU_CHECK_LOG=path also writes its output there.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv /tmp/gpu-venv
# The machine's python3 may itself be a venv, whose packages --system-site-packages would not see.
python3 -c "import site; print('\n'.join(site.getsitepackages()))" \
    >"$(/tmp/gpu-venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/machine.pth"
/tmp/gpu-venv/bin/python -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
PYTHONUNBUFFERED=1 /tmp/gpu-venv/bin/python scripts/gpu_check.py "$@" 2>&1 | tee "${GPU_CHECK_LOG:-/dev/null}"
