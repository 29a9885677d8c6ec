#!/usr/bin/env bash
# Set up (if needed) and run the demo: the paper's Table 1 recomputed from configs, the tiny ablation
# family's parameter matching, and the CPU selective-scan benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== Table 1: parameters and KV cache at 256K tokens =="
ablate plan --table1 --context 262144
echo
echo "== the tiny ablation family (parameter-matched arms) =="
ablate plan --preset tiny-attention --preset tiny-mamba --preset tiny-1to3 --preset tiny-1to7 --context 256 --tokens 2e7
echo
echo "== selective scan on CPU: compiled backend vs the sequential reference =="
ablate bench scan --preset tiny-1to7
