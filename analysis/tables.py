"""Comparison tables: a sweep's arms (rows) x metrics (columns), ours beside the paper's in every cell.

Three builders share one :class:`Table` model (rendered by analysis.render):

* :func:`paper_table`: one of the paper's tables (4-8, 2) from a sweep's ``compare:`` entry: the paper's
  rows in the paper's order (an arm per row; arms the paper lacks are appended, paper rows no arm maps to
  are kept with the reason), the paper's columns, the metric's direction, the best arm per column marked,
  deltas to the baseline arm (ours and the paper's), mean +- std and n over seeds;
* :func:`summary_table`: any sweep's generic table, its arms x every registry metric it has data for;
* :func:`table1`: the paper's Table 1 recomputed from the presets' configs, plus each arm's own model.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from analysis.measure import arm_estimate
from analysis.paper import Compare, Metric, Paper, PaperValue, Study, slugs
from analysis.stats import Estimate

NOT_IN_PAPER = "not in the paper"


@dataclass
class Cell:
    ours: Estimate | None = None
    missing: str | None = None  # why ours is absent
    note: str = ""  # e.g. "partial OLLM" or "n=1: seed 1 running"
    delta: float | None = None  # ours - baseline's, in the paper's units
    paper: PaperValue | None = None
    paper_missing: str = ""
    paper_delta: float | None = None
    best: bool = False
    paper_best: bool = False


@dataclass
class Row:
    label: str  # the paper's row name, or our arm label
    arms: str  # our arm label (or "" when no arm maps to this paper row)
    runs: str  # e.g. "2 done" or "1 done, 1 running"
    baseline: bool = False
    paper_row: str | None = None  # the paper's row this row reproduces


@dataclass
class Table:
    id: str
    title: str
    sweep: str
    columns: list[Metric]
    rows: list[Row]
    cells: dict[tuple[str, str], Cell]
    baseline: str | None = None
    paper_columns: bool = True
    runs_header: str = "runs"  # what each row's second column holds (Table 1: the layer shorthand)

    def cell(self, row: str, metric: str) -> Cell:
        return self.cells[(row, metric)]


STATE_ORDER = ("done", "running", "interrupted", "pending", "failed", "not launched")


def _runs_summary(states: list[str]) -> str:
    """E.g. "2 done" or "1 running, 1 failed" (states in a fixed order)."""
    counts = Counter(states)
    order = sorted(counts, key=lambda s: STATE_ORDER.index(s) if s in STATE_ORDER else len(STATE_ORDER))
    return ", ".join(f"{counts[state]} {state}" for state in order) or "no runs"


def _mark_best(table: Table) -> None:
    for m in table.columns:
        if not m.better:
            continue
        pick = max if m.better == "higher" else min
        for attr, flag in (("ours", "best"), ("paper", "paper_best")):
            scored = [
                (c, c.ours.mean if attr == "ours" else c.paper.value)
                for r in table.rows
                if (c := table.cells[(r.label, m.id)]) and getattr(c, attr) is not None
            ]
            if len(scored) < 2:
                continue
            best = pick(v for _, v in scored)
            for c, v in scored:
                setattr(c, flag, math.isclose(v, best, rel_tol=0, abs_tol=10 ** -(m.digits + 2)))


def _deltas(table: Table) -> None:
    if table.baseline is None:
        return
    for m in table.columns:
        base = table.cells[(table.baseline, m.id)]
        for r in table.rows:
            c = table.cells[(r.label, m.id)]
            if c.ours is not None and base.ours is not None and not r.baseline:
                c.delta = c.ours.mean - base.ours.mean
            if c.paper is not None and base.paper is not None and not r.baseline:
                c.paper_delta = c.paper.value - base.paper.value


def _finish(table: Table) -> Table:
    _mark_best(table)
    _deltas(table)
    return table


def _labels(runs: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(runs["label"]))


def paper_table(
    study: Study, compare: Compare, measures: pd.DataFrame, runs: pd.DataFrame, paper: Paper
) -> Table:
    """One paper table reproduced by a sweep (``runs``/``measures`` restricted to that sweep)."""
    columns = [paper.metric(c) for c in study.columns]
    arm_of_label = dict(zip(runs["label"], runs["arm"], strict=True))
    ordered: list[tuple[str, str | None, str | None]] = []  # (row label, our arm label, paper row)
    for paper_row in study.rows:
        labels = [lab for lab in _labels(runs) if compare.row_of(arm_of_label[lab]) == paper_row]
        if not labels:
            ordered.append((paper_row, None, paper_row))
        for lab in labels:
            ordered.append((paper_row if len(labels) == 1 else f"{paper_row} ({lab})", lab, paper_row))
    ordered += [(lab, lab, None) for lab in _labels(runs) if compare.row_of(arm_of_label[lab]) is None]

    rows, cells = [], {}
    baseline_row = None
    for row_label, label, paper_row in ordered:
        is_base = label is not None and compare.is_baseline(arm_of_label[label]) and baseline_row is None
        baseline_row = row_label if is_base else baseline_row
        states = runs.loc[runs["label"] == label, "state"].tolist() if label else []
        rows.append(Row(row_label, label or "", _runs_summary(states) if label else "—", is_base, paper_row))
        for m in columns:
            cell = Cell()
            if label is None:
                cell.missing = f"no arm of the sweep maps to {paper_row}"
            else:
                cell.ours, cell.missing, cell.note = arm_estimate(
                    measures[(measures["label"] == label) & (measures["metric"] == m.id)]
                )
            if paper_row is None:
                cell.paper_missing = NOT_IN_PAPER
            else:
                cell.paper = study.rows[paper_row].get(m.id)
                cell.paper_missing = "" if cell.paper else "not reported"
            cells[(row_label, m.id)] = cell
    sweep = runs["sweep"].iloc[0] if len(runs) else ""
    return _finish(Table(study.id, study.title, sweep, columns, rows, cells, baseline_row))


def summary_table(
    sweep: str, measures: pd.DataFrame, runs: pd.DataFrame, paper: Paper, baseline: str | None = None
) -> Table:
    """A sweep's arms x every summary metric with at least one value (no paper columns)."""
    columns = [
        paper.metric(mid)
        for mid in paper.summary_metrics
        if measures.loc[measures["metric"] == mid, "missing"].isna().any()
    ]
    labels = _labels(runs)
    arms = dict(zip(runs["label"], runs["arm"], strict=True))
    base = next((lab for lab in labels if baseline and arms[lab] in (baseline, *slugs(baseline))), None)
    base = base or (labels[0] if labels else None)
    rows, cells = [], {}
    for label in labels:
        rows.append(
            Row(
                label, label, _runs_summary(runs.loc[runs["label"] == label, "state"].tolist()), label == base
            )
        )
        for m in columns:
            ours, missing, note = arm_estimate(
                measures[(measures["label"] == label) & (measures["metric"] == m.id)]
            )
            cells[(label, m.id)] = Cell(ours, missing, note, paper_missing=NOT_IN_PAPER)
    title = f"{sweep}: arms x metrics"
    return _finish(Table("summary", title, sweep, columns, rows, cells, base, paper_columns=False))


def table1(runs: pd.DataFrame, paper: Paper) -> Table:
    """The paper's Table 1 recomputed from the presets' configs beside the printed values; then each arm."""
    from harness.accounting import plan_model
    from harness.presets import get_preset

    study = paper.table("table1")
    columns = [paper.metric(c) for c in study.columns]
    rows, cells = [], {}
    for row, preset in study.presets.items():
        plan = plan_model(get_preset(preset), preset, context=262144)
        facts = {
            "params_total": plan.params_total,
            "params_active": plan.params_active,
            "kv_cache_256k": plan.kv_cache_bytes,
        }
        rows.append(Row(row, f"preset {preset}", plan.shorthand))
        for m in columns:
            cells[(row, m.id)] = Cell(Estimate(facts[m.config] * m.scale, 1), paper=study.rows[row].get(m.id))
    for label in _labels(runs):
        run = runs[runs["label"] == label].iloc[0]
        shorthand = run.get("shorthand")
        rows.append(Row(label, label, shorthand if isinstance(shorthand, str) else ""))  # NaN: not launched
        for m in columns:
            value = run.get(m.config)
            ok = value is not None and pd.notna(value)
            cells[(label, m.id)] = Cell(
                Estimate(float(value) * m.scale, 1) if ok else None,
                None if ok else "no model config",
                paper_missing=NOT_IN_PAPER,
            )
    sweep = runs["sweep"].iloc[0] if len(runs) else ""
    return Table(
        "table1", study.title, sweep, columns, rows, cells, None, runs_header="layers (l, a:m, e, n, K)"
    )
