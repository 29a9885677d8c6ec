#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, the default tests, then the slow tests.
# Extra arguments go to the default pytest run, e.g. `bash scripts/test.sh -k pattern`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
# MPLBACKEND: no display in CI (the report draws on the Agg canvas anyway; this keeps any pyplot use headless).
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg

# A real single-node SLURM on loopback for the launcher tests (scripts/slurm/start.sh installs the Debian
# packages on first use and needs root). ABLATE_SLURM=0 leaves it out; when it cannot start, the tests
# that need it skip with the reason. A cluster this script starts is stopped when it exits.
if [ "${ABLATE_SLURM:-}" != 0 ] && [ "$(id -u)" = 0 ] && ! sinfo -h >/dev/null 2>&1; then
    if bash scripts/slurm/start.sh; then
        trap 'bash scripts/slurm/stop.sh' EXIT
    else
        echo "WARNING: SLURM did not start (log above); the tests that need it will skip" >&2
    fi
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -m "not slow and not gpu" "$@"
if [ $# -eq 0 ]; then
    .venv/bin/python -m pytest -m "slow and not gpu" || [ $? -eq 5 ]  # 5: no slow tests selected
fi
