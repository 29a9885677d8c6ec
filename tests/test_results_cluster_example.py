"""The committed 1.3B cluster-guide example (results/cluster-example/) still loads through analysis/ with
today's code, and the numbers its README and docs/cluster.md quote are the run directory's own."""

import json
import statistics
from pathlib import Path

import pytest

from analysis.runs import load_runs
from harness.training.config import config_hash, load_run_config
from sweeps.config import expand_sweep, load_sweep

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "cluster-example"
SWEEP = RESULTS / "table4" / "sweep.yaml"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_sweep_file_resolves_to_the_committed_run():
    runs = expand_sweep(load_sweep(SWEEP), source=str(SWEEP))
    assert [r.dir_name for r in runs] == [
        p.name for p in (RESULTS / "table4").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    run_dir = RESULTS / "table4" / runs[0].dir_name
    assert config_hash(load_run_config(run_dir / "config.yaml")) == runs[0].run_id


def test_the_quoted_numbers_are_the_run_directorys():
    (run,) = load_runs([str(SWEEP)], root=RESULTS)
    assert run.state == "done" and run.arm == "attention"
    run_dir = Path(run.path)
    metrics = [r for r in _rows(run_dir / "metrics.jsonl") if r.get("tokens_per_s")]
    assert metrics[-1]["step"] == 1000 and metrics[-1]["tokens"] == 16_384_000
    speed = statistics.median(r["tokens_per_s"] for r in metrics[2:])
    mfu = statistics.median(r["mfu"] for r in metrics[2:])
    peak = max(r["peak_mem_gib"] for r in metrics)
    events = _rows(run_dir / "events.jsonl")
    start = next(e["time"] for e in events if e["event"] == "start")
    finish = next(e["time"] for e in events if e["event"] == "finish")
    evals = {s: json.loads((run_dir / "evals" / f"{s}.json").read_text()) for s in ("perplexity", "ollm")}
    quoted = [
        f"{speed / 1000:.1f}K tokens/s",
        f"{peak:.1f} GiB",
        f"{round(finish - start)} s",
        f"{evals['perplexity']['elapsed_s']:.0f} s",
        f"{evals['ollm']['elapsed_s']:.0f} s",
    ]
    readme = (RESULTS / "README.md").read_text()
    for text in quoted + [f"{mfu:.1%} MFU"]:
        assert text in readme, text
    guide = (REPO / "docs" / "cluster.md").read_text()
    for text in [quoted[0], quoted[1], f"{mfu:.0%} MFU", quoted[3], quoted[4]]:
        assert text in guide, text
    assert evals["perplexity"]["metrics"]["c4/bits_per_byte"] == pytest.approx(1.568, abs=5e-4)
