"""The committed recall study (results/recall/) loads through analysis/ with today's code: its run directories
are the runs its sweep files name (same run ids), and every value the figures plot is the one the runs'
eval files hold."""

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from analysis import recall
from analysis.frames import load_frames
from analysis.runs import load_runs
from harness.training.config import config_hash, load_run_config
from sweeps.config import expand_sweep, load_sweep

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "recall"
SWEEPS = sorted((REPO / "sweeps" / "recall").glob("zoology-L*.yaml"))


@pytest.fixture(scope="module")
def study():
    runs = load_runs([str(p) for p in SWEEPS], root=RESULTS / "runs")
    frames = load_frames(runs)
    table = recall.recall_table(frames, runs)
    return runs, frames, table, recall.best_of_grid(table)


def test_committed_runs_are_the_sweeps_runs():
    for path in SWEEPS:
        sweep = load_sweep(path)
        planned = {r.dir_name: r for r in expand_sweep(sweep, source=str(path))}
        folder = RESULTS / "runs" / sweep.name
        for run_dir in folder.iterdir() if folder.exists() else []:
            run = planned[run_dir.name]  # a directory no sweep run names would be a changed run id
            assert config_hash(load_run_config(run_dir / "config.yaml")) == run.run_id
            assert json.loads((run_dir / "status.json").read_text())["state"] == "done"


def test_every_plotted_accuracy_is_the_eval_files(study):
    _, frames, table, best = study
    done = table[table.state == "done"]
    assert len(done) >= 11 and set(table.arm) >= {"attention", "mamba", "mamba-attention", "attention-mamba"}
    for row in done.itertuples():
        result = json.loads((Path(row.run_dir) / "evals" / "mqar.json").read_text())
        (task,) = [t for t in result["tasks"] if f"L{t['seq_len']}_N{t['num_pairs']}" == row.task]
        assert row.test_accuracy == pytest.approx(task["accuracy"])
        held = [
            json.loads(line)
            for line in (Path(row.run_dir) / "metrics.jsonl").read_text().splitlines()
            if "val_accuracy" in line
        ]
        assert row.val_accuracy == pytest.approx(held[-1]["val_accuracy"])
    matplotlib.use("Agg")
    fig = recall.fig2(best)
    plotted = {
        (ax.get_title(), line.get_label(), x): y
        for ax in fig.axes
        for line in ax.get_lines()
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    }
    picks = best[best.test_accuracy.notna()]
    assert len(plotted) == len(picks)
    for pick in picks.itertuples():
        length, pairs = pick.task[1:].split("_N")
        y = plotted[(f"{length} tokens, {pairs} pairs", pick.arm, pick.d_model)]
        run = done[done.run_id == pick.run_id].iloc[0]
        assert y == run.test_accuracy and pick.best_lr == run.lr  # the best rate's run, as read above
        others = done[(done.task == pick.task) & (done.arm == pick.arm) & (done.d_model == pick.d_model)]
        assert run.val_accuracy == others.val_accuracy.max()


def test_the_recall_head_figure_reads_the_runs_maps(study):
    runs, frames, _, best = study
    examples = recall._examples(best, frames)
    assert [name for name, _, _ in examples] == ["attention", "mamba-attention"]
    for _, maps, heads in examples:
        probs = next(iter(maps["blocks"].values()))[0]
        answered = probs[maps["queries"], maps["keys"] + 1]
        assert np.all((answered >= 0) & (answered <= 1)) and len(heads) >= 1
    # The hybrid's attention layer puts nearly all of each query's mass on the answer (the committed runs).
    hybrid = examples[1][2]
    assert hybrid.recall_score.max() > 0.9
