"""Each registry metric (paper.yaml ``metrics``) measured on each run, in the paper's units, or the reason why
not: the long frame (run, metric, value, stderr, n, missing) that tables and claims aggregate.

A run contributes a value only when it is finished and its result belongs to its final checkpoint and to the
settings its eval plan asked for; otherwise the cell says why, in words a researcher can act on: "run
running (step 40/150)", "run failed: non-finite loss at step 12", "suite ollm not evaluated yet", "ollm
eval failed: ...", "truthfulqa_mc2: unavailable offline (...)", "no suite measures BoolQ".
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from analysis.frames import Frames
from analysis.paper import Metric, Paper
from analysis.stats import Estimate, estimate

TAIL_FRACTION = 0.1  # training loss: mean over the last 10% of logged steps


def run_state_reason(run: pd.Series) -> str | None:
    """Why an unfinished run has no final numbers (None for a finished run)."""
    state = run["state"]
    if state == "done":
        return None
    if state == "failed":
        return f"run failed: {run['error']}" if run.get("error") else "run failed"
    if state == "not launched":
        return "run not launched"
    total = f"/{int(run['total_steps'])}" if pd.notna(run.get("total_steps")) else ""
    return f"run {state} (step {int(run['step'])}{total})"


def suite_reason(run: pd.Series, suite: str) -> str:
    """Why a finished run has no result for ``suite``."""
    errors = json.loads(run["eval_errors"]) if run.get("eval_errors") else {}
    if suite in errors:
        return f"{suite} eval failed: {errors[suite]}"
    planned = run.get("planned_suites")
    if planned is not None and not pd.isna(planned) and suite not in planned.split(","):
        return f"suite {suite} not in the run's evals"
    return f"suite {suite} not evaluated yet"


def _measure_eval(metric: Metric, run: pd.Series, evals: dict, hashes: dict) -> dict[str, Any]:
    reasons = []
    for key in metric.eval:
        suite, task, name = key.split("/")
        # a task that did not run has one status row without a metric name
        row = evals.get((suite, task, name)) or evals.get((suite, task, ""))
        if row is None:
            have_suite = any(k[0] == suite for k in evals)
            reasons.append(f"{task}: not in the {suite} result" if have_suite else suite_reason(run, suite))
            continue
        if row["status"] != "ok" or not math.isfinite(row["value"]):
            reasons.append(f"{task}: {row['status']}" + (f" ({row['note']})" if row.get("note") else ""))
            continue
        if pd.notna(row.get("step")) and int(row["step"]) != int(run["step"]):
            reasons.append(
                f"{suite} evaluated at step {int(row['step'])}, not the final step {int(run['step'])}"
            )
            continue
        planned_hash = hashes.get(suite)
        if planned_hash and row.get("spec_hash") and row["spec_hash"] != planned_hash:
            reasons.append(f"{suite} ran with settings other than the eval plan's (spec {row['spec_hash']})")
            continue
        se = row.get("stderr")
        return {
            "value": row["value"] * metric.scale,
            "stderr": se * metric.scale if se is not None and pd.notna(se) else None,
            "n": row.get("n"),
            "basis": "eval stderr",
            "note": row.get("note") or "",
            "source": key,
        }
    return {"missing": reasons[0] if reasons else f"no suite measures {metric.label}"}


def _measure_training(metric: Metric, steps: pd.DataFrame) -> dict[str, Any]:
    if metric.training == "loss":
        losses = steps["loss"].dropna()
        if losses.empty:
            return {"missing": "no training loss logged"}
        tail = losses.iloc[-max(1, math.ceil(len(losses) * TAIL_FRACTION)) :]
        return {"value": float(tail.mean()) * metric.scale, "n": len(tail), "source": "metrics.jsonl loss"}
    values = steps[metric.training].dropna() if metric.training in steps else pd.Series(dtype=float)
    if values.empty:
        return {"missing": f"no {metric.training} logged (train.eval_every = 0?)"}
    return {"value": float(values.iloc[-1]) * metric.scale, "source": f"metrics.jsonl {metric.training}"}


def _measure_events(metric: Metric, events: pd.DataFrame) -> dict[str, Any]:
    count = int((events["event"] == metric.events).sum()) if not events.empty else 0
    return {
        "value": count * metric.scale,
        "stderr": math.sqrt(max(count, 1)) * metric.scale,  # Poisson; at least 1 so that zero is not exact
        "basis": "Poisson",
        "source": f"events.jsonl {metric.events}",
    }


def measure_run(metric: Metric, run: pd.Series, frames_by_run: dict[str, Any]) -> dict[str, Any]:
    """One metric of one run: {value, stderr, n, basis, note, source} or {missing: reason}."""
    if metric.config:
        value = run.get(metric.config)
        if value is None or pd.isna(value):
            return {"missing": f"{metric.config} unknown (no model config)"}
        return {"value": float(value) * metric.scale, "source": f"config {metric.config}"}
    reason = run_state_reason(run)
    if reason:
        return {"missing": reason}
    if metric.training:
        return _measure_training(metric, frames_by_run["steps"])
    if metric.events:
        return _measure_events(metric, frames_by_run["events"])
    return _measure_eval(metric, run, frames_by_run["evals"], frames_by_run["hashes"])


def measure(frames: Frames, paper: Paper, metric_ids: list[str] | None = None) -> pd.DataFrame:
    """The long frame: one row per (run, metric) with value/stderr/n/basis/note/source or missing."""
    ids = metric_ids or list(paper.metrics)
    steps = dict(tuple(frames.steps.groupby("run_id"))) if not frames.steps.empty else {}
    events = dict(tuple(frames.events.groupby("run_id"))) if not frames.events.empty else {}
    evals: dict[str, dict] = {}
    for row in frames.evals.to_dict("records"):
        evals.setdefault(row["run_id"], {})[(row["suite"], row["task"], row["metric"])] = row
    rows = []
    for _, run in frames.runs.iterrows():
        per_run = {
            "steps": steps.get(run["run_id"], frames.steps.iloc[0:0]),
            "events": events.get(run["run_id"], frames.events.iloc[0:0]),
            "evals": evals.get(run["run_id"], {}),
            "hashes": json.loads(run["suite_hashes"]) if run.get("suite_hashes") else {},
        }
        for mid in ids:
            m = paper.metric(mid)
            result = {
                "value": None,
                "stderr": None,
                "n": None,
                "basis": None,
                "note": "",
                "source": None,
                "missing": None,
                **measure_run(m, run, per_run),
            }
            rows.append(
                {k: run[k] for k in ("run_id", "sweep", "arm", "label", "seed", "state")}
                | {"metric": mid, **result}
            )
    return pd.DataFrame(rows)


def arm_estimate(values: pd.DataFrame) -> tuple[Estimate | None, str | None, str]:
    """The estimate over one arm's runs (``values``: its rows of the measures frame for one metric), the
    reason when no run has a value, and a note (caveats; which runs lack the value)."""
    values = values.sort_values("seed", kind="stable")
    have = values[values["missing"].isna()]
    lacking = values[values["missing"].notna()]
    reasons = [f"seed {r.seed}: {r.missing}" if len(values) > 1 else r.missing for r in lacking.itertuples()]
    if have.empty:
        unique = list(dict.fromkeys(reasons))
        return None, "; ".join(unique) if unique else "no runs", ""
    basis = have["basis"].dropna()
    est = estimate(
        have["value"].astype(float).tolist(),
        [None if pd.isna(s) else float(s) for s in have["stderr"]],
        kind=basis.iloc[0] if not basis.empty else "eval stderr",
    )
    notes = [n for n in have["note"] if n] + (
        [f"n={len(have)} of {len(values)}: " + "; ".join(reasons)] if reasons else []
    )
    return est, None, "; ".join(dict.fromkeys(notes))
