"""The committed GPU results (results/mini/) still load through analysis/ and their configs still validate
with today's code: a change that breaks old run directories fails here."""

import json
from pathlib import Path

import pytest

from analysis.frames import load_frames
from analysis.measure import measure
from analysis.paper import load_paper
from analysis.runs import load_runs
from analysis.tables import paper_table
from harness.training.config import config_hash, load_run_config
from sweeps.config import expand_sweep, load_sweep

RESULTS = Path(__file__).resolve().parents[1] / "results" / "mini"
SWEEPS = sorted((RESULTS / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_files_expand_to_the_committed_run_directories(path):
    sweep = load_sweep(path)
    runs = expand_sweep(sweep, source=str(path))
    on_disk = {p.name for p in (RESULTS / "runs" / sweep.name).iterdir()}
    assert {r.dir_name for r in runs} == on_disk  # same run ids: the configs resolve as they did
    for run in runs:
        run_dir = RESULTS / "runs" / sweep.name / run.dir_name
        assert config_hash(load_run_config(run_dir / "config.yaml")) == run.run_id
        record = json.loads((run_dir / "run.json").read_text())
        assert record["arm"] == run.arm and record["seed"] == run.seed and record["run_id"] == run.run_id


def test_committed_runs_load_and_table4_has_both_seeds():
    runs = load_runs([str(p) for p in SWEEPS], root=RESULTS / "runs")
    assert len(runs) == 14 + 5
    frames = load_frames(runs)
    paper = load_paper()
    measures = measure(frames, paper)
    text_run = next(r for r in runs if r.sweep == "mini")
    compare = next(c for c in paper.compare(text_run.compare) if c.table == "table4")
    table = paper_table(paper.table("table4"), compare, measures, frames.runs, paper)
    for row in ("Attention", "Mamba", "Jamba a:m=1:3", "Jamba a:m=1:7"):
        cell = table.cell(row, "c4")
        assert cell.ours.n == 2 and -1.4 < cell.ours.mean < -1.0, (row, cell.ours)
        assert cell.paper.value is not None
    mqar = [r for r in runs if r.sweep == "mini-mqar"]
    assert {r.arm for r in mqar} == {"attention", "attention+rope", "mamba", "1:3", "1:7"}
    assert all(r.state == "done" for r in mqar)


def test_committed_mqar_runs_give_recall_per_task_and_the_figure():
    from analysis import fig_icl

    path = RESULTS / "sweeps" / "mini-mqar.yaml"
    runs = load_runs([str(path)], root=RESULTS / "runs")
    frames = load_frames(runs)
    measures = measure(frames, load_paper())
    recall = measures[measures["metric"] == "mqar_recall"].set_index("label")["value"]
    per_task = frames.evals[(frames.evals["suite"] == "mqar") & (frames.evals["metric"] == "accuracy")]
    for run in runs:
        payload = json.loads((run.path / "evals" / "mqar.json").read_text())
        assert recall[run.arm] == pytest.approx(100 * payload["metrics"]["mqar_recall/accuracy"])  # in %
        mine = per_task[per_task["run_id"] == run.run_id].set_index("task")["value"]
        assert {f"L{t['seq_len']}_N{t['num_pairs']}": t["accuracy"] for t in payload["tasks"]} == {
            task: mine[task] for task in mine.index if task != "mqar"
        }
    names = {label: label for label in dict.fromkeys(frames.runs["label"])}
    fig = fig_icl.mqar_recall(frames.evals, names)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["sequence length 64", "sequence length 128"]
    attention = per_task[per_task["label"] == "attention"].set_index("task")["value"]
    bars = next(c for c in panels[0].containers if c.get_label() == "attention")
    expected = [100 * attention[f"L64_N{n}"] for n in (4, 8, 16)]
    assert list(bars.lines[0].get_ydata()) == pytest.approx(expected)


def test_the_report_of_the_committed_runs_reads_well(tmp_path):
    """Terminal tables fit 120 columns (wide ones in blocks of columns), comparisons without data are one
    line per claim, Table 1 speaks human units and names its columns, the title names the sweeps."""
    from analysis.report import build_report

    lines: list[str] = []
    sweeps = [str(p) for p in SWEEPS]
    index = build_report(sweeps, out=tmp_path / "report", root=RESULTS / "runs", echo=lines.append)
    printed = "\n".join(lines).splitlines()
    assert printed and max(len(line) for line in printed) <= 120
    md = (index.parent / "index.md").read_text()
    assert md.startswith("# Report: mini-mqar, mini")  # the sweeps, in the order given (sorted file names)
    assert md.count("no data: ") == 0 and "comparisons without data (OLLM)" in md
    table1 = next(line for line in printed if line.startswith("model ") and "total params" in line)
    assert "layers (l, a:m, e, n, K)" in table1
    assert any(line.startswith("attention ") and "65.28M" in line for line in printed)
