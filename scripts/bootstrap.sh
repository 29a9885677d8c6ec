#!/usr/bin/env bash
# Create the project's virtualenv (.venv) and install the locked environment into it: every distribution of
# requirements/cpu-py311.lock at its exact version, hash-checked, then the project itself (editable, no
# dependencies of its own to resolve). The demo and the test command both run this, so both get the very
# stack that CI tested; `pip freeze` in .venv equals the lock.
#
#   bash scripts/bootstrap.sh
#
# The lock is for CPython 3.11 on Linux x86_64 (the README's machines and CI). Elsewhere this installs from
# pyproject.toml's ranges instead and says so (regenerate a lock for that platform with scripts/lock.sh).
# torch: the lock pins a CPU build. An environment that already has torch keeps it (GPU users keep their CUDA
# build); on a machine with an NVIDIA GPU and no torch, the lock's torch version is taken from PyPI, a CUDA
# build. Set ABLATE_TORCH_INDEX=https://download.pytorch.org/whl/cpu where the CPU wheel is not on a local
# find-links folder. ABLATE_LOCK=FILE installs another lock (scripts/test.sh --upgrade does), ABLATE_VENV=DIR
# another virtualenv. Re-running is cheap: nothing is reinstalled unless the lock or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/uv.sh
VENV=${ABLATE_VENV:-.venv}
LOCK=${ABLATE_LOCK:-requirements/cpu-py311.lock}
ensure_uv "$VENV"
py="$VENV/bin/python"
stamp="$VENV/.ablate-installed"
want="$(cat pyproject.toml "$LOCK" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
uv_sources "$py"
install=("$UV" pip install --python "$py" "${UV_SOURCES[@]}")

platform="$("$py" -c 'import platform, sys; print(f"{sys.implementation.name}{sys.version_info[0]}.{sys.version_info[1]}-{platform.system()}-{platform.machine()}")')"
if [ "$platform" != "cpython3.11-Linux-x86_64" ]; then
    echo "WARNING: $LOCK is for cpython3.11-Linux-x86_64, this is $platform: installing from pyproject.toml's" \
         "ranges, not the locked versions (bash scripts/lock.sh regenerates a lock; see its header)" >&2
    "$py" -c "import torch" 2>/dev/null || "${install[@]}" "torch==$(sed -n 's/^torch==\([^+ ]*\).*/\1/p' "$LOCK")"
    "${install[@]}" -e ".[dev]"
    echo "$want" > "$stamp"
    exit 0
fi

locked_torch="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$LOCK")"
lock="$LOCK"
if "$py" -c "import torch" 2>/dev/null; then
    have="$("$py" -c 'import torch; print(torch.__version__)')"
    if [ "$have" != "$locked_torch" ]; then
        echo "keeping the installed torch $have (the lock has $locked_torch): the rest is installed as locked" >&2
    fi
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${install[@]}" "torch==${locked_torch%%+*}"  # PyPI's Linux build of that version: CUDA
fi
if "$py" -c "import torch" 2>/dev/null && [ "$("$py" -c 'import torch; print(torch.__version__)')" != "$locked_torch" ]; then
    # Everything but torch's own entry (its hashes are those of the CPU wheel).
    lock="$(mktemp)"
    trap 'rm -f "$lock"' EXIT
    awk '/^torch==/ {skip = 1; next} skip && /^ / {next} {skip = 0; print}' "$LOCK" > "$lock"
fi
# --no-deps: the lock is complete, so nothing is resolved at install time and nothing unlocked comes in.
"${install[@]}" --require-hashes --no-deps -r "$lock"
"${install[@]}" --no-deps -e .
echo "$want" > "$stamp"
