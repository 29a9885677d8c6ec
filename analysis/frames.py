"""Tidy pandas DataFrames of a set of runs: the one flat table everything else starts from.

* ``runs``: one row per run (sweep, arm, seed, run id, pattern, shorthand, params, tokens seen, state...);
* ``steps``: one row per logged step (loss, CE, aux, lr, grad norm, tokens/s, MFU, expert load) with the
  held-out loss of that step when one was measured (``val_loss`` records of metrics.jsonl, or the
  ``heldout_loss`` / older ``eval`` events when metrics.jsonl lacks them);
* ``evals``: one row per (run, suite, task, metric) of ``evals/*.json`` (see analysis.results);
* ``events``: one row per event; the trainer's held-out ``eval`` events are named ``heldout_loss``;
* detail frames for figures: ``heads`` (per attention head), ``induction_curve`` (per position),
  ``expert_load`` (per step, layer and expert) and ``off_format`` (IMDB answers).

Every frame carries ``run_id`` and the run's ``arm``, ``label`` (arm + grid point), ``seed`` and
``sweep``, so any of them can be grouped by arm without a join. A run with no files yet is a row of
``runs`` (state "not launched"), and contributes nothing to the other frames.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from analysis import results
from analysis.runs import RunInfo
from harness.training.rundir import read_jsonl

KEYS = ("run_id", "sweep", "arm", "label", "seed")
STEP_FIELDS = (
    "step",
    "tokens",
    "time",
    "loss",
    "ce_loss",
    "aux_loss",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "mfu",
    "peak_mem_gib",
    "expert_load_max_over_mean",
    "expert_load",
    "val_loss",
    "val_accuracy",
)


@dataclass
class Frames:
    runs: pd.DataFrame
    steps: pd.DataFrame
    evals: pd.DataFrame
    events: pd.DataFrame
    heads: pd.DataFrame
    induction_curve: pd.DataFrame
    expert_load: pd.DataFrame
    off_format: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(name, getattr(self, name)) for name in self.__dataclass_fields__]


def _keys(run: RunInfo) -> dict:
    return {"run_id": run.run_id, "sweep": run.sweep, "arm": run.arm, "label": run.label, "seed": run.seed}


def _frame(rows: list[dict], columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """A DataFrame with at least ``columns``, in that order (empty inputs still have the columns)."""
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame:
            frame[col] = pd.Series(dtype="object")
    rest = [c for c in frame.columns if c not in columns]
    return frame[list(columns) + rest]


def _steps(run: RunInfo) -> list[dict]:
    by_step: dict[int, dict] = {}
    for record in read_jsonl(run.path / "metrics.jsonl"):
        if "step" in record:
            by_step.setdefault(record["step"], {}).update(record)
    for event in read_jsonl(run.path / "events.jsonl"):
        if event.get("event") in ("heldout_loss", "eval") and "val_loss" in event:
            row = by_step.setdefault(event["step"], {"step": event["step"]})
            row.setdefault("val_loss", event["val_loss"])
    return [{**_keys(run), **{f: r.get(f) for f in STEP_FIELDS}} for _, r in sorted(by_step.items())]


def _events(run: RunInfo) -> list[dict]:
    rows = []
    for event in read_jsonl(run.path / "events.jsonl"):
        kind = event.get("event")
        if kind == "eval" and "val_loss" in event:
            kind = "heldout_loss"
        details = {k: v for k, v in event.items() if k not in ("event", "time", "step")}
        rows.append(
            {
                **_keys(run),
                "event": kind,
                "step": event.get("step"),
                "time": event.get("time"),
                "loss": event.get("loss"),
                "suite": event.get("suite"),
                "details": json.dumps(details),
            }
        )
    return rows


def _expert_load(steps: list[dict]) -> list[dict]:
    rows = []
    for s in steps:
        for layer, loads in enumerate(s.get("expert_load") or []):
            for expert, load in enumerate(loads):
                rows.append(
                    {
                        **{k: s[k] for k in KEYS},
                        "step": s["step"],
                        "tokens": s["tokens"],
                        "moe_layer": layer,
                        "expert": expert,
                        "load": load,
                    }
                )
    return rows


def _read_evals(run: RunInfo) -> dict[str, dict]:
    out = {}
    for path in sorted((run.path / "evals").glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a result being written is replaced atomically; a broken one is reported as missing
    return out


def _run_row(run: RunInfo, steps: list[dict], suites: list[str]) -> dict:
    skip = ("grid_point", "eval_errors", "compare", "path", "planned_config")
    row = {k: v for k, v in asdict(run).items() if k not in skip}
    last_tokens = max((s["tokens"] or 0 for s in steps), default=0)
    row.update(
        label=run.label,
        run_dir=str(run.path),
        grid_point=json.dumps(run.grid_point) if run.grid_point else "",
        tokens=max(run.tokens, last_tokens),
        evals=",".join(suites),
        eval_errors=json.dumps(run.eval_errors) if run.eval_errors else "",
        planned_suites=",".join(run.planned_suites) if run.planned_suites is not None else None,
        suite_hashes=json.dumps(run.suite_hashes) if run.suite_hashes else "",
    )
    return row


def load_frames(runs: list[RunInfo]) -> Frames:
    """Read every run's metrics, events and eval results into :class:`Frames`."""
    run_rows, step_rows, eval_rows, event_rows = [], [], [], []
    heads, curve, load, off = [], [], [], []
    for run in runs:
        steps = _steps(run) if run.path.is_dir() else []
        payloads = _read_evals(run) if run.path.is_dir() else {}
        run_rows.append(_run_row(run, steps, list(payloads)))
        step_rows += steps
        load += _expert_load(steps)
        event_rows += _events(run) if run.path.is_dir() else []
        keys = _keys(run)
        for suite, payload in payloads.items():
            eval_rows += [{**keys, **r} for r in results.eval_rows(suite, payload)]
        heads += [{**keys, **r} for r in results.head_rows(payloads.get("attention", {}))]
        curve += [{**keys, **r} for r in results.induction_curve_rows(payloads.get("induction", {}))]
        off += [{**keys, **r} for r in results.off_format_rows(payloads.get("icl", {}))]
    return Frames(
        runs=_frame(run_rows, ("run_id", "sweep", "arm", "label", "seed", "state")),
        steps=_frame(step_rows, KEYS + STEP_FIELDS),
        evals=_frame(
            eval_rows,
            KEYS
            + (
                "suite",
                "task",
                "metric",
                "value",
                "stderr",
                "n",
                "shots",
                "step",
                "status",
                "note",
                "spec_hash",
            ),
        ),
        events=_frame(event_rows, KEYS + ("event", "step", "time", "loss", "suite", "details")),
        heads=_frame(
            heads,
            KEYS
            + (
                "layer",
                "block",
                "head",
                "induction_score",
                "previous_token_score",
                "label_attention",
                "label_attention_lift",
                "recall_score",
                "recall_key_score",
            ),
        ),
        induction_curve=_frame(curve, KEYS + ("position", "loss", "copy", "half_len", "uniform_loss")),
        expert_load=_frame(load, KEYS + ("step", "tokens", "moe_layer", "expert", "load")),
        off_format=_frame(off, KEYS + ("answer", "count", "queries")),
    )


def write_csvs(frames: Frames, folder: Path) -> list[Path]:
    """``folder/<frame>.csv`` for every frame (list cells such as expert_load written as JSON)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in frames.items():
        out = frame.copy()
        for col in out.columns:
            if out[col].map(lambda v: isinstance(v, list | dict)).any():
                out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, list | dict) else v)
        path = folder / f"{name}.csv"
        out.to_csv(path, index=False)
        paths.append(path)
    return paths
