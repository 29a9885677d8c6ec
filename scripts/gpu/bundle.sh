#!/usr/bin/env bash
# Fill the git-ignored vendor_gpu/ with everything a run on the lent GPU machine needs that it lacks, then
# print what will travel against the device tool's 64 MiB limit. Run HERE (a machine with a package
# registry), from anywhere; idempotent (a second run checks and keeps what is in place: seconds, not minutes).
#
#   bash scripts/gpu/bundle.sh             # then: run(carry=["vendor_gpu"], command="source scripts/gpu/setup.sh && ...")
#
#   vendor_gpu/wheels/    cp312 manylinux / py3 wheels of scripts/gpu/wheels.txt (lm-eval, datasets, submitit
#                         and what they need beyond scripts/gpu/gpu_image.txt), checked offline for completeness
#   vendor_gpu/data/      data.tar.xz (+ data.json): the packs web, books, code, imdb, gpt2 and the prepared
#                         benchmark copies (built into $ABLATE_DATA_DIR or ~/.cache/jamba-ablate/data first)
#   vendor_gpu/mamba_ssm-*, causal_conv1d-*, sdist/   kernel sources (scripts/gpu/fetch_kernels.sh)
#
# Env: PYTHON: a python with pip, packaging and pyarrow and the project's dependencies (default: .venv/bin/python
# of this checkout, else of the main checkout, else python3). Details: scripts/gpu/bundle.py.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
    for cand in "$ROOT/.venv/bin/python" "$(git rev-parse --path-format=absolute --git-common-dir)/../.venv/bin/python" python3; do
        if command -v "$cand" >/dev/null 2>&1; then PYTHON=$cand; break; fi
    done
fi
echo "[bundle] python: $PYTHON ($("$PYTHON" -V 2>&1))"
export PIP_DISABLE_PIP_VERSION_CHECK=1

bash scripts/gpu/fetch_kernels.sh
"$PYTHON" scripts/gpu/bundle.py wheels
"$PYTHON" scripts/gpu/bundle.py check
"$PYTHON" scripts/gpu/bundle.py data
echo
"$PYTHON" scripts/gpu/bundle.py sizes
