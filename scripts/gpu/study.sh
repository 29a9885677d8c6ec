#!/usr/bin/env bash
# Any study of sweep files on the lent GPU: one lease, several device-tool commands. Run THERE, from the
# repository root, with vendor_gpu carried (wheels and kernel sources in one command, the data packs in the
# next when a sweep reads text):
#
#   bash scripts/gpu/study.sh start OUT SWEEP [SWEEP...]   # setup + kernels, then the sweeps, detached
#   bash scripts/gpu/study.sh follow OUT SECONDS           # follow them, then pack what is done to OUT
#
# The sweeps go through scripts/gpu/mini_study.py with the local executor, one after the other (--sequential,
# so that the CPU cores that feed the GPU are not oversubscribed), each with the budget its file states.
# The studies waiting for a lease:
#   sweeps/longctx/passkey-mini.yaml sweeps/longctx/text-mini.yaml       long context (issue 28)
#   sweeps/mamba2/text-mini.yaml sweeps/mamba2/recall-L256.yaml          Mamba-1 vs Mamba-2 (issue 30)
# Unfinished runs are lost at the lease's end (checkpoints do not travel back); finished ones come back in
# OUT/mini-results.tar.xz.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=/tmp/gpu-study
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
    for f in "${@:3}"; do
        only+=(--only "$f")
    done
    [ ${#only[@]} -gt 0 ] || { echo "start: name the sweep files to run" >&2; exit 2; }
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
echo "usage: $0 start OUT SWEEP [SWEEP...] | follow OUT SECONDS" >&2
exit 2
