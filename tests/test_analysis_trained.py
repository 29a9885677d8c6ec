"""The report on run directories written by the real launcher, trainer and eval suites: a tiny Table 4
sweep (pure Mamba and the 1:7 hybrid, two seeds each) run in-process by the debug executor. Its runs carry
the run.json the launcher writes (arm, seed, the sweep's `compare:`); every number checked is read back
independently from the files the trainer and suites wrote."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml
from analysis_fixture import trained_sweep

from analysis import render
from analysis.frames import load_frames
from analysis.measure import measure
from analysis.paper import load_paper
from analysis.report import build_report
from analysis.runs import load_runs
from analysis.tables import paper_table, summary_table
from harness.training.rundir import read_jsonl
from sweeps.launch import launch


@pytest.fixture(scope="module")
def trained(tmp_path_factory, eval_packs):
    tmp = tmp_path_factory.mktemp("trained")
    sweep = trained_sweep(
        "table4-tiny",  # the registry declares its paper tables (Table 4 and Table 6)
        arms={"mamba": {"model": {"preset": "tiny-mamba"}}, "1:7": {"model": {"preset": "tiny-1to7"}}},
        seeds=[0, 1],
        compare=[
            {"table": "table4", "rows": {"mamba": "Mamba", "1:7": "Jamba a:m=1:7"}},
            {"table": "table6", "rows": {"mamba": "Mamba", "1:7": "Attention-Mamba (1:7)"}},
        ],
    )
    path = tmp / "table4-tiny.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    root = tmp / "runs"
    launch(path, executor="debug", root=root, echo=lambda s: None)
    return path, root


def test_report_of_trained_runs(trained, tmp_path, one_thread):
    path, root = trained
    runs = load_runs([path], root=root)
    assert [(r.arm, r.seed, r.state, r.arm_source) for r in runs] == [
        ("mamba", 0, "done", "run.json"),
        ("mamba", 1, "done", "run.json"),
        ("1:7", 0, "done", "run.json"),
        ("1:7", 1, "done", "run.json"),
    ]
    hybrid = [r.path for r in runs if r.arm == "1:7"]
    c4 = [
        json.loads((p / "evals" / "perplexity.json").read_text())["metrics"]["c4/logprob_per_byte"]
        for p in hybrid
    ]
    val = [[r["val_loss"] for r in read_jsonl(p / "metrics.jsonl") if "val_loss" in r][-1] for p in hybrid]

    paper = load_paper()
    frames = load_frames(runs)
    measures = measure(frames, paper)
    compare = paper.compare(runs[0].compare)[0]
    table = paper_table(paper.table("table4"), compare, measures, frames.runs, paper)
    cell = table.cell("Jamba a:m=1:7", "c4")
    assert cell.ours.values == c4 and cell.ours.n == 2
    text = f"{statistics.mean(c4):.3f} ± {statistics.stdev(c4):.3f}"  # no delta: no attention arm
    assert render.ours_parts(cell, paper.metric("c4"))[0] == text
    assert cell.paper.value == -0.533 and table.cell("Attention", "c4").missing.startswith("no arm")
    summary = summary_table("table4-tiny", measures, frames.runs, paper, "mamba")
    assert summary.cell("1:7", "heldout_loss").ours.values == val

    index = build_report([str(path)], out=tmp_path / "report", root=root, echo=lambda s: None)
    figures = {p.stem.removeprefix("table4-tiny-") for p in (index.parent / "figures").glob("*.png")}
    assert {"fig5", "fig7", "head-scores"} <= figures
    html = index.read_text()
    assert "Jamba a:m=1:7" in html and "data:image/png;base64," in html
    assert not any(p.name == "report" for r in runs for p in r.path.iterdir())
