#!/usr/bin/env bash
# How fast the recall study's small models train on the lent GPU, by how they are run: one at a time
# (eager, then torch.compile'd) and 8 at once, at Zoology's (64 tokens, 4 pairs) task and d_model 128,
# 600 steps each, no held-out evaluation. The study (scripts/gpu/recall_study.sh) ran 16 at once at 4.6
# steps/s each, with the host's 16 cores saturated; this says which way to run it for the remaining grid.
# Run THERE, from the repository root, after `source scripts/gpu/setup.sh` (no data, no kernel build needed
# beyond what the Mamba arm's backend finds):
#
#   bash scripts/gpu/recall_probe.sh OUT        # ~3-4 minutes; OUT/recall-probe.txt
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?OUT}
mkdir -p "$out"
ARMS='arms={attention: {model: {pattern: "**"}}, mamba: {model: {pattern: "MM", embed_dropout: 0.0, attention: {learned_positions: 0, dropout: 0.0}}}}'

probe() {  # probe NAME PARALLEL LRS [KEY=VALUE ...]
    local name=$1 parallel=$2 lrs=$3 t0
    shift 3
    t0=$(date +%s)
    timeout 200 python3 -m ablate.cli sweep launch sweeps/recall/zoology-L64.yaml 'grid.model.d_model=[128]' \
        "grid.optim.lr=[$lrs]" "$ARMS" train.steps=600 train.eval_every=0 train.stop_when=null \
        train.checkpoint_every=0 train.log_every=25 'evals=[]' 'eval_options={}' \
        "resources.array_parallelism=$parallel" "$@" --executor local --root "/tmp/recall-probe/$name" \
        --wait --poll 2 >"$out/probe-$name.log" 2>&1
    echo "== $name: $parallel at once, exit $?, $(($(date +%s) - t0)) s wall (process start and data included)"
    python3 - "/tmp/recall-probe/$name" <<'PY'
import json, pathlib, statistics, sys
total = 0.0
for m in sorted(pathlib.Path(sys.argv[1]).glob("*/*/metrics.jsonl")):
    rows = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")][2:]
    med = statistics.median(speeds) if speeds else 0.0
    total += med
    print(f"  {m.parent.name:<26} step {rows[-1]['step'] if rows else 0:>4}  {med:>10,.0f} tok/s  "
          f"{med / 32768:6.1f} steps/s")
print(f"  sum of medians {total:,.0f} tok/s")
PY
}

{
    nvidia-smi --query-gpu=name --format=csv,noheader
    probe eager-alone 1 0.002154
    probe compiled-alone 1 0.002154 train.compile=true
    probe eager-8 8 0.0001,0.0004642,0.002154,0.01
} 2>&1 | tee "$out/recall-probe.txt"
