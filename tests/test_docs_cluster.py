"""docs/cluster.md runs as written: every ```bash block, in order, in one shell, on the loopback SLURM (the
tiny sweep really goes through sbatch, squeue and sacct), with $SHARED a temporary folder. A block that
starts with "# not run in CI" is only parsed (bash -n), and the guide says why beside it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evals.benchmark_data import prepare_benchmarks
from harness.data.config import resolve_data_dir

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "cluster.md"
SKIP = "# not run in CI"


def blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S)


def test_the_guide_has_blocks_and_every_skipped_one_parses():
    found = blocks()
    assert len(found) >= 10
    skipped = [b for b in found if b.startswith(SKIP)]
    assert len(skipped) == 1  # the real 1.3B launch; its --dry-run twin runs
    for block in skipped:
        done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_every_command_of_the_cluster_guide_runs(slurm_cluster, eval_packs, tmp_path):
    prepare_benchmarks(echo=lambda *_: None)
    shared = tmp_path / "shared"
    shared.mkdir()
    # The packs and benchmark copies this session already built stand in for the staged ones (the guide's
    # `ablate data prepare` then finds them up to date instead of building them again).
    (shared / "data").symlink_to(resolve_data_dir(), target_is_directory=True)
    script = "set -euo pipefail\n" + "\n".join(b for b in blocks() if not b.startswith(SKIP))
    env = {
        **os.environ,
        "SHARED": str(shared),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MPLBACKEND": "Agg",
    }
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
    out = done.stdout
    assert "#SBATCH --partition=gpu" in out and "#SBATCH --account=myproj" in out  # the plan's preview
    assert out.count("done") >= 4  # the tiny sweep through the loopback SLURM
    assert "would submit" in out  # the 1.3B launch's --dry-run
    assert list((shared / "adhoc").rglob("perplexity.json"))
    assert list((shared / "lm-eval").rglob("results_*.json"))
    assert (shared / "report" / "index.md").exists()
