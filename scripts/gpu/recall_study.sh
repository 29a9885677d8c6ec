#!/usr/bin/env bash
# The calibrated recall study (results/recall/) on the lent GPU: one lease, several device-tool commands.
# Run THERE, from the repository root, with vendor_gpu carried (no data archive: MQAR needs none):
#
#   bash scripts/gpu/recall_study.sh start OUT [COMMITTED_RUNS]   # setup + kernels, a 16-run smoke whose
#                                                                 # speeds go to OUT, then the study, detached
#   bash scripts/gpu/recall_study.sh follow OUT SECONDS           # follow it, then pack what is done to OUT
#
# The study is the three Zoology Fig. 2 sweeps (sweeps/recall/zoology-L{64,128,256}.yaml) launched through
# scripts/gpu/mini_study.py with the local executor: 16 runs train at once (resources.array_parallelism),
# the rest wait in line in launch order, which --split-grid makes d_model 128, 256, 512, then 64 across the
# three tasks, so that an early end leaves the widths the acceptance needs for every task. COMMITTED_RUNS
# (results/recall/runs in a later lease) puts the finished runs of an earlier lease in place first: they
# are skipped, and unfinished ones start again (checkpoints do not travel back). ARMS (default: Zoology's
# attention and Mamba and the two hybrids) picks the arms launched; the positional-encoding arms
# (attention-rope, attention-nope) come in a later lease with ARMS=attention-rope,attention-nope; the
# harder regime (sweeps/recall/based-fig2.yaml) and the paper's arms at depth (sweeps/recall/depth-L256.yaml)
# with SWEEPS="sweeps/recall/based-fig2.yaml sweeps/recall/depth-L256.yaml" ARMS= (every arm). SMOKE=0 skips
# the smoke when an earlier command of the same lease already built and exercised the kernels.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=/tmp/recall-study
cmd=${1:?start|follow}
out=${2:?OUT}
mkdir -p "$out"
study() { python3 scripts/gpu/mini_study.py --root "$ROOT" "$@"; }

if [ "$cmd" = start ]; then
    export JAMBA_BUILD_KERNELS=${JAMBA_BUILD_KERNELS:-1} JAMBA_SETUP_DATA=0  # 0: attention arms only
    t0=$(date +%s)
    # shellcheck disable=SC1091
    source scripts/gpu/setup.sh >"$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
    echo "[lease] setup and kernels in $(($(date +%s) - t0)) s"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    # Smoke: one run of each arm, 60 steps of the longest task, so that a broken build or config costs a
    # minute, not the lease (the first lease's 24-run smoke, with every process compiling its Triton kernels
    # at once, took most of a command).
    [ "${SMOKE:-1}" = 0 ] && echo "[lease] smoke skipped (SMOKE=0: the build was checked by an earlier command)"
    [ "${SMOKE:-1}" = 0 ] || timeout 240 python3 -m ablate.cli sweep launch sweeps/recall/zoology-L256.yaml 'grid.model.d_model=[128]' \
        'grid.optim.lr=[0.002154]' train.steps=60 \
        train.eval_every=30 train.checkpoint_every=0 eval_options.mqar.limit=64 eval_options.attention.limit=4 \
        --executor local --root /tmp/recall-smoke --wait --poll 5 >"$out/smoke.log" 2>&1
    echo "[lease] smoke exit $? after $(($(date +%s) - t0)) s"
    [ "${SMOKE:-1}" = 0 ] || python3 - <<'PY' | tee "$out/smoke-speeds.txt"
import json, pathlib, statistics
for run in sorted(pathlib.Path("/tmp/recall-smoke/recall-zoology-L256").glob("*/metrics.jsonl")):
    rows = [json.loads(x) for x in run.read_text().splitlines() if x.strip()]
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")][2:]
    status = json.loads((run.parent / "status.json").read_text())
    print(f"{run.parent.name:<34} {status.get('state'):<8} step {status.get('step')} "
          f"median {statistics.median(speeds) if speeds else 0:,.0f} tok/s ({len(speeds)} logged steps)")
PY
    export MINI_COMMIT=${MINI_COMMIT:-unknown}
    resume=()
    [ -n "${3:-}" ] && resume=(--resume-from "$3")
    only=()
    for f in ${SWEEPS:-sweeps/recall/zoology-L64.yaml sweeps/recall/zoology-L128.yaml sweeps/recall/zoology-L256.yaml}; do
        only+=(--only "$f")
    done
    arms=()
    [ -n "${ARMS-attention,mamba,mamba-attention,attention-mamba}" ] && arms=(--arms "${ARMS-attention,mamba,mamba-attention,attention-mamba}")
    study start "${only[@]}" --split-grid "${SPLIT:-model.d_model=128,256,512,64}" "${arms[@]}" "${resume[@]}"
    exit $?
fi
if [ "$cmd" = follow ]; then
    # shellcheck disable=SC1091
    JAMBA_SETUP_DATA=0 JAMBA_SETUP_VERIFY=0 source scripts/gpu/setup.sh >/dev/null 2>&1
    study wait --seconds "${3:?SECONDS}" --every 60
    study pack "$out"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    exit 0
fi
echo "usage: $0 start OUT [COMMITTED_RUNS] | follow OUT SECONDS" >&2
exit 2
