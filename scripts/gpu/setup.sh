#!/usr/bin/env bash
# Make the lent GPU machine ready to run the project, from what scripts/gpu/bundle.sh put in vendor_gpu/
# here (name it in the run's carry: ["vendor_gpu"]). First thing in every command; idempotent and fast
# (~20 s on a fresh machine, a few seconds on a warm one):
#
#   source scripts/gpu/setup.sh && python3 -m ablate.cli train sweeps/runs/tiny-mqar.yaml --run-dir $OUT/r
#   eval "$(bash scripts/gpu/setup.sh)"            # the same: run, it prints the export line on stdout
#   JAMBA_BUILD_KERNELS=1 source scripts/gpu/setup.sh    # + mamba_ssm's CUDA kernels (~2.5 min);
#                                                        # conv: + causal-conv1d (~6 min)
#
# 1. installs vendor_gpu/wheels/*.whl into $JAMBA_SITE (default /tmp/site) with --no-deps --no-index: the
#    machine's own packages (torch 2.11+cu130 above all) are never replaced; a torch wheel is refused;
# 2. unpacks vendor_gpu/data/data.tar.xz into $ABLATE_DATA_DIR (default /tmp/jamba-data) and checks it
#    (JAMBA_SETUP_DATA=0 skips it: benchmarks and the GPU tests read no data, so a lease that runs only
#    those can leave the 29 MiB archive behind: carry ["vendor_gpu/wheels", "vendor_gpu/mamba_ssm-..."]);
# 3. exports PYTHONPATH=$JAMBA_SITE:<repo>, ABLATE_DATA_DIR, HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1,
#    TRANSFORMERS_OFFLINE=1, HF_EVALUATE_OFFLINE=1;
# 4. optionally builds the kernels (scripts/gpu/build_kernels.sh, wheels kept in vendor_gpu/kernel_wheels);
# 5. verifies: import lm_eval, datasets, submitit, harness, evals (the last two from this checkout), the
#    carried distributions' requirements against the machine's versions (a mismatch is a WARNING line),
#    the packs and benchmarks, and `python3 -m ablate.cli --help` (JAMBA_SETUP_VERIFY=0 skips this).
# Env: PYTHON (default python3), JAMBA_SITE, ABLATE_DATA_DIR, JAMBA_WHEEL_DIR (default vendor_gpu/wheels),
# JAMBA_BUILD_KERNELS (0 | 1 | conv), JAMBA_SETUP_DATA (1), JAMBA_SETUP_VERIFY (1).

_jamba_gpu_setup() {
    local root py site data wheels stamp want t0
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    py=${PYTHON:-python3}
    site=${JAMBA_SITE:-/tmp/site}
    data=${ABLATE_DATA_DIR:-/tmp/jamba-data}
    wheels=${JAMBA_WHEEL_DIR:-$root/vendor_gpu/wheels}
    t0=$(date +%s)
    if ! ls "$wheels"/*.whl >/dev/null 2>&1 \
        || { [ "${JAMBA_SETUP_DATA:-1}" != 0 ] && [ ! -f "$root/vendor_gpu/data/data.json" ]; }; then
        echo "[setup] ERROR: $wheels or vendor_gpu/data missing: run scripts/gpu/bundle.sh on the dev machine" \
            "and carry [\"vendor_gpu\"]" >&2
        return 1
    fi
    if ls "$wheels" | grep -qiE '^(torch|triton|nvidia_|mamba_ssm|causal_conv1d)[-_]'; then
        echo "[setup] ERROR: $wheels holds torch/triton/nvidia/kernel wheels; never install those here" >&2
        return 1
    fi

    # 1. wheels (skipped when the same files were installed into the same site with the same python)
    want="$("$py" -c 'import sys; print(sys.version.split()[0])') $(cd "$wheels" && ls *.whl | sort | tr '\n' ' ')"
    stamp="$site/.jamba-bundle-wheels"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "[setup] wheels: $site is up to date" >&2
    else
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$wheels"/*.whl || { echo "[setup] ERROR: pip install failed" >&2; return 1; }
        echo "$want" >"$stamp"
        echo "[setup] wheels: installed $(ls "$wheels"/*.whl | wc -l) into $site" >&2
    fi

    # 2. data
    if [ "${JAMBA_SETUP_DATA:-1}" != 0 ]; then
        ABLATE_DATA_DIR=$data "$py" "$root/scripts/gpu/gpu_setup.py" data "$data" || return 1
    else
        echo "[setup] data: skipped (JAMBA_SETUP_DATA=0)" >&2
    fi

    # 3. environment
    case ":${PYTHONPATH:-}:" in
        *":$site:$root:"*) ;;
        *) PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}" ;;
    esac
    export PYTHONPATH ABLATE_DATA_DIR="$data"
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
    # Triton keeps its autotuning results on disk, not only in the process: mamba_ssm's SSD kernels (and
    # ours) autotune per shape on first use, which cost a Mamba-2 test run minutes per pytest process.
    export TRITON_CACHE_AUTOTUNING=1

    # 4. kernels
    case "${JAMBA_BUILD_KERNELS:-0}" in
        0) ;;
        1 | conv)
            if [ "${JAMBA_BUILD_KERNELS}" = 1 ] && "$py" -c "import torch, selective_scan_cuda" 2>/dev/null; then
                echo "[setup] kernels: mamba_ssm already installed" >&2
            else
                WHEEL_DIR="$root/vendor_gpu/kernel_wheels" PYTHON="$py" \
                    BUILD_CAUSAL_CONV1D=$([ "$JAMBA_BUILD_KERNELS" = conv ] && echo 1 || echo 0) \
                    bash "$root/scripts/gpu/build_kernels.sh" >&2 || return 1
            fi
            ;;
        *) echo "[setup] ERROR: JAMBA_BUILD_KERNELS must be 0, 1 or conv" >&2; return 1 ;;
    esac

    # 5. verify
    if [ "${JAMBA_SETUP_VERIFY:-1}" != 0 ]; then
        (cd "$root" && "$py" scripts/gpu/gpu_setup.py verify "$site") || return 1
    fi
    echo "[setup] ready in $(($(date +%s) - t0)) s: PYTHONPATH=$PYTHONPATH ABLATE_DATA_DIR=$data" >&2
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    _jamba_gpu_setup
else
    set -uo pipefail
    _jamba_gpu_setup || exit 1
    printf 'export PYTHONPATH=%q ABLATE_DATA_DIR=%q HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRITON_CACHE_AUTOTUNING=1\n' \
        "$PYTHONPATH" "$ABLATE_DATA_DIR"
fi
