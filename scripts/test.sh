#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, the default tests, then the slow tests, in the
# locked environment (requirements/cpu-py311.lock, installed by scripts/bootstrap.sh).
# Extra arguments go to the default pytest run, e.g. `bash scripts/test.sh -k pattern`.
#
#   bash scripts/test.sh --upgrade    # the same suite against the newest release of every dependency, in
#                                     # .venv-upgrade: says which packages moved and what broke, and leaves
#                                     # the lock alone (bump it deliberately: bash scripts/lock.sh --upgrade)
set -euo pipefail
cd "$(dirname "$0")/.."
upgrade=0
if [ "${1:-}" = --upgrade ]; then
    upgrade=1
    shift
    export ABLATE_VENV=.venv-upgrade ABLATE_LOCK=.venv-upgrade/newest.lock
    mkdir -p .venv-upgrade
    bash scripts/lock.sh --upgrade --out "$ABLATE_LOCK"
    moved="$(python3 scripts/lock_diff.py requirements/cpu-py311.lock "$ABLATE_LOCK")"
    echo "== newest releases against the lock: ${moved:-nothing moved}"
fi
venv=${ABLATE_VENV:-.venv}
bash scripts/bootstrap.sh
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
if [ $upgrade = 0 ]; then
    "$venv/bin/ruff" check .
    "$venv/bin/python" -m pytest -m "not slow and not gpu" --durations=15 "$@"
    if [ $# -eq 0 ]; then
        "$venv/bin/python" -m pytest -m "slow and not gpu" --durations=15 || [ $? -eq 5 ]  # 5: no slow tests selected
    fi
    exit 0
fi
# Upgrade mode: run everything, then say what broke.
rc_lint=0 rc_default=0 rc_slow=0 slow="not run (arguments given)"
"$venv/bin/ruff" check . || rc_lint=$?
"$venv/bin/python" -m pytest -m "not slow and not gpu" "$@" || rc_default=$?
if [ $# -eq 0 ]; then
    "$venv/bin/python" -m pytest -m "slow and not gpu" || rc_slow=$?
    [ $rc_slow -ne 5 ] || rc_slow=0
    slow="exit $rc_slow"
fi
echo "== against the newest releases (${moved:-nothing moved}):"
echo "   ruff exit $rc_lint, default suite exit $rc_default, slow suite $slow" \
     "($([ $((rc_lint + rc_default + rc_slow)) -eq 0 ] && echo 'nothing broke: bash scripts/lock.sh --upgrade bumps the lock' || echo 'the FAILED lines above are what broke'))"
[ $((rc_lint + rc_default + rc_slow)) -eq 0 ]
