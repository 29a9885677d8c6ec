#!/usr/bin/env bash
# docs/cluster.md's 1.3B example, run for real once on the lent GPU: one Table 4 arm (ARM: attention, the
# default, which needs no kernel build; 1:3, 1:7 or mamba build mamba_ssm first) at the 1.3b preset on the
# real data packs for 1,000 steps of one micro-batch (8 x 2,048 tokens, the per-GPU batch of
# the cluster sweep, without its gradient accumulation), through `ablate sweep launch --executor local`,
# then the sweep's evaluation suites at 1.3B on the GPU with limits a lease can afford (eval_options below).
# Run THERE, from the repository root, with vendor_gpu carried (wheels, kernel sources and the data archive):
#
#   bash scripts/gpu/cluster_example.sh start OUT            # setup + kernels + data, launch (detached), follow
#   bash scripts/gpu/cluster_example.sh follow OUT SECONDS   # follow until done or SECONDS, then pack to OUT
#
# OUT/cluster-example.tar.xz holds the run directory's small files (never the checkpoint) and the job log;
# results/cluster-example/ here is that archive unpacked.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=/tmp/cluster-example
cmd=${1:?start|follow}
out=${2:?OUT}
mkdir -p "$out"
ARM=${ARM:-attention}
case "$ARM" in
    attention) PRESET=1.3b-attention ;; mamba) PRESET=1.3b-mamba ;; 1:3) PRESET=1.3b-1to3 ;; 1:7) PRESET=1.3b-1to7 ;;
    *) echo "ARM must be attention, mamba, 1:3 or 1:7" >&2; exit 2 ;;
esac
SWEEP_ARGS=(sweeps/table4.yaml "arms={\"$ARM\": {model: {preset: $PRESET}}}" 'compare=[]'
    train.tokens=null train.steps=1000 train.global_batch=8 train.micro_batch=8
    train.eval_every=500 train.checkpoint_every=500 train.log_every=10
    resources.nodes=1 resources.gpus_per_node=1
    eval_options.perplexity.limit=50 eval_options.ollm.limit=20 eval_options.ablation.limit=100
    eval_options.icl.limit=100 eval_options.induction.limit=64 eval_options.attention.limit=16)

follow() {  # follow until the launcher (which waits for the job: training, then the suites) ends, or $1 s
    local until=$(($(date +%s) + $1))
    while [ "$(date +%s)" -lt "$until" ]; do
        state=$(python3 -c "import json,glob; f=glob.glob('$ROOT/table4/*/status.json'); print(json.load(open(f[0])).get('state') if f else 'none')" 2>/dev/null)
        last=$(tail -c 300 "$ROOT"/table4/*/metrics.jsonl 2>/dev/null | tail -1 | cut -c1-160)
        echo "[follow $(date +%T)] state=$state $last"
        ls "$ROOT"/table4/*/evals 2>/dev/null | tr '\n' ' '
        pgrep -f "[s]weep launch sweeps/table4.yaml" >/dev/null || break
        sleep 30
    done
}

pack() {
    (cd "$ROOT" && find . -path '*/checkpoints' -prune -o -type f -size -20M -print \
        | tar -cJf "$out/cluster-example.tar.xz" -T -) && ls -la "$out"
}

if [ "$cmd" = start ]; then
    [ "$ARM" = attention ] && export JAMBA_BUILD_KERNELS=0 || export JAMBA_BUILD_KERNELS=1
    t0=$(date +%s)
    # shellcheck disable=SC1091
    source scripts/gpu/setup.sh >"$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
    echo "[lease] setup, data and kernels in $(($(date +%s) - t0)) s"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    python3 -m ablate.cli sweep plan "${SWEEP_ARGS[@]}" 2>&1 | head -12
    setsid nohup python3 -m ablate.cli sweep launch "${SWEEP_ARGS[@]}" --executor local --root "$ROOT" --wait \
        --poll 15 >"$ROOT.log" 2>&1 </dev/null &
    follow "${3:-300}"
    exit 0
fi
if [ "$cmd" = follow ]; then
    follow "${3:?SECONDS}"
    cat "$ROOT.log" | tail -20
    cp "$ROOT.log" "$ROOT/launch.log" 2>/dev/null
    pack
    exit 0
fi
echo "usage: $0 start OUT | follow OUT SECONDS" >&2
exit 2
