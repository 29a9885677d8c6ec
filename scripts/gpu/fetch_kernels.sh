#!/usr/bin/env bash
# Fetch the mamba-ssm and causal-conv1d source archives, unpack them into vendor_gpu/ (git-ignored) and
# restrict both CUDA builds to Hopper (sm_90), so that scripts/gpu/build_kernels.sh can compile them on the
# lent GPU machine inside one lease (see /work/shared/gpu.md). Run on a machine with internet access, from
# anywhere; idempotent: a second run re-checks the archives and the patch and changes nothing.
#
#   bash scripts/gpu/fetch_kernels.sh            # then carry ["vendor_gpu"] in the device run
#
# Env: KERNEL_VENV (default /tmp/jamba-kernel-fetch-venv): venv holding the build deps that `pip download`
# needs to read the sdists' metadata (their setup.py imports torch). It is created when missing, with a
# pinned CPU torch; it is never the project's .venv.
set -euo pipefail

MAMBA_VERSION=2.3.2.post1
CONV_VERSION=1.7.0
MAMBA_SHA256=104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028
CONV_SHA256=3202758494eaa7b597ce1c282dfa188889506bfcb92cad3c407d26736bfcd32b
TORCH_PIN=2.13.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENDOR="$ROOT/vendor_gpu"
SDIST="$VENDOR/sdist"
VENV=${KERNEL_VENV:-/tmp/jamba-kernel-fetch-venv}
mkdir -p "$SDIST"

mamba_tgz="$SDIST/mamba_ssm-$MAMBA_VERSION.tar.gz"
conv_tgz="$SDIST/causal_conv1d-$CONV_VERSION.tar.gz"

sha_ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }

if ! sha_ok "$mamba_tgz" "$MAMBA_SHA256" || ! sha_ok "$conv_tgz" "$CONV_SHA256"; then
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, wheel, packaging, ninja" 2>/dev/null; then
        echo "[fetch] creating build-deps venv $VENV (torch==$TORCH_PIN)"
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q "torch==$TORCH_PIN" wheel packaging ninja setuptools
    fi
    echo "[fetch] downloading source archives"
    rm -f "$mamba_tgz" "$conv_tgz"
    MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE \
        "$VENV/bin/python" -m pip download -q --no-deps --no-build-isolation --no-binary :all: \
        -d "$SDIST" "mamba-ssm==$MAMBA_VERSION" "causal-conv1d==$CONV_VERSION"
    sha_ok "$mamba_tgz" "$MAMBA_SHA256" || { echo "[fetch] sha256 mismatch: $mamba_tgz" >&2; exit 1; }
    sha_ok "$conv_tgz" "$CONV_SHA256" || { echo "[fetch] sha256 mismatch: $conv_tgz" >&2; exit 1; }
else
    echo "[fetch] source archives present, checksums ok"
fi

# Unpack (only when missing) and drop the packages' own tests, which the build never reads.
for tgz in "$mamba_tgz" "$conv_tgz"; do
    dir="$VENDOR/$(basename "$tgz" .tar.gz)"
    if [ ! -f "$dir/setup.py" ]; then
        echo "[fetch] unpacking $(basename "$tgz")"
        rm -rf "$dir"
        tar -xzf "$tgz" -C "$VENDOR"
    fi
    rm -rf "$dir/tests"
done

# sm_90-only patch: inside `if not SKIP_CUDA_BUILD:`, right before the `# HACK: ... _GLIBCXX_USE_CXX11_ABI`
# comment, overwrite the ~9-architecture gencode list with Hopper alone (marker makes it idempotent).
python3 - "$VENDOR/mamba_ssm-$MAMBA_VERSION/setup.py" "$VENDOR/causal_conv1d-$CONV_VERSION/setup.py" <<'PY'
import sys

MARK = "# jamba-ablate: sm_90 only (scripts/gpu/fetch_kernels.sh)"
ANCHOR = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
PATCH = (
    f"    {MARK}\n"
    "    if not HIP_BUILD:\n"
    '        cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]\n'
    "\n"
)
for path in sys.argv[1:]:
    src = open(path).read()
    if MARK in src:
        print(f"[fetch] already patched: {path}")
        continue
    if src.count(ANCHOR) != 1 or "if not SKIP_CUDA_BUILD:" not in src:
        sys.exit(f"[fetch] patch anchor not found exactly once in {path}; upstream setup.py changed?")
    src = src.replace(ANCHOR, PATCH + ANCHOR)
    compile(src, path, "exec")
    open(path, "w").write(src)
    print(f"[fetch] patched for sm_90 only: {path}")
PY

# Only the kernel sources: vendor_gpu/ also holds scripts/gpu/bundle.sh's wheels and data (it prints the total).
KERNEL_PATHS=("$SDIST" "$VENDOR/mamba_ssm-$MAMBA_VERSION" "$VENDOR/causal_conv1d-$CONV_VERSION")
size_kb=$(du -sck "${KERNEL_PATHS[@]}" | tail -n 1 | cut -f1)
echo "[fetch] kernel sources: ${size_kb} KiB"
if [ "$size_kb" -gt 16384 ]; then
    echo "[fetch] warning: kernel sources are ${size_kb} KiB; carry allows 64 MiB for the whole working tree" >&2
fi
echo "[fetch] done: carry [\"vendor_gpu\"] and run 'bash scripts/gpu/build_kernels.sh' on the GPU machine"
