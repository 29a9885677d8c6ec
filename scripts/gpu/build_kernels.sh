#!/usr/bin/env bash
# Build and install mamba-ssm's CUDA kernels (and optionally causal-conv1d's) ON the lent GPU machine, from the
# sm_90-patched sources that scripts/gpu/fetch_kernels.sh unpacked into vendor_gpu/ (name it in `carry`).
# Run from anywhere; it works in the repo root.
#
#   bash scripts/gpu/build_kernels.sh                          # mamba_ssm only (~2.5 min on the H100 box)
#   BUILD_CAUSAL_CONV1D=1 bash scripts/gpu/build_kernels.sh    # + causal-conv1d (~6 min, built alongside)
#
# causal-conv1d has only 4 translation units, two of them huge, so its build is serial-bound; it is built in
# the background while mamba_ssm builds in the foreground, and mamba_ssm is installed (and usable) before
# the script waits for causal-conv1d. Wheels go to $WHEEL_DIR (default vendor_gpu/wheels); a wheel already
# there is reused rather than rebuilt, so a second call on a warm machine is cheap. Wheels are installed
# with --no-deps into the machine's python3 ($PYTHON): its CUDA torch must stay; never let pip resolve torch
# there. Prints timings; exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
VENDOR=vendor_gpu
MAMBA_SRC=$VENDOR/mamba_ssm-2.3.2.post1
CONV_SRC=$VENDOR/causal_conv1d-1.7.0
WHEEL_DIR=${WHEEL_DIR:-$VENDOR/wheels}
CONV=${BUILD_CAUSAL_CONV1D:-0}
MARK="jamba-ablate: sm_90 only"

export MAX_JOBS=${MAX_JOBS:-16}
# Forced: the GPU machine presets TORCH_CUDA_ARCH_LIST=9.0a. (The patched setup.py passes its own -gencode
# flags, which make torch ignore this variable anyway; set here for clarity.)
export TORCH_CUDA_ARCH_LIST=9.0
export MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE
unset MAMBA_SKIP_CUDA_BUILD CAUSAL_CONV1D_SKIP_CUDA_BUILD

die() { echo "[build] ERROR: $*" >&2; exit 1; }

SRCS=("$MAMBA_SRC")
if [ "$CONV" = "1" ]; then SRCS+=("$CONV_SRC"); fi
for src in "${SRCS[@]}"; do
    [ -f "$src/setup.py" ] || die "$src/setup.py missing: run scripts/gpu/fetch_kernels.sh and carry vendor_gpu"
    grep -q "$MARK" "$src/setup.py" || die "$src/setup.py lacks the sm_90 patch: rerun scripts/gpu/fetch_kernels.sh"
done
command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] || die "nvcc not found"
"$PY" -c "import torch; assert torch.version.cuda, 'torch has no CUDA'" || die "python '$PY' lacks a CUDA torch"

echo "[build] $("$PY" -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)')"
echo "[build] nvcc: $(nvcc --version 2>/dev/null | grep -i release || echo '?')"
echo "[build] MAX_JOBS=$MAX_JOBS TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST nproc=$(nproc) wheels -> $WHEEL_DIR"
mkdir -p "$WHEEL_DIR"
WHEEL_DIR=$(cd "$WHEEL_DIR" && pwd)

have_wheel() { ls "$WHEEL_DIR"/"$1"-*.whl >/dev/null 2>&1; }

build_wheel() {  # $1 = wheel name prefix, $2 = source dir; prints "<prefix> built in N s"
    local prefix=$1 src=$2 t0
    t0=$(date +%s)
    "$PY" -m pip wheel --no-build-isolation --no-deps --no-index -w "$WHEEL_DIR" "./$src" || return 1
    have_wheel "$prefix" || { echo "[build] no $prefix wheel produced in $WHEEL_DIR" >&2; return 1; }
    echo "[build] $prefix built in $(($(date +%s) - t0)) s"
}

install_and_check() {  # $1 = wheel name prefix, $2 = python import check
    "$PY" -m pip install -q --no-deps --no-index --force-reinstall "$WHEEL_DIR"/"$1"-*.whl \
        || die "pip install of $1 failed"
    "$PY" -c "$2" || die "$1 import failed after install"
}

T_START=$(date +%s)
TIMINGS=()

# The extensions link against torch's libc10.so etc., which only `import torch` puts in the process:
# every import check above and below imports torch first.

# On any exit (die, or SIGTERM/SIGINT from e.g. `timeout`), stop a still-running background build,
# children first, by process id.
CONV_PID=""
kill_tree() {
    local p=$1 c
    for c in $(pgrep -P "$p" 2>/dev/null || true); do kill_tree "$c"; done
    kill "$p" 2>/dev/null || true
}
cleanup() {
    if [ -n "$CONV_PID" ] && kill -0 "$CONV_PID" 2>/dev/null; then
        echo "[build] stopping the background causal_conv1d build" >&2
        kill_tree "$CONV_PID"
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
CONV_LOG="$WHEEL_DIR/causal_conv1d-build.log"
if [ "$CONV" = "1" ]; then
    if have_wheel causal_conv1d; then
        echo "[build] reusing $(ls "$WHEEL_DIR"/causal_conv1d-*.whl)"
        TIMINGS+=("causal_conv1d: reused wheel")
    else
        echo "[build] building causal_conv1d in the background (log: $CONV_LOG) ..."
        build_wheel causal_conv1d "$CONV_SRC" >"$CONV_LOG" 2>&1 &
        CONV_PID=$!
    fi
fi

if have_wheel mamba_ssm; then
    echo "[build] reusing $(ls "$WHEEL_DIR"/mamba_ssm-*.whl)"
    TIMINGS+=("mamba_ssm: reused wheel")
else
    echo "[build] building mamba_ssm ..."
    t0=$(date +%s)
    build_wheel mamba_ssm "$MAMBA_SRC" || die "building mamba_ssm failed"
    TIMINGS+=("mamba_ssm: $(($(date +%s) - t0)) s")
fi
# mamba_ssm's package __init__ pulls in Mamba2/Mamba3 and triton: the same import that
# harness.kernels.selective_scan.cuda_kernels_available() performs.
install_and_check mamba_ssm \
    "import torch, selective_scan_cuda, mamba_ssm.ops.selective_scan_interface as s; print('[build] import ok:', s.__file__)"
echo "[build] mamba_ssm installed at +$(($(date +%s) - T_START)) s"

if [ -n "$CONV_PID" ]; then
    echo "[build] waiting for causal_conv1d ..."
    if ! wait "$CONV_PID"; then
        CONV_PID=""
        tail -n 60 "$CONV_LOG" >&2
        die "building causal_conv1d failed (log above, full log $CONV_LOG)"
    fi
    CONV_PID=""
    cat "$CONV_LOG" | grep '^\[build\]' || true
    TIMINGS+=("causal_conv1d: $(grep -o 'built in [0-9]* s' "$CONV_LOG" | grep -o '[0-9]*') s (in parallel)")
fi
if [ "$CONV" = "1" ]; then
    install_and_check causal_conv1d \
        "import torch, causal_conv1d_cuda, causal_conv1d; print('[build] import ok: causal_conv1d', causal_conv1d.__version__)"
fi

echo "[build] timings: ${TIMINGS[*]}; total $(($(date +%s) - T_START)) s"
