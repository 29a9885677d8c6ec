#!/usr/bin/env bash
# The long-context study (issue 28; results/longctx/) on the lent GPU: one lease, several device-tool commands.
# Run THERE, from the repository root, with vendor_gpu carried (wheels and kernel sources in one command, the
# data packs in the next: the text sweep reads the C4/books/code stand-ins):
#
#   bash scripts/gpu/longctx_study.sh start OUT     # setup + kernels, then both sweeps, detached
#   bash scripts/gpu/longctx_study.sh follow OUT SECONDS   # follow them, then pack what is done to OUT
#
# sweeps/longctx/passkey-mini.yaml trains five mini arms on the synthetic passkey corpus at 256 tokens and
# tests retrieval out to 8,192 (32x); sweeps/longctx/text-mini.yaml trains five mini text arms (12M tokens
# at 1,024) and runs needle in a haystack and the loss by position out to 16,384 (16x). Both go through
# scripts/gpu/mini_study.py with the local executor, passkey first (it is the shorter), one after the other
# (--sequential) so that the CPU cores that feed the GPU are not oversubscribed. ONLY="sweeps/longctx/
# passkey-mini.yaml" (or the text one) runs one of them. Unfinished runs are lost at the lease's end
# (checkpoints do not travel back); finished ones come back in OUT/mini-results.tar.xz.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=/tmp/longctx-study
cmd=${1:?start|follow}
out=${2:?OUT}
mkdir -p "$out"
study() { python3 scripts/gpu/mini_study.py --root "$ROOT" "$@"; }

if [ "$cmd" = start ]; then
    export JAMBA_BUILD_KERNELS=${JAMBA_BUILD_KERNELS:-1}
    t0=$(date +%s)
    # shellcheck disable=SC1091
    source scripts/gpu/setup.sh >"$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
    echo "[lease] setup and kernels in $(($(date +%s) - t0)) s"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    export MINI_COMMIT=${MINI_COMMIT:-unknown}
    only=()
    for f in ${ONLY:-sweeps/longctx/passkey-mini.yaml sweeps/longctx/text-mini.yaml}; do
        only+=(--only "$f")
    done
    study start "${only[@]}" --sequential
    exit $?
fi
if [ "$cmd" = follow ]; then
    # shellcheck disable=SC1091
    JAMBA_SETUP_VERIFY=0 source scripts/gpu/setup.sh >/dev/null 2>&1
    study wait --seconds "${3:?SECONDS}" --every 60
    study pack "$out"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    exit 0
fi
echo "usage: $0 start OUT | follow OUT SECONDS" >&2
exit 2
