#!/usr/bin/env bash
# Create the project's virtualenv (.venv) and install the project into it, with optional extras.
#
#   bash scripts/bootstrap.sh            # runtime only
#   bash scripts/bootstrap.sh dev        # + test tools and transformers
#
# torch: an environment that already has torch keeps it (GPU users keep their CUDA build). Otherwise a
# machine without an NVIDIA GPU gets the CPU build pinned by ABLATE_CPU_TORCH (a plain `pip install torch`
# on Linux pulls a multi-GB CUDA build); set ABLATE_TORCH_INDEX=https://download.pytorch.org/whl/cpu where
# PyPI's build of that version is the CUDA one. Re-running is cheap: nothing is reinstalled unless
# pyproject.toml or the extras changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ABLATE_VENV:-.venv}
EXTRAS=${1:-}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
py="$VENV/bin/python"
stamp="$VENV/.ablate-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) extras=$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

if ! "$py" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$py" -m pip install "torch>=2.5"
    else
        "$py" -m pip install "torch==${ABLATE_CPU_TORCH:-2.13.0}" ${ABLATE_TORCH_INDEX:+--index-url "$ABLATE_TORCH_INDEX"}
    fi
fi
# Pin torch at whatever is installed so that no dependency can swap it for another build.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$py" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$constraints"
"$py" -m pip install -c "$constraints" -e ".${EXTRAS:+[$EXTRAS]}"
echo "$want" > "$stamp"
