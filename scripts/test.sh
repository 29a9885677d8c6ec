#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, the default tests, then the slow tests.
# Extra arguments go to the default pytest run, e.g. `bash scripts/test.sh -k pattern`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/python -m pytest -m "not slow and not gpu" "$@"
if [ $# -eq 0 ]; then
    .venv/bin/python -m pytest -m "slow and not gpu" || [ $? -eq 5 ]  # 5: no slow tests selected
fi
